//! Where a trap's time goes, stage by stage (cargo feature `profile`; without it every call here
//! is empty and compiles to nothing).
//!
//! A lap timer over the physical counter: [`begin`] at the top of the trap handler, then
//! [`lap`]`(stage)` at the end of each stage adds the ticks since the previous mark to that stage.
//! The sums are global, not per CPU: profile with one CPU (`scripts/run --smp 1`). The
//! `bench-cmdq` guest payload reads them through a test hook (`spec::test_hook::PROFILE`) around its batches.

/// A stage of the trap path, in the order a `CMDQ_PROD` write goes through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// From the handler's entry through the kexec-trap check.
    Kexec,
    /// `firewall::poll`: the physical Event queue drained.
    Poll,
    /// Syndrome decode, fault address, which device the access is for.
    Decode,
    /// The firewall's lock taken, the physical SMMU's adapter set up.
    Lock,
    /// The emulated register write itself, up to consuming commands.
    Register,
    /// One host command read from host memory (policy check included).
    HostRead,
    /// One host command decoded, checked, translated, queued.
    Execute,
    /// The batch's translated commands handed to the physical adapter.
    Flush,
    /// Waiting for room on the physical Command queue.
    SubmitSpace,
    /// Physical commands written, barrier, `CMDQ_PROD` written.
    SubmitWrite,
    /// Polling `CMDQ_CONS` for the physical CMD_SYNC.
    SyncWait,
    /// The rest of the emulated write (the host's `CMDQ_CONS` updated).
    Finish,
    /// After the emulation: notes, interrupt mirror, the lock released.
    After,
    /// An emulated register read (the host's `CMDQ_CONS` poll), lock included.
    Read,
    /// From the emulation's return to the handler's.
    Return,
}

impl Stage {
    pub const COUNT: usize = 15;
    pub const ALL: [Stage; Stage::COUNT] = [
        Stage::Kexec,
        Stage::Poll,
        Stage::Decode,
        Stage::Lock,
        Stage::Register,
        Stage::HostRead,
        Stage::Execute,
        Stage::Flush,
        Stage::SubmitSpace,
        Stage::SubmitWrite,
        Stage::SyncWait,
        Stage::Finish,
        Stage::After,
        Stage::Read,
        Stage::Return,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Kexec => "entry+kexec check",
            Stage::Poll => "firewall::poll",
            Stage::Decode => "decode",
            Stage::Lock => "lock+setup",
            Stage::Register => "register write",
            Stage::HostRead => "host entry read",
            Stage::Execute => "command execute",
            Stage::Flush => "batch flush",
            Stage::SubmitSpace => "phys queue space",
            Stage::SubmitWrite => "phys write+PROD",
            Stage::SyncWait => "phys CMD_SYNC wait",
            Stage::Finish => "finish write",
            Stage::After => "after emulation",
            Stage::Read => "emulated read",
            Stage::Return => "return",
        }
    }
}

/// Ticks and hits of one stage since the last [`reset`]. A lap longer than 50 us is not counted
/// in `ticks` but in `dropped`: on a shared machine, that is QEMU preempted, not Portcullis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageTotal {
    pub ticks: u64,
    pub hits: u64,
    pub dropped: u64,
}

#[cfg(feature = "profile")]
mod on {
    use super::{Stage, StageTotal};
    use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

    static LAST: AtomicU64 = AtomicU64::new(0);
    static TICKS: [AtomicU64; Stage::COUNT] = [const { AtomicU64::new(0) }; Stage::COUNT];
    static HITS: [AtomicU64; Stage::COUNT] = [const { AtomicU64::new(0) }; Stage::COUNT];
    static DROPPED: [AtomicU64; Stage::COUNT] = [const { AtomicU64::new(0) }; Stage::COUNT];
    /// Laps longer than this many ticks (50 us) are dropped; set by `reset`.
    static LIMIT: AtomicU64 = AtomicU64::new(u64::MAX);

    #[cfg(all(not(test), target_arch = "aarch64"))]
    fn now() -> u64 {
        let v: u64;
        // SAFETY: reading the physical counter has no side effects.
        unsafe { core::arch::asm!("mrs {}, cntpct_el0", out(reg) v, options(nomem, nostack)) };
        v
    }

    #[cfg(all(not(test), target_arch = "aarch64"))]
    fn hz() -> u64 {
        let v: u64;
        // SAFETY: reading the counter frequency has no side effects.
        unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) v, options(nomem, nostack)) };
        v
    }

    #[cfg(not(all(not(test), target_arch = "aarch64")))]
    fn now() -> u64 {
        0
    }

    #[cfg(not(all(not(test), target_arch = "aarch64")))]
    fn hz() -> u64 {
        0
    }

    pub fn begin() {
        LAST.store(now(), Relaxed);
    }

    pub fn lap(stage: Stage) {
        let t = now();
        let dt = t.wrapping_sub(LAST.swap(t, Relaxed));
        if dt > LIMIT.load(Relaxed) {
            DROPPED[stage as usize].fetch_add(1, Relaxed);
            return;
        }
        TICKS[stage as usize].fetch_add(dt, Relaxed);
        HITS[stage as usize].fetch_add(1, Relaxed);
    }

    pub fn reset() {
        for i in 0..Stage::COUNT {
            TICKS[i].store(0, Relaxed);
            HITS[i].store(0, Relaxed);
            DROPPED[i].store(0, Relaxed);
        }
        let limit = hz() / 20_000;
        LIMIT.store(if limit == 0 { u64::MAX } else { limit }, Relaxed);
    }

    pub fn totals() -> [StageTotal; Stage::COUNT] {
        core::array::from_fn(|i| StageTotal {
            ticks: TICKS[i].load(Relaxed),
            hits: HITS[i].load(Relaxed),
            dropped: DROPPED[i].load(Relaxed),
        })
    }
}

/// Starts the lap timer (the top of the trap handler).
#[inline(always)]
pub fn begin() {
    #[cfg(feature = "profile")]
    on::begin();
}

/// Adds the ticks since the previous mark to `stage`.
#[inline(always)]
pub fn lap(stage: Stage) {
    #[cfg(feature = "profile")]
    on::lap(stage);
    #[cfg(not(feature = "profile"))]
    let _ = stage;
}

/// Zeroes every stage.
pub fn reset() {
    #[cfg(feature = "profile")]
    on::reset();
}

/// Every stage's totals, in [`Stage::ALL`] order (zeros without the feature).
pub fn totals() -> [StageTotal; Stage::COUNT] {
    #[cfg(feature = "profile")]
    return on::totals();
    #[cfg(not(feature = "profile"))]
    [StageTotal::default(); Stage::COUNT]
}
