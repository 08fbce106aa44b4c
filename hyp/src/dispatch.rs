//! What happens when the host traps to EL2.
//!
//! Synchronous exceptions from the host are decoded by the portable core (`portcullis::trap`) and
//! answered here: PSCI/SMCCC calls, accesses to the emulated SMMU page, and everything that must be
//! refused — an access without a syndrome, or to memory the host does not have — which goes back to
//! the host as a synchronous external abort. Nothing the host does can make Portcullis panic; an
//! exception taken at EL2 itself is a Portcullis bug and does.

use crate::arch::cpu::{FaultIpa, fault_ipa};
use crate::arch::firmware;
use crate::arch::vectors::{ExceptionType, TrapFrame, Vector};
use crate::host;
use crate::limited::limited;
use aarch64_cpu::registers::*;
use portcullis::diag::counters::{self, COUNTERS, Trap};
use portcullis::prof::Stage;
use portcullis::trap::esr::{self, DataAbort, Exception, FaultStatus, InstructionAbort};
use portcullis::trap::inject::{self, Abort, GuestState};
use portcullis::trap::mmio::MmioAccess;
use portcullis::trap::psci::{self, Action};

#[unsafe(no_mangle)]
extern "C" fn handle_trap(frame: &mut TrapFrame, index: u64) {
    portcullis::prof::begin();
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
    COUNTERS.trap();
    // The kexec trap raises the fence before anything else (no drain, no log, no other lock).
    if crate::crash::kexec_trap(&vector, frame.vector_ticks) {
        COUNTERS.cause(Trap::Kexec);
        return;
    }
    portcullis::prof::lap(Stage::Kexec);
    // Portcullis owns the physical event queue: drained here in crash mode and as a backstop,
    // otherwise when the host reads its event registers (`portcullis::emul::drain`).
    let entered = crate::firewall::poll_if_due();
    portcullis::prof::lap(Stage::Poll);
    match (vector.kind, vector.aarch32) {
        (ExceptionType::Sync, false) => lower_sync(frame, entered),
        // EL1 is AArch64-only (HCR_EL2.RW); this is an AArch32 EL0 task doing something that
        // traps to EL2 (an SMC): refuse it like any unknown instruction.
        (ExceptionType::Sync, true) => inject_undefined(frame),
        // Interrupts and SErrors are not routed to EL2 (HCR_EL2.IMO/FMO/AMO clear).
        _ => {
            COUNTERS.cause(Trap::Other);
            limited!(
                Warn,
                "unexpected {vector:?} from the host, ESR {:#x}; ignored",
                ESR_EL2.get()
            )
        }
    }
    // Once, on the host's first trap: the fence's path run with nothing to cut (see there).
    crate::crash::rehearse_once();
}

fn lower_sync(frame: &mut TrapFrame, entered: u64) {
    let esr = ESR_EL2.get();
    let syndrome = esr::decode(esr);
    match syndrome.exception {
        Exception::Hvc64 { .. } => smccc_call(frame),
        Exception::Smc64 { .. } => {
            // A trapped SMC returns to the SMC itself: step over it.
            frame.elr = inject::skip_instruction(frame.elr, syndrome.instruction_length);
            smccc_call(frame);
        }
        Exception::DataAbort(abort) => {
            data_abort(frame, &abort, syndrome.instruction_length, entered)
        }
        Exception::InstructionAbort(abort) => instruction_abort(frame, &abort),
        // WFI traps only in crash mode (the capture kernel's idle: see `crash::idle`).
        Exception::Wfx(_) => {
            COUNTERS.cause(Trap::Wfi);
            crate::crash::idle(&mut frame.elr, syndrome.instruction_length)
        }
        // In crash mode, the capture kernel's virtual-timer accesses (see `crash::timer_access`).
        Exception::SysReg(access)
            if crate::crash::timer_access(
                &mut frame.x,
                &mut frame.elr,
                &access,
                syndrome.instruction_length,
            ) =>
        {
            COUNTERS.cause(Trap::Timer)
        }
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
        COUNTERS.cause(Trap::TestHook);
        return;
    }
    COUNTERS.cause(Trap::Smccc);
    let call = psci::classify(&[frame.x[0], frame.x[1], frame.x[2], frame.x[3]]);
    if let Some(at) = counters_point(&call) {
        crate::firewall::log_counters(at);
    }
    if host::is_dead_cpu() && !psci::allowed_after_death(&call) {
        frame.x[0] = psci::x0(psci::code::DENIED);
        return;
    }
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

/// The PSCI calls at which the counters line is logged (`portcullis::diag::counters`): the system
/// going down, and with `counters=cpu-off` a CPU going offline (Linux: `echo 0 >
/// /sys/devices/system/cpu/cpuN/online`).
fn counters_point(call: &psci::Call) -> Option<&'static str> {
    use psci::PsciFunction as F;
    match call {
        psci::Call::Psci { function, .. } => match function {
            F::CpuOff if counters::line_at_cpu_off() => Some("cpu-off"),
            F::SystemOff | F::SystemOff2 => Some("system-off"),
            F::SystemReset | F::SystemReset2 => Some("system-reset"),
            _ => None,
        },
        _ => None,
    }
}

fn data_abort(frame: &mut TrapFrame, abort: &DataAbort, len: esr::InstructionLength, entered: u64) {
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
    if matches!(abort.fault, FaultStatus::Translation { .. })
        && host::retry_stage2_fault(ipa, abort.write && !abort.s1ptw, false)
    {
        // Faulted while the fence swapped the stage 2 (break-before-make): allowed now, retry.
        COUNTERS.cause(Trap::Retry);
        return;
    }
    if host::is_dead_cpu() {
        // A CPU of the dead kernel, still running after the fence: it may not drive the emulated
        // SMMU or the mediated GIC (the capture kernel's now), and every other stage-2 fault of it
        // is a refused access to the frozen dump. Nothing to emulate: an external abort.
        limited!(
            Warn,
            "dead-kernel CPU {} at {:#x} (ELR {:#x}) after the fence: refused",
            if abort.write { "store" } else { "load" },
            FAR_EL2.get(),
            frame.elr
        );
        let far = FAR_EL2.get();
        let write = abort.write;
        return inject_abort(frame, Abort::Data { far, write });
    }
    if crate::gic_mediation::is_trapped(ipa) {
        match MmioAccess::from_abort(abort, ipa) {
            Ok(access) => {
                COUNTERS.cause(Trap::Gic);
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
                COUNTERS.cause(if access.write {
                    Trap::SmmuWrite
                } else {
                    Trap::SmmuRead
                });
                portcullis::prof::lap(Stage::Decode);
                crate::firewall::emulated_access(frame, &access, host::smmu_base(), entered);
                frame.elr = inject::skip_instruction(frame.elr, len);
                portcullis::prof::lap(Stage::Return);
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
    // (The kexec event, a permission fault on a fetch from the crash region, never gets here:
    // `crash::kexec_trap` takes it first.)
    if matches!(abort.fault, FaultStatus::Translation { .. })
        && host::retry_stage2_fault(ipa, false, !abort.s1ptw)
    {
        COUNTERS.cause(Trap::Retry);
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
    COUNTERS.cause(Trap::AbortInjected);
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
    COUNTERS.cause(Trap::Undefined);
    let state = guest_state(frame);
    match inject::inject_external_abort(&state, &Abort::Instruction { far: frame.elr }) {
        Ok(inj) => {
            // Same entry as an abort, but with the syndrome of an undefined instruction (EC 0, IL 1).
            ESR_EL1.set(portcullis::sysregs::esr_el1_undefined());
            ELR_EL1.set(inj.elr_el1);
            SPSR_EL1.set(inj.spsr_el1);
            frame.elr = inj.elr_el2;
            frame.spsr = inj.spsr_el2;
        }
        Err(e) => panic!("cannot inject an undefined instruction into the host: {e}"),
    }
}
