//! The console: the UART named by `/chosen/stdout-path`, behind the `log` facade. A PL011 (through
//! the arm-pl011-uart crate) or an 8250/16550 (`portcullis::diag::ns16550`), as
//! `platform::console` decides from the tree; any other UART is not written to, and Portcullis
//! logs to nothing.
//!
//! Portcullis never takes an exception at EL2 except through a bug, so the only re-entry into the
//! console is a panic while a line is being printed; the lock therefore remembers which CPU holds it,
//! and that CPU's panic path writes without waiting for itself.
//!
//! The host owns the same PL011 and may disable its transmitter, after which a real PL011's FIFO
//! never drains. No wait here is unbounded (`portcullis::diag::console_tx`): a character waits a
//! few milliseconds for room and is then dropped (and so is the rest, without waiting, until the
//! FIFO drains); a CPU waits a bounded time for the console lock and otherwise drops its line. What
//! was dropped is reported when output works again.

use super::cpu;
use arm_pl011_uart::{PL011Registers, Uart, UniqueMmioPointer};
use core::fmt::Write;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use log::{LevelFilter, Log, Metadata, Record};
use platform::console::ConsoleDevice;
use portcullis::diag::console_tx::Budget;
use portcullis::diag::ns16550::{Ns16550, UartMmio};
use portcullis::diag::{BoundedTx, TxPort, acquire_within};
use spin::mutex::TicketMutex;

/// An 8250's register frame, accessed with single volatile loads and stores.
struct Mmio8250 {
    base: usize,
}

impl UartMmio for Mmio8250 {
    fn read8(&self, offset: u64) -> u8 {
        // SAFETY: `init`'s caller vouched for the frame; `platform::console::select` checked that
        // the registers used (up to LSR) lie inside it.
        unsafe { ((self.base + offset as usize) as *const u8).read_volatile() }
    }
    fn write8(&mut self, offset: u64, value: u8) {
        // SAFETY: as for `read8`.
        unsafe { ((self.base + offset as usize) as *mut u8).write_volatile(value) }
    }
    fn read32(&self, offset: u64) -> u32 {
        // SAFETY: as for `read8`; 32-bit registers are 4-byte aligned (`reg-shift` >= 2 in every
        // binding that has `reg-io-width = <4>`).
        unsafe { ((self.base + offset as usize) as *const u32).read_volatile() }
    }
    fn write32(&mut self, offset: u64, value: u32) {
        // SAFETY: as for `read32`.
        unsafe { ((self.base + offset as usize) as *mut u32).write_volatile(value) }
    }
}

/// The console's UART driver.
enum Driver {
    Pl011(Uart<'static>),
    Ns16550(Ns16550<Mmio8250>),
}

struct Console {
    uart: Driver,
    tx: BoundedTx,
}

static UART: TicketMutex<Option<Console>> = TicketMutex::new(None);
const NO_OWNER: usize = usize::MAX;
static OWNER: AtomicUsize = AtomicUsize::new(NO_OWNER);
/// Lines dropped because the console lock was not free within its budget.
static LINES_DROPPED: AtomicU64 = AtomicU64::new(0);

/// How long one character waits for room in the TX FIFO: 2 ms (a working PL011 frees a slot every
/// 87 us at 115200 baud).
const CHAR_WAIT_MS: u64 = 2;
/// How long a CPU waits for another CPU's line to finish.
const LOCK_WAIT_MS: u64 = 50;

fn budget(ms: u64, polls: u32) -> Budget {
    Budget {
        ticks: (cpu::counter_hz() / 1000).max(1) * ms,
        polls,
    }
}

/// Takes `device` as the console. The boot firmware (or QEMU) has configured it already.
///
/// # Safety
/// `device` must describe a UART register frame, mapped as Device memory, used by nobody else in
/// Portcullis.
pub unsafe fn init(device: ConsoleDevice) {
    let uart = match device {
        ConsoleDevice::Pl011 { base } => {
            let Some(ptr) = NonNull::new(base.raw() as *mut PL011Registers) else {
                return;
            };
            // SAFETY: the caller guarantees the frame is a mapped PL011 owned by this console.
            let regs = unsafe { UniqueMmioPointer::new(ptr) };
            Driver::Pl011(Uart::new(regs))
        }
        ConsoleDevice::Ns16550 {
            base,
            reg_shift,
            width,
        } => Driver::Ns16550(Ns16550::new(
            Mmio8250 {
                base: base.raw() as usize,
            },
            reg_shift,
            width,
        )),
    };
    *UART.lock() = Some(Console {
        uart,
        tx: BoundedTx::new(),
    });
}

struct Port<'a>(&'a mut Driver);

impl TxPort for Port<'_> {
    fn tx_full(&self) -> bool {
        match &*self.0 {
            Driver::Pl011(uart) => uart.is_tx_fifo_full(),
            Driver::Ns16550(uart) => uart.tx_full(),
        }
    }
    fn put(&mut self, byte: u8) {
        match &mut *self.0 {
            Driver::Pl011(uart) => uart.write_word(byte),
            Driver::Ns16550(uart) => uart.put(byte),
        }
    }
}

/// `fmt::Write` over the console with every character's wait bounded; never fails (a character
/// that cannot go out is dropped and counted).
struct Writer<'a> {
    console: &'a mut Console,
    budget: Budget,
}

impl Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let mut clock = cpu::counter;
        for &b in s.as_bytes() {
            self.console.tx.put(
                &mut Port(&mut self.console.uart),
                b,
                &mut clock,
                self.budget,
            );
        }
        Ok(())
    }
}

fn with_console(f: impl FnOnce(&mut Writer)) {
    let me = cpu::index();
    let char_budget = budget(CHAR_WAIT_MS, 200_000);
    if OWNER.load(Ordering::Relaxed) == me {
        // Re-entered on this CPU (a panic while printing): write through the held lock.
        // SAFETY: this CPU owns the lock and is not going back to the interrupted write.
        let console = unsafe { &mut *UART.as_mut_ptr() };
        if let Some(c) = console.as_mut() {
            f(&mut Writer {
                console: c,
                budget: char_budget,
            });
        }
        return;
    }
    let Some(mut guard) = acquire_within(
        || UART.try_lock(),
        &mut cpu::counter,
        budget(LOCK_WAIT_MS, 50_000_000),
    ) else {
        LINES_DROPPED.fetch_add(1, Ordering::Relaxed);
        return;
    };
    OWNER.store(me, Ordering::Relaxed);
    if let Some(c) = guard.as_mut() {
        let mut w = Writer {
            console: c,
            budget: char_budget,
        };
        let chars = w.console.tx.take_dropped();
        let lines = LINES_DROPPED.swap(0, Ordering::Relaxed);
        if chars != 0 || lines != 0 {
            let _ = writeln!(
                w,
                "portcullis[{me}] WARN  console: {chars} characters and {lines} lines dropped \
                 (TX FIFO full or console busy)"
            );
        }
        f(&mut w);
    }
    OWNER.store(NO_OWNER, Ordering::Relaxed);
}

/// Writes formatted text to the console.
pub fn print(args: core::fmt::Arguments) {
    with_console(|w| {
        let _ = w.write_fmt(args);
    });
}

struct Logger;

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            let cpu = cpu::index();
            with_console(|w| {
                let _ = writeln!(
                    w,
                    "portcullis[{cpu}] {:5} {}",
                    record.level(),
                    record.args()
                );
            });
        }
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

pub fn init_logger(level: LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
