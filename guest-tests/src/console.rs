//! A polled PL011 console: the one `/chosen/stdout-path` names.

use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};

static BASE: AtomicU64 = AtomicU64::new(0);
static LOCK: spin::Mutex<()> = spin::Mutex::new(());

const UARTDR: u64 = 0x00;
const UARTFR: u64 = 0x18;
const FR_TXFF: u32 = 1 << 5;
const UARTCR: u64 = 0x30;
/// UARTEN, TXE, RXE.
const CR_ENABLED: u32 = (1 << 0) | (1 << 8) | (1 << 9);

/// Uses the PL011 at `base`, enabling it if nobody did (booted without Portcullis or firmware:
/// `scripts/run --native`).
pub fn init(base: u64) {
    BASE.store(base, Ordering::Relaxed);
    // SAFETY: `base` is the PL011 frame from the device tree; single-register loads and stores.
    unsafe {
        let cr = crate::mmio::mmio_read32(base + UARTCR);
        if cr & CR_ENABLED != CR_ENABLED {
            crate::mmio::mmio_write32(base + UARTCR, cr | CR_ENABLED);
        }
    }
}

struct Pl011(u64);

impl Write for Pl011 {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        if self.0 == 0 {
            return Ok(());
        }
        for b in s.bytes() {
            if b == b'\n' {
                put(self.0, b'\r');
            }
            put(self.0, b);
        }
        Ok(())
    }
}

fn put(base: u64, byte: u8) {
    // SAFETY: `base` is the PL011 frame from the device tree; single-register loads and stores.
    unsafe {
        while crate::mmio::mmio_read32(base + UARTFR) & FR_TXFF != 0 {}
        crate::mmio::mmio_write32(base + UARTDR, u32::from(byte));
    }
}

pub fn print(args: core::fmt::Arguments) {
    let _guard = LOCK.lock();
    let _ = Pl011(BASE.load(Ordering::Relaxed)).write_fmt(args);
}

#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::console::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}
