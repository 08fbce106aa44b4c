//! Per-CPU EL2 state: which CPU this is, and the EL2 controls under which the host runs.

use super::sysreg;
use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::*;
use core::arch::asm;
use portcullis::sysregs::{self, CpuFeatures};
use portcullis::trap::esr::{self, FaultStatus};
use portcullis::trap::vtimer::VirtTimerReg;

/// This CPU's index (0 = the boot CPU), kept in TPIDR_EL2 by the entry code.
pub fn index() -> usize {
    TPIDR_EL2.get() as usize
}

/// This CPU's MPIDR affinity bits.
pub fn mpidr() -> u64 {
    MPIDR_EL1.get() & 0xff_00ff_ffff
}

/// The CPU's physical address size as ID_AA64MMFR0_EL1.PARange: (field value, bits).
pub fn pa_range() -> (u64, u32) {
    let field = ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange);
    let bits = match field {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        5 => 48,
        _ => 52,
    };
    (field, bits)
}

/// Whether the CPU has 16-bit VMIDs.
pub fn vmid16() -> bool {
    ID_AA64MMFR1_EL1.read(ID_AA64MMFR1_EL1::VMIDBits) == 2
}

/// The stage 2 the host runs under.
#[derive(Clone, Copy, Debug)]
pub struct GuestStage2 {
    pub vtcr: u64,
    pub vttbr: u64,
}

/// Configures this CPU's EL2 controls for running the host under `stage2`. Called on every CPU
/// before it first enters the host.
pub fn configure_for_host(stage2: GuestStage2) {
    let features = CpuFeatures::from_id_registers(
        ID_AA64PFR0_EL1.get(),
        ID_AA64PFR1_EL1.get(),
        ID_AA64MMFR0_EL1.get(),
        ID_AA64MMFR1_EL1.get(),
        sysreg::ID_AA64MMFR3_EL1.get(),
    );
    // Identify as the real CPU.
    sysreg::VPIDR_EL2.set(MIDR_EL1.get());
    VMPIDR_EL2.set(MPIDR_EL1.get());

    // Timers and counters: EL1 may use the physical timer and counter; no virtual offset.
    CNTHCTL_EL2.write(CNTHCTL_EL2::EL1PCEN::SET + CNTHCTL_EL2::EL1PCTEN::SET);
    CNTVOFF_EL2.set(0);

    // GICv3 system registers usable from EL1 (SRE), and EL1 may enable them (Enable).
    if features.gic_sysregs {
        ICC_SRE_EL2.write(ICC_SRE_EL2::SRE::SET + ICC_SRE_EL2::ENABLE::SET);
        ICH_HCR_EL2.set(0);
    }

    // Debug and performance monitors: give EL1 all event counters, trap nothing, count nothing
    // at EL2 where the PMU version allows it.
    MDCR_EL2.set(portcullis::pmu::mdcr_el2_for_host(
        sysreg::PMCR_EL0.get(),
        ID_AA64DFR0_EL1.get(),
    ));

    // FP/SIMD, SVE and SME are the host's; give it the largest vector lengths.
    if ID_AA64PFR0_EL1.read(ID_AA64PFR0_EL1::SVE) != 0 {
        sysreg::ZCR_EL2.write(sysregs::ZCR_EL2::LEN.val(sysregs::VECTOR_LENGTH_MAX));
    }
    if features.sme {
        sysreg::SMCR_EL2.write(sysregs::SMCR_EL2::LEN.val(sysregs::VECTOR_LENGTH_MAX));
    }
    // FEAT_HCX: enable what the host's CPU features promise it (see `hcrx_el2_for_host`).
    if features.hcx {
        sysreg::HCRX_EL2.set(features.hcrx_el2_for_host());
    }
    // FEAT_FGT: no fine-grained traps.
    if features.fgt {
        HFGRTR_EL2.set(0);
        HFGWTR_EL2.set(0);
        HFGITR_EL2.set(0);
        HDFGRTR_EL2.set(0);
        HDFGWTR_EL2.set(0);
    }
    // No AArch32 system register access trapped.
    sysreg::HSTR_EL2.set(0);

    // EL1 starts with its MMU off, as the boot protocol says.
    SCTLR_EL1.set(sysregs::sctlr_el1_at_boot());

    VTCR_EL2.set(stage2.vtcr);
    VTTBR_EL2.set(stage2.vttbr);
    HCR_EL2.set(sysregs::hcr_el2_for_host());
    // SAFETY: barriers and TLB invalidation of stage-1+2 EL1 entries have no memory-safety effects.
    unsafe { asm!("isb", "tlbi vmalls12e1", "dsb nsh", "isb", options(nostack)) };
}

/// The host's stage-2 base on this CPU.
pub fn vttbr() -> u64 {
    VTTBR_EL2.get()
}

/// After stage-2 descriptor stores (a "break": valid descriptors made invalid): makes them
/// visible to every table walker (`DSB ISH`), then removes every TLB and walk-cache entry of the
/// VMID in this CPU's `VTTBR_EL2` (the host's) on every PE of the Inner Shareable domain
/// (`TLBI VMALLS12E1IS`), and waits for that to complete everywhere (`DSB ISH`). From the return,
/// no PE translates a host access through a descriptor the break removed: ARM ARM (DDI 0487)
/// "Using break-before-make when updating translation table entries", steps 1-3, and "TLB
/// maintenance instructions" (a broadcast TLBI completes for all PEs at the issuer's DSB).
pub fn stage2_break_broadcast() {
    // SAFETY: barriers and stage-2 TLB maintenance for the host's VMID; no effect on EL2's own
    // translation (stage 2 applies to EL1/EL0 only).
    unsafe { asm!("dsb ish", "tlbi vmalls12e1is", "dsb ish", options(nostack)) };
}

/// After stage-2 descriptor stores that only make invalid descriptors valid (the "make"): visible
/// to every walker (`DSB ISH`; invalid descriptors are never cached, so no TLB maintenance is
/// owed), and to this PE's own later instructions (`ISB`).
pub fn stage2_publish() {
    barrier::dsb(barrier::ISH);
    barrier::isb(barrier::SY);
}

/// Switches this CPU to a stage 2 whose VMID no PE has ever run under (so no TLB anywhere holds
/// an entry for it): no TLB maintenance is owed, only the `ISB` that makes the new `VTTBR_EL2`
/// apply to what this CPU runs next at EL1.
pub fn set_vttbr_fresh(vttbr: u64) {
    // SAFETY: a stage-2 base for EL1/EL0; no effect on EL2's own translation.
    unsafe { asm!("msr vttbr_el2, {}", "isb", in(reg) vttbr, options(nostack)) };
}

/// In crash mode, on a CPU of the capture kernel, the traps that let Portcullis run (drain the
/// SMMU's fault records into the report and the capture kernel's Event queue) within a bounded
/// time whatever the capture kernel does (`crash::idle`, `crash::timer_access`):
/// - WFI traps to EL2 (`HCR_EL2.TWI`): an idle capture kernel comes back at least once per
///   [`idle_wait`]; and the EL2 event stream is on (`CNTHCTL_EL2.EVNTEN`, an event each time
///   counter bit 12 changes: every 8192 ticks, 131 us at QEMU's 62.5 MHz), which bounds each WFE
///   of [`idle_wait`]. WFE is not trapped: Linux waits for spinlocks with it, and its idle loop
///   uses WFI;
/// - where the CPU has FEAT_ECV, EL1 accesses to the EL1 virtual timer trap to EL2
///   (`CNTHCTL_EL2.EL1TVT`): a busy capture kernel, which never executes WFI, reprograms that
///   timer at every tick of its own.
pub fn capture_kernel_traps() {
    HCR_EL2.set(sysregs::hcr_el2_trap_wfi(HCR_EL2.get()));
    let mut cnthctl = sysregs::cnthctl_el2_event_stream(CNTHCTL_EL2.get());
    if has_ecv() {
        cnthctl = sysregs::cnthctl_el2_trap_vtimer(cnthctl);
    }
    CNTHCTL_EL2.set(cnthctl);
    barrier::isb(barrier::SY);
}

/// ID_AA64MMFR0_EL1.ECV, bits [63:60]: FEAT_ECV (the EL1 timer traps of `CNTHCTL_EL2`).
fn has_ecv() -> bool {
    ID_AA64MMFR0_EL1.get() >> 60 != 0
}

/// Reads the EL1 virtual timer's `reg` for the host. At EL2 with `HCR_EL2.E2H` = 0, `CNTV_*_EL0`
/// are the EL1 virtual timer's registers, and `CNTHCTL_EL2.EL1TVT` does not trap EL2's accesses.
pub fn vtimer_read(reg: VirtTimerReg) -> u64 {
    let value: u64;
    // SAFETY: reading a timer register has no side effects.
    unsafe {
        match reg {
            VirtTimerReg::Tval => {
                asm!("mrs {}, cntv_tval_el0", out(reg) value, options(nomem, nostack))
            }
            VirtTimerReg::Ctl => {
                asm!("mrs {}, cntv_ctl_el0", out(reg) value, options(nomem, nostack))
            }
            VirtTimerReg::Cval => {
                asm!("mrs {}, cntv_cval_el0", out(reg) value, options(nomem, nostack))
            }
        }
    }
    value
}

/// Writes the EL1 virtual timer's `reg` for the host (see [`vtimer_read`]), then `ISB`, as the
/// host's own `MSR` would be followed by the next instruction seeing it.
pub fn vtimer_write(reg: VirtTimerReg, value: u64) {
    // SAFETY: the host's own timer register, written as it asked; no effect on EL2.
    unsafe {
        match reg {
            VirtTimerReg::Tval => asm!("msr cntv_tval_el0, {}", in(reg) value, options(nostack)),
            VirtTimerReg::Ctl => asm!("msr cntv_ctl_el0, {}", in(reg) value, options(nostack)),
            VirtTimerReg::Cval => asm!("msr cntv_cval_el0, {}", in(reg) value, options(nostack)),
        }
        asm!("isb", options(nostack));
    }
}

/// A trapped WFI's wait, bounded: until an interrupt is pending for the host (`ISR_EL1`, which at
/// EL2 with `HCR_EL2.IMO` = 0 shows the physical IRQ/FIQ/SError state) or the counter reaches
/// `deadline`, with WFE between looks (woken by the event stream at the latest).
pub fn idle_wait(deadline: u64) {
    let pending = || sysreg::ISR_EL1.get() != 0;
    while !pending() && counter() < deadline {
        // WFE only waits for an event; the event stream bounds it.
        aarch64_cpu::asm::wfe();
    }
}

/// The physical counter, for measuring the fence window.
pub fn counter() -> u64 {
    CNTPCT_EL0.get()
}

/// Ticks per second of the physical counter: `CNTFRQ_EL0`, which firmware sets once before
/// anything runs, read once and kept (every trap asks for it, and an emulator checks the access
/// to the register each time).
pub fn counter_hz() -> u64 {
    use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
    static HZ: AtomicU64 = AtomicU64::new(0);
    match HZ.load(Relaxed) {
        0 => {
            let hz = CNTFRQ_EL0.get();
            HZ.store(hz, Relaxed);
            hz
        }
        hz => hz,
    }
}

/// Translates `va` through the host's current EL1&0 stage 1 (and, for its table walk, the host's
/// stage 2); returns the PAR_EL1 it produced. `AT S1E1A` where the CPU has it (no permission
/// check: a page the host may execute but not read, with permission indirection, still
/// translates), `AT S1E1R` otherwise. PAR_EL1 is the host's register: it is restored before
/// returning. Used to find the IPA of a stage-2 permission fault, for which HPFAR_EL2 is not
/// reliable (`portcullis::trap::esr::ipa_source`).
pub fn translate_el1_read(va: u64) -> u64 {
    let par: u64;
    if sysregs::has_ats1a(sysreg::ID_AA64ISAR2_EL1.get()) {
        // SAFETY: as below; `sys #0, c7, c9, #2` is AT S1E1A (FEAT_ATS1A, present).
        unsafe {
            asm!(
                "mrs {saved}, par_el1",
                "sys #0, c7, c9, #2, {va}",
                "isb",
                "mrs {par}, par_el1",
                "msr par_el1, {saved}",
                va = in(reg) va,
                saved = out(reg) _,
                par = out(reg) par,
                options(nostack),
            );
        }
        return par;
    }
    // SAFETY: an address translation instruction only writes PAR_EL1 (saved and restored here);
    // a stage-2 fault on its walk is reported in PAR_EL1, not taken as an exception.
    unsafe {
        asm!(
            "mrs {saved}, par_el1",
            "at s1e1r, {va}",
            "isb",
            "mrs {par}, par_el1",
            "msr par_el1, {saved}",
            va = in(reg) va,
            saved = out(reg) _,
            par = out(reg) par,
            options(nostack),
        );
    }
    par
}

/// The IPA of a stage-2 abort, from HPFAR_EL2 only where the architecture promises it.
pub enum FaultIpa {
    Known(platform::addr::Ipa),
    /// A permission fault whose VA the host's stage 1 no longer translates (it changed its tables
    /// since): return to the instruction and let it fault again, or not.
    Retry,
    /// Nothing says (FAR not valid, or no address for this kind of fault).
    Unknown,
}

pub fn fault_ipa(s1ptw: bool, far_not_valid: bool, fault: FaultStatus) -> FaultIpa {
    let far = FAR_EL2.get();
    match esr::ipa_source(s1ptw, far_not_valid, fault) {
        esr::IpaSource::Hpfar => FaultIpa::Known(esr::fault_ipa(HPFAR_EL2.get(), far)),
        esr::IpaSource::TranslateFar => match esr::ipa_from_par(translate_el1_read(far), far) {
            Some(ipa) => FaultIpa::Known(ipa),
            None => FaultIpa::Retry,
        },
        esr::IpaSource::Unknown => FaultIpa::Unknown,
    }
}
