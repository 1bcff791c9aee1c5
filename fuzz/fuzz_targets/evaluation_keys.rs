#![no_main]
//! Fuzz target `evaluation_keys`: see `fuzz/harness.rs`.

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::evaluation_keys(data));
