use alloc::string::ToString;

use dtoolkit::Node;
use dtoolkit::model::{DeviceTree, DeviceTreeNode, DeviceTreeProperty};
use proptest::prelude::*;

use super::*;
use crate::addr::Pa;

const QEMU: &[u8] = include_bytes!("../../tests/fixtures/qemu-virt-smmuv3.dtb");
const QEMU_GICV2: &[u8] = include_bytes!("../../tests/fixtures/qemu-virt-gicv2.dtb");
const SYNTHETIC: &[u8] = include_bytes!("../../tests/fixtures/synthetic.dtb");

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn r(start: u64, size: u64) -> PhysRange {
    PhysRange::new(start, size).unwrap()
}

/// The fixture, edited through dtoolkit's model.
fn edited(base: &[u8], edit: impl FnOnce(&mut DeviceTree)) -> Vec<u8> {
    let mut tree = DeviceTree::from_fdt(&Fdt::new(base).unwrap());
    edit(&mut tree);
    tree.to_dtb()
}

fn set_prop(tree: &mut DeviceTree, path: &str, name: &str, value: Vec<u8>) {
    let node = tree.find_node_mut(path).unwrap();
    node.add_property(DeviceTreeProperty::new(name, value).unwrap());
}

fn cells(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn parse_err(dtb: &[u8]) -> DtError {
    let err = Platform::parse(dtb).unwrap_err();
    // Every error explains itself.
    assert!(err.to_string().len() > 20, "terse message: {err}");
    err
}

#[test]
fn qemu_virt_memory_and_cpus() {
    let p = Platform::parse(QEMU).unwrap();
    assert_eq!(p.memory, [r(0x4000_0000, GIB)]);
    assert_eq!(p.memory_size(), GIB);
    assert!(p.reserved.is_empty());
    assert_eq!(p.cpus.len(), 4);
    for (i, cpu) in p.cpus.iter().enumerate() {
        assert_eq!(cpu.mpidr, i as u64);
        assert_eq!(cpu.enable_method.as_deref(), Some("psci"));
    }
    assert_eq!(p.model.as_deref(), Some("linux,dummy-virt"));
    assert_eq!(p.compatible, ["linux,dummy-virt"]);
    assert_eq!(
        crate::boards::Board::identify(&p.compatible),
        crate::boards::Board::QemuVirt
    );
}

#[test]
fn qemu_virt_psci_gic_uart() {
    let p = Platform::parse(QEMU).unwrap();
    let psci = p.psci.unwrap();
    assert_eq!(psci.conduit, Conduit::Smc);
    assert_eq!(psci.version, PsciVersion::V1_0);
    assert_eq!(
        psci.compatible,
        ["arm,psci-1.0", "arm,psci-0.2", "arm,psci"]
    );
    assert_eq!(psci.function_ids.cpu_on, Some(0xc400_0003));

    let gic = p.gic.unwrap();
    assert_eq!(gic.version, GicVersion::V3);
    assert_eq!(gic.path, "/intc@8000000");
    assert_eq!(gic.phandle, Some(0x8005));
    assert_eq!(gic.distributor, r(0x800_0000, 0x1_0000));
    assert_eq!(gic.redistributors, [r(0x80a_0000, 0xf6_0000)]);
    assert_eq!(gic.cpu_interface, None);
    // The ITS sits under the GIC's `ranges;`.
    assert_eq!(gic.its, [r(0x808_0000, 0x2_0000)]);
    assert!(gic.v2m_frames.is_empty());

    let uart = p.uart.unwrap();
    assert_eq!(uart.kind, UartKind::Pl011);
    assert_eq!(uart.base, r(0x900_0000, 0x1000));
    assert_eq!(uart.path, "/pl011@9000000");
    assert_eq!(uart.options, None);
    assert_eq!(p.chosen.stdout_path.as_deref(), Some("/pl011@9000000"));
}

#[test]
fn qemu_virt_smmu() {
    let p = Platform::parse(QEMU).unwrap();
    let smmu = p.smmu.unwrap();
    assert_eq!(smmu.path, "/smmuv3@9050000");
    assert_eq!(smmu.regs, r(0x905_0000, 0x2_0000));
    assert_eq!(smmu.phandle, Some(0x8007));
    assert!(smmu.dma_coherent);
    let spi = |n| {
        Some(Irq {
            kind: IrqKind::Spi,
            number: n,
            flags: 1,
        })
    };
    assert_eq!(smmu.interrupts.eventq, spi(0x4a));
    assert_eq!(smmu.interrupts.priq, spi(0x4b));
    assert_eq!(smmu.interrupts.cmdq_sync, spi(0x4c));
    assert_eq!(smmu.interrupts.gerror, spi(0x4d));
    assert_eq!(smmu.interrupts.combined, None);
    assert_eq!(smmu.interrupts.eventq.unwrap().intid(), Some(0x4a + 32));
}

#[test]
fn qemu_virt_pci() {
    let p = Platform::parse(QEMU).unwrap();
    assert_eq!(p.pci.len(), 1);
    let pci = &p.pci[0];
    assert_eq!(pci.path, "/pcie@10000000");
    assert_eq!(pci.ecam, r(0x40_1000_0000, 0x1000_0000));
    assert_eq!(pci.bus_range, (0, 255));
    assert_eq!(pci.domain, Some(0));
    assert!(pci.dma_coherent);
    assert_eq!(
        pci.windows,
        [
            PciWindow {
                space: PciSpace::Io,
                prefetchable: false,
                pci_addr: 0,
                cpu: r(0x3eff_0000, 0x1_0000)
            },
            PciWindow {
                space: PciSpace::Mem32,
                prefetchable: false,
                pci_addr: 0x1000_0000,
                cpu: r(0x1000_0000, 0x2eff_0000)
            },
            PciWindow {
                space: PciSpace::Mem64,
                prefetchable: false,
                pci_addr: 0x80_0000_0000,
                cpu: r(0x80_0000_0000, 0x80_0000_0000)
            },
        ]
    );
    let smmu_phandle = p.smmu.as_ref().unwrap().phandle.unwrap();
    let map = pci.iommu_map.as_ref().unwrap();
    assert_eq!(
        map.entries,
        [IdMapEntry {
            id_base: 0,
            target: smmu_phandle,
            out_base: 0,
            length: 0x1_0000
        }]
    );
    assert_eq!(map.mask, u32::MAX);
    let its_phandle = 0x8006;
    assert_eq!(
        pci.msi_map.as_ref().unwrap().map(0x18),
        Some((its_phandle, 0x18))
    );
    // StreamID = RID on QEMU virt.
    assert_eq!(pci.stream_id(0x0108), Some(0x108));
    assert_eq!(pci.rid_for_stream(0x108), Some(0x0108));
    assert_eq!(pci.rid_for_stream(0x1_0000), None);
    assert_eq!(pci.bdf_for_stream(0x108).unwrap().to_string(), "01:01.0");
    assert_eq!(p.pci_host(0).map(|h| &h.path), Some(&pci.path));
    assert!(p.pci_host(1).is_none());
}

#[test]
fn qemu_virt_max_address_and_chosen() {
    let p = Platform::parse(QEMU).unwrap();
    assert!(p.max_address >= 0x100_0000_0000, "{:#x}", p.max_address);
    assert_eq!(p.max_address, 0x100_0000_0000);
    assert_eq!(p.chosen.bootargs, None);
    assert_eq!(p.chosen.initrd, None);
    assert_eq!(p.chosen.kernel, None);
    assert_eq!(p.boot_cpuid_phys, 0);
}

#[test]
fn qemu_virt_gicv2() {
    let p = Platform::parse(QEMU_GICV2).unwrap();
    assert_eq!(p.memory, [r(0x4000_0000, 2 * GIB)]);
    assert_eq!(p.cpus.len(), 2);
    let gic = p.gic.unwrap();
    assert_eq!(gic.version, GicVersion::V2);
    assert_eq!(gic.distributor, r(0x800_0000, 0x1_0000));
    assert_eq!(gic.cpu_interface, Some(r(0x801_0000, 0x1_0000)));
    assert_eq!(gic.hyp_interface, Some(r(0x803_0000, 0x1_0000)));
    assert_eq!(gic.vcpu_interface, Some(r(0x804_0000, 0x1_0000)));
    assert!(gic.redistributors.is_empty());
    assert!(gic.its.is_empty());
    assert_eq!(gic.v2m_frames, [r(0x802_0000, 0x1000)]);
    assert!(p.smmu.is_none());
    assert_eq!(p.pci.len(), 1);
    assert!(p.pci[0].iommu_map.is_none());
    assert_eq!(p.pci[0].stream_id(0), None);
    assert_eq!(p.pci[0].rid_for_stream(0), None);
}

#[test]
fn synthetic_memory_and_reservations() {
    let p = Platform::parse(SYNTHETIC).unwrap();
    // Two nodes, three entries, one adjacent pair merged, the disabled node skipped.
    assert_eq!(
        p.memory,
        [
            r(0x4000_0000, 0x1000_0000),
            PhysRange::from_bounds(0x8000_0000, 0xb000_0000)
        ]
    );
    assert_eq!(p.reserved, [r(0x4800_0000, MIB), r(0x4fe0_0000, 2 * MIB)]);
    assert_eq!(
        p.reserved_regions,
        [
            ReservedRegion {
                range: r(0x4800_0000, MIB),
                source: ReservedSource::MemReserve,
                no_map: false
            },
            ReservedRegion {
                range: r(0x4fe0_0000, 2 * MIB),
                source: ReservedSource::Node("/reserved-memory/firmware@4fe00000".into()),
                no_map: true
            },
        ]
    );
    // The disabled memory node still counts as something with an address.
    assert_eq!(p.max_address, 0xf100_0000);
}

#[test]
fn synthetic_cpus_and_psci() {
    let p = Platform::parse(SYNTHETIC).unwrap();
    let mpidrs: Vec<u64> = p.cpus.iter().map(|c| c.mpidr).collect();
    // Two-cell MPIDRs, Aff3 kept, bits outside the affinity fields masked.
    assert_eq!(mpidrs, [0, 0x100, 0x1_0001_0000, 0x203]);
    assert_eq!(p.cpus[2].enable_method.as_deref(), Some("spin-table"));
    assert_eq!(p.cpus[3].enable_method, None);
    let psci = p.psci.unwrap();
    assert_eq!(psci.conduit, Conduit::Hvc);
    assert_eq!(psci.version, PsciVersion::V0_1);
    assert_eq!(psci.function_ids.cpu_on, Some(0x95c1_ba5e));
    assert_eq!(psci.function_ids.cpu_suspend, None);
}

#[test]
fn synthetic_translation_through_nested_ranges() {
    let p = Platform::parse(SYNTHETIC).unwrap();
    let gic = p.gic.unwrap();
    assert_eq!(gic.version, GicVersion::V2);
    // soc: child 0 -> CPU 0x1000_0000.
    assert_eq!(gic.distributor, r(0x1100_0000, 0x1000));
    assert_eq!(gic.cpu_interface, Some(r(0x1100_2000, 0x2000)));
    // The v2m frame goes through the GIC's ranges and then the soc's.
    assert_eq!(gic.v2m_frames, [r(0x1108_0000, 0x1000)]);
    let smmu = p.smmu.unwrap();
    assert_eq!(smmu.path, "/soc/iommu@3000000");
    assert_eq!(smmu.regs, r(0x1300_0000, 0x4_0000));
    assert!(smmu.msi_parent.is_some());
    // interrupts-extended, names in another order, no cmdq-sync.
    assert_eq!(smmu.interrupts.eventq.unwrap().number, 100);
    assert_eq!(smmu.interrupts.gerror.unwrap().number, 101);
    assert_eq!(smmu.interrupts.priq.unwrap().intid(), Some(134));
    assert_eq!(smmu.interrupts.cmdq_sync, None);
}

#[test]
fn synthetic_console_through_alias_with_options() {
    let p = Platform::parse(SYNTHETIC).unwrap();
    let uart = p.uart.unwrap();
    assert_eq!(uart.path, "/soc/serial@2001000");
    assert_eq!(uart.kind, UartKind::SbsaUart);
    assert_eq!(uart.base, r(0x1200_1000, 0x1000));
    assert_eq!(uart.options.as_deref(), Some("115200n8"));
}

#[test]
fn synthetic_console_alias_to_phandle_path() {
    let dtb = edited(SYNTHETIC, |t| {
        set_prop(t, "/chosen", "stdout-path", b"serial0\0".to_vec());
    });
    let uart = Platform::parse(&dtb).unwrap().uart.unwrap();
    assert_eq!(uart.kind, UartKind::Ns16550);
    assert_eq!(uart.base, r(0x1200_0000, 0x100));
    assert_eq!(uart.options, None);
}

#[test]
fn console_naming_nothing_is_not_fatal() {
    let dtb = edited(QEMU, |t| {
        set_prop(t, "/chosen", "stdout-path", b"/nowhere:115200\0".to_vec());
    });
    assert!(Platform::parse(&dtb).unwrap().uart.is_none());
    let dtb = edited(QEMU, |t| {
        set_prop(t, "/chosen", "stdout-path", b"serial7\0".to_vec());
    });
    assert!(Platform::parse(&dtb).unwrap().uart.is_none());
    // A path without unit address still finds the node.
    let dtb = edited(QEMU, |t| {
        set_prop(t, "/chosen", "stdout-path", b"/pl011:9600\0".to_vec());
    });
    let uart = Platform::parse(&dtb).unwrap().uart.unwrap();
    assert_eq!(uart.base.start, Pa(0x900_0000));
    assert_eq!(uart.options.as_deref(), Some("9600"));
}

#[test]
fn synthetic_pci() {
    let p = Platform::parse(SYNTHETIC).unwrap();
    let pci = &p.pci[0];
    assert_eq!(pci.ecam, r(0x3000_0000, 0x100_0000));
    assert_eq!(pci.bus_range, (0, 15));
    assert_eq!(pci.domain, Some(1));
    assert_eq!(pci.windows.len(), 3);
    assert_eq!(pci.windows[2].space, PciSpace::Mem32);
    assert!(pci.windows[2].prefetchable);
    assert_eq!(pci.windows[2].cpu, r(0xe000_0000, 0x1000_0000));
    // Bus 0 -> 0x10000 + devfn, bus 1 -> 0x20000 + devfn, bus 2 unmapped.
    assert_eq!(pci.stream_id(0x0008), Some(0x1_0008));
    assert_eq!(pci.stream_id(0x01ff), Some(0x2_00ff));
    assert_eq!(pci.stream_id(0x0200), None);
    assert_eq!(pci.rid_for_stream(0x2_00ff), Some(0x01ff));
    assert_eq!(pci.rid_for_stream(0x1_0100), None);
    assert_eq!(
        pci.bdf_for_stream(0x1_000a).unwrap(),
        Bdf {
            bus: 0,
            device: 1,
            function: 2
        }
    );
    assert_eq!(p.pci_host(1).map(|h| h.ecam), Some(pci.ecam));
    assert!(p.pci_host(0).is_none());
}

#[test]
fn synthetic_chosen() {
    let p = Platform::parse(SYNTHETIC).unwrap();
    assert_eq!(
        p.chosen.bootargs.as_deref(),
        Some("console=ttyAMA0 crashkernel=256M")
    );
    assert_eq!(p.chosen.portcullis_bootargs.as_deref(), Some("log=debug"));
    // A 32-bit start and a 64-bit end.
    assert_eq!(
        p.chosen.initrd,
        Some(PhysRange::from_bounds(0x4880_0000, 0x4900_0000))
    );
    // One-cell root: <addr size>.
    assert_eq!(p.chosen.kernel, Some(r(0x4820_0000, 0x60_0000)));
    assert_eq!(p.model.as_deref(), Some("Portcullis synthetic test board"));
}

#[test]
fn two_cell_kernel_property() {
    let dtb = edited(QEMU, |t| {
        set_prop(
            t,
            "/chosen",
            "portcullis,kernel",
            cells(&[0, 0x4020_0000, 0, 0x200_0000]),
        );
    });
    let p = Platform::parse(&dtb).unwrap();
    assert_eq!(p.chosen.kernel, Some(r(0x4020_0000, 0x200_0000)));
}

#[test]
fn linux_usable_memory_overrides_reg() {
    let dtb = edited(QEMU, |t| {
        set_prop(
            t,
            "/memory@40000000",
            "linux,usable-memory",
            cells(&[0, 0x5000_0000, 0, 0x100_0000]),
        );
    });
    let p = Platform::parse(&dtb).unwrap();
    assert_eq!(p.memory, [r(0x5000_0000, 0x100_0000)]);
}

#[test]
fn id_map_rules() {
    let map = IdMap {
        entries: vec![
            IdMapEntry {
                id_base: 0x100,
                target: 1,
                out_base: 0x1000,
                length: 0x100,
            },
            // Overlaps the first: the first entry wins for 0x100..0x200.
            IdMapEntry {
                id_base: 0x0,
                target: 2,
                out_base: 0x0,
                length: 0x400,
            },
        ],
        mask: 0xffff,
    };
    assert_eq!(map.map(0x105), Some((1, 0x1005)));
    assert_eq!(map.map(0x005), Some((2, 0x5)));
    assert_eq!(map.map(0x1_0105), Some((1, 0x1005)), "id is masked");
    assert_eq!(map.map(0x400), None);
    assert_eq!(map.unmap(0x1005, None), Some(0x105));
    assert_eq!(map.unmap(0x1005, Some(2)), None);
    // 0x105 on target 2 would come from id 0x105, which maps to target 1 instead.
    assert_eq!(map.unmap(0x105, Some(2)), None);
    assert_eq!(map.unmap(0x5, Some(2)), Some(0x5));
    // Overflowing entries do not panic.
    let wide = IdMap {
        entries: vec![IdMapEntry {
            id_base: 0,
            target: 1,
            out_base: u32::MAX,
            length: u32::MAX,
        }],
        mask: u32::MAX,
    };
    assert_eq!(wide.map(0), Some((1, u32::MAX)));
    assert_eq!(wide.map(1), None);
}

#[test]
fn bdf_round_trip_and_format() {
    for rid in [0u16, 0x0008, 0x00ff, 0x0100, 0xfffa, 0xffff] {
        assert_eq!(Bdf::from_rid(rid).rid(), rid);
    }
    assert_eq!(Bdf::from_rid(0xfffa).to_string(), "ff:1f.2");
    assert_eq!(
        Bdf {
            bus: 0,
            device: 3,
            function: 0
        }
        .to_string(),
        "00:03.0"
    );
}

#[test]
fn dtb_slice_accepts_longer_buffers() {
    let mut padded = QEMU.to_vec();
    padded.resize(QEMU.len() + 4096, 0xaa);
    assert_eq!(
        Platform::parse(&padded).unwrap(),
        Platform::parse(QEMU).unwrap()
    );
    assert_eq!(dtb_total_size(QEMU).unwrap(), QEMU.len());
}

// --- error paths ---

#[test]
fn empty_short_and_garbage_blobs() {
    assert_eq!(
        parse_err(&[]),
        DtError::Truncated {
            needed: 40,
            available: 0
        }
    );
    assert_eq!(
        parse_err(&QEMU[..6]),
        DtError::Truncated {
            needed: 40,
            available: 6
        }
    );
    assert_eq!(
        parse_err(b"this is not a device tree at all, clearly"),
        DtError::NotADeviceTree {
            magic: u32::from_be_bytes(*b"this")
        }
    );
    let e = parse_err(&QEMU[..QEMU.len() - 1]);
    assert_eq!(
        e,
        DtError::Truncated {
            needed: QEMU.len(),
            available: QEMU.len() - 1
        }
    );
    assert!(e.to_string().contains("truncated"));
    let mut tiny = QEMU[..40].to_vec();
    tiny[4..8].copy_from_slice(&8u32.to_be_bytes());
    assert!(matches!(
        parse_err(&tiny),
        DtError::Truncated {
            needed: 40,
            available: 8
        }
    ));
}

#[test]
fn corrupted_structure_is_malformed() {
    let mut dtb = QEMU.to_vec();
    let off_struct = u32::from_be_bytes(dtb[8..12].try_into().unwrap()) as usize;
    dtb[off_struct..off_struct + 4].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    let e = parse_err(&dtb);
    assert!(matches!(e, DtError::Malformed(_)), "{e:?}");
    assert!(e.to_string().starts_with("malformed device tree"));
}

#[test]
fn missing_memory() {
    let dtb = edited(QEMU, |t| {
        t.root.remove_child("memory@40000000").unwrap();
    });
    let e = parse_err(&dtb);
    assert_eq!(e, DtError::NoMemory);
    assert!(e.to_string().contains("memory"));
    // A memory node with an empty reg is no memory either.
    let dtb = edited(QEMU, |t| set_prop(t, "/memory@40000000", "reg", Vec::new()));
    assert_eq!(parse_err(&dtb), DtError::NoMemory);
    // Nor a disabled one.
    let dtb = edited(QEMU, |t| {
        set_prop(t, "/memory@40000000", "status", b"disabled\0".to_vec())
    });
    assert_eq!(parse_err(&dtb), DtError::NoMemory);
}

#[test]
fn bad_reg_lengths() {
    let dtb = edited(QEMU, |t| {
        set_prop(t, "/memory@40000000", "reg", cells(&[0, 0x4000_0000, 0]))
    });
    let e = parse_err(&dtb);
    assert_eq!(
        e,
        DtError::BadReg {
            path: "/memory@40000000".into(),
            len: 12,
            address_cells: 2,
            size_cells: 2
        }
    );
    assert!(e.to_string().contains("/memory@40000000"));

    // Not a whole number of cells, on a device Portcullis does not otherwise use.
    let dtb = edited(QEMU, |t| set_prop(t, "/pl031@9010000", "reg", vec![0; 17]));
    assert!(matches!(parse_err(&dtb), DtError::BadReg { len: 17, .. }));

    // Under a bus with 1+1 cells.
    let dtb = edited(QEMU, |t| {
        let bus = t.find_node_mut("/platform-bus@c000000").unwrap();
        let mut dev = DeviceTreeNode::new("dev@0").unwrap();
        dev.add_property(DeviceTreeProperty::new("reg", cells(&[0, 0x100, 0])).unwrap());
        bus.add_child(dev);
    });
    assert!(matches!(
        parse_err(&dtb),
        DtError::BadReg {
            address_cells: 1,
            size_cells: 1,
            len: 12,
            ..
        }
    ));
}

#[test]
fn bad_cells() {
    let dtb = edited(QEMU, |t| set_prop(t, "/", "#address-cells", cells(&[5])));
    assert!(matches!(
        parse_err(&dtb),
        DtError::BadCells {
            property: "#address-cells",
            ..
        }
    ));
    let dtb = edited(QEMU, |t| {
        set_prop(t, "/intc@8000000", "#size-cells", vec![0, 2])
    });
    assert_eq!(
        parse_err(&dtb),
        DtError::BadCells {
            path: "/intc@8000000".into(),
            property: "#size-cells"
        }
    );
}

#[test]
fn bad_ranges() {
    let dtb = edited(QEMU, |t| {
        set_prop(t, "/platform-bus@c000000", "ranges", cells(&[0, 0, 1]))
    });
    assert!(matches!(
        parse_err(&dtb),
        DtError::BadRanges {
            len: 12,
            entry_cells: 4,
            ..
        }
    ));
}

#[test]
fn untranslatable_device() {
    // The ITS is outside the GIC's only window.
    let dtb = edited(QEMU, |t| {
        set_prop(
            t,
            "/intc@8000000",
            "ranges",
            cells(&[0, 0, 0, 0x800_0000, 0, 0x1_0000]),
        )
    });
    let e = parse_err(&dtb);
    assert_eq!(
        e,
        DtError::Untranslatable {
            path: "/intc@8000000/its@8080000".into(),
            address: 0x808_0000
        }
    );
    // Without ranges the children are not memory-mapped at all.
    let dtb = edited(QEMU, |t| {
        t.find_node_mut("/intc@8000000")
            .unwrap()
            .remove_property("ranges");
    });
    assert!(matches!(parse_err(&dtb), DtError::Untranslatable { .. }));
}

#[test]
fn bad_psci_method() {
    let dtb = edited(QEMU, |t| {
        set_prop(t, "/psci", "method", b"magic\0".to_vec())
    });
    let e = parse_err(&dtb);
    assert!(matches!(
        e,
        DtError::BadProperty {
            property: "method",
            ..
        }
    ));
    assert!(e.to_string().contains("smc"));
    let dtb = edited(QEMU, |t| {
        t.find_node_mut("/psci").unwrap().remove_property("method");
    });
    assert!(matches!(
        parse_err(&dtb),
        DtError::MissingProperty {
            property: "method",
            ..
        }
    ));
}

#[test]
fn bad_chosen_properties() {
    let dtb = edited(QEMU, |t| {
        set_prop(
            t,
            "/chosen",
            "linux,initrd-start",
            cells(&[0, 0, 0x4800_0000]),
        );
        set_prop(t, "/chosen", "linux,initrd-end", cells(&[0x4900_0000]));
    });
    assert!(matches!(
        parse_err(&dtb),
        DtError::BadProperty {
            property: "linux,initrd-start",
            ..
        }
    ));
    let dtb = edited(QEMU, |t| {
        set_prop(t, "/chosen", "linux,initrd-start", cells(&[0x4900_0000]));
        set_prop(t, "/chosen", "linux,initrd-end", cells(&[0x4800_0000]));
    });
    assert!(matches!(
        parse_err(&dtb),
        DtError::BadProperty {
            property: "linux,initrd-end",
            ..
        }
    ));
    let dtb = edited(QEMU, |t| {
        set_prop(t, "/chosen", "linux,initrd-start", cells(&[0x4900_0000]))
    });
    assert!(matches!(
        parse_err(&dtb),
        DtError::MissingProperty {
            property: "linux,initrd-end",
            ..
        }
    ));
    let dtb = edited(QEMU, |t| {
        set_prop(t, "/chosen", "portcullis,kernel", cells(&[0x4020_0000]))
    });
    assert!(matches!(
        parse_err(&dtb),
        DtError::BadProperty {
            property: "portcullis,kernel",
            ..
        }
    ));
    let dtb = edited(QEMU, |t| {
        set_prop(t, "/chosen", "bootargs", b"no terminator".to_vec())
    });
    assert!(matches!(
        parse_err(&dtb),
        DtError::BadProperty {
            property: "bootargs",
            ..
        }
    ));
    let dtb = edited(QEMU, |t| {
        set_prop(t, "/chosen", "bootargs", b"bad \xff utf8\0".to_vec())
    });
    assert!(matches!(
        parse_err(&dtb),
        DtError::BadProperty {
            property: "bootargs",
            ..
        }
    ));
}

#[test]
fn bad_pci_properties() {
    let dtb = edited(QEMU, |t| {
        set_prop(t, "/pcie@10000000", "bus-range", cells(&[4, 2]))
    });
    assert!(matches!(
        parse_err(&dtb),
        DtError::BadProperty {
            property: "bus-range",
            ..
        }
    ));
    let dtb = edited(QEMU, |t| {
        set_prop(t, "/pcie@10000000", "iommu-map", cells(&[0, 0x8007, 0]))
    });
    assert!(matches!(
        parse_err(&dtb),
        DtError::BadProperty {
            property: "iommu-map",
            ..
        }
    ));
    let dtb = edited(QEMU, |t| {
        set_prop(t, "/pcie@10000000", "ranges", cells(&[0x0100_0000, 0]))
    });
    assert!(matches!(parse_err(&dtb), DtError::BadRanges { .. }));
}

#[test]
fn address_overflow() {
    let dtb = edited(QEMU, |t| {
        set_prop(
            t,
            "/memory@40000000",
            "reg",
            cells(&[0xffff_ffff, 0xffff_0000, 0, 0x1_0000]),
        )
    });
    assert!(matches!(parse_err(&dtb), DtError::AddressOverflow { .. }));
    let dtb = edited(QEMU, |t| {
        set_prop(
            t,
            "/pl031@9010000",
            "reg",
            cells(&[0xffff_ffff, 0, 0xffff_ffff, 0]),
        )
    });
    assert!(matches!(parse_err(&dtb), DtError::AddressOverflow { .. }));
}

#[test]
fn duplicate_nodes() {
    // Rename one node to its sibling's name in place (same length), which dtoolkit's model cannot
    // represent and dtc would refuse.
    let mut dtb = QEMU.to_vec();
    let needle = b"virtio_mmio@a000200\0";
    let pos = dtb.windows(needle.len()).position(|w| w == needle).unwrap();
    dtb[pos..pos + needle.len()].copy_from_slice(b"virtio_mmio@a000000\0");
    let e = parse_err(&dtb);
    assert_eq!(
        e,
        DtError::Duplicate {
            path: "/".into(),
            what: "node",
            name: "virtio_mmio@a000000".into()
        }
    );
}

#[test]
fn too_deep() {
    let dtb = edited(QEMU, |t| {
        let mut node = DeviceTreeNode::new("n").unwrap();
        for _ in 0..MAX_DEPTH + 2 {
            let mut parent = DeviceTreeNode::new("n").unwrap();
            parent.add_child(node);
            node = parent;
        }
        t.root.add_child(node);
    });
    assert!(matches!(parse_err(&dtb), DtError::TooDeep { .. }));
}

#[test]
fn bad_interrupts() {
    let dtb = edited(QEMU, |t| {
        set_prop(t, "/smmuv3@9050000", "interrupts", cells(&[0, 0x4a]))
    });
    assert!(matches!(
        parse_err(&dtb),
        DtError::BadProperty {
            property: "interrupts",
            ..
        }
    ));
    let dtb = edited(QEMU, |t| {
        set_prop(
            t,
            "/smmuv3@9050000",
            "interrupts-extended",
            cells(&[0x9999, 0, 1, 1]),
        )
    });
    assert!(matches!(
        parse_err(&dtb),
        DtError::BadProperty {
            property: "interrupts-extended",
            ..
        }
    ));
    let dtb = edited(QEMU, |t| {
        set_prop(t, "/intc@8000000", "#interrupt-cells", cells(&[0]))
    });
    assert!(matches!(
        parse_err(&dtb),
        DtError::BadCells {
            property: "#interrupt-cells",
            ..
        }
    ));
}

#[test]
fn disabled_smmu_is_not_taken() {
    let dtb = edited(QEMU, |t| {
        set_prop(t, "/smmuv3@9050000", "status", b"disabled\0".to_vec())
    });
    assert!(Platform::parse(&dtb).unwrap().smmu.is_none());
}

#[test]
fn error_messages() {
    let errors = [
        DtError::Truncated {
            needed: 40,
            available: 3,
        },
        DtError::NotADeviceTree { magic: 0 },
        DtError::TooDeep {
            path: "/a/b".into(),
        },
        DtError::Duplicate {
            path: "/".into(),
            what: "node",
            name: "x".into(),
        },
        DtError::NoMemory,
        DtError::BadCells {
            path: "/x".into(),
            property: "#size-cells",
        },
        DtError::BadReg {
            path: "/x".into(),
            len: 3,
            address_cells: 2,
            size_cells: 2,
        },
        DtError::BadRanges {
            path: "/x".into(),
            len: 3,
            entry_cells: 6,
        },
        DtError::BadProperty {
            path: "/x".into(),
            property: "p",
            reason: "because",
        },
        DtError::MissingProperty {
            path: "/x".into(),
            property: "reg",
        },
        DtError::AddressOverflow {
            path: "/x".into(),
            property: "reg",
        },
        DtError::Untranslatable {
            path: "/x".into(),
            address: 0x1234,
        },
    ];
    for e in errors {
        let msg = e.to_string();
        assert!(msg.len() > 20, "{msg}");
    }
}

// --- never panic ---

fn corrupt(base: &[u8], edits: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    let mut dtb = base.to_vec();
    for &(pos, byte) in edits {
        let i = pos % dtb.len();
        dtb[i] = byte;
    }
    if let Some(cut) = cut {
        dtb.truncate(cut % (dtb.len() + 1));
    }
    dtb
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Platform::parse(&bytes);
    }

    #[test]
    fn random_bytes_with_header_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        total in 0u32..600,
        offsets in proptest::collection::vec(0u32..600, 4),
    ) {
        let mut dtb = Vec::new();
        dtb.extend_from_slice(&FDT_MAGIC.to_be_bytes());
        dtb.extend_from_slice(&total.to_be_bytes());
        for o in &offsets {
            dtb.extend_from_slice(&o.to_be_bytes());
        }
        dtb.extend_from_slice(&17u32.to_be_bytes());
        dtb.extend_from_slice(&16u32.to_be_bytes());
        dtb.extend_from_slice(&body);
        let _ = Platform::parse(&dtb);
    }

    #[test]
    fn corrupted_fixture_never_panics(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in proptest::option::of(any::<usize>()),
        which in 0usize..3,
    ) {
        let base = [QEMU, QEMU_GICV2, SYNTHETIC][which];
        let _ = Platform::parse(&corrupt(base, &edits, cut));
    }

    /// Corruptions confined to the structure block reach the property decoders rather than the
    /// header checks.
    #[test]
    fn corrupted_structure_never_panics(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        which in 0usize..3,
    ) {
        let base = [QEMU, QEMU_GICV2, SYNTHETIC][which];
        let off = u32::from_be_bytes(base[8..12].try_into().unwrap()) as usize;
        let strings = u32::from_be_bytes(base[12..16].try_into().unwrap()) as usize;
        let span = strings - off;
        let edits: Vec<(usize, u8)> = edits.iter().map(|&(p, b)| (off + p % span, b)).collect();
        let _ = Platform::parse(&corrupt(base, &edits, None));
    }

}

proptest! {
    // Each case round-trips the tree through dtoolkit's model, which is slow in debug builds.
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Random property values on the nodes Portcullis reads.
    #[test]
    fn random_property_values_never_panic(
        node in 0usize..8,
        prop in 0usize..12,
        value in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let nodes = ["/", "/memory@40000000", "/intc@8000000", "/intc@8000000/its@8080000",
            "/smmuv3@9050000", "/pcie@10000000", "/chosen", "/cpus/cpu@1"];
        let props = ["reg", "ranges", "#address-cells", "#size-cells", "interrupts",
            "interrupt-parent", "iommu-map", "bus-range", "stdout-path", "linux,initrd-start",
            "portcullis,kernel", "#interrupt-cells"];
        let dtb = edited(QEMU, |t| set_prop(t, nodes[node], props[prop], value));
        let _ = Platform::parse(&dtb);
    }
}

fn device<'a>(p: &'a Platform, path: &str) -> &'a DeviceNode {
    p.devices
        .iter()
        .find(|d| d.path == path)
        .unwrap_or_else(|| panic!("{path} not discovered"))
}

#[test]
fn qemu_virt_devices() {
    let p = Platform::parse(QEMU).unwrap();
    // Memory, CPUs, /chosen and friends are not devices; nodes without MMIO (timer, PMU, PSCI,
    // gpio-keys, the fixed clock) are not listed.
    for d in &p.devices {
        assert!(!d.path.starts_with("/cpus"), "{}", d.path);
        assert!(!d.path.starts_with("/memory"), "{}", d.path);
        assert!(!d.regs.is_empty() || !d.windows.is_empty(), "{}", d.path);
    }
    for absent in [
        "/timer",
        "/pmu",
        "/psci",
        "/gpio-keys",
        "/apb-pclk",
        "/chosen",
    ] {
        assert!(p.devices.iter().all(|d| d.path != absent), "{absent}");
    }

    let fw_cfg = device(&p, "/fw-cfg@9020000");
    assert_eq!(fw_cfg.compatible, ["qemu,fw-cfg-mmio"]);
    assert_eq!(fw_cfg.regs, [r(0x0902_0000, 0x18)]);
    assert!(fw_cfg.available);
    assert_eq!(fw_cfg.status, None);

    let virtio: Vec<_> = p
        .devices
        .iter()
        .filter(|d| d.is_compatible("virtio,mmio"))
        .collect();
    assert_eq!(virtio.len(), 32);
    assert_eq!(virtio[0].regs, [r(0x0a00_0000, 0x200)]);
    assert_eq!(virtio[31].regs, [r(0x0a00_3e00, 0x200)]);

    // The dynamic sysbus: no reg, one window.
    let bus = device(&p, "/platform-bus@c000000");
    assert!(bus.regs.is_empty());
    assert_eq!(bus.windows, [r(0x0c00_0000, 0x200_0000)]);
    assert_eq!(bus.compatible, ["qemu,platform", "simple-bus"]);

    // The GIC with both frames, and its ITS through `ranges;` (identity: no windows).
    let gic = device(&p, "/intc@8000000");
    assert_eq!(
        gic.regs,
        [r(0x0800_0000, 0x1_0000), r(0x080a_0000, 0xf6_0000)]
    );
    assert!(gic.windows.is_empty());
    let its = device(&p, "/intc@8000000/its@8080000");
    assert_eq!(its.regs, [r(0x0808_0000, 0x2_0000)]);
    let gic_index = p.devices.iter().position(|d| d.path == gic.path);
    assert_eq!(its.parent, gic_index);

    // The PCI host: ECAM as reg, I/O, MMIO32 and MMIO64 windows as CPU ranges.
    let pci = device(&p, "/pcie@10000000");
    assert_eq!(pci.device_type.as_deref(), Some("pci"));
    assert_eq!(pci.regs, [r(0x40_1000_0000, 0x1000_0000)]);
    assert_eq!(
        pci.windows,
        [
            r(0x3eff_0000, 0x1_0000),
            r(0x1000_0000, 0x2eff_0000),
            r(0x80_0000_0000, 0x80_0000_0000)
        ]
    );
    assert_eq!(
        device(&p, "/flash@0").regs,
        [r(0, 0x400_0000), r(0x400_0000, 0x400_0000)]
    );
    assert_eq!(device(&p, "/pl011@9000000").regs, [r(0x0900_0000, 0x1000)]);
    assert_eq!(
        device(&p, "/smmuv3@9050000").regs,
        [r(0x0905_0000, 0x2_0000)]
    );
}

#[test]
fn synthetic_devices_translate_and_inherit_status() {
    let dtb = edited(SYNTHETIC, |t| {
        let soc = t.find_node_mut("/soc").unwrap();
        soc.add_property(DeviceTreeProperty::new("status", "disabled").unwrap());
    });
    for (dtb, soc_available) in [(SYNTHETIC.to_vec(), true), (dtb, false)] {
        let p = Platform::parse(&dtb).unwrap();
        // Through two levels of non-identity ranges.
        let v2m = device(&p, "/soc/interrupt-controller@1000000/v2m@80000");
        assert_eq!(v2m.regs, [r(0x1108_0000, 0x1000)]);
        assert_eq!(v2m.available, soc_available);
        let uart = device(&p, "/soc/serial@2000000");
        assert_eq!(uart.regs, [r(0x1200_0000, 0x100)]);
        assert_eq!(uart.compatible, ["ns16550a"]);
        assert_eq!(uart.available, soc_available);
        let soc = device(&p, "/soc");
        assert_eq!(soc.windows, [r(0x1000_0000, 0x800_0000)]);
        assert_eq!(
            soc.status.as_deref(),
            (!soc_available).then_some("disabled")
        );
        // An I2C device's reg is a bus address, not MMIO; reserved memory is not a device.
        assert!(p.devices.iter().all(|d| !d.path.contains("eeprom")));
        assert!(
            p.devices
                .iter()
                .all(|d| !d.path.contains("reserved-memory"))
        );
        let pci = device(&p, "/pcie@30000000");
        assert_eq!(pci.regs, [r(0x3000_0000, 0x100_0000)]);
        assert_eq!(pci.windows.len(), 3);
        assert!(pci.available);
    }
}

/// `status` as Linux reads it: dtoolkit's `okay`, and the older `ok`, with or without the NUL
/// (FDT padding supplies it to Linux's `strcmp`); anything else is unavailable.
#[test]
fn status_spellings() {
    for (value, available) in [
        (&b"okay\0"[..], true),
        (b"ok\0", true),
        (b"okay", true),
        (b"ok", true),
        (b"disabled\0", false),
        (b"fail-sss\0", false),
        (b"okay-ish\0", false),
        (b"", false),
    ] {
        let dtb = edited(QEMU, |t| {
            set_prop(t, "/pl011@9000000", "status", value.to_vec());
        });
        let p = Platform::parse(&dtb).unwrap();
        assert_eq!(
            device(&p, "/pl011@9000000").available,
            available,
            "status {value:?}"
        );
    }
}

/// `compatible` is read as one string list everywhere (dtoolkit's reading: up to the first
/// malformed string), so the parser's choice of a node agrees with [`DeviceNode::compatible`].
#[test]
fn compatible_stops_at_a_malformed_string() {
    let dtb = edited(QEMU, |t| {
        set_prop(
            t,
            "/smmuv3@9050000",
            "compatible",
            b"x\xff\0arm,smmu-v3\0".to_vec(),
        );
    });
    let p = Platform::parse(&dtb).unwrap();
    assert_eq!(p.smmu, None);
    assert!(!device(&p, "/smmuv3@9050000").is_compatible("arm,smmu-v3"));
}

/// A node is found by its exact name first (`/chosen` before `/chosen@0`, as Linux and the host-tree
/// rewrite find it); dtoolkit's `Node::child` alone would take the first of either.
#[test]
fn lookup_prefers_the_exact_name() {
    let dtb = edited(QEMU, |t| {
        let mut first = DeviceTreeNode::new("chosen@0").unwrap();
        first.add_property(DeviceTreeProperty::new("bootargs", "first").unwrap());
        // The model keeps insertion order: put the new node before /chosen.
        let chosen = t.root.remove_child("chosen").unwrap();
        t.root.add_child(first);
        t.root.add_child(chosen);
        set_prop(t, "/chosen", "bootargs", b"exact\0".to_vec());
    });
    let p = Platform::parse(&dtb).unwrap();
    assert_eq!(p.chosen.bootargs.as_deref(), Some("exact"));
    // Without the exact name, the unit address does not matter.
    let dtb = edited(QEMU, |t| {
        let chosen = t.root.remove_child("chosen").unwrap();
        let mut renamed = DeviceTreeNode::new("chosen@1").unwrap();
        for prop in chosen.properties() {
            renamed.add_property(prop.clone());
        }
        renamed.add_property(DeviceTreeProperty::new("bootargs", "renamed").unwrap());
        t.root.add_child(renamed);
    });
    let p = Platform::parse(&dtb).unwrap();
    assert_eq!(p.chosen.bootargs.as_deref(), Some("renamed"));
}

#[test]
fn duplicates_found_in_few_and_many_names() {
    let mut few = ["b", "a", "c", "a"];
    assert_eq!(first_duplicate(&mut few), Some("a"));
    let mut none = ["b", "a", "c"];
    assert_eq!(first_duplicate(&mut none), None);
    let mut many: Vec<String> = (0..100).map(|i| format!("n{i}")).collect();
    assert_eq!(first_duplicate(&mut many), None);
    many.push(String::from("n42"));
    assert_eq!(first_duplicate(&mut many), Some("n42"));
}
