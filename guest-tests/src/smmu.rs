//! A small SMMUv3 driver for the payloads (Arm IHI 0070), enough to drive the SMMU Portcullis
//! emulates the way a minimal Linux driver would: probe the ID registers, a Command queue and an
//! Event queue, a two-level Stream table, stage 1 Context descriptors and VMSAv8-64 page tables
//! (4 KiB granule, 48-bit VA).
//!
//! Everything the SMMU reads or writes lives in the payload's own memory, in statics the scenario
//! owns ([`SmmuMemory`], [`Stage1Tables`]). The payload runs with its MMU off, so that memory is
//! Device-nGnRnE to the CPU: every access is a plain volatile 64-bit load or store, made in program
//! order, and nothing needs cleaning or invalidating (QEMU's SMMU is coherent with the CPU).
//!
//! Register accesses are single loads and stores through [`crate::rt`] (a valid syndrome for each,
//! as the emulation needs). Fields of registers, STEs, CDs, descriptors, commands and event records
//! are [`Field`]s, named as in the specification.

use crate::mmio::{mmio_read32, mmio_write32, read64, write64};
use crate::rt::{tick_hz, ticks, ticks_to_ms};
use core::cell::{Cell, UnsafeCell};
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

/// A bit field of a register or of a 64-bit word in memory: `width` bits from bit `shift`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    shift: u32,
    width: u32,
}

impl Field {
    pub const fn new(shift: u32, width: u32) -> Field {
        assert!(
            width >= 1 && shift + width <= 64,
            "Field out of a 64-bit word"
        );
        Field { shift, width }
    }

    pub const fn bit(shift: u32) -> Field {
        Field::new(shift, 1)
    }

    /// The field's bits in place.
    pub const fn mask(self) -> u64 {
        (u64::MAX >> (64 - self.width)) << self.shift
    }

    /// `value` placed in the field.
    ///
    /// # Panics
    /// If `value` does not fit: a value the driver built wrongly.
    pub const fn val(self, value: u64) -> u64 {
        assert!(
            value <= u64::MAX >> (64 - self.width),
            "value does not fit its field"
        );
        value << self.shift
    }

    /// The field of a 1-bit field set.
    pub const fn set(self) -> u64 {
        self.val(1)
    }

    /// The field's value in `word`.
    pub const fn get(self, word: u64) -> u64 {
        (word & self.mask()) >> self.shift
    }

    pub const fn is_set(self, word: u64) -> bool {
        self.get(word) != 0
    }

    /// An address field holding address bits `[shift + width - 1 : shift]` in place (STE, CD and
    /// descriptor pointers): `addr` with its other bits dropped.
    pub const fn addr(self, addr: u64) -> u64 {
        addr & self.mask()
    }
}

/// Register offsets from the base of page 0 (section 6.2); page 1 registers at `0x1_0000` above.
pub mod reg {
    pub const IDR0: u64 = 0x0000;
    pub const IDR1: u64 = 0x0004;
    pub const IDR5: u64 = 0x0014;
    pub const CR0: u64 = 0x0020;
    pub const CR0ACK: u64 = 0x0024;
    pub const CR1: u64 = 0x0028;
    pub const CR2: u64 = 0x002c;
    pub const GBPA: u64 = 0x0044;
    pub const IRQ_CTRL: u64 = 0x0050;
    pub const GERROR: u64 = 0x0060;
    pub const GERRORN: u64 = 0x0064;
    /// 64-bit.
    pub const STRTAB_BASE: u64 = 0x0080;
    pub const STRTAB_BASE_CFG: u64 = 0x0088;
    /// 64-bit.
    pub const CMDQ_BASE: u64 = 0x0090;
    pub const CMDQ_PROD: u64 = 0x0098;
    pub const CMDQ_CONS: u64 = 0x009c;
    /// 64-bit.
    pub const EVTQ_BASE: u64 = 0x00a0;
    /// Page 1: reading it is what makes Portcullis drain the physical Event queue.
    pub const EVTQ_PROD: u64 = 0x1_00a8;
    pub const EVTQ_CONS: u64 = 0x1_00ac;
}

/// SMMU_IDR0 (section 6.3.1).
pub mod idr0 {
    use super::Field;
    pub const S2P: Field = Field::bit(0);
    pub const S1P: Field = Field::bit(1);
    /// 0b10 AArch64, 0b11 AArch32 and AArch64.
    pub const TTF: Field = Field::new(2, 2);
    pub const COHACC: Field = Field::bit(4);
    pub const HYP: Field = Field::bit(9);
    pub const ATS: Field = Field::bit(10);
    pub const ASID16: Field = Field::bit(12);
    pub const MSI: Field = Field::bit(13);
    pub const SEV: Field = Field::bit(14);
    pub const PRI: Field = Field::bit(16);
    pub const CD2L: Field = Field::bit(19);
    /// 0b00 mixed, 0b10 little-endian only, 0b11 big-endian only.
    pub const TTENDIAN: Field = Field::new(21, 2);
    pub const STALL_MODEL: Field = Field::new(24, 2);
    /// 0b01: two-level Stream tables.
    pub const ST_LEVEL: Field = Field::new(27, 2);
}

/// SMMU_IDR1 (section 6.3.2).
pub mod idr1 {
    use super::Field;
    pub const SIDSIZE: Field = Field::new(0, 6);
    pub const SSIDSIZE: Field = Field::new(6, 5);
    pub const EVENTQS: Field = Field::new(16, 5);
    pub const CMDQS: Field = Field::new(21, 5);
}

/// SMMU_IDR5 (section 6.3.6).
pub mod idr5 {
    use super::Field;
    pub const OAS: Field = Field::new(0, 3);
    pub const GRAN4K: Field = Field::bit(4);
    /// 0b00: 48-bit VAs.
    pub const VAX: Field = Field::new(10, 2);
}

/// SMMU_CR0 and SMMU_CR0ACK (section 6.3.9).
pub mod cr0 {
    use super::Field;
    pub const SMMUEN: Field = Field::bit(0);
    pub const EVENTQEN: Field = Field::bit(2);
    pub const CMDQEN: Field = Field::bit(3);
}

/// SMMU_CR1 (section 6.3.11): attributes of the SMMU's own queue and table accesses.
pub mod cr1 {
    use super::Field;
    pub const QUEUE_IC: Field = Field::new(0, 2);
    pub const QUEUE_OC: Field = Field::new(2, 2);
    pub const QUEUE_SH: Field = Field::new(4, 2);
    pub const TABLE_IC: Field = Field::new(6, 2);
    pub const TABLE_OC: Field = Field::new(8, 2);
    pub const TABLE_SH: Field = Field::new(10, 2);
}

/// SMMU_CR2 (section 6.3.12).
pub mod cr2 {
    use super::Field;
    /// Record C_BAD_STREAMID for StreamIDs beyond the Stream table.
    pub const RECINVSID: Field = Field::bit(1);
    /// Private TLB maintenance: no broadcast invalidation from the CPUs.
    pub const PTM: Field = Field::bit(2);
}

/// SMMU_GERROR and SMMU_GERRORN (section 6.3.19): an error is active while the bits differ.
pub mod gerror {
    use super::Field;
    pub const CMDQ_ERR: Field = Field::bit(0);
    pub const EVENTQ_ABT_ERR: Field = Field::bit(2);
}

/// SMMU_STRTAB_BASE and SMMU_STRTAB_BASE_CFG (sections 6.3.24, 6.3.25).
pub mod strtab {
    use super::Field;
    /// Address bits [55:6], in place.
    pub const BASE_ADDR: Field = Field::new(6, 50);
    pub const CFG_LOG2SIZE: Field = Field::new(0, 6);
    pub const CFG_SPLIT: Field = Field::new(6, 5);
    pub const CFG_FMT: Field = Field::new(16, 2);
    pub const FMT_TWO_LEVEL: u64 = 0b01;
}

/// SMMU_CMDQ_BASE and SMMU_EVENTQ_BASE (sections 6.3.26, 6.3.29).
pub mod queue_base {
    use super::Field;
    pub const LOG2SIZE: Field = Field::new(0, 5);
    /// Address bits [55:5], in place.
    pub const ADDR: Field = Field::new(5, 51);
}

/// SMMU_CMDQ_CONS (section 6.3.28).
pub mod cmdq_cons {
    use super::Field;
    /// The read index with its wrap flag above it.
    pub const RD: Field = Field::new(0, 20);
    pub const ERR: Field = Field::new(24, 7);
    pub const CERROR_NONE: u64 = 0x00;
    pub const CERROR_ILL: u64 = 0x01;
    pub const CERROR_ABT: u64 = 0x02;
}

/// SMMU_EVENTQ_PROD and SMMU_EVENTQ_CONS (sections 6.3.95, 6.3.96).
pub mod outq {
    use super::Field;
    /// The index with its wrap flag above it (WR in PROD, RD in CONS).
    pub const INDEX: Field = Field::new(0, 20);
    /// OVFLG in PROD, OVACKFLG in CONS.
    pub const OVERFLOW: Field = Field::bit(31);
}

/// Shareability and cacheability encodings shared by CR1, STEs and CDs.
pub mod attr {
    pub const NON_CACHEABLE: u64 = 0b00;
    pub const OUTER_SHAREABLE: u64 = 0b10;
    /// STE.SHCFG: use the shareability the device's transaction has.
    pub const SHCFG_INCOMING: u64 = 0b01;
}

/// STE words 0 and 1 (section 5.2), and the L1STD (section 5.1).
pub mod ste {
    use super::Field;
    pub const V: Field = Field::bit(0);
    pub const CONFIG: Field = Field::new(1, 3);
    pub const CONFIG_ABORT: u64 = 0b000;
    pub const CONFIG_BYPASS: u64 = 0b100;
    pub const CONFIG_STAGE1: u64 = 0b101;
    pub const S1FMT: Field = Field::new(4, 2);
    /// Address bits [55:6] of the CD (table), in place.
    pub const S1_CONTEXT_PTR: Field = Field::new(6, 50);
    pub const S1CDMAX: Field = Field::new(59, 5);
    // Word 1.
    pub const S1DSS: Field = Field::new(0, 2);
    pub const S1CIR: Field = Field::new(2, 2);
    pub const S1COR: Field = Field::new(4, 2);
    pub const S1CSH: Field = Field::new(6, 2);
    pub const EATS: Field = Field::new(28, 2);
    /// 0b00: the stream belongs to the EL1 (Non-secure) translation regime.
    pub const STRW: Field = Field::new(30, 2);
    pub const SHCFG: Field = Field::new(44, 2);
    // L1STD.
    /// log2 of the level 2 array's STE count, plus one; 0: no level 2 array.
    pub const L1_SPAN: Field = Field::new(0, 5);
    /// Address bits [55:6] of the level 2 array, in place.
    pub const L1_L2PTR: Field = Field::new(6, 50);
}

/// CD words 0, 1 and 3 (section 5.4).
pub mod cd {
    use super::Field;
    pub const T0SZ: Field = Field::new(0, 6);
    /// 0b00: 4 KiB granule (TCR_ELx.TG0 encoding).
    pub const TG0: Field = Field::new(6, 2);
    pub const IR0: Field = Field::new(8, 2);
    pub const OR0: Field = Field::new(10, 2);
    pub const SH0: Field = Field::new(12, 2);
    pub const EPD0: Field = Field::bit(14);
    pub const ENDI: Field = Field::bit(15);
    pub const T1SZ: Field = Field::new(16, 6);
    /// 0b10: 4 KiB granule (TCR_ELx.TG1 encoding).
    pub const TG1: Field = Field::new(22, 2);
    pub const TG1_4K: u64 = 0b10;
    pub const EPD1: Field = Field::bit(30);
    pub const V: Field = Field::bit(31);
    /// Output (intermediate physical) address size, as IDR5.OAS.
    pub const IPS: Field = Field::new(32, 3);
    pub const AFFD: Field = Field::bit(35);
    pub const AA64: Field = Field::bit(41);
    /// Record faults (R) and terminate faulting transactions with an abort (A).
    pub const R: Field = Field::bit(45);
    pub const A: Field = Field::bit(46);
    pub const ASET: Field = Field::bit(47);
    pub const ASID: Field = Field::new(48, 16);
    // Word 1.
    /// Address bits [55:4] of the TTB0 table, in place.
    pub const TTB0: Field = Field::new(4, 52);
}

/// VMSAv8-64 stage 1 descriptors, 4 KiB granule.
pub mod desc {
    use super::Field;
    pub const VALID: Field = Field::bit(0);
    /// Set: a table descriptor (levels 0-2) or a page descriptor (level 3).
    pub const TABLE_OR_PAGE: Field = Field::bit(1);
    pub const ATTR_INDX: Field = Field::new(2, 3);
    /// AP[2:1] = 0b01: read/write at any privilege.
    pub const AP: Field = Field::new(6, 2);
    pub const AP_RW_ANY: u64 = 0b01;
    pub const SH: Field = Field::new(8, 2);
    pub const AF: Field = Field::bit(10);
    /// Output address bits [47:12], in place.
    pub const OUTPUT_ADDR: Field = Field::new(12, 36);
    pub const PXN: Field = Field::bit(53);
    pub const UXN: Field = Field::bit(54);
}

/// Command fields (chapter 4).
pub mod cmd {
    use super::Field;
    pub const OPCODE: Field = Field::new(0, 8);
    pub const SID: Field = Field::new(32, 32);
    pub const SSID: Field = Field::new(12, 20);
    pub const VMID: Field = Field::new(32, 16);
    pub const ASID: Field = Field::new(48, 16);
    pub const SYNC_CS: Field = Field::new(12, 2);
    pub const SYNC_CS_NONE: u64 = 0b00;
    pub const SYNC_CS_SEV: u64 = 0b10;
    pub const SYNC_CS_IRQ: u64 = 0b01;
    /// CMD_SYNC's MSI: shareability, attributes, data (word 0), address bits [51:2] (word 1).
    pub const SYNC_MSH: Field = Field::new(22, 2);
    pub const SYNC_MSIATTR: Field = Field::new(24, 4);
    pub const SYNC_MSIDATA: Field = Field::new(32, 32);
    pub const SYNC_MSIADDR: Field = Field::new(2, 50);
    /// Inner Shareable; Inner and Outer Write-Back cacheable (what Linux asks for).
    pub const SYNC_MSH_ISH: u64 = 0b11;
    pub const SYNC_MSIATTR_OIWB: u64 = 0xf;
    // Word 1.
    pub const LEAF: Field = Field::bit(0);
    pub const CFGI_RANGE: Field = Field::new(0, 5);
    /// CMD_CFGI_STE_RANGE with Range 31 is CMD_CFGI_ALL.
    pub const CFGI_RANGE_ALL: u64 = 31;
    /// VA[63:12] of a TLBI, in place.
    pub const TLBI_VA: Field = Field::new(12, 52);
    /// IPA[55:12] of a TLBI, in place.
    pub const TLBI_IPA: Field = Field::new(12, 44);

    pub const CFGI_STE: u64 = 0x03;
    pub const CFGI_STE_RANGE: u64 = 0x04;
    pub const CFGI_CD: u64 = 0x05;
    pub const TLBI_NH_ALL: u64 = 0x10;
    pub const TLBI_NH_ASID: u64 = 0x11;
    pub const TLBI_NH_VA: u64 = 0x12;
    pub const TLBI_EL2_ALL: u64 = 0x20;
    pub const TLBI_S2_IPA: u64 = 0x2a;
    pub const TLBI_NSNH_ALL: u64 = 0x30;
    pub const SYNC: u64 = 0x46;
}

/// Event record fields (section 7.3).
pub mod evt {
    use super::Field;
    pub const TYPE: Field = Field::new(0, 8);
    pub const SSV: Field = Field::bit(11);
    pub const SID: Field = Field::new(32, 32);
    // Word 1 of the translation faults.
    pub const RNW: Field = Field::bit(35);
    pub const S2: Field = Field::bit(39);
    /// 0b00 CD fetch, 0b01 stage 1 table walk, 0b10 input address.
    pub const CLASS: Field = Field::new(40, 2);
    pub const CLASS_CD: u64 = 0b00;
    pub const CLASS_TT: u64 = 0b01;
    pub const CLASS_IN: u64 = 0b10;
    // Word 3.
    /// The faulting IPA of a stage 2 fault, bits [55:12] in place.
    pub const IPA: Field = Field::new(12, 44);
    /// The fetch address of F_STE_FETCH / F_CD_FETCH / F_WALK_EABT, bits [55:3] in place.
    pub const FETCH_ADDR: Field = Field::new(3, 53);

    pub use spec::smmu_event::{
        C_BAD_CD, C_BAD_STE, C_BAD_STREAMID, F_CD_FETCH, F_STE_FETCH, F_TRANSLATION, F_UUT,
        F_WALK_EABT,
    };
}

/// Largest queues the driver sets up (2^8 entries, what Portcullis offers).
pub const MAX_QUEUE_LOG2: u32 = 8;
/// StreamID bits a two-level table resolves in its level 2 arrays (STRTAB_BASE_CFG.SPLIT).
pub const SPLIT: u32 = 8;
/// StreamID bits the Stream table covers at most (so the level 1 table has at most 256 entries).
pub const MAX_SID_BITS: u32 = 16;
const L1_ENTRIES: usize = 1 << (MAX_SID_BITS - SPLIT);
const STE_WORDS: usize = 8;
const CMD_WORDS: usize = 2;
const EVENT_WORDS: usize = 4;
const PTES: usize = 512;

/// Zeroed 64-bit words the SMMU reads or writes, aligned for any of its structures (a level 2
/// Stream table array of 2^SPLIT STEs, 16 KiB, is the largest alignment needed).
#[repr(C, align(16384))]
pub struct Words<const N: usize>(UnsafeCell<[u64; N]>);

// SAFETY: only the boot CPU (and the SMMU) touch the words; every access is volatile.
unsafe impl<const N: usize> Sync for Words<N> {}

impl<const N: usize> fmt::Debug for Words<N> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "Words({:#x}, {N})", self.addr())
    }
}

impl<const N: usize> Default for Words<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Words<N> {
    pub const fn new() -> Self {
        Words(UnsafeCell::new([0; N]))
    }

    /// Its physical address (the MMU is off), which is also its IPA for the SMMU.
    pub fn addr(&self) -> u64 {
        self.0.get() as u64
    }

    pub fn get(&self, i: usize) -> u64 {
        assert!(i < N, "Words index {i} out of {N}");
        // SAFETY: in bounds; plain memory only this CPU and the SMMU touch.
        unsafe { (self.0.get() as *const u64).add(i).read_volatile() }
    }

    pub fn set(&self, i: usize, v: u64) {
        assert!(i < N, "Words index {i} out of {N}");
        // SAFETY: as in `get`.
        unsafe { (self.0.get() as *mut u64).add(i).write_volatile(v) }
    }

    pub fn clear(&self) {
        (0..N).for_each(|i| self.set(i, 0));
    }
}

/// The memory of the SMMU's queues and Stream table: a static of the scenario.
#[derive(Debug, Default)]
pub struct SmmuMemory {
    cmdq: Words<{ CMD_WORDS << MAX_QUEUE_LOG2 }>,
    evtq: Words<{ EVENT_WORDS << MAX_QUEUE_LOG2 }>,
    l1: Words<L1_ENTRIES>,
    l2: Words<{ STE_WORDS << SPLIT }>,
}

impl SmmuMemory {
    pub const fn new() -> Self {
        SmmuMemory {
            cmdq: Words::new(),
            evtq: Words::new(),
            l1: Words::new(),
            l2: Words::new(),
        }
    }
}

/// What the ID registers say, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    pub idr0: u32,
    pub idr1: u32,
    pub idr5: u32,
    pub stage1: bool,
    pub stage2: bool,
    pub aarch64_tables: bool,
    pub two_level_strtab: bool,
    pub two_level_cd: bool,
    pub hyp: bool,
    pub msi: bool,
    pub sev: bool,
    pub asid16: bool,
    pub sid_bits: u32,
    pub ssid_bits: u32,
    pub cmdq_log2: u32,
    pub evtq_log2: u32,
    /// IDR5.OAS, raw (the encoding CD.IPS takes).
    pub oas: u64,
    pub oas_bits: u32,
    pub gran4k: bool,
    pub va48: bool,
}

/// Bits of an address size encoding (IDR5.OAS, CD.IPS).
pub const fn address_size_bits(encoding: u64) -> u32 {
    match encoding {
        0b000 => 32,
        0b001 => 36,
        0b010 => 40,
        0b011 => 42,
        0b100 => 44,
        0b101 => 48,
        0b110 => 52,
        _ => 56,
    }
}

impl Features {
    pub fn decode(idr0: u32, idr1: u32, idr5: u32) -> Features {
        let (i0, i1, i5) = (u64::from(idr0), u64::from(idr1), u64::from(idr5));
        let oas = idr5::OAS.get(i5);
        Features {
            idr0,
            idr1,
            idr5,
            stage1: idr0::S1P.is_set(i0),
            stage2: idr0::S2P.is_set(i0),
            aarch64_tables: idr0::TTF.get(i0) & 0b10 != 0,
            two_level_strtab: idr0::ST_LEVEL.get(i0) == 0b01,
            two_level_cd: idr0::CD2L.is_set(i0),
            hyp: idr0::HYP.is_set(i0),
            msi: idr0::MSI.is_set(i0),
            sev: idr0::SEV.is_set(i0),
            asid16: idr0::ASID16.is_set(i0),
            sid_bits: idr1::SIDSIZE.get(i1) as u32,
            ssid_bits: idr1::SSIDSIZE.get(i1) as u32,
            cmdq_log2: idr1::CMDQS.get(i1) as u32,
            evtq_log2: idr1::EVENTQS.get(i1) as u32,
            oas,
            oas_bits: address_size_bits(oas),
            gran4k: idr5::GRAN4K.is_set(i5),
            va48: idr5::VAX.get(i5) == 0b00,
        }
    }
}

impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let yn = |b: bool| if b { "yes" } else { "no" };
        write!(
            f,
            "IDR0 {:#010x} IDR1 {:#010x} IDR5 {:#010x}: S1P {} S2P {} AArch64 tables {} 2-level ST {} \
             2-level CD {} HYP {} MSI {} SEV {} ASID16 {} | SIDSIZE {} SSIDSIZE {} CMDQS {} EVENTQS {} \
             | OAS {} bits, 4K {}, 48-bit VA {}",
            self.idr0,
            self.idr1,
            self.idr5,
            yn(self.stage1),
            yn(self.stage2),
            yn(self.aarch64_tables),
            yn(self.two_level_strtab),
            yn(self.two_level_cd),
            yn(self.hyp),
            yn(self.msi),
            yn(self.sev),
            yn(self.asid16),
            self.sid_bits,
            self.ssid_bits,
            self.cmdq_log2,
            self.evtq_log2,
            self.oas_bits,
            yn(self.gran4k),
            yn(self.va48)
        )
    }
}

/// A Stream table entry (section 5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ste(pub [u64; STE_WORDS]);

impl Ste {
    /// V = 0: no configuration.
    pub const INVALID: Ste = Ste([0; STE_WORDS]);

    /// Traffic terminated with an abort, no event.
    pub const fn abort() -> Ste {
        Ste([
            ste::V.set() | ste::CONFIG.val(ste::CONFIG_ABORT),
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ])
    }

    /// No translation (stage 1 bypassed), the device's own shareability.
    pub const fn bypass() -> Ste {
        Ste([
            ste::V.set() | ste::CONFIG.val(ste::CONFIG_BYPASS),
            ste::SHCFG.val(attr::SHCFG_INCOMING),
            0,
            0,
            0,
            0,
            0,
            0,
        ])
    }

    /// Stage 1 translation with the single CD at `cd` (no substreams), fetched non-cacheable, in
    /// the EL1 translation regime, without ATS.
    pub const fn stage1(cd: u64) -> Ste {
        Ste([
            ste::V.set()
                | ste::CONFIG.val(ste::CONFIG_STAGE1)
                | ste::S1FMT.val(0)
                | ste::S1_CONTEXT_PTR.addr(cd)
                | ste::S1CDMAX.val(0),
            ste::S1DSS.val(0)
                | ste::S1CIR.val(attr::NON_CACHEABLE)
                | ste::S1COR.val(attr::NON_CACHEABLE)
                | ste::S1CSH.val(attr::OUTER_SHAREABLE)
                | ste::EATS.val(0)
                | ste::STRW.val(0),
            0,
            0,
            0,
            0,
            0,
            0,
        ])
    }
}

/// How a CMD_SYNC signals completion (`CS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncSignal {
    /// SIG_NONE: software polls CMDQ_CONS.
    None,
    /// SIG_SEV: a WFE wake-up event as well.
    Sev,
    /// SIG_IRQ with an MSI: the SMMU writes `data` (32 bits) to `addr` once the CMD_SYNC completes
    /// (IHI 0070 section 4.7.3; what Linux uses when IDR0.MSI and IDR0.COHACC are set, with the
    /// address of the CMD_SYNC's own queue slot and data 0).
    Msi { addr: u64, data: u32 },
}

/// The commands the payloads issue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    CfgiSte {
        sid: u32,
    },
    CfgiCd {
        sid: u32,
    },
    CfgiAll,
    TlbiNhAll,
    TlbiNhAsid {
        asid: u16,
    },
    /// One VA of one ASID, any granule, leaf entries only.
    TlbiNhVa {
        asid: u16,
        va: u64,
    },
    TlbiNsnhAll,
    /// Stage 2 maintenance: illegal for a host without stage 2.
    TlbiS2Ipa {
        vmid: u16,
        ipa: u64,
    },
    /// EL2 maintenance: illegal for a host without EL2.
    TlbiEl2All,
    Sync(SyncSignal),
    /// Anything else, as it goes into the queue.
    Raw([u64; CMD_WORDS]),
}

impl Command {
    pub fn encode(&self) -> [u64; CMD_WORDS] {
        let op = |o: u64| cmd::OPCODE.val(o);
        match *self {
            Self::CfgiSte { sid } => [
                op(cmd::CFGI_STE) | cmd::SID.val(sid.into()),
                cmd::LEAF.set(),
            ],
            Self::CfgiCd { sid } => [
                op(cmd::CFGI_CD) | cmd::SID.val(sid.into()) | cmd::SSID.val(0),
                cmd::LEAF.set(),
            ],
            Self::CfgiAll => [
                op(cmd::CFGI_STE_RANGE),
                cmd::CFGI_RANGE.val(cmd::CFGI_RANGE_ALL),
            ],
            Self::TlbiNhAll => [op(cmd::TLBI_NH_ALL), 0],
            Self::TlbiNhAsid { asid } => [op(cmd::TLBI_NH_ASID) | cmd::ASID.val(asid.into()), 0],
            Self::TlbiNhVa { asid, va } => [
                op(cmd::TLBI_NH_VA) | cmd::ASID.val(asid.into()),
                cmd::LEAF.set() | cmd::TLBI_VA.addr(va),
            ],
            Self::TlbiNsnhAll => [op(cmd::TLBI_NSNH_ALL), 0],
            Self::TlbiS2Ipa { vmid, ipa } => [
                op(cmd::TLBI_S2_IPA) | cmd::VMID.val(vmid.into()),
                cmd::LEAF.set() | cmd::TLBI_IPA.addr(ipa),
            ],
            Self::TlbiEl2All => [op(cmd::TLBI_EL2_ALL), 0],
            Self::Sync(signal) => {
                let cs = |v| op(cmd::SYNC) | cmd::SYNC_CS.val(v);
                match signal {
                    SyncSignal::None => [cs(cmd::SYNC_CS_NONE), 0],
                    SyncSignal::Sev => [cs(cmd::SYNC_CS_SEV), 0],
                    SyncSignal::Msi { addr, data } => [
                        cs(cmd::SYNC_CS_IRQ)
                            | cmd::SYNC_MSH.val(cmd::SYNC_MSH_ISH)
                            | cmd::SYNC_MSIATTR.val(cmd::SYNC_MSIATTR_OIWB)
                            | cmd::SYNC_MSIDATA.val(data.into()),
                        cmd::SYNC_MSIADDR.addr(addr),
                    ],
                }
            }
            Self::Raw(raw) => raw,
        }
    }
}

/// An event record as the SMMU wrote it into the payload's Event queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event(pub [u64; EVENT_WORDS]);

impl Event {
    pub fn kind(&self) -> u8 {
        evt::TYPE.get(self.0[0]) as u8
    }
    pub fn sid(&self) -> u32 {
        evt::SID.get(self.0[0]) as u32
    }
    /// Stage 2 fault (translation faults).
    pub fn stage2(&self) -> bool {
        evt::S2.is_set(self.0[1])
    }
    /// CLASS (translation faults).
    pub fn class(&self) -> u64 {
        evt::CLASS.get(self.0[1])
    }
    /// A read (RnW = 1) or a write (translation faults).
    pub fn is_read(&self) -> bool {
        evt::RNW.is_set(self.0[1])
    }
    /// InputAddr (translation faults).
    pub fn input_addr(&self) -> u64 {
        self.0[2]
    }
    /// The faulting IPA of a stage 2 fault.
    pub fn ipa(&self) -> u64 {
        evt::IPA.addr(self.0[3])
    }
    /// FetchAddr of F_STE_FETCH and F_CD_FETCH.
    pub fn fetch_addr(&self) -> u64 {
        evt::FETCH_ADDR.addr(self.0[3])
    }
    fn is_translation_fault(&self) -> bool {
        (0x10..=0x13).contains(&self.kind())
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let kind = self.kind();
        write!(
            f,
            "{} ({kind:#04x}) sid {:#x}",
            crate::hooks::event_name(kind),
            self.sid()
        )?;
        if self.is_translation_fault() {
            let class = match self.class() {
                evt::CLASS_CD => "CD",
                evt::CLASS_TT => "TT",
                evt::CLASS_IN => "IN",
                _ => "class 3",
            };
            write!(
                f,
                ": stage {} {class}, {} at {:#x}",
                if self.stage2() { 2 } else { 1 },
                if self.is_read() { "read" } else { "write" },
                self.input_addr()
            )?;
            if self.stage2() {
                write!(f, " (IPA {:#x})", self.ipa())?;
            }
        } else if matches!(kind, evt::F_STE_FETCH | evt::F_CD_FETCH) {
            write!(f, ": fetch address {:#x}", self.fetch_addr())?;
        }
        Ok(())
    }
}

/// Why a driver operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmmuError {
    /// The SMMU lacks something the driver needs.
    Missing(&'static str),
    /// CR0ACK did not follow CR0 within the bound.
    Ack {
        wrote: u32,
        ack: u32,
        waited_ms: u64,
    },
    /// The Command queue stopped with an error at `cons`.
    CommandError {
        cons: u32,
        err: u64,
        gerror: u32,
        gerrorn: u32,
        command: [u64; CMD_WORDS],
    },
    /// CMDQ_CONS did not reach `want` within the bound.
    CommandTimeout {
        want: u32,
        cons: u32,
        waited_ms: u64,
    },
    /// The Command queue has no room.
    CommandQueueFull { prod: u32, cons: u32 },
    /// The StreamID is not in the level 2 array the driver set up.
    NotCovered { sid: u32, first: u32 },
    /// The StreamID is beyond what the Stream table can cover.
    SidOutOfRange { sid: u32, bits: u32 },
    /// CNTFRQ_EL0 is 0: no bound can be measured.
    NoCounter,
    /// A CMD_SYNC with an MSI completed (CMDQ_CONS moved past it) without writing to `addr`.
    NoMsiWrite { addr: u64 },
}

impl fmt::Display for SmmuError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match *self {
            Self::Missing(what) => write!(f, "the SMMU lacks {what}"),
            Self::Ack {
                wrote,
                ack,
                waited_ms,
            } => write!(
                f,
                "SMMU_CR0ACK reads {ack:#x} {waited_ms} ms after CR0 was written {wrote:#x}"
            ),
            Self::CommandError {
                cons,
                err,
                gerror,
                gerrorn,
                command,
            } => write!(
                f,
                "the Command queue stopped at CONS {cons:#x} with CERROR {err:#x} (GERROR {gerror:#x}, \
                 GERRORN {gerrorn:#x}) on command [{:#018x}, {:#018x}]",
                command[0], command[1]
            ),
            Self::CommandTimeout {
                want,
                cons,
                waited_ms,
            } => write!(
                f,
                "CMDQ_CONS is {cons:#x} {waited_ms} ms after PROD was moved to {want:#x}"
            ),
            Self::CommandQueueFull { prod, cons } => {
                write!(
                    f,
                    "the Command queue is full (PROD {prod:#x}, CONS {cons:#x})"
                )
            }
            Self::NotCovered { sid, first } => write!(
                f,
                "StreamID {sid:#x} is outside the level 2 array set up for {first:#x}..{:#x}",
                first + (1 << SPLIT)
            ),
            Self::SidOutOfRange { sid, bits } => {
                write!(
                    f,
                    "StreamID {sid:#x} is beyond the Stream table's {bits} bits"
                )
            }
            Self::NoCounter => write!(f, "CNTFRQ_EL0 is 0: cannot bound a wait"),
            Self::NoMsiWrite { addr } => write!(
                f,
                "a CMD_SYNC with an MSI to {addr:#x} completed without writing it"
            ),
        }
    }
}

/// A wait bounded in counter ticks.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    start: u64,
    limit: u64,
}

impl Deadline {
    pub fn after_ms(ms: u64) -> Result<Deadline, SmmuError> {
        let hz = tick_hz();
        if hz == 0 {
            return Err(SmmuError::NoCounter);
        }
        Ok(Deadline {
            start: ticks(),
            limit: ms * hz / 1000,
        })
    }

    pub fn expired(&self) -> bool {
        ticks().wrapping_sub(self.start) > self.limit
    }

    pub fn waited_ms(&self) -> u64 {
        ticks_to_ms(ticks().wrapping_sub(self.start))
    }
}

/// Queue index arithmetic: an index with its wrap flag just above it (section 3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ring {
    pub log2: u32,
}

impl Ring {
    pub fn slot(&self, v: u32) -> usize {
        (v & ((1 << self.log2) - 1)) as usize
    }
    pub fn next(&self, v: u32) -> u32 {
        (v + 1) & ((2 << self.log2) - 1)
    }
    pub fn is_full(&self, prod: u32, cons: u32) -> bool {
        prod != cons && self.slot(prod) == self.slot(cons)
    }
    /// How many entries lie from `from` up to `to` (both with their wrap flags).
    pub fn distance(&self, from: u32, to: u32) -> u32 {
        to.wrapping_sub(from) & ((2 << self.log2) - 1)
    }
}

/// What a pass over the Event queue found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    pub records: usize,
    /// EVENTQ_PROD.OVFLG toggled since the last acknowledgement: records were lost.
    pub overflowed: bool,
}

/// How long an empty Event queue is watched before it counts as quiet.
pub const EVENT_QUIET_MS: u64 = 300;

/// The driver.
#[derive(Debug)]
pub struct Smmu {
    base: u64,
    pub features: Features,
    mem: &'static SmmuMemory,
    cmdq: Ring,
    evtq: Ring,
    /// log2 of the StreamIDs the table covers.
    strtab_log2: u32,
    /// The first StreamID of the one level 2 array.
    l2_first: Cell<u32>,
    cmdq_prod: Cell<u32>,
    evtq_cons: Cell<u32>,
}

impl Smmu {
    /// Reads the ID registers of the SMMU at `base` and checks it can be driven as this driver
    /// does.
    pub fn probe(base: u64, mem: &'static SmmuMemory) -> Result<Smmu, SmmuError> {
        let read = |off: u64| {
            // SAFETY: `base` is the `arm,smmu-v3` node's register frame; ID registers have no
            // read side effects.
            unsafe { mmio_read32(base + off) }
        };
        let features = Features::decode(read(reg::IDR0), read(reg::IDR1), read(reg::IDR5));
        let need = |ok: bool, what: &'static str| {
            if ok {
                Ok(())
            } else {
                Err(SmmuError::Missing(what))
            }
        };
        need(features.stage1, "stage 1 (IDR0.S1P)")?;
        need(features.aarch64_tables, "AArch64 tables (IDR0.TTF)")?;
        need(
            features.two_level_strtab,
            "two-level Stream tables (IDR0.ST_LEVEL)",
        )?;
        need(features.gran4k, "the 4 KiB granule (IDR5.GRAN4K)")?;
        need(
            features.cmdq_log2 >= 2,
            "a Command queue of 4 entries (IDR1.CMDQS)",
        )?;
        need(
            features.evtq_log2 >= 2,
            "an Event queue of 4 entries (IDR1.EVENTQS)",
        )?;
        need(
            features.sid_bits > SPLIT,
            "more StreamID bits than SPLIT (IDR1.SIDSIZE)",
        )?;
        Ok(Smmu {
            base,
            features,
            mem,
            cmdq: Ring {
                log2: features.cmdq_log2.min(MAX_QUEUE_LOG2),
            },
            evtq: Ring {
                log2: features.evtq_log2.min(MAX_QUEUE_LOG2),
            },
            strtab_log2: features.sid_bits.min(MAX_SID_BITS),
            l2_first: Cell::new(0),
            cmdq_prod: Cell::new(0),
            evtq_cons: Cell::new(0),
        })
    }

    pub fn read32(&self, off: u64) -> u32 {
        // SAFETY: `off` is one of the registers in `reg`, inside the SMMU's frame.
        unsafe { mmio_read32(self.base + off) }
    }

    pub fn write32(&self, off: u64, v: u32) {
        // SAFETY: as in `read32`; the driver owns the SMMU.
        unsafe { mmio_write32(self.base + off, v) }
    }

    pub fn read64(&self, off: u64) -> u64 {
        // SAFETY: as in `read32`, for one of the 64-bit registers.
        unsafe { read64(self.base + off) }
    }

    pub fn write64(&self, off: u64, v: u64) {
        // SAFETY: as in `write32`, for one of the 64-bit registers.
        unsafe { write64(self.base + off, v) }
    }

    pub fn cmdq_ring(&self) -> Ring {
        self.cmdq
    }

    /// StreamID bits the Stream table covers.
    pub fn strtab_log2(&self) -> u32 {
        self.strtab_log2
    }

    /// Writes CR0 and waits (bounded) until CR0ACK shows it.
    pub fn set_cr0(&self, value: u32) -> Result<(), SmmuError> {
        self.write32(reg::CR0, value);
        let deadline = Deadline::after_ms(1000)?;
        loop {
            let ack = self.read32(reg::CR0ACK);
            if ack == value {
                return Ok(());
            }
            if deadline.expired() {
                return Err(SmmuError::Ack {
                    wrote: value,
                    ack,
                    waited_ms: deadline.waited_ms(),
                });
            }
            core::hint::spin_loop();
        }
    }

    pub fn cr0(&self) -> u32 {
        self.read32(reg::CR0)
    }

    /// The STRTAB_BASE value of the driver's own level 1 table.
    pub fn own_strtab_base(&self) -> u64 {
        strtab::BASE_ADDR.addr(self.mem.l1.addr())
    }

    /// STRTAB_BASE_CFG: two levels, SPLIT, the StreamIDs covered.
    pub fn strtab_base_cfg(&self) -> u32 {
        Self::strtab_base_cfg_for(self.strtab_log2)
    }

    /// STRTAB_BASE_CFG for a two-level table of 2^`log2size` StreamIDs.
    pub fn strtab_base_cfg_for(log2size: u32) -> u32 {
        (strtab::CFG_FMT.val(strtab::FMT_TWO_LEVEL)
            | strtab::CFG_SPLIT.val(SPLIT.into())
            | strtab::CFG_LOG2SIZE.val(log2size.into())) as u32
    }

    /// log2 of the Event queue's entries.
    pub fn evtq_log2(&self) -> u32 {
        self.evtq.log2
    }

    /// Brings the SMMU up from whatever state it is in: everything disabled, CR1/CR2, the Stream
    /// table (one level 2 array, for the StreamIDs around `sid`, every STE invalid), the queues,
    /// then the queues enabled, SMMUEN, and CFGI_ALL + TLBI_NSNH_ALL + CMD_SYNC.
    pub fn reset(&self, sid: u32) -> Result<(), SmmuError> {
        if u64::from(sid) >= 1u64 << self.strtab_log2 {
            return Err(SmmuError::SidOutOfRange {
                sid,
                bits: self.strtab_log2,
            });
        }
        self.set_cr0(0)?;
        // The SMMU's table and queue accesses: non-cacheable, like the CPU's (MMU off).
        let attrs = cr1::QUEUE_IC.val(attr::NON_CACHEABLE)
            | cr1::QUEUE_OC.val(attr::NON_CACHEABLE)
            | cr1::QUEUE_SH.val(attr::OUTER_SHAREABLE)
            | cr1::TABLE_IC.val(attr::NON_CACHEABLE)
            | cr1::TABLE_OC.val(attr::NON_CACHEABLE)
            | cr1::TABLE_SH.val(attr::OUTER_SHAREABLE);
        self.write32(reg::CR1, attrs as u32);
        self.write32(reg::CR2, (cr2::RECINVSID.set() | cr2::PTM.set()) as u32);

        let mem = self.mem;
        mem.l1.clear();
        mem.l2.clear();
        mem.cmdq.clear();
        mem.evtq.clear();
        let first = sid & !((1 << SPLIT) - 1);
        self.l2_first.set(first);
        let l1std = ste::L1_SPAN.val((SPLIT + 1).into()) | ste::L1_L2PTR.addr(mem.l2.addr());
        mem.l1.set((sid >> SPLIT) as usize, l1std);
        self.write64(reg::STRTAB_BASE, self.own_strtab_base());
        self.write32(reg::STRTAB_BASE_CFG, self.strtab_base_cfg());

        self.write64(
            reg::CMDQ_BASE,
            queue_base::ADDR.addr(mem.cmdq.addr())
                | queue_base::LOG2SIZE.val(self.cmdq.log2.into()),
        );
        self.write32(reg::CMDQ_PROD, 0);
        self.write32(reg::CMDQ_CONS, 0);
        self.cmdq_prod.set(0);
        self.write64(
            reg::EVTQ_BASE,
            queue_base::ADDR.addr(mem.evtq.addr())
                | queue_base::LOG2SIZE.val(self.evtq.log2.into()),
        );
        self.write32(reg::EVTQ_PROD, 0);
        self.write32(reg::EVTQ_CONS, 0);
        self.evtq_cons.set(0);
        // Polled: no interrupts wanted (the payload takes none).
        self.write32(reg::IRQ_CTRL, 0);

        let queues = (cr0::CMDQEN.set() | cr0::EVENTQEN.set()) as u32;
        self.set_cr0(queues)?;
        self.set_cr0(queues | cr0::SMMUEN.set() as u32)?;
        self.issue(&[
            Command::CfgiAll,
            Command::TlbiNsnhAll,
            Command::Sync(SyncSignal::None),
        ])
    }

    /// The CMDQ_BASE value of the driver's own Command queue.
    pub fn own_cmdq_base(&self) -> u64 {
        queue_base::ADDR.addr(self.mem.cmdq.addr())
            | queue_base::LOG2SIZE.val(self.cmdq.log2.into())
    }

    /// The EVENTQ_BASE value of the driver's own Event queue.
    pub fn own_evtq_base(&self) -> u64 {
        queue_base::ADDR.addr(self.mem.evtq.addr())
            | queue_base::LOG2SIZE.val(self.evtq.log2.into())
    }

    /// Moves the Command queue into the driver's own memory and leaves everything else as it is
    /// (SMMUEN, the Stream table, the Event queue): what a capture kernel that adopts the crashed
    /// kernel's SMMU configuration does. CMDQ_BASE and CMDQ_CONS may only change while CMDQEN is 0
    /// (sections 6.3.26, 6.3.28), which the architecture allows with SMMUEN = 1: CMDQEN off, the
    /// new base with PROD = CONS = 0, CMDQEN on.
    pub fn move_command_queue(&self) -> Result<(), SmmuError> {
        let cr0 = self.cr0();
        let without = cr0 & !(cr0::CMDQEN.set() as u32);
        self.set_cr0(without)?;
        self.mem.cmdq.clear();
        self.write64(reg::CMDQ_BASE, self.own_cmdq_base());
        self.write32(reg::CMDQ_PROD, 0);
        self.write32(reg::CMDQ_CONS, 0);
        self.cmdq_prod.set(0);
        self.set_cr0(without | cr0::CMDQEN.set() as u32)
    }

    /// The index of the STE of `sid` in the level 2 array.
    fn ste_slot(&self, sid: u32) -> Result<usize, SmmuError> {
        let first = self.l2_first.get();
        if sid < first || sid - first >= 1 << SPLIT {
            return Err(SmmuError::NotCovered { sid, first });
        }
        Ok((sid - first) as usize * STE_WORDS)
    }

    /// Writes the STE of `sid`: words 1..7 first, then word 0 (V, Config), so the SMMU never sees
    /// a torn entry (section 3.21.3). Takes effect after [`Smmu::invalidate_ste`].
    pub fn write_ste(&self, sid: u32, new: &Ste) -> Result<(), SmmuError> {
        let at = self.ste_slot(sid)?;
        for (i, w) in new.0.iter().enumerate().skip(1) {
            self.mem.l2.set(at + i, *w);
        }
        self.mem.l2.set(at, new.0[0]);
        Ok(())
    }

    /// The STE of `sid` as it is in memory.
    pub fn ste(&self, sid: u32) -> Result<Ste, SmmuError> {
        let at = self.ste_slot(sid)?;
        let mut words = [0; STE_WORDS];
        for (i, w) in words.iter_mut().enumerate() {
            *w = self.mem.l2.get(at + i);
        }
        Ok(Ste(words))
    }

    /// Writes the STE of `sid` and makes it take effect: CMD_CFGI_STE, CMD_TLBI_NH_ASID for the
    /// ASID the stream used (its cached translations), CMD_SYNC.
    pub fn install_ste(&self, sid: u32, new: &Ste, old_asid: u16) -> Result<(), SmmuError> {
        self.write_ste(sid, new)?;
        self.issue(&[
            Command::CfgiSte { sid },
            Command::TlbiNhAsid { asid: old_asid },
            Command::Sync(SyncSignal::None),
        ])
    }

    /// CMDQ_CONS as the SMMU shows it.
    pub fn cmdq_cons(&self) -> u32 {
        self.read32(reg::CMDQ_CONS)
    }

    /// The PROD index the driver last wrote.
    pub fn cmdq_prod(&self) -> u32 {
        self.cmdq_prod.get()
    }

    /// The command in the queue at index `at` (with or without its wrap flag).
    pub fn queued_command(&self, at: u32) -> [u64; CMD_WORDS] {
        let slot = self.cmdq.slot(at) * CMD_WORDS;
        [self.mem.cmdq.get(slot), self.mem.cmdq.get(slot + 1)]
    }

    /// Overwrites the command at index `at` (to replace one the SMMU refused).
    pub fn replace_command(&self, at: u32, command: &Command) {
        let slot = self.cmdq.slot(at) * CMD_WORDS;
        let words = command.encode();
        self.mem.cmdq.set(slot, words[0]);
        self.mem.cmdq.set(slot + 1, words[1]);
    }

    /// Puts `cmds` into the queue and moves CMDQ_PROD past them; returns the new PROD.
    pub fn submit(&self, cmds: &[Command]) -> Result<u32, SmmuError> {
        let mut prod = self.cmdq_prod.get();
        for c in cmds {
            let cons = cmdq_cons::RD.get(self.cmdq_cons().into()) as u32;
            if self.cmdq.is_full(prod, cons) {
                return Err(SmmuError::CommandQueueFull { prod, cons });
            }
            self.replace_command(prod, c);
            prod = self.cmdq.next(prod);
        }
        self.cmdq_prod.set(prod);
        self.write32(reg::CMDQ_PROD, prod);
        Ok(prod)
    }

    /// Waits (bounded) until CMDQ_CONS reaches `want`, or the queue stops with an error.
    pub fn wait_consumed(&self, want: u32) -> Result<(), SmmuError> {
        let deadline = Deadline::after_ms(1000)?;
        loop {
            let raw = self.cmdq_cons();
            let cons = cmdq_cons::RD.get(raw.into()) as u32;
            let err = cmdq_cons::ERR.get(raw.into());
            let (gerror, gerrorn) = (self.read32(reg::GERROR), self.read32(reg::GERRORN));
            if (gerror ^ gerrorn) as u64 & gerror::CMDQ_ERR.mask() != 0 {
                return Err(SmmuError::CommandError {
                    cons,
                    err,
                    gerror,
                    gerrorn,
                    command: self.queued_command(cons),
                });
            }
            if cons == want {
                return Ok(());
            }
            if deadline.expired() {
                return Err(SmmuError::CommandTimeout {
                    want,
                    cons,
                    waited_ms: deadline.waited_ms(),
                });
            }
            core::hint::spin_loop();
        }
    }

    /// Submits `cmds` (ending with a CMD_SYNC) and waits for them the way Linux's driver does for a
    /// strict unmap: the queue is known to be empty (every earlier batch waited for, so CONS is the
    /// PROD last written and no CMDQ_CONS read is needed for space), the commands go into the queue
    /// memory, one CMDQ_PROD write, then CMDQ_CONS alone is polled until it reaches the new PROD or
    /// shows an error (CMDQ_CONS.ERR; no GERROR reads on the way).
    pub fn issue_polling_cons(&self, cmds: &[Command]) -> Result<(), SmmuError> {
        let mut prod = self.cmdq_prod.get();
        if cmds.len() >= 1 << self.cmdq.log2 {
            return Err(SmmuError::CommandQueueFull { prod, cons: prod });
        }
        for c in cmds {
            self.replace_command(prod, c);
            prod = self.cmdq.next(prod);
        }
        self.cmdq_prod.set(prod);
        self.write32(reg::CMDQ_PROD, prod);
        let deadline = Deadline::after_ms(1000)?;
        loop {
            let raw = u64::from(self.cmdq_cons());
            let cons = cmdq_cons::RD.get(raw) as u32;
            if cons == prod {
                return Ok(());
            }
            if cmdq_cons::ERR.get(raw) != cmdq_cons::CERROR_NONE || deadline.expired() {
                // The full check (GERROR too) for the report.
                return self.wait_consumed(prod);
            }
            core::hint::spin_loop();
        }
    }

    /// Submits `cmds` followed by a CMD_SYNC with CS = SIG_IRQ whose MSI writes 0 over the first
    /// word of the CMD_SYNC's own queue slot, and polls that memory word, not CMDQ_CONS: Linux's
    /// MSI-based sync completion (one CMDQ_PROD write, no register read). Same empty-queue
    /// precondition as [`Smmu::issue_polling_cons`]. Falls back to reading CMDQ_CONS (and reports
    /// an error) when the write does not come within the bound.
    pub fn issue_msi_sync(&self, cmds: &[Command]) -> Result<(), SmmuError> {
        let mut prod = self.cmdq_prod.get();
        if cmds.len() + 1 >= 1 << self.cmdq.log2 {
            return Err(SmmuError::CommandQueueFull { prod, cons: prod });
        }
        for c in cmds {
            self.replace_command(prod, c);
            prod = self.cmdq.next(prod);
        }
        let slot = self.cmdq.slot(prod) * CMD_WORDS;
        let addr = self.mem.cmdq.addr() + (slot * 8) as u64;
        self.replace_command(prod, &Command::Sync(SyncSignal::Msi { addr, data: 0 }));
        prod = self.cmdq.next(prod);
        self.cmdq_prod.set(prod);
        self.write32(reg::CMDQ_PROD, prod);
        let deadline = Deadline::after_ms(1000)?;
        loop {
            // The MSI (32 bits of data) lands on the low half of word 0: the opcode goes to 0.
            if self.mem.cmdq.get(slot) & 0xffff_ffff == 0 {
                return Ok(());
            }
            if deadline.expired() {
                return match self.wait_consumed(prod) {
                    Ok(()) => Err(SmmuError::NoMsiWrite { addr }),
                    Err(e) => Err(e),
                };
            }
            core::hint::spin_loop();
        }
    }

    /// Submits `cmds` (which should end with a CMD_SYNC) and waits until all are consumed.
    pub fn issue(&self, cmds: &[Command]) -> Result<(), SmmuError> {
        let prod = self.submit(cmds)?;
        self.wait_consumed(prod)
    }

    /// The active global errors (GERROR ^ GERRORN).
    pub fn active_gerrors(&self) -> (u32, u32, u32) {
        let (g, n) = (self.read32(reg::GERROR), self.read32(reg::GERRORN));
        (g ^ n, g, n)
    }

    /// Acknowledges every active global error: GERRORN := GERROR.
    pub fn acknowledge_gerrors(&self) {
        let g = self.read32(reg::GERROR);
        self.write32(reg::GERRORN, g);
    }

    /// Consumes every record between EVENTQ_CONS and EVENTQ_PROD, handing each to `seen`, and
    /// acknowledges an overflow. Reading EVENTQ_PROD is what makes Portcullis bring in the records
    /// of the physical Event queue.
    pub fn drain_events(&self, mut seen: impl FnMut(&Event)) -> Drained {
        let prod_reg = u64::from(self.read32(reg::EVTQ_PROD));
        let prod = outq::INDEX.get(prod_reg) as u32;
        let ovflg = outq::OVERFLOW.get(prod_reg);
        let mut cons = self.evtq_cons.get();
        let mut records = 0;
        // At most a queue's worth: a PROD that is not a valid distance away is not trusted.
        let pending = self.evtq.distance(cons, prod).min(1 << self.evtq.log2);
        for _ in 0..pending {
            let slot = self.evtq.slot(cons) * EVENT_WORDS;
            let mut record = Event::default();
            for (i, w) in record.0.iter_mut().enumerate() {
                *w = self.mem.evtq.get(slot + i);
            }
            seen(&record);
            records += 1;
            cons = self.evtq.next(cons);
        }
        let acked = outq::OVERFLOW.get(u64::from(self.read32(reg::EVTQ_CONS)));
        self.evtq_cons.set(cons);
        self.write32(
            reg::EVTQ_CONS,
            (outq::INDEX.val(cons.into()) | outq::OVERFLOW.val(ovflg)) as u32,
        );
        Drained {
            records,
            overflowed: ovflg != acked,
        }
    }

    /// Polls the Event queue (bounded by `timeout_ms`) until a record `want` accepts arrives;
    /// every record consumed on the way is handed to `seen` too. `None` if none came in time.
    pub fn wait_event(
        &self,
        timeout_ms: u64,
        mut want: impl FnMut(&Event) -> bool,
        mut seen: impl FnMut(&Event),
    ) -> Result<Option<Event>, SmmuError> {
        let deadline = Deadline::after_ms(timeout_ms)?;
        let mut found = None;
        loop {
            self.drain_events(|e| {
                seen(e);
                if found.is_none() && want(e) {
                    found = Some(*e);
                }
            });
            if found.is_some() || deadline.expired() {
                return Ok(found);
            }
            core::hint::spin_loop();
        }
    }

    /// Drains the Event queue until it stays empty for [`EVENT_QUIET_MS`]; the total.
    pub fn drain_until_quiet(&self, mut seen: impl FnMut(&Event)) -> Result<Drained, SmmuError> {
        let mut total = Drained::default();
        let mut quiet = Deadline::after_ms(EVENT_QUIET_MS)?;
        loop {
            let d = self.drain_events(&mut seen);
            total.records += d.records;
            total.overflowed |= d.overflowed;
            if d.records > 0 {
                quiet = Deadline::after_ms(EVENT_QUIET_MS)?;
            } else if quiet.expired() {
                return Ok(total);
            }
            core::hint::spin_loop();
        }
    }
}

/// A stage 1 translation context: one CD and the page tables of one 2 MiB IOVA window (4 KiB
/// granule, 48-bit VA: a level 0, 1, 2 and 3 table), a static of the scenario.
#[derive(Debug, Default)]
pub struct Stage1Tables {
    cd: Words<8>,
    levels: [Words<PTES>; 4],
    window: AtomicU64,
}

/// The IOVA bits below a 2 MiB window: the level 3 table's reach.
pub const WINDOW_SIZE: u64 = 2 << 20;
const PAGE_SHIFT: u32 = 12;
const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// T0SZ for a 48-bit input range.
const T0SZ_48_BIT: u64 = 16;
/// MAIR attribute 0: Normal memory, inner and outer Non-cacheable.
const MAIR_NORMAL_NC: u64 = 0x44;

/// The index a level-`level` table uses for `va` (9 bits per level, level 3 lowest).
fn table_index(va: u64, level: u32) -> usize {
    ((va >> (PAGE_SHIFT + 9 * (3 - level))) & (PTES as u64 - 1)) as usize
}

impl Stage1Tables {
    pub const fn new() -> Self {
        Stage1Tables {
            cd: Words::new(),
            levels: [Words::new(), Words::new(), Words::new(), Words::new()],
            window: AtomicU64::new(0),
        }
    }

    pub fn cd_addr(&self) -> u64 {
        self.cd.addr()
    }

    /// Links level 0 to 3 for the 2 MiB window at `window` (aligned), nothing mapped yet, and
    /// writes the CD: TTB0 the level 0 table, T0SZ 16, 4 KiB granule, TTB1 walks disabled,
    /// `ips` as IDR5.OAS encodes it, non-cacheable walks, faults recorded and aborted, `asid`.
    pub fn init(&self, window: u64, asid: u16, ips: u64) {
        assert!(
            window.is_multiple_of(WINDOW_SIZE) && window >> 48 == 0,
            "IOVA window {window:#x} not a 2 MiB-aligned 48-bit address"
        );
        self.window.store(window, Ordering::Relaxed);
        for t in &self.levels {
            t.clear();
        }
        for level in 0..3 {
            let next = self.levels[level + 1].addr();
            let table =
                desc::VALID.set() | desc::TABLE_OR_PAGE.set() | desc::OUTPUT_ADDR.addr(next);
            self.levels[level].set(table_index(window, level as u32), table);
        }
        self.cd.clear();
        let word0 = cd::T0SZ.val(T0SZ_48_BIT)
            | cd::TG0.val(0)
            | cd::IR0.val(attr::NON_CACHEABLE)
            | cd::OR0.val(attr::NON_CACHEABLE)
            | cd::SH0.val(attr::OUTER_SHAREABLE)
            | cd::ENDI.val(0)
            | cd::TG1.val(cd::TG1_4K)
            | cd::EPD1.set()
            | cd::V.set()
            | cd::IPS.val(ips)
            | cd::AA64.set()
            | cd::R.set()
            | cd::A.set()
            | cd::ASID.val(asid.into());
        self.cd.set(1, cd::TTB0.addr(self.levels[0].addr()));
        self.cd.set(3, MAIR_NORMAL_NC);
        // V last.
        self.cd.set(0, word0);
    }

    fn leaf_index(&self, iova: u64) -> usize {
        let window = self.window.load(Ordering::Relaxed);
        assert!(
            iova >= window && iova - window < WINDOW_SIZE,
            "IOVA {iova:#x} outside the window {window:#x}"
        );
        table_index(iova, 3)
    }

    /// Maps the 4 KiB page at `iova` to `pa`, read/write, Normal non-cacheable, never executable.
    pub fn map(&self, iova: u64, pa: u64) {
        assert!(pa.is_multiple_of(PAGE_SIZE), "PA {pa:#x} not page-aligned");
        let page = desc::VALID.set()
            | desc::TABLE_OR_PAGE.set()
            | desc::ATTR_INDX.val(0)
            | desc::AP.val(desc::AP_RW_ANY)
            | desc::SH.val(attr::OUTER_SHAREABLE)
            | desc::AF.set()
            | desc::OUTPUT_ADDR.addr(pa)
            | desc::PXN.set()
            | desc::UXN.set();
        self.levels[3].set(self.leaf_index(iova), page);
    }

    /// Unmaps the page at `iova` (an invalid descriptor; the TLB still needs invalidating).
    pub fn unmap(&self, iova: u64) {
        self.levels[3].set(self.leaf_index(iova), 0);
    }
}
