//! The crash fence, as it happens.
//!
//! The host's first instruction fetch from the crash region (execute-never in the normal-mode CPU
//! stage 2) is the kexec event: the crashed kernel is entering the capture kernel's purgatory (it
//! has stopped its other CPUs, or says it has: a hostile one may keep some running). Portcullis
//! then, without the host's cooperation, and with nothing slow before the fence is complete (no
//! log, no allocation, no lock but the firewall's for its two SMMU commands):
//! 1. cuts the DMA side in place (`firewall::cut_dma`: the normal DMA stage 2's few top-level
//!    entries invalid; every stream of the dead kernel translates through it);
//! 2. completes the DMA side (`firewall::fence`: CMD_CFGI_ALL, CMD_TLBI_S12_VMALL, CMD_SYNC):
//!    the end of the window;
//! 3. cuts the CPU side in place for every CPU at once (`host::cut_cpu`: the host stage 2's
//!    top-level entries swapped to prebuilt subtrees where the dead kernel's CPUs write nothing,
//!    broadcast TLB invalidation; this CPU moves to the crash-mode stage 2): a CPU that never
//!    traps again is bound from then on. After the DMA side, because a broadcast TLB invalidation
//!    waits for every other PE (under QEMU TCG, for the other vCPUs to reach a safe point: tens
//!    of milliseconds with a busy second CPU), and DMA is what arrives without any CPU's help;
//!
//! and only then logs, makes the GIC's LPI tables writable again, writes the fault report, and
//! resumes the capture kernel's entry path where it trapped.
//!
//! The window is timed from the exception vector, with checkpoints along the way (`window`,
//! logged after the fence), and its code has run once before, with nothing to cut, on the host's
//! first trap ([`rehearse_once`]).

use crate::arch::cpu;
use crate::arch::vectors::{ExceptionType, Vector};
use crate::window::{self, Run};
use crate::{firewall, gic_mediation, host};
use aarch64_cpu::registers::{ESR_EL2, Readable};
use core::sync::atomic::{AtomicU8, Ordering};
use platform::addr::Ipa;
use portcullis::fence::profile::Checkpoint;
use portcullis::fence::{self, KexecTrap, Mode};
use portcullis::trap::esr::{self, Exception, FaultStatus};

/// The first thing a trap from the host does: if it is the kexec event (a permission fault on an
/// instruction fetch from the crash region, in normal mode), raise the fence before anything else
/// the trap path does (draining the SMMU, logging). `vector_ticks` is the counter at the exception
/// vector (noted there for instruction aborts only): the window starts there. Returns whether it was; the host then resumes at the trapping
/// instruction.
pub fn kexec_trap(vector: &Vector, vector_ticks: u64) -> bool {
    if vector.kind != ExceptionType::Sync || vector.aarch32 || host::in_crash_mode() {
        return false;
    }
    match kexec_ipa(ESR_EL2.get()) {
        Some(ipa) => {
            raise(ipa, vector_ticks, Run::Fence);
            true
        }
        None => false,
    }
}

/// The IPA the host fetched, if a trap with syndrome `esr` (from the host, in normal mode) is the
/// kexec event.
fn kexec_ipa(esr: u64) -> Option<Ipa> {
    // Every other trap stops here (the full decode is the dispatcher's).
    if !esr::is_instruction_abort(esr) {
        return None;
    }
    let syndrome = esr::decode(esr);
    let Exception::InstructionAbort(abort) = syndrome.exception else {
        return None;
    };
    if !matches!(abort.fault, FaultStatus::Permission { .. }) {
        return None;
    }
    // HPFAR_EL2 is not promised for a permission fault: the IPA comes from the host's stage 1.
    let cpu::FaultIpa::Known(ipa) = cpu::fault_ipa(abort.s1ptw, abort.far_not_valid, abort.fault)
    else {
        return None;
    };
    match fence::classify_instruction_abort(ipa, abort.fault, host::crash_region(), Mode::Normal) {
        KexecTrap::Fence => Some(ipa),
        KexecTrap::NotOurs => None,
    }
}

/// The syndrome of the kexec event as the rehearsal feeds it to [`kexec_ipa`]: an instruction
/// abort from a lower EL (EC 0x20, IL 1), a permission fault at level 3 (IFSC 0b001111), FAR valid,
/// not on a stage-1 walk.
const REHEARSAL_ESR: u64 = (0x20 << 26) | (1 << 25) | 0b00_1111;

/// On the host's first trap in normal mode (`dispatch::handle_trap`, after the trap's own work): the
/// fence's code path once, from the same place as the kexec trap, with nothing to cut. The
/// classification runs on [`REHEARSAL_ESR`] and the trap's FAR (its answer is dropped; the
/// address translation it may do saves and restores `PAR_EL1`); [`raise`] runs with
/// [`Run::Rehearsal`]: its own claim flag, the DMA side's store loop over a top-level entry that
/// is invalid already (zero over zero), the fence's very commands (CMD_CFGI_ALL,
/// CMD_TLBI_S12_VMALL, CMD_SYNC: invalidations only, harmless while nothing changed); the CPU side
/// is left out (its break would unmap the host). Two reasons:
/// - the SMMU is seen to accept the fence's commands before a crash, where a refusal is logged;
/// - the window no longer pays for the first execution of its code. Under QEMU TCG every block of
///   code is translated the first time it runs in a given CPU state, tens of microseconds each
///   (measured: 73 us for the first call of a small function, 0.4 us for the second), which was
///   most of the window; code run at boot does not count (a rehearsal at boot left the window as
///   it was), code run on the trap path does. On hardware the same holds, far smaller, for cold
///   instruction caches and TLBs.
pub fn rehearse_once() {
    if REHEARSAL.load(Ordering::Relaxed) != 0 || host::in_crash_mode() {
        return;
    }
    let vector_ticks = cpu::counter();
    let _ = kexec_ipa(REHEARSAL_ESR);
    raise(Ipa(0), vector_ticks, Run::Rehearsal);
}

/// What the window did.
struct Steps {
    dma_stores: usize,
    /// The counter at the completed CMD_SYNC.
    synced: Result<u64, firewall::FenceError>,
    cpu_stores: usize,
    /// The counter once the CPU side is complete.
    cpu_end: u64,
}

/// The fence's window: the DMA side, then the CPU side, with the checkpoints of
/// `portcullis::fence::profile` recorded as they pass (`vector_ticks`: the trap's vector;
/// `classified`: when the trap was found to be the kexec event). Nothing slow: no log, no
/// allocation. In a rehearsal nothing is cut (see [`rehearse_once`]).
fn window_steps(run: Run, vector_ticks: u64, classified: u64) -> Steps {
    window::arm(vector_ticks);
    window::mark_at(Checkpoint::Classified, classified);
    window::mark(Checkpoint::Claimed);
    let dma_stores = firewall::cut_dma(run);
    window::mark(Checkpoint::DmaCut);
    let synced = firewall::fence();
    window::mark(Checkpoint::Synced);
    let cpu_stores = match run {
        Run::Fence => host::cut_cpu(),
        Run::Rehearsal => 0,
    };
    let cpu_end = cpu::counter();
    window::mark_at(Checkpoint::CpuDone, cpu_end);
    Steps {
        dma_stores,
        synced,
        cpu_stores,
        cpu_end,
    }
}

/// 0: armed; 1: the fence is being raised; 2: raised.
static FENCE: AtomicU8 = AtomicU8::new(0);

/// The same for [`rehearse_once`].
static REHEARSAL: AtomicU8 = AtomicU8::new(0);

/// The longest a trapped WFI of the capture kernel waits in Portcullis before it returns.
const IDLE_SLICE_MS: u64 = 5;

/// A WFI of the capture kernel (trapped in crash mode, `cpu::capture_kernel_traps`): the trap has
/// drained the SMMU's records already (every trap in crash mode does, unless one did less than
/// `portcullis::emul::drain::CRASH_MS` before); wait as the WFI would, but at most
/// [`IDLE_SLICE_MS`], and resume after it. An idle capture kernel executes WFI again and so comes
/// back within the slice: fence records reach the report and its Event queue within a bounded time
/// even when nothing else makes the capture kernel trap.
///
/// A WFI traps only when the CPU would really wait (QEMU checks for a pending interrupt first, as
/// the architecture allows), and only an idle kernel executes one: a Linux capture kernel that is
/// busy (under QEMU TCG, checking a 1 GiB dump keeps its one CPU busy from boot to the verdict)
/// executes none. A busy kernel is bounded by its own tick instead ([`timer_access`]).
///
/// Why not an EL2 timer of Portcullis' own (CNTHP, PPI 26): its interrupt reaches EL2 only with
/// `HCR_EL2.IMO` (or `FMO`) set, which routes *every* physical IRQ (or FIQ) to EL2 and makes the
/// capture kernel's GIC CPU-interface accesses virtual: Portcullis would have to take each of the
/// capture kernel's interrupts and inject it through the GIC's list registers (a virtual GIC),
/// while the capture kernel, which owns the GIC, also reprograms (disables, regroups) PPI 26 at
/// its boot. With the host owning the GIC, that is a different design, not a timer.
pub fn idle(elr: &mut u64, len: esr::InstructionLength) {
    *elr = portcullis::trap::inject::skip_instruction(*elr, len);
    if !host::in_crash_mode() {
        return;
    }
    let hz = cpu::counter_hz();
    cpu::idle_wait(cpu::counter().saturating_add(hz * IDLE_SLICE_MS / 1000));
}

/// A trapped access of the capture kernel to its EL1 virtual timer (crash mode, FEAT_ECV's
/// `CNTHCTL_EL2.EL1TVT`: `cpu::capture_kernel_traps`), emulated: the same access done at EL2, then
/// the capture kernel resumes after the instruction. Returns whether `access` was one (otherwise
/// nothing is done, and the caller refuses it as any unknown instruction).
///
/// The point is the trap itself, which has drained the SMMU's records already (as in [`idle`]):
/// Linux uses the virtual timer at EL1 and writes it at every tick (the handler masks it, the next
/// event is programmed), so a busy capture kernel, which never executes WFI, still brings
/// Portcullis in once per tick (4 ms at Debian's HZ = 250). With [`idle`] for an idle one, the
/// delay for a fence record to reach the report and the capture kernel's Event queue is bounded by
/// the longer of the tick and [`IDLE_SLICE_MS`], plus the crash-mode drain interval
/// (`portcullis::emul::drain::CRASH_MS`), whatever the capture kernel does, short of spinning with
/// its interrupts masked (which stalls it as much as Portcullis). Without FEAT_ECV nothing traps
/// here and only the idle bound holds.
///
/// Measured (`scripts/linux/kdump --kernels 612`, Debian 6.12 capture kernel): `trap.wfi=0` and no
/// drain but the capture kernel's own I/O traps before; `trap.timer=23651`, `drains=5557` over its
/// ~20 s after, with no measurable change in its run time.
pub fn timer_access(
    x: &mut [u64; 31],
    elr: &mut u64,
    access: &esr::SysRegAccess,
    len: esr::InstructionLength,
) -> bool {
    let Some(reg) = portcullis::trap::vtimer::classify(access) else {
        return false;
    };
    if !host::in_crash_mode() {
        return false;
    }
    let rt = usize::from(access.rt);
    if access.read {
        let value = cpu::vtimer_read(reg);
        if let Some(r) = x.get_mut(rt) {
            *r = value;
        }
    } else {
        cpu::vtimer_write(reg, x.get(rt).copied().unwrap_or(0));
    }
    *elr = portcullis::trap::inject::skip_instruction(*elr, len);
    true
}

/// Raises the portcullis. Returns once the host may resume at the trapping instruction. A second
/// CPU fetching from the crash region while (or after) another raises it waits for the fence and
/// retries its fetch. With [`Run::Rehearsal`], the same code cuts nothing (see [`rehearse_once`]).
fn raise(ipa: Ipa, vector_ticks: u64, run: Run) {
    let classified = cpu::counter();
    let state = match run {
        Run::Fence => &FENCE,
        Run::Rehearsal => &REHEARSAL,
    };
    if state
        .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        while state.load(Ordering::Acquire) != 2 {
            core::hint::spin_loop();
        }
        return;
    }
    let Steps {
        dma_stores,
        synced,
        cpu_stores,
        cpu_end,
    } = window_steps(run, vector_ticks, classified);
    state.store(2, Ordering::Release);
    // The fence is complete: from here on, bookkeeping, logs and allocations are allowed.
    let profile = window::disarm();
    let hz = cpu::counter_hz();
    if run == Run::Rehearsal {
        match synced {
            Ok(_) => log::info!(
                "fence rehearsed: {} SMMU commands accepted; ns since the previous checkpoint: {}",
                firewall::fence_command_count(),
                profile.render(hz)
            ),
            Err(firewall::FenceError::NoFirewall | firewall::FenceError::NotArmed) => {}
            Err(e) => log::error!("fence rehearsal: {e}: the DMA fence may fail at a crash"),
        }
        return;
    }
    let start = vector_ticks;
    let cpu_ns = portcullis::fence::ticks_to_ns(cpu_end.wrapping_sub(start), hz);
    let fenced = synced.map(|end| {
        firewall::after_fence(
            portcullis::fence::ticks_to_ns(end.wrapping_sub(start), hz),
            (dma_stores + cpu_stores) as u64,
            cpu_ns,
        )
    });
    log::warn!("kexec trap: the host fetched {ipa:?} in the crash region; fence raised in place");
    log::info!(
        "fence window, ns since the previous checkpoint: {}",
        profile.render(hz)
    );
    match fenced {
        Ok(f) => {
            log::warn!(
                "fence raised: {} streams terminated ({} live in the dead kernel), {} SMMU \
                 commands, {} descriptor stores ({dma_stores} DMA, {cpu_stores} CPU), window {} ns \
                 from the trap to the completed CMD_SYNC, {cpu_ns} ns to the CPU side's completion \
                 (every CPU of the dead kernel read-only, this one in crash mode); {} nested \
                 streams then made stage 2 only",
                f.streams,
                f.live,
                f.commands,
                dma_stores + cpu_stores,
                f.window_ns,
                f.restaged
            );
            if let Some(e) = firewall::take_fence_note() {
                log::error!("after the fence: the dead kernel's nested streams not restaged: {e}");
            }
        }
        // The DMA side could not be fenced (no SMMU under Portcullis' control, or it failed):
        // the CPU side still protects the dump, and the console says what is not protected.
        Err(e) => log::error!(
            "DMA fence NOT completed: {e} ({dma_stores} DMA descriptor stores made); CPU side in \
             crash mode ({cpu_stores} stores, {cpu_ns} ns)"
        ),
    }
    cpu::capture_kernel_traps();
    let (lpi_tables, skipped) = gic_mediation::enter_crash(&host::never_writable());
    host::finish_crash_mode(&lpi_tables, &skipped);
    firewall::write_report();
}
