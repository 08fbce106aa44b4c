//! The system-register values Portcullis writes, by field name, and the decisions behind them
//! (which EL1 features to enable, the EL2 translation controls), from the ID registers read.
//!
//! Fields come from aarch64-cpu where it defines them; the registers and fields it lacks (11.x:
//! HCRX_EL2, ZCR_EL2, SMCR_EL2, ID_AA64MMFR3_EL1, ID_AA64ISAR2_EL1, CTR_EL0, and a few feature
//! fields of ID registers it does define) are declared here, from the ARM ARM (DDI 0487). The arch
//! layer (`src/arch/sysreg.rs`) gives them accessors; everything here is plain data, tested on the
//! host.

use aarch64_cpu::registers::{ESR_EL1, HCR_EL2, MAIR_EL2, SCTLR_EL2, TCR_EL2};
use tock_registers::fields::FieldValue;
use tock_registers::{LocalRegisterCopy, register_bitfields};

register_bitfields! [u64,
    /// Extended Hypervisor Configuration Register (FEAT_HCX); `S3_4_C1_C2_2`.
    pub HCRX_EL2 [
        /// FEAT_MOPS memory copy/set instructions enabled at EL1 and EL0.
        MSCEn OFFSET(11) NUMBITS(1) [],
        /// TCR2_EL1 accessible from EL1 (FEAT_TCR2).
        TCR2En OFFSET(14) NUMBITS(1) [],
        /// SCTLR2_EL1 accessible from EL1 (FEAT_SCTLR2).
        SCTLR2En OFFSET(15) NUMBITS(1) []
    ],

    /// SVE Control Register for EL2; `S3_4_C1_C2_0`.
    pub ZCR_EL2 [
        /// The vector length cap, (LEN + 1) x 128 bits: LEN is bits [3:0]; bits [8:4] are RAZ/WI,
        /// kept for the field's extension. All nine are written, as Linux does for "the largest".
        LEN OFFSET(0) NUMBITS(9) []
    ],

    /// SME Control Register for EL2 (FEAT_SME); `S3_4_C1_C2_6`.
    pub SMCR_EL2 [
        /// The streaming vector length cap, as `ZCR_EL2::LEN`.
        LEN OFFSET(0) NUMBITS(9) []
    ],

    /// AArch64 Memory Model Feature Register 3; `S3_0_C0_C7_3` (RAZ before it was defined).
    pub ID_AA64MMFR3_EL1 [
        /// FEAT_SCTLR2.
        SCTLRX OFFSET(4) NUMBITS(4) [],
        /// FEAT_TCR2.
        TCRX OFFSET(0) NUMBITS(4) []
    ],

    /// AArch64 Instruction Set Attribute Register 2; `S3_0_C0_C6_2`.
    pub ID_AA64ISAR2_EL1 [
        /// FEAT_ATS1A: `AT S1E1A` (translation without a permission check).
        ATS1A OFFSET(60) NUMBITS(4) []
    ],

    /// Cache Type Register.
    pub CTR_EL0 [
        /// Log2 of the number of words in the smallest data-cache line.
        DminLine OFFSET(16) NUMBITS(4) []
    ],

    /// Data Cache Zero ID Register.
    pub DCZID_EL0 [
        /// DC ZVA prohibited.
        DZP OFFSET(4) NUMBITS(1) [],
        /// Log2 of the DC ZVA block size in 4-byte words (at most 2 KiB by the architecture).
        BS OFFSET(0) NUMBITS(4) []
    ],

    /// The ID_AA64PFR0_EL1 fields aarch64-cpu lacks.
    pub ID_AA64PFR0_EL1 [
        /// The GIC system-register interface (non-zero: present).
        GIC OFFSET(24) NUMBITS(4) []
    ],

    /// The ID_AA64PFR1_EL1 fields aarch64-cpu lacks.
    pub ID_AA64PFR1_EL1 [
        /// FEAT_SME (non-zero: present).
        SME OFFSET(24) NUMBITS(4) []
    ],

    /// The ID_AA64MMFR0_EL1 fields aarch64-cpu lacks.
    pub ID_AA64MMFR0_EL1 [
        /// FEAT_FGT (fine-grained traps; non-zero: present).
        FGT OFFSET(56) NUMBITS(4) []
    ],

    /// The ID_AA64MMFR1_EL1 fields aarch64-cpu lacks.
    pub ID_AA64MMFR1_EL1 [
        /// FEAT_HCX (HCRX_EL2; non-zero: present).
        HCX OFFSET(40) NUMBITS(4) []
    ],

    /// The CNTHCTL_EL2 fields aarch64-cpu lacks (layout with HCR_EL2.E2H = 0).
    pub CNTHCTL_EL2 [
        /// Which counter bit's transitions generate the event stream.
        EVNTI OFFSET(4) NUMBITS(4) [],
        /// Event stream enable.
        EVNTEN OFFSET(2) NUMBITS(1) [],
        /// Traps EL1 accesses to the EL1 virtual timer to EL2 (FEAT_ECV; RES0 without it).
        EL1TVT OFFSET(13) NUMBITS(1) []
    ],

    /// SCTLR_EL1 as Portcullis hands it to the host at boot (MMU off).
    pub SCTLR_EL1 [
        /// Load/store multiple atomicity (FEAT_LSMAOC; RES1 without it).
        LSMAOE OFFSET(29) NUMBITS(1) [],
        /// No trap on load/store multiple to Device memory (FEAT_LSMAOC; RES1 without it).
        nTLSMD OFFSET(28) NUMBITS(1) [],
        /// PSTATE.PAN left alone on exception entry (FEAT_PAN; RES1 without it).
        SPAN OFFSET(23) NUMBITS(1) [],
        /// Exception entry is context-synchronizing (FEAT_ExS; RES1 without it).
        EIS OFFSET(22) NUMBITS(1) [],
        /// SCXTNUM_EL0 access not trapped (FEAT_CSV2_2; RES1 without it).
        TSCXT OFFSET(20) NUMBITS(1) [],
        /// Exception return is context-synchronizing (FEAT_ExS; RES1 without it).
        EOS OFFSET(11) NUMBITS(1) []
    ]
];

/// SCTLR_EL1 when the host is entered: MMU, caches and alignment checks off (the arm64 boot
/// protocol), little-endian, every bit that was RES1 in ARMv8.0 set (as Linux's
/// `INIT_SCTLR_EL1_MMU_OFF` does), so that later features keep their ARMv8.0 behaviour.
pub fn sctlr_el1_at_boot() -> u64 {
    (SCTLR_EL1::LSMAOE::SET
        + SCTLR_EL1::nTLSMD::SET
        + SCTLR_EL1::SPAN::SET
        + SCTLR_EL1::EIS::SET
        + SCTLR_EL1::TSCXT::SET
        + SCTLR_EL1::EOS::SET)
        .value
}

/// HCR_EL2 for the host: stage 2 on, EL1 is AArch64, SMC trapped (PSCI goes through Portcullis),
/// pointer-authentication keys and instructions not trapped. Interrupts are not routed to EL2: the
/// host owns the GIC.
pub fn hcr_el2_for_host() -> u64 {
    (HCR_EL2::VM::Enable
        + HCR_EL2::TSC::EnableTrapEl1SmcToEl2
        + HCR_EL2::RW::EL1IsAarch64
        + HCR_EL2::APK::DisableTrapPointerAuthKeyRegsToEl2
        + HCR_EL2::API::DisableTrapPointerAuthInstToEl2)
        .value
}

/// HCR_EL2.TWI: WFI at EL1/EL0 traps to EL2 (crash mode, see `arch::cpu::trap_wfi`).
pub fn hcr_el2_trap_wfi(hcr: u64) -> u64 {
    let mut r = LocalRegisterCopy::<u64, HCR_EL2::Register>::new(hcr);
    r.modify(HCR_EL2::TWI::SET);
    r.get()
}

/// CNTHCTL_EL2 with the EL2 event stream on, an event each time counter bit 12 changes (every
/// 8192 ticks); other fields kept.
pub fn cnthctl_el2_event_stream(cnthctl: u64) -> u64 {
    let mut r = LocalRegisterCopy::<u64, CNTHCTL_EL2::Register>::new(cnthctl);
    r.modify(CNTHCTL_EL2::EVNTEN::SET + CNTHCTL_EL2::EVNTI.val(12));
    r.get()
}

/// CNTHCTL_EL2 with EL1's accesses to the EL1 virtual timer trapped to EL2 (`EL1TVT`, FEAT_ECV);
/// other fields kept.
pub fn cnthctl_el2_trap_vtimer(cnthctl: u64) -> u64 {
    let mut r = LocalRegisterCopy::<u64, CNTHCTL_EL2::Register>::new(cnthctl);
    r.modify(CNTHCTL_EL2::EL1TVT::SET);
    r.get()
}

/// ESR_EL1 of an undefined instruction as the host sees it: "unknown reason" (EC 0), IL = 1.
pub fn esr_el1_undefined() -> u64 {
    (ESR_EL1::EC::Unknown + ESR_EL1::IL::SET).value
}

/// The largest SVE / SME vector-length cap (`ZCR_EL2::LEN`, `SMCR_EL2::LEN`).
pub const VECTOR_LENGTH_MAX: u64 = 0x1ff;

/// The CPU features that decide what the host's EL1 is given, from the ID registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuFeatures {
    pub gic_sysregs: bool,
    pub sme: bool,
    pub hcx: bool,
    pub fgt: bool,
    pub tcr2: bool,
    pub sctlr2: bool,
}

impl CpuFeatures {
    /// From ID_AA64PFR0_EL1, ID_AA64PFR1_EL1, ID_AA64MMFR0_EL1, ID_AA64MMFR1_EL1 and
    /// ID_AA64MMFR3_EL1.
    pub fn from_id_registers(pfr0: u64, pfr1: u64, mmfr0: u64, mmfr1: u64, mmfr3: u64) -> Self {
        let pfr0 = LocalRegisterCopy::<u64, ID_AA64PFR0_EL1::Register>::new(pfr0);
        let pfr1 = LocalRegisterCopy::<u64, ID_AA64PFR1_EL1::Register>::new(pfr1);
        let mmfr0 = LocalRegisterCopy::<u64, ID_AA64MMFR0_EL1::Register>::new(mmfr0);
        let mmfr1 = LocalRegisterCopy::<u64, ID_AA64MMFR1_EL1::Register>::new(mmfr1);
        let mmfr3 = LocalRegisterCopy::<u64, ID_AA64MMFR3_EL1::Register>::new(mmfr3);
        Self {
            gic_sysregs: pfr0.read(ID_AA64PFR0_EL1::GIC) != 0,
            sme: pfr1.read(ID_AA64PFR1_EL1::SME) != 0,
            hcx: mmfr1.read(ID_AA64MMFR1_EL1::HCX) != 0,
            fgt: mmfr0.read(ID_AA64MMFR0_EL1::FGT) != 0,
            tcr2: mmfr3.read(ID_AA64MMFR3_EL1::TCRX) != 0,
            sctlr2: mmfr3.read(ID_AA64MMFR3_EL1::SCTLRX) != 0,
        }
    }

    /// HCRX_EL2 for the host where FEAT_HCX is present: without these enables, instructions the
    /// host's CPU features promise it are UNDEFINED at EL1/EL0 (Linux 6.12 with FEAT_MOPS: glibc's
    /// memcpy uses CPYF*/SET*).
    pub fn hcrx_el2_for_host(&self) -> u64 {
        let mut v: FieldValue<u64, HCRX_EL2::Register> = HCRX_EL2::MSCEn::SET;
        if self.tcr2 {
            v += HCRX_EL2::TCR2En::SET;
        }
        if self.sctlr2 {
            v += HCRX_EL2::SCTLR2En::SET;
        }
        v.value
    }
}

/// Whether `AT S1E1A` exists, from ID_AA64ISAR2_EL1.
pub fn has_ats1a(isar2: u64) -> bool {
    LocalRegisterCopy::<u64, ID_AA64ISAR2_EL1::Register>::new(isar2).read(ID_AA64ISAR2_EL1::ATS1A)
        != 0
}

/// The smallest data-cache line in bytes, from CTR_EL0.
pub fn dcache_line(ctr: u64) -> usize {
    4 << LocalRegisterCopy::<u64, CTR_EL0::Register>::new(ctr).read(CTR_EL0::DminLine)
}

/// The part of `[start, start + len)` that DC ZVA can zero, from DCZID_EL0: `(first, end, block)`
/// with `[first, end)` the whole, aligned DC ZVA blocks of `block` bytes inside the range. `None`
/// when DC ZVA is prohibited (DZP) or no whole block fits (the caller stores zeros instead).
pub fn zva_span(dczid: u64, start: usize, len: usize) -> Option<(usize, usize, usize)> {
    let dczid = LocalRegisterCopy::<u64, DCZID_EL0::Register>::new(dczid);
    if dczid.is_set(DCZID_EL0::DZP) {
        return None;
    }
    let block = 4usize << dczid.read(DCZID_EL0::BS);
    let end = start.checked_add(len)? & !(block - 1);
    let first = start.checked_next_multiple_of(block)?;
    (first < end).then_some((first, end, block))
}

/// CPTR_EL2 (HCR_EL2.E2H = 0) trapping nothing: FP/SIMD, SVE and SME are the host's and never
/// used by Portcullis. TCPAC (31), TAM (30), TTA (20), TSM (12), TFP (10) and TZ (8) are 0; only
/// the RES1 bits 13, 9 and 7:0 are set. Written by the entry code (`arch::head`) before any Rust.
pub const CPTR_EL2_NOTHING_TRAPPED: u64 = (1 << 13) | (1 << 9) | 0xff;

/// The SCTLR_EL2 bits that are RES1 with HCR_EL2.E2H = 0 (bits 29:28, 23:22, 18, 16, 11, 5:4).
const SCTLR_EL2_RES1: u64 = 0x30c5_0830;

/// SCTLR_EL2 with the MMU, caches and stack alignment checks on.
pub fn sctlr_el2_mmu_on() -> u64 {
    SCTLR_EL2_RES1
        | (SCTLR_EL2::M::Enable
            + SCTLR_EL2::C::Cacheable
            + SCTLR_EL2::SA::Enable
            + SCTLR_EL2::I::Cacheable)
            .value
}

/// MAIR_EL2 for Portcullis' own tables: attribute index 0 Device-nGnRE (device frames), index 1
/// Normal write-back read/write-allocate, inner and outer (everything else). The EL2 tables use
/// these indices (`arch::mmu`).
pub fn mair_el2() -> u64 {
    (MAIR_EL2::Attr0_Device::nonGathering_nonReordering_EarlyWriteAck
        + MAIR_EL2::Attr1_Normal_Outer::WriteBack_NonTransient_ReadWriteAlloc
        + MAIR_EL2::Attr1_Normal_Inner::WriteBack_NonTransient_ReadWriteAlloc)
        .value
}

/// The TCR_EL2 bits that are RES1 with HCR_EL2.E2H = 0 (bits 31 and 23).
const TCR_EL2_RES1: u64 = (1 << 31) | (1 << 23);

/// TCR_EL2 for a 48-bit VA space with 4 KiB pages and inner-shareable write-back walks; the
/// physical address size is the CPU's (`ID_AA64MMFR0_EL1.PARange`), capped at 48 bits.
pub fn tcr_el2(pa_range: u64) -> u64 {
    TCR_EL2_RES1
        | (TCR_EL2::PS.val(pa_range.min(5))
            + TCR_EL2::TG0::KiB_4
            + TCR_EL2::SH0::Inner
            + TCR_EL2::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL2::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL2::T0SZ.val(16))
        .value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zva_span_is_the_whole_blocks_inside() {
        // BS = 4: 64-byte blocks; BS = 7: 512.
        assert_eq!(zva_span(4, 0x1000, 0x1000), Some((0x1000, 0x2000, 64)));
        assert_eq!(zva_span(7, 0x1010, 0x1000), Some((0x1200, 0x2000, 512)));
        assert_eq!(zva_span(4, 0x1001, 0x80), Some((0x1040, 0x1080, 64)));
        // Prohibited (DZP), or no whole block inside.
        assert_eq!(zva_span(4 | (1 << 4), 0x1000, 0x1000), None);
        assert_eq!(zva_span(4, 0x1001, 0x7e), None);
        assert_eq!(zva_span(4, 0x1000, 0), None);
        assert_eq!(zva_span(4, usize::MAX - 10, 5), None);
    }

    proptest::proptest! {
        /// The span lies inside the range, is aligned to the block, and leaves less than a block
        /// at either end.
        #[test]
        fn zva_span_inside(bs in 0u64..10, start in 0usize..1 << 20, len in 0usize..1 << 16) {
            let block = 4usize << bs;
            match zva_span(bs, start, len) {
                Some((first, end, b)) => {
                    proptest::prop_assert_eq!(b, block);
                    proptest::prop_assert!(start <= first && first < end && end <= start + len);
                    proptest::prop_assert!(first % block == 0 && end % block == 0);
                    proptest::prop_assert!(first - start < block && start + len - end < block);
                }
                None => proptest::prop_assert!(
                    (start + len) / block * block <= start.next_multiple_of(block)
                ),
            }
        }
    }

    /// The values are those the code wrote as raw numbers before they were named.
    #[test]
    fn named_values_are_the_raw_ones() {
        assert_eq!(sctlr_el1_at_boot(), 0x30d0_0800);
        assert_eq!(
            hcr_el2_for_host(),
            (1 << 0) | (1 << 19) | (1 << 31) | (1 << 40) | (1 << 41)
        );
        assert_eq!(esr_el1_undefined(), 1 << 25);
        assert_eq!(
            sctlr_el2_mmu_on(),
            0x30c5_0830 | (1 << 0) | (1 << 2) | (1 << 3) | (1 << 12)
        );
        for ps in 0..8u64 {
            let old =
                (1 << 31) | (1 << 23) | (ps.min(5) << 16) | (3 << 12) | (1 << 10) | (1 << 8) | 16;
            assert_eq!(tcr_el2(ps), old, "PARange {ps}");
        }
        assert_eq!(hcr_el2_trap_wfi(0x8000_0001), 0x8000_0001 | (1 << 13));
        assert_eq!(CPTR_EL2_NOTHING_TRAPPED, 0x22ff);
        assert_eq!(mair_el2(), 0x04 | (0xff << 8));
        for trap_bit in [31, 30, 20, 12, 10, 8] {
            assert_eq!(
                CPTR_EL2_NOTHING_TRAPPED & (1 << trap_bit),
                0,
                "bit {trap_bit}"
            );
        }
        assert_eq!(
            cnthctl_el2_event_stream(0x3 | (0xf << 4)),
            0x3 | (1 << 2) | (12 << 4)
        );
        // EL1TVT is bit 13 of CNTHCTL_EL2 (E2H = 0 layout); the rest kept.
        assert_eq!(
            cnthctl_el2_trap_vtimer(0x3 | (1 << 2)),
            0x3 | (1 << 2) | (1 << 13)
        );
    }

    #[test]
    fn features_from_id_registers() {
        assert_eq!(
            CpuFeatures::from_id_registers(0, 0, 0, 0, 0),
            CpuFeatures::default()
        );
        let all = CpuFeatures::from_id_registers(1 << 24, 1 << 24, 1 << 56, 1 << 40, 0x11);
        assert_eq!(
            all,
            CpuFeatures {
                gic_sysregs: true,
                sme: true,
                hcx: true,
                fgt: true,
                tcr2: true,
                sctlr2: true,
            }
        );
        // Neighbouring fields do not count.
        let none = CpuFeatures::from_id_registers(
            !(0xf << 24),
            !(0xf << 24),
            !(0xf << 56),
            !(0xf << 40),
            !0xff,
        );
        assert_eq!(none, CpuFeatures::default());
        assert_eq!(CpuFeatures::default().hcrx_el2_for_host(), 1 << 11);
        assert_eq!(all.hcrx_el2_for_host(), (1 << 11) | (1 << 14) | (1 << 15));
    }

    #[test]
    fn small_decoders() {
        assert!(has_ats1a(1 << 60));
        assert!(!has_ats1a(!(0xf << 60)));
        // QEMU's max CPU: DminLine 4 (64-byte lines).
        assert_eq!(dcache_line(0x8444_c004), 64);
    }
}
