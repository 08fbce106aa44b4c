//! Hypervisor calls that only a test build (`--features test-hooks`) answers, so guest tests can
//! prove what did *not* happen: that nothing landed in Portcullis' own memory or in the fault
//! report, and which faults the SMMU recorded. A release image answers them NOT_SUPPORTED like any
//! unknown call.
//!
//! The calls and what they return: `spec::test_hook` (one table, shared with the guest payloads).
//!
//! The canary pages (`test_hook::CANARIES`), each filled with a known pattern nothing in Portcullis
//! writes after boot: 0 = a page of the image's `.data` (the `test_hook::CANARY` canary), 1 = a page
//! allocated from the heap at boot, 2 = the last page of Portcullis' reserved region (kept out of
//! the heap, whose limit ends below it).
//!
//! The report checksum after Portcullis' last write (`test_hook::REPORT`) lets a test tell
//! Portcullis' own rewrites (every new fault in crash mode) from anyone else's: while nothing but
//! Portcullis writes the region, x1 = x2.

use crate::arch::head;
use crate::arch::vectors::TrapFrame;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};
use report::checksum;
use spec::test_hook;

pub mod report;

const INVALID_PARAMETERS: u64 = -2i64 as u64;
const CANARY_SIZE: usize = 4096;
const MAX_CANARIES: usize = 3;

/// A page of Portcullis' data with a known pattern. Only devices (through a broken firewall) could
/// change it; nothing in Portcullis writes it. 64 KiB aligned, so that a GIC pending table (64 KiB
/// aligned, 2^16 bits on QEMU) placed at its block covers it: the gic-mediation scenario aims an
/// LPI's pending bit at it.
#[repr(C, align(65536))]
struct Canary(UnsafeCell<[u8; CANARY_SIZE]>);

// SAFETY: Portcullis never writes the canary; it is only read, with volatile loads.
unsafe impl Sync for Canary {}

static CANARY: Canary = Canary(UnsafeCell::new(pattern()));

/// The heap and tail canary pages (0 = none), set once by [`init`] before the host runs.
static HEAP_CANARY: AtomicU64 = AtomicU64::new(0);
static TAIL_CANARY: AtomicU64 = AtomicU64::new(0);

const fn pattern_byte(i: usize) -> u8 {
    (i as u8).wrapping_mul(37) ^ 0xa5
}

const fn pattern() -> [u8; CANARY_SIZE] {
    let mut p = [0u8; CANARY_SIZE];
    let mut i = 0;
    while i < CANARY_SIZE {
        p[i] = pattern_byte(i);
        i += 1;
    }
    p
}

/// Sets up the heap canary. Called once on the boot CPU, after the heap is initialised
/// and the final EL2 tables map the whole image, before the host runs.
pub fn init() {
    let layout = core::alloc::Layout::from_size_align(CANARY_SIZE, CANARY_SIZE);
    if let Ok(layout) = layout {
        // SAFETY: a non-zero-sized layout; the page is leaked (the canary lives for ever).
        let page = unsafe { alloc::alloc::alloc(layout) };
        if !page.is_null() {
            // SAFETY: `page` is a fresh allocation of CANARY_SIZE bytes.
            unsafe { fill(page) };
            HEAP_CANARY.store(page as u64, Ordering::SeqCst);
        }
    }
}

/// Sets up the tail canary at `tail`: the last page of Portcullis' memory, which the heap is
/// kept from (its limit ends below). Called once on the boot CPU, before the host runs.
///
/// # Safety
/// `[tail, tail + 4 KiB)` must be Portcullis' memory that nothing else uses, mapped read-write
/// at EL2.
pub unsafe fn tail_canary(tail: u64) {
    // SAFETY: per the caller's contract.
    unsafe { fill(tail as *mut u8) };
    TAIL_CANARY.store(tail, Ordering::SeqCst);
}

/// # Safety
/// `page` must be CANARY_SIZE writable bytes nothing else uses.
unsafe fn fill(page: *mut u8) {
    for i in 0..CANARY_SIZE {
        // SAFETY: per the caller's contract.
        unsafe { page.add(i).write_volatile(pattern_byte(i)) };
    }
}

/// The canary pages, in hook order; `None` where absent.
fn canaries() -> [Option<u64>; MAX_CANARIES] {
    let nonzero = |a: u64| (a != 0).then_some(a);
    [
        Some(CANARY.0.get() as u64),
        nonzero(HEAP_CANARY.load(Ordering::SeqCst)),
        nonzero(TAIL_CANARY.load(Ordering::SeqCst)),
    ]
}

/// The present canaries, packed to the front (the hook's indices).
fn present_canaries() -> ([u64; MAX_CANARIES], usize) {
    let mut out = [0u64; MAX_CANARIES];
    let mut n = 0;
    for a in canaries().into_iter().flatten() {
        out[n] = a;
        n += 1;
    }
    (out, n)
}

/// FNV-1a over the image canary, byte by byte (the `test_hook::CANARY` checksum, unchanged).
fn canary_checksum() -> u64 {
    let base = CANARY.0.get() as *const u8;
    (0..CANARY_SIZE).fold(0xcbf2_9ce4_8422_2325u64, |h, i| {
        // SAFETY: `i` is inside the canary array.
        let b = unsafe { base.add(i).read_volatile() };
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether the canary page at `page` still holds its pattern.
fn intact(page: u64) -> bool {
    (0..CANARY_SIZE).all(|i| {
        // SAFETY: `page` is one of the canary pages, CANARY_SIZE bytes mapped at EL2.
        let b = unsafe { ((page + i as u64) as *const u8).read_volatile() };
        b == pattern_byte(i)
    })
}

/// x1..x3 of `test_hook::INTEGRITY`.
fn integrity() -> (u64, u64, u64) {
    // SAFETY: linker-script symbols; only their addresses are used.
    let (start, rodata_end) = unsafe {
        (
            &head::__image_start as *const u8 as u64,
            &head::__rodata_end as *const u8 as u64,
        )
    };
    let code = checksum(start, rodata_end - start);
    let (pages, n) = present_canaries();
    let mut sums = 0xcbf2_9ce4_8422_2325u64;
    let mut damaged = 0u64;
    for (i, &page) in pages[..n].iter().enumerate() {
        sums = (sums ^ checksum(page, CANARY_SIZE as u64)).wrapping_mul(0x0100_0000_01b3);
        if !intact(page) {
            damaged |= 1 << i;
        }
    }
    (code, sums, damaged)
}

/// Answers a test hook, or returns false if `frame.x[0]` is not one.
pub fn handle(frame: &mut TrapFrame) -> bool {
    match frame.x[0] as u32 {
        test_hook::COUNTERS => {
            use portcullis::diag::counters::COUNTERS;
            crate::firewall::log_counters("hook");
            let sync = crate::firewall::sync_stats();
            frame.x[0] = 0;
            frame.x[1] = COUNTERS.traps();
            frame.x[2] = COUNTERS.physical_total();
            frame.x[3] = (sync.msi_aborted << 32) | (sync.msi_written & 0xffff_ffff);
            true
        }
        test_hook::CANARY => {
            frame.x[0] = 0;
            frame.x[1] = CANARY.0.get() as u64;
            frame.x[2] = CANARY_SIZE as u64;
            frame.x[3] = canary_checksum();
            true
        }
        test_hook::FAULTS => {
            let sid = frame.x[1] as u32;
            let (count, addr, info) = crate::firewall::fault_summary(sid);
            frame.x[0] = 0;
            frame.x[1] = count;
            frame.x[2] = addr;
            frame.x[3] = info;
            true
        }
        test_hook::MODE => {
            let f = crate::firewall::fence_stats();
            frame.x[0] = 0;
            frame.x[1] = u64::from(crate::host::in_crash_mode());
            frame.x[2] = f.window_ns;
            frame.x[3] = f.streams;
            true
        }
        test_hook::CANARIES => {
            let (pages, n) = present_canaries();
            match pages[..n].get(frame.x[1] as usize) {
                Some(&page) => {
                    frame.x[0] = 0;
                    frame.x[1] = page;
                    frame.x[2] = CANARY_SIZE as u64;
                }
                None => frame.x[0] = INVALID_PARAMETERS,
            }
            frame.x[3] = n as u64;
            true
        }
        test_hook::INTEGRITY => {
            let (code, sums, damaged) = integrity();
            frame.x[0] = 0;
            frame.x[1] = code;
            frame.x[2] = sums;
            frame.x[3] = damaged;
            true
        }
        test_hook::REPORT => {
            let r = report::watched();
            frame.x[0] = 0;
            frame.x[1] = r.now;
            frame.x[2] = r.written;
            frame.x[3] = r.writes;
            true
        }
        test_hook::PROFILE => {
            match frame.x[1] {
                0 => portcullis::prof::reset(),
                n => log_profile(n),
            }
            frame.x[0] = 0;
            true
        }
        _ => false,
    }
}

/// Logs the trap-path profile since the last reset, per stage, as ns per `ops` operations.
fn log_profile(ops: u64) {
    use portcullis::prof::{Stage, totals};
    let hz = u128::from(crate::arch::cpu::counter_hz().max(1));
    let ns = |ticks: u64| (u128::from(ticks) * 1_000_000_000 / hz / u128::from(ops)) as u64;
    let all = totals();
    let mut sum = 0;
    for (stage, t) in Stage::ALL.iter().zip(all.iter()) {
        // The mean of the laps kept, for every lap: a dropped one (QEMU preempted) counts as a
        // typical one.
        let ticks = t.ticks + t.ticks * t.dropped / t.hits.max(1);
        sum += ticks;
        log::info!(
            "PROFILE {:20} {:6} ns/op  ({} laps, {} dropped)",
            stage.name(),
            ns(ticks),
            t.hits + t.dropped,
            t.dropped
        );
    }
    log::info!("PROFILE {:20} {:6} ns/op", "total", ns(sum));
}
