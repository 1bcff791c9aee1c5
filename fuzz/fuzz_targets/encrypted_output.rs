#![no_main]
//! Fuzz target `encrypted_output`: see `fuzz/harness.rs`.

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::encrypted_output(data));
