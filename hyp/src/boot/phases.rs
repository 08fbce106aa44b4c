//! Where the boot's time goes: CNTPCT checkpoints at the end of each boot phase, reported once,
//! at the host's entry, as the time each phase took.
//!
//! The binary records `(phase, counter)` pairs with [`Phases::mark`] on the primary CPU before any
//! other CPU runs; [`Phases::report`] formats them against the counter value at Portcullis' first
//! instruction. Nothing here reads the counter: the binary passes it in.

use core::fmt;

/// Checkpoints kept; later ones are dropped (and counted).
pub const MAX_PHASES: usize = 24;

/// The checkpoints of one boot.
#[derive(Clone, Copy, Debug)]
pub struct Phases {
    marks: [(&'static str, u64); MAX_PHASES],
    len: usize,
    dropped: usize,
}

impl Default for Phases {
    fn default() -> Self {
        Self::new()
    }
}

impl Phases {
    pub const fn new() -> Self {
        Self {
            marks: [("", 0); MAX_PHASES],
            len: 0,
            dropped: 0,
        }
    }

    /// Records that `phase` ended at counter value `ticks`.
    pub fn mark(&mut self, phase: &'static str, ticks: u64) {
        match self.marks.get_mut(self.len) {
            Some(slot) => {
                *slot = (phase, ticks);
                self.len += 1;
            }
            None => self.dropped += 1,
        }
    }

    /// The phases as `name` and duration in microseconds, the first measured from `start` (the
    /// counter at Portcullis' first instruction), each next from the previous checkpoint.
    pub fn durations(&self, start: u64, hz: u64) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        let hz = hz.max(1);
        let mut prev = start;
        self.marks[..self.len].iter().map(move |&(name, t)| {
            let us = t.wrapping_sub(prev).saturating_mul(1_000_000) / hz;
            prev = t;
            (name, us)
        })
    }

    /// A one-line report: `name 1.234` per phase (milliseconds).
    pub fn report(&self, start: u64, hz: u64) -> Report<'_> {
        Report {
            phases: self,
            start,
            hz,
        }
    }
}

/// [`Phases::report`]'s line.
#[derive(Debug)]
pub struct Report<'a> {
    phases: &'a Phases,
    start: u64,
    hz: u64,
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, us)) in self.phases.durations(self.start, self.hz).enumerate() {
            if i != 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name} {}.{:03}", us / 1000, us % 1000)?;
        }
        if self.phases.dropped != 0 {
            write!(f, " ({} more not recorded)", self.phases.dropped)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn durations_are_between_checkpoints() {
        let mut p = Phases::new();
        p.mark("parse", 1_100);
        p.mark("tables", 1_350);
        // 1 MHz counter: one tick per microsecond.
        let d: alloc::vec::Vec<_> = p.durations(1_000, 1_000_000).collect();
        assert_eq!(d, [("parse", 100), ("tables", 250)]);
        assert_eq!(
            p.report(1_000, 1_000_000).to_string(),
            "parse 0.100, tables 0.250"
        );
    }

    #[test]
    fn overflow_is_counted_not_stored() {
        let mut p = Phases::new();
        for i in 0..MAX_PHASES as u64 + 2 {
            p.mark("x", i);
        }
        assert_eq!(p.durations(0, 1).count(), MAX_PHASES);
        assert!(
            p.report(0, 1)
                .to_string()
                .ends_with("(2 more not recorded)")
        );
    }

    #[test]
    fn zero_frequency_does_not_divide_by_zero() {
        let mut p = Phases::new();
        p.mark("a", 5);
        assert_eq!(p.durations(0, 0).next(), Some(("a", 5_000_000)));
    }
}
