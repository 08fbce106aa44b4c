//! What a host batch costs Portcullis: heap bounded by a chunk whatever the batch asks, work
//! coalesced within a batch, and an allocation failure reported as CERROR_ABT (never a panic).
//!
//! Issue 8, escape 7: eight CMD_CFGI_STE_RANGE (Range = 31) in one `CMDQ_PROD` write over a
//! 2^16-entry linear table made Portcullis allocate 18 874 368 bytes at once and panic.

use std::vec::Vec;

use super::bringup::{bypass_ste, cmd, reset_and_enable};
use super::fakes::*;
use crate::emul::Note;
use crate::emul::commands::{Covered, STE_CHUNK};
use crate::smmu::StreamId;
use crate::smmu::queue::QueueIndex;
use crate::smmu::regs::offset as o;
use crate::test_alloc;
use proptest::prelude::*;

/// A linear Stream table of 2^16 STEs, in host RAM away from the fakes' other structures.
const LINEAR: u64 = 0x4400_0000;

const fn cfgi_ste_range(sid: u32, range: u8) -> [u64; 2] {
    [0x04 | (sid as u64) << 32, range as u64]
}

/// An STE with V = 1 and Config = stage 2, which the emulated SMMU has not: ILLEGAL, so
/// C_BAD_STE for the stream.
const ILLEGAL_STE_W0: u64 = 1 | 0b110 << 1;

/// A host with a physical stream for every StreamID of a 2^16 linear table, its SMMU enabled
/// with `illegal` STEs ILLEGAL (the rest invalid) and no Event queue.
fn linear_host(illegal: u32) -> Rig {
    let streams: Vec<StreamId> = (0..1 << 16).collect();
    let mut rig = Rig::with(qemu_like(), &streams);
    rig.mem.quiet = true;
    rig.phys.quiet = true;
    for sid in 0..illegal {
        rig.mem
            .poke_words(LINEAR + 64 * u64::from(sid), &[ILLEGAL_STE_W0]);
    }
    rig.w32(o::CR0, 0);
    rig.w64(o::STRTAB_BASE, 1 << 62 | LINEAR);
    rig.w32(o::STRTAB_BASE_CFG, 16); // linear, 2^16 entries
    rig.w64(o::CMDQ_BASE, 1 << 62 | CMDQ | 8);
    rig.w32(o::CMDQ_PROD, 0);
    rig.w32(o::CMDQ_CONS, 0);
    rig.w32(o::CR0, 1 << 3 | 1);
    assert_eq!(rig.r32(o::CR0ACK), 1 << 3 | 1);
    rig.phys.stes_written = 0;
    rig.take_notes();
    rig
}

/// Makes the valid-looking STEs from `first` on STE.V = 1, Config = abort: a change of every
/// such stream's state (invalid to abort), so the next invalidation writes its physical STE.
fn abort_all_from(rig: &mut Rig, first: u32) {
    for sid in first..1 << 16 {
        rig.mem.poke_words(LINEAR + 64 * u64::from(sid), &[1]);
    }
}

/// Puts `cmds` on the host's queue and writes `CMDQ_PROD` with the heap accounted (and limited to
/// `limit` bytes): returns (peak heap bytes, allocations refused).
fn issue_accounted(rig: &mut Rig, cmds: &[[u64; 2]], limit: Option<usize>) -> (usize, u64) {
    let log2 = rig.smmu.cmdq_log2();
    let mut prod = QueueIndex::from_field(log2, rig.r32(o::CMDQ_PROD));
    for c in cmds {
        rig.mem.poke_words(CMDQ + prod.byte_offset(16) as u64, c);
        prod = prod.advance(1);
    }
    test_alloc::track(limit);
    let notes = rig.smmu.write(
        o::CMDQ_PROD,
        4,
        prod.field().into(),
        &mut rig.mem,
        &mut rig.phys,
    );
    let used = test_alloc::stop();
    rig.notes.extend(notes);
    used
}

#[test]
fn eight_range_31_invalidations_take_a_chunk_of_heap() {
    let mut rig = linear_host(4096);
    abort_all_from(&mut rig, 4096);
    let mut batch = vec![cmd::CFGI_ALL; 8];
    batch.push(cmd::SYNC_SEV);
    let (peak, refused) = issue_accounted(&mut rig, &batch, None);
    assert_eq!(refused, 0);
    assert_eq!(rig.r32(o::CMDQ_CONS), 9, "all consumed, no error");
    // One chunk of composed STEs (72 bytes each) and change: was 8 x 65 536 STEs held at once.
    assert!(peak < 128 * 1024, "peak heap {peak} bytes");
    assert!(peak >= STE_CHUNK * 72);
    // The batch recomposed every stream once, not eight times; the ILLEGAL ones kept their
    // abort STE.
    assert_eq!(rig.phys.stes_written, (1 << 16) - 4096);
    // 4096 C_BAD_STE records the host has no queue for: a bounded handful of notes.
    let notes = rig.take_notes();
    assert!(notes.len() <= 32, "{} notes", notes.len());
    assert!(
        matches!(notes.last(), Some(Note::MoreNotes { count }) if *count > 4000),
        "{notes:?}"
    );
}

#[test]
fn ranges_in_a_batch_are_recomposed_once_whatever_their_order() {
    let mut rig = linear_host(0);
    abort_all_from(&mut rig, 0);
    let batch = [
        cfgi_ste_range(0x1234, 7),  // 0x1200..=0x12ff
        cfgi_ste_range(0x1000, 11), // 0x1000..=0x1fff (covers the first)
        cfgi_ste_range(0x8000, 14), // 0x8000..=0xffff
        cmd::cfgi_ste(0x1210),      // named: always recomposed
        cmd::CFGI_ALL,              // only the gaps
        cfgi_ste_range(0, 30),      // nothing left
        cmd::SYNC_NONE,
    ];
    let (_, refused) = issue_accounted(&mut rig, &batch, None);
    assert_eq!(refused, 0);
    assert_eq!(rig.r32(o::CMDQ_CONS), batch.len() as u32);
    // Every stream once; the named one again, but its abort STE is unchanged.
    assert_eq!(rig.phys.stes_written, 1 << 16);
    // A new batch starts afresh: the host may have changed its table in between.
    rig.mem.poke_words(LINEAR + 64 * 0x1210, &[0]);
    rig.mem.poke_words(LINEAR + 64 * 0xfffe, &bypass_ste());
    issue_accounted(&mut rig, &[cmd::CFGI_ALL, cmd::SYNC_NONE], None);
    assert_eq!(rig.phys.stes_written, (1 << 16) + 2);
    // Nothing changed: nothing written, but a stream that is not aborted is always rewritten.
    issue_accounted(&mut rig, &[cmd::CFGI_ALL, cmd::SYNC_NONE], None);
    assert_eq!(rig.phys.stes_written, (1 << 16) + 3);
}

#[test]
fn out_of_heap_is_cerror_abt_and_the_host_can_retry() {
    let mut rig = linear_host(0);
    abort_all_from(&mut rig, 0);
    let (_, refused) = issue_accounted(&mut rig, &[cmd::CFGI_ALL, cmd::SYNC_SEV], Some(16 * 1024));
    assert!(refused > 0);
    // CERROR_ABT (0x02) at the CFGI_ALL, GERROR.CMDQ_ERR active, nothing written.
    assert_eq!(rig.r32(o::CMDQ_CONS), 0x02 << 24);
    assert_eq!(rig.r32(o::GERROR) ^ rig.r32(o::GERRORN), 1);
    assert_eq!(rig.phys.stes_written, 0);
    assert!(
        rig.take_notes()
            .iter()
            .any(|n| matches!(n, Note::CommandOutOfMemory { index: 0 }))
    );
    // The host acknowledges; with memory back, the queue resumes at the CFGI_ALL.
    rig.w32(o::GERRORN, rig.r32(o::GERROR));
    assert_eq!(rig.r32(o::CMDQ_CONS), 2);
    assert_eq!(rig.phys.stes_written, 1 << 16);
}

#[test]
fn enabling_without_heap_still_writes_every_stream() {
    let streams: Vec<StreamId> = (0..4096).collect();
    let mut rig = Rig::with(qemu_like(), &streams);
    rig.mem.quiet = true;
    rig.phys.quiet = true;
    rig.w64(o::STRTAB_BASE, 1 << 62 | LINEAR);
    rig.w32(o::STRTAB_BASE_CFG, 12);
    test_alloc::track(Some(1024));
    let notes = rig.smmu.write(o::CR0, 4, 1, &mut rig.mem, &mut rig.phys);
    let (_, refused) = test_alloc::stop();
    assert!(refused > 0);
    assert!(notes.is_empty());
    assert_eq!(rig.phys.stes_written, 4096);
    assert_eq!(rig.r32(o::CR0ACK), 1);
}

#[test]
fn a_repeated_cfgi_all_reads_the_table_once() {
    let reads = |cmds: &[[u64; 2]]| {
        let mut rig = Rig::new();
        reset_and_enable(&mut rig);
        rig.mem.clear_log();
        rig.issue(cmds);
        let reads = rig.mem.accesses();
        reads
            .iter()
            .filter(|a| !a.write)
            .map(|a| a.len)
            .sum::<usize>()
    };
    let once = reads(&[cmd::CFGI_ALL, cmd::SYNC_SEV]);
    let thrice = reads(&[cmd::CFGI_ALL, cmd::CFGI_ALL, cmd::CFGI_ALL, cmd::SYNC_SEV]);
    // Two more 16-byte commands read (however the reads are grouped); no more STE or L1STD reads.
    assert_eq!(thrice, once + 32);
}

fn model_gaps(covered: &[(u32, u32)], range: (u32, u32)) -> Vec<(u32, u32)> {
    let is_covered = |s: u32| covered.iter().any(|&(a, b)| a <= s && s <= b);
    let mut out: Vec<(u32, u32)> = Vec::new();
    for s in range.0..=range.1 {
        if is_covered(s) {
            continue;
        }
        match out.last_mut() {
            Some((_, b)) if *b + 1 == s => *b = s,
            _ => out.push((s, s)),
        }
    }
    out
}

proptest! {
    /// The covered set gives exactly the StreamIDs of a range that no remembered range holds, and
    /// never claims one it does not hold (whatever it forgets when full).
    #[test]
    fn covered_gaps_match_a_model(
        inserts in proptest::collection::vec((0u32..200, 0u32..40), 0..30),
        query in (0u32..200, 0u32..100),
    ) {
        let mut covered = Covered::default();
        let mut remembered: Vec<(u32, u32)> = Vec::new();
        for (a, len) in inserts {
            let r = a..=a + len;
            covered.insert(&r);
            remembered.push((a, a + len));
        }
        let q = (query.0, query.0 + query.1);
        let gaps: Vec<(u32, u32)> = covered
            .gaps(&(q.0..=q.1))
            .map(|g| (*g.start(), *g.end()))
            .collect();
        // Every gap is inside the query, ordered and disjoint.
        for w in gaps.windows(2) {
            prop_assert!(w[0].1 < w[1].0);
        }
        for g in &gaps {
            prop_assert!(q.0 <= g.0 && g.0 <= g.1 && g.1 <= q.1);
        }
        // Nothing left out that the inserted ranges do not cover.
        let must = model_gaps(&remembered, q);
        let gap_ids: Vec<u32> = gaps.iter().flat_map(|&(a, b)| a..=b).collect();
        for (a, b) in must {
            for s in a..=b {
                prop_assert!(gap_ids.contains(&s), "{s} not recomposed");
            }
        }
        if covered.len_for_tests() < 16 {
            // Nothing forgotten: exactly the model.
            prop_assert_eq!(gaps, model_gaps(&remembered, q));
        }
    }
}

#[test]
fn covered_at_the_edges_of_the_streamid_space() {
    let mut c = Covered::default();
    c.insert(&(0..=StreamId::MAX));
    assert_eq!(c.gaps(&(0..=StreamId::MAX)).count(), 0);
    let mut c = Covered::default();
    c.insert(&(StreamId::MAX - 1..=StreamId::MAX));
    let g: Vec<_> = c.gaps(&(StreamId::MAX - 3..=StreamId::MAX)).collect();
    assert_eq!(g, [StreamId::MAX - 3..=StreamId::MAX - 2]);
}

#[test]
fn a_bulk_invalidation_reads_each_level_1_descriptor_once() {
    // Streams 0x08, 0x10, 0x11 share level 1 descriptor 0 (SPLIT 8); 0x300 has descriptor 3.
    let mut rig = Rig::new();
    reset_and_enable(&mut rig);
    rig.mem.clear_log();
    rig.issue(&[cmd::CFGI_ALL, cmd::SYNC_SEV]);
    let l1_reads: Vec<u64> = rig
        .mem
        .accesses()
        .iter()
        .filter(|a| !a.write && a.len == 8)
        .map(|a| a.ipa)
        .collect();
    assert_eq!(l1_reads, [STRTAB, STRTAB + 3 * 8]);
    // A named invalidation reads its own descriptor.
    rig.mem.clear_log();
    rig.issue(&[cmd::cfgi_ste(0x10), cmd::cfgi_ste(0x11), cmd::SYNC_SEV]);
    let l1_reads = rig
        .mem
        .accesses()
        .iter()
        .filter(|a| !a.write && a.len == 8)
        .count();
    assert_eq!(l1_reads, 2);
}
