use alloc::string::ToString;
use alloc::vec;

use dtoolkit::fdt::Fdt;
use dtoolkit::model::{DeviceTree, DeviceTreeNode, DeviceTreeProperty};

use super::*;

const QEMU: &[u8] = include_bytes!("../../../../platform/tests/fixtures/qemu-virt-smmuv3.dtb");
const SYNTHETIC: &[u8] = include_bytes!("../../../../platform/tests/fixtures/synthetic.dtb");

fn r(start: u64, size: u64) -> PhysRange {
    PhysRange::new(start, size).unwrap()
}

fn edited(base: &[u8], edit: impl FnOnce(&mut DeviceTree)) -> Vec<u8> {
    let mut tree = DeviceTree::from_fdt(&Fdt::new(base).unwrap());
    edit(&mut tree);
    tree.to_dtb()
}

fn cells(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

/// A node `name` with `compatible` and a two-cell `reg` under `parent`.
fn add_device(tree: &mut DeviceTree, parent: &str, name: &str, compatible: &str, reg: &[u32]) {
    let node = DeviceTreeNode::builder(name)
        .unwrap()
        .property(DeviceTreeProperty::new("compatible", compatible).unwrap())
        .property(DeviceTreeProperty::new("reg", cells(reg)).unwrap())
        .build();
    tree.find_node_mut(parent).unwrap().add_child(node);
}

fn decide(dtb: &[u8]) -> DeviceMap {
    DeviceMap::decide(&Platform::parse(dtb).unwrap())
}

fn entry<'a>(map: &'a DeviceMap, path: &str) -> &'a DeviceEntry {
    map.entries
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("no entry for {path}"))
}

fn mapped(map: &DeviceMap, pa: u64) -> bool {
    map.allowed
        .iter()
        .any(|r| r.contains(platform::addr::Pa(pa)))
}

#[test]
fn qemu_virt() {
    let map = decide(QEMU);
    for (path, decision) in [
        ("/fw-cfg@9020000", Decision::Withhold),
        ("/virtio_mmio@a000000", Decision::Withhold),
        ("/virtio_mmio@a003e00", Decision::Withhold),
        ("/platform-bus@c000000", Decision::Withhold),
        ("/smmuv3@9050000", Decision::Mediated),
        ("/pcie@10000000", Decision::Allow),
        ("/pl011@9000000", Decision::Allow),
        ("/pl031@9010000", Decision::Allow),
        ("/pl061@9030000", Decision::Allow),
        ("/intc@8000000", Decision::Allow),
        ("/intc@8000000/its@8080000", Decision::Allow),
        ("/flash@0", Decision::Allow),
    ] {
        assert_eq!(entry(&map, path).decision, decision, "{path}");
    }
    assert_eq!(map.entries.len(), 12 + 30);
    assert_eq!(map.count(Decision::Withhold), 34);
    assert_eq!(map.count(Decision::Mediated), 1);
    // The platform bus is withheld with its window; the PCI host is allowed with ECAM and windows.
    assert_eq!(
        entry(&map, "/platform-bus@c000000").ranges,
        [r(0x0c00_0000, 0x200_0000)]
    );
    assert_eq!(entry(&map, "/pcie@10000000").ranges.len(), 4);

    // Exactly the pages the host needs, merged.
    assert_eq!(
        map.allowed,
        [
            r(0, 0x801_0000),                  // flash (two banks), GICD: touching
            r(0x0808_0000, 0xf8_1000),         // ITS, redistributors, PL011: touching
            r(0x0901_0000, 0x1000),            // PL031
            r(0x0903_0000, 0x1000),            // PL061
            r(0x1000_0000, 0x2f00_0000),       // MMIO32 + I/O windows, touching
            r(0x40_1000_0000, 0x1000_0000),    // ECAM
            r(0x80_0000_0000, 0x80_0000_0000), // MMIO64
        ]
    );
    for pa in [
        0x0902_0000,
        0x0902_0010,
        0x0905_0000,
        0x0a00_0000,
        0x0a00_3e00,
        0x0c00_0000,
    ] {
        assert!(!mapped(&map, pa), "{pa:#x} mapped");
    }
    assert!(map.conflicts.is_empty());

    let mut disable = map.to_disable();
    disable.sort();
    assert_eq!(disable.len(), 34);
    assert!(disable.contains(&"/fw-cfg@9020000".to_string()));
    assert!(disable.contains(&"/platform-bus@c000000".to_string()));
    assert!(
        !disable
            .iter()
            .any(|p| p.contains("smmu") || p.contains("pcie"))
    );
}

#[test]
fn table_lines_name_device_range_decision_and_reason() {
    let map = decide(QEMU);
    let line = entry(&map, "/fw-cfg@9020000").to_string();
    assert!(line.starts_with("/fw-cfg@9020000 "), "{line}");
    assert!(line.contains("0x9020000"), "{line}");
    assert!(line.contains("withhold"), "{line}");
    assert!(line.contains("fw_cfg DMA"), "{line}");
    let pci = entry(&map, "/pcie@10000000").to_string();
    assert!(pci.contains("allow"), "{pci}");
    for window in ["[0x3eff0000, 0x3f000000)", "[0x8000000000, 0x10000000000)"] {
        assert!(pci.contains(window), "{pci}");
    }
    for e in &map.entries {
        assert!(!e.reason.is_empty());
    }
}

#[test]
fn rules_are_one_consistent_table() {
    for (i, a) in RULES.iter().enumerate() {
        assert!(a.reason.len() > 10, "{}: no reason", a.compatible);
        assert_ne!(a.decision, Decision::Mediated, "{}", a.compatible);
        for b in &RULES[i + 1..] {
            assert_ne!(a.compatible, b.compatible, "listed twice");
        }
    }
    for generic in ["arm,primecell", "simple-bus", "pci-host-ecam-generic"] {
        assert!(RULES.iter().all(|r| r.compatible != generic), "{generic}");
    }
}

#[test]
fn unknown_devices_are_denied() {
    let dtb = edited(QEMU, |t| {
        // A PL330 DMA engine says only "arm,primecell" besides its own name.
        add_device(
            t,
            "/",
            "dma@9100000",
            "arm,pl330\0arm,primecell",
            &[0, 0x0910_0000, 0, 0x1000],
        );
        add_device(
            t,
            "/",
            "thing@9200000",
            "vendor,thing",
            &[0, 0x0920_0000, 0, 0x1000],
        );
    });
    let map = decide(&dtb);
    for path in ["/dma@9100000", "/thing@9200000"] {
        let e = entry(&map, path);
        assert_eq!(e.decision, Decision::Withhold);
        assert_eq!(e.reason, REASON_DEFAULT_DENY);
        assert!(e.disable_in_tree);
        assert!(!mapped(&map, e.ranges[0].start.raw()));
    }
}

#[test]
fn devices_plugged_on_the_platform_bus_are_withheld() {
    let dtb = edited(QEMU, |t| {
        let node = DeviceTreeNode::builder("uart@1000")
            .unwrap()
            .property(DeviceTreeProperty::new("compatible", "arm,pl011").unwrap())
            .property(DeviceTreeProperty::new("reg", cells(&[0x1000, 0x1000])).unwrap())
            .build();
        t.find_node_mut("/platform-bus@c000000")
            .unwrap()
            .add_child(node);
    });
    let map = decide(&dtb);
    let e = entry(&map, "/platform-bus@c000000/uart@1000");
    assert_eq!(e.ranges, [r(0x0c00_1000, 0x1000)]);
    assert_eq!(e.decision, Decision::Withhold);
    assert_eq!(e.reason, REASON_INSIDE_WITHHELD);
    // Disabling the bus hides it; the node itself is left alone.
    assert!(!e.disable_in_tree);
    assert!(!mapped(&map, 0x0c00_1000));
}

#[test]
fn pci_hosts_need_every_rid_behind_the_smmu() {
    // No iommu-map: its devices' DMA is not translated.
    let dtb = edited(QEMU, |t| {
        t.find_node_mut("/pcie@10000000")
            .unwrap()
            .remove_property("iommu-map");
    });
    let map = decide(&dtb);
    let e = entry(&map, "/pcie@10000000");
    assert_eq!(
        (e.decision, e.reason),
        (Decision::Withhold, REASON_PCI_NOT_BEHIND_SMMU)
    );
    assert!(e.disable_in_tree);
    for pa in [0x40_1000_0000, 0x1000_0000, 0x3eff_0000, 0x80_0000_0000] {
        assert!(!mapped(&map, pa), "{pa:#x}");
    }

    // An iommu-map to something else, or one that leaves RIDs out.
    let smmu_phandle = Platform::parse(QEMU)
        .unwrap()
        .smmu
        .unwrap()
        .phandle
        .unwrap();
    for map_cells in [
        [0, smmu_phandle + 100, 0, 0x10000],
        [0, smmu_phandle, 0, 0xff00],
    ] {
        let dtb = edited(QEMU, |t| {
            t.find_node_mut("/pcie@10000000")
                .unwrap()
                .add_property(DeviceTreeProperty::new("iommu-map", cells(&map_cells)).unwrap());
        });
        assert_eq!(
            entry(&decide(&dtb), "/pcie@10000000").decision,
            Decision::Withhold,
            "{map_cells:x?}"
        );
    }

    // The synthetic board's map covers RIDs 0..0x200 of buses 0..15: withheld.
    let map = decide(SYNTHETIC);
    assert_eq!(entry(&map, "/pcie@30000000").decision, Decision::Withhold);
    // Widened to the whole bus range, it is allowed.
    let dtb = edited(SYNTHETIC, |t| {
        t.find_node_mut("/pcie@30000000")
            .unwrap()
            .add_property(DeviceTreeProperty::new("bus-range", cells(&[0, 1])).unwrap());
    });
    assert_eq!(
        entry(&decide(&dtb), "/pcie@30000000").decision,
        Decision::Allow
    );
}

#[test]
fn synthetic_board() {
    let map = decide(SYNTHETIC);
    assert_eq!(entry(&map, "/soc/serial@2000000").decision, Decision::Allow);
    assert_eq!(entry(&map, "/soc/serial@2001000").decision, Decision::Allow);
    assert_eq!(
        entry(&map, "/soc/interrupt-controller@1000000/v2m@80000").decision,
        Decision::Allow
    );
    assert_eq!(
        entry(&map, "/soc/iommu@3000000").decision,
        Decision::Mediated
    );
    // The soc bus is not a device: its window is neither mapped nor withheld.
    assert!(map.entries.iter().all(|e| e.path != "/soc"));
    assert!(mapped(&map, 0x1200_0000));
    assert!(!mapped(&map, 0x1400_0000));
}

#[test]
fn withheld_wins_a_shared_page() {
    // A UART and a virtio-mmio transport in one 4 KiB page, as some boards pack them.
    let dtb = edited(QEMU, |t| {
        add_device(
            t,
            "/",
            "serial@9100000",
            "ns16550a",
            &[0, 0x0910_0000, 0, 0x100],
        );
        add_device(
            t,
            "/",
            "virtio@9100200",
            "virtio,mmio",
            &[0, 0x0910_0200, 0, 0x200],
        );
        add_device(
            t,
            "/",
            "serial@9101000",
            "ns16550a",
            &[0, 0x0910_1000, 0, 0x100],
        );
    });
    let map = decide(&dtb);
    assert_eq!(entry(&map, "/serial@9100000").decision, Decision::Allow);
    assert!(!mapped(&map, 0x0910_0000), "withheld wins the shared page");
    assert!(
        mapped(&map, 0x0910_1000),
        "the neighbour page is the UART's alone"
    );
    assert_eq!(
        map.conflicts,
        [Conflict {
            allowed: "/serial@9100000".to_string(),
            withheld: "/virtio@9100200".to_string(),
            pages: r(0x0910_0000, 0x1000),
        }]
    );
}

#[test]
fn disabled_nodes_are_withheld_and_left_as_they_are() {
    let dtb = edited(QEMU, |t| {
        t.find_node_mut("/pl061@9030000")
            .unwrap()
            .add_property(DeviceTreeProperty::new("status", "disabled").unwrap());
    });
    let map = decide(&dtb);
    let e = entry(&map, "/pl061@9030000");
    assert_eq!(
        (e.decision, e.reason),
        (Decision::Withhold, REASON_DISABLED)
    );
    assert!(!e.disable_in_tree);
    assert!(!mapped(&map, 0x0903_0000));
    let _ = vec![0u8];
}

/// `behind_smmu` looks at one requester ID per stretch between map entry bounds: the same answer
/// as asking for every requester ID of the bus range, for overlapping entries (first wins),
/// gaps, other targets and masks.
#[test]
fn behind_smmu_matches_every_requester_id() {
    use platform::devtree::{IdMap, IdMapEntry};
    let e = |id_base, target, length| IdMapEntry {
        id_base,
        target,
        out_base: id_base,
        length,
    };
    let maps = [
        vec![e(0, 7, 0x1_0000)],
        vec![e(0, 7, 0x8000), e(0x8000, 7, 0x8000)],
        vec![e(0, 7, 0x8000), e(0x8001, 7, 0x8000)],
        vec![e(0x100, 8, 0x10), e(0, 7, 0x1_0000)],
        vec![e(0, 7, 0x1_0000), e(0x100, 8, 0x10)],
        vec![e(0, 7, 0x100), e(0x200, 7, 0xfe00)],
        vec![e(0, 7, 0x1_0000)],
    ];
    let masks = [0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0x00ff];
    for (entries, mask) in maps.into_iter().zip(masks) {
        for bus_range in [(0u8, 0xffu8), (1, 1), (0, 0), (2, 0x7f)] {
            let host = PciHost {
                path: "/pcie".to_string(),
                ecam: r(0x40_1000_0000, 0x1000_0000),
                bus_range,
                domain: None,
                windows: vec![],
                iommu_map: Some(IdMap {
                    entries: entries.clone(),
                    mask,
                }),
                msi_map: None,
                msi_parent: None,
                dma_coherent: true,
            };
            let map = host.iommu_map.as_ref().unwrap();
            let (lo, hi) = (
                u32::from(bus_range.0) << 8,
                u32::from(bus_range.1) << 8 | 0xff,
            );
            let every = (lo..=hi).all(|rid| map.map(rid).is_some_and(|(t, _)| t == 7));
            assert_eq!(
                behind_smmu(&host, Some(7)),
                every,
                "{entries:?} mask {mask:#x} buses {bus_range:?}"
            );
        }
    }
}
