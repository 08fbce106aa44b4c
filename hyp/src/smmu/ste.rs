//! The Stream table: Stream Table Entries, level-1 descriptors and the table layout
//! (sections 3.3.2, 5.1 "L1STD, Level 1 Stream Table Descriptor", 5.2 "STE, Stream Table Entry").
//!
//! Two kinds of STE go through here:
//! - the STEs Portcullis writes into its own (physical) Stream table, built with [`Ste::abort`],
//!   [`Ste::bypass`], [`Ste::stage2`] and [`Ste::nested`];
//! - the STEs the host writes into the Stream table of the emulated SMMU, decoded with
//!   [`HostSte::decode`] into the few things a host may ask for (valid, abort/bypass/stage 1, and
//!   its stage 1 fields). The emulated SMMU offers no stage 2 and no EL2 StreamWorld, so an STE
//!   using either is ILLEGAL from the host's point of view, exactly as on hardware without them.
//!
//! The physical driver must publish an STE the architected way (section 3.21.3): write words 1..7,
//! make them visible, then word 0 (which holds V and Config), then invalidate with CMD_CFGI_STE.

use core::fmt;

use tock_registers::LocalRegisterCopy;
use tock_registers::fields::FieldValue;
use tock_registers::register_bitfields;

use super::event::EventId;
use super::regs::{SmmuFeatures, StallModel, address_size_encoding};
use super::{Ipa, Pa, StreamId, TableAddress};

register_bitfields! [u64,
    /// STE bits [63:0].
    pub STE0 [
        V OFFSET(0) NUMBITS(1) [],
        CONFIG OFFSET(1) NUMBITS(3) [
            Abort = 0b000,
            Bypass = 0b100,
            Stage1 = 0b101,
            Stage2 = 0b110,
            Nested = 0b111
        ],
        S1FMT OFFSET(4) NUMBITS(2) [
            Linear = 0b00,
            TwoLevel4K = 0b01,
            TwoLevel64K = 0b10
        ],
        /// Bits [55:6] of the CD (or L1CD table) address.
        S1CONTEXTPTR OFFSET(6) NUMBITS(50) [],
        S1CDMAX OFFSET(59) NUMBITS(5) []
    ],
    /// STE bits [127:64].
    pub STE1 [
        S1DSS OFFSET(0) NUMBITS(2) [
            Terminate = 0b00,
            Bypass = 0b01,
            Substream0 = 0b10
        ],
        S1CIR OFFSET(2) NUMBITS(2) [],
        S1COR OFFSET(4) NUMBITS(2) [],
        S1CSH OFFSET(6) NUMBITS(2) [],
        S2HWU59 OFFSET(8) NUMBITS(1) [],
        S2HWU60 OFFSET(9) NUMBITS(1) [],
        S2HWU61 OFFSET(10) NUMBITS(1) [],
        S2HWU62 OFFSET(11) NUMBITS(1) [],
        DRE OFFSET(12) NUMBITS(1) [],
        CONT OFFSET(13) NUMBITS(4) [],
        DCP OFFSET(17) NUMBITS(1) [],
        PPAR OFFSET(18) NUMBITS(1) [],
        MEV OFFSET(19) NUMBITS(1) [],
        SW_RESERVED OFFSET(20) NUMBITS(4) [],
        S1PIE OFFSET(24) NUMBITS(1) [],
        S2FWB OFFSET(25) NUMBITS(1) [],
        S1MPAM OFFSET(26) NUMBITS(1) [],
        S1STALLD OFFSET(27) NUMBITS(1) [],
        EATS OFFSET(28) NUMBITS(2) [
            Abort = 0b00,
            Full = 0b01,
            SplitStage = 0b10,
            FullWithDpt = 0b11
        ],
        STRW OFFSET(30) NUMBITS(2) [
            El1 = 0b00,
            El2 = 0b10
        ],
        MEMATTR OFFSET(32) NUMBITS(4) [],
        MTCFG OFFSET(36) NUMBITS(1) [],
        ALLOCCFG OFFSET(37) NUMBITS(4) [],
        SHCFG OFFSET(44) NUMBITS(2) [
            NonShareable = 0b00,
            Incoming = 0b01,
            OuterShareable = 0b10,
            InnerShareable = 0b11
        ],
        NSCFG OFFSET(46) NUMBITS(2) [],
        PRIVCFG OFFSET(48) NUMBITS(2) [],
        INSTCFG OFFSET(50) NUMBITS(2) []
    ],
    /// STE bits [191:128].
    pub STE2 [
        S2VMID OFFSET(0) NUMBITS(16) [],
        S2T0SZ OFFSET(32) NUMBITS(6) [],
        S2SL0 OFFSET(38) NUMBITS(2) [],
        S2IR0 OFFSET(40) NUMBITS(2) [],
        S2OR0 OFFSET(42) NUMBITS(2) [],
        S2SH0 OFFSET(44) NUMBITS(2) [],
        S2TG OFFSET(46) NUMBITS(2) [
            Gran4K = 0b00,
            Gran64K = 0b01,
            Gran16K = 0b10
        ],
        S2PS OFFSET(48) NUMBITS(3) [],
        S2AA64 OFFSET(51) NUMBITS(1) [],
        S2ENDI OFFSET(52) NUMBITS(1) [],
        S2AFFD OFFSET(53) NUMBITS(1) [],
        S2PTW OFFSET(54) NUMBITS(1) [],
        S2HD OFFSET(55) NUMBITS(1) [],
        S2HA OFFSET(56) NUMBITS(1) [],
        S2S OFFSET(57) NUMBITS(1) [],
        S2R OFFSET(58) NUMBITS(1) [],
        S2HAFT OFFSET(59) NUMBITS(1) [],
        S2PIE OFFSET(60) NUMBITS(1) [],
        S2POE OFFSET(61) NUMBITS(1) [],
        DPT_VMATCH OFFSET(62) NUMBITS(2) []
    ],
    /// STE bits [255:192].
    pub STE3 [
        S2NSW OFFSET(0) NUMBITS(1) [],
        S2NSA OFFSET(1) NUMBITS(1) [],
        S2SL0_2 OFFSET(2) NUMBITS(1) [],
        S2DS OFFSET(3) NUMBITS(1) [],
        /// Bits [55:4] of the stage 2 translation table base.
        S2TTB OFFSET(4) NUMBITS(52) [],
        S2SKL OFFSET(61) NUMBITS(2) []
    ],
    /// L1STD, the 8-byte level-1 Stream table descriptor (section 5.1).
    pub L1STD [
        SPAN OFFSET(0) NUMBITS(5) [],
        /// Bits [55:6] of the level 2 array.
        L2PTR OFFSET(6) NUMBITS(50) []
    ]
];

/// Size of an STE in bytes.
pub const STE_SIZE: usize = 64;
/// Size of an L1STD in bytes.
pub const L1STD_SIZE: usize = 8;

/// A translation granule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Granule {
    K4,
    K16,
    K64,
}

impl Granule {
    pub const fn bytes(self) -> u64 {
        match self {
            Self::K4 => 4 << 10,
            Self::K16 => 16 << 10,
            Self::K64 => 64 << 10,
        }
    }

    /// The TCR_ELx.TG0-style encoding used by STE.S2TG and CD.TG0.
    pub const fn tg0(self) -> u64 {
        match self {
            Self::K4 => 0b00,
            Self::K64 => 0b01,
            Self::K16 => 0b10,
        }
    }

    /// Decodes a TG0-style encoding; 0b11 is Reserved.
    pub const fn from_tg0(tg: u64) -> Option<Self> {
        match tg {
            0b00 => Some(Self::K4),
            0b01 => Some(Self::K64),
            0b10 => Some(Self::K16),
            _ => None,
        }
    }

    /// Decodes a TCR_ELx.TG1-style encoding (CD.TG1); 0b00 is Reserved.
    pub const fn from_tg1(tg: u64) -> Option<Self> {
        match tg {
            0b01 => Some(Self::K16),
            0b10 => Some(Self::K4),
            0b11 => Some(Self::K64),
            _ => None,
        }
    }

    /// The TG1-style encoding.
    pub const fn tg1(self) -> u64 {
        match self {
            Self::K16 => 0b01,
            Self::K4 => 0b10,
            Self::K64 => 0b11,
        }
    }

    /// Whether the SMMU supports this granule (`IDR5.GRAN*`).
    pub const fn supported_by(self, f: &SmmuFeatures) -> bool {
        match self {
            Self::K4 => f.gran4k,
            Self::K16 => f.gran16k,
            Self::K64 => f.gran64k,
        }
    }
}

/// Attributes of the SMMU's accesses to a table (stage 2 walk, CD fetch): inner and outer
/// cacheability (0b00 Non-cacheable, 0b01 Write-Back RA, 0b10 Write-Through RA, 0b11 Write-Back
/// no-RA) and shareability (0b00 Non-shareable, 0b10 Outer, 0b11 Inner; 0b01 Reserved).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkAttrs {
    pub inner: u8,
    pub outer: u8,
    pub shareability: u8,
}

impl WalkAttrs {
    /// Write-back, read-allocate, inner shareable: what Portcullis uses for its own tables on a
    /// coherent SMMU.
    pub const WB_INNER_SHAREABLE: Self = Self {
        inner: 0b01,
        outer: 0b01,
        shareability: 0b11,
    };
    /// Non-cacheable: for an SMMU whose table walks are not coherent (`IDR0.COHACC == 0`).
    pub const NON_CACHEABLE: Self = Self {
        inner: 0b00,
        outer: 0b00,
        shareability: 0b10,
    };
}

/// The stream attribute overrides of STE word 1 (`MTCFG`/`MemAttr`, `ALLOCCFG`, `SHCFG`,
/// `PRIVCFG`, `INSTCFG`), as raw field values. They are RES0 unless `IDR1.ATTR_TYPES_OVR`
/// (memory type, allocation, shareability) or `IDR1.ATTR_PERMS_OVR` (privilege, instruction)
/// is set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttrOverrides {
    pub mtcfg: bool,
    pub mem_attr: u8,
    pub alloccfg: u8,
    pub shcfg: u8,
    pub privcfg: u8,
    pub instcfg: u8,
}

impl AttrOverrides {
    /// Use the incoming attributes of every transaction: SHCFG = "use incoming" where the SMMU
    /// has the field, all else zero.
    pub const fn incoming(f: &SmmuFeatures) -> Self {
        Self {
            mtcfg: false,
            mem_attr: 0,
            alloccfg: 0,
            shcfg: if f.attr_types_ovr { 0b01 } else { 0b00 },
            privcfg: 0,
            instcfg: 0,
        }
    }

    /// Keeps only the fields this SMMU implements, the others being RES0.
    pub const fn restricted_to(self, f: &SmmuFeatures) -> Self {
        let types = f.attr_types_ovr;
        let perms = f.attr_perms_ovr;
        Self {
            mtcfg: types && self.mtcfg,
            mem_attr: if types && self.mtcfg {
                self.mem_attr
            } else {
                0
            },
            alloccfg: if types { self.alloccfg } else { 0 },
            shcfg: if types { self.shcfg } else { 0 },
            privcfg: if perms { self.privcfg } else { 0 },
            instcfg: if perms { self.instcfg } else { 0 },
        }
    }

    fn decode(w1: &LocalRegisterCopy<u64, STE1::Register>) -> Self {
        Self {
            mtcfg: w1.is_set(STE1::MTCFG),
            mem_attr: w1.read(STE1::MEMATTR) as u8,
            alloccfg: w1.read(STE1::ALLOCCFG) as u8,
            shcfg: w1.read(STE1::SHCFG) as u8,
            privcfg: w1.read(STE1::PRIVCFG) as u8,
            instcfg: w1.read(STE1::INSTCFG) as u8,
        }
    }

    fn fields(&self) -> FieldValue<u64, STE1::Register> {
        STE1::MTCFG.val(u64::from(self.mtcfg))
            + STE1::MEMATTR.val(u64::from(self.mem_attr))
            + STE1::ALLOCCFG.val(u64::from(self.alloccfg))
            + STE1::SHCFG.val(u64::from(self.shcfg))
            + STE1::PRIVCFG.val(u64::from(self.privcfg))
            + STE1::INSTCFG.val(u64::from(self.instcfg))
    }
}

/// The stage 2 half of an STE that Portcullis writes: one of its prebuilt DMA policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage2Config {
    pub vmid: u16,
    /// Root of the stage 2 translation tables (the VTTBR_EL2-like base address).
    pub ttb: Pa,
    /// Size of the input (IPA) space, as `64 - bits` (VTCR_EL2.T0SZ).
    pub t0sz: u8,
    /// Starting level of the walk, encoded as VTCR_EL2.SL0.
    pub sl0: u8,
    pub granule: Granule,
    /// Output address size in bits (one of the sizes of `IDR5.OAS`).
    pub ps_bits: u8,
    pub walk: WalkAttrs,
    /// Record faults (S2R): a refused transaction leaves an event, which is the point of the fence.
    pub record_faults: bool,
    /// Stall faulting transactions (S2S) instead of terminating them.
    pub stall: bool,
    /// Access flag faults disabled (S2AFFD): Portcullis' tables have AF set, so this is moot.
    pub affd: bool,
    /// Protected table walk (S2PTW): stage 1 walks that land on Device memory fault.
    pub ptw: bool,
}

/// How a stage 1 configuration finds its Context descriptors (`STE.S1Fmt`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CdTableFormat {
    Linear,
    /// Two levels with 4KB leaf tables of 64 CDs.
    TwoLevel4K,
    /// Two levels with 64KB leaf tables of 1024 CDs.
    TwoLevel64K,
}

impl CdTableFormat {
    const fn encoding(self) -> u64 {
        match self {
            Self::Linear => 0b00,
            Self::TwoLevel4K => 0b01,
            Self::TwoLevel64K => 0b10,
        }
    }
}

/// What a transaction without a SubstreamID gets when substreams are enabled (`STE.S1DSS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultSubstream {
    /// Terminated, F_STREAM_DISABLED recorded.
    Terminate,
    /// Stage 1 is bypassed.
    Bypass,
    /// Translated with CD 0 (which is then unavailable to substream traffic).
    Substream0,
}

impl DefaultSubstream {
    const fn encoding(self) -> u64 {
        match self {
            Self::Terminate => 0b00,
            Self::Bypass => 0b01,
            Self::Substream0 => 0b10,
        }
    }
}

/// ATS configuration of a stream (`STE.EATS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eats {
    /// ATS Translation Requests refused.
    Abort,
    /// Full ATS: translation through all enabled stages.
    Full,
    /// Split-stage ATS: the endpoint gets IPAs (needs stage 2).
    SplitStage,
    /// Full ATS with Device Permission Table checks (`IDR3.DPT`); otherwise behaves as Abort.
    FullWithDpt,
}

impl Eats {
    const fn encoding(self) -> u64 {
        match self {
            Self::Abort => 0b00,
            Self::Full => 0b01,
            Self::SplitStage => 0b10,
            Self::FullWithDpt => 0b11,
        }
    }

    const fn from_encoding(v: u64) -> Self {
        match v & 0b11 {
            0b00 => Self::Abort,
            0b01 => Self::Full,
            0b10 => Self::SplitStage,
            _ => Self::FullWithDpt,
        }
    }
}

/// The stage 1 part of a host STE (`STE.Config == 0b101`): where the host's Context descriptors
/// are and how the SMMU should fetch them. The CD table address is an IPA, walked through stage 2
/// once Portcullis makes the stream nested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostStage1 {
    /// `S1ContextPtr`, with the bits the table alignment makes RES0 cleared (an allowed
    /// behaviour for non-zero RES0 bits there, section 5.2 S1Fmt).
    pub cd_table: Ipa,
    pub format: CdTableFormat,
    /// log2 of the number of CDs (`S1CDMax`); 0 means one CD, substreams disabled.
    pub cd_max: u8,
    pub default_substream: DefaultSubstream,
    /// Attributes of CD fetches (`S1CIR`, `S1COR`, `S1CSH`).
    pub cd_fetch: WalkAttrs,
    /// Stalls disallowed for stage 1 (`S1STALLD`).
    pub stall_disable: bool,
}

/// What the host asked for with an STE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostStreamConfig {
    /// Traffic is terminated with an abort and no event (`Config == 0b000`, and the Reserved
    /// values 0b001..0b011 which the architecture says behave as 0b000).
    Abort,
    /// No translation (`Config == 0b100`).
    Bypass,
    /// Stage 1 translation (`Config == 0b101`).
    Stage1(HostStage1),
}

/// A decoded host STE: the fields a host may set on an SMMU that offers it stage 1 only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostSteView {
    pub config: HostStreamConfig,
    pub eats: Eats,
    pub overrides: AttrOverrides,
    /// Event merging allowed (`MEV`).
    pub merge_events: bool,
    /// PRI page request auto-responses (`PPAR`).
    pub pri_auto_response: bool,
}

/// Why a host STE cannot be used. Every case is reported to the host as `C_BAD_STE` (section
/// 5.2.2, "Validity of STE").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SteError {
    /// `V == 0`.
    NotValid,
    /// `Config` enables stage 2, which the emulated SMMU does not offer (`IDR0.S2P == 0`).
    Stage2NotOffered,
    /// `Config` enables stage 1 on an SMMU without it.
    Stage1NotOffered,
    /// `S1CDMax` above the SubstreamID size.
    CdMaxTooLarge { cd_max: u8, ssid_bits: u8 },
    /// A two-level CD table without `IDR0.CD2L`.
    TwoLevelCdNotOffered,
    /// `S1STALLD == 1` where the stall model is not configurable.
    StallDisableNotAllowed,
    /// `S1ContextPtr` beyond the address size.
    ContextPtrOutOfRange { ptr: Ipa, limit_bits: u8 },
    /// Split-stage ATS (`EATS == 0b10`) without stage 2.
    SplitStageAtsWithoutStage2,
}

impl SteError {
    /// The event the SMMU records for a transaction that meets this STE.
    pub const fn event(&self) -> EventId {
        EventId::C_BAD_STE
    }
}

impl fmt::Display for SteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotValid => write!(f, "STE not valid (V == 0)"),
            Self::Stage2NotOffered => {
                write!(f, "STE enables stage 2, which this SMMU does not offer")
            }
            Self::Stage1NotOffered => {
                write!(f, "STE enables stage 1, which this SMMU does not offer")
            }
            Self::CdMaxTooLarge { cd_max, ssid_bits } => {
                write!(f, "STE.S1CDMax {cd_max} above SSIDSIZE {ssid_bits}")
            }
            Self::TwoLevelCdNotOffered => {
                write!(f, "STE selects a two-level CD table without CD2L")
            }
            Self::StallDisableNotAllowed => {
                write!(
                    f,
                    "STE.S1STALLD set but the stall model is not configurable"
                )
            }
            Self::ContextPtrOutOfRange { ptr, limit_bits } => {
                write!(
                    f,
                    "STE.S1ContextPtr {ptr} beyond {limit_bits}-bit address space"
                )
            }
            Self::SplitStageAtsWithoutStage2 => {
                write!(f, "STE selects split-stage ATS without stage 2")
            }
        }
    }
}

/// The decoder of host-written STEs.
#[derive(Debug)]
pub struct HostSte;

impl HostSte {
    /// Decodes what the host wrote, as an SMMU offering stage 1 only and no EL2 StreamWorld would
    /// read it. Fields that SMMU ignores (STRW, all of stage 2, the IMPLEMENTATION DEFINED and
    /// Secure fields) are not looked at; the checks that depend on the features offered to the
    /// host are in [`HostSteView::validate`].
    pub fn decode(raw: [u64; 8]) -> Result<HostSteView, SteError> {
        let w0 = LocalRegisterCopy::<u64, STE0::Register>::new(raw[0]);
        let w1 = LocalRegisterCopy::<u64, STE1::Register>::new(raw[1]);
        if !w0.is_set(STE0::V) {
            return Err(SteError::NotValid);
        }
        let config = match w0.read(STE0::CONFIG) {
            // 0b0xx: abort (0b001..0b011 are Reserved and behave as 0b000).
            0b000..=0b011 => HostStreamConfig::Abort,
            0b100 => HostStreamConfig::Bypass,
            0b101 => HostStreamConfig::Stage1(Self::stage1(&w0, &w1)),
            _ => return Err(SteError::Stage2NotOffered),
        };
        Ok(HostSteView {
            config,
            eats: Eats::from_encoding(w1.read(STE1::EATS)),
            overrides: AttrOverrides::decode(&w1),
            merge_events: w1.is_set(STE1::MEV),
            pri_auto_response: w1.is_set(STE1::PPAR),
        })
    }

    fn stage1(
        w0: &LocalRegisterCopy<u64, STE0::Register>,
        w1: &LocalRegisterCopy<u64, STE1::Register>,
    ) -> HostStage1 {
        let cd_max = w0.read(STE0::S1CDMAX) as u8;
        let format = match w0.read(STE0::S1FMT) {
            0b01 => CdTableFormat::TwoLevel4K,
            0b10 => CdTableFormat::TwoLevel64K,
            // 0b11 is Reserved and behaves as 0b00.
            _ => CdTableFormat::Linear,
        };
        let mut ptr = w0.read(STE0::S1CONTEXTPTR) << STE0::S1CONTEXTPTR.shift;
        if format == CdTableFormat::Linear && cd_max > 0 {
            // A linear table is aligned to its size: S1ContextPtr[S1CDMax + 5:6] are RES0, and
            // treating them as zero is one of the permitted behaviours.
            ptr &= !((1u64 << (cd_max + 6)) - 1);
        }
        HostStage1 {
            cd_table: Ipa(ptr),
            format,
            cd_max,
            default_substream: match w1.read(STE1::S1DSS) {
                0b01 => DefaultSubstream::Bypass,
                0b10 => DefaultSubstream::Substream0,
                // 0b11 is Reserved and behaves as 0b00.
                _ => DefaultSubstream::Terminate,
            },
            cd_fetch: WalkAttrs {
                inner: w1.read(STE1::S1CIR) as u8,
                outer: w1.read(STE1::S1COR) as u8,
                // 0b01 is Reserved and behaves as 0b00.
                shareability: match w1.read(STE1::S1CSH) {
                    0b01 => 0b00,
                    v => v as u8,
                },
            },
            stall_disable: w1.is_set(STE1::S1STALLD),
        }
    }
}

impl HostSteView {
    /// Applies the checks of section 5.2.2 that depend on what the emulated SMMU offers (`f`, the
    /// features shown to the host), and returns the *effective* configuration: fields the SMMU
    /// would ignore are cleared, so that the view can be copied into a physical STE as is.
    ///
    /// `ipa_bits` bounds `S1ContextPtr` (the host's view of the physical address size).
    pub fn validate(mut self, f: &SmmuFeatures, ipa_bits: u8) -> Result<Self, SteError> {
        if let HostStreamConfig::Stage1(s1) = &mut self.config {
            if !f.stage1 {
                return Err(SteError::Stage1NotOffered);
            }
            if s1.stall_disable && f.stall_model != StallModel::StallAndTerminate {
                return Err(SteError::StallDisableNotAllowed);
            }
            if f.ssid_bits == 0 {
                // S1CDMax, S1Fmt and S1DSS are IGNORED without substreams.
                s1.cd_max = 0;
            } else if s1.cd_max > f.ssid_bits {
                return Err(SteError::CdMaxTooLarge {
                    cd_max: s1.cd_max,
                    ssid_bits: f.ssid_bits,
                });
            }
            if s1.cd_max == 0 {
                s1.format = CdTableFormat::Linear;
                s1.default_substream = DefaultSubstream::Terminate;
            } else if s1.format != CdTableFormat::Linear && !f.two_level_cd {
                return Err(SteError::TwoLevelCdNotOffered);
            }
            if ipa_bits < 64 && s1.cd_table.0 >> ipa_bits != 0 {
                return Err(SteError::ContextPtrOutOfRange {
                    ptr: s1.cd_table,
                    limit_bits: ipa_bits,
                });
            }
        }
        let translating = !matches!(
            self.config,
            HostStreamConfig::Abort | HostStreamConfig::Bypass
        );
        if !f.ats || !translating {
            self.eats = Eats::Abort;
        } else {
            match self.eats {
                // Needs Config == 0b111; the host has no stage 2.
                Eats::SplitStage => return Err(SteError::SplitStageAtsWithoutStage2),
                Eats::FullWithDpt if !f.dpt => self.eats = Eats::Abort,
                _ => {}
            }
        }
        self.overrides = self.overrides.restricted_to(f);
        if !f.pri {
            self.pri_auto_response = false;
        }
        Ok(self)
    }
}

/// The Config of an STE as Portcullis reads back its own entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamConfig {
    Invalid,
    Abort,
    Bypass,
    Stage1,
    Stage2,
    Nested,
}

/// A 64-byte Stream Table Entry, as the SMMU reads it (little-endian words).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Ste(pub [u64; 8]);

impl Ste {
    /// V == 0: the SMMU records C_BAD_STE for any transaction on the stream.
    pub const INVALID: Self = Self([0; 8]);

    /// Terminate all traffic with an abort, without recording an event.
    pub fn abort() -> Self {
        Self::from_words((STE0::V::SET + STE0::CONFIG::Abort).value, 0, 0, 0)
    }

    /// No translation.
    pub fn bypass(attrs: &AttrOverrides) -> Self {
        Self::from_words(
            (STE0::V::SET + STE0::CONFIG::Bypass).value,
            attrs.fields().value,
            0,
            0,
        )
    }

    /// Stage 2 only: what a host *bypass* STE becomes, translated by a DMA policy.
    pub fn stage2(s2: &Stage2Config, attrs: &AttrOverrides) -> Self {
        let (w2, w3) = Self::stage2_words(s2);
        Self::from_words(
            (STE0::V::SET + STE0::CONFIG::Stage2).value,
            attrs.fields().value,
            w2,
            w3,
        )
    }

    /// Nested: the host's stage 1 (its CD table, an IPA) followed by a Portcullis stage 2.
    ///
    /// `eats` is the host's ATS choice (from a validated [`HostSteView`]); full ATS with stage 2
    /// requires `S2S == 0`, as `s2.stall` is then ILLEGAL with it (section 5.2.2).
    pub fn nested(s1: &HostStage1, s2: &Stage2Config, view: &HostSteView) -> Self {
        let w0 = STE0::V::SET
            + STE0::CONFIG::Nested
            + STE0::S1FMT.val(s1.format.encoding())
            + STE0::S1CONTEXTPTR.val(s1.cd_table.0 >> STE0::S1CONTEXTPTR.shift)
            + STE0::S1CDMAX.val(u64::from(s1.cd_max));
        let w1 = STE1::S1DSS.val(s1.default_substream.encoding())
            + STE1::S1CIR.val(u64::from(s1.cd_fetch.inner))
            + STE1::S1COR.val(u64::from(s1.cd_fetch.outer))
            + STE1::S1CSH.val(u64::from(s1.cd_fetch.shareability))
            + STE1::S1STALLD.val(u64::from(s1.stall_disable))
            + STE1::MEV.val(u64::from(view.merge_events))
            + STE1::PPAR.val(u64::from(view.pri_auto_response))
            + STE1::EATS.val(view.eats.encoding())
            + view.overrides.fields();
        let (w2, w3) = Self::stage2_words(s2);
        Self::from_words(w0.value, w1.value, w2, w3)
    }

    fn stage2_words(s2: &Stage2Config) -> (u64, u64) {
        let ps = address_size_encoding(s2.ps_bits).unwrap_or_else(|| {
            panic!(
                "Stage2Config: ps_bits {} is not an architected address size",
                s2.ps_bits
            )
        });
        assert!(
            s2.t0sz < 64 && s2.sl0 < 4,
            "Stage2Config: T0SZ/SL0 out of range"
        );
        let w2 = STE2::S2VMID.val(u64::from(s2.vmid))
            + STE2::S2T0SZ.val(u64::from(s2.t0sz))
            + STE2::S2SL0.val(u64::from(s2.sl0))
            + STE2::S2IR0.val(u64::from(s2.walk.inner))
            + STE2::S2OR0.val(u64::from(s2.walk.outer))
            + STE2::S2SH0.val(u64::from(s2.walk.shareability))
            + STE2::S2TG.val(s2.granule.tg0())
            + STE2::S2PS.val(u64::from(ps))
            + STE2::S2AA64::SET
            + STE2::S2AFFD.val(u64::from(s2.affd))
            + STE2::S2PTW.val(u64::from(s2.ptw))
            + STE2::S2S.val(u64::from(s2.stall))
            + STE2::S2R.val(u64::from(s2.record_faults));
        let ttb = s2.ttb.0;
        assert!(
            ttb & 0xf == 0 && ttb >> 56 == 0,
            "Stage2Config: S2TTB {ttb:#x} not encodable"
        );
        let w3 = STE3::S2TTB.val(ttb >> STE3::S2TTB.shift);
        (w2.value, w3.value)
    }

    fn from_words(w0: u64, w1: u64, w2: u64, w3: u64) -> Self {
        Self([w0, w1, w2, w3, 0, 0, 0, 0])
    }

    pub fn word0(&self) -> LocalRegisterCopy<u64, STE0::Register> {
        LocalRegisterCopy::new(self.0[0])
    }
    pub fn word1(&self) -> LocalRegisterCopy<u64, STE1::Register> {
        LocalRegisterCopy::new(self.0[1])
    }
    pub fn word2(&self) -> LocalRegisterCopy<u64, STE2::Register> {
        LocalRegisterCopy::new(self.0[2])
    }
    pub fn word3(&self) -> LocalRegisterCopy<u64, STE3::Register> {
        LocalRegisterCopy::new(self.0[3])
    }

    /// The STE's configuration, as the SMMU would act on it (Reserved Configs as abort).
    pub fn config(&self) -> StreamConfig {
        let w0 = self.word0();
        if !w0.is_set(STE0::V) {
            return StreamConfig::Invalid;
        }
        match w0.read(STE0::CONFIG) {
            0b100 => StreamConfig::Bypass,
            0b101 => StreamConfig::Stage1,
            0b110 => StreamConfig::Stage2,
            0b111 => StreamConfig::Nested,
            _ => StreamConfig::Abort,
        }
    }

    /// The stage 2 VMID (meaningful for stage 2 and nested STEs).
    pub fn vmid(&self) -> u16 {
        self.word2().read(STE2::S2VMID) as u16
    }

    /// Whether stage-2 faults are recorded (S2R; meaningful for stage 2 and nested STEs).
    pub fn s2r(&self) -> bool {
        self.word2().is_set(STE2::S2R)
    }

    /// The stage 2 table root (meaningful for stage 2 and nested STEs).
    pub fn s2ttb(&self) -> Pa {
        Pa(self.word3().read(STE3::S2TTB) << STE3::S2TTB.shift)
    }
}

impl fmt::Debug for Ste {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ste({:?}", self.config())?;
        for w in &self.0 {
            write!(f, " {w:016x}")?;
        }
        write!(f, ")")
    }
}

/// A level-1 Stream table descriptor. `A` is [`Pa`] in Portcullis' tables, [`Ipa`] in the host's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L1Std<A: TableAddress> {
    /// 0: no level 2 array (all its StreamIDs invalid); otherwise the array has 2^(span-1) STEs.
    pub span: u8,
    /// The level 2 array, aligned to its size.
    pub l2_table: A,
}

impl<A: TableAddress> L1Std<A> {
    /// An invalid descriptor (Span == 0).
    pub fn invalid() -> Self {
        Self {
            span: 0,
            l2_table: A::from_raw(0),
        }
    }

    /// Decodes a descriptor. Reserved Spans (12..31) behave as 0 and decode as 0; the low bits of
    /// L2Ptr that alignment to the array's size makes zero are cleared, as the SMMU does.
    pub fn decode(raw: u64) -> Self {
        let r = LocalRegisterCopy::<u64, L1STD::Register>::new(raw);
        let span = match r.read(L1STD::SPAN) as u8 {
            s @ 1..=11 => s,
            _ => 0,
        };
        let mut ptr = r.read(L1STD::L2PTR) << L1STD::L2PTR.shift;
        if span > 0 {
            ptr &= !((STE_SIZE as u64) << (span - 1)).wrapping_sub(1);
        }
        Self {
            span,
            l2_table: A::from_raw(ptr),
        }
    }

    /// The descriptor for a level 2 array of `2^(span-1)` STEs at `l2_table`.
    ///
    /// # Panics
    ///
    /// If `span` is above 11 or `l2_table` is not aligned to the array's size or beyond 56 bits:
    /// a table Portcullis laid out wrongly.
    pub fn encode(&self) -> u64 {
        let ptr = self.l2_table.to_raw();
        assert!(self.span <= 11, "L1Std: span {} above 11", self.span);
        if self.span > 0 {
            let align = (STE_SIZE as u64) << (self.span - 1);
            assert!(
                ptr.is_multiple_of(align) && ptr >> 56 == 0,
                "L1Std: L2 table {ptr:#x} misaligned"
            );
        }
        (L1STD::SPAN.val(u64::from(self.span)) + L1STD::L2PTR.val(ptr >> L1STD::L2PTR.shift)).value
    }

    /// Byte offset of the STE for `l2_index` (StreamID[SPLIT-1:0]) in the level 2 array, if this
    /// descriptor covers it for a table with the given `split`.
    pub fn ste_offset(&self, l2_index: u32, split: u8) -> Result<u64, StreamTableError> {
        if self.span == 0 || self.span > split + 1 {
            return Err(StreamTableError::NoLevel2);
        }
        if u64::from(l2_index) >= 1u64 << (self.span - 1) {
            return Err(StreamTableError::BeyondSpan);
        }
        Ok(u64::from(l2_index) * STE_SIZE as u64)
    }
}

/// Where a StreamID's STE is, given the table format: either directly an offset in a linear
/// table, or an L1STD to read first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SteLocation {
    /// Byte offset of the STE from the table base.
    Linear { offset: u64 },
    /// Byte offset of the L1STD from the table base, and the index into its level 2 array.
    TwoLevel { l1_offset: u64, l2_index: u32 },
}

/// Why a StreamID has no STE. Each is reported as C_BAD_STREAMID when `CR2.RECINVSID` is set, and
/// the transaction is aborted (section 7.3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamTableError {
    /// StreamID >= 2^LOG2SIZE.
    OutOfRange,
    /// The L1STD has Span == 0, a Reserved Span, or a Span beyond SPLIT + 1.
    NoLevel2,
    /// StreamID[SPLIT-1:0] is beyond the level 2 array the L1STD describes.
    BeyondSpan,
}

impl StreamTableError {
    pub const fn event(&self) -> EventId {
        EventId::C_BAD_STREAMID
    }
}

impl fmt::Display for StreamTableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfRange => write!(f, "StreamID beyond the Stream table"),
            Self::NoLevel2 => write!(f, "no level 2 Stream table for the StreamID"),
            Self::BeyondSpan => write!(f, "StreamID beyond the span of its level 2 table"),
        }
    }
}

/// The format of a Stream table (`SMMU_STRTAB_BASE_CFG.FMT` and `SPLIT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamTableFormat {
    Linear,
    /// `split` StreamID bits index the level 2 arrays: 6, 8 or 10.
    TwoLevel {
        split: u8,
    },
}

/// A Stream table layout: format and size (`SMMU_STRTAB_BASE_CFG`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamTableLayout {
    /// log2 of the number of StreamIDs covered.
    pub log2_size: u8,
    pub format: StreamTableFormat,
}

impl StreamTableLayout {
    /// Decodes `SMMU_STRTAB_BASE_CFG` as an SMMU with features `f` interprets it: LOG2SIZE above
    /// SIDSIZE behaves as SIDSIZE, FMT is IGNORED without two-level support and its Reserved
    /// values behave as linear, Reserved SPLIT values behave as 6 (section 6.3.25).
    pub fn decode(cfg: u32, f: &SmmuFeatures) -> Self {
        use super::regs::STRTAB_BASE_CFG as C;
        let r = LocalRegisterCopy::<u32, C::Register>::new(cfg);
        let log2_size = (r.read(C::LOG2SIZE) as u8).min(f.sid_bits).min(32);
        let format = if f.two_level_strtab && r.read(C::FMT) == 0b01 {
            let split = match r.read(C::SPLIT) as u8 {
                s @ (6 | 8 | 10) => s,
                _ => 6,
            };
            StreamTableFormat::TwoLevel { split }
        } else {
            StreamTableFormat::Linear
        };
        Self { log2_size, format }
    }

    /// The `SMMU_STRTAB_BASE_CFG` value.
    pub fn encode(&self) -> u32 {
        use super::regs::STRTAB_BASE_CFG as C;
        let v = C::LOG2SIZE.val(u32::from(self.log2_size))
            + match self.format {
                StreamTableFormat::Linear => C::FMT::Linear,
                StreamTableFormat::TwoLevel { split } => {
                    C::FMT::TwoLevel + C::SPLIT.val(u32::from(split))
                }
            };
        v.value
    }

    /// Number of entries at the top level: STEs for a linear table, L1STDs for a two-level one.
    pub fn top_level_entries(&self) -> u64 {
        match self.format {
            StreamTableFormat::Linear => 1 << self.log2_size,
            StreamTableFormat::TwoLevel { split } => 1 << self.log2_size.saturating_sub(split),
        }
    }

    /// Size in bytes of the top-level table (which is aligned to its size in practice; the
    /// architecture requires alignment to it for a linear table and 64 bytes otherwise).
    pub fn top_level_bytes(&self) -> u64 {
        let entry = match self.format {
            StreamTableFormat::Linear => STE_SIZE,
            StreamTableFormat::TwoLevel { .. } => L1STD_SIZE,
        };
        self.top_level_entries() * entry as u64
    }

    /// Where the STE of `sid` is.
    pub fn locate(&self, sid: StreamId) -> Result<SteLocation, StreamTableError> {
        if self.log2_size < 32 && u64::from(sid) >= 1u64 << self.log2_size {
            return Err(StreamTableError::OutOfRange);
        }
        Ok(match self.format {
            StreamTableFormat::Linear => SteLocation::Linear {
                offset: u64::from(sid) * STE_SIZE as u64,
            },
            StreamTableFormat::TwoLevel { split } => SteLocation::TwoLevel {
                l1_offset: u64::from(sid >> split) * L1STD_SIZE as u64,
                l2_index: sid & ((1 << split) - 1),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smmu::regs::SmmuFeatures;
    use proptest::prelude::*;

    fn features() -> SmmuFeatures {
        SmmuFeatures::from_idr(0x080f_7e3f, 0x0e73_9d18, 0x0000_003c, 0x0040_0075)
    }

    fn policy() -> Stage2Config {
        Stage2Config {
            vmid: 0x12,
            ttb: Pa(0x8_1234_5000),
            t0sz: 24,
            sl0: 0b01,
            granule: Granule::K4,
            ps_bits: 48,
            walk: WalkAttrs::WB_INNER_SHAREABLE,
            record_faults: true,
            stall: false,
            affd: false,
            ptw: true,
        }
    }

    /// Field positions from section 5.2 ("STE, Stream Table Entry"), by absolute bit number.
    #[test]
    fn stage2_ste_vector() {
        let ste = Ste::stage2(&policy(), &AttrOverrides::incoming(&features()));
        // V [0], Config [3:1] = 0b110.
        assert_eq!(ste.0[0], 0b1101);
        // SHCFG [109:108] = 0b01 (use incoming).
        assert_eq!(ste.0[1], 1 << (108 - 64));
        // S2VMID [143:128]; S2T0SZ [165:160]; S2SL0 [167:166]; S2IR0 [169:168]; S2OR0 [171:170];
        // S2SH0 [173:172]; S2TG [175:174] = 4KB; S2PS [178:176] = 48 bits (0b101); S2AA64 [179];
        // S2PTW [182]; S2R [186].
        let w2 = 0x12
            | 24 << (160 - 128)
            | 0b01 << (166 - 128)
            | 0b01 << (168 - 128)
            | 0b01 << (170 - 128)
            | 0b11 << (172 - 128)
            | 0b101 << (176 - 128)
            | 1 << (179 - 128)
            | 1 << (182 - 128)
            | 1 << (186 - 128);
        assert_eq!(ste.0[2], w2);
        // S2TTB [247:196].
        assert_eq!(ste.0[3], 0x8_1234_5000);
        assert_eq!(&ste.0[4..], &[0; 4]);
        assert_eq!(ste.config(), StreamConfig::Stage2);
        assert_eq!(ste.vmid(), 0x12);
        assert_eq!(ste.s2ttb(), Pa(0x8_1234_5000));
        assert_eq!(Ste::abort().0[0], 0b0001);
        assert_eq!(Ste::abort().config(), StreamConfig::Abort);
        assert_eq!(Ste::INVALID.config(), StreamConfig::Invalid);
        assert_eq!(Ste::bypass(&AttrOverrides::default()).0[0], 0b1001);
    }

    /// A host stage 1 STE as Linux writes one: Config 0b101, S1Fmt linear, S1ContextPtr, S1CDMax 0,
    /// S1CIR/S1COR WBRA, S1CSH inner shareable, S1STALLD.
    fn linux_s1_ste() -> [u64; 8] {
        let w0 = 1 | 0b101 << 1 | 0x4_4000_0000;
        let w1 = 0b01 << 2 | 0b01 << 4 | 0b11 << 6 | 1 << 27;
        [w0, w1, 0, 0, 0, 0, 0, 0]
    }

    #[test]
    fn host_stage1_decode_and_nest() {
        let view = HostSte::decode(linux_s1_ste()).expect("valid STE");
        let HostStreamConfig::Stage1(s1) = view.config else {
            panic!("not stage 1: {view:?}")
        };
        assert_eq!(s1.cd_table, Ipa(0x4_4000_0000));
        assert_eq!((s1.cd_max, s1.format), (0, CdTableFormat::Linear));
        assert_eq!(
            s1.cd_fetch,
            WalkAttrs {
                inner: 1,
                outer: 1,
                shareability: 3
            }
        );
        assert!(s1.stall_disable);
        let view = view.validate(&features(), 48).expect("legal for this SMMU");
        let ste = Ste::nested(&s1, &policy(), &view);
        assert_eq!(ste.config(), StreamConfig::Nested);
        // Stage 1 words keep the host's fields; stage 2 is Portcullis'.
        assert_eq!(ste.0[0], linux_s1_ste()[0] | 0b111 << 1);
        assert_eq!(ste.0[1], linux_s1_ste()[1]);
        assert_eq!(
            ste.0[2],
            Ste::stage2(&policy(), &AttrOverrides::default()).0[2]
        );
    }

    #[test]
    fn host_illegal_and_reserved() {
        let mut raw = linux_s1_ste();
        raw[0] &= !1;
        assert_eq!(HostSte::decode(raw), Err(SteError::NotValid));
        assert_eq!(SteError::NotValid.event(), EventId::C_BAD_STE);
        for config in [0b110u64, 0b111] {
            let raw = [1 | config << 1, 0, 0, 0, 0, 0, 0, 0];
            assert_eq!(HostSte::decode(raw), Err(SteError::Stage2NotOffered));
        }
        // Reserved Config values 0b001..0b011 behave as abort.
        for config in 0..4u64 {
            let view = HostSte::decode([1 | config << 1, 0, 0, 0, 0, 0, 0, 0]).expect("valid");
            assert_eq!(view.config, HostStreamConfig::Abort);
        }
        // S1CDMax 21 > SSIDSIZE 20.
        let mut raw = linux_s1_ste();
        raw[0] |= 21 << 59;
        let err = HostSte::decode(raw).and_then(|v| v.validate(&features(), 48));
        assert_eq!(
            err,
            Err(SteError::CdMaxTooLarge {
                cd_max: 21,
                ssid_bits: 20
            })
        );
        // Split-stage ATS with no stage 2.
        let mut raw = linux_s1_ste();
        raw[1] |= 0b10 << 28;
        let err = HostSte::decode(raw).and_then(|v| v.validate(&features(), 48));
        assert_eq!(err, Err(SteError::SplitStageAtsWithoutStage2));
        // Context pointer above the host's 40-bit IPA space.
        let mut raw = linux_s1_ste();
        raw[0] |= 1 << 45;
        let err = HostSte::decode(raw).and_then(|v| v.validate(&features(), 40));
        assert!(matches!(err, Err(SteError::ContextPtrOutOfRange { .. })));
        // A linear CD table's RES0 low bits are treated as zero.
        let mut raw = linux_s1_ste();
        raw[0] |= 4 << 59 | 0x3c0;
        let HostStreamConfig::Stage1(s1) = HostSte::decode(raw).expect("valid").config else {
            panic!("not stage 1")
        };
        assert_eq!(s1.cd_table, Ipa(0x4_4000_0000));
    }

    #[test]
    fn stream_table_layout() {
        let f = features();
        // 2-level, SPLIT 8, LOG2SIZE 16: 256 L1STDs of 8 bytes.
        let layout = StreamTableLayout {
            log2_size: 16,
            format: StreamTableFormat::TwoLevel { split: 8 },
        };
        let cfg = layout.encode();
        assert_eq!(cfg, 1 << 16 | 8 << 6 | 16);
        assert_eq!(StreamTableLayout::decode(cfg, &f), layout);
        assert_eq!(layout.top_level_bytes(), 256 * 8);
        assert_eq!(
            layout.locate(0x1234),
            Ok(SteLocation::TwoLevel {
                l1_offset: 0x12 * 8,
                l2_index: 0x34
            })
        );
        assert_eq!(layout.locate(0x1_0000), Err(StreamTableError::OutOfRange));
        // Reserved SPLIT behaves as 6; LOG2SIZE is clamped to SIDSIZE (24).
        let odd = StreamTableLayout::decode(1 << 16 | 7 << 6 | 40, &f);
        assert_eq!(
            odd,
            StreamTableLayout {
                log2_size: 24,
                format: StreamTableFormat::TwoLevel { split: 6 }
            }
        );
        // Linear.
        let lin = StreamTableLayout {
            log2_size: 5,
            format: StreamTableFormat::Linear,
        };
        assert_eq!(lin.locate(3), Ok(SteLocation::Linear { offset: 3 * 64 }));
        assert_eq!(lin.top_level_bytes(), 32 * 64);
        // L1STD: Span [4:0], L2Ptr [55:6].
        let l1 = L1Std::<Pa> {
            span: 9,
            l2_table: Pa(0x8000_4000),
        };
        assert_eq!(l1.encode(), 0x8000_4000 | 9);
        assert_eq!(L1Std::<Pa>::decode(0x8000_4000 | 9), l1);
        assert_eq!(l1.ste_offset(0xff, 8), Ok(0xff * 64));
        assert_eq!(l1.ste_offset(0x100, 8), Err(StreamTableError::BeyondSpan));
        assert_eq!(L1Std::<Ipa>::decode(12 | 0x1000).span, 0);
        assert_eq!(
            L1Std::<Pa> { span: 10, ..l1 }.ste_offset(0, 8),
            Err(StreamTableError::NoLevel2)
        );
    }

    proptest! {
        /// Host STE decoding never panics, whatever the host wrote, and validation neither.
        #[test]
        fn host_decode_total(raw in any::<[u64; 8]>(), idr in any::<[u32; 4]>(), ipa in 0u8..=64) {
            let f = SmmuFeatures::from_idr(idr[0], idr[1], idr[2], idr[3]);
            if let Ok(v) = HostSte::decode(raw) {
                let _ = v.validate(&f, ipa);
            }
            let _ = L1Std::<Ipa>::decode(raw[0]).ste_offset(raw[1] as u32, (raw[2] % 16) as u8);
            let layout = StreamTableLayout::decode(raw[3] as u32, &f);
            let _ = layout.locate(raw[4] as u32);
        }

        /// A nested STE built from a decoded host STE decodes back (as the host's view) to the same
        /// stage 1 fields.
        #[test]
        fn nested_keeps_host_stage1(cd_max in 0u8..=20, fmt in 0u8..3, dss in 0u8..3,
                                    ptr in 0u64..(1 << 40), stalld in any::<bool>()) {
            let w0 = 1 | 0b101 << 1 | (fmt as u64) << 4 | (ptr << 12) | (cd_max as u64) << 59;
            let w1 = dss as u64 | (stalld as u64) << 27;
            let view = HostSte::decode([w0, w1, 0, 0, 0, 0, 0, 0]).expect("valid");
            let HostStreamConfig::Stage1(s1) = view.config else { panic!("stage 1") };
            let ste = Ste::nested(&s1, &policy(), &view);
            let mut as_host = ste.0;
            as_host[0] = (as_host[0] & !0b1110) | 0b101 << 1;
            prop_assert_eq!(HostSte::decode(as_host), Ok(view));
        }

        /// Two-level lookups land inside the top-level table.
        #[test]
        fn locate_in_bounds(log2 in 0u8..=32, split in prop_oneof![Just(6u8), Just(8), Just(10)],
                            sid in any::<u32>()) {
            let layout = StreamTableLayout { log2_size: log2, format: StreamTableFormat::TwoLevel { split } };
            match layout.locate(sid) {
                Ok(SteLocation::TwoLevel { l1_offset, l2_index }) => {
                    prop_assert!(l1_offset < layout.top_level_bytes());
                    prop_assert!(l2_index < 1 << split);
                }
                Ok(other) => prop_assert!(false, "{:?}", other),
                Err(e) => prop_assert!(log2 < 32 && u64::from(sid) >= 1 << log2, "{}", e),
            }
        }
    }
}
