//! The config file: `RawConfig::from_toml` then `validate`, on the input as UTF-8 TOML.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ebgand_fuzz::check_config(data));
