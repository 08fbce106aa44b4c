//! The host's performance monitors: every event counter is the host's, but none of them may count
//! while Portcullis runs (what Portcullis does, and how long it takes, is not the host's to
//! measure: a trap's cost would otherwise leak which path it took).
//!
//! `MDCR_EL2` for the host is decided here from `PMCR_EL0.N` and `ID_AA64DFR0_EL1.PMUVer`; the arch
//! layer only reads those registers and writes the result.

use tock_registers::LocalRegisterCopy;
use tock_registers::register_bitfields;

register_bitfields! [u64,
    /// The fields of MDCR_EL2 Portcullis sets (Arm ARM D23.2 "MDCR_EL2").
    pub MDCR_EL2 [
        /// Cycle counter disabled at EL2 (FEAT_PMUv3p5).
        HCCD OFFSET(23) NUMBITS(1) [],
        /// Event counting prohibited at EL2 (FEAT_PMUv3p1).
        HPMD OFFSET(17) NUMBITS(1) [],
        /// The number of event counters EL1 and EL0 may use.
        HPMN OFFSET(0) NUMBITS(5) []
    ],
    /// ID_AA64DFR0_EL1, the PMU version field.
    pub ID_AA64DFR0_EL1 [
        PMUVER OFFSET(8) NUMBITS(4) []
    ],
    /// PMCR_EL0, the number of event counters.
    pub PMCR_EL0 [
        N OFFSET(11) NUMBITS(5) []
    ]
];

/// `ID_AA64DFR0_EL1.PMUVer` values (Arm ARM D23.2).
mod pmuver {
    /// FEAT_PMUv3p1: MDCR_EL2.HPMD.
    pub const V3P1: u64 = 0b0100;
    /// FEAT_PMUv3p5: MDCR_EL2.HCCD.
    pub const V3P5: u64 = 0b0110;
    /// An IMPLEMENTATION DEFINED, non-PMUv3 monitor: none of the PMUv3 controls exist.
    pub const IMPDEF: u64 = 0b1111;
}

/// MDCR_EL2 for running the host: all `PMCR_EL0.N` event counters are EL1's, nothing else is
/// trapped, and where the PMU version has the controls, neither the event counters (HPMD) nor the
/// cycle counter (HCCD) count at EL2.
pub fn mdcr_el2_for_host(pmcr_el0: u64, id_aa64dfr0_el1: u64) -> u64 {
    let pmcr = LocalRegisterCopy::<u64, PMCR_EL0::Register>::new(pmcr_el0);
    let dfr0 = LocalRegisterCopy::<u64, ID_AA64DFR0_EL1::Register>::new(id_aa64dfr0_el1);
    let version = dfr0.read(ID_AA64DFR0_EL1::PMUVER);
    let mut mdcr = LocalRegisterCopy::<u64, MDCR_EL2::Register>::new(0);
    mdcr.modify(MDCR_EL2::HPMN.val(pmcr.read(PMCR_EL0::N)));
    if version != pmuver::IMPDEF {
        if version >= pmuver::V3P1 {
            mdcr.modify(MDCR_EL2::HPMD::SET);
        }
        if version >= pmuver::V3P5 {
            mdcr.modify(MDCR_EL2::HCCD::SET);
        }
    }
    mdcr.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HPMD: u64 = 1 << 17;
    const HCCD: u64 = 1 << 23;

    fn dfr0(version: u64) -> u64 {
        version << 8 | 0x6 // DebugVer, which must not matter
    }

    #[test]
    fn hpmn_is_pmcr_n() {
        assert_eq!(mdcr_el2_for_host(6 << 11 | 0x41, dfr0(0)) & 0x1f, 6);
        assert_eq!(mdcr_el2_for_host(31 << 11, dfr0(0)) & 0x1f, 31);
    }

    #[test]
    fn controls_only_where_the_pmu_version_has_them() {
        let n = 4 << 11;
        // No PMU, PMUv3, PMUv3 for Armv8.0 only: neither control exists.
        for v in [0b0000, 0b0001] {
            assert_eq!(mdcr_el2_for_host(n, dfr0(v)), 4, "PMUVer {v:#b}");
        }
        // PMUv3p1 (and p4): HPMD only.
        for v in [0b0100, 0b0101] {
            assert_eq!(mdcr_el2_for_host(n, dfr0(v)), 4 | HPMD, "PMUVer {v:#b}");
        }
        // PMUv3p5 and later: both.
        for v in [0b0110, 0b0111, 0b1000, 0b1001] {
            assert_eq!(
                mdcr_el2_for_host(n, dfr0(v)),
                4 | HPMD | HCCD,
                "PMUVer {v:#b}"
            );
        }
        // IMPLEMENTATION DEFINED PMU: no PMUv3 controls.
        assert_eq!(mdcr_el2_for_host(n, dfr0(0b1111)), 4);
    }
}
