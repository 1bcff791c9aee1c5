#![no_main]
//! Fuzz target `spec_dsl`: see `fuzz/harness.rs`.

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::spec_dsl(data));
