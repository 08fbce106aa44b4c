//! libFuzzer entry point; the harness is `portcullis_fuzz::psci`.
#![no_main]

libfuzzer_sys::fuzz_target!(
    |input: portcullis_fuzz::psci::Input| portcullis_fuzz::psci::run(&input)
);
