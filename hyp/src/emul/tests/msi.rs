//! CMD_SYNC completion by MSI, checked against the DMA policy, and the IRQ_CFG registers.

use std::vec;

use super::bringup::{cmd, reset_and_enable};
use super::fakes::*;
use crate::emul::Note;
use crate::emul::state::MAX_PENDING;
use crate::smmu::regs::offset as o;

/// CMD_SYNC, CS = SIG_IRQ, MSH inner shareable, MSIAttr Inner+Outer write-back (as Linux builds
/// it for MSI polling).
const fn sync_irq(addr: u64, data: u32) -> [u64; 2] {
    [
        0x46 | 0b01 << 12 | 0b11 << 22 | 0xf << 24 | (data as u64) << 32,
        addr,
    ]
}

const MSI_CMDQ_ABT_ERR: u32 = 1 << 4;

fn word(rig: &Rig, addr: u64) -> u32 {
    let mut b = [0u8; 4];
    rig.mem.peek(addr, &mut b);
    u32::from_le_bytes(b)
}

/// The slot the next command goes to.
fn next_slot(rig: &Rig) -> u64 {
    CMDQ + 16 * u64::from(rig.r32(o::CMDQ_PROD) & 0xff)
}

/// Linux's MSI polling: the sync's MSI goes to the sync's own slot with MSIData 0, and the driver
/// waits for the slot's first word to become 0.
#[test]
fn msi_to_the_host_queue_completes_the_sync() {
    let mut rig = Rig::new();
    reset_and_enable(&mut rig);
    rig.mem.clear_log();
    let sync_slot = next_slot(&rig) + 16;
    rig.issue(&[cmd::tlbi_nh_asid(0, 5), sync_irq(sync_slot, 0)]);
    assert_eq!(
        word(&rig, sync_slot),
        0,
        "the MSI cleared the sync's first word"
    );
    assert_eq!(rig.r32(o::CMDQ_CONS), rig.r32(o::CMDQ_PROD));
    assert_eq!(rig.r32(o::GERROR), rig.r32(o::GERRORN));
    assert!(rig.take_notes().is_empty());
    // The write comes after the physical sync.
    assert_eq!(
        rig.phys.take(),
        [
            PhysOp::Submit(vec![crate::smmu::cmd::Command::TlbiNhAsid {
                vmid: 7,
                asid: 5
            }]),
            PhysOp::Sync
        ]
    );
    let writes: Vec<_> = rig.mem.accesses().into_iter().filter(|a| a.write).collect();
    assert_eq!(
        writes,
        [MemAccess {
            ipa: sync_slot,
            len: 4,
            write: true,
            allowed: true
        }]
    );
    let stats = rig.smmu.sync_stats();
    assert_eq!(
        (stats.sig_irq, stats.msi_written, stats.msi_aborted),
        (1, 1, 0)
    );

    // Any other address the host's devices may write gets MSIData, little-endian.
    let target = HOST_RAM.start + 0x5_0000;
    rig.issue(&[sync_irq(target, 0xdead_beef)]);
    assert_eq!(word(&rig, target), 0xdead_beef);
    assert_eq!(rig.r32(o::GERROR), rig.r32(o::GERRORN));
}

use std::vec::Vec;

/// Where no device of the host may write: the crash region (the loaded capture kernel),
/// Portcullis' memory, beyond RAM. Nothing lands; the sync
/// still completes; GERROR.MSI_CMDQ_ABT_ERR says the MSI aborted.
#[test]
fn msi_outside_the_dma_policy_aborts_and_writes_nothing() {
    let mut rig = Rig::new();
    reset_and_enable(&mut rig);
    // The host's CPU may write the crash region in normal mode: only the DMA policy refuses it.
    assert!(
        rig.mem
            .allowed
            .iter()
            .any(|r| r.contains(&CRASH_REGION.start))
    );
    for target in [
        CRASH_REGION.start,
        CRASH_REGION.end - 4,
        HYP_MEM,
        HYP_MEM + 0x1000,
        0x1_0000_0000,
        HOST_RAM.end,
        HOST_RAM.start - 4,
    ] {
        rig.mem.poke(target, &[0x5a; 4]);
        rig.mem.clear_log();
        rig.issue(&[cmd::tlbi_nh_asid(0, 6), sync_irq(target, 0x1234_5678)]);
        let mut after = [0u8; 4];
        rig.mem.peek(target, &mut after);
        assert_eq!(after, [0x5a; 4], "MSI landed at {target:#x}");
        assert!(
            rig.mem.accesses().iter().all(|a| !a.write),
            "{target:#x}: {:?}",
            rig.mem.accesses()
        );
        // The sync completed anyway, and the abort is a global error.
        assert_eq!(rig.r32(o::CMDQ_CONS), rig.r32(o::CMDQ_PROD));
        let active = rig.r32(o::GERROR) ^ rig.r32(o::GERRORN);
        assert_eq!(active, MSI_CMDQ_ABT_ERR, "{target:#x}");
        assert_eq!(
            rig.take_notes(),
            [Note::SyncMsiAborted {
                ipa: crate::smmu::Ipa(target)
            }]
        );
        // The host acknowledges; the queue was never stopped.
        rig.w32(o::GERRORN, rig.r32(o::GERROR));
        assert_eq!(rig.r32(o::GERROR), rig.r32(o::GERRORN));
    }
    let stats = rig.smmu.sync_stats();
    assert_eq!((stats.msi_written, stats.msi_aborted), (0, 7));
}

/// Without the DMA check (a physical SMMU that would let devices write everywhere the CPU may),
/// the crash region would be written: the check is what refuses it.
#[test]
fn the_dma_policy_is_what_refuses_the_crash_region() {
    let mut rig = Rig::new();
    reset_and_enable(&mut rig);
    rig.phys.dma_writable = vec![HOST_RAM];
    rig.issue(&[sync_irq(CRASH_REGION.start, 0x77)]);
    assert_eq!(word(&rig, CRASH_REGION.start), 0x77);
}

/// SIG_NONE and SIG_SEV write nothing; SIG_IRQ with MSIADDR 0 sends nothing and is no error.
#[test]
fn other_signals_write_nothing() {
    let mut rig = Rig::new();
    reset_and_enable(&mut rig);
    rig.mem.clear_log();
    let before = rig.smmu.sync_stats();
    rig.issue(&[cmd::SYNC_NONE, cmd::SYNC_SEV, cmd::SYNC_IRQ]);
    assert_eq!(rig.r32(o::CMDQ_CONS), rig.r32(o::CMDQ_PROD));
    assert_eq!(rig.r32(o::GERROR), rig.r32(o::GERRORN));
    assert!(rig.mem.accesses().iter().all(|a| !a.write));
    assert_eq!(rig.phys.take(), [PhysOp::Sync]);
    let s = rig.smmu.sync_stats();
    assert_eq!(s.sig_none - before.sig_none, 1);
    assert_eq!(s.sig_sev - before.sig_sev, 1);
    assert_eq!(s.sig_irq - before.sig_irq, 1);
    assert_eq!(s.msi_written + s.msi_aborted, 0);
}

/// A sync that did not complete (the physical sync failed) gets no MSI; the retry does.
#[test]
fn no_msi_for_a_sync_held_back() {
    let mut rig = Rig::new();
    reset_and_enable(&mut rig);
    let target = HOST_RAM.start + 0x6_0000;
    rig.mem.poke(target, &[0xff; 4]);
    rig.phys.fail_sync = true;
    rig.issue(&[cmd::tlbi_nh_asid(0, 7), sync_irq(target, 0)]);
    assert_eq!(word(&rig, target), 0xffff_ffff);
    assert_ne!(rig.r32(o::CMDQ_CONS), rig.r32(o::CMDQ_PROD));
    rig.phys.fail_sync = false;
    rig.take_notes();
    let prod = rig.r32(o::CMDQ_PROD);
    rig.w32(o::CMDQ_PROD, prod);
    assert_eq!(rig.r32(o::CMDQ_CONS), prod);
    assert_eq!(word(&rig, target), 0);
}

/// More SIG_IRQ syncs in one batch than are held: every one is written, in order, the extra ones
/// costing one more physical sync.
#[test]
fn many_msi_syncs_in_one_batch() {
    let mut rig = Rig::new();
    reset_and_enable(&mut rig);
    rig.phys.take();
    let n = MAX_PENDING + 3;
    let targets: Vec<u64> = (0..n as u64)
        .map(|i| HOST_RAM.start + 0x7_0000 + 4 * i)
        .collect();
    let cmds: Vec<[u64; 2]> = targets
        .iter()
        .enumerate()
        .map(|(i, &t)| sync_irq(t, i as u32 + 1))
        .collect();
    rig.issue(&cmds);
    for (i, &t) in targets.iter().enumerate() {
        assert_eq!(word(&rig, t), i as u32 + 1);
    }
    assert_eq!(rig.r32(o::CMDQ_CONS), rig.r32(o::CMDQ_PROD));
    assert_eq!(rig.phys.take(), [PhysOp::Sync, PhysOp::Sync]);
}

/// The IRQ_CFG registers read back what was written (implemented bits only) while the interrupt
/// is disabled; a write with it enabled is ignored; enabling it with an MSI address is noted.
#[test]
fn irq_cfg_registers() {
    let mut rig = Rig::new();
    // Linux with IDR0.MSI and no MSI domain: clears CFG0 of each source, keeps wired interrupts.
    for reg in [o::GERROR_IRQ_CFG0, o::EVTQ_IRQ_CFG0] {
        rig.w64(reg, 0);
        assert_eq!(rig.r64(reg), 0);
    }
    rig.w64(o::EVTQ_IRQ_CFG0, 0xffff_ffff_ffff_ffff);
    assert_eq!(rig.r64(o::EVTQ_IRQ_CFG0), 0x000f_ffff_ffff_fffc);
    rig.w32(o::EVTQ_IRQ_CFG0 + 4, 0);
    assert_eq!(rig.r64(o::EVTQ_IRQ_CFG0), 0xffff_fffc);
    rig.w32(o::EVTQ_IRQ_CFG1, 0xabcd_0123);
    assert_eq!(rig.r32(o::EVTQ_IRQ_CFG1), 0xabcd_0123);
    rig.w32(o::EVTQ_IRQ_CFG2, 0xffff_ffff);
    assert_eq!(rig.r32(o::EVTQ_IRQ_CFG2), 0x3f);
    assert!(rig.take_notes().is_empty());
    // Enabled with an address: noted, not sent as an MSI.
    rig.w32(o::IRQ_CTRL, 1 << 2);
    assert!(matches!(
        rig.take_notes().as_slice(),
        [Note::IrqMsiNotSent { .. }]
    ));
    rig.w32(o::EVTQ_IRQ_CFG1, 0);
    assert_eq!(rig.r32(o::EVTQ_IRQ_CFG1), 0xabcd_0123);
    assert!(matches!(
        rig.take_notes().as_slice(),
        [Note::WriteIgnored { .. }]
    ));
    // GERROR's are separate, and not guarded by the Event queue's enable.
    rig.w32(o::GERROR_IRQ_CFG1, 9);
    assert_eq!(rig.r32(o::GERROR_IRQ_CFG1), 9);
    assert_eq!(rig.r32(o::EVTQ_IRQ_CFG1), 0xabcd_0123);
    // Disabled again with the address cleared: no note.
    rig.w32(o::IRQ_CTRL, 0);
    rig.w64(o::EVTQ_IRQ_CFG0, 0);
    rig.w32(o::IRQ_CTRL, 0b101);
    assert!(rig.take_notes().is_empty());
}
