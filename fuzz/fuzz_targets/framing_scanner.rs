//! `cargo fuzz run framing_scanner`: the property `checks::framing` (see `fuzz/checks.rs`) on libFuzzer's inputs.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::framing(data));
