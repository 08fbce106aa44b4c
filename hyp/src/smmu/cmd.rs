//! Commands (chapter 4, "Commands").
//!
//! Portcullis encodes commands for its physical Command queue and decodes the commands the host
//! writes into the emulated one. Every command is 16 bytes, handled as `[u64; 2]` (little-endian
//! words), with the opcode in bits [7:0].
//!
//! Decoding is strict: an unknown opcode, a non-zero Reserved (RES0) field, or a parameter value
//! the specification calls ILLEGAL gives a [`CommandError`], reported to the host as CERROR_ILL.
//! Section 4.1.5 lets an implementation either ignore Reserved fields or treat them as malformed;
//! Portcullis takes the second choice so that nothing the host writes is silently reinterpreted.
//! Fields the specification calls IGNORED in some configuration (a SubstreamID with SSV == 0, the
//! StreamID of CMD_CFGI_ALL, Ab when Ac == 1) are accepted and dropped. The checks that depend on
//! the SMMU's features are in [`Command::check_features`].
//!
//! Commands are only decoded as for the Non-secure Command queue: SSec == 1 is ILLEGAL there
//! (section 4.1.6), and the Secure-only commands are refused.

use core::fmt;

use tock_registers::fields::Field;
use tock_registers::register_bitfields;
use tock_registers::{LocalRegisterCopy, RegisterLongName};

use super::queue::CommandQueueError;
use super::regs::{SmmuFeatures, StallModel};
use super::{Ipa, SSID_MAX, StreamId, SubstreamId};

register_bitfields! [u64,
    /// Word 0 of the commands that name a stream.
    pub CMD0 [
        OPCODE OFFSET(0) NUMBITS(8) [],
        /// CMD_ATC_INV only.
        GLOBAL OFFSET(9) NUMBITS(1) [],
        SSEC OFFSET(10) NUMBITS(1) [],
        SSV OFFSET(11) NUMBITS(1) [],
        SSID OFFSET(12) NUMBITS(20) [],
        SID OFFSET(32) NUMBITS(32) []
    ],
    /// Word 0 of the TLB invalidations and CMD_CFGI_VMS_PIDM.
    pub CMD0_TLBI [
        OPCODE OFFSET(0) NUMBITS(8) [],
        NUM OFFSET(12) NUMBITS(5) [],
        /// 6 bits when `IDR5.DS == 1`, else bits [24:20] with bit 25 RES0.
        SCALE OFFSET(20) NUMBITS(6) [],
        VMID OFFSET(32) NUMBITS(16) [],
        ASID OFFSET(48) NUMBITS(16) []
    ],
    /// Word 0 of CMD_SYNC (section 4.7.3).
    pub CMD0_SYNC [
        OPCODE OFFSET(0) NUMBITS(8) [],
        CS OFFSET(12) NUMBITS(2) [
            None = 0b00,
            Irq = 0b01,
            Sev = 0b10
        ],
        MSH OFFSET(22) NUMBITS(2) [],
        MSIATTR OFFSET(24) NUMBITS(4) [],
        MSIDATA OFFSET(32) NUMBITS(32) []
    ],
    /// Word 0 of CMD_RESUME (section 4.7.1).
    pub CMD0_RESUME [
        OPCODE OFFSET(0) NUMBITS(8) [],
        SSEC OFFSET(10) NUMBITS(1) [],
        AC OFFSET(12) NUMBITS(1) [],
        AB OFFSET(13) NUMBITS(1) [],
        SID OFFSET(32) NUMBITS(32) []
    ],
    /// Word 1 of CMD_CFGI_STE, CMD_CFGI_CD (Leaf) and CMD_CFGI_STE_RANGE (Range).
    pub CMD1_CFGI [
        LEAF OFFSET(0) NUMBITS(1) [],
        RANGE OFFSET(0) NUMBITS(5) []
    ],
    /// Word 1 of CMD_PREFETCH_ADDR (section 4.2.2).
    pub CMD1_PREFETCH [
        SIZE OFFSET(0) NUMBITS(5) [],
        STRIDE OFFSET(5) NUMBITS(5) [],
        ADDR OFFSET(12) NUMBITS(52) []
    ],
    /// Word 1 of the address-based TLB invalidations (section 4.4.1).
    pub CMD1_TLBI [
        LEAF OFFSET(0) NUMBITS(1) [],
        TTL OFFSET(8) NUMBITS(2) [],
        TG OFFSET(10) NUMBITS(2) [
            Any = 0b00,
            Gran4K = 0b01,
            Gran16K = 0b10,
            Gran64K = 0b11
        ],
        /// VA[63:12].
        VA OFFSET(12) NUMBITS(52) [],
        /// IPA[55:12].
        IPA OFFSET(12) NUMBITS(44) []
    ],
    /// Word 1 of CMD_ATC_INV (section 4.5.1).
    pub CMD1_ATC [
        SIZE OFFSET(0) NUMBITS(6) [],
        ADDR OFFSET(12) NUMBITS(52) []
    ],
    /// Word 1 of CMD_PRI_RESP (section 4.5.2).
    pub CMD1_PRI [
        PRGINDEX OFFSET(0) NUMBITS(9) [],
        RESP OFFSET(12) NUMBITS(2) [
            Failure = 0b00,
            InvalidRequest = 0b01,
            Success = 0b10
        ]
    ],
    /// Word 1 of CMD_RESUME.
    pub CMD1_RESUME [
        STAG OFFSET(0) NUMBITS(16) []
    ],
    /// Word 1 of CMD_SYNC: MSIAddress[55:2].
    pub CMD1_SYNC [
        MSIADDR OFFSET(2) NUMBITS(54) []
    ]
];

/// Size of a command in bytes.
pub const COMMAND_SIZE: usize = 16;

/// Command opcodes (section 4.1.1).
pub mod opcode {
    pub const PREFETCH_CONFIG: u8 = 0x01;
    pub const PREFETCH_ADDR: u8 = 0x02;
    pub const CFGI_STE: u8 = 0x03;
    /// Also CMD_CFGI_ALL, with Range == 31.
    pub const CFGI_STE_RANGE: u8 = 0x04;
    pub const CFGI_CD: u8 = 0x05;
    pub const CFGI_CD_ALL: u8 = 0x06;
    pub const CFGI_VMS_PIDM: u8 = 0x07;
    pub const TLBI_NH_ALL: u8 = 0x10;
    pub const TLBI_NH_ASID: u8 = 0x11;
    pub const TLBI_NH_VA: u8 = 0x12;
    pub const TLBI_NH_VAA: u8 = 0x13;
    pub const TLBI_EL3_ALL: u8 = 0x18;
    pub const TLBI_EL3_VA: u8 = 0x1a;
    pub const TLBI_EL2_ALL: u8 = 0x20;
    pub const TLBI_EL2_ASID: u8 = 0x21;
    pub const TLBI_EL2_VA: u8 = 0x22;
    pub const TLBI_EL2_VAA: u8 = 0x23;
    pub const TLBI_S12_VMALL: u8 = 0x28;
    pub const TLBI_S2_IPA: u8 = 0x2a;
    pub const TLBI_NSNH_ALL: u8 = 0x30;
    pub const ATC_INV: u8 = 0x40;
    pub const PRI_RESP: u8 = 0x41;
    pub const RESUME: u8 = 0x44;
    pub const STALL_TERM: u8 = 0x45;
    pub const SYNC: u8 = 0x46;
    // Defined by the architecture but not for the Non-secure queue or not modelled here.
    pub const TLBI_S_EL2_ALL: u8 = 0x50;
    pub const TLBI_S_EL2_ASID: u8 = 0x51;
    pub const TLBI_S_EL2_VA: u8 = 0x52;
    pub const TLBI_S_EL2_VAA: u8 = 0x53;
    pub const TLBI_S_S12_VMALL: u8 = 0x58;
    pub const TLBI_S_S2_IPA: u8 = 0x5a;
    pub const TLBI_SNH_ALL: u8 = 0x60;
    pub const DPTI_ALL: u8 = 0x70;
    pub const DPTI_PA: u8 = 0x73;
}

/// The granule an address-based TLB invalidation is limited to (`TG`); with a granule the
/// command carries a range (`NUM`, `SCALE`) and a level hint (`TTL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlbiGranule {
    /// Any granule: a single address, no range, no hint.
    Any,
    K4,
    K16,
    K64,
}

impl TlbiGranule {
    const fn encoding(self) -> u64 {
        match self {
            Self::Any => 0b00,
            Self::K4 => 0b01,
            Self::K16 => 0b10,
            Self::K64 => 0b11,
        }
    }

    const fn from_encoding(v: u64) -> Self {
        match v & 0b11 {
            0b00 => Self::Any,
            0b01 => Self::K4,
            0b10 => Self::K16,
            _ => Self::K64,
        }
    }

    /// The granule size in bytes, `None` for `Any`.
    pub const fn bytes(self) -> Option<u64> {
        match self {
            Self::Any => None,
            Self::K4 => Some(4 << 10),
            Self::K16 => Some(16 << 10),
            Self::K64 => Some(64 << 10),
        }
    }
}

/// The scope of an address-based TLB invalidation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TlbiScope {
    /// Only last-level (leaf) entries.
    pub leaf: bool,
    pub granule: TlbiGranule,
    /// Level hint (0 = none); only with a granule.
    pub ttl: u8,
    /// Range: `(num + 1) * 2^scale` granules from the address; only with a granule.
    pub num: u8,
    pub scale: u8,
}

impl TlbiScope {
    /// One address, any granule.
    pub const fn single(leaf: bool) -> Self {
        Self {
            leaf,
            granule: TlbiGranule::Any,
            ttl: 0,
            num: 0,
            scale: 0,
        }
    }

    /// Bytes covered from the address, for a range invalidation.
    pub fn range_bytes(&self) -> Option<u64> {
        let g = self.granule.bytes()?;
        (u64::from(self.num) + 1)
            .checked_shl(u32::from(self.scale))?
            .checked_mul(g)
    }
}

/// CMD_PRI_RESP's response (`Resp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PriResponse {
    /// ResponseFailure: permanent non-paging error.
    Failure,
    /// InvalidRequest: a page could not be brought in.
    InvalidRequest,
    Success,
}

/// CMD_RESUME's action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResumeAction {
    /// Ac == 1: retry the transaction.
    Retry,
    /// Ac == 0: terminate it, with an abort (Ab == 1) or RAZ/WI (Ab == 0).
    Terminate { abort: bool },
}

/// CMD_SYNC's completion signal (`CS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SyncSignal {
    /// SIG_NONE: software polls CMDQ_CONS.
    None,
    /// SIG_IRQ: an interrupt, as an MSI of `msi_data` to `msi_addr` if that is non-zero.
    Irq,
    /// SIG_SEV: a WFE wake-up event.
    Sev,
}

/// Everything in a CMD_SYNC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Sync {
    pub signal: SyncSignal,
    /// MSI shareability (`MSH`).
    pub msh: u8,
    /// MSI memory attributes (`MSIAttr`, encoded as STE.MemAttr).
    pub msi_attr: u8,
    pub msi_data: u32,
    /// MSI target, bits [55:2]: a physical address on Portcullis' queue, a guest-physical one in
    /// a host command (which Portcullis must never forward as is).
    pub msi_addr: u64,
}

impl Sync {
    /// A CMD_SYNC that signals nothing: completion is seen in CMDQ_CONS.
    pub const POLL: Self = Self {
        signal: SyncSignal::None,
        msh: 0,
        msi_attr: 0,
        msi_data: 0,
        msi_addr: 0,
    };
}

/// Every command of the architecture usable on the Non-secure Command queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    PrefetchConfig {
        sid: StreamId,
        ssid: Option<SubstreamId>,
    },
    /// Prefetch translations for `2^size` steps of `2^(12 + stride)` bytes from `addr`.
    PrefetchAddr {
        sid: StreamId,
        ssid: Option<SubstreamId>,
        addr: u64,
        size: u8,
        stride: u8,
    },
    /// Invalidate the STE of `sid` (and the L1STD that leads to it, unless `leaf`).
    CfgiSte {
        sid: StreamId,
        leaf: bool,
    },
    /// Invalidate STEs (and L1STDs) of `2^(range + 1)` StreamIDs, `range` 0..=30.
    CfgiSteRange {
        sid: StreamId,
        range: u8,
    },
    CfgiCd {
        sid: StreamId,
        ssid: SubstreamId,
        leaf: bool,
    },
    CfgiCdAll {
        sid: StreamId,
    },
    /// CMD_CFGI_STE_RANGE with Range == 31.
    CfgiAll,
    CfgiVmsPidm {
        vmid: u16,
    },
    TlbiNhAll {
        vmid: u16,
    },
    TlbiNhAsid {
        vmid: u16,
        asid: u16,
    },
    TlbiNhVa {
        vmid: u16,
        asid: u16,
        va: u64,
        scope: TlbiScope,
    },
    TlbiNhVaa {
        vmid: u16,
        va: u64,
        scope: TlbiScope,
    },
    TlbiEl3All,
    TlbiEl3Va {
        va: u64,
        scope: TlbiScope,
    },
    TlbiEl2All,
    TlbiEl2Asid {
        asid: u16,
    },
    TlbiEl2Va {
        asid: u16,
        va: u64,
        scope: TlbiScope,
    },
    TlbiEl2Vaa {
        va: u64,
        scope: TlbiScope,
    },
    TlbiS12Vmall {
        vmid: u16,
    },
    TlbiS2Ipa {
        vmid: u16,
        ipa: Ipa,
        scope: TlbiScope,
    },
    TlbiNsnhAll,
    /// Invalidate the device's ATC for `4096 * 2^size` bytes at `addr` (size 52: everything).
    AtcInv {
        sid: StreamId,
        ssid: Option<SubstreamId>,
        global: bool,
        addr: u64,
        size: u8,
    },
    PriResp {
        sid: StreamId,
        ssid: Option<SubstreamId>,
        prg_index: u16,
        resp: PriResponse,
    },
    Resume {
        sid: StreamId,
        stag: u16,
        action: ResumeAction,
    },
    StallTerm {
        sid: StreamId,
    },
    Sync(Sync),
}

/// What a command is about, which decides what the emulated SMMU does with a host's command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommandClass {
    /// CMD_PREFETCH_*.
    Prefetch,
    /// CMD_CFGI_STE*, CMD_CFGI_CD*, CMD_CFGI_ALL.
    ConfigInvalidation,
    /// CMD_TLBI_NH_*: the host's own stage 1 (forwarded with Portcullis' VMID).
    Stage1Tlb,
    /// Stage 2 and all-of-Non-secure maintenance (CMD_TLBI_S12_VMALL, CMD_TLBI_S2_IPA,
    /// CMD_TLBI_NSNH_ALL, CMD_CFGI_VMS_PIDM): Portcullis' business only.
    Stage2,
    /// CMD_TLBI_EL2_*: the hypervisor's own translation regime.
    El2Tlb,
    /// CMD_TLBI_EL3_*: Secure queue only.
    El3Tlb,
    /// CMD_ATC_INV.
    Ats,
    /// CMD_PRI_RESP.
    Pri,
    /// CMD_RESUME, CMD_STALL_TERM.
    Stall,
    /// CMD_SYNC.
    Sync,
}

impl CommandClass {
    /// Whether the host may issue commands of this class to the emulated SMMU; the others are
    /// CERROR_ILL for it, as on an SMMU without stage 2 and EL2.
    pub const fn host_may_issue(self) -> bool {
        !matches!(self, Self::Stage2 | Self::El2Tlb | Self::El3Tlb)
    }
}

/// Why a command is malformed. Every case is CERROR_ILL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandError {
    /// A Reserved opcode.
    UnknownOpcode(u8),
    /// An opcode the architecture defines, but not for the Non-secure Command queue or not
    /// supported here (Secure-only TLBIs, DPT maintenance, IMPLEMENTATION DEFINED commands).
    UnsupportedOpcode(u8),
    /// Non-zero bits in a Reserved field of word 0 or 1.
    ReservedBits { word: u8, bits: u64 },
    /// SSec == 1 on the Non-secure Command queue.
    SecureStream,
    /// A parameter value the specification calls Reserved or ILLEGAL.
    ReservedValue { field: &'static str, value: u64 },
    /// The command, or one of its parameters, needs a feature the SMMU does not have.
    NotSupported { feature: &'static str },
    /// The command is legal, but not for the host (stage 2, EL2, EL3 maintenance).
    NotForHost(CommandClass),
}

impl CommandError {
    /// The Command queue error this causes.
    pub const fn cerror(&self) -> CommandQueueError {
        CommandQueueError::Illegal
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownOpcode(op) => write!(f, "reserved command opcode {op:#04x}"),
            Self::UnsupportedOpcode(op) => write!(f, "command opcode {op:#04x} not supported here"),
            Self::ReservedBits { word, bits } => {
                write!(f, "reserved bits {bits:#018x} set in command word {word}")
            }
            Self::SecureStream => write!(f, "SSec set on the Non-secure Command queue"),
            Self::ReservedValue { field, value } => write!(f, "reserved {field} value {value:#x}"),
            Self::NotSupported { feature } => write!(f, "command needs {feature}, not supported"),
            Self::NotForHost(class) => write!(f, "{class:?} command not available to the host"),
        }
    }
}

fn mask<R: RegisterLongName>(fields: &[Field<u64, R>]) -> u64 {
    fields.iter().fold(0, |m, f| m | f.mask << f.shift)
}

fn reserved(word: u8, raw: u64, allowed: u64) -> Result<(), CommandError> {
    match raw & !allowed {
        0 => Ok(()),
        bits => Err(CommandError::ReservedBits { word, bits }),
    }
}

type C0 = LocalRegisterCopy<u64, CMD0::Register>;
type T0 = LocalRegisterCopy<u64, CMD0_TLBI::Register>;
type T1 = LocalRegisterCopy<u64, CMD1_TLBI::Register>;

/// How a family of commands lays out its fields, for the strict decoder.
struct Layout {
    w0: u64,
    w1: u64,
}

impl Layout {
    fn check(&self, raw: [u64; 2]) -> Result<(), CommandError> {
        reserved(0, raw[0], self.w0)?;
        reserved(1, raw[1], self.w1)
    }
}

impl Command {
    /// Decodes a command read from a (Non-secure) Command queue.
    pub fn decode(raw: [u64; 2]) -> Result<Self, CommandError> {
        use opcode as op;
        let w0 = C0::new(raw[0]);
        let opc = w0.read(CMD0::OPCODE) as u8;
        let sid = w0.read(CMD0::SID) as StreamId;
        let ssid_field = w0.read(CMD0::SSID) as SubstreamId;
        let ssid = w0.is_set(CMD0::SSV).then_some(ssid_field);
        let (opcode_f, sid_f) = (CMD0::OPCODE, CMD0::SID);
        // Stream-naming word 0 layouts.
        let stream = |extra: &[Field<u64, CMD0::Register>]| {
            mask(&[opcode_f, sid_f, CMD0::SSEC]) | mask(extra)
        };
        let no_w1 = 0;
        let secure = || {
            if w0.is_set(CMD0::SSEC) {
                Err(CommandError::SecureStream)
            } else {
                Ok(())
            }
        };
        let cmd = match opc {
            op::PREFETCH_CONFIG => {
                Layout {
                    w0: stream(&[CMD0::SSV, CMD0::SSID]),
                    w1: no_w1,
                }
                .check(raw)?;
                secure()?;
                Self::PrefetchConfig { sid, ssid }
            }
            op::PREFETCH_ADDR => {
                use CMD1_PREFETCH as P;
                Layout {
                    w0: stream(&[CMD0::SSV, CMD0::SSID]),
                    w1: mask(&[P::SIZE, P::STRIDE, P::ADDR]),
                }
                .check(raw)?;
                secure()?;
                let w1 = LocalRegisterCopy::<u64, P::Register>::new(raw[1]);
                Self::PrefetchAddr {
                    sid,
                    ssid,
                    addr: w1.read(P::ADDR) << P::ADDR.shift,
                    size: w1.read(P::SIZE) as u8,
                    stride: w1.read(P::STRIDE) as u8,
                }
            }
            op::CFGI_STE => {
                Layout {
                    w0: stream(&[]),
                    w1: mask(&[CMD1_CFGI::LEAF]),
                }
                .check(raw)?;
                secure()?;
                Self::CfgiSte {
                    sid,
                    leaf: raw[1] & 1 != 0,
                }
            }
            op::CFGI_STE_RANGE => {
                Layout {
                    w0: stream(&[]),
                    w1: mask(&[CMD1_CFGI::RANGE]),
                }
                .check(raw)?;
                secure()?;
                match CMD1_CFGI::RANGE.read(raw[1]) as u8 {
                    31 => Self::CfgiAll,
                    range => Self::CfgiSteRange { sid, range },
                }
            }
            op::CFGI_CD => {
                Layout {
                    w0: stream(&[CMD0::SSID]),
                    w1: mask(&[CMD1_CFGI::LEAF]),
                }
                .check(raw)?;
                secure()?;
                Self::CfgiCd {
                    sid,
                    ssid: ssid_field,
                    leaf: raw[1] & 1 != 0,
                }
            }
            op::CFGI_CD_ALL => {
                Layout {
                    w0: stream(&[]),
                    w1: no_w1,
                }
                .check(raw)?;
                secure()?;
                Self::CfgiCdAll { sid }
            }
            op::CFGI_VMS_PIDM => {
                let t0 = Self::tlbi_word0(raw, mask(&[CMD0_TLBI::VMID]), no_w1)?;
                // SSec shares bit 10 with the other CFGI commands; it is outside the TLBI
                // layout, so a set SSec was already refused as a Reserved bit.
                Self::CfgiVmsPidm {
                    vmid: t0.read(CMD0_TLBI::VMID) as u16,
                }
            }
            op::TLBI_NH_ALL => Self::TlbiNhAll {
                vmid: Self::vmid(raw)?,
            },
            op::TLBI_NH_ASID => {
                let t0 = Self::tlbi_word0(raw, mask(&[CMD0_TLBI::VMID, CMD0_TLBI::ASID]), no_w1)?;
                Self::TlbiNhAsid {
                    vmid: t0.read(CMD0_TLBI::VMID) as u16,
                    asid: t0.read(CMD0_TLBI::ASID) as u16,
                }
            }
            op::TLBI_NH_VA => {
                let (t0, va, scope) =
                    Self::tlbi_va(raw, mask(&[CMD0_TLBI::VMID, CMD0_TLBI::ASID]))?;
                Self::TlbiNhVa {
                    vmid: t0.read(CMD0_TLBI::VMID) as u16,
                    asid: t0.read(CMD0_TLBI::ASID) as u16,
                    va,
                    scope,
                }
            }
            op::TLBI_NH_VAA => {
                let (t0, va, scope) = Self::tlbi_va(raw, mask(&[CMD0_TLBI::VMID]))?;
                Self::TlbiNhVaa {
                    vmid: t0.read(CMD0_TLBI::VMID) as u16,
                    va,
                    scope,
                }
            }
            op::TLBI_EL3_ALL => {
                Self::tlbi_word0(raw, 0, no_w1)?;
                Self::TlbiEl3All
            }
            op::TLBI_EL3_VA => {
                let (_, va, scope) = Self::tlbi_va(raw, 0)?;
                Self::TlbiEl3Va { va, scope }
            }
            op::TLBI_EL2_ALL => {
                Self::tlbi_word0(raw, 0, no_w1)?;
                Self::TlbiEl2All
            }
            op::TLBI_EL2_ASID => {
                let t0 = Self::tlbi_word0(raw, mask(&[CMD0_TLBI::ASID]), no_w1)?;
                Self::TlbiEl2Asid {
                    asid: t0.read(CMD0_TLBI::ASID) as u16,
                }
            }
            op::TLBI_EL2_VA => {
                let (t0, va, scope) = Self::tlbi_va(raw, mask(&[CMD0_TLBI::ASID]))?;
                Self::TlbiEl2Va {
                    asid: t0.read(CMD0_TLBI::ASID) as u16,
                    va,
                    scope,
                }
            }
            op::TLBI_EL2_VAA => {
                let (_, va, scope) = Self::tlbi_va(raw, 0)?;
                Self::TlbiEl2Vaa { va, scope }
            }
            op::TLBI_S12_VMALL => Self::TlbiS12Vmall {
                vmid: Self::vmid(raw)?,
            },
            op::TLBI_S2_IPA => {
                let w1_fields = mask(&[
                    CMD1_TLBI::LEAF,
                    CMD1_TLBI::TTL,
                    CMD1_TLBI::TG,
                    CMD1_TLBI::IPA,
                ]);
                let t0 = Self::tlbi_word0(
                    raw,
                    mask(&[CMD0_TLBI::VMID, CMD0_TLBI::NUM, CMD0_TLBI::SCALE]),
                    w1_fields,
                )?;
                let t1 = T1::new(raw[1]);
                Self::TlbiS2Ipa {
                    vmid: t0.read(CMD0_TLBI::VMID) as u16,
                    ipa: Ipa(t1.read(CMD1_TLBI::IPA) << CMD1_TLBI::IPA.shift),
                    scope: Self::decode_scope(&t0, &t1)?,
                }
            }
            op::TLBI_NSNH_ALL => {
                Self::tlbi_word0(raw, 0, no_w1)?;
                Self::TlbiNsnhAll
            }
            op::ATC_INV => {
                use CMD1_ATC as A;
                Layout {
                    w0: mask(&[opcode_f, sid_f, CMD0::GLOBAL, CMD0::SSV, CMD0::SSID]),
                    w1: mask(&[A::SIZE, A::ADDR]),
                }
                .check(raw)?;
                let size = A::SIZE.read(raw[1]) as u8;
                if size > 52 {
                    return Err(CommandError::ReservedValue {
                        field: "ATC_INV Size",
                        value: size.into(),
                    });
                }
                Self::AtcInv {
                    sid,
                    ssid,
                    global: w0.is_set(CMD0::GLOBAL),
                    addr: raw[1] & !0xfff,
                    size,
                }
            }
            op::PRI_RESP => {
                use CMD1_PRI as P;
                Layout {
                    w0: mask(&[opcode_f, sid_f, CMD0::SSV, CMD0::SSID]),
                    w1: mask(&[P::PRGINDEX, P::RESP]),
                }
                .check(raw)?;
                let resp = match P::RESP.read(raw[1]) {
                    0b00 => PriResponse::Failure,
                    0b01 => PriResponse::InvalidRequest,
                    0b10 => PriResponse::Success,
                    v => {
                        return Err(CommandError::ReservedValue {
                            field: "PRI_RESP Resp",
                            value: v,
                        });
                    }
                };
                Self::PriResp {
                    sid,
                    ssid,
                    prg_index: P::PRGINDEX.read(raw[1]) as u16,
                    resp,
                }
            }
            op::RESUME => {
                use CMD0_RESUME as R;
                Layout {
                    w0: mask(&[R::OPCODE, R::SSEC, R::AC, R::AB, R::SID]),
                    w1: mask(&[CMD1_RESUME::STAG]),
                }
                .check(raw)?;
                secure()?;
                let action = if R::AC.is_set(raw[0]) {
                    ResumeAction::Retry
                } else {
                    ResumeAction::Terminate {
                        abort: R::AB.is_set(raw[0]),
                    }
                };
                Self::Resume {
                    sid,
                    stag: CMD1_RESUME::STAG.read(raw[1]) as u16,
                    action,
                }
            }
            op::STALL_TERM => {
                Layout {
                    w0: stream(&[]),
                    w1: no_w1,
                }
                .check(raw)?;
                secure()?;
                Self::StallTerm { sid }
            }
            op::SYNC => {
                use CMD0_SYNC as S;
                Layout {
                    w0: mask(&[S::OPCODE, S::CS, S::MSH, S::MSIATTR, S::MSIDATA]),
                    w1: mask(&[CMD1_SYNC::MSIADDR]),
                }
                .check(raw)?;
                let signal = match S::CS.read(raw[0]) {
                    0b00 => SyncSignal::None,
                    0b01 => SyncSignal::Irq,
                    0b10 => SyncSignal::Sev,
                    v => {
                        return Err(CommandError::ReservedValue {
                            field: "CMD_SYNC CS",
                            value: v,
                        });
                    }
                };
                Self::Sync(Sync {
                    signal,
                    msh: S::MSH.read(raw[0]) as u8,
                    msi_attr: S::MSIATTR.read(raw[0]) as u8,
                    msi_data: S::MSIDATA.read(raw[0]) as u32,
                    msi_addr: raw[1],
                })
            }
            op::TLBI_S_EL2_ALL
            | op::TLBI_S_EL2_ASID
            | op::TLBI_S_EL2_VA
            | op::TLBI_S_EL2_VAA
            | op::TLBI_S_S12_VMALL
            | op::TLBI_S_S2_IPA
            | op::TLBI_SNH_ALL
            | op::DPTI_ALL
            | op::DPTI_PA
            | 0x80..=0x8f => return Err(CommandError::UnsupportedOpcode(opc)),
            _ => return Err(CommandError::UnknownOpcode(opc)),
        };
        Ok(cmd)
    }

    /// Word 0 of a TLBI-style command with `fields` besides the opcode, and word 1 with the
    /// fields in `w1`.
    fn tlbi_word0(raw: [u64; 2], fields: u64, w1: u64) -> Result<T0, CommandError> {
        Layout {
            w0: mask(&[CMD0_TLBI::OPCODE]) | fields,
            w1,
        }
        .check(raw)?;
        Ok(T0::new(raw[0]))
    }

    fn vmid(raw: [u64; 2]) -> Result<u16, CommandError> {
        let t0 = Self::tlbi_word0(raw, mask(&[CMD0_TLBI::VMID]), 0)?;
        Ok(t0.read(CMD0_TLBI::VMID) as u16)
    }

    /// An address-based TLBI: word 0 with `fields` plus NUM and SCALE, word 1 with a VA.
    fn tlbi_va(raw: [u64; 2], fields: u64) -> Result<(T0, u64, TlbiScope), CommandError> {
        let w1 = mask(&[
            CMD1_TLBI::LEAF,
            CMD1_TLBI::TTL,
            CMD1_TLBI::TG,
            CMD1_TLBI::VA,
        ]);
        let t0 = Self::tlbi_word0(raw, fields | mask(&[CMD0_TLBI::NUM, CMD0_TLBI::SCALE]), w1)?;
        let t1 = T1::new(raw[1]);
        let scope = Self::decode_scope(&t0, &t1)?;
        Ok((t0, t1.read(CMD1_TLBI::VA) << CMD1_TLBI::VA.shift, scope))
    }

    /// The range fields: RES0 without a granule, and NUM == SCALE == TTL == 0 with a granule is
    /// Reserved (section 4.4.1.1).
    fn decode_scope(t0: &T0, t1: &T1) -> Result<TlbiScope, CommandError> {
        let scope = TlbiScope {
            leaf: t1.is_set(CMD1_TLBI::LEAF),
            granule: TlbiGranule::from_encoding(t1.read(CMD1_TLBI::TG)),
            ttl: t1.read(CMD1_TLBI::TTL) as u8,
            num: t0.read(CMD0_TLBI::NUM) as u8,
            scale: t0.read(CMD0_TLBI::SCALE) as u8,
        };
        let ranged = (scope.ttl, scope.num, scope.scale) != (0, 0, 0);
        match (scope.granule, ranged) {
            (TlbiGranule::Any, true) => {
                reserved(0, t0.get(), !mask(&[CMD0_TLBI::NUM, CMD0_TLBI::SCALE]))?;
                reserved(1, t1.get(), !mask(&[CMD1_TLBI::TTL]))?;
                Ok(scope)
            }
            (TlbiGranule::Any, false) | (_, true) => Ok(scope),
            (_, false) => Err(CommandError::ReservedValue {
                field: "TLBI NUM/SCALE/TTL",
                value: 0,
            }),
        }
    }

    /// The command's class.
    pub fn class(&self) -> CommandClass {
        match self {
            Self::PrefetchConfig { .. } | Self::PrefetchAddr { .. } => CommandClass::Prefetch,
            Self::CfgiSte { .. }
            | Self::CfgiSteRange { .. }
            | Self::CfgiCd { .. }
            | Self::CfgiCdAll { .. }
            | Self::CfgiAll => CommandClass::ConfigInvalidation,
            Self::TlbiNhAll { .. }
            | Self::TlbiNhAsid { .. }
            | Self::TlbiNhVa { .. }
            | Self::TlbiNhVaa { .. } => CommandClass::Stage1Tlb,
            Self::CfgiVmsPidm { .. }
            | Self::TlbiS12Vmall { .. }
            | Self::TlbiS2Ipa { .. }
            | Self::TlbiNsnhAll => CommandClass::Stage2,
            Self::TlbiEl2All
            | Self::TlbiEl2Asid { .. }
            | Self::TlbiEl2Va { .. }
            | Self::TlbiEl2Vaa { .. } => CommandClass::El2Tlb,
            Self::TlbiEl3All | Self::TlbiEl3Va { .. } => CommandClass::El3Tlb,
            Self::AtcInv { .. } => CommandClass::Ats,
            Self::PriResp { .. } => CommandClass::Pri,
            Self::Resume { .. } | Self::StallTerm { .. } => CommandClass::Stall,
            Self::Sync(_) => CommandClass::Sync,
        }
    }

    /// The command's opcode.
    pub fn opcode(&self) -> u8 {
        use opcode as op;
        match self {
            Self::PrefetchConfig { .. } => op::PREFETCH_CONFIG,
            Self::PrefetchAddr { .. } => op::PREFETCH_ADDR,
            Self::CfgiSte { .. } => op::CFGI_STE,
            Self::CfgiSteRange { .. } | Self::CfgiAll => op::CFGI_STE_RANGE,
            Self::CfgiCd { .. } => op::CFGI_CD,
            Self::CfgiCdAll { .. } => op::CFGI_CD_ALL,
            Self::CfgiVmsPidm { .. } => op::CFGI_VMS_PIDM,
            Self::TlbiNhAll { .. } => op::TLBI_NH_ALL,
            Self::TlbiNhAsid { .. } => op::TLBI_NH_ASID,
            Self::TlbiNhVa { .. } => op::TLBI_NH_VA,
            Self::TlbiNhVaa { .. } => op::TLBI_NH_VAA,
            Self::TlbiEl3All => op::TLBI_EL3_ALL,
            Self::TlbiEl3Va { .. } => op::TLBI_EL3_VA,
            Self::TlbiEl2All => op::TLBI_EL2_ALL,
            Self::TlbiEl2Asid { .. } => op::TLBI_EL2_ASID,
            Self::TlbiEl2Va { .. } => op::TLBI_EL2_VA,
            Self::TlbiEl2Vaa { .. } => op::TLBI_EL2_VAA,
            Self::TlbiS12Vmall { .. } => op::TLBI_S12_VMALL,
            Self::TlbiS2Ipa { .. } => op::TLBI_S2_IPA,
            Self::TlbiNsnhAll => op::TLBI_NSNH_ALL,
            Self::AtcInv { .. } => op::ATC_INV,
            Self::PriResp { .. } => op::PRI_RESP,
            Self::Resume { .. } => op::RESUME,
            Self::StallTerm { .. } => op::STALL_TERM,
            Self::Sync(_) => op::SYNC,
        }
    }

    /// The specification's name of the command.
    pub fn name(&self) -> &'static str {
        match self {
            Self::PrefetchConfig { .. } => "CMD_PREFETCH_CONFIG",
            Self::PrefetchAddr { .. } => "CMD_PREFETCH_ADDR",
            Self::CfgiSte { .. } => "CMD_CFGI_STE",
            Self::CfgiSteRange { .. } => "CMD_CFGI_STE_RANGE",
            Self::CfgiCd { .. } => "CMD_CFGI_CD",
            Self::CfgiCdAll { .. } => "CMD_CFGI_CD_ALL",
            Self::CfgiAll => "CMD_CFGI_ALL",
            Self::CfgiVmsPidm { .. } => "CMD_CFGI_VMS_PIDM",
            Self::TlbiNhAll { .. } => "CMD_TLBI_NH_ALL",
            Self::TlbiNhAsid { .. } => "CMD_TLBI_NH_ASID",
            Self::TlbiNhVa { .. } => "CMD_TLBI_NH_VA",
            Self::TlbiNhVaa { .. } => "CMD_TLBI_NH_VAA",
            Self::TlbiEl3All => "CMD_TLBI_EL3_ALL",
            Self::TlbiEl3Va { .. } => "CMD_TLBI_EL3_VA",
            Self::TlbiEl2All => "CMD_TLBI_EL2_ALL",
            Self::TlbiEl2Asid { .. } => "CMD_TLBI_EL2_ASID",
            Self::TlbiEl2Va { .. } => "CMD_TLBI_EL2_VA",
            Self::TlbiEl2Vaa { .. } => "CMD_TLBI_EL2_VAA",
            Self::TlbiS12Vmall { .. } => "CMD_TLBI_S12_VMALL",
            Self::TlbiS2Ipa { .. } => "CMD_TLBI_S2_IPA",
            Self::TlbiNsnhAll => "CMD_TLBI_NSNH_ALL",
            Self::AtcInv { .. } => "CMD_ATC_INV",
            Self::PriResp { .. } => "CMD_PRI_RESP",
            Self::Resume { .. } => "CMD_RESUME",
            Self::StallTerm { .. } => "CMD_STALL_TERM",
            Self::Sync(_) => "CMD_SYNC",
        }
    }

    /// The checks that depend on the SMMU's features (`f` is what the queue's SMMU offers: the
    /// physical features for Portcullis' queue, the emulated ones for the host's): commands for a
    /// stage or Exception level the SMMU lacks, ATS/PRI/stall commands without those features,
    /// range invalidation without `IDR3.RIL`. EL3 invalidations are never legal on the
    /// Non-secure queue.
    pub fn check_features(&self, f: &SmmuFeatures) -> Result<(), CommandError> {
        let need = |ok: bool, feature: &'static str| {
            if ok {
                Ok(())
            } else {
                Err(CommandError::NotSupported { feature })
            }
        };
        match self.class() {
            CommandClass::Stage1Tlb => need(f.stage1, "stage 1")?,
            CommandClass::Stage2 => need(f.stage2, "stage 2")?,
            CommandClass::El2Tlb => need(f.hyp, "EL2 (IDR0.Hyp)")?,
            CommandClass::El3Tlb => {
                return Err(CommandError::NotSupported {
                    feature: "Secure Command queue",
                });
            }
            CommandClass::Ats => need(f.ats, "ATS")?,
            CommandClass::Pri => need(f.pri, "PRI")?,
            CommandClass::Stall => need(
                f.stall_model != StallModel::TerminateOnly,
                "the stall model",
            )?,
            CommandClass::Prefetch | CommandClass::ConfigInvalidation | CommandClass::Sync => {}
        }
        match self {
            Self::CfgiCd { .. } | Self::CfgiCdAll { .. } => need(f.stage1, "stage 1")?,
            Self::CfgiVmsPidm { .. } => need(f.mpam, "MPAM")?,
            _ => {}
        }
        if let Some(scope) = self.scope() {
            if scope.granule != TlbiGranule::Any {
                need(f.ril, "range invalidation (IDR3.RIL)")?;
            }
            if scope.scale > 31 {
                need(f.ds, "6-bit SCALE (IDR5.DS)")?;
            }
            // 16KB granule with TTL == 1 is Reserved without DS and treated as TTL == 0, so
            // with NUM == SCALE == 0 it is the Reserved "granule, no range, no hint" encoding.
            if scope.granule == TlbiGranule::K16
                && scope.ttl == 1
                && !f.ds
                && scope.num == 0
                && scope.scale == 0
            {
                return Err(CommandError::ReservedValue {
                    field: "TLBI TTL",
                    value: 1,
                });
            }
        }
        Ok(())
    }

    /// [`Command::check_features`] with the host's view of the SMMU, plus the classes the host
    /// may never use.
    pub fn check_host(&self, host_features: &SmmuFeatures) -> Result<(), CommandError> {
        let class = self.class();
        if !class.host_may_issue() {
            return Err(CommandError::NotForHost(class));
        }
        self.check_features(host_features)
    }

    fn scope(&self) -> Option<&TlbiScope> {
        match self {
            Self::TlbiNhVa { scope, .. }
            | Self::TlbiNhVaa { scope, .. }
            | Self::TlbiEl3Va { scope, .. }
            | Self::TlbiEl2Va { scope, .. }
            | Self::TlbiEl2Vaa { scope, .. }
            | Self::TlbiS2Ipa { scope, .. } => Some(scope),
            _ => None,
        }
    }

    /// The command as it goes into a Command queue.
    ///
    /// # Panics
    ///
    /// If a parameter does not fit its field or is one the decoder refuses (a SubstreamID above
    /// 20 bits, an unaligned address, Range above 30, a range scope without a granule, ...): a
    /// command Portcullis built wrongly. Every command [`Command::decode`] returns encodes.
    pub fn encode(&self) -> [u64; 2] {
        let op = u64::from(self.opcode());
        let fit = |v: u64, bits: u32, name: &str| -> u64 {
            assert!(
                v >> bits == 0,
                "Command::encode: {name} = {v:#x} does not fit {bits} bits"
            );
            v
        };
        let stream = |sid: StreamId, ssid: Option<SubstreamId>| {
            let mut w = CMD0::OPCODE.val(op) + CMD0::SID.val(u64::from(sid));
            if let Some(s) = ssid {
                assert!(
                    s <= SSID_MAX,
                    "Command::encode: SubstreamID {s:#x} above 20 bits"
                );
                w += CMD0::SSV::SET + CMD0::SSID.val(u64::from(s));
            }
            w.value
        };
        let page = |addr: u64, name: &str| -> u64 {
            assert!(
                addr & 0xfff == 0,
                "Command::encode: {name} {addr:#x} not page aligned"
            );
            addr
        };
        let tlbi0 = |vmid: u16, asid: u16, scope: Option<&TlbiScope>| {
            let (num, scale) = scope.map_or((0, 0), |s| (s.num, s.scale));
            (CMD0_TLBI::OPCODE.val(op)
                + CMD0_TLBI::VMID.val(u64::from(vmid))
                + CMD0_TLBI::ASID.val(u64::from(asid))
                + CMD0_TLBI::NUM.val(fit(num.into(), 5, "NUM"))
                + CMD0_TLBI::SCALE.val(fit(scale.into(), 6, "SCALE")))
            .value
        };
        let tlbi1 = |addr: u64, scope: &TlbiScope| {
            let ranged = (scope.ttl, scope.num, scope.scale) != (0, 0, 0);
            assert!(
                ranged == (scope.granule != TlbiGranule::Any),
                "Command::encode: TLBI range fields {scope:?} inconsistent with the granule"
            );
            (CMD1_TLBI::LEAF.val(u64::from(scope.leaf))
                + CMD1_TLBI::TTL.val(fit(scope.ttl.into(), 2, "TTL"))
                + CMD1_TLBI::TG.val(scope.granule.encoding()))
            .value
                | page(addr, "TLBI address")
        };
        match *self {
            Self::PrefetchConfig { sid, ssid } => [stream(sid, ssid), 0],
            Self::PrefetchAddr {
                sid,
                ssid,
                addr,
                size,
                stride,
            } => {
                let w1 = CMD1_PREFETCH::SIZE.val(fit(size.into(), 5, "Size"))
                    + CMD1_PREFETCH::STRIDE.val(fit(stride.into(), 5, "Stride"));
                [stream(sid, ssid), w1.value | page(addr, "prefetch address")]
            }
            Self::CfgiSte { sid, leaf } => [stream(sid, None), u64::from(leaf)],
            Self::CfgiSteRange { sid, range } => {
                assert!(
                    range <= 30,
                    "Command::encode: CFGI_STE_RANGE range {range} (31 is CFGI_ALL)"
                );
                [stream(sid, None), CMD1_CFGI::RANGE.val(range.into()).value]
            }
            Self::CfgiAll => [stream(0, None), CMD1_CFGI::RANGE.val(31).value],
            Self::CfgiCd { sid, ssid, leaf } => {
                assert!(
                    ssid <= SSID_MAX,
                    "Command::encode: SubstreamID {ssid:#x} above 20 bits"
                );
                let w0 = CMD0::OPCODE.val(op)
                    + CMD0::SID.val(u64::from(sid))
                    + CMD0::SSID.val(u64::from(ssid));
                [w0.value, u64::from(leaf)]
            }
            Self::CfgiCdAll { sid } | Self::StallTerm { sid } => [stream(sid, None), 0],
            Self::CfgiVmsPidm { vmid } | Self::TlbiNhAll { vmid } | Self::TlbiS12Vmall { vmid } => {
                [tlbi0(vmid, 0, None), 0]
            }
            Self::TlbiNhAsid { vmid, asid } => [tlbi0(vmid, asid, None), 0],
            Self::TlbiNhVa {
                vmid,
                asid,
                va,
                scope,
            } => [tlbi0(vmid, asid, Some(&scope)), tlbi1(va, &scope)],
            Self::TlbiNhVaa { vmid, va, scope } => {
                [tlbi0(vmid, 0, Some(&scope)), tlbi1(va, &scope)]
            }
            Self::TlbiEl3All | Self::TlbiEl2All | Self::TlbiNsnhAll => [op, 0],
            Self::TlbiEl3Va { va, scope } | Self::TlbiEl2Vaa { va, scope } => {
                [tlbi0(0, 0, Some(&scope)), tlbi1(va, &scope)]
            }
            Self::TlbiEl2Asid { asid } => [tlbi0(0, asid, None), 0],
            Self::TlbiEl2Va { asid, va, scope } => {
                [tlbi0(0, asid, Some(&scope)), tlbi1(va, &scope)]
            }
            Self::TlbiS2Ipa { vmid, ipa, scope } => {
                assert!(ipa.0 >> 56 == 0, "Command::encode: IPA {ipa} above 56 bits");
                [tlbi0(vmid, 0, Some(&scope)), tlbi1(ipa.0, &scope)]
            }
            Self::AtcInv {
                sid,
                ssid,
                global,
                addr,
                size,
            } => {
                assert!(size <= 52, "Command::encode: ATC_INV size {size} above 52");
                let w0 = stream(sid, ssid) | CMD0::GLOBAL.val(u64::from(global)).value;
                [
                    w0,
                    CMD1_ATC::SIZE.val(size.into()).value | page(addr, "ATC address"),
                ]
            }
            Self::PriResp {
                sid,
                ssid,
                prg_index,
                resp,
            } => {
                let resp = match resp {
                    PriResponse::Failure => CMD1_PRI::RESP::Failure,
                    PriResponse::InvalidRequest => CMD1_PRI::RESP::InvalidRequest,
                    PriResponse::Success => CMD1_PRI::RESP::Success,
                };
                let w1 = CMD1_PRI::PRGINDEX.val(fit(prg_index.into(), 9, "PRGIndex")) + resp;
                [stream(sid, ssid), w1.value]
            }
            Self::Resume { sid, stag, action } => {
                let (ac, ab) = match action {
                    ResumeAction::Retry => (1, 0),
                    ResumeAction::Terminate { abort } => (0, u64::from(abort)),
                };
                let w0 = CMD0_RESUME::OPCODE.val(op)
                    + CMD0_RESUME::AC.val(ac)
                    + CMD0_RESUME::AB.val(ab)
                    + CMD0_RESUME::SID.val(u64::from(sid));
                [w0.value, u64::from(stag)]
            }
            Self::Sync(s) => {
                let cs = match s.signal {
                    SyncSignal::None => CMD0_SYNC::CS::None,
                    SyncSignal::Irq => CMD0_SYNC::CS::Irq,
                    SyncSignal::Sev => CMD0_SYNC::CS::Sev,
                };
                let w0 = CMD0_SYNC::OPCODE.val(op)
                    + cs
                    + CMD0_SYNC::MSH.val(fit(s.msh.into(), 2, "MSH"))
                    + CMD0_SYNC::MSIATTR.val(fit(s.msi_attr.into(), 4, "MSIAttr"))
                    + CMD0_SYNC::MSIDATA.val(u64::from(s.msi_data));
                assert!(
                    s.msi_addr & 0b11 == 0 && s.msi_addr >> 56 == 0,
                    "Command::encode: MSI address {:#x} not encodable",
                    s.msi_addr
                );
                [w0.value, s.msi_addr]
            }
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        match self {
            Self::CfgiAll | Self::TlbiEl3All | Self::TlbiEl2All | Self::TlbiNsnhAll => Ok(()),
            other => {
                let s = alloc::format!("{other:?}");
                // The Debug form after the variant name holds the parameters.
                match s.find(['{', '(']) {
                    Some(i) => write!(f, " {}", &s[i..]),
                    None => Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn features() -> SmmuFeatures {
        SmmuFeatures::from_idr(0x080f_7e3f, 0x0e73_9d18, 0x0000_003c, 0x0040_0075)
    }

    /// Encodings written from the field layouts of chapter 4 by absolute bit number.
    #[test]
    fn vectors() {
        // CMD_CFGI_STE(StreamID 0x1234, Leaf): opcode 0x03, StreamID [63:32], Leaf [64].
        assert_eq!(
            Command::CfgiSte {
                sid: 0x1234,
                leaf: true
            }
            .encode(),
            [0x1234_0000_0003, 1]
        );
        // CMD_CFGI_ALL: CFGI_STE_RANGE with Range [68:64] == 31.
        assert_eq!(Command::CfgiAll.encode(), [0x04, 31]);
        assert_eq!(
            Command::decode([0xffff_ffff_0000_0004, 31]),
            Ok(Command::CfgiAll)
        );
        // CMD_CFGI_CD: SubstreamID [31:12].
        assert_eq!(
            Command::CfgiCd {
                sid: 7,
                ssid: 0xabcde,
                leaf: false
            }
            .encode(),
            [0x7_abcd_e005, 0]
        );
        // CMD_TLBI_NH_VA: VMID [47:32], ASID [63:48], Leaf [64], Address [127:76].
        let va = Command::TlbiNhVa {
            vmid: 0x11,
            asid: 0x22,
            va: 0xffff_8000_1234_5000,
            scope: TlbiScope::single(true),
        };
        assert_eq!(va.encode(), [0x0022_0011_0000_0012, 0xffff_8000_1234_5001]);
        // With a range: NUM [16:12], SCALE [25:20], TTL [73:72], TG [75:74].
        let scope = TlbiScope {
            leaf: false,
            granule: TlbiGranule::K4,
            ttl: 3,
            num: 7,
            scale: 2,
        };
        let ranged = Command::TlbiNhVaa {
            vmid: 1,
            va: 0x4000_0000,
            scope,
        };
        assert_eq!(
            ranged.encode(),
            [
                1 << 32 | 2 << 20 | 7 << 12 | 0x13,
                0x4000_0000 | 0b01 << 10 | 3 << 8
            ]
        );
        assert_eq!(scope.range_bytes(), Some(8 * 4 * 4096));
        // CMD_TLBI_S2_IPA: IPA[55:12] at [119:76].
        let ipa = Command::TlbiS2Ipa {
            vmid: 9,
            ipa: Ipa(0x80_0000_1000),
            scope: TlbiScope::single(false),
        };
        assert_eq!(ipa.encode(), [9 << 32 | 0x2a, 0x80_0000_1000]);
        // CMD_SYNC: CS [13:12] = SIG_IRQ, MSH [23:22], MSIAttr [27:24], MSIData [63:32],
        // MSIAddress [119:66].
        let sync = Command::Sync(Sync {
            signal: SyncSignal::Irq,
            msh: 0b11,
            msi_attr: 0xf,
            msi_data: 0xdead_beef,
            msi_addr: 0x8_0000_0040,
        });
        assert_eq!(
            sync.encode(),
            [
                0xdead_beef_0000_0000 | 0xf << 24 | 0b11 << 22 | 1 << 12 | 0x46,
                0x8_0000_0040
            ]
        );
        assert_eq!(Command::Sync(Sync::POLL).encode(), [0x46, 0]);
        // CMD_RESUME: Ac [12], Ab [13], StreamID [63:32], STAG [79:64].
        let resume = Command::Resume {
            sid: 3,
            stag: 0x55,
            action: ResumeAction::Terminate { abort: true },
        };
        assert_eq!(resume.encode(), [3 << 32 | 1 << 13 | 0x44, 0x55]);
        // CMD_ATC_INV: Global [9], SSV [11], Size [69:64], Address [127:76].
        let atc = Command::AtcInv {
            sid: 0x100,
            ssid: Some(1),
            global: true,
            addr: 0x1000,
            size: 52,
        };
        assert_eq!(
            atc.encode(),
            [0x100 << 32 | 1 << 12 | 1 << 11 | 1 << 9 | 0x40, 0x1000 | 52]
        );
        // CMD_PRI_RESP: PRGIndex [72:64], Resp [77:76].
        let pri = Command::PriResp {
            sid: 1,
            ssid: None,
            prg_index: 0x1ff,
            resp: PriResponse::Success,
        };
        assert_eq!(pri.encode(), [1 << 32 | 0x41, 0b10 << 12 | 0x1ff]);
        for c in [va, ranged, ipa, sync, resume, atc, pri] {
            assert_eq!(Command::decode(c.encode()), Ok(c));
        }
    }

    #[test]
    fn illegal_encodings() {
        // Reserved opcodes.
        for op in [0x00u64, 0x08, 0x14, 0x19, 0x31, 0x42, 0x47, 0x90, 0xff] {
            assert_eq!(
                Command::decode([op, 0]),
                Err(CommandError::UnknownOpcode(op as u8))
            );
        }
        // Secure-only and IMPLEMENTATION DEFINED opcodes.
        assert_eq!(
            Command::decode([0x60, 0]),
            Err(CommandError::UnsupportedOpcode(0x60))
        );
        assert_eq!(
            Command::decode([0x85, 0]),
            Err(CommandError::UnsupportedOpcode(0x85))
        );
        // SSec on the Non-secure queue.
        assert_eq!(
            Command::decode([1 << 10 | 0x03, 0]),
            Err(CommandError::SecureStream)
        );
        // RES0 bits: CFGI_STE with bit 8 set; CMD_SYNC with MSIAddress[1:0].
        assert_eq!(
            Command::decode([1 << 8 | 0x03, 0]),
            Err(CommandError::ReservedBits {
                word: 0,
                bits: 1 << 8
            })
        );
        assert_eq!(
            Command::decode([0x46, 0b10]),
            Err(CommandError::ReservedBits {
                word: 1,
                bits: 0b10
            })
        );
        // CMD_SYNC CS == 0b11; PRI_RESP Resp == 0b11.
        assert!(matches!(
            Command::decode([0b11 << 12 | 0x46, 0]),
            Err(CommandError::ReservedValue { .. })
        ));
        assert!(matches!(
            Command::decode([0x41, 0b11 << 12]),
            Err(CommandError::ReservedValue { .. })
        ));
        // TLBI: range fields without a granule are RES0; a granule without range or hint is
        // Reserved.
        assert!(matches!(
            Command::decode([1 << 12 | 0x12, 0]),
            Err(CommandError::ReservedBits { word: 0, .. })
        ));
        assert!(matches!(
            Command::decode([0x12, 1 << 8]),
            Err(CommandError::ReservedBits { word: 1, .. })
        ));
        assert!(matches!(
            Command::decode([0x12, 0b01 << 10]),
            Err(CommandError::ReservedValue { .. })
        ));
        // TLBI_S2_IPA: address bits above 55 are RES0.
        assert!(matches!(
            Command::decode([0x2a, 1 << 60]),
            Err(CommandError::ReservedBits { word: 1, .. })
        ));
        // ATC_INV with Size above 52.
        assert!(matches!(
            Command::decode([0x40, 53]),
            Err(CommandError::ReservedValue { .. })
        ));
        assert_eq!(
            CommandError::SecureStream.cerror(),
            CommandQueueError::Illegal
        );
    }

    #[test]
    fn classes_and_host_rules() {
        let f = features();
        let host = SmmuFeatures {
            stage2: false,
            hyp: false,
            ..f
        };
        let s2 = Command::TlbiS12Vmall { vmid: 1 };
        assert_eq!(s2.class(), CommandClass::Stage2);
        assert_eq!(
            s2.check_host(&host),
            Err(CommandError::NotForHost(CommandClass::Stage2))
        );
        assert_eq!(s2.check_features(&f), Ok(()));
        assert_eq!(
            Command::TlbiEl2All.check_host(&host),
            Err(CommandError::NotForHost(CommandClass::El2Tlb))
        );
        assert_eq!(Command::TlbiNsnhAll.class(), CommandClass::Stage2);
        assert!(Command::TlbiEl3All.check_features(&f).is_err());
        let nh = Command::TlbiNhAsid { vmid: 0, asid: 3 };
        assert_eq!(nh.class(), CommandClass::Stage1Tlb);
        assert_eq!(nh.check_host(&host), Ok(()));
        assert_eq!(Command::CfgiAll.class(), CommandClass::ConfigInvalidation);
        assert_eq!(Command::Sync(Sync::POLL).class(), CommandClass::Sync);
        // This SMMU has no RIL: ranged invalidations are illegal on it.
        let ranged = Command::TlbiNhVaa {
            vmid: 0,
            va: 0,
            scope: TlbiScope {
                leaf: true,
                granule: TlbiGranule::K4,
                ttl: 3,
                num: 0,
                scale: 0,
            },
        };
        assert!(matches!(
            ranged.check_features(&f),
            Err(CommandError::NotSupported { .. })
        ));
        assert_eq!(
            ranged.check_features(&SmmuFeatures { ril: true, ..f }),
            Ok(())
        );
        // No MPAM here.
        assert!(Command::CfgiVmsPidm { vmid: 1 }.check_features(&f).is_err());
        assert_eq!(alloc::format!("{}", Command::CfgiAll), "CMD_CFGI_ALL");
        assert_eq!(
            alloc::format!("{}", Command::CfgiCdAll { sid: 5 }),
            "CMD_CFGI_CD_ALL { sid: 5 }"
        );
    }

    fn ssid() -> impl Strategy<Value = Option<SubstreamId>> {
        proptest::option::of(0..=SSID_MAX)
    }

    fn scope() -> impl Strategy<Value = TlbiScope> {
        prop_oneof![
            any::<bool>().prop_map(TlbiScope::single),
            (any::<bool>(), 1u64..4, 0u8..4, 0u8..32, 0u8..64)
                .prop_filter("reserved range encoding", |(_, _, ttl, num, scale)| (
                    *ttl, *num, *scale
                ) != (
                    0, 0, 0
                ))
                .prop_map(|(leaf, tg, ttl, num, scale)| TlbiScope {
                    leaf,
                    granule: TlbiGranule::from_encoding(tg),
                    ttl,
                    num,
                    scale
                }),
        ]
    }

    fn page() -> impl Strategy<Value = u64> {
        any::<u64>().prop_map(|a| a & !0xfff)
    }

    fn command() -> impl Strategy<Value = Command> {
        let sid = any::<u32>();
        prop_oneof![
            (sid, ssid()).prop_map(|(sid, ssid)| Command::PrefetchConfig { sid, ssid }),
            (sid, ssid(), page(), 0u8..32, 0u8..32).prop_map(|(sid, ssid, addr, size, stride)| {
                Command::PrefetchAddr {
                    sid,
                    ssid,
                    addr,
                    size,
                    stride,
                }
            }),
            (sid, any::<bool>()).prop_map(|(sid, leaf)| Command::CfgiSte { sid, leaf }),
            (sid, 0u8..=30).prop_map(|(sid, range)| Command::CfgiSteRange { sid, range }),
            (sid, 0..=SSID_MAX, any::<bool>()).prop_map(|(sid, ssid, leaf)| Command::CfgiCd {
                sid,
                ssid,
                leaf
            }),
            sid.prop_map(|sid| Command::CfgiCdAll { sid }),
            Just(Command::CfgiAll),
            any::<u16>().prop_map(|vmid| Command::CfgiVmsPidm { vmid }),
            any::<u16>().prop_map(|vmid| Command::TlbiNhAll { vmid }),
            any::<(u16, u16)>().prop_map(|(vmid, asid)| Command::TlbiNhAsid { vmid, asid }),
            (any::<(u16, u16)>(), page(), scope()).prop_map(|((vmid, asid), va, scope)| {
                Command::TlbiNhVa {
                    vmid,
                    asid,
                    va,
                    scope,
                }
            }),
            (any::<u16>(), page(), scope()).prop_map(|(vmid, va, scope)| Command::TlbiNhVaa {
                vmid,
                va,
                scope
            }),
            Just(Command::TlbiEl3All),
            (page(), scope()).prop_map(|(va, scope)| Command::TlbiEl3Va { va, scope }),
            Just(Command::TlbiEl2All),
            any::<u16>().prop_map(|asid| Command::TlbiEl2Asid { asid }),
            (any::<u16>(), page(), scope()).prop_map(|(asid, va, scope)| Command::TlbiEl2Va {
                asid,
                va,
                scope
            }),
            (page(), scope()).prop_map(|(va, scope)| Command::TlbiEl2Vaa { va, scope }),
            any::<u16>().prop_map(|vmid| Command::TlbiS12Vmall { vmid }),
            (any::<u16>(), (0u64..1 << 44), scope()).prop_map(|(vmid, ipa, scope)| {
                Command::TlbiS2Ipa {
                    vmid,
                    ipa: Ipa(ipa << 12),
                    scope,
                }
            }),
            Just(Command::TlbiNsnhAll),
            (sid, ssid(), any::<bool>(), page(), 0u8..=52).prop_map(
                |(sid, ssid, global, addr, size)| Command::AtcInv {
                    sid,
                    ssid,
                    global,
                    addr,
                    size
                }
            ),
            (sid, ssid(), 0u16..512, 0u8..3).prop_map(|(sid, ssid, prg_index, r)| {
                Command::PriResp {
                    sid,
                    ssid,
                    prg_index,
                    resp: [
                        PriResponse::Failure,
                        PriResponse::InvalidRequest,
                        PriResponse::Success,
                    ][r as usize],
                }
            }),
            (sid, any::<u16>(), proptest::option::of(any::<bool>())).prop_map(|(sid, stag, t)| {
                let action = t.map_or(ResumeAction::Retry, |abort| ResumeAction::Terminate {
                    abort,
                });
                Command::Resume { sid, stag, action }
            }),
            sid.prop_map(|sid| Command::StallTerm { sid }),
            (0u8..3, 0u8..4, 0u8..16, any::<u32>(), (0u64..1 << 54)).prop_map(
                |(cs, msh, msi_attr, msi_data, a)| {
                    let signal = [SyncSignal::None, SyncSignal::Irq, SyncSignal::Sev][cs as usize];
                    Command::Sync(Sync {
                        signal,
                        msh,
                        msi_attr,
                        msi_data,
                        msi_addr: a << 2,
                    })
                }
            ),
        ]
    }

    proptest! {
        /// decode(encode(c)) == c for every valid command.
        #[test]
        fn roundtrip(c in command()) {
            let raw = c.encode();
            prop_assert_eq!(raw[0] as u8, c.opcode());
            prop_assert_eq!(Command::decode(raw), Ok(c));
            let _ = c.check_features(&features());
            let _ = alloc::format!("{c}");
        }

        /// Any 16 bytes decode without panicking; what decodes re-encodes to a command that
        /// decodes equal, and differs from the input only in IGNORED fields.
        #[test]
        fn decode_total(w0 in any::<u64>(), w1 in any::<u64>(), op in prop_oneof![any::<u8>(), (0u8..0x48)]) {
            let raw = [(w0 & !0xff) | u64::from(op), w1];
            match Command::decode(raw) {
                Ok(c) => {
                    let back = c.encode();
                    prop_assert_eq!(Command::decode(back), Ok(c));
                    prop_assert_eq!(back[1] & !raw[1], 0);
                    prop_assert_eq!(back[0] & !raw[0], 0);
                }
                Err(e) => {
                    prop_assert_eq!(e.cerror(), CommandQueueError::Illegal);
                    let _ = alloc::format!("{e}");
                }
            }
        }

        /// Setting any single bit outside a valid command's fields makes it illegal, or is an
        /// IGNORED field.
        #[test]
        fn reserved_bits_detected(c in command(), bit in 8u32..128) {
            let mut raw = c.encode();
            let (w, b) = ((bit / 64) as usize, bit % 64);
            if raw[w] & (1 << b) != 0 { return Ok(()); }
            raw[w] |= 1 << b;
            if let Ok(d) = Command::decode(raw) {
                // Only a parameter changed (or an IGNORED field was set): still the same command.
                prop_assert_eq!(d.opcode(), c.opcode());
            }
        }
    }
}
