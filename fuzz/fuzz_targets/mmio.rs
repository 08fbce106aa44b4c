//! libFuzzer entry point; the harness is `portcullis_fuzz::mmio`.
#![no_main]

libfuzzer_sys::fuzz_target!(
    |input: portcullis_fuzz::mmio::Input| portcullis_fuzz::mmio::run(&input)
);
