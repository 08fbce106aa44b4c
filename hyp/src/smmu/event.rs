//! Event records (section 7.3, "Event records").
//!
//! Portcullis reads records from the physical Event queue (to copy the host's into the host's
//! emulated queue and to keep those the fence caused), and writes records of its own into the
//! emulated queue: C_BAD_STE when the host's STE is unusable, C_BAD_STREAMID, and copies of
//! translation faults. Records are 32 bytes, little-endian, handled as `[u64; 4]`.
//!
//! All events share word 0: the event number in bits [7:0], SSV in [11], SubstreamID in [31:12] and
//! StreamID in [63:32]. Decoding does not insist on RES0 bits being zero: the records come from
//! the SMMU, and a later revision of the architecture may define more fields.

use core::fmt;

use tock_registers::LocalRegisterCopy;
use tock_registers::register_bitfields;

use spec::smmu_event as ev;

use super::{Ipa, Pa, StreamId, SubstreamId};

register_bitfields! [u64,
    /// Event record bits [63:0], common to all events.
    pub EVT0 [
        TYPE OFFSET(0) NUMBITS(8) [],
        SSV OFFSET(11) NUMBITS(1) [],
        SSID OFFSET(12) NUMBITS(20) [],
        SID OFFSET(32) NUMBITS(32) []
    ],
    /// Bits [127:64] of the translation-related faults (F_TRANSLATION, F_ADDR_SIZE, F_ACCESS,
    /// F_PERMISSION) and, for the access attributes, of F_UUT, F_TRANSL_FORBIDDEN, F_WALK_EABT
    /// and F_TLB_CONFLICT.
    pub EVT1_FAULT [
        STAG OFFSET(0) NUMBITS(16) [],
        STALL OFFSET(31) NUMBITS(1) [],
        PNU OFFSET(33) NUMBITS(1) [],
        IND OFFSET(34) NUMBITS(1) [],
        RNW OFFSET(35) NUMBITS(1) [],
        NSIPA OFFSET(38) NUMBITS(1) [],
        S2 OFFSET(39) NUMBITS(1) [],
        CLASS OFFSET(40) NUMBITS(2) [
            Cd = 0b00,
            TranslationTable = 0b01,
            Input = 0b10
        ],
        TTRNW OFFSET(44) NUMBITS(1) []
    ],
    /// Bits [127:64] of F_UUT, F_STE_FETCH, F_CD_FETCH and F_VMS_FETCH: an IMPLEMENTATION DEFINED
    /// reason in [79:64] and GPCF (granule protection check fault) in [80].
    pub EVT1_FETCH [
        REASON OFFSET(0) NUMBITS(16) [],
        GPCF OFFSET(16) NUMBITS(1) []
    ],
    /// Bits [127:64] of E_PAGE_REQUEST (section 7.3.19).
    pub EVT1_PAGE_REQUEST [
        UX OFFSET(34) NUMBITS(1) [],
        UW OFFSET(35) NUMBITS(1) [],
        UR OFFSET(36) NUMBITS(1) [],
        PX OFFSET(37) NUMBITS(1) [],
        PW OFFSET(38) NUMBITS(1) [],
        PR OFFSET(39) NUMBITS(1) [],
        SPAN OFFSET(44) NUMBITS(8) []
    ],
    /// Bits [255:192]: the IPA of translation faults, or the fetch address of F_*_FETCH and
    /// F_WALK_EABT.
    pub EVT3 [
        FETCH_ADDR OFFSET(3) NUMBITS(53) [],
        IPA OFFSET(12) NUMBITS(44) []
    ]
];

/// Size of an event record in bytes.
pub const EVENT_SIZE: usize = 32;

/// An event number (bits [7:0] of a record).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventId(pub u8);

#[allow(non_upper_case_globals)]
impl EventId {
    pub const F_UUT: Self = Self(ev::F_UUT);
    pub const C_BAD_STREAMID: Self = Self(ev::C_BAD_STREAMID);
    pub const F_STE_FETCH: Self = Self(ev::F_STE_FETCH);
    pub const C_BAD_STE: Self = Self(ev::C_BAD_STE);
    pub const F_BAD_ATS_TREQ: Self = Self(ev::F_BAD_ATS_TREQ);
    pub const F_STREAM_DISABLED: Self = Self(ev::F_STREAM_DISABLED);
    pub const F_TRANSL_FORBIDDEN: Self = Self(ev::F_TRANSL_FORBIDDEN);
    pub const C_BAD_SUBSTREAMID: Self = Self(ev::C_BAD_SUBSTREAMID);
    pub const F_CD_FETCH: Self = Self(ev::F_CD_FETCH);
    pub const C_BAD_CD: Self = Self(ev::C_BAD_CD);
    pub const F_WALK_EABT: Self = Self(ev::F_WALK_EABT);
    pub const F_TRANSLATION: Self = Self(ev::F_TRANSLATION);
    pub const F_ADDR_SIZE: Self = Self(ev::F_ADDR_SIZE);
    pub const F_ACCESS: Self = Self(ev::F_ACCESS);
    pub const F_PERMISSION: Self = Self(ev::F_PERMISSION);
    pub const F_TLB_CONFLICT: Self = Self(ev::F_TLB_CONFLICT);
    pub const F_CFG_CONFLICT: Self = Self(ev::F_CFG_CONFLICT);
    pub const E_PAGE_REQUEST: Self = Self(ev::E_PAGE_REQUEST);
    pub const F_VMS_FETCH: Self = Self(ev::F_VMS_FETCH);

    /// The specification's name, `None` for a Reserved number.
    pub const fn name(self) -> Option<&'static str> {
        ev::name(self.0)
    }

    /// Whether the number is one of the IMPLEMENTATION DEFINED events 0xE0..0xEF.
    pub const fn is_impdef(self) -> bool {
        matches!(self.0, 0xe0..=0xef)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) if self.is_impdef() => write!(f, "{n}{:#04x}", self.0),
            Some(n) => f.write_str(n),
            None => write!(f, "event {:#04x}", self.0),
        }
    }
}

/// Which requester an event is about: StreamID and, if the transaction had one, SubstreamID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    pub sid: StreamId,
    pub ssid: Option<SubstreamId>,
}

impl Origin {
    pub const fn stream(sid: StreamId) -> Self {
        Self { sid, ssid: None }
    }
}

/// Access attributes of the faulting transaction (post-STE override, except for F_UUT).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AccessAttrs {
    /// RnW: a read (otherwise a write).
    pub read: bool,
    /// InD: an instruction fetch (otherwise data).
    pub instruction: bool,
    /// PnU: privileged (otherwise unprivileged).
    pub privileged: bool,
}

/// What the SMMU was doing when a translation fault happened (`CLASS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultClass {
    /// Fetching a CD (through stage 2).
    Cd,
    /// Walking the stage 1 translation tables (through stage 2).
    TranslationTable,
    /// Translating the input address.
    Input,
    /// 0b11, Reserved.
    Reserved,
}

impl FaultClass {
    const fn from_encoding(v: u64) -> Self {
        match v & 0b11 {
            0b00 => Self::Cd,
            0b01 => Self::TranslationTable,
            0b10 => Self::Input,
            _ => Self::Reserved,
        }
    }

    const fn encoding(self) -> u64 {
        match self {
            Self::Cd => 0b00,
            Self::TranslationTable => 0b01,
            Self::Input => 0b10,
            Self::Reserved => 0b11,
        }
    }

    const fn name(self) -> &'static str {
        match self {
            Self::Cd => "CD",
            Self::TranslationTable => "TT",
            Self::Input => "IN",
            Self::Reserved => "class 3",
        }
    }
}

/// The fields of F_TRANSLATION, F_ADDR_SIZE, F_ACCESS and F_PERMISSION (sections 7.3.13-16).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TranslationFault {
    pub origin: Origin,
    /// Stall tag, to give back in CMD_RESUME (valid when `stall`).
    pub stag: u16,
    /// The transaction is stalled, waiting for CMD_RESUME or CMD_STALL_TERM.
    pub stall: bool,
    pub access: AccessAttrs,
    /// The IPA is Non-secure (Secure streams only).
    pub nsipa: bool,
    /// The fault is at stage 2 (else stage 1).
    pub stage2: bool,
    pub class: FaultClass,
    /// F_PERMISSION with CLASS == TT: the table walk access was a read (else a write).
    pub ttrnw: bool,
    /// The address the device presented (a VA, or an IPA for a stage-2-only stream).
    pub input_addr: u64,
    /// The faulting IPA, valid for stage 2 faults.
    pub ipa: Ipa,
}

/// Permissions an E_PAGE_REQUEST anticipates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PagePerms {
    pub priv_read: bool,
    pub priv_write: bool,
    pub priv_exec: bool,
    pub user_read: bool,
    pub user_write: bool,
    pub user_exec: bool,
}

/// A decoded event record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// F_UUT: unsupported upstream transaction (incoming attributes, not post-override).
    Uut {
        origin: Origin,
        reason: u16,
        access: AccessAttrs,
        input_addr: u64,
    },
    /// C_BAD_STREAMID: StreamID beyond the Stream table (recorded if `CR2.RECINVSID`).
    BadStreamId { origin: Origin },
    /// F_STE_FETCH: external abort fetching the STE.
    SteFetch {
        origin: Origin,
        reason: u16,
        gpcf: bool,
        fetch_addr: Pa,
    },
    /// C_BAD_STE: the STE is invalid or ILLEGAL.
    BadSte { origin: Origin },
    /// F_BAD_ATS_TREQ: an ATS Translation Request the STE does not allow. Only word 0 and the
    /// page address are decoded; word 1 (requested permissions and span) is kept raw.
    BadAtsTreq {
        origin: Origin,
        request: u64,
        input_addr: u64,
    },
    /// F_STREAM_DISABLED: substream-less traffic to a stream that requires substreams.
    StreamDisabled { sid: StreamId },
    /// F_TRANSL_FORBIDDEN: ATS Translated traffic the STE does not allow to bypass.
    TranslForbidden {
        sid: StreamId,
        read: bool,
        input_addr: u64,
    },
    /// C_BAD_SUBSTREAMID: SubstreamID out of range or substreams disabled (always valid here).
    BadSubstreamId { sid: StreamId, ssid: SubstreamId },
    /// F_CD_FETCH: external abort fetching a CD.
    CdFetch {
        origin: Origin,
        reason: u16,
        gpcf: bool,
        fetch_addr: Pa,
    },
    /// C_BAD_CD: the CD is invalid or ILLEGAL.
    BadCd { origin: Origin },
    /// F_WALK_EABT: external abort on a translation table walk.
    WalkEabt {
        origin: Origin,
        access: AccessAttrs,
        stage2: bool,
        class: FaultClass,
        input_addr: u64,
        fetch_addr: Pa,
    },
    /// F_TRANSLATION.
    Translation(TranslationFault),
    /// F_ADDR_SIZE.
    AddrSize(TranslationFault),
    /// F_ACCESS.
    Access(TranslationFault),
    /// F_PERMISSION.
    Permission(TranslationFault),
    /// F_TLB_CONFLICT (IMPLEMENTATION DEFINED reason not decoded).
    TlbConflict {
        origin: Origin,
        access: AccessAttrs,
        stage2: bool,
        input_addr: u64,
        ipa: Ipa,
    },
    /// F_CFG_CONFLICT (IMPLEMENTATION DEFINED reason in bits [95:64]).
    CfgConflict { origin: Origin, reason: u32 },
    /// E_PAGE_REQUEST: a speculative page request hint of `span` 4KB pages.
    PageRequest {
        origin: Origin,
        span: u8,
        perms: PagePerms,
        input_addr: u64,
    },
    /// F_VMS_FETCH: external abort fetching a VMS.
    VmsFetch {
        origin: Origin,
        reason: u16,
        gpcf: bool,
        fetch_addr: Pa,
    },
    /// IMPDEF_EVENTn (0xE0..0xEF), kept raw.
    ImpDef { raw: [u64; 4] },
}

/// Why an event record could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventError {
    /// A Reserved event number.
    ReservedType(u8),
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReservedType(t) => write!(f, "event record with Reserved event number {t:#04x}"),
        }
    }
}

type W0 = LocalRegisterCopy<u64, EVT0::Register>;
type W1 = LocalRegisterCopy<u64, EVT1_FAULT::Register>;
type W1Fetch = LocalRegisterCopy<u64, EVT1_FETCH::Register>;
type W1Pri = LocalRegisterCopy<u64, EVT1_PAGE_REQUEST::Register>;
type W3 = LocalRegisterCopy<u64, EVT3::Register>;

const PAGE_MASK: u64 = !0xfff;

fn origin(w0: &W0) -> Origin {
    let sid = w0.read(EVT0::SID) as StreamId;
    let ssid = w0
        .is_set(EVT0::SSV)
        .then(|| w0.read(EVT0::SSID) as SubstreamId);
    Origin { sid, ssid }
}

fn access(w1: &W1) -> AccessAttrs {
    AccessAttrs {
        read: w1.is_set(EVT1_FAULT::RNW),
        instruction: w1.is_set(EVT1_FAULT::IND),
        privileged: w1.is_set(EVT1_FAULT::PNU),
    }
}

fn fetch_addr(w3: &W3) -> Pa {
    Pa(w3.read(EVT3::FETCH_ADDR) << EVT3::FETCH_ADDR.shift)
}

fn ipa(w3: &W3) -> Ipa {
    Ipa(w3.read(EVT3::IPA) << EVT3::IPA.shift)
}

impl Event {
    /// Decodes a record read from an Event queue.
    pub fn decode(raw: [u64; 4]) -> Result<Self, EventError> {
        let w0 = W0::new(raw[0]);
        let w1 = W1::new(raw[1]);
        let wf = W1Fetch::new(raw[1]);
        let w3 = W3::new(raw[3]);
        let o = origin(&w0);
        let sid = o.sid;
        let fault = || TranslationFault {
            origin: o,
            stag: w1.read(EVT1_FAULT::STAG) as u16,
            stall: w1.is_set(EVT1_FAULT::STALL),
            access: access(&w1),
            nsipa: w1.is_set(EVT1_FAULT::NSIPA),
            stage2: w1.is_set(EVT1_FAULT::S2),
            class: FaultClass::from_encoding(w1.read(EVT1_FAULT::CLASS)),
            ttrnw: w1.is_set(EVT1_FAULT::TTRNW),
            input_addr: raw[2],
            ipa: ipa(&w3),
        };
        let id = EventId(w0.read(EVT0::TYPE) as u8);
        Ok(match id {
            EventId::F_UUT => Self::Uut {
                origin: o,
                reason: wf.read(EVT1_FETCH::REASON) as u16,
                access: access(&w1),
                input_addr: raw[2],
            },
            EventId::C_BAD_STREAMID => Self::BadStreamId { origin: o },
            EventId::F_STE_FETCH => Self::SteFetch {
                origin: o,
                reason: wf.read(EVT1_FETCH::REASON) as u16,
                gpcf: wf.is_set(EVT1_FETCH::GPCF),
                fetch_addr: fetch_addr(&w3),
            },
            EventId::C_BAD_STE => Self::BadSte { origin: o },
            EventId::F_BAD_ATS_TREQ => Self::BadAtsTreq {
                origin: o,
                request: raw[1],
                input_addr: raw[2] & PAGE_MASK,
            },
            EventId::F_STREAM_DISABLED => Self::StreamDisabled { sid },
            EventId::F_TRANSL_FORBIDDEN => Self::TranslForbidden {
                sid,
                read: w1.is_set(EVT1_FAULT::RNW),
                input_addr: raw[2],
            },
            EventId::C_BAD_SUBSTREAMID => Self::BadSubstreamId {
                sid,
                ssid: w0.read(EVT0::SSID) as SubstreamId,
            },
            EventId::F_CD_FETCH => Self::CdFetch {
                origin: o,
                reason: wf.read(EVT1_FETCH::REASON) as u16,
                gpcf: wf.is_set(EVT1_FETCH::GPCF),
                fetch_addr: fetch_addr(&w3),
            },
            EventId::C_BAD_CD => Self::BadCd { origin: o },
            EventId::F_WALK_EABT => Self::WalkEabt {
                origin: o,
                access: access(&w1),
                stage2: w1.is_set(EVT1_FAULT::S2),
                class: FaultClass::from_encoding(w1.read(EVT1_FAULT::CLASS)),
                input_addr: raw[2],
                fetch_addr: fetch_addr(&w3),
            },
            EventId::F_TRANSLATION => Self::Translation(fault()),
            EventId::F_ADDR_SIZE => Self::AddrSize(fault()),
            EventId::F_ACCESS => Self::Access(fault()),
            EventId::F_PERMISSION => Self::Permission(fault()),
            EventId::F_TLB_CONFLICT => Self::TlbConflict {
                origin: o,
                access: access(&w1),
                stage2: w1.is_set(EVT1_FAULT::S2),
                input_addr: raw[2],
                ipa: ipa(&w3),
            },
            EventId::F_CFG_CONFLICT => Self::CfgConflict {
                origin: o,
                reason: raw[1] as u32,
            },
            EventId::E_PAGE_REQUEST => {
                let p = W1Pri::new(raw[1]);
                Self::PageRequest {
                    origin: o,
                    span: p.read(EVT1_PAGE_REQUEST::SPAN) as u8,
                    perms: PagePerms {
                        priv_read: p.is_set(EVT1_PAGE_REQUEST::PR),
                        priv_write: p.is_set(EVT1_PAGE_REQUEST::PW),
                        priv_exec: p.is_set(EVT1_PAGE_REQUEST::PX),
                        user_read: p.is_set(EVT1_PAGE_REQUEST::UR),
                        user_write: p.is_set(EVT1_PAGE_REQUEST::UW),
                        user_exec: p.is_set(EVT1_PAGE_REQUEST::UX),
                    },
                    input_addr: raw[2] & PAGE_MASK,
                }
            }
            EventId::F_VMS_FETCH => Self::VmsFetch {
                origin: o,
                reason: wf.read(EVT1_FETCH::REASON) as u16,
                gpcf: wf.is_set(EVT1_FETCH::GPCF),
                fetch_addr: fetch_addr(&w3),
            },
            id if id.is_impdef() => Self::ImpDef { raw },
            EventId(t) => return Err(EventError::ReservedType(t)),
        })
    }

    /// The event number.
    pub fn id(&self) -> EventId {
        match self {
            Self::Uut { .. } => EventId::F_UUT,
            Self::BadStreamId { .. } => EventId::C_BAD_STREAMID,
            Self::SteFetch { .. } => EventId::F_STE_FETCH,
            Self::BadSte { .. } => EventId::C_BAD_STE,
            Self::BadAtsTreq { .. } => EventId::F_BAD_ATS_TREQ,
            Self::StreamDisabled { .. } => EventId::F_STREAM_DISABLED,
            Self::TranslForbidden { .. } => EventId::F_TRANSL_FORBIDDEN,
            Self::BadSubstreamId { .. } => EventId::C_BAD_SUBSTREAMID,
            Self::CdFetch { .. } => EventId::F_CD_FETCH,
            Self::BadCd { .. } => EventId::C_BAD_CD,
            Self::WalkEabt { .. } => EventId::F_WALK_EABT,
            Self::Translation(_) => EventId::F_TRANSLATION,
            Self::AddrSize(_) => EventId::F_ADDR_SIZE,
            Self::Access(_) => EventId::F_ACCESS,
            Self::Permission(_) => EventId::F_PERMISSION,
            Self::TlbConflict { .. } => EventId::F_TLB_CONFLICT,
            Self::CfgConflict { .. } => EventId::F_CFG_CONFLICT,
            Self::PageRequest { .. } => EventId::E_PAGE_REQUEST,
            Self::VmsFetch { .. } => EventId::F_VMS_FETCH,
            Self::ImpDef { raw } => EventId(raw[0] as u8),
        }
    }

    /// The StreamID the event is about.
    pub fn sid(&self) -> StreamId {
        match self {
            Self::StreamDisabled { sid }
            | Self::TranslForbidden { sid, .. }
            | Self::BadSubstreamId { sid, .. } => *sid,
            Self::Translation(t) | Self::AddrSize(t) | Self::Access(t) | Self::Permission(t) => {
                t.origin.sid
            }
            Self::ImpDef { raw } => W0::new(raw[0]).read(EVT0::SID) as StreamId,
            Self::Uut { origin, .. }
            | Self::BadStreamId { origin }
            | Self::SteFetch { origin, .. }
            | Self::BadSte { origin }
            | Self::BadAtsTreq { origin, .. }
            | Self::CdFetch { origin, .. }
            | Self::BadCd { origin }
            | Self::WalkEabt { origin, .. }
            | Self::TlbConflict { origin, .. }
            | Self::CfgConflict { origin, .. }
            | Self::PageRequest { origin, .. }
            | Self::VmsFetch { origin, .. } => origin.sid,
        }
    }

    /// The record, as the SMMU would write it.
    ///
    /// # Panics
    ///
    /// If a SubstreamID exceeds 20 bits or an address is not encodable in its field (a fetch
    /// address not 8-byte aligned, an IPA not page aligned, beyond 56 bits): a record Portcullis
    /// made up wrongly.
    pub fn encode(&self) -> [u64; 4] {
        if let Self::ImpDef { raw } = self {
            return *raw;
        }
        let id = u64::from(self.id().0);
        let w0 = |o: &Origin| {
            let mut w = EVT0::TYPE.val(id) + EVT0::SID.val(u64::from(o.sid));
            if let Some(ssid) = o.ssid {
                assert!(
                    ssid <= super::SSID_MAX,
                    "Event::encode: SubstreamID {ssid:#x} above 20 bits"
                );
                w += EVT0::SSV::SET + EVT0::SSID.val(u64::from(ssid));
            }
            w.value
        };
        let acc = |a: &AccessAttrs| {
            (EVT1_FAULT::RNW.val(u64::from(a.read))
                + EVT1_FAULT::IND.val(u64::from(a.instruction))
                + EVT1_FAULT::PNU.val(u64::from(a.privileged)))
            .value
        };
        let fetch = |reason: u16, gpcf: bool| {
            (EVT1_FETCH::REASON.val(u64::from(reason)) + EVT1_FETCH::GPCF.val(u64::from(gpcf)))
                .value
        };
        let fetch_addr = |pa: &Pa| {
            assert!(
                pa.0 & 7 == 0 && pa.0 >> 56 == 0,
                "Event::encode: fetch address {pa} not encodable"
            );
            pa.0
        };
        let ipa = |ipa: &Ipa| {
            assert!(
                ipa.0 & 0xfff == 0 && ipa.0 >> 56 == 0,
                "Event::encode: IPA {ipa} not encodable"
            );
            ipa.0
        };
        let page = |addr: u64| {
            assert!(
                addr & 0xfff == 0,
                "Event::encode: page address {addr:#x} not page aligned"
            );
            addr
        };
        match self {
            Self::Uut {
                origin,
                reason,
                access,
                input_addr,
            } => [
                w0(origin),
                fetch(*reason, false) | acc(access),
                *input_addr,
                0,
            ],
            Self::BadStreamId { origin } | Self::BadSte { origin } | Self::BadCd { origin } => {
                [w0(origin), 0, 0, 0]
            }
            Self::SteFetch {
                origin,
                reason,
                gpcf,
                fetch_addr: fa,
            }
            | Self::CdFetch {
                origin,
                reason,
                gpcf,
                fetch_addr: fa,
            }
            | Self::VmsFetch {
                origin,
                reason,
                gpcf,
                fetch_addr: fa,
            } => [w0(origin), fetch(*reason, *gpcf), 0, fetch_addr(fa)],
            Self::BadAtsTreq {
                origin,
                request,
                input_addr,
            } => [w0(origin), *request, page(*input_addr), 0],
            Self::StreamDisabled { sid } => [w0(&Origin::stream(*sid)), 0, 0, 0],
            Self::TranslForbidden {
                sid,
                read,
                input_addr,
            } => [
                w0(&Origin::stream(*sid)),
                EVT1_FAULT::RNW.val(u64::from(*read)).value,
                *input_addr,
                0,
            ],
            Self::BadSubstreamId { sid, ssid } => {
                assert!(
                    *ssid <= super::SSID_MAX,
                    "Event::encode: SubstreamID above 20 bits"
                );
                let w = EVT0::TYPE.val(id)
                    + EVT0::SID.val(u64::from(*sid))
                    + EVT0::SSID.val(u64::from(*ssid));
                [w.value, 0, 0, 0]
            }
            Self::WalkEabt {
                origin,
                access,
                stage2,
                class,
                input_addr,
                fetch_addr: fa,
            } => {
                let w1 = acc(access)
                    | (EVT1_FAULT::S2.val(u64::from(*stage2))
                        + EVT1_FAULT::CLASS.val(class.encoding()))
                    .value;
                [w0(origin), w1, *input_addr, fetch_addr(fa)]
            }
            Self::Translation(t) | Self::AddrSize(t) | Self::Access(t) | Self::Permission(t) => {
                let w1 = EVT1_FAULT::STAG.val(u64::from(t.stag))
                    + EVT1_FAULT::STALL.val(u64::from(t.stall))
                    + EVT1_FAULT::NSIPA.val(u64::from(t.nsipa))
                    + EVT1_FAULT::S2.val(u64::from(t.stage2))
                    + EVT1_FAULT::CLASS.val(t.class.encoding())
                    + EVT1_FAULT::TTRNW.val(u64::from(t.ttrnw));
                [
                    w0(&t.origin),
                    w1.value | acc(&t.access),
                    t.input_addr,
                    ipa(&t.ipa),
                ]
            }
            Self::TlbConflict {
                origin,
                access,
                stage2,
                input_addr,
                ipa: i,
            } => [
                w0(origin),
                acc(access) | EVT1_FAULT::S2.val(u64::from(*stage2)).value,
                *input_addr,
                ipa(i),
            ],
            Self::CfgConflict { origin, reason } => [w0(origin), u64::from(*reason), 0, 0],
            Self::PageRequest {
                origin,
                span,
                perms,
                input_addr,
            } => {
                use EVT1_PAGE_REQUEST as P;
                let w1 = P::SPAN.val(u64::from(*span))
                    + P::PR.val(u64::from(perms.priv_read))
                    + P::PW.val(u64::from(perms.priv_write))
                    + P::PX.val(u64::from(perms.priv_exec))
                    + P::UR.val(u64::from(perms.user_read))
                    + P::UW.val(u64::from(perms.user_write))
                    + P::UX.val(u64::from(perms.user_exec));
                [w0(origin), w1.value, page(*input_addr), 0]
            }
            Self::ImpDef { raw } => *raw,
        }
    }

    /// A C_BAD_STE for the host's emulated queue.
    pub fn bad_ste(sid: StreamId, ssid: Option<SubstreamId>) -> Self {
        Self::BadSte {
            origin: Origin { sid, ssid },
        }
    }
}

struct OriginDisplay<'a>(&'a Origin);

impl fmt::Display for OriginDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sid {:#x}", self.0.sid)?;
        match self.0.ssid {
            Some(ssid) => write!(f, " ssid {ssid:#x}"),
            None => Ok(()),
        }
    }
}

impl fmt::Display for AccessAttrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rw = if self.read { "read" } else { "write" };
        let id = if self.instruction { "insn" } else { "data" };
        let pu = if self.privileged { "priv" } else { "unpriv" };
        write!(f, "{rw} {id} {pu}")
    }
}

impl fmt::Display for Event {
    /// One line, e.g. `F_TRANSLATION sid 0x8 ssid 0x1: stage 2 IN, write data unpriv at
    /// 0x80001000 (IPA 0x80001000)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.id();
        match self {
            Self::Uut {
                origin,
                reason,
                access,
                input_addr,
            } => write!(
                f,
                "{id} {}: unsupported transaction, {access} at {input_addr:#x}, reason {reason:#x}",
                OriginDisplay(origin)
            ),
            Self::BadStreamId { origin } => {
                write!(f, "{id} {}: StreamID out of range", OriginDisplay(origin))
            }
            Self::BadSte { origin } => {
                write!(f, "{id} {}: STE invalid or ILLEGAL", OriginDisplay(origin))
            }
            Self::BadCd { origin } => {
                write!(f, "{id} {}: CD invalid or ILLEGAL", OriginDisplay(origin))
            }
            Self::SteFetch {
                origin,
                reason,
                gpcf,
                fetch_addr,
            }
            | Self::CdFetch {
                origin,
                reason,
                gpcf,
                fetch_addr,
            }
            | Self::VmsFetch {
                origin,
                reason,
                gpcf,
                fetch_addr,
            } => write!(
                f,
                "{id} {}: abort fetching from {fetch_addr}, reason {reason:#x}{}",
                OriginDisplay(origin),
                if *gpcf { " (GPC fault)" } else { "" }
            ),
            Self::BadAtsTreq {
                origin,
                request,
                input_addr,
            } => write!(
                f,
                "{id} {}: ATS translation request for {input_addr:#x} refused (request {request:#x})",
                OriginDisplay(origin)
            ),
            Self::StreamDisabled { sid } => {
                write!(
                    f,
                    "{id} sid {sid:#x}: transaction without substream on a substream-only stream"
                )
            }
            Self::TranslForbidden {
                sid,
                read,
                input_addr,
            } => write!(
                f,
                "{id} sid {sid:#x}: ATS-translated {} at {input_addr:#x} not allowed",
                if *read { "read" } else { "write" }
            ),
            Self::BadSubstreamId { sid, ssid } => {
                write!(
                    f,
                    "{id} sid {sid:#x} ssid {ssid:#x}: SubstreamID not usable"
                )
            }
            Self::WalkEabt {
                origin,
                access,
                stage2,
                class,
                input_addr,
                fetch_addr,
            } => write!(
                f,
                "{id} {}: stage {} {} walk abort reading {fetch_addr}, {access} at {input_addr:#x}",
                OriginDisplay(origin),
                if *stage2 { 2 } else { 1 },
                class.name()
            ),
            Self::Translation(t) | Self::AddrSize(t) | Self::Access(t) | Self::Permission(t) => {
                write!(
                    f,
                    "{id} {}: stage {} {}, {} at {:#x}",
                    OriginDisplay(&t.origin),
                    if t.stage2 { 2 } else { 1 },
                    t.class.name(),
                    t.access,
                    t.input_addr
                )?;
                if t.stage2 {
                    write!(f, " (IPA {})", t.ipa)?;
                }
                if t.stall {
                    write!(f, ", stalled (STAG {:#x})", t.stag)?;
                }
                Ok(())
            }
            Self::TlbConflict {
                origin,
                access,
                stage2,
                input_addr,
                ipa,
            } => write!(
                f,
                "{id} {}: TLB conflict at stage {}, {access} at {input_addr:#x} (IPA {ipa})",
                OriginDisplay(origin),
                if *stage2 { 2 } else { 1 }
            ),
            Self::CfgConflict { origin, reason } => write!(
                f,
                "{id} {}: configuration cache conflict, reason {reason:#x}",
                OriginDisplay(origin)
            ),
            Self::PageRequest {
                origin,
                span,
                perms,
                input_addr,
            } => write!(
                f,
                "{id} {}: page request hint for {span} pages at {input_addr:#x} ({:?})",
                OriginDisplay(origin),
                perms
            ),
            Self::ImpDef { raw } => write!(
                f,
                "{id} sid {:#x}: {:016x} {:016x} {:016x} {:016x}",
                self.sid(),
                raw[0],
                raw[1],
                raw[2],
                raw[3]
            ),
        }
    }
}

/// A stage-2 F_TRANSLATION for a data access of `sid` at `addr`, as the SMMU records a refused
/// transaction of a stage-2-only stream: what the fault bookkeeping and driver tests feed in.
#[cfg(test)]
pub(crate) fn stage2_translation_fault(sid: StreamId, addr: u64, write: bool) -> Event {
    Event::Translation(TranslationFault {
        origin: Origin::stream(sid),
        stag: 0,
        stall: false,
        access: AccessAttrs {
            read: !write,
            instruction: false,
            privileged: false,
        },
        nsipa: false,
        stage2: true,
        class: FaultClass::Input,
        ttrnw: false,
        input_addr: addr,
        ipa: Ipa(addr & !0xfff),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// C_BAD_STE (section 7.3.5): 0x04 in [7:0], SSV [11], SubstreamID [31:12], StreamID [63:32].
    #[test]
    fn bad_ste_vector() {
        let e = Event::bad_ste(0x0010_0008, Some(0x12345));
        assert_eq!(e.encode(), [0x0010_0008_1234_5804, 0, 0, 0]);
        assert_eq!(Event::decode(e.encode()), Ok(e));
        assert_eq!(
            alloc::format!("{e}"),
            "C_BAD_STE sid 0x100008 ssid 0x12345: STE invalid or ILLEGAL"
        );
    }

    /// F_TRANSLATION (section 7.3.13): STAG [79:64], Stall [95], PnU [97], InD [98], RnW [99],
    /// S2 [103], CLASS [105:104], InputAddr [191:128], IPA [255:204].
    #[test]
    fn translation_fault_vector() {
        let raw = [
            0x0000_0008_0000_0010,
            1 << 35 | 1 << 39 | 0b10 << 40 | 1 << 31 | 0x42,
            0x0000_0000_8000_1234,
            0x0000_0000_8000_1000,
        ];
        let e = Event::decode(raw).expect("known event");
        let Event::Translation(t) = e else {
            panic!("{e:?}")
        };
        assert_eq!(t.origin, Origin::stream(8));
        assert!(t.access.read && !t.access.instruction && !t.access.privileged);
        assert!(t.stage2 && t.stall);
        assert_eq!(t.stag, 0x42);
        assert_eq!(t.class, FaultClass::Input);
        assert_eq!(t.input_addr, 0x8000_1234);
        assert_eq!(t.ipa, Ipa(0x8000_1000));
        assert_eq!(e.encode(), raw);
        assert_eq!(
            alloc::format!("{e}"),
            "F_TRANSLATION sid 0x8: stage 2 IN, read data unpriv at 0x80001234 (IPA 0x80001000), \
             stalled (STAG 0x42)"
        );
    }

    /// F_STE_FETCH (section 7.3.4): Reason [79:64], GPCF [80], FetchAddr[55:3] at [247:195].
    #[test]
    fn fetch_vector() {
        let raw = [
            0x0000_0003_0000_0003,
            1 << 16 | 0xbeef,
            0,
            0x0000_0040_0000_0040,
        ];
        let e = Event::decode(raw).expect("known");
        assert_eq!(
            e,
            Event::SteFetch {
                origin: Origin::stream(3),
                reason: 0xbeef,
                gpcf: true,
                fetch_addr: Pa(0x40_0000_0040)
            }
        );
        assert_eq!(e.encode(), raw);
    }

    /// E_PAGE_REQUEST (section 7.3.19): Span [115:108], pR [103] .. uX [98], InputAddr[63:12].
    #[test]
    fn page_request_vector() {
        let raw = [
            0x0000_0001_0000_1824,
            3 << 44 | 1 << 39 | 1 << 34,
            0x7fff_0000_1000,
            0,
        ];
        let e = Event::decode(raw).expect("known");
        let Event::PageRequest {
            origin,
            span,
            perms,
            input_addr,
        } = e
        else {
            panic!("{e:?}")
        };
        assert_eq!(
            origin,
            Origin {
                sid: 1,
                ssid: Some(1)
            }
        );
        assert_eq!(span, 3);
        assert!(perms.priv_read && perms.user_exec && !perms.priv_write);
        assert_eq!(input_addr, 0x7fff_0000_1000);
        assert_eq!(e.encode(), raw);
    }

    #[test]
    fn names_and_reserved() {
        assert_eq!(EventId::F_PERMISSION.name(), Some("F_PERMISSION"));
        assert_eq!(EventId(0xe3).name(), Some("IMPDEF_EVENT"));
        assert_eq!(alloc::format!("{}", EventId(0xe3)), "IMPDEF_EVENT0xe3");
        assert_eq!(EventId(0x30).name(), None);
        assert_eq!(
            Event::decode([0x30, 0, 0, 0]),
            Err(EventError::ReservedType(0x30))
        );
        let imp = [0x0000_0005_0000_00e1, 1, 2, 3];
        assert_eq!(Event::decode(imp), Ok(Event::ImpDef { raw: imp }));
        assert_eq!(Event::ImpDef { raw: imp }.sid(), 5);
    }

    fn origin() -> impl Strategy<Value = Origin> {
        (
            any::<u32>(),
            proptest::option::of(0..=crate::smmu::SSID_MAX),
        )
            .prop_map(|(sid, ssid)| Origin { sid, ssid })
    }

    fn access() -> impl Strategy<Value = AccessAttrs> {
        any::<(bool, bool, bool)>().prop_map(|(read, instruction, privileged)| AccessAttrs {
            read,
            instruction,
            privileged,
        })
    }

    fn class() -> impl Strategy<Value = FaultClass> {
        prop_oneof![
            Just(FaultClass::Cd),
            Just(FaultClass::TranslationTable),
            Just(FaultClass::Input),
            Just(FaultClass::Reserved)
        ]
    }

    fn fetch_pa() -> impl Strategy<Value = Pa> {
        (0u64..1 << 53).prop_map(|a| Pa(a << 3))
    }

    fn page_ipa() -> impl Strategy<Value = Ipa> {
        (0u64..1 << 44).prop_map(|a| Ipa(a << 12))
    }

    fn fault() -> impl Strategy<Value = TranslationFault> {
        (
            origin(),
            any::<u16>(),
            any::<bool>(),
            access(),
            any::<(bool, bool, bool)>(),
            class(),
            any::<u64>(),
            page_ipa(),
        )
            .prop_map(
                |(origin, stag, stall, access, (nsipa, stage2, ttrnw), class, input_addr, ipa)| {
                    TranslationFault {
                        origin,
                        stag,
                        stall,
                        access,
                        nsipa,
                        stage2,
                        class,
                        ttrnw,
                        input_addr,
                        ipa,
                    }
                },
            )
    }

    fn event() -> impl Strategy<Value = Event> {
        let page = (0u64..1 << 52).prop_map(|a| a << 12);
        prop_oneof![
            (origin(), any::<u16>(), access(), any::<u64>()).prop_map(
                |(origin, reason, access, input_addr)| {
                    Event::Uut {
                        origin,
                        reason,
                        access,
                        input_addr,
                    }
                }
            ),
            origin().prop_map(|origin| Event::BadStreamId { origin }),
            (origin(), any::<u16>(), any::<bool>(), fetch_pa()).prop_map(
                |(origin, reason, gpcf, fetch_addr)| {
                    Event::SteFetch {
                        origin,
                        reason,
                        gpcf,
                        fetch_addr,
                    }
                }
            ),
            origin().prop_map(|origin| Event::BadSte { origin }),
            (origin(), any::<u64>(), page.clone()).prop_map(|(origin, request, input_addr)| {
                Event::BadAtsTreq {
                    origin,
                    request,
                    input_addr,
                }
            }),
            any::<u32>().prop_map(|sid| Event::StreamDisabled { sid }),
            (any::<u32>(), any::<bool>(), any::<u64>()).prop_map(|(sid, read, input_addr)| {
                Event::TranslForbidden {
                    sid,
                    read,
                    input_addr,
                }
            }),
            (any::<u32>(), 0..=crate::smmu::SSID_MAX)
                .prop_map(|(sid, ssid)| Event::BadSubstreamId { sid, ssid }),
            (origin(), any::<u16>(), any::<bool>(), fetch_pa()).prop_map(
                |(origin, reason, gpcf, fetch_addr)| {
                    Event::CdFetch {
                        origin,
                        reason,
                        gpcf,
                        fetch_addr,
                    }
                }
            ),
            origin().prop_map(|origin| Event::BadCd { origin }),
            (
                origin(),
                access(),
                any::<bool>(),
                class(),
                any::<u64>(),
                fetch_pa()
            )
                .prop_map(|(origin, access, stage2, class, input_addr, fetch_addr)| {
                    Event::WalkEabt {
                        origin,
                        access,
                        stage2,
                        class,
                        input_addr,
                        fetch_addr,
                    }
                }),
            fault().prop_map(Event::Translation),
            fault().prop_map(Event::AddrSize),
            fault().prop_map(Event::Access),
            fault().prop_map(Event::Permission),
            (origin(), access(), any::<bool>(), any::<u64>(), page_ipa()).prop_map(
                |(origin, access, stage2, input_addr, ipa)| Event::TlbConflict {
                    origin,
                    access,
                    stage2,
                    input_addr,
                    ipa
                }
            ),
            (origin(), any::<u32>())
                .prop_map(|(origin, reason)| Event::CfgConflict { origin, reason }),
            (origin(), any::<u8>(), any::<[bool; 6]>(), page).prop_map(
                |(origin, span, p, input_addr)| {
                    let perms = PagePerms {
                        priv_read: p[0],
                        priv_write: p[1],
                        priv_exec: p[2],
                        user_read: p[3],
                        user_write: p[4],
                        user_exec: p[5],
                    };
                    Event::PageRequest {
                        origin,
                        span,
                        perms,
                        input_addr,
                    }
                }
            ),
            (origin(), any::<u16>(), any::<bool>(), fetch_pa()).prop_map(
                |(origin, reason, gpcf, fetch_addr)| {
                    Event::VmsFetch {
                        origin,
                        reason,
                        gpcf,
                        fetch_addr,
                    }
                }
            ),
            (0xe0u64..=0xef, any::<u64>(), any::<[u64; 3]>()).prop_map(|(t, hi, r)| {
                Event::ImpDef {
                    raw: [hi << 8 | t, r[0], r[1], r[2]],
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn roundtrip(e in event()) {
            prop_assert_eq!(Event::decode(e.encode()), Ok(e));
            let line = alloc::format!("{e}");
            prop_assert!(!line.contains('\n'));
        }

        /// Any 32 bytes decode without panicking, to something that re-encodes and decodes equal.
        #[test]
        fn decode_total(raw in any::<[u64; 4]>()) {
            if let Ok(e) = Event::decode(raw) {
                prop_assert_eq!(e.id().0, raw[0] as u8);
                prop_assert_eq!(Event::decode(e.encode()), Ok(e));
                let _ = alloc::format!("{e}");
            }
        }
    }
}
