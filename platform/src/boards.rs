//! What each supported board's device tree gives Portcullis, and what Portcullis assumes about it.
//!
//! Nothing here is an address: every address comes from the tree ([`crate::devtree`]). This is the
//! place for behaviour a tree cannot describe (quirks), keyed by the root's `compatible`.
//!
//! | board | how it is identified | what the tree gives | status |
//! |---|---|---|---|
//! | QEMU `virt` (`virtualization=on,gic-version=3,iommu=smmuv3`) | root `compatible = "linux,dummy-virt"` | PSCI 1.0 with `method = "smc"` (EL3 firmware is emulated; with `virtualization=on` the guest's SMC reaches QEMU, and Portcullis traps the host's with `HCR_EL2.TSC`); GICv3 with one redistributor region and an ITS child under `ranges;`; the SMMUv3 as `smmuv3@…` with wired `eventq`/`priq`/`cmdq-sync`/`gerror` SPIs; one `pci-host-ecam-generic` whose ECAM lies above 4 GiB ("high ECAM") with `iommu-map = <0 &smmu 0 0x10000>` (StreamID = RID) and a 64-bit window reaching 1 TiB, which sets the IPA size; PL011 console via `stdout-path` | supported, tested |
//! | QEMU `virt`, `gic-version=2` | as above | GICv2 (`arm,cortex-a15-gic`) with GICD/GICC/GICH/GICV and a GICv2m frame; no ITS | parsed; no SMMU unless `iommu=smmuv3` |
//! | Arm FVP Base RevC | `compatible = "arm,fvp-base-revc", "arm,vexpress"` | GICv3 with ITS; SMMUv3 (the `smmu-v3` node is present only in SMMU-enabled models) whose `iommu-map` for the PCI host is not an identity; TF-A provides PSCI via SMC; PL011 consoles | described only, not tested |
//! | Real boards (e.g. Ampere Altra, NXP LX2160A, Rockchip RK3588) | per board | several SMMUv3 instances, MSI-only SMMU interrupts (`msi-parent`, no wired SPIs), PCI hosts with vendor compatibles rather than `pci-host-ecam-generic`, firmware-reserved memory in `/reserved-memory` | described only: Portcullis takes the first SMMUv3 and only generic ECAM hosts |
//!
//! QEMU resets the SMMU's GBPA to bypass rather than abort; Portcullis sets abort first on every
//! board, so that is not a quirk to key on.

/// The boards Portcullis knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Board {
    QemuVirt,
    FvpBase,
    Other,
}

impl Board {
    /// Identifies the board from the root's `compatible` strings.
    pub fn identify<S: AsRef<str>>(compatible: &[S]) -> Board {
        let has = |c: &str| compatible.iter().any(|s| s.as_ref() == c);
        if has("linux,dummy-virt") {
            Board::QemuVirt
        } else if has("arm,fvp-base-revc") || has("arm,fvp-base") {
            Board::FvpBase
        } else {
            Board::Other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identify() {
        assert_eq!(Board::identify(&["linux,dummy-virt"]), Board::QemuVirt);
        assert_eq!(
            Board::identify(&["arm,fvp-base-revc", "arm,vexpress"]),
            Board::FvpBase
        );
        assert_eq!(Board::identify::<&str>(&[]), Board::Other);
    }
}
