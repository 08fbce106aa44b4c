//! What the host makes Portcullis do, counted: traps by cause, accesses to the emulated SMMU by
//! register, accesses to the physical SMMU by register, drains of the physical Event queue. For
//! benchmarks (traps and physical register accesses per I/O), not for decisions.
//!
//! Relaxed atomic increments only: no lock, no allocation, nothing a trap path could wait on. The
//! binary counts ([`COUNTERS`]); [`Counters::render`] makes the one-line report.
//!
//! **The interface the benchmarks read** (stable keys; one line, on the Portcullis console):
//!
//! ```text
//! counters: at=<event> traps=<n> trap.psci=<n> ... emul.r.CMDQ_CONS=<n> ... phys.w.CMDQ_PROD=<n> ... phys=<n> drains=<n> sync.none=<n> sync.irq=<n> sync.sev=<n> msi.written=<n> msi.aborted=<n> batch.short=<n>
//! ```
//!
//! Every key is printed every time (zeros included), as `key=value` separated by single spaces,
//! values in decimal, cumulative since boot. Keys: `traps` (every trap from the host),
//! `trap.<cause>` for each [`Trap`] (see [`Trap::key`]), `emul.r.<reg>` / `emul.w.<reg>` (host
//! accesses to the emulated SMMU, by register; `other` for the rest), `phys.r.<reg>` /
//! `phys.w.<reg>` (Portcullis' own accesses to the physical SMMU's registers), `phys` (their sum),
//! `drains` (physical Event queue drains), and the host's CMD_SYNCs by completion signal and their
//! MSIs (`sync.*`, `msi.*`, from the emulated SMMU), and the host batches that took the short
//! path of a strict unmap (`batch.short`: stage-1 TLBIs and one CMD_SYNC, `emul::fast`).
//!
//! The line is printed when the host calls SYSTEM_OFF or SYSTEM_RESET (`at=system-off`,
//! `at=system-reset`), with the option `counters=cpu-off` (`boot::cmdline::HypOptions`) also at
//! each PSCI CPU_OFF (`at=cpu-off`: from Linux user space,
//! `echo 0 > /sys/devices/system/cpu/cpuN/online`; off by default, see there why), and, in test builds, on the test hook `spec::test_hook::COUNTERS` (`at=hook`). A
//! benchmark brackets a run with two CPU_OFFs (taking a CPU offline and online again between
//! runs costs a few dozen traps, which the line before and after the run shows) and subtracts.
//! The line is rate-limited (20 a second; a suppressed one is simply missing, and the next says how
//! many were suppressed), so a bracket should not come faster than that.

use alloc::string::String;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::emul::registers::{self, IrqSource, Reg};

/// Why the host trapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trap {
    /// A PSCI or other SMCCC call (HVC or SMC).
    Smccc,
    /// A test-hook call (test builds only).
    TestHook,
    /// A read of the emulated SMMU.
    SmmuRead,
    /// A write to the emulated SMMU.
    SmmuWrite,
    /// An access to a mediated GIC register (ITS, redistributor LPI registers).
    Gic,
    /// A trapped WFI/WFE (crash mode).
    Wfi,
    /// A trapped access to the EL1 virtual timer (crash mode, `portcullis::trap::vtimer`).
    Timer,
    /// The kexec trap (the fence).
    Kexec,
    /// A stage-2 fault retried (the fence's break-before-make, or a fault already resolved).
    Retry,
    /// Refused with an injected abort (memory the host does not have, a dead-kernel CPU, an
    /// access without a syndrome).
    AbortInjected,
    /// Refused as an undefined instruction.
    Undefined,
    /// An interrupt or SError (not routed to EL2: unexpected).
    Other,
}

impl Trap {
    const ALL: [Self; 12] = [
        Self::Smccc,
        Self::TestHook,
        Self::SmmuRead,
        Self::SmmuWrite,
        Self::Gic,
        Self::Wfi,
        Self::Timer,
        Self::Kexec,
        Self::Retry,
        Self::AbortInjected,
        Self::Undefined,
        Self::Other,
    ];

    /// The key in the report line.
    pub const fn key(self) -> &'static str {
        match self {
            Self::Smccc => "trap.psci",
            Self::TestHook => "trap.hook",
            Self::SmmuRead => "trap.smmu_r",
            Self::SmmuWrite => "trap.smmu_w",
            Self::Gic => "trap.gic",
            Self::Wfi => "trap.wfi",
            Self::Timer => "trap.timer",
            Self::Kexec => "trap.kexec",
            Self::Retry => "trap.retry",
            Self::AbortInjected => "trap.abort",
            Self::Undefined => "trap.undef",
            Self::Other => "trap.other",
        }
    }
}

/// The SMMU registers counted one by one (the rest are `other`), as named in the report.
const REGS: [&str; 13] = [
    "CMDQ_PROD",
    "CMDQ_CONS",
    "EVTQ_PROD",
    "EVTQ_CONS",
    "GERROR",
    "GERRORN",
    "IRQ_CTRL",
    "IRQ_CTRLACK",
    "CR0",
    "CR0ACK",
    "GBPA",
    "IRQ_CFG",
    "other",
];
const OTHER: usize = REGS.len() - 1;

/// The slot of the register at `offset` (from page 0, page 1 at 0x1_0000; the page 0 aliases of
/// the Event queue indexes count as the registers).
fn slot(offset: usize) -> usize {
    // The two of every strict unmap (emulated and physical) without the register decode.
    match offset {
        crate::smmu::regs::offset::CMDQ_PROD => return 0,
        crate::smmu::regs::offset::CMDQ_CONS => return 1,
        _ => {}
    }
    match registers::decode(offset & !3, 4).map(|(reg, _)| reg) {
        Ok(Reg::CmdqProd) => 0,
        Ok(Reg::CmdqCons) => 1,
        Ok(Reg::EvtqProd) => 2,
        Ok(Reg::EvtqCons) => 3,
        Ok(Reg::Gerror) => 4,
        Ok(Reg::Gerrorn) => 5,
        Ok(Reg::IrqCtrl) => 6,
        Ok(Reg::IrqCtrlAck) => 7,
        Ok(Reg::Cr0) => 8,
        Ok(Reg::Cr0Ack) => 9,
        Ok(Reg::Gbpa) => 10,
        Ok(Reg::IrqCfg(IrqSource::Gerror | IrqSource::Evtq, _)) => 11,
        _ => OTHER,
    }
}

/// Whether an access at `offset` is one of the Event queue's or GERROR's (for tests).
#[cfg(test)]
fn is_event_side(offset: usize) -> bool {
    matches!(slot(offset), 2..=5)
}

/// Every counter.
#[derive(Debug)]
pub struct Counters {
    traps: AtomicU64,
    by_cause: [AtomicU64; Trap::ALL.len()],
    emul_reads: [AtomicU64; REGS.len()],
    emul_writes: [AtomicU64; REGS.len()],
    phys_reads: [AtomicU64; REGS.len()],
    phys_writes: [AtomicU64; REGS.len()],
    drains: AtomicU64,
}

/// The host's CMD_SYNCs and their MSIs, from the emulated SMMU (`EmulatedSmmu::sync_stats`).
pub use crate::emul::state::SyncStats;

/// Portcullis' counters.
pub static COUNTERS: Counters = Counters::new();

/// Whether the line is also printed at each PSCI CPU_OFF (`counters=cpu-off`).
static AT_CPU_OFF: AtomicBool = AtomicBool::new(false);

/// Sets, once at boot, whether the line is also printed at each PSCI CPU_OFF.
pub fn set_line_at_cpu_off(on: bool) {
    AT_CPU_OFF.store(on, Ordering::Relaxed);
}

/// Whether the line is also printed at each PSCI CPU_OFF.
pub fn line_at_cpu_off() -> bool {
    AT_CPU_OFF.load(Ordering::Relaxed)
}

impl Default for Counters {
    fn default() -> Self {
        Self::new()
    }
}

impl Counters {
    pub const fn new() -> Self {
        Self {
            traps: AtomicU64::new(0),
            by_cause: [const { AtomicU64::new(0) }; Trap::ALL.len()],
            emul_reads: [const { AtomicU64::new(0) }; REGS.len()],
            emul_writes: [const { AtomicU64::new(0) }; REGS.len()],
            phys_reads: [const { AtomicU64::new(0) }; REGS.len()],
            phys_writes: [const { AtomicU64::new(0) }; REGS.len()],
            drains: AtomicU64::new(0),
        }
    }

    /// A trap from the host, before it is known what it is.
    pub fn trap(&self) {
        self.traps.fetch_add(1, Ordering::Relaxed);
    }

    /// What a trap turned out to be.
    pub fn cause(&self, cause: Trap) {
        // `ALL` lists the causes in declaration order (tested).
        let i = cause as usize;
        self.by_cause[i].fetch_add(1, Ordering::Relaxed);
    }

    /// A host access to the emulated SMMU at `offset`.
    pub fn emulated(&self, offset: usize, write: bool) {
        let regs = if write {
            &self.emul_writes
        } else {
            &self.emul_reads
        };
        regs[slot(offset)].fetch_add(1, Ordering::Relaxed);
    }

    /// Portcullis' access to the physical SMMU's register at `offset`.
    pub fn physical(&self, offset: usize, write: bool) {
        let regs = if write {
            &self.phys_writes
        } else {
            &self.phys_reads
        };
        regs[slot(offset)].fetch_add(1, Ordering::Relaxed);
    }

    /// A drain of the physical Event queue.
    pub fn drain(&self) {
        self.drains.fetch_add(1, Ordering::Relaxed);
    }

    /// Total traps so far.
    pub fn traps(&self) -> u64 {
        self.traps.load(Ordering::Relaxed)
    }

    /// Total physical SMMU register accesses so far.
    pub fn physical_total(&self) -> u64 {
        let sum = |a: &[AtomicU64]| a.iter().map(|c| c.load(Ordering::Relaxed)).sum::<u64>();
        sum(&self.phys_reads) + sum(&self.phys_writes)
    }

    /// The report line (see the module documentation), without a trailing newline.
    pub fn render(&self, at: &str, sync: &SyncStats) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut s = String::new();
        let _ = write!(s, "counters: at={at} traps={}", self.traps());
        for (cause, c) in Trap::ALL.iter().zip(&self.by_cause) {
            let _ = write!(s, " {}={}", cause.key(), get(c));
        }
        for (side, rw, regs) in [
            ("emul", "r", &self.emul_reads),
            ("emul", "w", &self.emul_writes),
            ("phys", "r", &self.phys_reads),
            ("phys", "w", &self.phys_writes),
        ] {
            for (name, c) in REGS.iter().zip(regs.iter()) {
                let _ = write!(s, " {side}.{rw}.{name}={}", get(c));
            }
        }
        let _ = write!(
            s,
            " phys={} drains={} sync.none={} sync.irq={} sync.sev={} msi.written={} msi.aborted={} batch.short={}",
            self.physical_total(),
            get(&self.drains),
            sync.sig_none,
            sync.sig_irq,
            sync.sig_sev,
            sync.msi_written,
            sync.msi_aborted,
            sync.short_batches
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smmu::regs::offset as o;

    #[test]
    fn causes_index_their_counters() {
        for (i, cause) in Trap::ALL.iter().enumerate() {
            assert_eq!(*cause as usize, i, "{cause:?}");
        }
    }

    #[test]
    fn slots_by_register() {
        assert_eq!(REGS[slot(o::CMDQ_PROD)], "CMDQ_PROD");
        assert_eq!(REGS[slot(o::CMDQ_CONS)], "CMDQ_CONS");
        assert_eq!(REGS[slot(o::EVTQ_PROD)], "EVTQ_PROD");
        assert_eq!(REGS[slot(o::page0_alias::EVTQ_PROD)], "EVTQ_PROD");
        assert_eq!(REGS[slot(o::EVTQ_CONS)], "EVTQ_CONS");
        assert_eq!(REGS[slot(o::GERRORN)], "GERRORN");
        assert_eq!(REGS[slot(o::EVTQ_IRQ_CFG0 + 4)], "IRQ_CFG");
        assert_eq!(REGS[slot(o::IDR0)], "other");
        assert_eq!(REGS[slot(0x3_0000)], "other");
        assert!(is_event_side(o::GERROR) && !is_event_side(o::CMDQ_CONS));
    }

    #[test]
    fn line_has_every_key() {
        let c = Counters::new();
        c.trap();
        c.trap();
        c.cause(Trap::SmmuWrite);
        c.cause(Trap::Smccc);
        c.emulated(o::CMDQ_PROD, true);
        c.physical(o::CMDQ_PROD, true);
        c.physical(o::CMDQ_CONS, false);
        c.physical(o::IDR0, false);
        c.drain();
        let sync = SyncStats {
            sig_irq: 3,
            msi_written: 2,
            msi_aborted: 1,
            ..SyncStats::default()
        };
        let line = c.render("cpu-off", &sync);
        assert!(line.starts_with("counters: at=cpu-off traps=2 trap.psci=1 trap.hook=0"));
        for kv in [
            " trap.smmu_w=1",
            " emul.w.CMDQ_PROD=1",
            " emul.r.CMDQ_PROD=0",
            " phys.w.CMDQ_PROD=1",
            " phys.r.CMDQ_CONS=1",
            " phys.r.other=1",
            " phys=3",
            " drains=1",
            " sync.irq=3",
            " msi.written=2",
            " msi.aborted=1",
            " batch.short=0",
        ] {
            assert!(line.contains(kv), "{kv} not in {line}");
        }
        // at= and traps=, 12 causes, 4 * 13 registers, 8 more: 74 key=value pairs.
        assert_eq!(line.split(' ').filter(|w| w.contains('=')).count(), 74);
    }
}
