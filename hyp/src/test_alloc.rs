//! The host tests' global allocator: the system allocator, with per-thread accounting of the bytes
//! live since [`track`] and an optional budget above which allocations fail, so that a test can
//! show how much heap the code under test takes and what it does when the heap runs out (as
//! Portcullis' 64 MiB heap would).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Budgeted;

#[derive(Clone, Copy)]
struct Account {
    tracking: bool,
    live: i64,
    peak: i64,
    limit: Option<i64>,
    failures: u64,
}

thread_local! {
    static ACCOUNT: Cell<Account> = const {
        Cell::new(Account { tracking: false, live: 0, peak: 0, limit: None, failures: 0 })
    };
}

fn with(f: impl FnOnce(&mut Account) -> bool) -> bool {
    ACCOUNT
        .try_with(|c| {
            let mut a = c.get();
            let r = f(&mut a);
            c.set(a);
            r
        })
        .unwrap_or(true)
}

// SAFETY: every allocation is delegated to the system allocator unchanged; the accounting only
// decides whether to return null (an allowed answer of `alloc`).
unsafe impl GlobalAlloc for Budgeted {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let size = layout.size() as i64;
        let allowed = with(|a| {
            if !a.tracking {
                return true;
            }
            if a.limit.is_some_and(|l| a.live + size > l) {
                a.failures += 1;
                return false;
            }
            a.live += size;
            a.peak = a.peak.max(a.live);
            true
        });
        if !allowed {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        with(|a| {
            if a.tracking {
                a.live -= layout.size() as i64;
            }
            true
        });
        // SAFETY: forwarded unchanged: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Budgeted = Budgeted;

/// Starts accounting on this thread (live and peak from zero), with allocations above `limit` live
/// bytes failing.
pub fn track(limit: Option<usize>) {
    with(|a| {
        *a = Account {
            tracking: true,
            live: 0,
            peak: 0,
            limit: limit.map(|l| l as i64),
            failures: 0,
        };
        true
    });
}

/// Stops accounting; returns (peak live bytes, allocations refused) since [`track`].
pub fn stop() -> (usize, u64) {
    let mut out = (0, 0);
    with(|a| {
        out = (a.peak.max(0) as usize, a.failures);
        a.tracking = false;
        true
    });
    out
}
