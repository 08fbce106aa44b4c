use alloc::string::ToString;
use alloc::vec;
use std::io::Write;
use std::process::{Command, Stdio};

use dtoolkit::fdt::Fdt;
use dtoolkit::model::{DeviceTree, DeviceTreeNode, DeviceTreeProperty};
use dtoolkit::{Node, Property};
use platform::addr::Pa;
use platform::devtree::ReservedSource;
use proptest::prelude::*;

use super::*;
use crate::boot::cmdline::parse_crashkernel;

const QEMU: &[u8] = include_bytes!("../../../../platform/tests/fixtures/qemu-virt-smmuv3.dtb");
const SYNTHETIC: &[u8] = include_bytes!("../../../../platform/tests/fixtures/synthetic.dtb");

const MIB: u64 = 1 << 20;

fn r(start: u64, size: u64) -> PhysRange {
    PhysRange::new(start, size).unwrap()
}

fn params(portcullis: PhysRange, crash: Option<PhysRange>) -> HostTreeParams {
    HostTreeParams {
        portcullis,
        crash_region: crash,
        hide_smmu: false,
        fault_report: None,
        disable: Vec::new(),
    }
}

fn edited(base: &[u8], edit: impl FnOnce(&mut DeviceTree)) -> Vec<u8> {
    let mut tree = DeviceTree::from_fdt(&Fdt::new(base).unwrap());
    edit(&mut tree);
    tree.to_dtb()
}

fn set(tree: &mut DeviceTree, path: &str, name: &str, value: Vec<u8>) {
    let node = tree.find_node_mut(path).unwrap();
    node.add_property(DeviceTreeProperty::new(name, value).unwrap());
}

fn cells(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn string(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// The QEMU tree as `scripts/run` hands it over: host command line, Portcullis' options, the
/// kernel and the initrd in /chosen.
fn qemu_with_chosen() -> Vec<u8> {
    edited(QEMU, |t| {
        set(
            t,
            "/chosen",
            "bootargs",
            string("console=ttyAMA0 crashkernel=64M root=/dev/vda"),
        );
        set(t, "/chosen", "portcullis,bootargs", string("log=debug"));
        set(
            t,
            "/chosen",
            "portcullis,kernel",
            cells(&[0, 0x4020_0000, 0, 0x200_0000]),
        );
        set(t, "/chosen", "linux,initrd-start", cells(&[0x4800_0000]));
        set(t, "/chosen", "linux,initrd-end", cells(&[0x4880_0000]));
    })
}

fn prop<'t>(tree: &'t DeviceTree, path: &str, name: &str) -> Option<Vec<u8>> {
    let node: &'t DeviceTreeNode = tree.find_node(path)?;
    Node::property(node, name).map(|p| p.value().to_vec())
}

/// `dtc` accepts the tree and warns about nothing it did not already warn about in the input.
fn dtc_accepts(input: &[u8], output: &[u8]) {
    let run = |dtb: &[u8]| -> Option<(bool, Vec<String>)> {
        let mut child = Command::new("dtc")
            .args(["-I", "dtb", "-O", "dts", "-o", "/dev/null", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .ok()?;
        child.stdin.take()?.write_all(dtb).ok()?;
        let out = child.wait_with_output().ok()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        Some((
            out.status.success(),
            stderr.lines().map(String::from).collect(),
        ))
    };
    let Some((ok, warnings)) = run(output) else {
        std::eprintln!("dtc not available: skipping the dtc check");
        return;
    };
    assert!(ok, "dtc refused the host tree: {warnings:?}");
    let (_, before) = run(input).unwrap();
    for w in &warnings {
        assert!(
            before.contains(w),
            "new dtc warning: {w}\nall: {warnings:?}"
        );
    }
}

#[test]
fn qemu_host_tree() {
    let input = qemu_with_chosen();
    let portcullis = r(0x7e00_0000, 32 * MIB);
    let crash = r(0x7a00_0000, 64 * MIB);
    let out = build_host_tree(&input, &params(portcullis, Some(crash))).unwrap();
    assert!(out.len() < DTB_MAX_SIZE as usize);

    let p = Platform::parse(&out).unwrap();
    assert_eq!(p.memory, [PhysRange::from_bounds(0x4000_0000, 0x7e00_0000)]);
    assert!(p.memory.iter().all(|m| !m.overlaps(&portcullis)));
    assert_eq!(p.reserved, [portcullis]);
    assert_eq!(p.reserved_regions.len(), 1);
    assert_eq!(
        p.reserved_regions[0].source,
        ReservedSource::Node("/reserved-memory/portcullis@7e000000".into())
    );
    assert!(p.reserved_regions[0].no_map);
    let bootargs = p.chosen.bootargs.as_deref().unwrap();
    assert_eq!(
        bootargs,
        "console=ttyAMA0 crashkernel=64M@0x7a000000 root=/dev/vda"
    );
    assert_eq!(
        parse_crashkernel(bootargs, 1 << 30).unwrap().unwrap().base,
        Some(Pa(0x7a00_0000))
    );
    assert_eq!(p.chosen.portcullis_bootargs, None);
    assert_eq!(p.chosen.kernel, None);
    assert_eq!(
        p.chosen.initrd,
        Some(PhysRange::from_bounds(0x4800_0000, 0x4880_0000))
    );
    // Everything else is as it was.
    let before = Platform::parse(&input).unwrap();
    assert_eq!(p.smmu, before.smmu);
    assert_eq!(p.pci, before.pci);
    assert_eq!(p.gic, before.gic);
    assert_eq!(p.cpus, before.cpus);
    assert_eq!(p.max_address, before.max_address);

    // The same through dtoolkit's reader.
    let tree = DeviceTree::from_fdt(&Fdt::new(&out).unwrap());
    let rm = "/reserved-memory";
    assert_eq!(prop(&tree, rm, "#address-cells"), Some(cells(&[2])));
    assert_eq!(prop(&tree, rm, "#size-cells"), Some(cells(&[2])));
    assert_eq!(prop(&tree, rm, "ranges"), Some(vec![]));
    let node = "/reserved-memory/portcullis@7e000000";
    assert_eq!(
        prop(&tree, node, "compatible"),
        Some(string("portcullis,hypervisor"))
    );
    assert_eq!(prop(&tree, node, "no-map"), Some(vec![]));
    assert_eq!(
        prop(&tree, node, "reg"),
        Some(cells(&[0, 0x7e00_0000, 0, 0x200_0000]))
    );
    assert_eq!(prop(&tree, "/chosen", "portcullis,kernel"), None);
    assert_eq!(prop(&tree, "/chosen", "portcullis,bootargs"), None);
    assert!(prop(&tree, "/chosen", "rng-seed").is_some());
    assert_eq!(
        prop(&tree, "/memory@40000000", "reg"),
        Some(cells(&[0, 0x4000_0000, 0, 0x3e00_0000]))
    );

    dtc_accepts(&input, &out);
}

#[test]
fn bare_qemu_tree_gets_bootargs_and_keeps_boot_cpu() {
    let mut input = QEMU.to_vec();
    input[28..32].copy_from_slice(&2u32.to_be_bytes());
    let out = build_host_tree(
        &input,
        &params(r(0x7e00_0000, 32 * MIB), Some(r(0x7a00_0000, 64 * MIB))),
    )
    .unwrap();
    let p = Platform::parse(&out).unwrap();
    assert_eq!(
        p.chosen.bootargs.as_deref(),
        Some("crashkernel=64M@0x7a000000")
    );
    assert_eq!(p.boot_cpuid_phys, 2);
    // No crash region and no command line: no bootargs at all.
    let out = build_host_tree(QEMU, &params(r(0x7e00_0000, 32 * MIB), None)).unwrap();
    assert_eq!(Platform::parse(&out).unwrap().chosen.bootargs, None);
    dtc_accepts(QEMU, &out);
}

#[test]
fn no_crash_region_removes_crashkernel() {
    let out =
        build_host_tree(&qemu_with_chosen(), &params(r(0x7e00_0000, 32 * MIB), None)).unwrap();
    let p = Platform::parse(&out).unwrap();
    assert_eq!(
        p.chosen.bootargs.as_deref(),
        Some("console=ttyAMA0 root=/dev/vda")
    );
}

#[test]
fn portcullis_in_the_middle_splits_memory() {
    let portcullis = r(0x6000_0000, 16 * MIB);
    let out = build_host_tree(QEMU, &params(portcullis, None)).unwrap();
    let p = Platform::parse(&out).unwrap();
    assert_eq!(
        p.memory,
        [
            PhysRange::from_bounds(0x4000_0000, 0x6000_0000),
            PhysRange::from_bounds(0x6100_0000, 0x8000_0000)
        ]
    );
    let tree = DeviceTree::from_fdt(&Fdt::new(&out).unwrap());
    assert_eq!(
        prop(&tree, "/memory@40000000", "reg"),
        Some(cells(&[
            0,
            0x4000_0000,
            0,
            0x2000_0000,
            0,
            0x6100_0000,
            0,
            0x1f00_0000
        ]))
    );
    dtc_accepts(QEMU, &out);
}

#[test]
fn existing_reserved_memory_and_one_cell_root() {
    // Portcullis takes all of memory@a0000000 and the top of memory@80000000's first entry.
    let portcullis = PhysRange::from_bounds(0x9f00_0000, 0xb000_0000);
    let report = r(0x4f00_0000, MIB);
    let mut prm = params(portcullis, Some(r(0x4400_0000, 32 * MIB)));
    prm.fault_report = Some(report);
    let out = build_host_tree(SYNTHETIC, &prm).unwrap();
    let p = Platform::parse(&out).unwrap();
    assert_eq!(
        p.memory,
        [
            r(0x4000_0000, 0x1000_0000),
            PhysRange::from_bounds(0x8000_0000, 0x9f00_0000)
        ]
    );
    let tree = DeviceTree::from_fdt(&Fdt::new(&out).unwrap());
    assert!(
        tree.find_node("/memory@a0000000").is_none(),
        "emptied memory node removed"
    );
    assert_eq!(
        prop(&tree, "/memory@80000000", "reg"),
        Some(cells(&[0x8000_0000, 0x1f00_0000, 0x4000_0000, 0x1000_0000]))
    );
    // One-cell reg in the existing one-cell /reserved-memory; the firmware's child kept.
    assert_eq!(
        prop(&tree, "/reserved-memory/portcullis@9f000000", "reg"),
        Some(cells(&[0x9f00_0000, 0x1100_0000]))
    );
    assert!(
        tree.find_node("/reserved-memory/firmware@4fe00000")
            .is_some()
    );
    let node = "/reserved-memory/portcullis-report@4f000000";
    assert_eq!(
        prop(&tree, node, "compatible"),
        Some(string("portcullis,fault-report"))
    );
    assert_eq!(prop(&tree, node, "no-map"), Some(vec![]));
    assert!(p.reserved.contains(&report));
    assert_eq!(
        p.chosen.bootargs.as_deref(),
        Some("console=ttyAMA0 crashkernel=32M@0x44000000")
    );
    dtc_accepts(SYNTHETIC, &out);
}

/// Found by the `devtree` fuzz target: a `device_type = "memory"` without its NUL (FDT pads the
/// value with zeros, so Linux's `strcmp` reads "memory") was RAM to the parser but not a memory
/// node to the rewrite, which left Portcullis' memory in the host's RAM. Both now read the value
/// as Linux does, up to the first NUL.
#[test]
fn memory_node_read_as_linux_reads_it() {
    let portcullis = r(0x4200_0000, 8 * MIB);
    for device_type in [
        &b"memory"[..],
        b"memory\0",
        b"memory\0\0\0",
        b"memory\0junk",
    ] {
        let input = edited(QEMU, |t| {
            set(t, "/memory@40000000", "device_type", device_type.to_vec())
        });
        let incoming = Platform::parse(&input).unwrap();
        assert_eq!(
            incoming.memory,
            [r(0x4000_0000, 1 << 30)],
            "{device_type:?}"
        );
        let out = build_host_tree(&input, &params(portcullis, None)).unwrap();
        let host = Platform::parse(&out).unwrap();
        assert!(
            host.memory.iter().all(|m| !m.overlaps(&portcullis)),
            "{device_type:?}: host RAM {:?} overlaps Portcullis",
            host.memory
        );
    }
}

/// Found by the `devtree` fuzz target: a `/reserved-memory` without `ranges` was reused as it was,
/// so Portcullis' own reservation went into a node Linux ignores (and Portcullis' parser could not
/// read back). Now a missing `ranges` is added, and other cells than the root's are refused.
#[test]
fn reserved_memory_in_a_form_linux_accepts() {
    let portcullis = r(0x4200_0000, 8 * MIB);
    let without_ranges = edited(QEMU, |t| {
        let node = DeviceTreeNode::builder("reserved-memory")
            .unwrap()
            .property(DeviceTreeProperty::new("#address-cells", 2u32).unwrap())
            .property(DeviceTreeProperty::new("#size-cells", 2u32).unwrap())
            .build();
        t.root.add_child(node);
    });
    let out = build_host_tree(&without_ranges, &params(portcullis, None)).unwrap();
    let host = Platform::parse(&out).unwrap();
    assert!(
        host.reserved_regions
            .iter()
            .any(|r| r.no_map && r.range == portcullis),
        "{:?}",
        host.reserved_regions
    );
    let tree = DeviceTree::from_fdt(&Fdt::new(&out).unwrap());
    assert_eq!(prop(&tree, "/reserved-memory", "ranges"), Some(Vec::new()));

    let other_cells = edited(QEMU, |t| {
        let node = DeviceTreeNode::builder("reserved-memory")
            .unwrap()
            .property(DeviceTreeProperty::new("#address-cells", 1u32).unwrap())
            .property(DeviceTreeProperty::new("#size-cells", 1u32).unwrap())
            .property(DeviceTreeProperty::new("ranges", Vec::<u8>::new()).unwrap())
            .build();
        t.root.add_child(node);
    });
    assert_eq!(
        build_host_tree(&other_cells, &params(portcullis, None)),
        Err(HostTreeError::ReservedMemoryCells {
            node: (1, 1),
            root: (2, 2)
        })
    );
}

#[test]
fn address_that_does_not_fit_one_cell() {
    let e = build_host_tree(SYNTHETIC, &params(r(0x1_0000_0000, 32 * MIB), None)).unwrap_err();
    assert_eq!(
        e,
        HostTreeError::DoesNotFit {
            path: "/reserved-memory/portcullis@100000000".into(),
            value: 0x1_0000_0000,
            cells: 1
        }
    );
    assert!(e.to_string().contains("does not fit in 1 cell"));
}

#[test]
fn hide_smmu_disables_it_and_drops_references() {
    let input = edited(QEMU, |t| {
        // A platform device behind the SMMU and another IOMMU, and a PCI map that also uses that
        // other IOMMU.
        let mut other = DeviceTreeNode::new("iommu@1000").unwrap();
        other.add_property(DeviceTreeProperty::new("phandle", 0x9000u32).unwrap());
        other.add_property(DeviceTreeProperty::new("#iommu-cells", 2u32).unwrap());
        t.root.add_child(other);
        set(
            t,
            "/virtio_mmio@a000000",
            "iommus",
            cells(&[0x8007, 5, 0x9000, 1, 2]),
        );
        set(t, "/virtio_mmio@a000200", "iommus", cells(&[0x8007, 6]));
        set(t, "/virtio_mmio@a000400", "iommus", cells(&[0x9000, 3, 4]));
        set(t, "/pcie@10000000", "iommu-map-mask", cells(&[0xfff8]));
    });
    let mut prm = params(r(0x7e00_0000, 32 * MIB), None);
    prm.hide_smmu = true;
    let out = build_host_tree(&input, &prm).unwrap();
    let p = Platform::parse(&out).unwrap();
    assert!(p.smmu.is_none());
    assert!(p.pci[0].iommu_map.is_none());
    let tree = DeviceTree::from_fdt(&Fdt::new(&out).unwrap());
    assert_eq!(
        prop(&tree, "/smmuv3@9050000", "status"),
        Some(string("disabled"))
    );
    assert_eq!(prop(&tree, "/pcie@10000000", "iommu-map"), None);
    assert_eq!(prop(&tree, "/pcie@10000000", "iommu-map-mask"), None);
    assert!(prop(&tree, "/pcie@10000000", "msi-map").is_some());
    assert_eq!(
        prop(&tree, "/virtio_mmio@a000000", "iommus"),
        Some(cells(&[0x9000, 1, 2]))
    );
    assert_eq!(prop(&tree, "/virtio_mmio@a000200", "iommus"), None);
    assert_eq!(
        prop(&tree, "/virtio_mmio@a000400", "iommus"),
        Some(cells(&[0x9000, 3, 4]))
    );
    dtc_accepts(&input, &out);

    // A map shared with another IOMMU keeps the other entries.
    let input = edited(QEMU, |t| {
        set(
            t,
            "/pcie@10000000",
            "iommu-map",
            cells(&[0, 0x8007, 0, 0x100, 0x100, 0x9000, 0, 0x100]),
        );
    });
    let out = build_host_tree(&input, &prm).unwrap();
    let tree = DeviceTree::from_fdt(&Fdt::new(&out).unwrap());
    assert_eq!(
        prop(&tree, "/pcie@10000000", "iommu-map"),
        Some(cells(&[0x100, 0x9000, 0, 0x100]))
    );
}

#[test]
fn smmu_kept_by_default() {
    let out = build_host_tree(QEMU, &params(r(0x7e00_0000, 32 * MIB), None)).unwrap();
    let p = Platform::parse(&out).unwrap();
    assert_eq!(p.smmu.unwrap().regs, r(0x905_0000, 0x2_0000));
    assert!(p.pci[0].iommu_map.is_some());
}

#[test]
fn bad_input() {
    let e = build_host_tree(
        b"garbage that is not a tree at all!!!!!!!!!",
        &params(r(0, 4096), None),
    )
    .unwrap_err();
    assert!(matches!(
        e,
        HostTreeError::Parse(DtError::NotADeviceTree { .. })
    ));
    assert!(
        e.to_string()
            .starts_with("cannot build the host's device tree: not a device tree")
    );
    let e = build_host_tree(&QEMU[..100], &params(r(0, 4096), None)).unwrap_err();
    assert!(matches!(e, HostTreeError::Parse(DtError::Truncated { .. })));
    let all = r(0x3000_0000, 0x6000_0000);
    let e = build_host_tree(QEMU, &params(all, None)).unwrap_err();
    assert_eq!(e, HostTreeError::NoMemoryLeft { portcullis: all });
}

#[test]
fn messages() {
    for e in [
        HostTreeError::Parse(DtError::NoMemory),
        HostTreeError::DoesNotFit {
            path: "/x".into(),
            value: 1 << 40,
            cells: 1,
        },
        HostTreeError::TooLarge { size: 3 << 20 },
        HostTreeError::NoMemoryLeft {
            portcullis: r(0, 1),
        },
        HostTreeError::Model(ModelError::InvalidNodeName("a b".into())),
    ] {
        assert!(e.to_string().len() > 20, "{e}");
    }
}

#[test]
fn reg_codec() {
    let ranges = [r(0x4000_0000, 0x1000), r(0x1_0000_0000, 0x2_0000_0000)];
    for cells in [(2, 2), (3, 2), (2, 3)] {
        let bytes = encode_reg(&ranges, cells, "/x").unwrap();
        assert_eq!(decode_reg(&bytes, cells), Some(ranges.to_vec()));
    }
    assert!(encode_reg(&ranges, (2, 1), "/x").is_err());
    assert!(encode_reg(&ranges, (1, 2), "/x").is_err());
    assert_eq!(encode_reg(&[r(0, 0)], (0, 0), "/x"), Ok(vec![]));
    assert_eq!(decode_reg(&[0; 12], (2, 2)), None);
    assert_eq!(decode_reg(&[0; 7], (1, 1)), None);
    assert_eq!(decode_reg(&[0xff; 16], (2, 2)), None, "wraps");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn host_tree_excludes_portcullis(
        start in 0x3_f000_u64..0x8_1000,
        pages in 1u64..0x4000,
        crash in proptest::option::of(1u64..0x200),
        hide in any::<bool>(),
    ) {
        let portcullis = r(start << 12, pages << 12);
        let mut prm = params(portcullis, crash.map(|c| r(c << 21, 2 * MIB)));
        prm.hide_smmu = hide;
        // Portcullis is at most 64 MiB here, so the host always keeps some RAM.
        let out = build_host_tree(&qemu_with_chosen(), &prm).unwrap();
        let p = Platform::parse(&out).unwrap();
        for m in &p.memory {
            prop_assert!(!m.overlaps(&portcullis));
        }
        prop_assert!(p.reserved.iter().any(|r| r.covers(&portcullis)));
        let args = p.chosen.bootargs.unwrap();
        prop_assert!(args.contains("console=ttyAMA0") && args.contains("root=/dev/vda"));
        prop_assert_eq!(
            parse_crashkernel(&args, 1 << 30).unwrap().map(|c| c.base),
            crash.map(|c| Some(Pa(c << 21)))
        );
        prop_assert_eq!(p.smmu.is_none(), hide);
    }
}

#[test]
fn withheld_devices_are_disabled() {
    let map = crate::boot::devices::DeviceMap::decide(&Platform::parse(QEMU).unwrap());
    let mut p = params(r(0x4020_0000, 32 * MIB), None);
    p.disable = map.to_disable();
    p.disable.push(String::from("/no-such-node@0"));
    let out = build_host_tree(QEMU, &p).unwrap();
    let host = Platform::parse(&out).unwrap();
    let fdt = Fdt::new(&out).unwrap();
    let status = |path: &str| {
        fdt.find_node(path)
            .and_then(|n| n.property("status").map(|s| s.value().to_vec()))
    };
    assert_eq!(
        status("/fw-cfg@9020000").as_deref(),
        Some(&b"disabled\0"[..])
    );
    assert_eq!(
        status("/virtio_mmio@a003e00").as_deref(),
        Some(&b"disabled\0"[..])
    );
    assert_eq!(
        status("/platform-bus@c000000").as_deref(),
        Some(&b"disabled\0"[..])
    );
    assert_eq!(status("/pl011@9000000"), None);
    assert_eq!(status("/pcie@10000000"), None);
    // The host's tree, decided again, withholds nothing more and maps the same pages.
    let again = crate::boot::devices::DeviceMap::decide(&host);
    assert!(again.to_disable().is_empty());
    assert_eq!(again.allowed, map.allowed);
    assert!(
        host.devices
            .iter()
            .filter(|d| d.available)
            .all(|d| { !d.is_compatible("virtio,mmio") && !d.is_compatible("qemu,fw-cfg-mmio") })
    );
}

/// What dtoolkit's model reads back from the rewritten tree, node by node, as (path, properties in
/// order): the stream rewrite keeps every node and property it does not edit, in place.
/// A node's path and its properties (name, value) in order.
type NodeProps = (String, Vec<(String, Vec<u8>)>);

fn model_nodes(dtb: &[u8]) -> Vec<NodeProps> {
    fn visit(node: &DeviceTreeNode, path: String, out: &mut Vec<NodeProps>) {
        let props = Node::properties(node)
            .map(|p| (p.name().to_string(), p.value().to_vec()))
            .collect();
        out.push((path.clone(), props));
        for child in Node::children(node) {
            let name = Node::name(child);
            let child_path = if path == "/" {
                format!("/{name}")
            } else {
                format!("{path}/{name}")
            };
            visit(child, child_path, out);
        }
    }
    let tree = DeviceTree::from_fdt(&Fdt::new(dtb).unwrap());
    let mut out = Vec::new();
    visit(&tree.root, String::from("/"), &mut out);
    out
}

#[test]
fn untouched_nodes_and_properties_are_copied_in_place() {
    let input = qemu_with_chosen();
    let mut p = params(r(0x7e00_0000, 32 * MIB), Some(r(0x4800_0000, 64 * MIB)));
    p.fault_report = Some(r(0xbfff_0000, 0x1_0000));
    let out = build_host_tree(&input, &p).unwrap();
    let before = model_nodes(&input);
    let after = model_nodes(&out);
    let edited = ["/", "/chosen", "/memory@40000000", "/reserved-memory"];
    for (path, props) in &before {
        let Some((_, now)) = after.iter().find(|(p, _)| p == path) else {
            panic!("{path} missing from the host's tree");
        };
        if !edited.contains(&path.as_str()) {
            assert_eq!(now, props, "{path}");
        }
    }
    // Added: /reserved-memory and its two children; nothing else.
    assert_eq!(after.len(), before.len() + 3);
    let chosen = &after.iter().find(|(p, _)| p == "/chosen").unwrap().1;
    let names: Vec<&str> = chosen.iter().map(|(n, _)| n.as_str()).collect();
    // bootargs replaced in place, Portcullis' own properties gone, the rest in order.
    let old: Vec<&str> = before
        .iter()
        .find(|(p, _)| p == "/chosen")
        .unwrap()
        .1
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| !n.starts_with("portcullis,"))
        .collect();
    assert_eq!(names, old);
    // The header's boot CPU and memory reservations are the input's.
    assert_eq!(out[28..32], input[28..32]);
}

#[test]
fn a_reserved_node_of_portcullis_name_is_replaced() {
    let input = edited(QEMU, |t| {
        let rm = DeviceTreeNode::builder("reserved-memory")
            .unwrap()
            .property(DeviceTreeProperty::new("#address-cells", 2u32).unwrap())
            .property(DeviceTreeProperty::new("#size-cells", 2u32).unwrap())
            .property(DeviceTreeProperty::new("ranges", Vec::<u8>::new()).unwrap())
            .child(
                DeviceTreeNode::builder("portcullis@7e000000")
                    .unwrap()
                    .property(DeviceTreeProperty::new("reg", cells(&[0, 1, 0, 2])).unwrap())
                    .build(),
            )
            .build();
        t.root.add_child(rm);
    });
    let out = build_host_tree(&input, &params(r(0x7e00_0000, 32 * MIB), None)).unwrap();
    // One node of that name in the blob (dtoolkit's model would hide a duplicate: it keys children
    // by name).
    let name = b"portcullis@7e000000\0";
    assert_eq!(out.windows(name.len()).filter(|w| w == name).count(), 1);
    let nodes = model_nodes(&out);
    let ours: Vec<_> = nodes
        .iter()
        .filter(|(p, _)| p == "/reserved-memory/portcullis@7e000000")
        .collect();
    assert_eq!(ours.len(), 1);
    let reg = &ours[0].1.iter().find(|(n, _)| n == "reg").unwrap().1;
    assert_eq!(reg, &cells(&[0, 0x7e00_0000, 0, 32 << 20]));
}

proptest! {
    /// The rewrite reads the incoming tree itself (bounds-checked, without validating it again):
    /// a tree corrupted after it was parsed gives a tree or an error, never a panic.
    #[test]
    fn corrupted_input_never_panics(
        flips in proptest::collection::vec((0usize..QEMU.len(), any::<u8>()), 1..8),
    ) {
        let platform = Platform::parse(QEMU).unwrap();
        let mut data = QEMU.to_vec();
        for (at, byte) in flips {
            data[at] = byte;
        }
        let mut p = params(r(0x7e00_0000, 32 * MIB), Some(r(0x4800_0000, 64 * MIB)));
        p.hide_smmu = true;
        let _ = build_host_tree_from(&data, &platform, &p);
    }
}

/// A strings block whose last name has no NUL (found by the `devtree` fuzzer: the input's
/// unterminated `no-map` was taken for the name, and `status` appended right after it made
/// Portcullis' reservation's property `no-mapstatus`): Portcullis' names are NUL-terminated names
/// of their own in the output.
#[test]
fn an_unterminated_last_string_is_not_a_name() {
    let input = fdt::Input {
        structs: &[],
        strings: b"x\0no-map",
        reservations: &[0; 16],
        boot_cpuid: 0,
    };
    let mut out = fdt::Output::new(&input);
    out.prop("no-map", &[]);
    out.prop("status", b"okay\0");
    out.prop("x", &[]);
    let blob = out.finish(&input);
    let word = |off: usize| u32::from_be_bytes(blob[off..off + 4].try_into().unwrap()) as usize;
    let (structs, strings) = (word(8), word(12));
    let name = |prop: usize| {
        let s = &blob[strings + word(structs + prop + 8)..];
        &s[..s.iter().position(|b| *b == 0).unwrap()]
    };
    // Each property is 3 words and its value padded to 4 bytes.
    assert_eq!(name(0), b"no-map");
    assert_eq!(name(12), b"status");
    assert_eq!(name(12 + 12 + 8), b"x");
    assert_eq!(
        word(structs + 12 + 12 + 8 + 8),
        0,
        "the input's own \"x\" at offset 0"
    );
}
