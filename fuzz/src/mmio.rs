//! Trap syndrome decoding (`portcullis::trap::esr`), MMIO access emulation (`trap::mmio`) and abort
//! injection (`trap::inject`), the way the trap handler chains them for a host data or instruction
//! abort: every field is checked against the raw register bits (ARM ARM D24.2.40, ESR_ELx), written
//! out here independently of the decoder.

use arbitrary::Arbitrary;
use portcullis::trap::esr::{self, Exception, FaultStatus};
use portcullis::trap::inject::{self, Abort, GuestState};
use portcullis::trap::mmio::{MmioAccess, load_result};

#[derive(Arbitrary, Debug)]
pub struct Input {
    esr: u64,
    hpfar: u64,
    far: u64,
    gprs: [u64; 31],
    loaded: u64,
    elr: u64,
    spsr: Spsr,
    vbar: u64,
    sctlr: u64,
}

/// SPSR_EL2: the host's (EL0 / EL1, AArch64 or AArch32 User) most of the time.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Spsr {
    Host { mode: u8, rest: u64 },
    Raw(u64),
}

impl Spsr {
    fn value(self) -> u64 {
        match self {
            Self::Host { mode, rest } => {
                let m = [0b0_0000, 0b0_0100, 0b0_0101, 0b1_0000][usize::from(mode & 3)];
                (rest & !0x1f) | m
            }
            Self::Raw(v) => v,
        }
    }
}

fn bit(v: u64, n: u32) -> bool {
    v >> n & 1 != 0
}

pub fn run(input: &Input) {
    let esr = input.esr;
    let syndrome = esr::decode(esr);
    let ec = (esr >> 26) & 0x3f;
    let iss = esr & 0x1ff_ffff;
    assert_eq!(
        syndrome.instruction_length.bytes(),
        if bit(esr, 25) { 4 } else { 2 }
    );
    for code in 0..64u8 {
        // Total, and blind to bits above the 6-bit code.
        assert_eq!(FaultStatus::decode(code), FaultStatus::decode(code | 0xc0));
    }

    let spsr = input.spsr.value();
    let state = GuestState {
        elr_el2: input.elr,
        spsr_el2: spsr,
        vbar_el1: input.vbar,
        sctlr_el1: input.sctlr,
    };
    let ipa = esr::fault_ipa(input.hpfar, input.far);
    assert_eq!(ipa.raw() & 0xfff, input.far & 0xfff);
    assert_eq!(ipa.raw() >> 12, (input.hpfar >> 4) & ((1 << 40) - 1));

    let abort = match syndrome.exception {
        Exception::DataAbort(da) => {
            assert_eq!(ec, 0x24);
            assert_eq!(da.write, bit(iss, 6));
            assert_eq!(da.s1ptw, bit(iss, 7));
            assert_eq!(da.cache_maintenance, bit(iss, 8));
            assert_eq!(da.external_abort_type, bit(iss, 9));
            assert_eq!(da.far_not_valid, bit(iss, 10));
            assert_eq!(da.fault, FaultStatus::decode((iss & 0x3f) as u8));
            assert_eq!(da.access.is_some(), bit(iss, 24));
            if let Some(a) = da.access {
                assert_eq!(a.size.bytes(), 1 << ((iss >> 22) & 3));
                assert_eq!(a.sign_extend, bit(iss, 21));
                assert_eq!(u64::from(a.register), (iss >> 16) & 0x1f);
                assert_eq!(a.sixty_four, bit(iss, 15));
                assert_eq!(a.acquire_release, bit(iss, 14));
            }
            match MmioAccess::from_abort(&da, ipa) {
                Ok(access) => {
                    assert!(!da.s1ptw && !da.cache_maintenance && !da.far_not_valid);
                    emulate(&access, input);
                    let next = inject::skip_instruction(input.elr, syndrome.instruction_length);
                    assert_eq!(
                        next,
                        input.elr.wrapping_add(syndrome.instruction_length.bytes())
                    );
                    None
                }
                Err(_) => Some(Abort::Data {
                    far: input.far,
                    write: da.write,
                }),
            }
        }
        Exception::InstructionAbort(ia) => {
            assert_eq!(ec, 0x20);
            assert_eq!(ia.s1ptw, bit(iss, 7));
            assert_eq!(ia.fault, FaultStatus::decode((iss & 0x3f) as u8));
            Some(Abort::Instruction { far: input.far })
        }
        Exception::Hvc64 { imm16 } | Exception::Smc64 { imm16 } => {
            assert!(ec == 0x16 || ec == 0x17);
            assert_eq!(u64::from(imm16), iss & 0xffff);
            None
        }
        Exception::SysReg(s) => {
            assert_eq!(ec, 0x18);
            assert_eq!(s.read, bit(iss, 0));
            assert_eq!(u64::from(s.rt), (iss >> 5) & 0x1f);
            None
        }
        Exception::Wfx(_) => {
            assert_eq!(ec, 0x01);
            None
        }
        Exception::Other {
            ec: other,
            iss: raw,
        } => {
            assert!(![0x01, 0x16, 0x17, 0x18, 0x20, 0x24].contains(&ec));
            assert_eq!(u64::from(other), ec);
            assert_eq!(u64::from(raw), iss);
            None
        }
    };
    if let Some(abort) = abort {
        check_injection(&state, &abort);
    }
}

/// A trapped load or store: the value stored, the registers after a load.
fn emulate(access: &MmioAccess, input: &Input) {
    let size = access.size_bytes;
    assert!([1, 2, 4, 8].contains(&size));
    assert!(access.reg <= 31);
    let mask = if size == 8 {
        u64::MAX
    } else {
        (1u64 << (size * 8)) - 1
    };
    let stored = access.store_value(&input.gprs);
    let source = input
        .gprs
        .get(usize::from(access.reg))
        .copied()
        .unwrap_or(0);
    assert_eq!(stored, source & mask, "stored value");

    let mut gprs = input.gprs;
    access.complete_load(&mut gprs, input.loaded);
    let result = load_result(access, input.loaded);
    for (i, (after, before)) in gprs.iter().zip(&input.gprs).enumerate() {
        if i == usize::from(access.reg) {
            assert_eq!(*after, result);
        } else {
            assert_eq!(after, before, "a load into x{} changed x{i}", access.reg);
        }
    }
    let raw = input.loaded & mask;
    if !access.sixty_four {
        assert_eq!(result >> 32, 0, "a W-register load set the upper half");
    }
    assert_eq!(
        result & mask,
        raw & (if access.sixty_four {
            mask
        } else {
            mask & 0xffff_ffff
        })
    );
    if !access.sign_extend {
        let w = if access.sixty_four {
            raw
        } else {
            raw & 0xffff_ffff
        };
        assert_eq!(result, w, "a zero-extending load");
    }
}

fn check_injection(state: &GuestState, abort: &Abort) {
    let spsr = state.spsr_el2;
    let from_aarch32 = bit(spsr, 4);
    let m = spsr & 0xf;
    let host = if from_aarch32 {
        m == 0
    } else {
        [0b0000, 0b0100, 0b0101].contains(&m)
    };
    let Ok(inj) = inject::inject_external_abort(state, abort) else {
        assert!(!host, "refused to inject into the host at SPSR {spsr:#x}");
        return;
    };
    assert!(host, "injected into a non-host state, SPSR {spsr:#x}");
    let same_el = !from_aarch32 && m != 0;
    let group = match (from_aarch32, m) {
        (true, _) => 0x600,
        (false, 0b0000) => 0x400,
        (false, 0b0100) => 0x000,
        _ => 0x200,
    };
    assert_eq!(inj.elr_el2, (state.vbar_el1 & !0x7ff).wrapping_add(group));
    assert_eq!(inj.elr_el1, state.elr_el2);
    assert_eq!(inj.spsr_el1, spsr);
    assert_eq!(
        inj.spsr_el2 & 0x3ff,
        0x3c5,
        "handler not at EL1h with DAIF masked"
    );
    assert_eq!(inj.spsr_el2 >> 28 & 0xf, spsr >> 28 & 0xf, "NZCV");
    let ec = inj.esr_el1 >> 26;
    let (far, write, expected_ec) = match *abort {
        Abort::Data { far, write } => (far, write, if same_el { 0x25 } else { 0x24 }),
        Abort::Instruction { far } => (far, false, if same_el { 0x21 } else { 0x20 }),
    };
    assert_eq!(ec, expected_ec);
    assert_eq!(inj.far_el1, far);
    assert_eq!(inj.esr_el1 & 0x3f, 0x10, "not a synchronous external abort");
    assert!(bit(inj.esr_el1, 25), "IL");
    assert_eq!(bit(inj.esr_el1, 6), write, "WnR");
}
