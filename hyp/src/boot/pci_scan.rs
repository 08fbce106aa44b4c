//! The PCI functions that exist before the host runs, found through ECAM: the StreamIDs that get
//! a physical Stream table slot at boot.
//!
//! Only each root bus is scanned. Bridges have no bus numbers before the host's PCI code assigns
//! them, so nothing behind a bridge can be found (nor can it master DMA) yet: those StreamIDs get
//! their slot when the host configures them (see [`crate::emul::EmulConfig::on_demand`]).
//!
//! Reads are of the Vendor ID / Device ID word and of the header-type word only, which have no
//! side effects (PCI Local Bus 6.1, Configuration Space Header).

use alloc::vec::Vec;

use platform::addr::PhysRange;
use platform::devtree::PciHost;

use crate::smmu::StreamId;

/// The ECAM window of one bus: 32 devices x 8 functions x 4 KiB.
pub const BUS_ECAM_BYTES: u64 = 1 << 20;

/// The ECAM window of `host`'s root bus (the first of its `bus-range`, at the start of its ECAM
/// `reg`), if the tree gives one that large.
pub fn root_bus_ecam(host: &PciHost) -> Option<PhysRange> {
    (host.ecam.size() >= BUS_ECAM_BYTES)
        .then(|| PhysRange::new(host.ecam.start.raw(), BUS_ECAM_BYTES))
        .flatten()
}

/// The device/function numbers (`device << 3 | function`) present on one bus, given 32-bit
/// configuration reads at an offset into that bus's ECAM window. A function is present if its
/// Vendor ID is neither all ones (no device answers) nor zero; functions 1..=7 are looked at only
/// when function 0 says it is multi-function (header type bit 7).
pub fn bus_functions(mut read32: impl FnMut(u64) -> u32) -> Vec<u8> {
    let present = |id: u32| !matches!(id & 0xffff, 0xffff | 0);
    let offset =
        |dev: u8, func: u8, reg: u64| (u64::from(dev) << 15) | (u64::from(func) << 12) | reg;
    let mut found = Vec::new();
    for dev in 0..32u8 {
        if !present(read32(offset(dev, 0, 0))) {
            continue;
        }
        found.push(dev << 3);
        let header_type = (read32(offset(dev, 0, 0xc)) >> 16) & 0xff;
        if header_type & 0x80 == 0 {
            continue;
        }
        for func in 1..8u8 {
            if present(read32(offset(dev, func, 0))) {
                found.push((dev << 3) | func);
            }
        }
    }
    found
}

/// The StreamIDs towards the SMMU `smmu_phandle` (any, if `None`) of the functions on the root
/// bus of every host with an `iommu-map`, sorted and without duplicates. `read32(host, offset)`
/// reads that host's root-bus ECAM window ([`root_bus_ecam`]).
pub fn present_stream_ids(
    hosts: &[PciHost],
    smmu_phandle: Option<u32>,
    mut read32: impl FnMut(&PciHost, u64) -> u32,
) -> Vec<StreamId> {
    let mut sids = Vec::new();
    for host in hosts {
        let Some(map) = &host.iommu_map else { continue };
        if root_bus_ecam(host).is_none() {
            continue;
        }
        let bus = u32::from(host.bus_range.0);
        for devfn in bus_functions(|off| read32(host, off)) {
            let rid = (bus << 8) | u32::from(devfn);
            match map.map(rid) {
                Some((target, sid)) if smmu_phandle.is_none_or(|p| p == target) => sids.push(sid),
                _ => {}
            }
        }
    }
    platform::sort::sort_small(&mut sids);
    sids.dedup();
    sids
}

/// The largest StreamID any `iommu-map` sends to the SMMU `smmu_phandle` (any, if `None`): what
/// the level 1 Stream table must cover.
pub fn max_stream_id(hosts: &[PciHost], smmu_phandle: Option<u32>) -> Option<StreamId> {
    hosts
        .iter()
        .filter_map(|h| h.iommu_map.as_ref())
        .flat_map(|m| m.entries.iter())
        .filter(|e| smmu_phandle.is_none_or(|p| p == e.target) && e.length > 0)
        .map(|e| e.out_base.saturating_add(e.length - 1))
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use alloc::string::String;
    use alloc::vec;
    use platform::devtree::{IdMap, IdMapEntry};

    fn host(bus: u8, out_base: u32, target: u32) -> PciHost {
        PciHost {
            path: String::from("/pcie@10000000"),
            ecam: PhysRange::new(0x40_1000_0000, 0x1000_0000).expect("range"),
            bus_range: (bus, 0xff),
            domain: None,
            windows: vec![],
            iommu_map: Some(IdMap {
                entries: vec![IdMapEntry {
                    id_base: 0,
                    target,
                    out_base,
                    length: 0x1_0000,
                }],
                mask: 0xffff,
            }),
            msi_map: None,
            msi_parent: None,
            dma_coherent: true,
        }
    }

    /// QEMU virt's root bus with the test devices: the host bridge (00:00.0), an edu (00:01.0),
    /// a multi-function device with functions 0 and 3 (00:02.x), a root port (00:03.0).
    fn qemu_bus() -> BTreeMap<u64, u32> {
        let mut cfg = BTreeMap::new();
        let at = |dev: u64, func: u64, reg: u64| (dev << 15) | (func << 12) | reg;
        cfg.insert(at(0, 0, 0), 0x0008_1b36);
        cfg.insert(at(0, 0, 0xc), 0);
        cfg.insert(at(1, 0, 0), 0x11e8_1234);
        cfg.insert(at(1, 0, 0xc), 0);
        cfg.insert(at(2, 0, 0), 0x1000_1af4);
        cfg.insert(at(2, 0, 0xc), 0x0080_0000);
        cfg.insert(at(2, 3, 0), 0x1001_1af4);
        cfg.insert(at(3, 0, 0), 0x000c_1b36);
        cfg.insert(at(3, 0, 0xc), 0x0001_0000);
        cfg
    }

    #[test]
    fn root_bus_functions_and_their_stream_ids() {
        let cfg = qemu_bus();
        let mut reads = 0;
        let found = bus_functions(|off| {
            reads += 1;
            cfg.get(&off).copied().unwrap_or(0xffff_ffff)
        });
        assert_eq!(found, [0x00, 0x08, 0x10, 0x13, 0x18]);
        // 32 vendor IDs, 4 header types, 7 functions of the multi-function device.
        assert_eq!(reads, 32 + 4 + 7);

        let read = |_: &PciHost, off: u64| cfg.get(&off).copied().unwrap_or(0xffff_ffff);
        assert_eq!(
            present_stream_ids(&[host(0, 0, 7)], Some(7), read),
            [0x00, 0x08, 0x10, 0x13, 0x18]
        );
        // Another SMMU's map, or no map: nothing.
        assert!(present_stream_ids(&[host(0, 0, 7)], Some(8), read).is_empty());
        let mut unmapped = host(0, 0, 7);
        unmapped.iommu_map = None;
        assert!(present_stream_ids(&[unmapped], None, read).is_empty());
        // A root bus numbered 0x20, mapped to StreamIDs from 0x1_0000.
        assert_eq!(
            present_stream_ids(&[host(0x20, 0x1_0000, 7)], None, read),
            [0x1_2000, 0x1_2008, 0x1_2010, 0x1_2013, 0x1_2018]
        );
        assert_eq!(max_stream_id(&[host(0, 0, 7)], Some(7)), Some(0xffff));
        assert_eq!(max_stream_id(&[host(0, 0, 7)], Some(8)), None);
    }

    #[test]
    fn zero_vendor_ids_and_small_ecam_windows_are_not_devices() {
        assert!(bus_functions(|_| 0).is_empty());
        let mut small = host(0, 0, 7);
        small.ecam = PhysRange::new(0x3f00_0000, 0x8_0000).expect("range");
        assert_eq!(root_bus_ecam(&small), None);
        assert!(present_stream_ids(&[small], None, |_, _| 0x1234_5678).is_empty());
    }
}
