//! The fence window's checkpoints, as they happen: one counter read and one relaxed store each,
//! into a small static array (no lock, no allocation, no log inside the window). The fence arms
//! the record when it starts and disarms it when it is complete; checkpoints in shared code (the
//! SMMU register frame, the DMA barriers) record only while it is armed. Rendered after the fence
//! by `portcullis::fence::profile`.

use crate::arch::cpu;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use portcullis::fence::profile::{CHECKPOINTS, Checkpoint, Profile};

static TICKS: [AtomicU64; CHECKPOINTS] = [const { AtomicU64::new(0) }; CHECKPOINTS];
static CONS_READS: AtomicU32 = AtomicU32::new(0);
static ARMED: AtomicBool = AtomicBool::new(false);

/// Whether the fence's steps cut for real or only rehearse (`crash::rehearse`, at boot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Run {
    Fence,
    Rehearsal,
}

/// Starts a new record of a fence whose trap entered the vector at counter `vector` (only the
/// CPU that raises the fence calls this: once at boot for the rehearsal, once at the fence).
pub fn arm(vector: u64) {
    for t in &TICKS {
        t.store(0, Ordering::Relaxed);
    }
    CONS_READS.store(0, Ordering::Relaxed);
    TICKS[Checkpoint::Vector as usize].store(vector, Ordering::Relaxed);
    ARMED.store(true, Ordering::Relaxed);
}

/// Records `at` now (while armed).
#[inline(always)]
pub fn mark(at: Checkpoint) {
    if ARMED.load(Ordering::Relaxed) {
        TICKS[at as usize].store(cpu::counter(), Ordering::Relaxed);
    }
}

/// Records `at` as passed at counter `ticks` (while armed).
pub fn mark_at(at: Checkpoint, ticks: u64) {
    if ARMED.load(Ordering::Relaxed) {
        TICKS[at as usize].store(ticks, Ordering::Relaxed);
    }
}

/// Counts a `CMDQ_CONS` read (while armed).
#[inline(always)]
pub fn cons_read() {
    if ARMED.load(Ordering::Relaxed) {
        CONS_READS.fetch_add(1, Ordering::Relaxed);
    }
}

/// Ends the record and returns it.
pub fn disarm() -> Profile {
    ARMED.store(false, Ordering::Relaxed);
    let mut p = Profile::default();
    for (t, a) in p.ticks.iter_mut().zip(&TICKS) {
        *t = a.load(Ordering::Relaxed);
    }
    p.cons_reads = CONS_READS.load(Ordering::Relaxed);
    p
}
