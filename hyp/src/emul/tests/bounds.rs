//! What one host register write may make Portcullis hold at once: bounded by the number of physical
//! streams, never by the number of commands the host queued (found by the `emul_smmu` fuzz target:
//! 86 CMD_CFGI_ALL in one `CMDQ_PROD` write over 4 streams kept 98 KiB live, growing with every
//! command).

use std::vec::Vec;

use super::bringup::{cmd, reset_and_enable};
use super::fakes::*;
use crate::emul::device::MAX_NOTES;
use crate::smmu::StreamId;
use crate::smmu::regs::offset as o;
use crate::smmu::ste::Ste;

/// More streams than one flush holds at least, so that the bound is the number of streams.
fn streams() -> Vec<StreamId> {
    (0..300).map(|i| i * 3).collect()
}

#[test]
fn a_batch_of_cfgi_all_materialises_each_stream_at_most_once_at_a_time() {
    let streams = streams();
    let mut rig = Rig::with(qemu_like(), &streams);
    reset_and_enable(&mut rig);
    rig.phys.largest_request = 0;
    let mut batch = std::vec![cmd::CFGI_ALL; 200];
    batch.push(cmd::SYNC_SEV);
    rig.issue(&batch);
    assert_eq!(rig.r32(o::CMDQ_CONS), 4 + 201, "every command consumed");
    let entry = core::mem::size_of::<(StreamId, Ste)>();
    assert!(
        rig.phys.largest_request <= streams.len() * entry,
        "{} bytes of STEs handed over at once for {} streams",
        rig.phys.largest_request,
        streams.len()
    );
    // Every stream was still written, and the batch still ends with one physical sync.
    let log = rig.phys.take();
    let stes = log
        .iter()
        .filter(|op| matches!(op, PhysOp::Ste(..)))
        .count();
    assert_eq!(stes, 200 * streams.len());
    assert_eq!(log.iter().filter(|op| **op == PhysOp::Sync).count(), 1);
    assert_eq!(log.last(), Some(&PhysOp::Sync));
}

#[test]
fn notes_of_one_write_are_bounded() {
    let mut rig = Rig::new();
    reset_and_enable(&mut rig);
    // The Stream table in Portcullis' memory (every composition records F_STE_FETCH) and the
    // Event queue disabled (every record is lost, one note each).
    rig.w32(o::CR0, 0b1000);
    rig.w64(o::STRTAB_BASE, HYP_MEM);
    rig.w32(o::STRTAB_BASE_CFG, 16);
    rig.w32(o::CR0, 0b1001);
    rig.take_notes();
    let batch = std::vec![cmd::CFGI_ALL; 200];
    rig.issue(&batch);
    let notes = rig.take_notes();
    assert!(!notes.is_empty());
    assert!(
        notes.len() <= MAX_NOTES,
        "{} notes from one write (at most {MAX_NOTES})",
        notes.len()
    );
}
