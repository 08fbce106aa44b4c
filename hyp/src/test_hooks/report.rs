//! The fault report region as Portcullis last wrote it, for the `spec::test_hook::REPORT` test hook: a leaf
//! the firewall records into (`firewall::write_report`) and `test_hooks` reads, so neither
//! imports the other.

use core::sync::atomic::{AtomicU64, Ordering};

/// The report region (base, size) and what Portcullis last wrote there.
static REPORT_BASE: AtomicU64 = AtomicU64::new(0);
static REPORT_SIZE: AtomicU64 = AtomicU64::new(0);
static REPORT_WRITTEN_SUM: AtomicU64 = AtomicU64::new(0);
static REPORT_WRITES: AtomicU64 = AtomicU64::new(0);

/// Records what Portcullis has just written into the report region (called by
/// `firewall::write_report` after each write, under the firewall's lock).
pub fn written(base: u64, size: u64) {
    REPORT_BASE.store(base, Ordering::SeqCst);
    REPORT_SIZE.store(size, Ordering::SeqCst);
    REPORT_WRITTEN_SUM.store(checksum(base, size), Ordering::SeqCst);
    REPORT_WRITES.fetch_add(1, Ordering::SeqCst);
}

/// What `spec::test_hook::REPORT` returns.
pub struct Watched {
    /// The region's checksum now (0 without a report region).
    pub now: u64,
    /// Its checksum right after Portcullis last wrote it.
    pub written: u64,
    /// How many times Portcullis wrote it.
    pub writes: u64,
}

pub fn watched() -> Watched {
    let (base, size) = (
        REPORT_BASE.load(Ordering::SeqCst),
        REPORT_SIZE.load(Ordering::SeqCst),
    );
    Watched {
        now: if size == 0 { 0 } else { checksum(base, size) },
        written: REPORT_WRITTEN_SUM.load(Ordering::SeqCst),
        writes: REPORT_WRITES.load(Ordering::SeqCst),
    }
}

/// FNV-1a over 64-bit words of `[base, base + size)`, read with volatile loads so the compiler
/// cannot assume the memory unchanged. `base` and `size` are multiples of 8.
pub fn checksum(base: u64, size: u64) -> u64 {
    (0..size / 8).fold(0xcbf2_9ce4_8422_2325u64, |h, i| {
        // SAFETY: callers pass ranges of Portcullis' image or the report region, both mapped at
        // EL2 (identity) and 8-byte aligned.
        let w = unsafe { ((base + i * 8) as *const u64).read_volatile() };
        (h ^ w).wrapping_mul(0x0100_0000_01b3)
    })
}
