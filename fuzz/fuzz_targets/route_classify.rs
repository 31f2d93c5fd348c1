//! `cargo fuzz run route_classify`: the property `checks::route` (see `fuzz/checks.rs`) on libFuzzer's inputs.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::route(data));
