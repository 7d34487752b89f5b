//! MQTT control commands: `control::parse(command, payload)`; first byte picks the command
//! (see `ebgand_fuzz::check_control`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ebgand_fuzz::check_control(data));
