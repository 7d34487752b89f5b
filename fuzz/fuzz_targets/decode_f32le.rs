//! `PayloadFormat::F32Le`: first byte the channel count (0-16), the rest the MQTT payload.
#![no_main]

use ebgand::pipeline::PayloadFormat;
use ebgand_fuzz::{channels_and_payload, check_decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((channels, payload)) = channels_and_payload(data) {
        check_decode(&PayloadFormat::F32Le, channels, payload);
    }
});
