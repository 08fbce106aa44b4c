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
    let [hyp, crash, report] = [map.hyp, map.crash.unwrap(), map.report.unwrap()];
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
    let [hyp, crash, report] = [map.hyp, map.crash.unwrap(), map.report.unwrap()];
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
    assert_eq!(never_writable(&map), [map.hyp, map.report.unwrap()]);
    map.report = None;
    assert_eq!(never_writable(&map), [map.hyp]);
}
