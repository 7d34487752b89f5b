//! `PayloadFormat::Object`: first byte the fields, timestamp field and channel count
//! (`ebgand_fuzz::object_format`), the rest the MQTT payload.
#![no_main]

use ebgand_fuzz::{check_decode, object_format};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((format, channels, payload)) = object_format(data) {
        check_decode(&format, channels, payload);
    }
});
