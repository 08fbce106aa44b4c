//! Where the fence window goes: counter values taken at fixed checkpoints while the fence is
//! raised (stored, never printed, inside the window) and rendered after it as the time between
//! consecutive checkpoints.
//!
//! The arch layer records; this module names the checkpoints, keeps their order, and turns counter
//! ticks into the breakdown the console and `scripts/bench` show.

use alloc::string::String;
use core::fmt::Write;

use super::ticks_to_ns;

/// A point of the fence, in the order the fence passes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Checkpoint {
    /// The exception vector, before the host's registers are saved.
    Vector,
    /// `kexec_trap` has classified the trap as the kexec event (syndrome and fault address read).
    Classified,
    /// This CPU owns the fence (no other CPU raises it).
    Claimed,
    /// The normal DMA stage 2's top-level entries are invalid (stored; the `DSB` comes with the
    /// commands).
    DmaCut,
    /// The commands are in the Command queue and visible to the SMMU (the `DSB` before the
    /// producer index moves).
    CommandsWritten,
    /// `CMDQ_PROD` written: the SMMU may consume the commands.
    ProdWritten,
    /// `CMDQ_CONS` passed the CMD_SYNC: the end of the window.
    Synced,
    /// CPU side: the host stage 2's changed top-level entries are invalid.
    CpuBroken,
    /// CPU side: `DSB ISH`, `TLBI VMALLS12E1IS`, `DSB ISH` completed.
    CpuInvalidated,
    /// CPU side: the crash-mode subtrees are in place and visible.
    CpuMade,
    /// CPU side complete: this CPU runs under the crash-mode stage 2.
    CpuDone,
}

/// How many checkpoints there are.
pub const CHECKPOINTS: usize = Checkpoint::CpuDone as usize + 1;

impl Checkpoint {
    /// Every checkpoint, in order.
    pub const ALL: [Checkpoint; CHECKPOINTS] = [
        Self::Vector,
        Self::Classified,
        Self::Claimed,
        Self::DmaCut,
        Self::CommandsWritten,
        Self::ProdWritten,
        Self::Synced,
        Self::CpuBroken,
        Self::CpuInvalidated,
        Self::CpuMade,
        Self::CpuDone,
    ];

    /// A stable short name (`scripts/bench` parses the breakdown by these).
    pub fn name(self) -> &'static str {
        match self {
            Self::Vector => "vector",
            Self::Classified => "classified",
            Self::Claimed => "claimed",
            Self::DmaCut => "dma-cut",
            Self::CommandsWritten => "commands-written",
            Self::ProdWritten => "prod-written",
            Self::Synced => "synced",
            Self::CpuBroken => "cpu-broken",
            Self::CpuInvalidated => "cpu-tlbi",
            Self::CpuMade => "cpu-made",
            Self::CpuDone => "cpu-done",
        }
    }
}

/// The counter at each checkpoint of one fence (0: not passed), and how many times `CMDQ_CONS`
/// was read before the CMD_SYNC was seen complete.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    pub ticks: [u64; CHECKPOINTS],
    pub cons_reads: u32,
}

impl Profile {
    /// `name +ns` for each checkpoint passed, the time since the previous checkpoint passed (the
    /// first one is the origin, `+0`), then the CMDQ_CONS reads. Checkpoints not passed (a fence
    /// without an SMMU, say) are left out; a counter that went backwards (another CPU's counter
    /// is not this one's) shows as `+0`.
    pub fn render(&self, freq_hz: u64) -> String {
        let mut out = String::new();
        let mut prev = None;
        for c in Checkpoint::ALL {
            let t = self.ticks[c as usize];
            if t == 0 {
                continue;
            }
            let delta = prev.map_or(0, |p| t.saturating_sub(p));
            if !out.is_empty() {
                out.push_str(", ");
            }
            let _ = write!(out, "{} +{}", c.name(), ticks_to_ns(delta, freq_hz));
            prev = Some(t);
        }
        let _ = write!(out, "; CMDQ_CONS read {} times", self.cons_reads);
        out
    }

    /// Nanoseconds from `from` to `to`, if both were passed.
    pub fn between(&self, from: Checkpoint, to: Checkpoint, freq_hz: u64) -> Option<u64> {
        let (a, b) = (self.ticks[from as usize], self.ticks[to as usize]);
        (a != 0 && b != 0).then(|| ticks_to_ns(b.saturating_sub(a), freq_hz))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_are_in_order() {
        for (i, c) in Checkpoint::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }

    #[test]
    fn renders_deltas_between_passed_checkpoints() {
        let mut p = Profile::default();
        // 1 GHz: a tick is a nanosecond.
        p.ticks[Checkpoint::Vector as usize] = 1000;
        p.ticks[Checkpoint::Classified as usize] = 1500;
        p.ticks[Checkpoint::DmaCut as usize] = 1600;
        p.ticks[Checkpoint::Synced as usize] = 5600;
        p.cons_reads = 2;
        assert_eq!(
            p.render(1_000_000_000),
            "vector +0, classified +500, dma-cut +100, synced +4000; CMDQ_CONS read 2 times"
        );
        assert_eq!(
            p.between(Checkpoint::Vector, Checkpoint::Synced, 1_000_000_000),
            Some(4600)
        );
        assert_eq!(
            p.between(Checkpoint::Vector, Checkpoint::CpuDone, 1_000_000_000),
            None
        );
    }

    #[test]
    fn a_counter_going_backwards_is_zero_not_a_wrap() {
        let mut p = Profile::default();
        p.ticks[Checkpoint::Claimed as usize] = 100;
        p.ticks[Checkpoint::DmaCut as usize] = 50;
        assert_eq!(
            p.render(1_000_000_000),
            "claimed +0, dma-cut +0; CMDQ_CONS read 0 times"
        );
    }
}
