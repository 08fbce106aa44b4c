//! libFuzzer entry point; the harness is `portcullis_fuzz::devtree`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_fuzz::devtree::run(data));
