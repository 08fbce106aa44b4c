//! libFuzzer entry point; the harness is `portcullis_fuzz::its_filter`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: portcullis_fuzz::its_filter::Input| {
    portcullis_fuzz::its_filter::run(&input)
});
