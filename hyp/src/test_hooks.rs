//! Hypervisor calls that only a test build (`--features test-hooks`) answers, so guest tests can
//! prove what did *not* happen: that nothing landed in Portcullis' own memory, and which faults the
//! SMMU recorded. A release image answers them NOT_SUPPORTED like any unknown call.
//!
//! | function id   | x1        | returns                                                          |
//! |---------------|-----------|------------------------------------------------------------------|
//! | `0xC600_0100` | —         | x0 = 0, x1 = base, x2 = size of the canary area, x3 = checksum   |
//! | `0xC600_0101` | StreamID  | x0 = 0, x1 = faults recorded for it, x2 = latest input address,  |
//! |               |           | x3 = (event type << 8) \| 1 if that access was a write            |
//! | `0xC600_0102` | —         | x0 = 0, x1 = 1 in crash mode (fence raised) else 0,               |
//! |               |           | x2 = fence window in ns, x3 = streams terminated                   |

use crate::arch::vectors::TrapFrame;
use core::cell::UnsafeCell;

pub const TEST_CANARY: u32 = 0xc600_0100;
pub const TEST_FAULTS: u32 = 0xc600_0101;
pub const TEST_MODE: u32 = 0xc600_0102;

const CANARY_SIZE: usize = 4096;

/// A page of Portcullis' data with a known pattern. Only devices (through a broken firewall) could
/// change it; nothing in Portcullis writes it. 64 KiB aligned, so that a GIC pending table (64 KiB
/// aligned, 2^16 bits on QEMU) placed at its block covers it: the gic-mediation scenario aims an
/// LPI's pending bit at it.
#[repr(C, align(65536))]
struct Canary(UnsafeCell<[u8; CANARY_SIZE]>);

// SAFETY: Portcullis never writes the canary; it is only read, with volatile loads.
unsafe impl Sync for Canary {}

static CANARY: Canary = Canary(UnsafeCell::new(pattern()));

const fn pattern() -> [u8; CANARY_SIZE] {
    let mut p = [0u8; CANARY_SIZE];
    let mut i = 0;
    while i < CANARY_SIZE {
        p[i] = (i as u8).wrapping_mul(37) ^ 0xa5;
        i += 1;
    }
    p
}

/// FNV-1a over the canary, read with volatile loads so the compiler cannot assume it unchanged.
fn canary_checksum() -> u64 {
    let base = CANARY.0.get() as *const u8;
    (0..CANARY_SIZE).fold(0xcbf2_9ce4_8422_2325u64, |h, i| {
        // SAFETY: `i` is inside the canary array.
        let b = unsafe { base.add(i).read_volatile() };
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Answers a test hook, or returns false if `frame.x[0]` is not one.
pub fn handle(frame: &mut TrapFrame) -> bool {
    match frame.x[0] as u32 {
        TEST_CANARY => {
            frame.x[0] = 0;
            frame.x[1] = CANARY.0.get() as u64;
            frame.x[2] = CANARY_SIZE as u64;
            frame.x[3] = canary_checksum();
            true
        }
        TEST_FAULTS => {
            let sid = frame.x[1] as u32;
            let (count, addr, info) = crate::firewall::fault_summary(sid);
            frame.x[0] = 0;
            frame.x[1] = count;
            frame.x[2] = addr;
            frame.x[3] = info;
            true
        }
        TEST_MODE => {
            let f = crate::firewall::fence_stats();
            frame.x[0] = 0;
            frame.x[1] = u64::from(crate::host::in_crash_mode());
            frame.x[2] = f.window_ns;
            frame.x[3] = f.streams;
            true
        }
        _ => false,
    }
}
