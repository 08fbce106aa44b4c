//! GICv3 mediation: the GIC's bus masters (the ITS, the redistributors) read and write memory
//! outside the SMMU, at addresses the host programs. Portcullis checks every such address over its
//! whole extent against the current mode's DMA policy before the GIC may use it, and keeps the
//! host from changing it behind the check:
//! - [`redist`]: `GICR_PROPBASER` / `GICR_PENDBASER` are passed to the hardware only when their
//!   whole table is device-writable ([`window::DmaWindow`]), `GICR_CTLR.EnableLPIs` only once both
//!   were accepted; at the fence the reused LPI tables come from these accepted values;
//! - [`its`]: the host drives an emulated ITS register file; the physical ITS's tables and command
//!   queue are Portcullis' own, and every host command is checked ([`its_cmd`]) and re-encoded
//!   before the ITS sees it;
//! - [`lpi`]: the extent of an LPI table, bounded by what the GIC implements.
//!
//! Nothing here touches MMIO: the binary's `gic_mediation` gives it the physical frames and the
//! host's memory (through the checked `HostMemory` path).

pub mod its;
pub mod its_cmd;
pub mod lpi;
pub mod redist;
pub mod regs;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod window;

pub use window::DmaWindow;
