//! Log lines the host can trigger at will (a refused access, an undefined instruction, a note of
//! the emulated SMMU), rate-limited per call site by `portcullis::diag::RateLimit`: a few lines per
//! second, then silence, then the next line says how many were suppressed.

use crate::arch::cpu;
use portcullis::diag::ratelimit::{RateLimit, Verdict};

/// Lines per call site per second.
pub const BURST: u32 = 5;

/// `limited!(Warn, "...", args)`: `log::warn!` within the call site's rate limit.
macro_rules! limited {
    ($level:ident, $($arg:tt)+) => {{
        static LIMIT: portcullis::diag::RateLimit =
            portcullis::diag::RateLimit::new($crate::limited::BURST);
        $crate::limited::log(&LIMIT, log::Level::$level, format_args!($($arg)+));
    }};
}
pub(crate) use limited;

pub fn log(limit: &RateLimit, level: log::Level, args: core::fmt::Arguments) {
    if level > log::max_level() {
        return;
    }
    match limit.check(cpu::counter(), cpu::counter_hz()) {
        Verdict::Log { suppressed: 0 } => log::log!(level, "{args}"),
        Verdict::Log { suppressed } => {
            log::log!(
                level,
                "{args} ({suppressed} similar lines suppressed before)"
            )
        }
        Verdict::Suppress => {}
    }
}
