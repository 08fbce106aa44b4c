//! The emulated SMMUv3 the host kernel drives: its register file, command queue, stream table and
//! event queue, turned into physical SMMU configuration whose stage 2 is always Portcullis' policy.
//!
//! The host sees an SMMUv3 at the physical SMMU's address. Every access to that frame traps; the
//! arch layer decodes the access (offset from the frame base, size, direction, value) and hands it
//! to [`EmulatedSmmu::read`] / [`EmulatedSmmu::write`]. Nothing here touches MMIO or memory by
//! itself: host memory is reached through [`HostMemory`] (which checks the host's CPU stage-2
//! policy first), the physical SMMU through [`PhysicalSmmu`]. Both have fakes in [`testing`] (tests and fuzz targets).
//!
//! What the host gets (section references are to Arm IHI 0070):
//! - **ID registers** ([`features`]): the physical SMMU's, minus stage 2, EL2, ATS, PRI,
//!   stalls, SEV, broadcast TLB maintenance and everything Portcullis does not emulate; OAS is the
//!   host's IPA size; small Command and Event queues. MSI is offered for CMD_SYNC completion
//!   ([`msi`]), each write checked against the live DMA policy.
//! - **Register file** ([`registers`]): CR0/CR0ACK, CR1, CR2, GBPA, IRQ_CTRL/ACK, GERROR/GERRORN,
//!   STRTAB_BASE/CFG, CMDQ_BASE/PROD/CONS, EVENTQ_BASE/PROD/CONS (page 1, aliased on page 0).
//!   Every enable is acknowledged at once: the emulated effect is complete when the write returns.
//! - **Command queue** ([`commands`]): on a `CMDQ_PROD` write (and when the queue is enabled or an
//!   error acknowledged) the new commands are read from host memory and executed; stage-1 work is
//!   forwarded with Portcullis' VMID, configuration invalidations recompose physical STEs, and a
//!   whole host batch costs one physical CMD_SYNC.
//! - **Stream table** ([`streams`]): the host's linear or two-level table is read (never its CDs)
//!   and each physical stream gets *abort*, *stage 2 only* (host bypass) or *nested* (host stage
//!   1 over Portcullis' stage 2); nothing the host writes reaches a physical stage 2 field.
//! - **Event queue** ([`events`]): records Portcullis makes up (C_BAD_STE, F_STE_FETCH,
//!   C_BAD_STREAMID) and records forwarded from the physical queue are written into the host's
//!   queue, with overflow signalled as the architecture says.

use core::fmt;

use crate::smmu::cmd::Command;
use crate::smmu::ste::{Stage2Config, Ste};
use crate::smmu::{Ipa, StreamId};

pub mod commands;
pub mod device;
pub mod drain;
pub mod events;
pub mod fast;
pub mod features;
pub mod msi;
pub mod registers;
pub mod state;
pub mod streams;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

pub use device::{EmulConfig, EmulError, MmioRead};
pub use events::EventRoute;
pub use state::{Delivery, EmulatedSmmu, Note, StreamState};

/// The host may not access (in its current CPU stage-2 policy) some byte of the range asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessDenied {
    /// The first address of the access that was refused.
    pub ipa: Ipa,
}

impl fmt::Display for AccessDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "host may not access {}", self.ipa)
    }
}

/// The host's guest-physical memory, as Portcullis touches it on the emulated SMMU's behalf:
/// reading the host's Stream table, level 1 descriptors and Command queue, writing its Event queue.
///
/// An implementation must, for every call:
/// - check the *whole* range `[ipa, ipa + len)` against the host's **current CPU stage-2 policy**
///   (the live one: after the kexec trap, the crash-mode policy) *before* touching memory: every
///   byte must be mapped as normal memory, readable for `read`, writable for `write`. Anything else
///   (unmapped, Portcullis' own memory, device memory, a range that wraps or leaves the IPA space)
///   is `Err(AccessDenied)` with nothing read or written;
/// - access the memory the policy maps that IPA to, in little-endian byte order (the emulated
///   SMMU advertises little-endian tables), coherently with the host's CPU (cacheable accesses
///   through Portcullis' own mapping of host RAM);
/// - be all-or-nothing: on `Err` neither `buf` nor host memory carries a partial result.
///
/// Accesses are at most 64 bytes, aligned to 8 bytes or more by construction (one to four
/// consecutive 16-byte commands, a 32-byte event record, a 64-byte STE, an 8-byte level 1
/// descriptor) as long as the host's base registers are aligned; an implementation must not rely
/// on alignment for safety.
pub trait HostMemory {
    fn read(&self, ipa: Ipa, buf: &mut [u8]) -> Result<(), AccessDenied>;
    fn write(&mut self, ipa: Ipa, bytes: &[u8]) -> Result<(), AccessDenied>;
}

/// Portcullis' physical SMMU, as the emulation uses it.
///
/// The emulation never builds a physical stage 2 itself: every STE it hands over is
/// [`Ste::abort`], [`Ste::stage2`] or [`Ste::nested`] built from [`PhysicalSmmu::stage2`], and
/// every command it submits is already checked and rewritten (NH invalidations carry the VMID of
/// that policy). An implementation must:
/// - [`stage2`](Self::stage2): return the stage 2 of the **live DMA policy** (root, VMID, T0SZ,
///   SL0, PS, walk attributes, S2R/S2S) that every physical STE of a host stream must carry now;
/// - [`write_ste`](Self::write_ste): replace the STE of `sid` in Portcullis' physical Stream table
///   so that the SMMU never uses a torn entry (section 3.21.3: in place, or break-before-make) and
///   invalidate it (CMD_CFGI_STE); the new STE must be in effect at the latest when the next
///   [`sync`](Self::sync) returns `Ok`. `sid` is one of the streams the emulation was built with,
///   or one it made a physical stream with [`cover`](Self::cover);
/// - [`submit`](Self::submit): put the commands on the physical Command queue, in order, without
///   waiting for them;
/// - [`sync`](Self::sync): issue one CMD_SYNC and wait for it (bounded): `Ok` means every STE
///   written and every command submitted before has taken effect.
///
/// Errors are reported to the caller of the emulation as [`Note::Physical`]; the emulation then
/// holds back the host's CMD_SYNC (its `CMDQ_CONS` does not pass it), so the host never believes an
/// invalidation completed that did not.
pub trait PhysicalSmmu {
    type Error: fmt::Display;

    fn stage2(&self) -> Stage2Config;
    fn write_ste(&mut self, sid: StreamId, ste: &Ste) -> Result<(), Self::Error>;

    /// Several STEs at once; the default writes them one by one. An implementation may batch the
    /// invalidations and syncs of its update sequence.
    fn write_stes(&mut self, stes: &[(StreamId, Ste)]) -> Result<(), Self::Error> {
        for (sid, ste) in stes {
            self.write_ste(*sid, ste)?;
        }
        Ok(())
    }

    fn submit(&mut self, cmds: &[Command]) -> Result<(), Self::Error>;
    fn sync(&mut self) -> Result<(), Self::Error>;

    /// `cmds` and a CMD_SYNC, completed when it returns: a whole host batch of invalidations
    /// ([`fast`]), after everything submitted before. The default is [`submit`](Self::submit) then
    /// [`sync`](Self::sync); an implementation that holds commands until the sync may write
    /// these straight to its queue instead.
    fn submit_synced(&mut self, cmds: &[Command]) -> Result<(), Self::Error> {
        self.submit(cmds)?;
        self.sync()
    }

    /// Whether a device of the host may write every byte of `[ipa, ipa + len)` under the **live
    /// DMA policy** (normal memory, writable, identity-mapped): the check a CMD_SYNC completion MSI
    /// must pass before Portcullis makes it on the SMMU's behalf ([`msi`]). The default allows
    /// nothing, so an implementation that does not know the policy refuses every MSI.
    /// [`msi::device_write_allowed`] decides it from a stage 2 table.
    fn device_may_write(&self, ipa: Ipa, len: usize) -> bool {
        let _ = (ipa, len);
        false
    }

    /// Makes `sid` a physical stream (gives it a slot in the physical Stream table, within the
    /// table's budget), before its first [`write_ste`](Self::write_ste); an error leaves it
    /// without one, its transactions refused and recorded. Called only with on-demand streams
    /// ([`EmulConfig::on_demand`]); the default has nothing to do.
    fn cover(&mut self, sid: StreamId) -> Result<(), Self::Error> {
        let _ = sid;
        Ok(())
    }

    /// What every StreamID that is not a physical stream gets: `Some(ste)` (stage 2 only, while
    /// the host's SMMU is disabled with GBPA bypass) or `None` (refused and recorded). Called
    /// only with on-demand streams, whenever SMMUEN or GBPA change; the default does nothing.
    fn set_default(&mut self, ste: Option<&Ste>) -> Result<(), Self::Error> {
        let _ = ste;
        Ok(())
    }
}
