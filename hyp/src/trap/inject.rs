//! Injecting a synchronous external abort into the host at EL1, and skipping an instruction that
//! Portcullis has emulated: the register values to write, computed from the values read.
//!
//! An injected abort looks to the host exactly as if the access had failed on the bus: the
//! exception is taken to EL1 (AArch64) through `VBAR_EL1`, with ESR_EL1 saying "synchronous
//! external abort" (DFSC / IFSC 0x10) and FAR_EL1 the faulting virtual address. Linux reports it
//! (and kills the task or oopses) instead of Portcullis crashing on the host's behalf.

use core::fmt;

use tock_registers::LocalRegisterCopy;
use tock_registers::register_bitfields;

use super::esr::InstructionLength;

register_bitfields! [u64,
    /// SPSR_EL2 / SPSR_EL1 as saved from AArch64 state (the bits used here).
    SPSR [
        /// Condition flags N, Z, C, V (same place for an AArch32 source).
        NZCV OFFSET(28) NUMBITS(4) [],
        /// Data Independent Timing (AArch64 layout).
        DIT OFFSET(24) NUMBITS(1) [],
        /// Privileged Access Never (same place for an AArch32 source).
        PAN OFFSET(22) NUMBITS(1) [],
        /// Speculative Store Bypass Safe (AArch64 layout).
        SSBS OFFSET(12) NUMBITS(1) [],
        D OFFSET(9) NUMBITS(1) [],
        A OFFSET(8) NUMBITS(1) [],
        I OFFSET(7) NUMBITS(1) [],
        F OFFSET(6) NUMBITS(1) [],
        /// M[4]: the exception was taken from AArch32.
        NRW OFFSET(4) NUMBITS(1) [],
        /// M[3:0]: exception level and stack pointer (AArch64), or the low bits of the AArch32
        /// mode.
        M OFFSET(0) NUMBITS(4) [
            EL0t = 0b0000,
            EL1t = 0b0100,
            EL1h = 0b0101
        ]
    ],

    /// SCTLR_EL1 (the bits that decide PSTATE on exception entry).
    SCTLR_EL1 [
        /// Set Privileged Access Never on taking an exception to EL1 when 0 (FEAT_PAN; RES1
        /// without it).
        SPAN OFFSET(23) NUMBITS(1) [],
        /// Default PSTATE.SSBS on taking an exception to EL1 (FEAT_SSBS; RES0 without it).
        DSSBS OFFSET(44) NUMBITS(1) []
    ],

    /// ESR_EL1 as written for an injected abort.
    ESR_EL1 [
        EC OFFSET(26) NUMBITS(6) [
            InstructionAbortLowerEl = 0x20,
            InstructionAbortSameEl = 0x21,
            DataAbortLowerEl = 0x24,
            DataAbortSameEl = 0x25
        ],
        IL OFFSET(25) NUMBITS(1) [],
        /// Data aborts: Write not Read.
        WNR OFFSET(6) NUMBITS(1) [],
        /// DFSC / IFSC.
        FSC OFFSET(0) NUMBITS(6) [
            SynchronousExternalAbort = 0x10
        ]
    ]
];

/// The host registers an injection reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestState {
    /// The faulting instruction's address.
    pub elr_el2: u64,
    /// The host's PSTATE when it faulted.
    pub spsr_el2: u64,
    pub vbar_el1: u64,
    /// Decides PAN and SSBS on entry to the host's handler, as the hardware would.
    pub sctlr_el1: u64,
}

/// The abort to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abort {
    /// A load or store failed.
    Data { far: u64, write: bool },
    /// An instruction fetch failed.
    Instruction { far: u64 },
}

/// The values the arch layer writes to make the host take the abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injection {
    pub esr_el1: u64,
    pub far_el1: u64,
    /// The faulting instruction, where the host's handler returns to (or not).
    pub elr_el1: u64,
    /// The host's PSTATE at the fault.
    pub spsr_el1: u64,
    /// The host's synchronous exception vector, where the host resumes.
    pub elr_el2: u64,
    /// PSTATE of the host's handler: EL1h with D, A, I, F masked.
    pub spsr_el2: u64,
}

/// Where the host was when it faulted, which picks the vector (ARM ARM D1.3.1 "Exception
/// vectors": offsets from VBAR_EL1 of the four groups of four vectors).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// EL1 using SP_EL0 (EL1t): "current EL with SP0", offset 0x000.
    El1Sp0,
    /// EL1 using SP_EL1 (EL1h): "current EL with SPx", offset 0x200.
    El1SpX,
    /// EL0 in AArch64: "lower EL using AArch64", offset 0x400.
    El0Aarch64,
    /// EL0 in AArch32: "lower EL using AArch32", offset 0x600.
    El0Aarch32,
}

impl Source {
    /// Where the host was, from its saved PSTATE; `None` for anything but EL0 or EL1 (an AArch32
    /// mode other than User cannot happen with `HCR_EL2.RW` = 1).
    pub fn from_spsr(spsr: u64) -> Option<Self> {
        let spsr = LocalRegisterCopy::<u64, SPSR::Register>::new(spsr);
        if spsr.is_set(SPSR::NRW) {
            // AArch32 User mode is M[4:0] = 0b10000.
            return (spsr.read(SPSR::M) == 0).then_some(Self::El0Aarch32);
        }
        match spsr.read_as_enum(SPSR::M) {
            Some(SPSR::M::Value::EL0t) => Some(Self::El0Aarch64),
            Some(SPSR::M::Value::EL1t) => Some(Self::El1Sp0),
            Some(SPSR::M::Value::EL1h) => Some(Self::El1SpX),
            _ => None,
        }
    }

    /// The offset of the synchronous exception vector from VBAR_EL1.
    pub const fn vector_offset(self) -> u64 {
        match self {
            Self::El1Sp0 => 0x000,
            Self::El1SpX => 0x200,
            Self::El0Aarch64 => 0x400,
            Self::El0Aarch32 => 0x600,
        }
    }

    const fn same_el(self) -> bool {
        matches!(self, Self::El1Sp0 | Self::El1SpX)
    }
}

/// Why an abort cannot be injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InjectError {
    /// SPSR_EL2 does not describe the host at EL0 or EL1: the exception was not the host's.
    NotFromHost { spsr_el2: u64 },
}

impl fmt::Display for InjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFromHost { spsr_el2 } => {
                write!(
                    f,
                    "cannot inject an abort: SPSR_EL2 {spsr_el2:#x} is not EL0 or EL1"
                )
            }
        }
    }
}

/// The register values that inject a synchronous external abort for `abort` into the host.
///
/// PSTATE of the handler follows the exception-entry rules, kept to what Portcullis can know:
/// EL1h, D A I F set, NZCV kept; PAN set if SCTLR_EL1.SPAN = 0, else kept; SSBS = SCTLR_EL1.DSSBS;
/// DIT kept (AArch64 source). SS, IL, UAO, BTYPE cleared. Not modelled: FEAT_MTE's TCO and
/// FEAT_NMI's ALLINT (both stay 0), FEAT_GCS / FEAT_EBEP state.
pub fn inject_external_abort(state: &GuestState, abort: &Abort) -> Result<Injection, InjectError> {
    let source = Source::from_spsr(state.spsr_el2).ok_or(InjectError::NotFromHost {
        spsr_el2: state.spsr_el2,
    })?;
    let (ec, far, write) = match *abort {
        Abort::Data { far, write } => {
            let ec = if source.same_el() {
                ESR_EL1::EC::DataAbortSameEl
            } else {
                ESR_EL1::EC::DataAbortLowerEl
            };
            (ec, far, write)
        }
        Abort::Instruction { far } => {
            let ec = if source.same_el() {
                ESR_EL1::EC::InstructionAbortSameEl
            } else {
                ESR_EL1::EC::InstructionAbortLowerEl
            };
            (ec, far, false)
        }
    };
    let mut esr = LocalRegisterCopy::<u64, ESR_EL1::Register>::new(0);
    // IL is 1 for instruction aborts and for data aborts without a valid syndrome (ISV = 0).
    esr.write(
        ec + ESR_EL1::IL::SET
            + ESR_EL1::WNR.val(u64::from(write))
            + ESR_EL1::FSC::SynchronousExternalAbort,
    );

    let old = LocalRegisterCopy::<u64, SPSR::Register>::new(state.spsr_el2);
    let sctlr = LocalRegisterCopy::<u64, SCTLR_EL1::Register>::new(state.sctlr_el1);
    let pan = !sctlr.is_set(SCTLR_EL1::SPAN) || old.is_set(SPSR::PAN);
    let dit = source != Source::El0Aarch32 && old.is_set(SPSR::DIT);
    let mut spsr = LocalRegisterCopy::<u64, SPSR::Register>::new(0);
    spsr.write(
        SPSR::NZCV.val(old.read(SPSR::NZCV))
            + SPSR::DIT.val(u64::from(dit))
            + SPSR::PAN.val(u64::from(pan))
            + SPSR::SSBS.val(sctlr.read(SCTLR_EL1::DSSBS))
            + SPSR::D::SET
            + SPSR::A::SET
            + SPSR::I::SET
            + SPSR::F::SET
            + SPSR::M::EL1h,
    );

    // VBAR_EL1 bits [10:0] are RES0.
    let vbar = state.vbar_el1 & !0x7ff;
    Ok(Injection {
        esr_el1: esr.get(),
        far_el1: far,
        elr_el1: state.elr_el2,
        spsr_el1: state.spsr_el2,
        elr_el2: vbar.wrapping_add(source.vector_offset()),
        spsr_el2: spsr.get(),
    })
}

/// ELR_EL2 past the trapped instruction, for traps whose preferred return address is the
/// instruction itself: a trapped SMC (`HCR_EL2.TSC`) and an emulated MMIO access. (HVC already
/// returns to the next instruction.) `length` is ESR_EL2.IL: 4 bytes, or 2 for a 16-bit T32
/// instruction from AArch32 EL0.
pub const fn skip_instruction(elr_el2: u64, length: InstructionLength) -> u64 {
    elr_el2.wrapping_add(length.bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const VBAR: u64 = 0xffff_8000_1001_0800;
    /// SCTLR_EL1 with SPAN = 1 (PAN left alone) and DSSBS = 0.
    const SCTLR_SPAN: u64 = 1 << 23;

    #[test]
    fn data_abort_from_el1h() {
        // The host kernel's `str w1, [x0], #4` into the SMMU frame (ISV = 0), at EL1h with
        // Z and C set and interrupts masked: SPSR = NZCV 0b0110, DAIF 0b1111, M = EL1h = 0x6000_03c5.
        let state = GuestState {
            elr_el2: 0xffff_8000_0810_0404,
            spsr_el2: 0x6000_03c5,
            vbar_el1: VBAR,
            sctlr_el1: SCTLR_SPAN,
        };
        let injection = inject_external_abort(
            &state,
            &Abort::Data {
                far: 0xffff_0000_0905_0044,
                write: true,
            },
        )
        .expect("from EL1");
        // ESR_EL1: EC 0x25 (data abort, same EL) << 26 = 0x9400_0000, IL = 1 (0x0200_0000),
        // WnR = 1 (0x40), DFSC 0x10: 0x9600_0050.
        assert_eq!(injection.esr_el1, 0x9600_0050);
        assert_eq!(injection.far_el1, 0xffff_0000_0905_0044);
        assert_eq!(injection.elr_el1, 0xffff_8000_0810_0404);
        assert_eq!(injection.spsr_el1, 0x6000_03c5);
        // Current EL with SPx: VBAR + 0x200 (VBAR's low 11 bits are RES0).
        assert_eq!(injection.elr_el2, 0xffff_8000_1001_0a00);
        assert_eq!(injection.spsr_el2, 0x6000_03c5);
    }

    #[test]
    fn instruction_abort_from_el0() {
        // A user task at EL0t (SPSR 0x8000_0000: N set, nothing masked) fetching from a page
        // that faults; SCTLR_EL1.SPAN = 0 so PAN gets set, DSSBS = 1 so SSBS gets set.
        let state = GuestState {
            elr_el2: 0x0000_aaaa_0000_1000,
            spsr_el2: 0x8000_0000,
            vbar_el1: VBAR,
            sctlr_el1: 1 << 44,
        };
        let injection = inject_external_abort(
            &state,
            &Abort::Instruction {
                far: 0x0000_aaaa_0000_1000,
            },
        )
        .expect("from EL0");
        // EC 0x20 (instruction abort, lower EL) << 26 = 0x8000_0000, IL, IFSC 0x10.
        assert_eq!(injection.esr_el1, 0x8200_0010);
        // Lower EL using AArch64: VBAR + 0x400.
        assert_eq!(injection.elr_el2, 0xffff_8000_1001_0c00);
        // N kept, PAN (bit 22), SSBS (bit 12), DAIF (0x3c0), EL1h (0b0101).
        assert_eq!(injection.spsr_el2, 0x8040_13c5);
    }

    #[test]
    fn data_read_from_el1t_and_aarch32_el0() {
        let el1t = GuestState {
            elr_el2: 0x1000,
            spsr_el2: 0x4,
            vbar_el1: VBAR,
            sctlr_el1: SCTLR_SPAN,
        };
        let injection = inject_external_abort(
            &el1t,
            &Abort::Data {
                far: 0x2000,
                write: false,
            },
        )
        .expect("EL1t");
        assert_eq!(injection.esr_el1, 0x9600_0010, "same EL, read: WnR clear");
        assert_eq!(
            injection.elr_el2, 0xffff_8000_1001_0800,
            "current EL with SP0: VBAR + 0"
        );

        // AArch32 User (M[4:0] = 0b10000): a lower EL, vector VBAR + 0x600.
        let usr32 = GuestState {
            spsr_el2: 0x10,
            ..el1t
        };
        let injection = inject_external_abort(
            &usr32,
            &Abort::Data {
                far: 0x2000,
                write: true,
            },
        )
        .expect("EL0");
        assert_eq!(injection.esr_el1, 0x9200_0050);
        assert_eq!(injection.elr_el2, 0xffff_8000_1001_0e00);
        assert_eq!(injection.spsr_el1, 0x10);
    }

    #[test]
    fn not_from_host() {
        for spsr in [
            0x9, 0x8, 0xd, 0x13, /* AArch32 SVC */
            0x1a, /* Hyp */
        ] {
            let state = GuestState {
                elr_el2: 0,
                spsr_el2: spsr,
                vbar_el1: VBAR,
                sctlr_el1: 0,
            };
            assert_eq!(
                inject_external_abort(&state, &Abort::Instruction { far: 0 }),
                Err(InjectError::NotFromHost { spsr_el2: spsr })
            );
        }
    }

    #[test]
    fn skipping() {
        assert_eq!(
            skip_instruction(0x4008_0000, InstructionLength::Bits32),
            0x4008_0004
        );
        assert_eq!(skip_instruction(0x8000, InstructionLength::Bits16), 0x8002);
        assert_eq!(skip_instruction(u64::MAX - 1, InstructionLength::Bits32), 2);
    }

    proptest! {
        #[test]
        fn never_panics(elr in any::<u64>(), spsr in any::<u64>(), vbar in any::<u64>(), sctlr in any::<u64>(), far in any::<u64>(), write in any::<bool>(), data in any::<bool>()) {
            let state = GuestState { elr_el2: elr, spsr_el2: spsr, vbar_el1: vbar, sctlr_el1: sctlr };
            let abort = if data { Abort::Data { far, write } } else { Abort::Instruction { far } };
            match inject_external_abort(&state, &abort) {
                Ok(injection) => {
                    prop_assert_eq!(injection.spsr_el2 & 0x3df, 0x3c5);
                    prop_assert_eq!(injection.elr_el1, elr);
                    prop_assert_eq!((injection.elr_el2.wrapping_sub(vbar & !0x7ff)) & !0x600, 0);
                }
                Err(_) => prop_assert!(Source::from_spsr(spsr).is_none()),
            }
        }
    }
}
