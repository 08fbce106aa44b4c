//! libFuzzer entry point; the harness is `portcullis_fuzz::emul_smmu`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: portcullis_fuzz::emul_smmu::Input| {
    portcullis_fuzz::emul_smmu::run(&input)
});
