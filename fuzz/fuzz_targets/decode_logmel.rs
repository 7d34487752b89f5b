//! Audio streams: `i16le` payloads decoded and framed into log-mel frames, as the ingest does
//! for a stream with `logmel = {...}` (see `ebgand_fuzz::check_logmel`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ebgand_fuzz::check_logmel(data));
