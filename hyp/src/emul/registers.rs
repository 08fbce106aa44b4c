//! The emulated register file: which offsets are registers, how wide they are, and which bits of
//! them the emulated SMMU implements.
//!
//! Access rules (section 6.2): 32-bit registers take aligned 32-bit accesses; 64-bit registers
//! take an aligned 64-bit access or a 32-bit access to either half. Anything else (8- and 16-bit
//! accesses, misaligned accesses, a 64-bit access to a 32-bit register) is CONSTRAINED
//! UNPREDICTABLE in the architecture; the emulation treats it as RAZ/WI and reports it.
//!
//! The page 1 queue indexes (`EVENTQ_PROD`/`EVENTQ_CONS` at `0x100A8`/`0x100AC`) are also answered
//! at their optional page 0 aliases (section 6.2.1), as some drivers only map page 0.

use crate::smmu::regs::{
    CMDQ_CONS, CMDQ_PROD, CR0, CR1, CR2, GBPA, GERROR, IRQ_CFG0, IRQ_CFG2, IRQ_CTRL, OUTQ_CONS,
    OUTQ_PROD, QUEUE_BASE, STRTAB_BASE, STRTAB_BASE_CFG, offset,
};
use tock_registers::RegisterLongName;
use tock_registers::fields::Field;

/// The size of the emulated frame: register pages 0 and 1.
pub const FRAME_SIZE: usize = 2 * offset::PAGE1;

/// One emulated register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reg {
    /// `SMMU_IDR0`..`SMMU_IDR5`.
    Idr(u8),
    Iidr,
    Aidr,
    Cr0,
    Cr0Ack,
    Cr1,
    Cr2,
    Gbpa,
    IrqCtrl,
    IrqCtrlAck,
    Gerror,
    Gerrorn,
    StrtabBase,
    StrtabBaseCfg,
    CmdqBase,
    CmdqProd,
    CmdqCons,
    EvtqBase,
    EvtqProd,
    EvtqCons,
    /// `SMMU_<source>_IRQ_CFG<n>` (n = 0, 1, 2): the MSI configuration of an interrupt source
    /// (`IDR0.MSI` reads 1; see [`super::msi`]).
    IrqCfg(IrqSource, u8),
    /// An architected register for a feature the emulated SMMU does not offer (the PRI queue,
    /// STATUSR, AGBPA): reads as zero, ignores writes, without a note.
    Absent {
        name: &'static str,
        wide: bool,
    },
}

impl Reg {
    /// The specification's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Idr(0) => "SMMU_IDR0",
            Self::Idr(1) => "SMMU_IDR1",
            Self::Idr(2) => "SMMU_IDR2",
            Self::Idr(3) => "SMMU_IDR3",
            Self::Idr(4) => "SMMU_IDR4",
            Self::Idr(_) => "SMMU_IDR5",
            Self::Iidr => "SMMU_IIDR",
            Self::Aidr => "SMMU_AIDR",
            Self::Cr0 => "SMMU_CR0",
            Self::Cr0Ack => "SMMU_CR0ACK",
            Self::Cr1 => "SMMU_CR1",
            Self::Cr2 => "SMMU_CR2",
            Self::Gbpa => "SMMU_GBPA",
            Self::IrqCtrl => "SMMU_IRQ_CTRL",
            Self::IrqCtrlAck => "SMMU_IRQ_CTRLACK",
            Self::Gerror => "SMMU_GERROR",
            Self::Gerrorn => "SMMU_GERRORN",
            Self::StrtabBase => "SMMU_STRTAB_BASE",
            Self::StrtabBaseCfg => "SMMU_STRTAB_BASE_CFG",
            Self::CmdqBase => "SMMU_CMDQ_BASE",
            Self::CmdqProd => "SMMU_CMDQ_PROD",
            Self::CmdqCons => "SMMU_CMDQ_CONS",
            Self::EvtqBase => "SMMU_EVENTQ_BASE",
            Self::EvtqProd => "SMMU_EVENTQ_PROD",
            Self::EvtqCons => "SMMU_EVENTQ_CONS",
            Self::IrqCfg(IrqSource::Gerror, 0) => "SMMU_GERROR_IRQ_CFG0",
            Self::IrqCfg(IrqSource::Gerror, 1) => "SMMU_GERROR_IRQ_CFG1",
            Self::IrqCfg(IrqSource::Gerror, _) => "SMMU_GERROR_IRQ_CFG2",
            Self::IrqCfg(IrqSource::Evtq, 0) => "SMMU_EVENTQ_IRQ_CFG0",
            Self::IrqCfg(IrqSource::Evtq, 1) => "SMMU_EVENTQ_IRQ_CFG1",
            Self::IrqCfg(IrqSource::Evtq, _) => "SMMU_EVENTQ_IRQ_CFG2",
            Self::Absent { name, .. } => name,
        }
    }

    /// Whether the register is 64 bits wide.
    pub fn is_64bit(self) -> bool {
        matches!(
            self,
            Self::StrtabBase
                | Self::CmdqBase
                | Self::EvtqBase
                | Self::IrqCfg(_, 0)
                | Self::Absent { wide: true, .. }
        )
    }
}

/// An interrupt source whose MSI the host may configure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IrqSource {
    Gerror,
    Evtq,
}

/// Which part of a register an access covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// All of a 32-bit register, or all of a 64-bit register.
    Whole,
    /// Bits `[31:0]` of a 64-bit register.
    Low,
    /// Bits `[63:32]` of a 64-bit register.
    High,
}

/// Why an access cannot be decoded to a register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// No register (or none the emulated SMMU knows) at that offset.
    Unknown,
    /// A register is there, but not for an access of that size and alignment.
    BadAccess,
}

const fn absent(name: &'static str) -> Reg {
    Reg::Absent { name, wide: false }
}

const fn absent64(name: &'static str) -> Reg {
    Reg::Absent { name, wide: true }
}

/// The register at `off` (offset from page 0), without regard to access size.
fn register_at(off: usize) -> Option<(Reg, usize)> {
    use offset as o;
    let base = off & !7;
    // 64-bit registers first: both halves map to the register at the 8-byte aligned offset.
    let wide = match base {
        o::STRTAB_BASE => Some(Reg::StrtabBase),
        o::CMDQ_BASE => Some(Reg::CmdqBase),
        o::EVTQ_BASE => Some(Reg::EvtqBase),
        o::GERROR_IRQ_CFG0 => Some(Reg::IrqCfg(IrqSource::Gerror, 0)),
        o::EVTQ_IRQ_CFG0 => Some(Reg::IrqCfg(IrqSource::Evtq, 0)),
        o::PRIQ_BASE => Some(absent64("SMMU_PRIQ_BASE")),
        o::PRIQ_IRQ_CFG0 => Some(absent64("SMMU_PRIQ_IRQ_CFG0")),
        _ => None,
    };
    if let Some(reg) = wide {
        return Some((reg, base));
    }
    let word = off & !3;
    let reg = match word {
        o::IDR0 => Reg::Idr(0),
        o::IDR1 => Reg::Idr(1),
        o::IDR2 => Reg::Idr(2),
        o::IDR3 => Reg::Idr(3),
        o::IDR4 => Reg::Idr(4),
        o::IDR5 => Reg::Idr(5),
        o::IIDR => Reg::Iidr,
        o::AIDR => Reg::Aidr,
        o::CR0 => Reg::Cr0,
        o::CR0ACK => Reg::Cr0Ack,
        o::CR1 => Reg::Cr1,
        o::CR2 => Reg::Cr2,
        o::STATUSR => absent("SMMU_STATUSR"),
        o::GBPA => Reg::Gbpa,
        o::AGBPA => absent("SMMU_AGBPA"),
        o::IRQ_CTRL => Reg::IrqCtrl,
        o::IRQ_CTRLACK => Reg::IrqCtrlAck,
        o::GERROR => Reg::Gerror,
        o::GERRORN => Reg::Gerrorn,
        o::GERROR_IRQ_CFG1 => Reg::IrqCfg(IrqSource::Gerror, 1),
        o::GERROR_IRQ_CFG2 => Reg::IrqCfg(IrqSource::Gerror, 2),
        o::STRTAB_BASE_CFG => Reg::StrtabBaseCfg,
        o::CMDQ_PROD => Reg::CmdqProd,
        o::CMDQ_CONS => Reg::CmdqCons,
        o::EVTQ_PROD | o::page0_alias::EVTQ_PROD => Reg::EvtqProd,
        o::EVTQ_CONS | o::page0_alias::EVTQ_CONS => Reg::EvtqCons,
        o::EVTQ_IRQ_CFG1 => Reg::IrqCfg(IrqSource::Evtq, 1),
        o::EVTQ_IRQ_CFG2 => Reg::IrqCfg(IrqSource::Evtq, 2),
        o::PRIQ_PROD | o::page0_alias::PRIQ_PROD => absent("SMMU_PRIQ_PROD"),
        o::PRIQ_CONS | o::page0_alias::PRIQ_CONS => absent("SMMU_PRIQ_CONS"),
        o::PRIQ_IRQ_CFG1 => absent("SMMU_PRIQ_IRQ_CFG1"),
        o::PRIQ_IRQ_CFG2 => absent("SMMU_PRIQ_IRQ_CFG2"),
        _ => return None,
    };
    Some((reg, word))
}

/// Decodes an access of `size` bytes at `off`.
pub fn decode(off: usize, size: u8) -> Result<(Reg, Part), DecodeError> {
    let (reg, base) = register_at(off).ok_or(DecodeError::Unknown)?;
    match (reg.is_64bit(), size, off - base) {
        (false, 4, 0) | (true, 8, 0) => Ok((reg, Part::Whole)),
        (true, 4, 0) => Ok((reg, Part::Low)),
        (true, 4, 4) => Ok((reg, Part::High)),
        _ => Err(DecodeError::BadAccess),
    }
}

/// The bits of a register value that `part` covers, shifted down.
pub fn read_part(value: u64, part: Part) -> u64 {
    match part {
        Part::Whole => value,
        Part::Low => value & 0xffff_ffff,
        Part::High => value >> 32,
    }
}

/// `old` with the bits `part` covers replaced by `value`.
pub fn merge_part(old: u64, part: Part, value: u64) -> u64 {
    match part {
        Part::Whole => value,
        Part::Low => (old & !0xffff_ffff) | (value & 0xffff_ffff),
        Part::High => (old & 0xffff_ffff) | (value << 32),
    }
}

const fn bits32<R: RegisterLongName>(fields: &[Field<u32, R>]) -> u32 {
    let mut m = 0;
    let mut i = 0;
    while i < fields.len() {
        m |= fields[i].mask << fields[i].shift;
        i += 1;
    }
    m
}

const fn bits64<R: RegisterLongName>(fields: &[Field<u64, R>]) -> u64 {
    let mut m = 0;
    let mut i = 0;
    while i < fields.len() {
        m |= fields[i].mask << fields[i].shift;
        i += 1;
    }
    m
}

/// The implemented bits of each writable register; the others are RES0 for the host.
pub mod mask {
    use super::*;

    /// SMMUEN, EVENTQEN, CMDQEN (PRIQEN, ATSCHK, VMW, DPT_WALK_EN: features not offered).
    pub const CR0_BITS: u32 = bits32(&[CR0::SMMUEN, CR0::EVTQEN, CR0::CMDQEN]);
    pub const CR1_BITS: u32 = bits32(&[
        CR1::QUEUE_IC,
        CR1::QUEUE_OC,
        CR1::QUEUE_SH,
        CR1::TABLE_IC,
        CR1::TABLE_OC,
        CR1::TABLE_SH,
    ]);
    /// RECINVSID and PTM (E2H needs HYP, REC_CFG_ATS needs ATS).
    pub const CR2_BITS: u32 = bits32(&[CR2::RECINVSID, CR2::PTM]);
    /// Every GBPA field except UPDATE, which the emulation completes at once.
    pub const GBPA_BITS: u32 = bits32(&[
        GBPA::MEMATTR,
        GBPA::MTCFG,
        GBPA::ALLOCCFG,
        GBPA::SHCFG,
        GBPA::PRIVCFG,
        GBPA::INSTCFG,
        GBPA::ABORT,
    ]);
    /// GERROR_IRQEN and EVENTQ_IRQEN (no PRI queue).
    pub const IRQ_CTRL_BITS: u32 = bits32(&[IRQ_CTRL::GERROR_IRQEN, IRQ_CTRL::EVTQ_IRQEN]);
    /// The global errors the emulated SMMU can raise (an aborted CMD_SYNC MSI among them).
    pub const GERROR_BITS: u32 = bits32(&[
        GERROR::CMDQ_ERR,
        GERROR::EVTQ_ABT_ERR,
        GERROR::MSI_CMDQ_ABT_ERR,
    ]);
    /// `IRQ_CFG0.ADDR`: bits [51:2] (an address above the OAS of 52 bits at most).
    pub const IRQ_CFG0_BITS: u64 = bits64(&[IRQ_CFG0::ADDR]) & 0x000f_ffff_ffff_ffff;
    /// `IRQ_CFG2` of the Event queue and GERROR: SH and MEMATTR (LO is the PRI queue's).
    pub const IRQ_CFG2_BITS: u32 = bits32(&[IRQ_CFG2::MEMATTR, IRQ_CFG2::SH]);
    pub const STRTAB_BASE_BITS: u64 = bits64(&[STRTAB_BASE::ADDR, STRTAB_BASE::RA]);
    pub const STRTAB_BASE_CFG_BITS: u32 = bits32(&[
        STRTAB_BASE_CFG::LOG2SIZE,
        STRTAB_BASE_CFG::SPLIT,
        STRTAB_BASE_CFG::FMT,
    ]);
    pub const QUEUE_BASE_BITS: u64 =
        bits64(&[QUEUE_BASE::LOG2SIZE, QUEUE_BASE::ADDR, QUEUE_BASE::ALLOCATE]);
    pub const CMDQ_PROD_BITS: u32 = bits32(&[CMDQ_PROD::WR]);
    /// What software may write in CMDQ_CONS: RD (ERR is the SMMU's).
    pub const CMDQ_CONS_RD_BITS: u32 = bits32(&[CMDQ_CONS::RD]);
    pub const OUTQ_PROD_BITS: u32 = bits32(&[OUTQ_PROD::WR, OUTQ_PROD::OVFLG]);
    pub const OUTQ_CONS_BITS: u32 = bits32(&[OUTQ_CONS::RD, OUTQ_CONS::OVACKFLG]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_offsets() {
        assert_eq!(decode(0x20, 4), Ok((Reg::Cr0, Part::Whole)));
        assert_eq!(decode(0x80, 8), Ok((Reg::StrtabBase, Part::Whole)));
        assert_eq!(decode(0x80, 4), Ok((Reg::StrtabBase, Part::Low)));
        assert_eq!(decode(0x84, 4), Ok((Reg::StrtabBase, Part::High)));
        assert_eq!(decode(0x84, 8), Err(DecodeError::BadAccess));
        assert_eq!(decode(0x20, 8), Err(DecodeError::BadAccess));
        assert_eq!(decode(0x22, 2), Err(DecodeError::BadAccess));
        assert_eq!(decode(0x100a8, 4), Ok((Reg::EvtqProd, Part::Whole)));
        assert_eq!(decode(0xa8, 4), Ok((Reg::EvtqProd, Part::Whole)));
        assert_eq!(decode(0x100ac, 4), Ok((Reg::EvtqCons, Part::Whole)));
        assert_eq!(decode(0x30, 4), Err(DecodeError::Unknown));
        assert_eq!(decode(0x1_0000, 4), Err(DecodeError::Unknown));
        assert_eq!(
            decode(0x68, 8),
            Ok((Reg::IrqCfg(IrqSource::Gerror, 0), Part::Whole))
        );
        assert_eq!(
            decode(0xb4, 4),
            Ok((Reg::IrqCfg(IrqSource::Evtq, 0), Part::High))
        );
        assert_eq!(
            decode(0xbc, 4),
            Ok((Reg::IrqCfg(IrqSource::Evtq, 2), Part::Whole))
        );
        assert_eq!(decode(0x70, 8), Err(DecodeError::BadAccess));
        assert_eq!(
            decode(0xd0, 8),
            Ok((absent64("SMMU_PRIQ_IRQ_CFG0"), Part::Whole))
        );
        assert_eq!(
            decode(0x100c8, 4),
            Ok((absent("SMMU_PRIQ_PROD"), Part::Whole))
        );
    }

    #[test]
    fn masks() {
        assert_eq!(mask::CR0_BITS, 0b1101);
        assert_eq!(mask::GBPA_BITS, 0x001f_3f1f);
        assert_eq!(mask::GERROR_BITS, 0b1_0101);
        assert_eq!(mask::IRQ_CFG0_BITS, 0x000f_ffff_ffff_fffc);
        assert_eq!(mask::IRQ_CFG2_BITS, 0x3f);
        assert_eq!(mask::STRTAB_BASE_BITS, 0x40ff_ffff_ffff_ffc0);
        assert_eq!(mask::QUEUE_BASE_BITS, 0x40ff_ffff_ffff_ffff);
        assert_eq!(mask::STRTAB_BASE_CFG_BITS, 0x3_07ff);
        assert_eq!(mask::CMDQ_CONS_RD_BITS, 0xf_ffff);
        assert_eq!(mask::OUTQ_PROD_BITS, 0x800f_ffff);
    }

    #[test]
    fn parts() {
        assert_eq!(
            merge_part(0x1111_2222_3333_4444, Part::Low, 0xaaaa),
            0x1111_2222_0000_aaaa
        );
        assert_eq!(
            merge_part(0x1111_2222_3333_4444, Part::High, 0xbb),
            0xbb_3333_4444
        );
        assert_eq!(read_part(0x1111_2222_3333_4444, Part::High), 0x1111_2222);
    }
}
