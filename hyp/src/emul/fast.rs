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

use crate::smmu::cmd::{
    CMD0_SYNC, CMD0_TLBI, CMD1_SYNC, CMD1_TLBI, Command, CommandError, Sync, SyncSignal, TlbiScope,
    opcode,
};
use crate::smmu::regs::SmmuFeatures;
use tock_registers::RegisterLongName;
use tock_registers::fields::Field;

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

/// The bits of `f` in its register.
const fn bits<R: RegisterLongName>(f: Field<u64, R>) -> u64 {
    f.mask << f.shift
}

const OPCODE: u64 = bits(CMD0_TLBI::OPCODE);
/// CMD_TLBI_NH_ASID: VMID and ASID; word 1 RES0.
const NH_ASID_W0: u64 = OPCODE | bits(CMD0_TLBI::VMID) | bits(CMD0_TLBI::ASID);
/// CMD_TLBI_NH_VA without a range (NUM = SCALE = 0, TG = TTL = 0): VMID, ASID; Leaf and the VA.
const NH_VA_W0: u64 = NH_ASID_W0;
const NH_VA_W1: u64 = bits(CMD1_TLBI::LEAF) | bits(CMD1_TLBI::VA);
/// CMD_SYNC: every field but the Reserved CS encoding, checked apart.
const SYNC_W0: u64 = OPCODE
    | bits(CMD0_SYNC::CS)
    | bits(CMD0_SYNC::MSH)
    | bits(CMD0_SYNC::MSIATTR)
    | bits(CMD0_SYNC::MSIDATA);
const SYNC_W1: u64 = bits(CMD1_SYNC::MSIADDR);

/// The commands of a strict unmap in their usual encodings -- CMD_TLBI_NH_VA without a range,
/// CMD_TLBI_NH_ASID, CMD_SYNC -- decoded and checked with a few masks instead of the general
/// decoder. `None` for any other opcode or encoding: [`decode_checked`] decides those. Whenever
/// this returns a command, [`decode_checked`] returns the same one (tested over random words).
pub fn decode_hot(raw: [u64; 2], host: &SmmuFeatures) -> Option<Command> {
    let [w0, w1] = raw;
    let field = |f: u64, shift: usize| (w0 & f) >> shift;
    match (w0 & OPCODE) as u8 {
        opcode::TLBI_NH_VA if host.stage1 && w0 & !NH_VA_W0 == 0 && w1 & !NH_VA_W1 == 0 => {
            Some(Command::TlbiNhVa {
                vmid: field(bits(CMD0_TLBI::VMID), CMD0_TLBI::VMID.shift) as u16,
                asid: field(bits(CMD0_TLBI::ASID), CMD0_TLBI::ASID.shift) as u16,
                va: w1 & bits(CMD1_TLBI::VA),
                scope: TlbiScope::single(w1 & bits(CMD1_TLBI::LEAF) != 0),
            })
        }
        opcode::TLBI_NH_ASID if host.stage1 && w0 & !NH_ASID_W0 == 0 && w1 == 0 => {
            Some(Command::TlbiNhAsid {
                vmid: field(bits(CMD0_TLBI::VMID), CMD0_TLBI::VMID.shift) as u16,
                asid: field(bits(CMD0_TLBI::ASID), CMD0_TLBI::ASID.shift) as u16,
            })
        }
        opcode::SYNC if w0 & !SYNC_W0 == 0 && w1 & !SYNC_W1 == 0 => {
            let signal = match field(bits(CMD0_SYNC::CS), CMD0_SYNC::CS.shift) {
                0b00 => SyncSignal::None,
                0b01 => SyncSignal::Irq,
                0b10 => SyncSignal::Sev,
                _ => return None,
            };
            Some(Command::Sync(Sync {
                signal,
                msh: field(bits(CMD0_SYNC::MSH), CMD0_SYNC::MSH.shift) as u8,
                msi_attr: field(bits(CMD0_SYNC::MSIATTR), CMD0_SYNC::MSIATTR.shift) as u8,
                msi_data: field(bits(CMD0_SYNC::MSIDATA), CMD0_SYNC::MSIDATA.shift) as u32,
                msi_addr: w1,
            }))
        }
        _ => None,
    }
}

/// [`decode_hot`], else the general decoder and checks.
fn decode(raw: [u64; 2], host: &SmmuFeatures) -> Option<Command> {
    decode_hot(raw, host).or_else(|| decode_checked(raw, host).ok())
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
    let Some(Command::Sync(sync)) = decode(*last, host) else {
        return None;
    };
    let mut out = TlbiSync {
        tlbis: [Command::TlbiNhAll { vmid }; MAX_ENTRIES - 1],
        len: 0,
        sync,
    };
    for (slot, raw) in out.tlbis.iter_mut().zip(tlbis) {
        *slot = forward_tlbi(&decode(*raw, host)?, vmid)?;
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
        let b = classify(&[all, nsnh, asid, sync(SyncSignal::Sev, 0)], &h, VMID)
            .expect("three TLBIs + sync");
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
        let b =
            classify(&[vaa, sync(SyncSignal::Irq, 0x8000_0000)], &h, VMID).expect("VAA + MSI sync");
        assert!(matches!(
            b.commands(),
            [Command::TlbiNhVaa { vmid: VMID, .. }]
        ));
        assert_eq!(b.sync.msi_addr, 0x8000_0000);
        let b = classify(&[sync(SyncSignal::None, 0)], &h, VMID).expect("a lone sync");
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
    fn the_usual_encodings_are_decoded_hot() {
        let h = host();
        for raw in [
            va(7, 0x4000_1000),
            Command::TlbiNhVa {
                vmid: 0,
                asid: 0xffff,
                va: 0xffff_ffff_ffff_f000,
                scope: TlbiScope::single(false),
            }
            .encode(),
            Command::TlbiNhAsid { vmid: 3, asid: 9 }.encode(),
            sync(SyncSignal::None, 0),
            sync(SyncSignal::Sev, 0),
            sync(SyncSignal::Irq, 0x8000_1230),
        ] {
            let hot = decode_hot(raw, &h);
            assert!(hot.is_some(), "{raw:x?}");
            assert_eq!(hot, decode_checked(raw, &h).ok());
        }
        // A ranged TLBI is left to the general decoder.
        let ranged = Command::TlbiNhVa {
            vmid: 0,
            asid: 1,
            va: 0x1000,
            scope: TlbiScope {
                leaf: true,
                granule: crate::smmu::cmd::TlbiGranule::K4,
                ttl: 3,
                num: 1,
                scale: 0,
            },
        }
        .encode();
        assert_eq!(decode_hot(ranged, &h), None);
        // Without stage 1 (never shown to a host, but the checks must agree), no TLBI.
        let mut no_s1 = h;
        no_s1.stage1 = false;
        assert_eq!(decode_hot(va(1, 0x1000), &no_s1), None);
    }

    proptest::proptest! {
        /// The hot decoder never accepts what the general one refuses, and agrees with it on what
        /// it accepts: any bit of a usual encoding flipped, with and without stage 1.
        #[test]
        fn decode_hot_agrees_with_the_general_decoder(
            which in 0usize..6,
            asid: u16,
            vmid: u16,
            page in 0u64..(1 << 52),
            data: u32,
            flips in proptest::collection::vec(0u32..128, 0..3),
            stage1: bool,
        ) {
            let mut h = host();
            h.stage1 = stage1;
            let mut raw = match which {
                0 => va(asid, page << 12),
                1 => Command::TlbiNhAsid { vmid, asid }.encode(),
                2 => sync(SyncSignal::None, 0),
                3 => sync(SyncSignal::Sev, 0),
                4 => Command::Sync(Sync {
                    signal: SyncSignal::Irq,
                    msh: 3,
                    msi_attr: 0xf,
                    msi_data: data,
                    msi_addr: (page << 2) & ((1 << 56) - 4),
                })
                .encode(),
                _ => Command::TlbiNhVa {
                    vmid,
                    asid,
                    va: page << 12,
                    scope: TlbiScope::single(false),
                }
                .encode(),
            };
            for bit in flips {
                raw[(bit / 64) as usize] ^= 1 << (bit % 64);
            }
            if let Some(hot) = decode_hot(raw, &h) {
                proptest::prop_assert_eq!(Some(hot), decode_checked(raw, &h).ok(), "{:x?}", raw);
            }
        }
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
