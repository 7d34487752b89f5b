//! A model version's `manifest.toml`: `Manifest::from_toml`, then `ModelVersion::open` on
//! what parses.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ebgand_fuzz::check_manifest(data));
