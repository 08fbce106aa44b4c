//! A lock-free rate limit for log lines the host can trigger at will (a refused access, an
//! undefined instruction, a note of the emulated SMMU, a refused PSCI call): at most `burst` lines
//! per class in each window of one second of counter time; the rest are counted, and the next line
//! let through says how many were suppressed.
//!
//! One `static RateLimit` per call site (or per class of lines) is shared by every CPU. The window
//! bookkeeping is racy on purpose (no lock on a trap path just for logging): across a window
//! boundary a few more than `burst` lines may pass, never an unbounded number.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// One class of log lines.
#[derive(Debug)]
pub struct RateLimit {
    burst: u32,
    /// Counter value at which the current window began (0: no window yet).
    window_start: AtomicU64,
    /// Lines let through or tried in the current window.
    used: AtomicU32,
    /// Lines suppressed since the last line let through.
    suppressed: AtomicU64,
}

/// What to do with one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Log it; `suppressed` lines of the class were dropped since the last one logged.
    Log { suppressed: u64 },
    /// Drop it (counted).
    Suppress,
}

impl RateLimit {
    /// At most `burst` lines per second.
    pub const fn new(burst: u32) -> Self {
        Self {
            burst,
            window_start: AtomicU64::new(0),
            used: AtomicU32::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a line may be logged now: `now` is the counter, `ticks_per_second` its frequency.
    pub fn check(&self, now: u64, ticks_per_second: u64) -> Verdict {
        let start = self.window_start.load(Ordering::Relaxed);
        let expired = start == 0 || now.wrapping_sub(start) >= ticks_per_second.max(1);
        if expired
            && self
                .window_start
                .compare_exchange(start, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.used.store(1, Ordering::Relaxed);
            let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
            return Verdict::Log { suppressed };
        }
        if self.used.fetch_add(1, Ordering::Relaxed) < self.burst {
            let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
            Verdict::Log { suppressed }
        } else {
            // Keep `used` from wrapping under a storm.
            self.used.store(self.burst, Ordering::Relaxed);
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            Verdict::Suppress
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HZ: u64 = 1000;

    fn logged(v: Verdict) -> bool {
        matches!(v, Verdict::Log { .. })
    }

    #[test]
    fn a_burst_then_silence_then_a_summary() {
        let rl = RateLimit::new(3);
        let t = 5000;
        let verdicts: Vec<_> = (0..10).map(|i| rl.check(t + i, HZ)).collect();
        assert_eq!(verdicts.iter().filter(|v| logged(**v)).count(), 3);
        assert!(verdicts[3..].iter().all(|v| *v == Verdict::Suppress));
        // The next window's first line carries the count.
        assert_eq!(rl.check(t + HZ, HZ), Verdict::Log { suppressed: 7 });
        assert_eq!(rl.check(t + HZ + 1, HZ), Verdict::Log { suppressed: 0 });
    }

    #[test]
    fn a_storm_is_bounded_per_window() {
        let rl = RateLimit::new(5);
        let mut logged_lines = 0;
        for now in 1..=10 * HZ {
            // 1000 tries per window over ten windows.
            if logged(rl.check(now, HZ)) {
                logged_lines += 1;
            }
        }
        assert!(logged_lines <= 5 * 11, "{logged_lines}");
        assert!(logged_lines >= 5 * 10);
    }

    #[test]
    fn counter_zero_and_wrap_are_harmless() {
        let rl = RateLimit::new(1);
        assert!(logged(rl.check(0, HZ)));
        assert_eq!(rl.check(1, HZ), Verdict::Suppress);
        let rl = RateLimit::new(1);
        assert!(logged(rl.check(u64::MAX - 1, HZ)));
        assert_eq!(rl.check(u64::MAX, HZ), Verdict::Suppress);
        assert_eq!(rl.check(HZ, HZ), Verdict::Log { suppressed: 1 });
        // A zero frequency (a broken CNTFRQ) still limits.
        let rl = RateLimit::new(2);
        let n = (1..100).filter(|_| logged(rl.check(1, 0))).count();
        assert!(n <= 3);
    }
}
