//! Decoding `ESR_EL2`, the syndrome of a synchronous exception taken to EL2 (ARM ARM D24.2.43,
//! "ESR_EL2, Exception Syndrome Register (EL2)"), and the faulting IPA from `HPFAR_EL2`.
//!
//! Every field is decoded from a raw `u64` the arch layer read; nothing here panics on any value.

use platform::addr::Ipa;
use tock_registers::LocalRegisterCopy;
use tock_registers::register_bitfields;

register_bitfields! [u64,
    /// The parts of ESR_ELx common to every exception class.
    pub ESR [
        /// Exception Class.
        EC OFFSET(26) NUMBITS(6) [
            Unknown = 0x00,
            Wfx = 0x01,
            Hvc64 = 0x16,
            Smc64 = 0x17,
            SysReg = 0x18,
            InstructionAbortLowerEl = 0x20,
            InstructionAbortSameEl = 0x21,
            DataAbortLowerEl = 0x24,
            DataAbortSameEl = 0x25
        ],
        /// Instruction Length: 1 for a 32-bit instruction, 0 for a 16-bit T32 instruction.
        IL OFFSET(25) NUMBITS(1) [],
        /// Instruction Specific Syndrome.
        ISS OFFSET(0) NUMBITS(25) []
    ],

    /// ISS of a Data Abort (EC 0x24 / 0x25).
    pub ISS_DATA_ABORT [
        /// Instruction Syndrome Valid: SAS, SSE, SRT, SF and AR hold a valid syndrome.
        ISV OFFSET(24) NUMBITS(1) [],
        /// Syndrome Access Size.
        SAS OFFSET(22) NUMBITS(2) [
            Byte = 0b00,
            Halfword = 0b01,
            Word = 0b10,
            Doubleword = 0b11
        ],
        /// Syndrome Sign Extend: the load sign-extends the value.
        SSE OFFSET(21) NUMBITS(1) [],
        /// Syndrome Register Transfer: the register number Rt (31 = XZR / WZR).
        SRT OFFSET(16) NUMBITS(5) [],
        /// Sixty-Four bit general-purpose register transfer (X rather than W).
        SF OFFSET(15) NUMBITS(1) [],
        /// Acquire/Release semantics.
        AR OFFSET(14) NUMBITS(1) [],
        /// FAR not Valid.
        FNV OFFSET(10) NUMBITS(1) [],
        /// External abort type (IMPLEMENTATION DEFINED classification).
        EA OFFSET(9) NUMBITS(1) [],
        /// Cache Maintenance: the fault came from a cache maintenance or address translation
        /// instruction.
        CM OFFSET(8) NUMBITS(1) [],
        /// The fault was on a stage-2 translation of a stage-1 translation table walk.
        S1PTW OFFSET(7) NUMBITS(1) [],
        /// Write not Read.
        WNR OFFSET(6) NUMBITS(1) [],
        /// Data Fault Status Code.
        DFSC OFFSET(0) NUMBITS(6) []
    ],

    /// ISS of an Instruction Abort (EC 0x20 / 0x21).
    pub ISS_INSTRUCTION_ABORT [
        FNV OFFSET(10) NUMBITS(1) [],
        EA OFFSET(9) NUMBITS(1) [],
        S1PTW OFFSET(7) NUMBITS(1) [],
        /// Instruction Fault Status Code.
        IFSC OFFSET(0) NUMBITS(6) []
    ],

    /// ISS of HVC and SMC (EC 0x16 / 0x17).
    pub ISS_CALL [
        IMM16 OFFSET(0) NUMBITS(16) []
    ],

    /// ISS of a trapped MSR, MRS or System instruction (EC 0x18).
    pub ISS_SYSREG [
        OP0 OFFSET(20) NUMBITS(2) [],
        OP2 OFFSET(17) NUMBITS(3) [],
        OP1 OFFSET(14) NUMBITS(3) [],
        CRN OFFSET(10) NUMBITS(4) [],
        RT OFFSET(5) NUMBITS(5) [],
        CRM OFFSET(1) NUMBITS(4) [],
        /// 1 for a read (MRS), 0 for a write (MSR).
        DIRECTION OFFSET(0) NUMBITS(1) [
            Write = 0,
            Read = 1
        ]
    ],

    /// ISS of a trapped WFI / WFE / WFIT / WFET (EC 0x01).
    pub ISS_WFX [
        TI OFFSET(0) NUMBITS(2) [
            Wfi = 0b00,
            Wfe = 0b01,
            Wfit = 0b10,
            Wfet = 0b11
        ]
    ],

    /// HPFAR_EL2, Hypervisor IPA Fault Address Register.
    pub HPFAR_EL2 [
        /// Faulting IPA bits [51:12] (bits [47:12] without FEAT_LPA; the rest RES0).
        FIPA OFFSET(4) NUMBITS(40) []
    ]
];

/// A decoded `ESR_EL2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Syndrome {
    /// The length of the trapped instruction.
    pub instruction_length: InstructionLength,
    pub exception: Exception,
}

/// The length of the instruction that caused an exception (ESR.IL).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InstructionLength {
    /// A 16-bit T32 instruction (only possible from AArch32 EL0).
    Bits16,
    /// A 32-bit instruction, and the value for exceptions IL does not apply to.
    Bits32,
}

impl InstructionLength {
    pub const fn bytes(self) -> u64 {
        match self {
            Self::Bits16 => 2,
            Self::Bits32 => 4,
        }
    }
}

/// What the exception was, by exception class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exception {
    /// A data abort from EL1 or EL0 (EC 0x24): a stage-2 fault on a host load or store.
    DataAbort(DataAbort),
    /// An instruction abort from EL1 or EL0 (EC 0x20): a stage-2 fault on a host fetch.
    InstructionAbort(InstructionAbort),
    /// HVC from AArch64 (EC 0x16).
    Hvc64 { imm16: u16 },
    /// SMC from AArch64 trapped by `HCR_EL2.TSC` (EC 0x17).
    Smc64 { imm16: u16 },
    /// A trapped MSR, MRS or System instruction (EC 0x18).
    SysReg(SysRegAccess),
    /// A trapped WFI / WFE / WFIT / WFET (EC 0x01).
    Wfx(Wfx),
    /// Any other exception class, with its raw ISS.
    Other { ec: u8, iss: u32 },
}

/// The syndrome of a data abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataAbort {
    /// The load/store syndrome, present when ISV = 1.
    pub access: Option<AccessSyndrome>,
    /// Write not Read.
    pub write: bool,
    /// The abort happened on the stage-2 translation of a stage-1 table walk.
    pub s1ptw: bool,
    /// FAR not valid.
    pub far_not_valid: bool,
    /// External abort type bit (EA).
    pub external_abort_type: bool,
    /// Caused by a cache maintenance or address translation instruction.
    pub cache_maintenance: bool,
    pub fault: FaultStatus,
}

/// The instruction syndrome of a data abort with ISV = 1: enough to emulate the access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessSyndrome {
    pub size: AccessSize,
    /// The load sign-extends (SSE).
    pub sign_extend: bool,
    /// The transfer register Rt, 0..=30, or 31 for XZR / WZR (SRT).
    pub register: u8,
    /// The register is an X register rather than a W register (SF).
    pub sixty_four: bool,
    /// Acquire / release semantics (AR).
    pub acquire_release: bool,
}

/// The size of a load or store (SAS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessSize {
    Byte,
    Halfword,
    Word,
    Doubleword,
}

impl AccessSize {
    pub const fn bytes(self) -> u8 {
        match self {
            Self::Byte => 1,
            Self::Halfword => 2,
            Self::Word => 4,
            Self::Doubleword => 8,
        }
    }
}

/// The syndrome of an instruction abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstructionAbort {
    pub s1ptw: bool,
    pub far_not_valid: bool,
    pub external_abort_type: bool,
    pub fault: FaultStatus,
}

/// A data or instruction fault status code (DFSC / IFSC), 4 KiB-granule view. Levels are -1..=3
/// (-1 only with FEAT_LPA2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultStatus {
    AddressSize {
        level: i8,
    },
    Translation {
        level: i8,
    },
    AccessFlag {
        level: i8,
    },
    Permission {
        level: i8,
    },
    /// Synchronous External abort, not on a translation table walk.
    SyncExternal,
    /// Synchronous External abort on a translation table walk or hardware update.
    SyncExternalOnWalk {
        level: i8,
    },
    /// Synchronous parity or ECC error, not on a translation table walk.
    SyncParity,
    /// Synchronous parity or ECC error on a translation table walk or hardware update.
    SyncParityOnWalk {
        level: i8,
    },
    TagCheck,
    Alignment,
    /// Granule Protection Fault (FEAT_RME), with the walk level if it was on a table walk.
    GranuleProtection {
        level: Option<i8>,
    },
    TlbConflict,
    UnsupportedAtomicUpdate,
    /// IMPLEMENTATION DEFINED fault (lockdown, unsupported exclusive or atomic access).
    ImplementationDefined(u8),
    /// A code this decoder does not know (or a reserved one).
    Other(u8),
}

impl FaultStatus {
    /// Decodes a 6-bit DFSC / IFSC (bits above 5 are ignored).
    pub const fn decode(code: u8) -> Self {
        let code = code & 0x3f;
        let level = (code & 0b11) as i8;
        match code {
            0x00..=0x03 => Self::AddressSize { level },
            0x04..=0x07 => Self::Translation { level },
            0x08..=0x0b => Self::AccessFlag { level },
            0x0c..=0x0f => Self::Permission { level },
            0x10 => Self::SyncExternal,
            0x11 => Self::TagCheck,
            0x13 => Self::SyncExternalOnWalk { level: -1 },
            0x14..=0x17 => Self::SyncExternalOnWalk { level },
            0x18 => Self::SyncParity,
            0x1b => Self::SyncParityOnWalk { level: -1 },
            0x1c..=0x1f => Self::SyncParityOnWalk { level },
            0x21 => Self::Alignment,
            0x23 => Self::GranuleProtection { level: Some(-1) },
            0x24..=0x27 => Self::GranuleProtection { level: Some(level) },
            0x28 => Self::GranuleProtection { level: None },
            0x29 => Self::AddressSize { level: -1 },
            0x2b => Self::Translation { level: -1 },
            0x30 => Self::TlbConflict,
            0x31 => Self::UnsupportedAtomicUpdate,
            0x34 | 0x35 => Self::ImplementationDefined(code),
            _ => Self::Other(code),
        }
    }

    /// Whether the fault is a stage-2 translation, access flag, permission or address size fault
    /// (`HPFAR_EL2` holds the IPA for all but a permission fault outside a stage-1 walk: see
    /// [`ipa_source`]).
    pub const fn is_stage2_translation_kind(self) -> bool {
        matches!(
            self,
            Self::Translation { .. }
                | Self::AccessFlag { .. }
                | Self::Permission { .. }
                | Self::AddressSize { .. }
        )
    }
}

/// A trapped system register access or System instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SysRegAccess {
    pub op0: u8,
    pub op1: u8,
    pub crn: u8,
    pub crm: u8,
    pub op2: u8,
    /// The transfer register, 0..=30, or 31 for XZR.
    pub rt: u8,
    /// MRS (read into Rt) rather than MSR (write from Rt).
    pub read: bool,
}

/// Which wait instruction trapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wfx {
    Wfi,
    Wfe,
    Wfit,
    Wfet,
}

/// Whether `esr` is an instruction abort from a lower Exception level (EC 0x20): what
/// [`decode`] makes an [`Exception::InstructionAbort`], told from the class alone (a check every
/// trap makes for the kexec event, without decoding the rest).
pub fn is_instruction_abort(esr: u64) -> bool {
    LocalRegisterCopy::<u64, ESR::Register>::new(esr).matches_all(ESR::EC::InstructionAbortLowerEl)
}

/// Decodes a raw `ESR_EL2` value. Total: every value yields some [`Syndrome`].
pub fn decode(esr: u64) -> Syndrome {
    let esr_reg = LocalRegisterCopy::<u64, ESR::Register>::new(esr);
    let instruction_length = if esr_reg.is_set(ESR::IL) {
        InstructionLength::Bits32
    } else {
        InstructionLength::Bits16
    };
    let ec = esr_reg.read(ESR::EC);
    let iss = esr_reg.read(ESR::ISS);
    let exception = match esr_reg.read_as_enum(ESR::EC) {
        Some(ESR::EC::Value::DataAbortLowerEl) => Exception::DataAbort(decode_data_abort(iss)),
        Some(ESR::EC::Value::InstructionAbortLowerEl) => {
            Exception::InstructionAbort(decode_instruction_abort(iss))
        }
        Some(ESR::EC::Value::Hvc64) => Exception::Hvc64 { imm16: imm16(iss) },
        Some(ESR::EC::Value::Smc64) => Exception::Smc64 { imm16: imm16(iss) },
        Some(ESR::EC::Value::SysReg) => Exception::SysReg(decode_sysreg(iss)),
        Some(ESR::EC::Value::Wfx) => Exception::Wfx(decode_wfx(iss)),
        _ => Exception::Other {
            ec: ec as u8,
            iss: iss as u32,
        },
    };
    Syndrome {
        instruction_length,
        exception,
    }
}

/// The faulting IPA of a stage-2 abort: page from `HPFAR_EL2.FIPA` (IPA bits [51:12] in HPFAR
/// bits [43:4]), offset within the page from `FAR_EL2`.
///
/// Valid only where [`ipa_source`] says [`IpaSource::Hpfar`] and, for the low 12 bits, when
/// FnV = 0.
pub fn fault_ipa(hpfar_el2: u64, far_el2: u64) -> Ipa {
    let hpfar = LocalRegisterCopy::<u64, HPFAR_EL2::Register>::new(hpfar_el2);
    Ipa((hpfar.read(HPFAR_EL2::FIPA) << 12) | (far_el2 & 0xfff))
}

/// Where the faulting IPA of a stage-2 abort can be had from.
///
/// `HPFAR_EL2` is valid for stage-2 translation, access flag and address size faults, and for
/// any stage-2 fault on a stage-1 table walk (S1PTW = 1). For a stage-2 *permission* fault on the
/// access itself, the architecture does not promise it (the Arm ARM leaves it UNKNOWN there, and
/// some cores' errata make it so even where it is meant to be valid): the IPA is found again by
/// translating `FAR_EL2` through the host's stage 1 (`AT S1E1R`), as the hardware did for the
/// access. If that translation fails (the host changed its tables meanwhile), the instruction is
/// retried rather than guessed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpaSource {
    /// `HPFAR_EL2.FIPA` with the page offset from `FAR_EL2` ([`fault_ipa`]).
    Hpfar,
    /// Translate `FAR_EL2` at stage 1 and take the IPA from `PAR_EL1` ([`ipa_from_par`]).
    TranslateFar,
    /// Neither register says (FAR not valid, or a fault kind that sets no address): the access
    /// cannot be emulated or attributed.
    Unknown,
}

/// Where the IPA of a stage-2 abort with this syndrome comes from (see [`IpaSource`]).
pub const fn ipa_source(s1ptw: bool, far_not_valid: bool, fault: FaultStatus) -> IpaSource {
    match fault {
        FaultStatus::Translation { .. }
        | FaultStatus::AccessFlag { .. }
        | FaultStatus::AddressSize { .. } => IpaSource::Hpfar,
        FaultStatus::Permission { .. } if s1ptw => IpaSource::Hpfar,
        FaultStatus::Permission { .. } if far_not_valid => IpaSource::Unknown,
        FaultStatus::Permission { .. } => IpaSource::TranslateFar,
        _ => IpaSource::Unknown,
    }
}

register_bitfields! [u64,
    /// PAR_EL1 after a successful address translation instruction (F = 0), 64-bit format.
    PAR_EL1 [
        /// The output address, bits [51:12] (bits [51:48] with 52-bit addresses).
        PA OFFSET(12) NUMBITS(40) [],
        /// 1 = the translation aborted; the other fields describe the fault.
        F OFFSET(0) NUMBITS(1) []
    ]
];

/// The IPA an `AT S1E1*` of `far_el2` found, from the `PAR_EL1` it left, with the page offset of
/// `FAR_EL2`; `None` if the translation aborted.
pub fn ipa_from_par(par_el1: u64, far_el2: u64) -> Option<Ipa> {
    let par = LocalRegisterCopy::<u64, PAR_EL1::Register>::new(par_el1);
    if par.is_set(PAR_EL1::F) {
        return None;
    }
    Some(Ipa((par.read(PAR_EL1::PA) << 12) | (far_el2 & 0xfff)))
}

fn decode_data_abort(iss: u64) -> DataAbort {
    let iss = LocalRegisterCopy::<u64, ISS_DATA_ABORT::Register>::new(iss);
    let access = iss.is_set(ISS_DATA_ABORT::ISV).then(|| AccessSyndrome {
        size: match iss.read_as_enum(ISS_DATA_ABORT::SAS) {
            Some(ISS_DATA_ABORT::SAS::Value::Byte) => AccessSize::Byte,
            Some(ISS_DATA_ABORT::SAS::Value::Halfword) => AccessSize::Halfword,
            Some(ISS_DATA_ABORT::SAS::Value::Word) => AccessSize::Word,
            // Two bits, four values: only Doubleword is left.
            _ => AccessSize::Doubleword,
        },
        sign_extend: iss.is_set(ISS_DATA_ABORT::SSE),
        register: iss.read(ISS_DATA_ABORT::SRT) as u8,
        sixty_four: iss.is_set(ISS_DATA_ABORT::SF),
        acquire_release: iss.is_set(ISS_DATA_ABORT::AR),
    });
    DataAbort {
        access,
        write: iss.is_set(ISS_DATA_ABORT::WNR),
        s1ptw: iss.is_set(ISS_DATA_ABORT::S1PTW),
        far_not_valid: iss.is_set(ISS_DATA_ABORT::FNV),
        external_abort_type: iss.is_set(ISS_DATA_ABORT::EA),
        cache_maintenance: iss.is_set(ISS_DATA_ABORT::CM),
        fault: FaultStatus::decode(iss.read(ISS_DATA_ABORT::DFSC) as u8),
    }
}

fn decode_instruction_abort(iss: u64) -> InstructionAbort {
    let iss = LocalRegisterCopy::<u64, ISS_INSTRUCTION_ABORT::Register>::new(iss);
    InstructionAbort {
        s1ptw: iss.is_set(ISS_INSTRUCTION_ABORT::S1PTW),
        far_not_valid: iss.is_set(ISS_INSTRUCTION_ABORT::FNV),
        external_abort_type: iss.is_set(ISS_INSTRUCTION_ABORT::EA),
        fault: FaultStatus::decode(iss.read(ISS_INSTRUCTION_ABORT::IFSC) as u8),
    }
}

fn imm16(iss: u64) -> u16 {
    LocalRegisterCopy::<u64, ISS_CALL::Register>::new(iss).read(ISS_CALL::IMM16) as u16
}

fn decode_sysreg(iss: u64) -> SysRegAccess {
    let iss = LocalRegisterCopy::<u64, ISS_SYSREG::Register>::new(iss);
    SysRegAccess {
        op0: iss.read(ISS_SYSREG::OP0) as u8,
        op1: iss.read(ISS_SYSREG::OP1) as u8,
        crn: iss.read(ISS_SYSREG::CRN) as u8,
        crm: iss.read(ISS_SYSREG::CRM) as u8,
        op2: iss.read(ISS_SYSREG::OP2) as u8,
        rt: iss.read(ISS_SYSREG::RT) as u8,
        read: iss.matches_all(ISS_SYSREG::DIRECTION::Read),
    }
}

fn decode_wfx(iss: u64) -> Wfx {
    match LocalRegisterCopy::<u64, ISS_WFX::Register>::new(iss).read_as_enum(ISS_WFX::TI) {
        Some(ISS_WFX::TI::Value::Wfi) => Wfx::Wfi,
        Some(ISS_WFX::TI::Value::Wfe) => Wfx::Wfe,
        Some(ISS_WFX::TI::Value::Wfit) => Wfx::Wfit,
        _ => Wfx::Wfet,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// EC in [31:26], IL in [25], ISS in [24:0].
    const fn esr(ec: u64, il: bool, iss: u64) -> u64 {
        (ec << 26) | ((il as u64) << 25) | iss
    }

    #[test]
    fn ldr_w1_from_x0_with_syndrome() {
        // `ldr w1, [x0]` hitting an unmapped stage-2 page (the emulated SMMU frame):
        //   EC = 0x24 (data abort from a lower EL), IL = 1,
        //   ISV = 1 (bit 24), SAS = 0b10 word ([23:22]), SSE = 0, SRT = 1 ([20:16]), SF = 0 (W reg),
        //   AR = 0, FnV = 0, EA = 0, CM = 0, S1PTW = 0, WnR = 0 (read),
        //   DFSC = 0b000111 translation fault, level 3.
        let iss = (1 << 24) | (0b10 << 22) | (1 << 16) | 0x07;
        let raw = esr(0x24, true, iss);
        assert_eq!(raw, 0x9381_0007);
        let syndrome = decode(raw);
        assert_eq!(syndrome.instruction_length, InstructionLength::Bits32);
        assert_eq!(
            syndrome.exception,
            Exception::DataAbort(DataAbort {
                access: Some(AccessSyndrome {
                    size: AccessSize::Word,
                    sign_extend: false,
                    register: 1,
                    sixty_four: false,
                    acquire_release: false,
                }),
                write: false,
                s1ptw: false,
                far_not_valid: false,
                external_abort_type: false,
                cache_maintenance: false,
                fault: FaultStatus::Translation { level: 3 },
            })
        );
    }

    #[test]
    fn post_index_store_has_no_syndrome() {
        // `str x2, [x0], #8` (writeback) into the emulated frame: the architecture gives no
        // instruction syndrome for writeback forms, so ISV = 0 and SAS/SSE/SRT/SF/AR are RES0.
        //   EC = 0x24, IL = 1, ISV = 0, WnR = 1 (bit 6), DFSC = 0x06 translation fault level 2.
        let raw = esr(0x24, true, (1 << 6) | 0x06);
        let Exception::DataAbort(abort) = decode(raw).exception else {
            panic!("not a data abort");
        };
        assert_eq!(abort.access, None);
        assert!(abort.write);
        assert_eq!(abort.fault, FaultStatus::Translation { level: 2 });
    }

    #[test]
    fn permission_fault_on_stage1_walk() {
        // A stage-1 walk reading a table in a read-protected page: S1PTW = 1 (bit 7),
        // WnR = 0, DFSC = 0b001111 permission fault, level 3.
        let Exception::DataAbort(abort) = decode(esr(0x24, true, (1 << 7) | 0x0f)).exception else {
            panic!("not a data abort");
        };
        assert!(abort.s1ptw);
        assert_eq!(abort.fault, FaultStatus::Permission { level: 3 });
        assert!(abort.fault.is_stage2_translation_kind());
    }

    #[test]
    fn instruction_abort_permission_fault() {
        // The kexec trap: a fetch from the execute-never crash region. EC = 0x20 (instruction
        // abort from a lower EL), IL = 1, IFSC = 0b001110 permission fault level 2 (a block).
        let syndrome = decode(esr(0x20, true, 0x0e));
        assert_eq!(
            syndrome.exception,
            Exception::InstructionAbort(InstructionAbort {
                s1ptw: false,
                far_not_valid: false,
                external_abort_type: false,
                fault: FaultStatus::Permission { level: 2 },
            })
        );
    }

    #[test]
    fn smc_and_hvc() {
        // `smc #0`: EC = 0x17, IL = 1, ISS = imm16 = 0 -> 0x5e00_0000.
        assert_eq!(esr(0x17, true, 0), 0x5e00_0000);
        assert_eq!(decode(0x5e00_0000).exception, Exception::Smc64 { imm16: 0 });
        // `hvc #0`: EC = 0x16 -> 0x5a00_0000; `hvc #0x4711` keeps its immediate.
        assert_eq!(decode(0x5a00_0000).exception, Exception::Hvc64 { imm16: 0 });
        assert_eq!(
            decode(0x5a00_4711).exception,
            Exception::Hvc64 { imm16: 0x4711 }
        );
    }

    #[test]
    fn trapped_msr_mrs() {
        // `mrs x3, ctr_el0` (op0 3, op1 3, CRn 0, CRm 0, op2 1) trapped: EC = 0x18,
        //   Op0 [21:20] = 3, Op2 [19:17] = 1, Op1 [16:14] = 3, CRn [13:10] = 0, Rt [9:5] = 3,
        //   CRm [4:1] = 0, Direction [0] = 1 (read).
        let iss = (3 << 20) | (1 << 17) | (3 << 14) | (3 << 5) | 1;
        assert_eq!(
            decode(esr(0x18, true, iss)).exception,
            Exception::SysReg(SysRegAccess {
                op0: 3,
                op1: 3,
                crn: 0,
                crm: 0,
                op2: 1,
                rt: 3,
                read: true
            })
        );
        // `msr sctlr_el1, x0` (3, 0, c1, c0, 0): a write.
        let iss = (3 << 20) | (1 << 10);
        let Exception::SysReg(access) = decode(esr(0x18, true, iss)).exception else {
            panic!("not a sysreg trap");
        };
        assert_eq!((access.crn, access.read, access.rt), (1, false, 0));
    }

    #[test]
    fn wfx_and_others() {
        assert_eq!(
            decode(esr(0x01, true, 0)).exception,
            Exception::Wfx(Wfx::Wfi)
        );
        assert_eq!(
            decode(esr(0x01, true, 1)).exception,
            Exception::Wfx(Wfx::Wfe)
        );
        // A data abort from EL2 itself is not the host's: it stays `Other`.
        assert_eq!(
            decode(esr(0x25, true, 0x10)).exception,
            Exception::Other {
                ec: 0x25,
                iss: 0x10
            }
        );
        // A 16-bit T32 instruction from AArch32 EL0 (IL = 0).
        assert_eq!(
            decode(esr(0x00, false, 0)).instruction_length,
            InstructionLength::Bits16
        );
    }

    #[test]
    fn fault_status_codes() {
        assert_eq!(
            FaultStatus::decode(0x04),
            FaultStatus::Translation { level: 0 }
        );
        assert_eq!(
            FaultStatus::decode(0x09),
            FaultStatus::AccessFlag { level: 1 }
        );
        assert_eq!(FaultStatus::decode(0x10), FaultStatus::SyncExternal);
        assert_eq!(
            FaultStatus::decode(0x15),
            FaultStatus::SyncExternalOnWalk { level: 1 }
        );
        assert_eq!(
            FaultStatus::decode(0x2b),
            FaultStatus::Translation { level: -1 }
        );
        assert_eq!(FaultStatus::decode(0x21), FaultStatus::Alignment);
        assert_eq!(FaultStatus::decode(0x30), FaultStatus::TlbConflict);
        assert_eq!(FaultStatus::decode(0x3f), FaultStatus::Other(0x3f));
    }

    #[test]
    fn fault_ipa_from_hpfar() {
        // IPA 0x0905_0010: HPFAR.FIPA = IPA >> 12 = 0x9050, placed at bit 4 -> 0x9_0500;
        // FAR_EL2 holds the VA, whose page offset is the IPA's page offset.
        assert_eq!(fault_ipa(0x9_0500, 0xffff_8000_1234_5010), Ipa(0x0905_0010));
        // A 52-bit IPA uses all of FIPA [43:4]; the NS bit 63 is not part of the address.
        assert_eq!(
            fault_ipa((1 << 63) | (0xff_ffff_ffff << 4), 0xfff),
            Ipa(0xf_ffff_ffff_ffff)
        );
    }

    #[test]
    fn hpfar_is_not_trusted_for_a_permission_fault_on_the_access() {
        use FaultStatus::*;
        for level in 0..=3 {
            for s1ptw in [false, true] {
                for fault in [
                    Translation { level },
                    AccessFlag { level },
                    AddressSize { level },
                ] {
                    assert_eq!(ipa_source(s1ptw, false, fault), IpaSource::Hpfar);
                }
            }
            // On a stage-1 walk HPFAR is valid; on the access itself it is not.
            assert_eq!(
                ipa_source(true, false, Permission { level }),
                IpaSource::Hpfar
            );
            assert_eq!(
                ipa_source(false, false, Permission { level }),
                IpaSource::TranslateFar
            );
            assert_eq!(
                ipa_source(false, true, Permission { level }),
                IpaSource::Unknown
            );
        }
        for fault in [SyncExternal, Alignment, TlbConflict, Other(0x3f)] {
            assert_eq!(ipa_source(false, false, fault), IpaSource::Unknown);
        }
    }

    #[test]
    fn ipa_from_a_translation() {
        // PAR_EL1 with F = 0: PA 0x4812_3000, NS, inner shareable, attributes in [63:56].
        let par = 0xff00_0000_0000_0000 | 0x4812_3000 | 1 << 9 | 0b11 << 7;
        assert_eq!(
            ipa_from_par(par, 0xffff_8000_0000_0abc),
            Some(Ipa(0x4812_3abc))
        );
        // 52-bit output address.
        assert_eq!(
            ipa_from_par(0x000f_ffff_ffff_f000, 0x10),
            Some(Ipa(0xf_ffff_ffff_f010))
        );
        // F = 1: the translation aborted (the host changed its tables): no IPA.
        assert_eq!(ipa_from_par(0x4812_3000 | 1, 0), None);
    }

    #[test]
    fn instruction_aborts_told_from_the_class() {
        assert!(is_instruction_abort(0x20 << 26 | 1 << 25 | 0x0f));
        assert!(!is_instruction_abort(0x21 << 26 | 1 << 25 | 0x0f));
        assert!(!is_instruction_abort(0x24 << 26 | 1 << 25 | 0x0f));
        assert!(!is_instruction_abort(0x16 << 26));
    }

    proptest! {
        #[test]
        fn decoders_are_total(esr_raw in any::<u64>(), hpfar in any::<u64>(), far in any::<u64>()) {
            let syndrome = decode(esr_raw);
            let ec = ((esr_raw >> 26) & 0x3f) as u8;
            prop_assert_eq!(
                is_instruction_abort(esr_raw),
                matches!(syndrome.exception, Exception::InstructionAbort(_))
            );
            match syndrome.exception {
                Exception::DataAbort(_) => prop_assert_eq!(ec, 0x24),
                Exception::InstructionAbort(_) => prop_assert_eq!(ec, 0x20),
                Exception::Other { ec: other, .. } => prop_assert_eq!(other, ec),
                _ => {}
            }
            prop_assert!(fault_ipa(hpfar, far).0 < 1 << 52);
        }
    }
}
