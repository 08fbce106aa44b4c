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

use crate::arch::cpu;
use crate::arch::vectors::{ExceptionType, Vector};
use crate::{firewall, gic_mediation, host};
use aarch64_cpu::registers::{ESR_EL2, Readable};
use core::sync::atomic::{AtomicU8, Ordering};
use platform::addr::Ipa;
use portcullis::fence::{self, KexecTrap, Mode};
use portcullis::trap::esr::{self, Exception, FaultStatus};

/// The first thing a trap from the host does: if it is the kexec event (a permission fault on an
/// instruction fetch from the crash region, in normal mode), raise the fence before anything else
/// the trap path does (draining the SMMU, logging). Returns whether it was; the host then resumes
/// at the trapping instruction.
pub fn kexec_trap(vector: &Vector) -> bool {
    if vector.kind != ExceptionType::Sync || vector.aarch32 || host::in_crash_mode() {
        return false;
    }
    let syndrome = esr::decode(ESR_EL2.get());
    let Exception::InstructionAbort(abort) = syndrome.exception else {
        return false;
    };
    if !matches!(abort.fault, FaultStatus::Permission { .. }) {
        return false;
    }
    // HPFAR_EL2 is not promised for a permission fault: the IPA comes from the host's stage 1.
    let cpu::FaultIpa::Known(ipa) = cpu::fault_ipa(abort.s1ptw, abort.far_not_valid, abort.fault)
    else {
        return false;
    };
    match fence::classify_instruction_abort(ipa, abort.fault, host::crash_region(), Mode::Normal) {
        KexecTrap::Fence => {
            raise(ipa);
            true
        }
        KexecTrap::NotOurs => false,
    }
}

/// 0: armed; 1: the fence is being raised; 2: raised.
static FENCE: AtomicU8 = AtomicU8::new(0);

/// The longest a trapped WFI of the capture kernel waits in Portcullis before it returns.
const IDLE_SLICE_MS: u64 = 5;

/// A WFI of the capture kernel (trapped in crash mode, `cpu::trap_wfi`): the trap has drained the
/// SMMU's records already (every trap does); wait as the WFI would, but at most
/// [`IDLE_SLICE_MS`], and resume after it. An idle capture kernel executes WFI again and so comes
/// back within the slice: fence records reach the report and its Event queue within a bounded time
/// even when nothing else makes the capture kernel trap.
///
/// Why WFI traps rather than an EL2 timer: the EL2 timer's interrupt would have to be routed and
/// enabled in the GIC, which the capture kernel owns and reprograms; a trapped WFI needs nothing of
/// it, costs nothing while the capture kernel is busy, and keeps its idle behaviour (it still
/// waits for its interrupts, which end the wait at once).
pub fn idle(elr: &mut u64, len: esr::InstructionLength) {
    *elr = portcullis::trap::inject::skip_instruction(*elr, len);
    if !host::in_crash_mode() {
        return;
    }
    let hz = cpu::counter_hz();
    cpu::idle_wait(cpu::counter().saturating_add(hz * IDLE_SLICE_MS / 1000));
}

/// Raises the portcullis. Returns once the host may resume at the trapping instruction. A second
/// CPU fetching from the crash region while (or after) another raises it waits for the fence and
/// retries its fetch.
fn raise(ipa: Ipa) {
    let start = cpu::counter();
    if FENCE
        .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        while FENCE.load(Ordering::Acquire) != 2 {
            core::hint::spin_loop();
        }
        return;
    }
    let dma_stores = firewall::cut_dma();
    let synced = firewall::fence();
    let cpu_stores = host::cut_cpu();
    let cpu_end = cpu::counter();
    FENCE.store(2, Ordering::Release);
    // The fence is complete: from here on, bookkeeping, logs and allocations are allowed.
    let hz = cpu::counter_hz();
    let cpu_ns = portcullis::fence::ticks_to_ns(cpu_end.wrapping_sub(start), hz);
    let fenced = synced.map(|end| {
        firewall::after_fence(
            portcullis::fence::ticks_to_ns(end.wrapping_sub(start), hz),
            (dma_stores + cpu_stores) as u64,
            cpu_ns,
        )
    });
    log::warn!("kexec trap: the host fetched {ipa:?} in the crash region; fence raised in place");
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
    cpu::trap_wfi();
    let (lpi_tables, skipped) = gic_mediation::enter_crash(&host::never_writable());
    host::finish_crash_mode(&lpi_tables, &skipped);
    firewall::write_report();
}
