use alloc::vec;

use platform::addr::Pa;

use super::*;
use crate::stage2::{Access, Mode, Region, cpu_policy, dma_policy};

const QEMU: &[u8] = include_bytes!("../../../../platform/tests/fixtures/qemu-virt-smmuv3.dtb");
const MIB: u64 = 1 << 20;

fn r(start: u64, size: u64) -> PhysRange {
    PhysRange::new(start, size).expect("test range")
}

fn access(regions: &[Region], pa: u64) -> Access {
    regions
        .iter()
        .find(|reg| reg.range.contains(Pa(pa)))
        .map_or(Access::None, |reg| reg.access)
}

/// QEMU virt as the fixture describes it, with Portcullis 2 MiB into RAM (32 MiB), a 64 MiB crash
/// region at the top of RAM and the 64 KiB report below it; the GIC pages Portcullis traps there:
/// the ITS control frame and the first redistributor's RD_base frame.
fn qemu() -> (Platform, DeviceMap, Placed, Vec<PhysRange>) {
    let machine = Platform::parse(QEMU).expect("fixture parses");
    let ram = machine.memory[0];
    let crash = r(ram.end.raw() - 64 * MIB, 64 * MIB);
    let placed = Placed {
        hyp: r(ram.start.raw() + 2 * MIB, 32 * MIB),
        crash: Some(crash),
        report: Some(r(crash.start.raw() - 0x1_0000, 0x1_0000)),
    };
    let devices = DeviceMap::decide(&machine);
    let trapped = vec![r(0x0808_0000, 0x1_0000), r(0x080a_0000, 0x1_0000)];
    (machine, devices, placed, trapped)
}

fn qemu_map() -> AddressMap {
    let (machine, devices, placed, trapped) = qemu();
    assemble(&machine, &devices, &placed, trapped, 48).expect("QEMU virt assembles")
}

#[test]
fn its_doorbell_is_the_translation_frame_page() {
    let (machine, ..) = qemu();
    // QEMU virt's ITS at 0x0808_0000: GITS_TRANSLATER at 0x0809_0040.
    assert_eq!(its_doorbells(&machine), [r(0x0809_0000, 0x1000)]);
    let mut no_gic = machine.clone();
    no_gic.gic = None;
    assert!(its_doorbells(&no_gic).is_empty());
}

#[test]
fn qemu_virt_map_from_the_platform_and_boot() {
    let (machine, devices, placed, trapped) = qemu();
    let map = qemu_map();
    assert_eq!(map.ram, machine.memory);
    assert_eq!(map.hyp, placed.hyp);
    assert_eq!(map.crash, placed.crash);
    assert_eq!(map.report, placed.report);
    assert_eq!(map.smmu, Some(r(0x0905_0000, 0x2_0000)));
    assert_eq!(map.its_doorbells, [r(0x0809_0000, 0x1000)]);
    assert_eq!(map.devices, devices.allowed);
    assert_eq!(map.trapped, trapped);
    // The high ECAM and PCI MMIO64 window (up to 0x100_0000_0000) need 40 bits.
    assert_eq!(map.ipa_bits, 40);
    // A CPU with a 36-bit PA range caps it: device windows beyond are cut off by the policy,
    // not an error.
    assert_eq!(
        assemble(&machine, &devices, &placed, Vec::new(), 36).map(|m| m.ipa_bits),
        Ok(36)
    );
}

#[test]
fn qemu_virt_cpu_policy() {
    let map = qemu_map();
    let normal = cpu_policy(&map, Mode::Normal, true);
    let crash_mode = cpu_policy(&map, Mode::Crash, true);
    let [hyp, crash, report] = [
        map.hyp,
        map.crash.expect("crash region"),
        map.report.expect("report"),
    ];
    for regions in [&normal, &crash_mode] {
        // Emulated and mediated frames trap: the SMMU, the ITS control frame, RD_base.
        for pa in [0x0905_0000, 0x0906_f000, 0x0808_0000, 0x080a_0000] {
            assert_eq!(access(regions, pa), Access::None, "{pa:#x}");
        }
        // Withheld devices are absent: fw_cfg, virtio-mmio, the platform bus.
        for pa in [0x0902_0000, 0x0a00_0000, 0x0a00_3e00, 0x0c00_0000] {
            assert_eq!(access(regions, pa), Access::None, "{pa:#x}");
        }
        // Allowed devices are: the UART, the ITS translation frame, a redistributor's SGI frame,
        // ECAM.
        for pa in [0x0900_0000, 0x0809_0000, 0x080b_0000, 0x40_1000_0000] {
            assert_eq!(access(regions, pa), Access::Device, "{pa:#x}");
        }
        // Portcullis is never the host's.
        assert_eq!(access(regions, hyp.start.raw()), Access::None);
        assert_eq!(access(regions, hyp.end.raw() - 1), Access::None);
    }
    // The report is Portcullis' to write: unmapped in normal mode, read-only for the capture
    // kernel.
    assert_eq!(access(&normal, report.start.raw()), Access::None);
    assert_eq!(access(&crash_mode, report.start.raw()), Access::RO);
    // The crash region: execute-never until the kexec trap, then the capture kernel's.
    assert_eq!(access(&normal, crash.start.raw()), Access::RW);
    assert_eq!(access(&crash_mode, crash.start.raw()), Access::RWX);
    assert_eq!(access(&normal, map.ram[0].start.raw()), Access::RWX);
    assert_eq!(access(&crash_mode, map.ram[0].start.raw()), Access::RO);
}

#[test]
fn qemu_virt_dma_policy() {
    let map = qemu_map();
    let normal = dma_policy(&map, Mode::Normal);
    let crash_mode = dma_policy(&map, Mode::Crash);
    let [hyp, crash, report] = [
        map.hyp,
        map.crash.expect("crash region"),
        map.report.expect("report"),
    ];
    for regions in [&normal, &crash_mode] {
        // The doorbell is the only MMIO a device reaches.
        assert_eq!(access(regions, 0x0809_0000), Access::Device);
        for pa in [
            0x0809_1000,
            0x0808_0000,
            0x0900_0000,
            0x0905_0000,
            0x40_1000_0000,
        ] {
            assert_eq!(access(regions, pa), Access::None, "{pa:#x}");
        }
        for pa in [hyp.start.raw(), report.start.raw()] {
            assert_eq!(access(regions, pa), Access::None, "{pa:#x}");
        }
    }
    assert_eq!(access(&normal, crash.start.raw()), Access::None);
    assert_eq!(access(&crash_mode, crash.start.raw()), Access::RW);
    assert_eq!(access(&normal, map.ram[0].start.raw()), Access::RW);
    assert_eq!(access(&crash_mode, map.ram[0].start.raw()), Access::None);
}

#[test]
fn bad_placements_are_refused() {
    let (machine, devices, placed, trapped) = qemu();
    // A crash region over Portcullis.
    let over_hyp = Placed {
        crash: Some(placed.hyp),
        ..placed
    };
    assert!(matches!(
        assemble(&machine, &devices, &over_hyp, trapped.clone(), 48),
        Err(PolicyError::Overlap { .. })
    ));
    // A report outside RAM.
    let outside = Placed {
        report: Some(r(0x1000, 0x1000)),
        ..placed
    };
    assert_eq!(
        assemble(&machine, &devices, &outside, trapped.clone(), 48),
        Err(PolicyError::ReportOutsideRam(r(0x1000, 0x1000)))
    );
    // Unaligned Portcullis memory.
    let unaligned = Placed {
        hyp: r(placed.hyp.start.raw() + 8, 0x1000),
        ..placed
    };
    assert!(matches!(
        assemble(&machine, &devices, &unaligned, trapped, 48),
        Err(PolicyError::Unaligned { .. })
    ));
}

#[test]
fn never_writable_is_portcullis_and_the_report() {
    let mut map = qemu_map();
    assert_eq!(never_writable(&map), [map.hyp, map.report.expect("report")]);
    map.report = None;
    assert_eq!(never_writable(&map), [map.hyp]);
}

/// QEMU virt with `bootargs`: Portcullis 2 MiB into RAM (32 MiB), the kernel image above it, the
/// incoming tree at the start of RAM.
fn placed_with(bootargs: &str) -> (Platform, Placement) {
    let mut machine = Platform::parse(QEMU).expect("fixture parses");
    machine.chosen.bootargs = Some(bootargs.into());
    let ram = machine.memory[0].start.raw();
    let hyp = r(ram + 2 * MIB, 32 * MIB);
    let footprint = r(ram + 64 * MIB, 48 * MIB);
    let dtb = r(ram, 0x1_0000);
    let placement = place(&machine, hyp, footprint, dtb);
    (machine, placement)
}

#[test]
fn crash_region_and_report_are_placed_clear_of_everything() {
    let (machine, p) = placed_with("console=ttyAMA0 crashkernel=64M");
    let crash = p.placed.crash.expect("crash region");
    let report = p.placed.report.expect("report region");
    assert_eq!(crash.size(), 64 * MIB);
    assert_eq!(report.size(), layout::REPORT_SIZE);
    assert_eq!((p.crash_refused, p.report_refused), (None, None));
    for t in &p.taken {
        if t.kind != TakenKind::CrashRegion {
            assert!(!t.range.overlaps(&crash), "crash region over {t:?}");
        }
        if t.kind != TakenKind::FaultReport {
            assert!(!t.range.overlaps(&report), "report over {t:?}");
        }
    }
    for kind in [
        TakenKind::Portcullis,
        TakenKind::KernelImage,
        TakenKind::IncomingDtb,
        TakenKind::CrashRegion,
        TakenKind::FaultReport,
    ] {
        assert!(p.taken.iter().any(|t| t.kind == kind), "{kind:?} not taken");
    }
    // And the map built from it holds.
    let devices = DeviceMap::decide(&machine);
    let map = assemble(&machine, &devices, &p.placed, Vec::new(), 48).expect("assembles");
    assert_eq!((map.crash, map.report), (Some(crash), Some(report)));
}

#[test]
fn no_crashkernel_no_crash_region_and_no_report() {
    let (_, p) = placed_with("console=ttyAMA0");
    assert_eq!((p.placed.crash, p.placed.report), (None, None));
    assert_eq!((p.crash_refused, p.report_refused), (None, None));
    assert!(
        !p.taken
            .iter()
            .any(|t| matches!(t.kind, TakenKind::CrashRegion | TakenKind::FaultReport))
    );
}

#[test]
fn a_crashkernel_that_cannot_be_had_boots_without_one_and_says_why() {
    let (_, p) = placed_with("crashkernel=lots");
    assert!(matches!(p.crash_refused, Some(NoCrashRegion::Malformed(_))));
    assert_eq!(
        (p.placed.crash, p.placed.report, p.report_refused),
        (None, None, None)
    );
    // Over Portcullis' own memory.
    let (machine, _) = placed_with("");
    let at = machine.memory[0].start.raw() + 2 * MIB;
    let (_, p) = placed_with(&alloc::format!("crashkernel=32M@{at:#x}"));
    assert!(matches!(
        p.crash_refused,
        Some(NoCrashRegion::CannotHonour(PlacementError::Overlaps { .. }))
    ));
    assert_eq!((p.placed.crash, p.placed.report), (None, None));
}
