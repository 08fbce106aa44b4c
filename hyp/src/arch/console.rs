//! The console: the PL011 named by `/chosen/stdout-path`, behind the `log` facade.
//!
//! Portcullis never takes an exception at EL2 except through a bug, so the only re-entry into the
//! console is a panic while a line is being printed; the lock therefore remembers which CPU holds it,
//! and that CPU's panic path writes without waiting for itself.

use arm_pl011_uart::{PL011Registers, Uart, UniqueMmioPointer};
use core::fmt::Write;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use log::{LevelFilter, Log, Metadata, Record};
use spin::mutex::SpinMutex;

static UART: SpinMutex<Option<Uart<'static>>> = SpinMutex::new(None);
const NO_OWNER: usize = usize::MAX;
static OWNER: AtomicUsize = AtomicUsize::new(NO_OWNER);

/// Takes the PL011 at `base` as the console. The boot firmware (or QEMU) has configured it already.
///
/// # Safety
/// `base` must be the PL011's register frame, mapped as Device memory, used by nobody else in
/// Portcullis.
pub unsafe fn init(base: u64) {
    let Some(ptr) = NonNull::new(base as *mut PL011Registers) else {
        return;
    };
    // SAFETY: the caller guarantees the frame is a mapped PL011 owned by this console.
    let regs = unsafe { UniqueMmioPointer::new(ptr) };
    *UART.lock() = Some(Uart::new(regs));
}

fn with_uart(f: impl FnOnce(&mut Uart<'static>)) {
    let me = super::cpu::index();
    if OWNER.load(Ordering::Relaxed) == me {
        // Re-entered on this CPU (a panic while printing): write through the held lock.
        // SAFETY: this CPU owns the lock and is not going back to the interrupted write.
        let uart = unsafe { &mut *UART.as_mut_ptr() };
        if let Some(u) = uart.as_mut() {
            f(u);
        }
        return;
    }
    let mut guard = UART.lock();
    OWNER.store(me, Ordering::Relaxed);
    if let Some(u) = guard.as_mut() {
        f(u);
    }
    OWNER.store(NO_OWNER, Ordering::Relaxed);
}

/// Writes formatted text to the console.
pub fn print(args: core::fmt::Arguments) {
    with_uart(|u| {
        let _ = u.write_fmt(args);
    });
}

struct Logger;

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            let cpu = super::cpu::index();
            with_uart(|u| {
                let _ = writeln!(
                    u,
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
