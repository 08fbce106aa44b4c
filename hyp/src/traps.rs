//! What happens when the host traps to EL2.
//!
//! Synchronous exceptions from the host are decoded by the portable core (`portcullis::trap`) and
//! answered here: PSCI/SMCCC calls, accesses to the emulated SMMU page, and everything that must be
//! refused — an access without a syndrome, or to memory the host does not have — which goes back to
//! the host as a synchronous external abort. Nothing the host does can make Portcullis panic; an
//! exception taken at EL2 itself is a Portcullis bug and does.

use crate::arch::firmware;
use crate::arch::vectors::{ExceptionType, TrapFrame, Vector};
use crate::host;
use crate::limited::limited;
use aarch64_cpu::registers::*;
use portcullis::trap::esr::{self, DataAbort, Exception, FaultStatus, InstructionAbort};
use portcullis::trap::inject::{self, Abort, GuestState};
use portcullis::trap::mmio::MmioAccess;
use portcullis::trap::psci::{self, Action};

#[unsafe(no_mangle)]
extern "C" fn handle_trap(frame: &mut TrapFrame, index: u64) {
    let vector = Vector::from_raw(index);
    if !vector.from_lower_el {
        // Before anything that takes a lock: this is a Portcullis bug, possibly inside one.
        panic!(
            "exception {vector:?} taken at EL2: ESR_EL2 {:#x} FAR_EL2 {:#x} ELR_EL2 {:#x}",
            ESR_EL2.get(),
            FAR_EL2.get(),
            ELR_EL2.get()
        );
    }
    // Portcullis owns the physical event queue and drains it whenever it runs; a CPU that was
    // stopped when the fence was raised takes up the crash-mode stage 2 on its first trap.
    host::ensure_live_stage2();
    crate::firewall::poll();
    match (vector.kind, vector.aarch32) {
        (ExceptionType::Sync, false) => lower_sync(frame),
        // EL1 is AArch64-only (HCR_EL2.RW); this is an AArch32 EL0 task doing something that
        // traps to EL2 (an SMC): refuse it like any unknown instruction.
        (ExceptionType::Sync, true) => inject_undefined(frame),
        // Interrupts and SErrors are not routed to EL2 (HCR_EL2.IMO/FMO/AMO clear).
        _ => limited!(
            Warn,
            "unexpected {vector:?} from the host, ESR {:#x}; ignored",
            ESR_EL2.get()
        ),
    }
}

fn lower_sync(frame: &mut TrapFrame) {
    let esr = ESR_EL2.get();
    let syndrome = esr::decode(esr);
    match syndrome.exception {
        Exception::Hvc64 { .. } => smccc_call(frame),
        Exception::Smc64 { .. } => {
            // A trapped SMC returns to the SMC itself: step over it.
            frame.elr = inject::skip_instruction(frame.elr, syndrome.instruction_length);
            smccc_call(frame);
        }
        Exception::DataAbort(abort) => data_abort(frame, &abort, syndrome.instruction_length),
        Exception::InstructionAbort(abort) => instruction_abort(frame, &abort),
        other => {
            limited!(
                Warn,
                "host trap {other:?} (ESR {esr:#x}) at {:#x}: injecting an undefined instruction",
                frame.elr
            );
            inject_undefined(frame);
        }
    }
}

fn smccc_call(frame: &mut TrapFrame) {
    #[cfg(feature = "test-hooks")]
    if crate::test_hooks::handle(frame) {
        return;
    }
    let call = psci::classify(&[frame.x[0], frame.x[1], frame.x[2], frame.x[3]]);
    match psci::decide(&call) {
        Action::Return(x0) => frame.x[0] = x0,
        Action::Forward { function_id, args } => {
            log::trace!("PSCI {call:?} forwarded to firmware");
            let r = firmware::call(function_id, args);
            frame.x[..4].copy_from_slice(&r);
        }
        Action::CpuOff { function_id } => {
            let r = host::cpu_off(function_id);
            frame.x[..4].copy_from_slice(&r);
        }
        Action::CpuOn {
            target_cpu,
            entry,
            context,
            ..
        } => {
            frame.x[0] = host::cpu_on(target_cpu, entry, context);
            limited!(
                Debug,
                "CPU_ON({target_cpu:#x}, {entry:#x}) -> {}",
                frame.x[0] as i64
            );
        }
    }
}

/// The IPA of a stage-2 abort, from HPFAR_EL2 only where the architecture promises it.
enum FaultIpa {
    Known(platform::addr::Ipa),
    /// A permission fault whose VA the host's stage 1 no longer translates (it changed its tables
    /// since): return to the instruction and let it fault again, or not.
    Retry,
    /// Nothing says (FAR not valid, or no address for this kind of fault).
    Unknown,
}

fn fault_ipa(s1ptw: bool, far_not_valid: bool, fault: FaultStatus) -> FaultIpa {
    let far = FAR_EL2.get();
    match esr::ipa_source(s1ptw, far_not_valid, fault) {
        esr::IpaSource::Hpfar => FaultIpa::Known(esr::fault_ipa(HPFAR_EL2.get(), far)),
        esr::IpaSource::TranslateFar => {
            match esr::ipa_from_par(crate::arch::cpu::translate_el1_read(far), far) {
                Some(ipa) => FaultIpa::Known(ipa),
                None => FaultIpa::Retry,
            }
        }
        esr::IpaSource::Unknown => FaultIpa::Unknown,
    }
}

fn data_abort(frame: &mut TrapFrame, abort: &DataAbort, len: esr::InstructionLength) {
    let ipa = match fault_ipa(abort.s1ptw, abort.far_not_valid, abort.fault) {
        FaultIpa::Known(ipa) => ipa,
        FaultIpa::Retry => return,
        FaultIpa::Unknown => {
            limited!(
                Warn,
                "host {} abort at an unknown IPA (ELR {:#x}, {:?}); injecting an external abort",
                if abort.write { "store" } else { "load" },
                frame.elr,
                abort.fault
            );
            let far = FAR_EL2.get();
            let write = abort.write;
            return inject_abort(frame, Abort::Data { far, write });
        }
    };
    if crate::gic_mediation::is_trapped(ipa) {
        match MmioAccess::from_abort(abort, ipa) {
            Ok(access) => {
                crate::gic_mediation::access(frame, &access);
                frame.elr = inject::skip_instruction(frame.elr, len);
            }
            Err(e) => {
                limited!(Warn, "host access to the GIC at {ipa:?} refused: {e}");
                let far = FAR_EL2.get();
                inject_abort(
                    frame,
                    Abort::Data {
                        far,
                        write: abort.write,
                    },
                );
            }
        }
        return;
    }
    if host::is_emulated_smmu(ipa) {
        match MmioAccess::from_abort(abort, ipa) {
            Ok(access) => {
                crate::firewall::emulated_access(frame, &access, host::smmu_base());
                frame.elr = inject::skip_instruction(frame.elr, len);
            }
            Err(e) => {
                limited!(
                    Warn,
                    "host access to the SMMU at {ipa:?} refused: {e} (ELR {:#x})",
                    frame.elr
                );
                inject_abort(
                    frame,
                    Abort::Data {
                        far: FAR_EL2.get(),
                        write: abort.write,
                    },
                );
            }
        }
        return;
    }
    limited!(
        Warn,
        "host {} at {ipa:?} (ELR {:#x}) refused by its stage 2 ({:?}): not its memory, or read-only in crash mode; injecting an external abort",
        if abort.write { "store" } else { "load" },
        frame.elr,
        abort.fault
    );
    inject_abort(
        frame,
        Abort::Data {
            far: FAR_EL2.get(),
            write: abort.write,
        },
    );
}

fn instruction_abort(frame: &mut TrapFrame, abort: &InstructionAbort) {
    let ipa = match fault_ipa(abort.s1ptw, abort.far_not_valid, abort.fault) {
        FaultIpa::Known(ipa) => ipa,
        FaultIpa::Retry => return,
        FaultIpa::Unknown => {
            limited!(
                Warn,
                "host instruction fetch at an unknown IPA (ELR {:#x}, {:?}); injecting an external abort",
                frame.elr,
                abort.fault
            );
            let far = FAR_EL2.get();
            return inject_abort(frame, Abort::Instruction { far });
        }
    };
    let crash = host::crash_region();
    let in_crash = crash.is_some_and(|r| r.contains(platform::addr::Pa(ipa.raw())));
    if in_crash && !host::in_crash_mode() && matches!(abort.fault, FaultStatus::Permission { .. }) {
        // A permission fault on an instruction fetch from the crash region: the kexec event.
        // Resume at the same instruction, which the crash-mode stage 2 lets run.
        crate::crash::raise(ipa);
        return;
    }
    limited!(
        Warn,
        "host instruction fetch at {ipa:?} (ELR {:#x}) faulted: {:?}; injecting an external abort",
        frame.elr,
        abort.fault
    );
    inject_abort(frame, Abort::Instruction { far: FAR_EL2.get() });
}

fn guest_state(frame: &TrapFrame) -> GuestState {
    GuestState {
        elr_el2: frame.elr,
        spsr_el2: frame.spsr,
        vbar_el1: VBAR_EL1.get(),
        sctlr_el1: SCTLR_EL1.get(),
    }
}

fn inject_abort(frame: &mut TrapFrame, abort: Abort) {
    match inject::inject_external_abort(&guest_state(frame), &abort) {
        Ok(inj) => {
            ESR_EL1.set(inj.esr_el1);
            FAR_EL1.set(inj.far_el1);
            ELR_EL1.set(inj.elr_el1);
            SPSR_EL1.set(inj.spsr_el1);
            frame.elr = inj.elr_el2;
            frame.spsr = inj.spsr_el2;
        }
        // The trap came from somewhere that is not the host's EL0/EL1: an invariant is broken.
        Err(e) => panic!("cannot inject an abort into the host: {e}"),
    }
}

/// Makes the host take an "unknown reason" exception (EC 0) at the trapping instruction, as an
/// undefined instruction would.
fn inject_undefined(frame: &mut TrapFrame) {
    let state = guest_state(frame);
    match inject::inject_external_abort(&state, &Abort::Instruction { far: frame.elr }) {
        Ok(inj) => {
            // Same entry as an abort, but with the syndrome of an undefined instruction (EC 0, IL 1).
            ESR_EL1.set(1 << 25);
            ELR_EL1.set(inj.elr_el1);
            SPSR_EL1.set(inj.spsr_el1);
            frame.elr = inj.elr_el2;
            frame.spsr = inj.spsr_el2;
        }
        Err(e) => panic!("cannot inject an undefined instruction into the host: {e}"),
    }
}
