//! Context descriptors (sections 5.3 "L1CD, Level 1 Context Descriptor" and 5.4 "CD, Context
//! Descriptor").
//!
//! In nested mode the physical SMMU fetches the host's CDs itself, through Portcullis' stage 2, and
//! reports a bad one as C_BAD_CD. Portcullis decodes CDs to validate what the host points the
//! SMMU at, to describe faults, and (with [`ContextDescriptor::encode`]) to build CDs in tests and
//! guest payloads.

use core::fmt;

use tock_registers::LocalRegisterCopy;
use tock_registers::register_bitfields;

use super::event::EventId;
use super::regs::{SmmuFeatures, StallModel, TableFormats, address_size_bits};
use super::ste::{CdTableFormat, Granule};
use super::{Ipa, SubstreamId, TableAddress};

register_bitfields! [u64,
    /// CD bits [63:0].
    pub CD0 [
        T0SZ OFFSET(0) NUMBITS(6) [],
        TG0 OFFSET(6) NUMBITS(2) [],
        IR0 OFFSET(8) NUMBITS(2) [],
        OR0 OFFSET(10) NUMBITS(2) [],
        SH0 OFFSET(12) NUMBITS(2) [],
        EPD0 OFFSET(14) NUMBITS(1) [],
        ENDI OFFSET(15) NUMBITS(1) [],
        T1SZ OFFSET(16) NUMBITS(6) [],
        TG1 OFFSET(22) NUMBITS(2) [],
        IR1 OFFSET(24) NUMBITS(2) [],
        OR1 OFFSET(26) NUMBITS(2) [],
        SH1 OFFSET(28) NUMBITS(2) [],
        EPD1 OFFSET(30) NUMBITS(1) [],
        V OFFSET(31) NUMBITS(1) [],
        IPS OFFSET(32) NUMBITS(3) [],
        AFFD OFFSET(35) NUMBITS(1) [],
        WXN OFFSET(36) NUMBITS(1) [],
        UWXN OFFSET(37) NUMBITS(1) [],
        TBI0 OFFSET(38) NUMBITS(1) [],
        TBI1 OFFSET(39) NUMBITS(1) [],
        PAN OFFSET(40) NUMBITS(1) [],
        AA64 OFFSET(41) NUMBITS(1) [],
        HD OFFSET(42) NUMBITS(1) [],
        HA OFFSET(43) NUMBITS(1) [],
        S OFFSET(44) NUMBITS(1) [],
        R OFFSET(45) NUMBITS(1) [],
        A OFFSET(46) NUMBITS(1) [],
        ASET OFFSET(47) NUMBITS(1) [],
        ASID OFFSET(48) NUMBITS(16) []
    ],
    /// CD bits [127:64].
    pub CD1 [
        NSCFG0 OFFSET(0) NUMBITS(1) [],
        HAD0 OFFSET(1) NUMBITS(1) [],
        E0PD0 OFFSET(2) NUMBITS(1) [],
        HAFT OFFSET(3) NUMBITS(1) [],
        /// Bits [55:4] of the TTB0 table address.
        TTB0 OFFSET(4) NUMBITS(52) [],
        PNCH OFFSET(58) NUMBITS(1) [],
        EPAN OFFSET(59) NUMBITS(1) [],
        /// HWU059..HWU062.
        HWU0 OFFSET(60) NUMBITS(4) []
    ],
    /// CD bits [191:128].
    pub CD2 [
        NSCFG1 OFFSET(0) NUMBITS(1) [],
        HAD1 OFFSET(1) NUMBITS(1) [],
        E0PD1 OFFSET(2) NUMBITS(1) [],
        AIE OFFSET(3) NUMBITS(1) [],
        /// Bits [55:4] of the TTB1 table address.
        TTB1 OFFSET(4) NUMBITS(52) [],
        DS OFFSET(58) NUMBITS(1) [],
        PIE OFFSET(59) NUMBITS(1) [],
        /// HWU159..HWU162.
        HWU1 OFFSET(60) NUMBITS(4) []
    ],
    /// CD bits [383:320].
    pub CD5 [
        IMPDEF OFFSET(0) NUMBITS(32) [],
        PARTID OFFSET(32) NUMBITS(16) [],
        PMG OFFSET(48) NUMBITS(8) []
    ],
    /// L1CD, the 8-byte level-1 CD table descriptor (section 5.3).
    pub L1CD [
        V OFFSET(0) NUMBITS(1) [],
        /// Bits [55:12] of the level 2 CD table.
        L2PTR OFFSET(12) NUMBITS(44) []
    ]
];

/// Size of a CD in bytes.
pub const CD_SIZE: usize = 64;
/// Size of an L1CD in bytes.
pub const L1CD_SIZE: usize = 8;

/// The translation controls of one of the two halves of the VA space (TTB0 or TTB1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableControl {
    /// `TxSZ`: the region is `2^(64-TxSZ)` bytes.
    pub tsz: u8,
    /// `TGx`, raw (TG0 and TG1 encode granules differently).
    pub tg: u8,
    /// Walk inner/outer cacheability and shareability (`IRx`, `ORx`, `SHx`).
    pub ir: u8,
    pub or: u8,
    pub sh: u8,
    /// Walks disabled (`EPDx`).
    pub epd: bool,
    pub tbi: bool,
    pub nscfg: bool,
    pub had: bool,
    pub e0pd: bool,
    /// `HWUx59..62`.
    pub hwu: u8,
    /// The translation table base (`TTBx`), an IPA once stage 2 is in use.
    pub ttb: Ipa,
}

/// A decoded Context descriptor (the fields used to validate and forward; the permission
/// indirection words 6 and 7 and AMAIR are kept only as raw words in `raw_tail`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContextDescriptor {
    pub tt0: TableControl,
    pub tt1: TableControl,
    /// Big-endian walks (`ENDI`).
    pub endi: bool,
    /// Intermediate physical size encoding (`IPS`), as IDR5.OAS.
    pub ips: u8,
    pub affd: bool,
    pub wxn: bool,
    pub uwxn: bool,
    pub pan: bool,
    /// VMSAv8-64 tables (otherwise VMSAv8-32 LPAE).
    pub aa64: bool,
    pub hd: bool,
    pub ha: bool,
    pub haft: bool,
    /// Fault behaviour: `S` (stall), `R` (record), `A` (abort, else RAZ/WI).
    pub stall: bool,
    pub record: bool,
    pub abort: bool,
    /// Non-shared ASID set (`ASET`).
    pub aset: bool,
    pub asid: u16,
    pub pnch: bool,
    pub epan: bool,
    pub aie: bool,
    pub ds: bool,
    pub pie: bool,
    pub mair: u64,
    pub amair: u64,
    pub impdef: u32,
    pub partid: u16,
    pub pmg: u8,
    /// Words 6 and 7 (PIIU/PIIP), not interpreted.
    pub raw_tail: [u64; 2],
}

/// Why a CD cannot be used; reported as C_BAD_CD (section 5.4.2, "Validity of CD").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CdError {
    /// `V == 0`.
    NotValid,
    /// `S == 1` where the SMMU cannot stall, or `S == 0` where it must.
    StallModel,
    /// `A == 0` (RAZ/WI termination) where the SMMU only aborts (`IDR0.TERM_MODEL`).
    RazWiNotSupported,
    /// The table format (`AA64`) is not supported.
    TableFormat,
    /// `HA`/`HD` beyond what `IDR0.HTTU` offers.
    HardwareUpdate,
    /// A 16-bit ASID on an SMMU with 8-bit ASIDs.
    AsidTooWide(u16),
    /// `TGx` selects a Reserved or unsupported granule (TTB0 or TTB1).
    Granule { ttb: u8 },
    /// `TxSZ` outside the range the SMMU supports.
    TableSize { ttb: u8, tsz: u8 },
    /// `TTBx` beyond the intermediate physical address size.
    TableBaseOutOfRange { ttb: u8, base: Ipa },
}

impl CdError {
    pub const fn event(&self) -> EventId {
        EventId::C_BAD_CD
    }
}

impl fmt::Display for CdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotValid => write!(f, "CD not valid (V == 0)"),
            Self::StallModel => write!(f, "CD.S contradicts the SMMU's stall model"),
            Self::RazWiNotSupported => {
                write!(f, "CD.A == 0 but the SMMU only terminates with abort")
            }
            Self::TableFormat => write!(f, "CD.AA64 selects an unsupported table format"),
            Self::HardwareUpdate => write!(f, "CD.HA/HD beyond the SMMU's HTTU support"),
            Self::AsidTooWide(a) => write!(f, "CD.ASID {a:#x} wider than 8 bits"),
            Self::Granule { ttb } => write!(f, "CD.TG{ttb} selects an unsupported granule"),
            Self::TableSize { ttb, tsz } => write!(f, "CD.T{ttb}SZ {tsz} out of range"),
            Self::TableBaseOutOfRange { ttb, base } => {
                write!(
                    f,
                    "CD.TTB{ttb} {base} beyond the intermediate physical address size"
                )
            }
        }
    }
}

impl ContextDescriptor {
    /// Decodes a CD read from host memory. Only `V == 0` fails here; what depends on the SMMU's
    /// features is checked by [`ContextDescriptor::check`].
    pub fn decode(raw: [u64; 8]) -> Result<Self, CdError> {
        let w0 = LocalRegisterCopy::<u64, CD0::Register>::new(raw[0]);
        let w1 = LocalRegisterCopy::<u64, CD1::Register>::new(raw[1]);
        let w2 = LocalRegisterCopy::<u64, CD2::Register>::new(raw[2]);
        let w5 = LocalRegisterCopy::<u64, CD5::Register>::new(raw[5]);
        if !w0.is_set(CD0::V) {
            return Err(CdError::NotValid);
        }
        let u8_of = |v: u64| v as u8;
        Ok(Self {
            tt0: TableControl {
                tsz: u8_of(w0.read(CD0::T0SZ)),
                tg: u8_of(w0.read(CD0::TG0)),
                ir: u8_of(w0.read(CD0::IR0)),
                or: u8_of(w0.read(CD0::OR0)),
                sh: u8_of(w0.read(CD0::SH0)),
                epd: w0.is_set(CD0::EPD0),
                tbi: w0.is_set(CD0::TBI0),
                nscfg: w1.is_set(CD1::NSCFG0),
                had: w1.is_set(CD1::HAD0),
                e0pd: w1.is_set(CD1::E0PD0),
                hwu: u8_of(w1.read(CD1::HWU0)),
                ttb: Ipa(w1.read(CD1::TTB0) << CD1::TTB0.shift),
            },
            tt1: TableControl {
                tsz: u8_of(w0.read(CD0::T1SZ)),
                tg: u8_of(w0.read(CD0::TG1)),
                ir: u8_of(w0.read(CD0::IR1)),
                or: u8_of(w0.read(CD0::OR1)),
                sh: u8_of(w0.read(CD0::SH1)),
                epd: w0.is_set(CD0::EPD1),
                tbi: w0.is_set(CD0::TBI1),
                nscfg: w2.is_set(CD2::NSCFG1),
                had: w2.is_set(CD2::HAD1),
                e0pd: w2.is_set(CD2::E0PD1),
                hwu: u8_of(w2.read(CD2::HWU1)),
                ttb: Ipa(w2.read(CD2::TTB1) << CD2::TTB1.shift),
            },
            endi: w0.is_set(CD0::ENDI),
            ips: u8_of(w0.read(CD0::IPS)),
            affd: w0.is_set(CD0::AFFD),
            wxn: w0.is_set(CD0::WXN),
            uwxn: w0.is_set(CD0::UWXN),
            pan: w0.is_set(CD0::PAN),
            aa64: w0.is_set(CD0::AA64),
            hd: w0.is_set(CD0::HD),
            ha: w0.is_set(CD0::HA),
            haft: w1.is_set(CD1::HAFT),
            stall: w0.is_set(CD0::S),
            record: w0.is_set(CD0::R),
            abort: w0.is_set(CD0::A),
            aset: w0.is_set(CD0::ASET),
            asid: w0.read(CD0::ASID) as u16,
            pnch: w1.is_set(CD1::PNCH),
            epan: w1.is_set(CD1::EPAN),
            aie: w2.is_set(CD2::AIE),
            ds: w2.is_set(CD2::DS),
            pie: w2.is_set(CD2::PIE),
            mair: raw[3],
            amair: raw[4],
            impdef: w5.read(CD5::IMPDEF) as u32,
            partid: w5.read(CD5::PARTID) as u16,
            pmg: w5.read(CD5::PMG) as u8,
            raw_tail: [raw[6], raw[7]],
        })
    }

    /// Encodes the CD, with `V == 1`.
    ///
    /// # Panics
    ///
    /// If a field does not fit (TxSZ above 63, a 2-bit field above 3, a TTB not 16-byte aligned
    /// or beyond 56 bits): a CD built wrongly.
    pub fn encode(&self) -> [u64; 8] {
        let bits = |v: u8, width: u32, name: &str| -> u64 {
            assert!(
                u32::from(v) < 1 << width,
                "ContextDescriptor: {name} = {v} does not fit"
            );
            u64::from(v)
        };
        let ttb = |a: Ipa, name: &str| -> u64 {
            assert!(
                a.0 & 0xf == 0 && a.0 >> 56 == 0,
                "ContextDescriptor: {name} {a} not encodable"
            );
            a.0 >> 4
        };
        let (t0, t1) = (&self.tt0, &self.tt1);
        let f = |b: bool| u64::from(b);
        let w0 = CD0::T0SZ.val(bits(t0.tsz, 6, "T0SZ"))
            + CD0::TG0.val(bits(t0.tg, 2, "TG0"))
            + CD0::IR0.val(bits(t0.ir, 2, "IR0"))
            + CD0::OR0.val(bits(t0.or, 2, "OR0"))
            + CD0::SH0.val(bits(t0.sh, 2, "SH0"))
            + CD0::EPD0.val(f(t0.epd))
            + CD0::ENDI.val(f(self.endi))
            + CD0::T1SZ.val(bits(t1.tsz, 6, "T1SZ"))
            + CD0::TG1.val(bits(t1.tg, 2, "TG1"))
            + CD0::IR1.val(bits(t1.ir, 2, "IR1"))
            + CD0::OR1.val(bits(t1.or, 2, "OR1"))
            + CD0::SH1.val(bits(t1.sh, 2, "SH1"))
            + CD0::EPD1.val(f(t1.epd))
            + CD0::V::SET
            + CD0::IPS.val(bits(self.ips, 3, "IPS"))
            + CD0::AFFD.val(f(self.affd))
            + CD0::WXN.val(f(self.wxn))
            + CD0::UWXN.val(f(self.uwxn))
            + CD0::TBI0.val(f(t0.tbi))
            + CD0::TBI1.val(f(t1.tbi))
            + CD0::PAN.val(f(self.pan))
            + CD0::AA64.val(f(self.aa64))
            + CD0::HD.val(f(self.hd))
            + CD0::HA.val(f(self.ha))
            + CD0::S.val(f(self.stall))
            + CD0::R.val(f(self.record))
            + CD0::A.val(f(self.abort))
            + CD0::ASET.val(f(self.aset))
            + CD0::ASID.val(u64::from(self.asid));
        let w1 = CD1::NSCFG0.val(f(t0.nscfg))
            + CD1::HAD0.val(f(t0.had))
            + CD1::E0PD0.val(f(t0.e0pd))
            + CD1::HAFT.val(f(self.haft))
            + CD1::TTB0.val(ttb(t0.ttb, "TTB0"))
            + CD1::PNCH.val(f(self.pnch))
            + CD1::EPAN.val(f(self.epan))
            + CD1::HWU0.val(bits(t0.hwu, 4, "HWU0"));
        let w2 = CD2::NSCFG1.val(f(t1.nscfg))
            + CD2::HAD1.val(f(t1.had))
            + CD2::E0PD1.val(f(t1.e0pd))
            + CD2::AIE.val(f(self.aie))
            + CD2::TTB1.val(ttb(t1.ttb, "TTB1"))
            + CD2::DS.val(f(self.ds))
            + CD2::PIE.val(f(self.pie))
            + CD2::HWU1.val(bits(t1.hwu, 4, "HWU1"));
        let w5 = CD5::IMPDEF.val(u64::from(self.impdef))
            + CD5::PARTID.val(u64::from(self.partid))
            + CD5::PMG.val(u64::from(self.pmg));
        [
            w0.value,
            w1.value,
            w2.value,
            self.mair,
            self.amair,
            w5.value,
            self.raw_tail[0],
            self.raw_tail[1],
        ]
    }

    /// The checks of section 5.4.2 for a CD of an NS-EL1 stream (the only StreamWorld the host
    /// gets) on an SMMU with features `f`, with VMSAv8-64 or VMSAv8-32 LPAE tables.
    pub fn check(&self, f: &SmmuFeatures) -> Result<(), CdError> {
        match f.stall_model {
            StallModel::TerminateOnly if self.stall => return Err(CdError::StallModel),
            StallModel::StallForced if !self.stall => return Err(CdError::StallModel),
            _ => {}
        }
        if f.term_abort_only && !self.abort {
            return Err(CdError::RazWiNotSupported);
        }
        let formats_ok = match f.table_formats {
            TableFormats::Both => true,
            TableFormats::AArch64 => self.aa64,
            TableFormats::AArch32 => !self.aa64,
            TableFormats::Reserved => false,
        };
        if !formats_ok {
            return Err(CdError::TableFormat);
        }
        if self.aa64 {
            use super::regs::Httu;
            let httu_ok = match f.httu {
                Httu::None => !self.ha && !self.hd,
                Httu::Access => !self.hd,
                Httu::AccessDirty => true,
                Httu::AccessDirtyTable => !self.haft || self.ha,
            };
            if !httu_ok {
                return Err(CdError::HardwareUpdate);
            }
        }
        if !f.asid16 && self.asid >> 8 != 0 {
            return Err(CdError::AsidTooWide(self.asid));
        }
        if !self.aa64 {
            return Ok(());
        }
        let ips_bits = address_size_bits(self.ips).unwrap_or(48).min(f.oas_bits);
        for (n, tt, granule) in [
            (0u8, &self.tt0, Granule::from_tg0(u64::from(self.tt0.tg))),
            (1u8, &self.tt1, Granule::from_tg1(u64::from(self.tt1.tg))),
        ] {
            if tt.epd {
                continue;
            }
            let granule = match granule {
                Some(g) if g.supported_by(f) => g,
                _ => return Err(CdError::Granule { ttb: n }),
            };
            let max = match (f.stt, granule) {
                (true, Granule::K4 | Granule::K16) => 48,
                (true, Granule::K64) => 47,
                (false, _) => 39,
            };
            let large_va = granule == Granule::K64 || (f.ds && self.ds);
            let min = if f.va_bits >= 52 && large_va { 12 } else { 16 };
            if tt.tsz < min || tt.tsz > max {
                return Err(CdError::TableSize {
                    ttb: n,
                    tsz: tt.tsz,
                });
            }
            if ips_bits < 64 && tt.ttb.0 >> ips_bits != 0 {
                return Err(CdError::TableBaseOutOfRange {
                    ttb: n,
                    base: tt.ttb,
                });
            }
        }
        Ok(())
    }
}

/// A level-1 CD table descriptor. `A` is [`Ipa`] for the host's tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L1Cd<A: TableAddress> {
    pub valid: bool,
    /// The level 2 table of CDs, 4KB aligned.
    pub l2_table: A,
}

impl<A: TableAddress> L1Cd<A> {
    pub fn decode(raw: u64) -> Self {
        let r = LocalRegisterCopy::<u64, L1CD::Register>::new(raw);
        Self {
            valid: r.is_set(L1CD::V),
            l2_table: A::from_raw(r.read(L1CD::L2PTR) << L1CD::L2PTR.shift),
        }
    }

    /// # Panics
    ///
    /// If the table is not 4KB aligned or beyond 56 bits.
    pub fn encode(&self) -> u64 {
        let ptr = self.l2_table.to_raw();
        assert!(
            ptr & 0xfff == 0 && ptr >> 56 == 0,
            "L1Cd: L2 table {ptr:#x} not encodable"
        );
        (L1CD::V.val(u64::from(self.valid)) + L1CD::L2PTR.val(ptr >> L1CD::L2PTR.shift)).value
    }
}

/// Where a SubstreamID's CD is in a CD table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CdLocation {
    /// Byte offset of the CD from the table base.
    Linear { offset: u64 },
    /// Byte offset of the L1CD from the table base, then of the CD in its level 2 table.
    TwoLevel { l1_offset: u64, l2_offset: u64 },
}

/// A SubstreamID beyond the table (`>= 2^S1CDMax`): C_BAD_SUBSTREAMID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubstreamOutOfRange(pub SubstreamId);

impl fmt::Display for SubstreamOutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubstreamID {:#x} beyond the CD table", self.0)
    }
}

/// Where the CD for `ssid` is in a table of `2^cd_max` CDs of the given format (section 5.2,
/// S1Fmt). With `cd_max == 0` the table is one CD and only SubstreamID 0 (or none) reaches it.
pub fn locate_cd(
    format: CdTableFormat,
    cd_max: u8,
    ssid: SubstreamId,
) -> Result<CdLocation, SubstreamOutOfRange> {
    if u64::from(ssid) >= 1u64 << cd_max.min(32) {
        return Err(SubstreamOutOfRange(ssid));
    }
    let split = match format {
        CdTableFormat::Linear => {
            return Ok(CdLocation::Linear {
                offset: u64::from(ssid) * CD_SIZE as u64,
            });
        }
        CdTableFormat::TwoLevel4K => 6,
        CdTableFormat::TwoLevel64K => 10,
    };
    Ok(CdLocation::TwoLevel {
        l1_offset: u64::from(ssid >> split) * L1CD_SIZE as u64,
        l2_offset: u64::from(ssid & ((1 << split) - 1)) * CD_SIZE as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smmu::regs::SmmuFeatures;
    use proptest::prelude::*;

    fn features() -> SmmuFeatures {
        SmmuFeatures::from_idr(0x080f_7e3f, 0x0e73_9d18, 0x0000_003c, 0x0040_0075)
    }

    /// A CD as Linux's io-pgtable setup writes it for a 48-bit VA, 4KB granule, WBWA inner
    /// shareable walks, TTB1 disabled, ASID 5: field positions from section 5.4.
    fn linux_cd() -> [u64; 8] {
        let w0 = 16 // T0SZ [5:0], TG0 [7:6] = 0b00 (4KB)
            | 0b01 << 8 | 0b01 << 10 | 0b11 << 12 // IR0, OR0, SH0
            | 1 << 30 // EPD1
            | 1 << 31 // V
            | 0b101 << 32 // IPS 48 bits
            | 1 << 38 // TBI0
            | 1 << 41 // AA64
            | 1 << 45 | 1 << 46 // R, A
            | 1 << 47 // ASET
            | 5 << 48; // ASID
        [w0, 0x8_0020_0000, 0, 0x0000_0000_0044_ff04, 0, 0, 0, 0]
    }

    #[test]
    fn decode_linux_cd() {
        let cd = ContextDescriptor::decode(linux_cd()).expect("valid");
        assert_eq!(cd.tt0.tsz, 16);
        assert_eq!(Granule::from_tg0(u64::from(cd.tt0.tg)), Some(Granule::K4));
        assert_eq!((cd.tt0.ir, cd.tt0.or, cd.tt0.sh), (1, 1, 3));
        assert!(cd.tt1.epd && !cd.tt0.epd && cd.tt0.tbi);
        assert_eq!(cd.ips, 0b101);
        assert!(cd.aa64 && cd.record && cd.abort && !cd.stall && cd.aset);
        assert_eq!(cd.asid, 5);
        assert_eq!(cd.tt0.ttb, Ipa(0x8_0020_0000));
        assert_eq!(cd.mair, 0x44_ff04);
        assert_eq!(cd.encode(), linux_cd());
        assert_eq!(cd.check(&features()), Ok(()));
    }

    #[test]
    fn illegal_cds() {
        let mut raw = linux_cd();
        raw[0] &= !(1 << 31);
        assert_eq!(ContextDescriptor::decode(raw), Err(CdError::NotValid));
        assert_eq!(CdError::NotValid.event(), EventId::C_BAD_CD);
        let cd = ContextDescriptor::decode(linux_cd()).expect("valid");
        let f = features();
        // TG0 0b11 is Reserved.
        let bad = ContextDescriptor {
            tt0: TableControl { tg: 0b11, ..cd.tt0 },
            ..cd
        };
        assert_eq!(bad.check(&f), Err(CdError::Granule { ttb: 0 }));
        // T0SZ 8 is below the 16 minimum for 48-bit VAs.
        let bad = ContextDescriptor {
            tt0: TableControl { tsz: 8, ..cd.tt0 },
            ..cd
        };
        assert_eq!(bad.check(&f), Err(CdError::TableSize { ttb: 0, tsz: 8 }));
        // HA without HTTU.
        assert_eq!(
            ContextDescriptor { ha: true, ..cd }.check(&f),
            Err(CdError::HardwareUpdate)
        );
        // TTB0 above the 48-bit IPS.
        let bad = ContextDescriptor {
            tt0: TableControl {
                ttb: Ipa(1 << 50),
                ..cd.tt0
            },
            ..cd
        };
        assert!(matches!(
            bad.check(&f),
            Err(CdError::TableBaseOutOfRange { ttb: 0, .. })
        ));
        // 16-bit ASID on an 8-bit-ASID SMMU.
        let narrow = SmmuFeatures { asid16: false, ..f };
        assert_eq!(
            ContextDescriptor { asid: 0x100, ..cd }.check(&narrow),
            Err(CdError::AsidTooWide(0x100))
        );
        // Stall on a terminate-only SMMU.
        let term = SmmuFeatures {
            stall_model: StallModel::TerminateOnly,
            ..f
        };
        assert_eq!(
            ContextDescriptor { stall: true, ..cd }.check(&term),
            Err(CdError::StallModel)
        );
        // TG1 0b00 is Reserved, but TTB1 walks are disabled, so it is not looked at.
        assert_eq!(cd.tt1.tg, 0);
        let enabled = ContextDescriptor {
            tt1: TableControl {
                epd: false,
                tsz: 16,
                ..cd.tt1
            },
            ..cd
        };
        assert_eq!(enabled.check(&f), Err(CdError::Granule { ttb: 1 }));
    }

    #[test]
    fn cd_tables() {
        // L1CD: V [0], L2Ptr [55:12].
        let l1 = L1Cd::<Ipa> {
            valid: true,
            l2_table: Ipa(0x4000_3000),
        };
        assert_eq!(l1.encode(), 0x4000_3001);
        assert_eq!(
            L1Cd::<Ipa>::decode(0x4000_3fff),
            L1Cd {
                valid: true,
                l2_table: Ipa(0x4000_3000)
            }
        );
        assert_eq!(
            locate_cd(CdTableFormat::Linear, 4, 3),
            Ok(CdLocation::Linear { offset: 3 * 64 })
        );
        assert_eq!(
            locate_cd(CdTableFormat::Linear, 4, 16),
            Err(SubstreamOutOfRange(16))
        );
        assert_eq!(
            locate_cd(CdTableFormat::TwoLevel4K, 20, 0x1234),
            Ok(CdLocation::TwoLevel {
                l1_offset: (0x1234 >> 6) * 8,
                l2_offset: (0x1234 & 63) * 64
            })
        );
        assert_eq!(
            locate_cd(CdTableFormat::TwoLevel64K, 20, 0x1234),
            Ok(CdLocation::TwoLevel {
                l1_offset: 4 * 8,
                l2_offset: 0x234 * 64
            })
        );
        assert_eq!(
            locate_cd(CdTableFormat::Linear, 0, 0),
            Ok(CdLocation::Linear { offset: 0 })
        );
    }

    proptest! {
        /// Any 64 bytes decode without panicking; a decoded CD encodes back to the same bits
        /// except the fields the decoder does not keep (bits [57:56] of word 1 and [57:56] of
        /// word 2 are RES0, AMAIR and the tail are kept raw).
        #[test]
        fn decode_encode(raw in any::<[u64; 8]>(), idr in any::<[u32; 4]>()) {
            let mut raw = raw;
            raw[0] |= 1 << 31;
            let cd = ContextDescriptor::decode(raw).expect("V set");
            let back = cd.encode();
            let reserved1 = 0b11 << 56;
            prop_assert_eq!(back[0], raw[0]);
            prop_assert_eq!(back[1], raw[1] & !reserved1);
            prop_assert_eq!(back[2], raw[2] & !reserved1);
            prop_assert_eq!(&back[3..5], &raw[3..5]);
            prop_assert_eq!(back[5], raw[5] & ((1 << 56) - 1));
            prop_assert_eq!(&back[6..], &raw[6..]);
            prop_assert_eq!(ContextDescriptor::decode(back), Ok(cd));
            let _ = cd.check(&SmmuFeatures::from_idr(idr[0], idr[1], idr[2], idr[3]));
            let _ = L1Cd::<Ipa>::decode(raw[1]);
        }

        #[test]
        fn locate_cd_total(fmt in 0u8..3, cd_max in any::<u8>(), ssid in any::<u32>()) {
            let format = [CdTableFormat::Linear, CdTableFormat::TwoLevel4K, CdTableFormat::TwoLevel64K][fmt as usize];
            if let Ok(loc) = locate_cd(format, cd_max, ssid) {
                prop_assert!(u64::from(ssid) < 1u64 << cd_max.min(32));
                if let CdLocation::TwoLevel { l2_offset, .. } = loc {
                    prop_assert!(l2_offset < 64 * 1024);
                }
            }
        }
    }
}
