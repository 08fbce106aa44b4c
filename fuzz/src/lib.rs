//! Fuzz harnesses for everything the host drives, one module per libFuzzer target
//! (`fuzz_targets/*.rs` are one-line entry points). Each harness asserts invariants, not just the
//! absence of panics: a broken invariant is a panic, which libFuzzer reports as a crash with its
//! input. See `## Fuzzing` in the README for the engine and how to run them (`scripts/fuzz`).

pub mod access;
pub mod alloc_meter;
pub mod devtree;
pub mod emul_smmu;
pub mod its_filter;
pub mod mmio;
pub mod psci;
