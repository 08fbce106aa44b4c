//! What the emulated SMMU advertises: the physical SMMU's features minus what Portcullis keeps or
//! does not emulate (ARCHITECTURE.md, "The emulated SMMUv3").
//!
//! Kept from the physical SMMU (the host's stage 1 runs on it, nested): stage 1, translation table
//! formats, coherency, HTTU, 16-bit ASIDs, two-level CD tables, two-level Stream tables, SIDSIZE,
//! SSIDSIZE, the attribute overrides, the termination model, the granules, VAX and the stage 1
//! extensions of IDR3 (HAD, STT, RIL, BBML, E0PD, PTWNNC, EPAN, S1PI).
//!
//! Hidden, and why:
//! - stage 2, VMIDs, VMID wildcards, FWB, XNX, S2PI/S2PO, DPT: stage 2 is Portcullis';
//! - HYP (EL2 StreamWorld, E2H): the host runs at EL1;
//! - ATS, PRI, PPS, ATSRECERR, PASIDTT: no ATC_INV / PRI_RESP emulation, no PRI queue;
//! - stalls (STALL_MODEL reads "terminate only", STALL_MAX 0): no RESUME/STALL_TERM emulation;
//! - SEV: a CMD_SYNC completes before the host's CMDQ_PROD write returns, so there is nothing to
//!   wait for;
//! - BTM: the host's CPU runs under a different VMID than its devices, so broadcast TLB
//!   invalidations from its CPU would not reach its devices' entries;
//! - ATOS, VATOS, DORMHINT, MPAM, RME, ECMDQ, PBHA, THE, MTEPERM, AIE, DS, D128, presets: not
//!   emulated (their registers read as zero).
//!
//! Offered although the physical SMMU's is not used: MSI (`IDR0.MSI`), for CMD_SYNC completion
//! only (see `emul::msi`: Portcullis writes the completion itself, checked against the DMA
//! policy, so Linux polls its own memory instead of trapping on `CMDQ_CONS`). Event and GERROR
//! interrupts stay the physical SMMU's wired ones. COHACC is the physical SMMU's: the host's
//! nested stage-1 tables are walked by the physical SMMU, and Linux uses MSI polling only on a
//! coherent SMMU.
//!
//! `TTENDIAN` reads little-endian where the physical SMMU can walk little-endian tables (the host
//! is little-endian, and Portcullis reads the host's tables as such).

use crate::smmu::regs::{Httu, SmmuFeatures, StallModel, TableEndianness};

/// Architected output address sizes (`IDR5.OAS`), ascending.
const OAS_SIZES: [u8; 8] = [32, 36, 40, 42, 44, 48, 52, 56];

/// The smallest architected OAS that covers an IPA space of `ipa_bits`, if any.
pub fn oas_for_ipa_bits(ipa_bits: u8) -> Option<u8> {
    OAS_SIZES.into_iter().find(|&s| s >= ipa_bits)
}

/// The features the emulated SMMU shows the host, given the physical SMMU's, the OAS to advertise
/// (an architected size, see [`oas_for_ipa_bits`]) and the Command/Event queue sizes Portcullis
/// chooses.
pub fn host_view(p: &SmmuFeatures, oas_bits: u8, cmdq_log2: u8, evtq_log2: u8) -> SmmuFeatures {
    SmmuFeatures {
        stage2: false,
        stage1: p.stage1,
        table_formats: p.table_formats,
        coherent: p.coherent,
        btm: false,
        httu: if p.stage1 { p.httu } else { Httu::None },
        dormant_hint: false,
        hyp: false,
        ats: false,
        ns1ats: false,
        asid16: p.asid16,
        msi: true,
        sev: false,
        atos: false,
        pri: false,
        vmid_wildcard: false,
        vmid16: false,
        two_level_cd: p.two_level_cd,
        vatos: false,
        endianness: match p.endianness {
            TableEndianness::Mixed | TableEndianness::Little => TableEndianness::Little,
            other => other,
        },
        ats_recerr: false,
        stall_model: StallModel::TerminateOnly,
        term_abort_only: p.term_abort_only,
        two_level_strtab: p.two_level_strtab,
        rme: false,
        sid_bits: p.sid_bits,
        ssid_bits: p.ssid_bits,
        priq_log2: 0,
        evtq_log2,
        cmdq_log2,
        attr_perms_ovr: p.attr_perms_ovr,
        attr_types_ovr: p.attr_types_ovr,
        rel: false,
        queues_preset: false,
        tables_preset: false,
        ecmdq: false,
        had: p.had,
        pbha: false,
        xnx: false,
        pps: false,
        mpam: false,
        fwb: false,
        stt: p.stt,
        ril: p.ril,
        bbml: p.bbml,
        e0pd: p.e0pd,
        ptwnnc: p.ptwnnc,
        dpt: false,
        pasidtt: false,
        epan: p.epan,
        s1pi: p.s1pi,
        s2pi: false,
        s2po: false,
        the: false,
        mteperm: false,
        aie: false,
        oas_bits,
        gran4k: p.gran4k,
        gran16k: p.gran16k,
        gran64k: p.gran64k,
        ds: false,
        d128: false,
        va_bits: p.va_bits,
        stall_max: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smmu::regs::IDR0;
    use tock_registers::LocalRegisterCopy;

    #[test]
    fn oas_rounds_up() {
        assert_eq!(oas_for_ipa_bits(40), Some(40));
        assert_eq!(oas_for_ipa_bits(41), Some(42));
        assert_eq!(oas_for_ipa_bits(45), Some(48));
        assert_eq!(oas_for_ipa_bits(20), Some(32));
        assert_eq!(oas_for_ipa_bits(57), None);
    }

    /// The Agilex 5 TCU (MMU-700) as the host would see it behind Portcullis.
    #[test]
    fn mmu700_host_view() {
        let p = SmmuFeatures::from_idr(0x080f_7e3f, 0x0e73_9d18, 0x0000_003c, 0x0040_0075);
        let h = host_view(&p, 40, 8, 8);
        let [i0, i1, i3, i5] = h.to_idr();
        let r0 = LocalRegisterCopy::<u32, IDR0::Register>::new(i0);
        assert!(!r0.is_set(IDR0::S2P) && r0.is_set(IDR0::S1P));
        assert!(!r0.is_set(IDR0::HYP) && !r0.is_set(IDR0::ATS) && !r0.is_set(IDR0::PRI));
        assert!(r0.is_set(IDR0::MSI) && !r0.is_set(IDR0::SEV) && !r0.is_set(IDR0::BTM));
        assert!(!r0.is_set(IDR0::VMID16) && !r0.is_set(IDR0::VMW));
        assert!(r0.is_set(IDR0::ASID16) && r0.is_set(IDR0::CD2L) && r0.is_set(IDR0::COHACC));
        assert_eq!(r0.read(IDR0::TTENDIAN), 0b10);
        assert_eq!(r0.read(IDR0::STALL_MODEL), 0b01);
        assert_eq!(r0.read(IDR0::ST_LEVEL), 0b01);
        // IDR1: SIDSIZE 24, SSIDSIZE 20 kept; PRIQS 0, EVENTQS 8, CMDQS 8; overrides kept.
        assert_eq!(i1, 24 | 20 << 6 | 8 << 16 | 8 << 21 | 1 << 26 | 1 << 27);
        // IDR3: HAD kept; PBHA, XNX, PPS hidden.
        assert_eq!(i3, 1 << 2);
        // IDR5: OAS 40 bits (0b010), 4K/16K/64K, VAX 48, STALL_MAX 0.
        assert_eq!(i5, 0b010 | 0b111 << 4);
    }
}
