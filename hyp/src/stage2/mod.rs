//! Stage-2 policies: which guest-physical ranges the host's CPU and its devices may touch, per mode.
//!
//! Two layers, both pure data on the development host:
//! - [`policy`] turns the board's [`AddressMap`] into region lists, one per (agent, mode), following
//!   the table in ARCHITECTURE.md "Modes and policies";
//! - [`table`] builds VMSAv8-64 stage-2 translation tables from a region list (with
//!   `aarch64-paging`), computes `VTTBR_EL2` / `VTCR_EL2`, and walks the built tables to answer
//!   "what may the host do at this IPA" — the check every host-supplied address goes through.
//!
//! Each policy is built once at boot; switching modes switches which prebuilt table is live.

use core::fmt;

use aarch64_paging::MapError;
use platform::addr::PhysRange;

pub mod frozen;
pub mod leaves;
pub mod policy;
pub mod table;

#[cfg(test)]
mod access_tests;
#[cfg(test)]
mod inplace_tests;
#[cfg(test)]
mod tests;

pub use frozen::dead_cpu_policy;
pub use leaves::{Leaves, cpu_leaves};
pub use policy::{
    Access, AddressMap, MAX_IPA_BITS, MIN_IPA_BITS, Mode, PAGE_SIZE, Region, cpu_policy,
    dma_policy, ipa_bits_for, pa_range_bits, with_writable,
};
pub use table::{Stage2Table, TopSwap};

/// Why an address map or a region list cannot be turned into stage-2 tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyError {
    /// The IPA size is outside what a 4 KiB-granule stage 2 without LPA2 supports here.
    UnsupportedIpaBits(u32),
    /// A range does not start and end on a 4 KiB boundary.
    Unaligned {
        what: &'static str,
        range: PhysRange,
    },
    /// A range reaches beyond the IPA space `[0, 2^ipa_bits)`.
    OutsideIpaSpace {
        what: &'static str,
        range: PhysRange,
        ipa_bits: u32,
    },
    /// Two ranges that must be disjoint overlap.
    Overlap { first: PhysRange, second: PhysRange },
    /// The crash region is not wholly inside host RAM.
    CrashOutsideRam(PhysRange),
    /// The fault report region is not wholly inside RAM.
    ReportOutsideRam(PhysRange),
    /// `aarch64-paging` refused a mapping (a broken invariant: regions were checked before).
    Map { range: PhysRange, error: MapError },
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnsupportedIpaBits(bits) => write!(
                f,
                "unsupported IPA size of {bits} bits (need {MIN_IPA_BITS}..={MAX_IPA_BITS})"
            ),
            Self::Unaligned { what, range } => write!(f, "{what} {range} is not 4 KiB aligned"),
            Self::OutsideIpaSpace {
                what,
                range,
                ipa_bits,
            } => {
                write!(
                    f,
                    "{what} {range} lies outside the {ipa_bits}-bit IPA space"
                )
            }
            Self::Overlap { first, second } => write!(f, "{first} overlaps {second}"),
            Self::CrashOutsideRam(range) => {
                write!(f, "crash region {range} is not wholly inside host RAM")
            }
            Self::ReportOutsideRam(range) => {
                write!(
                    f,
                    "fault report region {range} is not wholly inside host RAM"
                )
            }
            Self::Map { range, error } => write!(f, "mapping {range} failed: {error}"),
        }
    }
}
