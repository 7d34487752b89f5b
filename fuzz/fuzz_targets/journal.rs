//! The ingest journal's segment files as a crash or a bad disk may leave them:
//! `Journal::open`, then an append and a reopen (see `ebgand_fuzz::check_journal`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ebgand_fuzz::check_journal(data));
