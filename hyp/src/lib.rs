//! Portcullis: the portable core of the hypervisor.
//!
//! Every module here decides something (how the host's device tree is rewritten, where the crash
//! region goes, what a trap means, what a stage-2 policy maps, how SMMU structures are encoded) from
//! plain data, and is tested on the development host with `cargo test`. The thin layer that touches
//! system registers and MMIO lives in the `portcullis` binary (`src/main.rs`, `src/arch/`).

#![cfg_attr(not(test), no_std)]

extern crate alloc;
// The fakes of `emul::testing` use `std` (the fuzz targets build the library with them).
#[cfg(all(feature = "testing", not(test)))]
extern crate std;

pub use platform;

pub mod boot;
pub mod diag;
pub mod emul;
pub mod fence;
pub mod gic;
pub mod pmu;
pub mod prof;
pub mod smmu;
pub mod stage2;
pub mod sysregs;
pub mod trap;

#[cfg(test)]
mod test_alloc;
