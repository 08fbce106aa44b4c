//! The StreamIDs Portcullis' physical Stream table must cover: every one a PCI root complex can
//! emit towards the SMMU, as its `iommu-map` says. The firewall gives each of them the DMA policy
//! at boot and the emulated SMMU configures exactly these.

use alloc::vec::Vec;

use platform::devtree::Platform;

use crate::smmu::StreamId;

/// Every StreamID the PCI root complexes can emit towards this SMMU, from their `iommu-map`s.
pub fn stream_ids(machine: &Platform, smmu_phandle: Option<u32>) -> Vec<StreamId> {
    let mut sids: Vec<StreamId> = Vec::new();
    for host in &machine.pci {
        let Some(map) = &host.iommu_map else { continue };
        for e in &map.entries {
            if smmu_phandle.is_some_and(|p| p != e.target) {
                continue;
            }
            sids.extend(e.out_base..e.out_base.saturating_add(e.length));
        }
    }
    sids.sort_unstable();
    sids.dedup();
    sids
}

#[cfg(test)]
mod tests;
