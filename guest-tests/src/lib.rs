//! A small bare-metal EL1 runtime for Portcullis' guest tests.
//!
//! Each payload in `src/bin/` is an arm64 Image that Portcullis enters at EL1h like a Linux kernel.
//! The runtime gives it an entry point, exception vectors that can catch an expected abort, a
//! console, PSCI, a device-tree reader and a verdict: a serial marker
//! (`GUEST-TEST <name>: PASS` or `... FAIL: <reason>`) and a semihosting exit code (0 = pass).
#![cfg_attr(target_os = "none", no_std)]

#[cfg(target_os = "none")]
pub mod console;
#[cfg(target_os = "none")]
pub mod dma;
pub mod dt;
#[cfg(target_os = "none")]
pub mod edu;
#[cfg(target_os = "none")]
pub mod fence;
#[cfg(target_os = "none")]
pub mod gic;
#[cfg(target_os = "none")]
pub mod hooks;
#[cfg(target_os = "none")]
pub mod hostile;
#[cfg(target_os = "none")]
pub mod kexec;
#[cfg(target_os = "none")]
pub mod mmio;
#[cfg(target_os = "none")]
pub mod pci;
#[cfg(target_os = "none")]
pub mod psci;
pub mod report;
#[cfg(target_os = "none")]
pub mod rt;
#[cfg(target_os = "none")]
pub mod semihosting;
#[cfg(target_os = "none")]
pub mod smmu;

/// Fails the scenario with a message unless `cond` holds.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::Failure::new(format_args!($($fmt)+)));
        }
    };
}

/// Why a scenario failed: a short message kept in a fixed buffer (no allocator in payloads).
#[derive(Debug)]
pub struct Failure {
    buf: [u8; 320],
    len: usize,
}

impl Failure {
    pub fn new(args: core::fmt::Arguments) -> Self {
        let mut f = Failure {
            buf: [0; 320],
            len: 0,
        };
        let _ = core::fmt::write(&mut f, args);
        f
    }

    pub fn message(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("<bad utf-8>")
    }
}

impl core::fmt::Write for Failure {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// The outcome of a scenario.
pub type Outcome = Result<(), Failure>;

/// Declares a scenario: `scenario!("name", run)` where `run(&Context) -> Outcome`.
#[macro_export]
macro_rules! scenario {
    ($name:literal, $run:path) => {
        #[unsafe(no_mangle)]
        extern "C" fn guest_main(dtb: u64) -> ! {
            $crate::rt::run_scenario($name, dtb, $run)
        }
    };
}
