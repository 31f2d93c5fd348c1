//! `cargo fuzz run cache_policy_admit`: the property `checks::admit` (see `fuzz/checks.rs`) on libFuzzer's inputs.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::admit(data));
