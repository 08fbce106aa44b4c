//! A global allocator that counts live heap bytes and their peak, so that a harness can bound what
//! one host action makes Portcullis allocate (Portcullis' heap is small and fixed; an allocation
//! failure there is fatal).
//!
//! What the fakes allocate for themselves (their logs, the pages of the host-memory model) is not
//! Portcullis' and is left out: a harness runs every call into a fake inside [`unmetered`]. The
//! counters are signed because such memory may later be freed while metering.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

struct Meter;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);
static PAUSED: AtomicBool = AtomicBool::new(false);

// SAFETY: every call is forwarded to the system allocator with the same arguments; the counters
// only observe.
unsafe impl GlobalAlloc for Meter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` came from this allocator with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        shrink(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::realloc`'s contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Both blocks may be live at once while the data moves.
            grow(new_size);
            shrink(layout.size());
        }
        p
    }
}

fn grow(bytes: usize) {
    if PAUSED.load(Ordering::Relaxed) {
        return;
    }
    let bytes = bytes as isize;
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

fn shrink(bytes: usize) {
    if !PAUSED.load(Ordering::Relaxed) {
        LIVE.fetch_sub(bytes as isize, Ordering::Relaxed);
    }
}

/// Runs `f` (a call into a fake) without counting what it allocates or frees.
pub fn unmetered<T>(f: impl FnOnce() -> T) -> T {
    let was = PAUSED.swap(true, Ordering::Relaxed);
    let out = f();
    PAUSED.store(was, Ordering::Relaxed);
    out
}

#[global_allocator]
static METER: Meter = Meter;

/// Runs `f` and returns its result and the most heap it had live at once beyond what was live
/// when it started.
pub fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = LIVE.load(Ordering::Relaxed);
    PEAK.store(start, Ordering::Relaxed);
    let out = f();
    let peak = PEAK.load(Ordering::Relaxed);
    (out, peak.saturating_sub(start).max(0) as usize)
}
