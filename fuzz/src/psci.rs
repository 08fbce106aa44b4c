//! PSCI / SMCCC decoding and policy (`portcullis::trap::psci`) on sequences of host calls.
//!
//! Invariants (checked against the raw registers, independently of the decoder):
//! - only w0 selects the function: the upper half of x0 changes nothing;
//! - SMC32 calls never pass more than 32 bits of an argument on;
//! - only the proxied PSCI functions reach firmware, with the function ID the host used (or
//!   PSCI_FEATURES asking about one of them); CPU_SUSPEND, SYSTEM_SUSPEND, MIGRATE and every
//!   non-PSCI service (SiP, OEM, Trusted OS, vendor hypervisor) never do;
//! - CPU_ON is intercepted exactly for the two CPU_ON function IDs, with x1..x3 as target, entry
//!   and context; CPU_OFF exactly for its ID.
//!
//! And the per-CPU power states (`trap::cpus::CpuTable`) under any sequence of CPU_ON requests,
//! firmware refusals, arrivals at Portcullis' secondary entry, CPU_OFF and boot, against a model:
//! CPU_ON starts only an Off CPU and otherwise answers ALREADY_ON / ON_PENDING (INVALID_PARAMETERS
//! beyond the table); a CPU that arrives enters the host at the entry of the CPU_ON that started it
//! (a racing second CPU_ON never replaces it), and a CPU nobody started is parked, never entered.

use arbitrary::Arbitrary;
use portcullis::trap::cpus::{Arrival, CpuState, CpuTable, HostEntry};
use portcullis::trap::psci::{self, Action, Call, Convention, PsciFunction, code};

#[derive(Arbitrary, Debug)]
pub struct Input {
    calls: Vec<Regs>,
    cpus: Vec<CpuOp>,
}

const CPUS: usize = 4;

/// One event of the CPU state machine; `cpu` may be beyond the table.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum CpuOp {
    Booted(u8),
    RequestOn {
        cpu: u8,
        pc: u64,
        context: u64,
        capture: bool,
    },
    FirmwareRefused(u8),
    Arrive(u8),
    TurningOff(u8),
    StillOn(u8),
}

fn cpu_states(ops: &[CpuOp]) {
    let table = CpuTable::<CPUS>::new();
    // The model: state and the entry recorded by the CPU_ON that left Off.
    let mut model = [(CpuState::Off, None::<HostEntry>); CPUS];
    for &op in ops.iter().take(256) {
        match op {
            CpuOp::Booted(c) => {
                table.booted(c.into());
                if let Some(m) = model.get_mut(usize::from(c)) {
                    *m = (CpuState::On, None);
                }
            }
            CpuOp::RequestOn {
                cpu,
                pc,
                context,
                capture,
            } => {
                let entry = HostEntry {
                    pc,
                    context,
                    capture,
                };
                let got = table.request_on(cpu.into(), entry);
                let expected = match model.get_mut(usize::from(cpu)) {
                    None => Err(code::INVALID_PARAMETERS),
                    Some(m) => match m.0 {
                        CpuState::Off => {
                            *m = (CpuState::OnPending, Some(entry));
                            Ok(())
                        }
                        CpuState::On => Err(code::ALREADY_ON),
                        CpuState::Claimed | CpuState::OnPending => Err(code::ON_PENDING),
                    },
                };
                assert_eq!(got, expected, "CPU_ON of {cpu}");
            }
            CpuOp::FirmwareRefused(c) => {
                table.firmware_refused(c.into());
                if let Some(m) = model.get_mut(usize::from(c))
                    && m.0 == CpuState::OnPending
                {
                    *m = (CpuState::Off, None);
                }
            }
            CpuOp::Arrive(c) => {
                let got = table.arrive(c.into());
                match model.get_mut(usize::from(c)) {
                    Some(m) if m.0 == CpuState::OnPending => {
                        let entry = m.1.expect("OnPending without an entry in the model");
                        assert_eq!(got, Arrival::Enter(entry), "CPU {c} entered elsewhere");
                        m.0 = CpuState::On;
                    }
                    Some(m) => assert_eq!(got, Arrival::Unexpected(m.0), "CPU {c} arrived"),
                    None => assert!(matches!(got, Arrival::Unexpected(_))),
                }
            }
            CpuOp::TurningOff(c) => {
                table.turning_off(c.into());
                if let Some(m) = model.get_mut(usize::from(c)) {
                    *m = (CpuState::Off, None);
                }
            }
            CpuOp::StillOn(c) => {
                table.still_on(c.into());
                if let Some(m) = model.get_mut(usize::from(c)) {
                    m.0 = CpuState::On;
                }
            }
        }
        for (i, m) in model.iter().enumerate() {
            assert_eq!(table.state(i), Some(m.0), "state of CPU {i} after {op:?}");
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Regs {
    Raw([u64; 4]),
    /// A PSCI function ID (in either convention, maybe with stray bits) and raw arguments.
    Psci {
        number: u8,
        smc64: bool,
        stray: u32,
        args: [u64; 3],
    },
}

impl Regs {
    fn x(self) -> [u64; 4] {
        match self {
            Self::Raw(x) => x,
            Self::Psci {
                number,
                smc64,
                stray,
                args,
            } => {
                let id = 0x8400_0000 | u32::from(number & 0x1f) | u32::from(smc64) << 30;
                // Usually a clean ID; sometimes bits flipped anywhere, upper half included.
                let id = u64::from(id ^ (stray & 0x7fff_0000)) | u64::from(stray) << 32;
                [id, args[0], args[1], args[2]]
            }
        }
    }
}

/// The proxied PSCI function numbers, written out from the module's documentation.
const PROXIED: [u32; 8] = [0x0, 0x2, 0x3, 0x4, 0x6, 0x8, 0x9, 0xa];

pub fn run(input: &Input) {
    for regs in input.calls.iter().take(256) {
        check(regs.x());
    }
    cpu_states(&input.cpus);
}

fn check(x: [u64; 4]) {
    let call = psci::classify(&x);
    let action = psci::decide(&call);
    let w0 = x[0] as u32;

    let mut high = x;
    high[0] = u64::from(w0) | (!x[0] & 0xffff_ffff_0000_0000);
    assert_eq!(
        psci::classify(&high),
        call,
        "upper half of x0 changed the call"
    );

    let smc64 = w0 & 0x4000_0000 != 0;
    let standard_fast = w0 & 0xbf00_0000 == 0x8400_0000 && (w0 >> 16) & 0xff == 0;
    match action {
        Action::Forward { function_id, args } => {
            assert!(standard_fast, "{w0:#x} forwarded to firmware: {action:?}");
            let number = function_id & 0xffff;
            assert!(
                PROXIED.contains(&number),
                "{w0:#x} forwarded as {function_id:#x}, not a proxied function"
            );
            if let Call::Psci {
                function: PsciFunction::Features,
                ..
            } = call
            {
                // PSCI_FEATURES(id) about a proxied function, asked in SMC32.
                assert_eq!(function_id, PsciFunction::Features.smc32_id());
                assert_eq!(args, [x[1] & 0xffff_ffff, 0, 0]);
                let asked = psci::classify(&[x[1] & 0xffff_ffff, 0, 0, 0]);
                assert!(
                    matches!(asked, Call::Psci { function, .. } if function.is_proxied()),
                    "PSCI_FEATURES({:#x}) forwarded",
                    x[1]
                );
            } else {
                assert_eq!(function_id, w0, "{w0:#x} forwarded as {function_id:#x}");
                if !smc64 {
                    assert!(
                        args.iter().all(|a| a >> 32 == 0),
                        "SMC32 args not truncated"
                    );
                }
                let expect = |a: u64| if smc64 { a } else { a & 0xffff_ffff };
                assert_eq!(args, [expect(x[1]), expect(x[2]), expect(x[3])]);
            }
        }
        Action::CpuOff { function_id } => {
            assert_eq!(w0, 0x8400_0002, "{w0:#x} handled as CPU_OFF");
            assert_eq!(function_id, w0);
        }
        Action::CpuOn {
            target_cpu,
            entry,
            context,
            convention,
        } => {
            assert!(
                w0 == 0x8400_0003 || w0 == 0xc400_0003,
                "{w0:#x} intercepted as CPU_ON"
            );
            assert_eq!(convention == Convention::Smc64, smc64);
            let expect = |a: u64| if smc64 { a } else { a & 0xffff_ffff };
            assert_eq!(
                [target_cpu, entry, context],
                [expect(x[1]), expect(x[2]), expect(x[3])]
            );
        }
        Action::Return(value) => {
            // Portcullis answers itself: SMCCC discovery, or a refusal.
            match call {
                Call::SmcccVersion => assert_eq!(value, psci::SMCCC_VERSION_1_1),
                Call::Psci {
                    function: PsciFunction::Features,
                    ..
                } => {}
                _ => assert_eq!(value, psci::NOT_SUPPORTED, "{call:?} answered {value:#x}"),
            }
        }
    }
    if let Call::Psci { function, .. } = call {
        assert!(standard_fast, "{w0:#x} classified as PSCI {function:?}");
        assert_eq!(u32::from(function.number()), w0 & 0xffff);
    }
}
