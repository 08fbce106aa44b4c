//! The host's memory as Portcullis reads and writes it on the host's behalf (the emulated SMMU's
//! tables and queues, the ITS's command queue): the one checked path, through the host's live CPU
//! stage 2.

use crate::host::live_stage2;
use platform::addr::Ipa;
use portcullis::emul::{AccessDenied, HostMemory};

/// The host's memory as Portcullis touches it on the emulated SMMU's behalf: every byte checked
/// against the host's live CPU stage 2 before it is read or written.
pub struct HostRam;

impl HostRam {
    /// Checks `[ipa, ipa + len)` against the live stage 2 (`Stage2Table::is_host_memory`).
    /// Returns the physical address of `ipa`.
    fn check(ipa: Ipa, len: usize, write: bool) -> Result<u64, AccessDenied> {
        if live_stage2().is_host_memory(ipa, len, write) {
            Ok(ipa.raw())
        } else {
            Err(AccessDenied { ipa })
        }
    }
}

impl HostMemory for HostRam {
    fn read(&self, ipa: Ipa, buf: &mut [u8]) -> Result<(), AccessDenied> {
        let pa = Self::check(ipa, buf.len(), false)?;
        if pa.is_multiple_of(8) && buf.len().is_multiple_of(8) {
            // Queue entries and table words: whole 64-bit loads (one per word, not eight).
            for (i, w) in buf.chunks_exact_mut(8).enumerate() {
                // SAFETY: as below; `pa + 8 * i` is 8-byte aligned and inside the checked range.
                let v = unsafe { ((pa + 8 * i as u64) as *const u64).read_volatile() };
                w.copy_from_slice(&v.to_le_bytes());
            }
            return Ok(());
        }
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: the whole range is host RAM the host's stage 2 maps readable (checked above),
            // identity-mapped in Portcullis' EL2 tables; a byte-wise volatile copy tolerates the
            // host changing it concurrently.
            *b = unsafe { ((pa + i as u64) as *const u8).read_volatile() };
        }
        Ok(())
    }

    fn write(&mut self, ipa: Ipa, bytes: &[u8]) -> Result<(), AccessDenied> {
        let pa = Self::check(ipa, bytes.len(), true)?;
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: as for `read`, with the range writable for the host.
            unsafe { ((pa + i as u64) as *mut u8).write_volatile(*b) };
        }
        Ok(())
    }
}
