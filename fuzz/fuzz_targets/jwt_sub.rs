//! `cargo fuzz run jwt_sub`: the property `checks::jwt_sub` (see `fuzz/checks.rs`) on libFuzzer's inputs.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::jwt_sub(data));
