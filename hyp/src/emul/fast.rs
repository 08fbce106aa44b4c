//! The strict unmap's batch, on a short path: a host batch that is nothing but stage-1 TLB
//! invalidations followed by one CMD_SYNC (Linux's strict unmap writes CMD_TLBI_NH_VA +
//! CMD_SYNC; an ASID teardown CMD_TLBI_NH_ASID + CMD_SYNC) needs none of the general path's
//! machinery -- no STE recomposition, no chunked physical batch, no held commands, at most one
//! completion MSI -- and is the batch the host sends most. [`classify`] decides from the raw
//! entries whether a batch is one; the general path ([`super::commands`]) takes everything else,
//! and everything [`classify`] refuses.
//!
//! Nothing is checked less: every entry is decoded strictly and checked against the features
//! the host was shown, exactly as the general path does, and each invalidation is rewritten by
//! [`forward_tlbi`] -- the one place either path forces Portcullis' VMID into a host TLBI. The
//! completion MSI of a `SIG_IRQ` sync goes through the same checked write as the general path's
//! ([`EmulatedSmmu::complete_msi`](super::EmulatedSmmu)).

use crate::smmu::cmd::{Command, CommandError, Sync};
use crate::smmu::regs::SmmuFeatures;

/// The most entries a short-path batch has: one host-memory read's worth (64 bytes).
pub const MAX_ENTRIES: usize = 4;

/// A host stage-1 TLB invalidation as Portcullis forwards it: with Portcullis' `vmid` (the host's
/// own VMID field is never used), CMD_TLBI_NSNH_ALL narrowed to CMD_TLBI_NH_ALL (the host has no
/// stage 2, so "all non-secure non-hyp" is everything under Portcullis' VMID). `None` for a
/// command that is not one.
pub fn forward_tlbi(cmd: &Command, vmid: u16) -> Option<Command> {
    Some(match *cmd {
        Command::TlbiNhAll { .. } | Command::TlbiNsnhAll => Command::TlbiNhAll { vmid },
        Command::TlbiNhAsid { asid, .. } => Command::TlbiNhAsid { vmid, asid },
        Command::TlbiNhVa {
            asid, va, scope, ..
        } => Command::TlbiNhVa {
            vmid,
            asid,
            va,
            scope,
        },
        Command::TlbiNhVaa { va, scope, .. } => Command::TlbiNhVaa { vmid, va, scope },
        _ => return None,
    })
}

/// A host command decoded and checked as the general path checks it: strictly decoded, and
/// allowed by the features the host was shown (CMD_TLBI_NSNH_ALL, which `check_host` classes with
/// the stage 2 maintenance, is legal without stage 2).
pub fn decode_checked(raw: [u64; 2], host: &SmmuFeatures) -> Result<Command, CommandError> {
    let cmd = Command::decode(raw)?;
    if cmd != Command::TlbiNsnhAll {
        cmd.check_host(host)?;
    }
    Ok(cmd)
}

/// A batch the short path takes: the translated invalidations, then the host's CMD_SYNC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlbiSync {
    tlbis: [Command; MAX_ENTRIES - 1],
    len: usize,
    pub sync: Sync,
}

impl TlbiSync {
    /// The physical commands, in host order (the physical CMD_SYNC is the submitter's).
    pub fn commands(&self) -> &[Command] {
        &self.tlbis[..self.len]
    }
}

/// Whether `entries` (a whole host batch, `CMDQ_CONS` to `CMDQ_PROD`) is stage-1 TLB invalidations
/// and one CMD_SYNC, last; if so, the invalidations translated with `vmid`. Anything else --
/// another command, a command that does not decode or that the host may not issue, no sync, a
/// sync before the end, more than [`MAX_ENTRIES`] -- is `None`: the general path executes it
/// (and reports what is wrong with it).
pub fn classify(entries: &[[u64; 2]], host: &SmmuFeatures, vmid: u16) -> Option<TlbiSync> {
    let (last, tlbis) = entries.split_last()?;
    if entries.len() > MAX_ENTRIES {
        return None;
    }
    let Ok(Command::Sync(sync)) = decode_checked(*last, host) else {
        return None;
    };
    let mut out = TlbiSync {
        tlbis: [Command::TlbiNhAll { vmid }; MAX_ENTRIES - 1],
        len: 0,
        sync,
    };
    for (slot, raw) in out.tlbis.iter_mut().zip(tlbis) {
        *slot = forward_tlbi(&decode_checked(*raw, host).ok()?, vmid)?;
    }
    out.len = tlbis.len();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emul::testing::qemu_like;
    use crate::smmu::cmd::{SyncSignal, TlbiScope};

    const VMID: u16 = 2;

    fn host() -> SmmuFeatures {
        // What the host is shown: stage 1 only (no stage 2, no HYP, no ATS/PRI).
        let config = crate::emul::EmulConfig::new(qemu_like(), 40);
        *crate::emul::EmulatedSmmu::new(&config, [8])
            .expect("valid config")
            .host_features()
    }

    fn va(asid: u16, va: u64) -> [u64; 2] {
        Command::TlbiNhVa {
            vmid: 0x55,
            asid,
            va,
            scope: TlbiScope::single(true),
        }
        .encode()
    }

    fn sync(signal: SyncSignal, msi_addr: u64) -> [u64; 2] {
        Command::Sync(Sync {
            signal,
            msh: 0,
            msi_attr: 0,
            msi_data: 0,
            msi_addr,
        })
        .encode()
    }

    #[test]
    fn a_strict_unmap_is_taken_with_the_vmid_forced() {
        let b = classify(
            &[va(7, 0x4000_1000), sync(SyncSignal::None, 0)],
            &host(),
            VMID,
        )
        .expect("TLBI_NH_VA + CMD_SYNC");
        assert_eq!(
            b.commands(),
            &[Command::TlbiNhVa {
                vmid: VMID,
                asid: 7,
                va: 0x4000_1000,
                scope: TlbiScope::single(true),
            }]
        );
        assert_eq!(b.sync.signal, SyncSignal::None);
    }

    #[test]
    fn every_stage1_tlbi_and_a_lone_sync_are_taken() {
        let h = host();
        let all = Command::TlbiNhAll { vmid: 9 }.encode();
        let nsnh = Command::TlbiNsnhAll.encode();
        let asid = Command::TlbiNhAsid { vmid: 9, asid: 3 }.encode();
        let vaa = Command::TlbiNhVaa {
            vmid: 9,
            va: 0x1000,
            scope: TlbiScope::single(true),
        }
        .encode();
        let b = classify(&[all, nsnh, asid, sync(SyncSignal::Sev, 0)], &h, VMID).unwrap();
        assert_eq!(
            b.commands(),
            &[
                Command::TlbiNhAll { vmid: VMID },
                Command::TlbiNhAll { vmid: VMID },
                Command::TlbiNhAsid {
                    vmid: VMID,
                    asid: 3
                },
            ]
        );
        let b = classify(&[vaa, sync(SyncSignal::Irq, 0x8000_0000)], &h, VMID).unwrap();
        assert!(matches!(
            b.commands(),
            [Command::TlbiNhVaa { vmid: VMID, .. }]
        ));
        assert_eq!(b.sync.msi_addr, 0x8000_0000);
        let b = classify(&[sync(SyncSignal::None, 0)], &h, VMID).unwrap();
        assert!(b.commands().is_empty());
    }

    #[test]
    fn anything_but_tlbis_then_one_sync_is_refused() {
        let h = host();
        let s = sync(SyncSignal::None, 0);
        let t = va(1, 0x1000);
        // Empty, no sync at the end, a sync in the middle, too long.
        assert_eq!(classify(&[], &h, VMID), None);
        assert_eq!(classify(&[t], &h, VMID), None);
        assert_eq!(classify(&[t, s, t], &h, VMID), None);
        assert_eq!(classify(&[s, s], &h, VMID), None);
        assert_eq!(classify(&[t, t, t, t, s], &h, VMID), None);
        // Configuration invalidations (they recompose STEs), prefetches, CD invalidations.
        for other in [
            Command::CfgiSte { sid: 8, leaf: true },
            Command::CfgiAll,
            Command::CfgiCdAll { sid: 8 },
            Command::PrefetchConfig { sid: 8, ssid: None },
        ] {
            assert_eq!(classify(&[other.encode(), s], &h, VMID), None, "{other:?}");
        }
        // Commands the host may not issue at all: stage 2, EL2, EL3 maintenance.
        for forbidden in [
            Command::TlbiS12Vmall { vmid: VMID },
            Command::TlbiEl2All,
            Command::TlbiEl3All,
            Command::CfgiVmsPidm { vmid: VMID },
        ] {
            assert_eq!(
                classify(&[forbidden.encode(), s], &h, VMID),
                None,
                "{forbidden:?}"
            );
        }
        // Malformed: an unknown opcode, reserved bits set in a TLBI, reserved bits in the sync.
        assert_eq!(classify(&[[0xff, 0], s], &h, VMID), None);
        let mut bad = t;
        bad[0] |= 1 << 11;
        assert_eq!(classify(&[bad, s], &h, VMID), None);
        let mut bad_sync = s;
        bad_sync[0] |= 1 << 10;
        assert_eq!(classify(&[t, bad_sync], &h, VMID), None);
    }

    #[test]
    fn forward_tlbi_forwards_only_stage1_invalidations() {
        assert_eq!(
            forward_tlbi(&Command::TlbiNhAsid { vmid: 1, asid: 2 }, VMID),
            Some(Command::TlbiNhAsid {
                vmid: VMID,
                asid: 2
            })
        );
        assert_eq!(forward_tlbi(&Command::CfgiAll, VMID), None);
        assert_eq!(forward_tlbi(&Command::TlbiS12Vmall { vmid: 1 }, VMID), None);
        assert_eq!(forward_tlbi(&Command::TlbiEl2All, VMID), None);
    }
}
