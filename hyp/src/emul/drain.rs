//! When Portcullis drains the physical Event queue.
//!
//! Draining costs physical register accesses (`EVENTQ_PROD`, `EVENTQ_CONS`, `GERROR`, `GERRORN`)
//! and the firewall's lock, so it is not done on every trap (it used to be: four physical
//! accesses on each of the two traps of every strict unmap). It is done when something can have
//! arrived that somebody is waiting for:
//! - **the host looks** ([`on_host_access`]): a read of the emulated `EVENTQ_PROD` (the host's
//!   event handler, woken by the physical SMMU's wired Event queue interrupt, which the host
//!   receives directly) or of `GERROR` (its global error handler). Records for the host's streams
//!   are forwarded before the read is answered;
//! - **crash mode, any trap** ([`on_trap`]) at least [`CRASH_MS`] after the last drain: after the
//!   fence, records are the dead kernel's late DMA, owed to the report and the capture kernel's
//!   queue within a bounded time (issue 9, item 4). The capture kernel traps in crash mode at least
//!   once per `crash::IDLE_SLICE_MS` while it idles (its WFI) and once per tick of its own while it
//!   is busy (its virtual-timer accesses, where the CPU has FEAT_ECV): see `crash::timer_access`.
//!   The interval only spares the MMIO of a drain to bursts of traps (a Linux tick is several timer
//!   accesses in a row); the bound is the interval plus the longest gap between traps;
//! - **a backstop, normal mode** ([`on_trap`]): on any trap at least [`BACKSTOP_MS`] after the
//!   last drain, so Portcullis' own record of refused DMA (the console, the per-stream counts)
//!   keeps up with a host that never enables its Event queue interrupt, and the physical queue
//!   does not overflow for want of a reader. Costs one counter read per trap, no MMIO.
//!
//! The fence itself needs no drain: its records are drained by the traps that follow it.

use crate::smmu::regs::offset as o;

/// The longest Portcullis lets the physical Event queue go undrained in normal mode while the host
/// keeps trapping.
pub const BACKSTOP_MS: u64 = 10;

/// The longest Portcullis lets the physical Event queue go undrained in crash mode while the host
/// keeps trapping.
pub const CRASH_MS: u64 = 1;

/// Whether a trap must drain first: when the last drain (counter value `last`) is [`CRASH_MS`]
/// (crash mode) or [`BACKSTOP_MS`] (normal mode) or more before `now` (counter frequency `hz`).
pub fn on_trap(crash_mode: bool, now: u64, last: u64, hz: u64) -> bool {
    let ms = if crash_mode { CRASH_MS } else { BACKSTOP_MS };
    now.wrapping_sub(last) >= (hz / 1000).saturating_mul(ms)
}

/// Whether a host access to the emulated SMMU at `offset` must be preceded by a drain: reads of
/// `EVENTQ_PROD` (either page) and `GERROR`.
pub fn on_host_access(offset: usize, write: bool) -> bool {
    !write
        && matches!(
            offset & !3,
            o::EVTQ_PROD | o::page0_alias::EVTQ_PROD | o::GERROR
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trap_drains_after_the_crash_interval_or_the_backstop() {
        let hz = 62_500_000;
        let ms = hz / 1000;
        assert!(!on_trap(true, 100, 100, hz));
        assert!(!on_trap(true, 100 + ms - 1, 100, hz));
        assert!(on_trap(true, 100 + ms, 100, hz));
        assert!(!on_trap(false, 100, 100, hz));
        assert!(!on_trap(false, 100 + ms, 100, hz));
        assert!(!on_trap(false, 100 + 9 * ms, 100, hz));
        assert!(on_trap(false, 100 + 10 * ms, 100, hz));
        // The counter wrapping between the two readings.
        assert!(!on_trap(false, 5, u64::MAX - 5, hz));
        assert!(on_trap(false, 10 * ms, u64::MAX - 5, hz));
    }

    #[test]
    fn host_accesses_that_drain() {
        assert!(on_host_access(o::EVTQ_PROD, false));
        assert!(on_host_access(o::page0_alias::EVTQ_PROD, false));
        assert!(on_host_access(o::GERROR, false));
        assert!(!on_host_access(o::EVTQ_PROD, true));
        assert!(!on_host_access(o::CMDQ_PROD, true));
        assert!(!on_host_access(o::CMDQ_CONS, false));
        assert!(!on_host_access(o::EVTQ_CONS, false));
    }
}
