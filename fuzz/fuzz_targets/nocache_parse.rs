//! `cargo fuzz run nocache_parse`: the property `checks::nocache` (see `fuzz/checks.rs`) on libFuzzer's inputs.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::nocache(data));
