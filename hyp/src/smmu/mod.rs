//! SMMUv3 architecture definitions: registers, stream table entries, context descriptors, commands and
//! event records, encoded and decoded from the specification (Arm IHI 0070).
//!
//! This is the portable layer that both Portcullis' driver for the physical SMMU and its emulated
//! SMMU (the one the host kernel programs) are built on. It is pure data: nothing here touches
//! MMIO or memory it was not handed, and everything builds and is tested on the development host.
//!
//! Everything read from host memory or host registers (commands, STEs, CDs, queue indexes) is
//! decoded without panicking: a decoder returns a `Result` whose error maps onto the SMMU's own
//! way of reporting that mistake (`CERROR_ILL` for a command, `C_BAD_STE` for an STE, ...), so the
//! emulated SMMU can answer the host exactly as hardware would.
//!
//! Section and table names in comments refer to IHI 0070 G.b and later.

pub mod cd;
pub mod cmd;
pub mod driver;
pub mod event;
pub mod faults;
#[cfg(test)]
pub mod model;
pub mod queue;
pub mod regs;
pub mod ste;
pub mod stream_set;

pub use platform::addr::{Ipa, Pa};

/// An address that a table entry points at: a physical address in the tables Portcullis builds for
/// the physical SMMU, a guest-physical one in the tables the host builds. Decoders of host tables
/// produce [`Ipa`]s, so a host pointer cannot be used as a physical address by accident.
pub trait TableAddress: Copy + core::fmt::Debug + PartialEq + Eq {
    fn from_raw(raw: u64) -> Self;
    fn to_raw(self) -> u64;
}

impl TableAddress for Pa {
    fn from_raw(raw: u64) -> Self {
        Pa(raw)
    }
    fn to_raw(self) -> u64 {
        self.0
    }
}

impl TableAddress for Ipa {
    fn from_raw(raw: u64) -> Self {
        Ipa(raw)
    }
    fn to_raw(self) -> u64 {
        self.0
    }
}

/// A StreamID: which device (or PCIe requester) a transaction or command is about.
pub type StreamId = u32;

/// A SubstreamID (PCIe PASID), 20 bits.
pub type SubstreamId = u32;

/// Largest architected SubstreamID, 20 bits.
pub const SSID_MAX: SubstreamId = (1 << 20) - 1;
