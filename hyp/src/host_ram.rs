//! The host's memory as Portcullis reads and writes it on the host's behalf (the emulated SMMU's
//! tables and queues, the ITS's command queue): the one checked path, through the host's live CPU
//! stage 2.

use crate::host::live_stage2;
use platform::addr::Ipa;
use portcullis::emul::{AccessDenied, HostMemory};
use portcullis::stage2::Access;

/// The host's memory as Portcullis touches it on the emulated SMMU's behalf: every byte checked
/// against the host's live CPU stage 2 before it is read or written.
pub struct HostRam;

impl HostRam {
    /// Checks `[ipa, ipa + len)` page by page: every page mapped as normal memory, readable (and
    /// writable if `write`) for the host. Returns the physical address of `ipa`.
    fn check(ipa: Ipa, len: usize, write: bool) -> Result<u64, AccessDenied> {
        let denied = Err(AccessDenied { ipa });
        let Some(end) = ipa.raw().checked_add(len as u64) else {
            return denied;
        };
        let table = live_stage2();
        let mut page = ipa.raw() & !0xfff;
        while page < end {
            match table.translate(Ipa(page)) {
                Some((
                    pa,
                    Access::NormalMemory {
                        read: true,
                        write: w,
                        ..
                    },
                )) if pa.raw() == page && (w || !write) => {}
                _ => return denied,
            }
            page += 0x1000;
        }
        Ok(ipa.raw())
    }
}

impl HostMemory for HostRam {
    fn read(&self, ipa: Ipa, buf: &mut [u8]) -> Result<(), AccessDenied> {
        let pa = Self::check(ipa, buf.len(), false)?;
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
