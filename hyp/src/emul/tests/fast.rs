//! The short path of a strict unmap's batch (`emul::fast`): taken only for stage-1 TLBIs and one
//! CMD_SYNC, with the same result on the physical SMMU and in the host's registers as the general
//! path.

use std::vec;

use super::bringup::{cmd, reset_and_enable};
use super::fakes::*;
use crate::emul::Note;
use crate::smmu::cmd::{Command, TlbiScope};
use crate::smmu::regs::offset as o;

fn rig() -> Rig {
    let mut rig = Rig::new();
    reset_and_enable(&mut rig);
    rig.phys.take();
    rig.phys.short_batches = 0;
    rig.take_notes();
    rig
}

/// Linux's strict unmap: TLBI_NH_VA + CMD_SYNC, one physical submission with its sync, Portcullis'
/// VMID, the batch consumed before the write returns.
#[test]
fn a_strict_unmap_takes_the_short_path() {
    let mut rig = rig();
    rig.issue(&[cmd::tlbi_nh_va(5, 0x4000_3000, true), cmd::SYNC_NONE]);
    assert_eq!(rig.phys.short_batches, 1);
    assert_eq!(
        rig.phys.take(),
        [
            PhysOp::Submit(vec![Command::TlbiNhVa {
                vmid: policy().vmid,
                asid: 5,
                va: 0x4000_3000,
                scope: TlbiScope::single(true),
            }]),
            PhysOp::Sync
        ]
    );
    assert_eq!(rig.r32(o::CMDQ_CONS), rig.r32(o::CMDQ_PROD));
    assert_eq!(rig.smmu.sync_stats().sig_none, 1);
    assert!(rig.take_notes().is_empty());
    // The host's VMID field means nothing: Portcullis' is forced.
    rig.issue(&[cmd::tlbi_nh_asid(0x1234, 9), cmd::SYNC_SEV]);
    assert_eq!(rig.phys.short_batches, 2);
    assert_eq!(
        rig.phys.take(),
        [
            PhysOp::Submit(vec![Command::TlbiNhAsid {
                vmid: policy().vmid,
                asid: 9
            }]),
            PhysOp::Sync
        ]
    );
    assert!(rig.phys.violations.is_empty(), "{:?}", rig.phys.violations);
}

/// Everything else goes the general way, and still works: configuration invalidations, a batch
/// with no sync or two, a batch wrapping at the queue's end, commands the host may not issue.
#[test]
fn other_batches_take_the_general_path() {
    let mut rig = rig();
    for batch in [
        vec![cmd::cfgi_ste(8), cmd::SYNC_NONE],
        vec![cmd::cfgi_cd_all(8), cmd::SYNC_NONE],
        vec![cmd::tlbi_nh_asid(0, 1)],
        vec![cmd::tlbi_nh_asid(0, 1), cmd::SYNC_NONE, cmd::SYNC_NONE],
        vec![cmd::tlbi_nh_asid(0, 1); 4]
            .into_iter()
            .chain([cmd::SYNC_NONE])
            .collect(),
    ] {
        rig.issue(&batch);
        assert_eq!(rig.phys.short_batches, 0, "{batch:x?}");
        assert_eq!(rig.r32(o::CMDQ_CONS), rig.r32(o::CMDQ_PROD), "{batch:x?}");
    }
    // Up to the queue's last slot (2^8 entries), then a TLBI + sync that wraps.
    while rig.r32(o::CMDQ_PROD) & 0xff != 0xff {
        rig.issue(&[cmd::SYNC_NONE]);
    }
    let short = rig.phys.short_batches;
    rig.phys.take();
    rig.issue(&[cmd::tlbi_nh_asid(0, 3), cmd::SYNC_NONE]);
    assert_eq!(rig.phys.short_batches, short);
    assert_eq!(rig.r32(o::CMDQ_CONS), rig.r32(o::CMDQ_PROD));
    assert_eq!(
        rig.phys.take(),
        [
            PhysOp::Submit(vec![Command::TlbiNhAsid {
                vmid: policy().vmid,
                asid: 3
            }]),
            PhysOp::Sync
        ]
    );
    // Stage 2 and EL2 maintenance in the shape of a strict unmap: CERROR_ILL, nothing physical.
    for bad in [cmd::tlbi_s2_ipa(7, 0x4000_0000), cmd::TLBI_EL2_ALL] {
        let short = rig.phys.short_batches;
        let start = rig.r32(o::CMDQ_PROD);
        rig.issue(&[bad, cmd::SYNC_NONE]);
        assert_eq!(rig.phys.short_batches, short);
        assert!(rig.phys.take().is_empty());
        let cons = rig.r32(o::CMDQ_CONS);
        assert_eq!(cons & 0x1ff, start & 0x1ff, "CONS at the bad command");
        assert_eq!(cons >> 24, 0x01, "CERROR_ILL");
        assert!(matches!(
            rig.take_notes().as_slice(),
            [Note::IllegalCommand { .. }]
        ));
        // The host replaces the bad command with a CMD_SYNC and acknowledges.
        let slot = CMDQ + 16 * u64::from(cons & 0xff);
        rig.mem.poke_words(slot, &cmd::SYNC_NONE);
        rig.w32(o::GERRORN, rig.r32(o::GERROR));
        let prod = rig.r32(o::CMDQ_PROD);
        rig.w32(o::CMDQ_PROD, prod);
        assert_eq!(rig.r32(o::CMDQ_CONS) & 0x1ff, prod);
        rig.phys.take();
    }
    assert!(rig.phys.violations.is_empty(), "{:?}", rig.phys.violations);
}

/// A physical failure holds the host at the batch's CMD_SYNC (the TLBIs before it were
/// consumed), as on the general path; the retry completes it.
#[test]
fn a_failed_physical_sync_holds_the_host_at_its_sync() {
    let mut rig = rig();
    let start = rig.r32(o::CMDQ_PROD);
    rig.phys.fail_sync = true;
    rig.issue(&[
        cmd::tlbi_nh_va(1, 0x1000, true),
        cmd::tlbi_nh_va(1, 0x2000, true),
        cmd::SYNC_NONE,
    ]);
    assert_eq!(rig.phys.short_batches, 1);
    assert_eq!(rig.r32(o::CMDQ_CONS), (start + 2) & 0x1ff);
    assert!(matches!(
        rig.take_notes().as_slice(),
        [Note::Physical { .. }]
    ));
    rig.phys.fail_sync = false;
    let prod = rig.r32(o::CMDQ_PROD);
    rig.w32(o::CMDQ_PROD, prod);
    assert_eq!(rig.r32(o::CMDQ_CONS), prod);
    assert_eq!(rig.phys.short_batches, 2);
}

/// A batch whose queue memory the host may not read is never taken short: the general path
/// reports CERROR_ABT at its first command.
#[test]
fn an_unreadable_batch_is_cerror_abt() {
    let mut rig = rig();
    let start = rig.r32(o::CMDQ_PROD);
    let slot = CMDQ + 16 * u64::from(start & 0xff);
    rig.issue(&[cmd::tlbi_nh_asid(0, 1), cmd::SYNC_NONE]);
    rig.phys.take();
    rig.mem.allowed.clear();
    rig.mem.allowed.push(HOST_RAM.start..slot);
    let prod = start.wrapping_add(4) & 0x1ff;
    rig.w32(o::CMDQ_PROD, prod);
    assert_eq!(rig.phys.short_batches, 1);
    assert!(rig.phys.take().is_empty());
    assert_eq!(rig.r32(o::CMDQ_CONS) >> 24, 0x02, "CERROR_ABT");
}
