//! Policies built into tables and walked back, for the QEMU virt map and for random layouts.

use alloc::vec;
use alloc::vec::Vec;

use platform::addr::{Ipa, Pa, PhysRange};
use proptest::prelude::*;

use super::policy::in_any;
use super::table::{idmap_lookup, raw_leaf};
use super::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn r(start: u64, size: u64) -> PhysRange {
    PhysRange::new(start, size).expect("test range")
}

/// QEMU virt: 1 GiB of RAM at 1 GiB, Portcullis in 32 MiB at 0x4020_0000, a 64 MiB crash region at
/// the top of RAM, the SMMUv3 frame at 0x0905_0000, the ITS at 0x0808_0000 (its GITS_TRANSLATER at
/// base + 0x1_0040, so its doorbell page is base + 0x1_0000), 40 IPA bits; the devices the device map
/// allows on QEMU virt (fw_cfg, virtio-mmio and the platform bus withheld, the SMMU emulated).
fn qemu_map() -> AddressMap {
    AddressMap {
        ram: vec![r(0x4000_0000, GIB)],
        hyp: r(0x4020_0000, 0x0200_0000),
        crash: Some(r(0x7c00_0000, 64 * MIB)),
        smmu: Some(r(0x0905_0000, 0x2_0000)),
        its_doorbells: vec![r(0x0809_0000, 0x1000)],
        devices: vec![
            r(0, 0x800_0000),                  // flash, two banks
            r(0x0800_0000, 0x1_0000),          // GIC distributor
            r(0x0808_0000, 0x2_0000),          // ITS
            r(0x080a_0000, 0xf6_0000),         // redistributors
            r(0x0900_0000, 0x1000),            // PL011
            r(0x0901_0000, 0x1000),            // PL031
            r(0x0903_0000, 0x1000),            // PL061
            r(0x1000_0000, 0x2eff_0000),       // PCI MMIO32 window
            r(0x3eff_0000, 0x1_0000),          // PCI I/O window
            r(0x40_1000_0000, 0x1000_0000),    // ECAM
            r(0x80_0000_0000, 0x80_0000_0000), // PCI MMIO64 window
        ],
        trapped: Vec::new(),
        report: None,
        ipa_bits: 40,
    }
}

/// What the architecture table says each address should be, written independently of
/// `policy.rs`: the oracle the built tables are checked against.
fn expected(map: &AddressMap, cpu: bool, mode: Mode, kexec_trap: bool, pa: u64) -> Option<Access> {
    let pa = Pa(pa);
    let in_crash = map.crash.is_some_and(|c| c.contains(pa));
    let in_ram = in_any(&map.ram, pa);
    if pa.0 >= map.ipa_limit()
        || map.hyp.contains(pa)
        || map.smmu.is_some_and(|s| s.contains(pa))
        || in_any(&map.trapped, pa)
    {
        return None;
    }
    match (cpu, mode) {
        (true, Mode::Normal) if in_crash => Some(if kexec_trap { Access::RW } else { Access::RWX }),
        (true, Mode::Normal) if in_ram => Some(Access::RWX),
        (true, Mode::Crash) if in_crash => Some(Access::RWX),
        (true, Mode::Crash) if in_ram => Some(Access::RO),
        (true, _) if in_any(&map.devices, pa) => Some(Access::Device),
        (true, _) => None,
        (false, _) if in_any(&map.its_doorbells, pa) => Some(Access::Device),
        (false, Mode::Normal) if in_ram && !in_crash => Some(Access::RW),
        (false, Mode::Crash) if in_crash => Some(Access::RW),
        (false, _) => None,
    }
}

/// Every page boundary the map defines: first and last page of each range, one page either side.
fn boundary_pages(map: &AddressMap) -> Vec<u64> {
    let mut ranges: Vec<PhysRange> = map.ram.clone();
    ranges.push(map.hyp);
    ranges.extend(map.crash);
    ranges.extend(map.smmu);
    ranges.extend(map.its_doorbells.iter().copied());
    ranges.extend(map.devices.iter().copied());
    ranges.push(PhysRange::from_bounds(0, map.ipa_limit()));
    let mut pages = Vec::new();
    for range in ranges {
        for edge in [range.start.0, range.end.0] {
            let around = [
                edge.checked_sub(2 * PAGE_SIZE),
                edge.checked_sub(PAGE_SIZE),
                Some(edge),
            ];
            for page in around.into_iter().flatten() {
                pages.push(page);
                pages.push(page + PAGE_SIZE - 1);
            }
            pages.push(edge + PAGE_SIZE);
        }
    }
    pages
}

fn check_against_oracle(map: &AddressMap, cpu: bool, mode: Mode, kexec_trap: bool) -> Stage2Table {
    let regions = if cpu {
        cpu_policy(map, mode, kexec_trap)
    } else {
        dma_policy(map, mode)
    };
    let table = Stage2Table::build(&regions, map.ipa_bits, 1).expect("policy builds");
    for pa in boundary_pages(map) {
        let want = expected(map, cpu, mode, kexec_trap, pa);
        let got = table.translate(Ipa(pa));
        assert_eq!(
            got.map(|(_, a)| a),
            want,
            "{} {mode:?} at {pa:#x}",
            if cpu { "CPU" } else { "DMA" }
        );
        if let Some((out, _)) = got {
            assert_eq!(out, Pa(pa), "identity mapping at {pa:#x}");
        }
    }
    table
}

fn access_at(table: &Stage2Table, pa: u64) -> Option<Access> {
    table.translate(Ipa(pa)).map(|(_, access)| access)
}

#[test]
fn qemu_cpu_normal() {
    let map = qemu_map();
    assert_eq!(map.validate(), Ok(()));
    let table = check_against_oracle(&map, true, Mode::Normal, true);
    // Spelled out: the table of ARCHITECTURE.md, column "CPU, normal".
    for (pa, want) in [
        (0x0, Some(Access::Device)),         // flash
        (0x0900_0000, Some(Access::Device)), // PL011
        (0x0809_0000, Some(Access::Device)), // the ITS doorbell is plain MMIO to the CPU
        (0x0902_0000, None),                 // fw_cfg: withheld (DMA outside the SMMU)
        (0x0a00_0000, None),                 // virtio-mmio: withheld
        (0x0c00_0000, None),                 // the dynamic sysbus: withheld
        (0x0903_0000, Some(Access::Device)), // PL061
        (0x0904_f000, None),                 // nothing there: default-deny
        (0x0905_0000, None),                 // SMMU: trapped and emulated
        (0x0906_f000, None),
        (0x0907_0000, None),
        (0x3eff_0000, Some(Access::Device)), // PCI I/O window
        (0x3fff_f000, None),
        (0x4000_0000, Some(Access::RWX)),
        (0x401f_f000, Some(Access::RWX)),
        (0x4020_0000, None), // Portcullis
        (0x421f_f000, None),
        (0x4220_0000, Some(Access::RWX)),
        (0x7bff_f000, Some(Access::RWX)),
        (0x7c00_0000, Some(Access::RW)), // crash region: the kexec trap
        (0x7fff_f000, Some(Access::RW)),
        (0x8000_0000, None),
        (0x40_1000_0000, Some(Access::Device)), // high ECAM
        (0xff_ffff_f000, Some(Access::Device)), // top of the high PCI MMIO window
        (0x100_0000_0000, None),                // outside the 40-bit IPA space
    ] {
        assert_eq!(access_at(&table, pa), want, "at {pa:#x}");
    }
    // Memory types: RAM is Normal WB inner shareable with AF; MMIO is Device-nGnRE, XN, AF.
    let (ram, _) = raw_leaf(&table, 0x4000_0000).expect("RAM mapped");
    assert_eq!((ram >> 2) & 0xf, 0b1111, "MemAttr Normal WB");
    assert_eq!((ram >> 8) & 0b11, 0b11, "SH inner");
    assert_ne!(ram & (1 << 10), 0, "AF");
    assert_eq!(ram & (1 << 54), 0, "RAM executable");
    let (crash, _) = raw_leaf(&table, 0x7c00_0000).expect("crash mapped");
    assert_ne!(crash & (1 << 54), 0, "crash region XN");
    assert_eq!((crash >> 6) & 0b11, 0b11, "crash region S2AP RW");
    let (device, level) = raw_leaf(&table, 0x80_0000_0000).expect("MMIO mapped");
    assert_eq!((device >> 2) & 0xf, 0b0001, "MemAttr Device-nGnRE");
    assert_ne!(device & (1 << 54), 0, "device XN");
    assert_ne!(device & (1 << 10), 0, "device AF");
    assert_eq!(level, 1, "1 GiB blocks for the high MMIO window");
}

#[test]
fn trapped_gic_pages_are_unmapped_for_everyone() {
    let mut map = qemu_map();
    // The ITS control page, a redistributor's RD_base page 0, and (hostile to the policy) a
    // trapped range overlapping the ITS doorbell page and RAM: trapped wins every overlap.
    map.trapped = vec![
        r(0x0808_0000, 0x1000),
        r(0x080a_0000, 0x1000),
        r(0x0809_0000, 0x1000),
        r(0x5000_0000, 0x1000),
    ];
    for mode in [Mode::Normal, Mode::Crash] {
        let cpu = check_against_oracle(&map, true, mode, true);
        let dma = Stage2Table::build(&dma_policy(&map, mode), map.ipa_bits, 2).expect("dma");
        for pa in [0x0808_0000, 0x080a_0000, 0x0809_0000, 0x5000_0000] {
            assert_eq!(access_at(&cpu, pa), None, "CPU at {pa:#x} in {mode:?}");
            assert_eq!(access_at(&dma, pa), None, "DMA at {pa:#x} in {mode:?}");
        }
        // The rest of the ITS and redistributor frames stays plain MMIO for the CPU.
        assert_eq!(access_at(&cpu, 0x0808_1000), Some(Access::Device));
        assert_eq!(access_at(&cpu, 0x080b_0000), Some(Access::Device));
    }
}

#[test]
fn qemu_cpu_normal_without_kexec_trap() {
    let map = qemu_map();
    let table = check_against_oracle(&map, true, Mode::Normal, false);
    assert_eq!(access_at(&table, 0x7c00_0000), Some(Access::RWX));
}

#[test]
fn qemu_cpu_crash() {
    let map = qemu_map();
    let table = check_against_oracle(&map, true, Mode::Crash, true);
    assert_eq!(access_at(&table, 0x4000_0000), Some(Access::RO));
    assert_eq!(access_at(&table, 0x7bff_f000), Some(Access::RO));
    assert_eq!(access_at(&table, 0x7c00_0000), Some(Access::RWX));
    assert_eq!(access_at(&table, 0x4020_0000), None);
    assert_eq!(access_at(&table, 0x0905_0000), None);
    assert_eq!(access_at(&table, 0x0900_0000), Some(Access::Device));
    let (dump, _) = raw_leaf(&table, 0x5000_0000).expect("dump mapped");
    assert_eq!((dump >> 6) & 0b11, 0b01, "S2AP read-only");
    assert_ne!(dump & (1 << 54), 0, "dump XN");
}

#[test]
fn qemu_dma_normal() {
    let map = qemu_map();
    let table = check_against_oracle(&map, false, Mode::Normal, false);
    assert_eq!(access_at(&table, 0x4000_0000), Some(Access::RW));
    assert_eq!(access_at(&table, 0x7bff_f000), Some(Access::RW));
    assert_eq!(
        access_at(&table, 0x7c00_0000),
        None,
        "the loaded capture kernel is protected"
    );
    assert_eq!(access_at(&table, 0x4020_0000), None);
    assert_eq!(access_at(&table, 0x0809_0000), Some(Access::Device));
    assert_eq!(access_at(&table, 0x0808_f000), None);
    assert_eq!(access_at(&table, 0x0809_1000), None);
    assert_eq!(
        access_at(&table, 0x0900_0000),
        None,
        "no MMIO but the doorbell"
    );
    assert_eq!(access_at(&table, 0x0905_0000), None);
}

#[test]
fn qemu_dma_crash() {
    let map = qemu_map();
    let table = check_against_oracle(&map, false, Mode::Crash, false);
    assert_eq!(
        access_at(&table, 0x4000_0000),
        None,
        "the dump is out of reach of DMA"
    );
    assert_eq!(access_at(&table, 0x7c00_0000), Some(Access::RW));
    assert_eq!(access_at(&table, 0x7fff_f000), Some(Access::RW));
    assert_eq!(access_at(&table, 0x0809_0000), Some(Access::Device));
}

#[test]
fn qemu_tables_stay_small() {
    let map = qemu_map();
    for mode in [Mode::Normal, Mode::Crash] {
        let cpu = Stage2Table::build(&cpu_policy(&map, mode, true), 40, 1).expect("builds");
        // Level 0 root + 2 level-1 tables + level 2 for [0, 1 GiB) and [1 GiB, 2 GiB) + level 3
        // for the SMMU's 2 MiB, + 2 pages of concatenated root and 2 of slack: about 10 pages,
        // where a page-by-page map of 1 TiB would need half a million.
        assert!(
            cpu.table_pages() <= 12,
            "{mode:?}: {} pages",
            cpu.table_pages()
        );
        let dma = Stage2Table::build(&dma_policy(&map, mode), 40, 2).expect("builds");
        assert!(
            dma.table_pages() <= 12,
            "{mode:?}: {} pages",
            dma.table_pages()
        );
    }
}

/// QEMU virt with 2 GiB as Portcullis boots it: its memory ends 4 KiB aligned, the crash region
/// and RAM are 2 MiB aligned, the report 64 KiB.
fn qemu_2gib_map() -> AddressMap {
    AddressMap {
        ram: vec![r(0x4000_0000, 2 * GIB)],
        hyp: r(0x4020_0000, 0x4f_8000),
        crash: Some(r(0x4160_0000, 64 * MIB)),
        report: Some(r(0x7fff_0000, 0x1_0000)),
        ..qemu_map()
    }
}

/// The block choice on QEMU virt with 2 GiB, as Portcullis boots it (its memory ends 4 KiB
/// aligned, the crash region and RAM 2 MiB aligned, the report 64 KiB): 1 GiB blocks where a whole
/// GiB has one policy, 2 MiB blocks where a 2 MiB stretch has, pages only at unaligned edges; a
/// handful of tables for the whole map.
#[test]
fn largest_blocks_the_alignment_allows() {
    let map = qemu_2gib_map();
    assert_eq!(map.validate(), Ok(()));
    for (table, cpu) in [
        (
            Stage2Table::build(&cpu_policy(&map, Mode::Normal, true), 40, 1),
            true,
        ),
        (
            Stage2Table::build(&dma_policy(&map, Mode::Normal), 40, 2),
            false,
        ),
    ] {
        let table = table.expect("builds");
        // [2 GiB, 3 GiB) is all host RAM: one 1 GiB block.
        assert_eq!(table.leaf_level(0x8000_0000), Some(1));
        assert_eq!(table.leaf_level(0xbfff_f000), Some(1));
        // 2 MiB-aligned stretches of the first GiB: 2 MiB blocks.
        assert_eq!(table.leaf_level(0x4000_0000), Some(2));
        assert_eq!(table.leaf_level(0x5000_0000), Some(2));
        assert_eq!(table.leaf_level(0x7fc0_0000), Some(2));
        assert_eq!(table.leaf_level(0x7fe0_0000), Some(3));
        // Portcullis' memory ends at 0x406f_8000: pages from there to the next 2 MiB.
        assert_eq!(table.leaf_level(0x406f_7000), None);
        assert_eq!(table.leaf_level(0x406f_8000), Some(3));
        assert_eq!(table.leaf_level(0x407f_f000), Some(3));
        assert_eq!(table.leaf_level(0x4080_0000), Some(2));
        // The report's 64 KiB at the top of the first GiB: pages around it.
        assert_eq!(table.leaf_level(0x7ffe_f000), Some(3));
        assert_eq!(table.leaf_level(0x7fff_0000), None);
        let crash = table.leaf_level(0x4160_0000);
        // CPU: the crash region is mapped (execute-never) in 2 MiB blocks; DMA: unmapped.
        assert_eq!(crash, if cpu { Some(2) } else { None });
        // A dozen pages for 2 GiB and the devices (a page-by-page map would take over 1 000).
        let pages = table.table_pages();
        assert_eq!(pages, if cpu { 14 } else { 11 }, "cpu {cpu}");
    }
}

/// The host's CPU stage 2 with [`Leaves::MemoryPages`] (`stage2::leaves`): every memory address
/// behind a page, devices still in blocks, and every address translated with the same output and
/// access as the block-built table of the same policy.
#[test]
fn memory_pages_translate_as_the_blocks_do() {
    let map = qemu_2gib_map();
    let regions = cpu_policy(&map, Mode::Normal, true);
    let blocks = Stage2Table::build(&regions, 40, 1).expect("blocks");
    let pages = Stage2Table::build_with(&regions, 40, 1, Leaves::MemoryPages).expect("pages");
    for ipa in [
        0x4000_0000,
        0x406f_8000,
        0x4160_0000,
        0x7fe0_0000,
        0x8000_0000,
        0xbfff_f000,
    ] {
        assert_eq!(pages.leaf_level(ipa), Some(3), "{ipa:#x}");
    }
    assert_eq!(pages.leaf_level(0x7fff_0000), None);
    // Devices: the MMIO64 window in 1 GiB blocks, the PCI MMIO32 window in 2 MiB blocks.
    assert_eq!(pages.leaf_level(0x80_0000_0000), Some(1));
    assert_eq!(pages.leaf_level(0x1000_0000), Some(2));
    // One last-level page per 2 MiB of the 2 GiB, and the few the blocks need.
    assert!(pages.table_pages() > 1024, "{}", pages.table_pages());
    assert!(pages.table_pages() < 1024 + 20, "{}", pages.table_pages());
    // Same translation everywhere: every 4 KiB page of RAM and the devices below 4 GiB, and
    // the edges of each region.
    let mut ipas: Vec<u64> = (0..(1u64 << 32)).step_by(PAGE_SIZE as usize).collect();
    for region in &regions {
        let (start, end) = (region.range.start.raw(), region.range.end.raw());
        ipas.extend([start, start + 0x123, end - 1, end]);
    }
    for ipa in ipas {
        assert_eq!(
            pages.translate(Ipa(ipa)),
            blocks.translate(Ipa(ipa)),
            "{ipa:#x}"
        );
        for (write, exec) in [(false, false), (true, false), (false, true)] {
            assert_eq!(
                pages.permits(Ipa(ipa), write, exec),
                blocks.permits(Ipa(ipa), write, exec),
                "{ipa:#x} write {write} exec {exec}"
            );
        }
    }
}

#[test]
fn several_ram_banks() {
    let map = AddressMap {
        ram: vec![
            r(0x4000_0000, 512 * MIB),
            r(0x6000_0000, 512 * MIB),
            r(0x1_0000_0000, 2 * GIB),
        ],
        hyp: r(0x4000_0000, 16 * MIB),
        crash: Some(r(0x1_6000_0000, 256 * MIB)),
        smmu: Some(r(0x0905_0000, 0x2_0000)),
        its_doorbells: vec![r(0x0809_0000, 0x1000), r(0x0829_0000, 0x1000)],
        devices: vec![r(0x0809_0000, 0x1000), r(0x8000_0000, 2 * GIB)],
        trapped: Vec::new(),
        report: None,
        ipa_bits: 40,
    };
    assert_eq!(map.validate(), Ok(()));
    for mode in [Mode::Normal, Mode::Crash] {
        check_against_oracle(&map, true, mode, true);
        check_against_oracle(&map, false, mode, false);
    }
    let table = Stage2Table::build(&cpu_policy(&map, Mode::Normal, true), 40, 1).expect("builds");
    // The hole between the banks is a device here; the two touching low banks map as one.
    assert_eq!(access_at(&table, 0x8000_0000), Some(Access::Device));
    assert_eq!(access_at(&table, 0xffff_f000), Some(Access::Device));
    assert_eq!(access_at(&table, 0x5fff_f000), Some(Access::RWX));
    assert_eq!(access_at(&table, 0x6000_0000), Some(Access::RWX));
    assert_eq!(access_at(&table, 0x1_5fff_f000), Some(Access::RWX));
    assert_eq!(access_at(&table, 0x1_6000_0000), Some(Access::RW));
    assert_eq!(access_at(&table, 0x1_7000_0000), Some(Access::RWX));
    let dma = Stage2Table::build(&dma_policy(&map, Mode::Normal), 40, 1).expect("builds");
    assert_eq!(access_at(&dma, 0x0829_0000), Some(Access::Device));
}

#[test]
fn unaligned_region_edges() {
    // 4 KiB aligned, never 2 MiB aligned: every edge needs level-3 tables.
    let map = AddressMap {
        ram: vec![r(0x4000_3000, GIB - 0x8000), r(0x9000_1000, 0x10_0000)],
        hyp: r(0x4020_1000, 0x1ff_f000),
        crash: Some(r(0x7c00_5000, 0x3ff_0000)),
        smmu: Some(r(0x0905_1000, 0x1_f000)),
        its_doorbells: vec![r(0x0809_0000, 0x1000)],
        devices: vec![r(0x0900_1000, 0x1000), r(0x0905_0000, 0x3000)],
        trapped: Vec::new(),
        report: None,
        ipa_bits: 40,
    };
    assert_eq!(map.validate(), Ok(()));
    for mode in [Mode::Normal, Mode::Crash] {
        for kexec_trap in [false, true] {
            check_against_oracle(&map, true, mode, kexec_trap);
        }
        check_against_oracle(&map, false, mode, false);
    }
}

#[test]
fn policies_never_map_partial_pages_of_an_unvalidated_map() {
    // Not validated (unaligned): holes widen, RAM narrows, so no page of Portcullis or the SMMU
    // frame is ever reachable.
    let map = AddressMap {
        ram: vec![r(0x4000_0800, GIB - 0x1000)],
        hyp: r(0x4020_0800, 0x1000),
        crash: None,
        smmu: Some(r(0x0905_0800, 0x800)),
        its_doorbells: vec![r(0x0809_0040, 4)],
        devices: vec![r(0x0905_0000, 0x2000), r(0x4000_0000, 0x1000)],
        trapped: Vec::new(),
        report: None,
        ipa_bits: 40,
    };
    assert!(map.validate().is_err());
    let cpu = Stage2Table::build(&cpu_policy(&map, Mode::Normal, true), 40, 1).expect("builds");
    for pa in [
        0x4020_0000,
        0x4020_1000,
        0x0905_0000,
        0x4000_0000,
        0x7fff_f000,
    ] {
        assert_eq!(access_at(&cpu, pa), None, "at {pa:#x}");
    }
    assert_eq!(access_at(&cpu, 0x4000_1000), Some(Access::RWX));
    let dma = Stage2Table::build(&dma_policy(&map, Mode::Normal), 40, 1).expect("builds");
    assert_eq!(
        access_at(&dma, 0x0809_0000),
        Some(Access::Device),
        "doorbell page widened"
    );
}

#[test]
fn build_rejects_bad_region_lists() {
    let rw = |start, size| Region {
        range: r(start, size),
        access: Access::RW,
    };
    assert_eq!(
        Stage2Table::build(&[rw(0x1000, 0x2000), rw(0x2000, 0x1000)], 40, 1).map(|_| ()),
        Err(PolicyError::Overlap {
            first: r(0x1000, 0x2000),
            second: r(0x2000, 0x1000)
        })
    );
    assert!(matches!(
        Stage2Table::build(&[rw(0x1800, 0x1000)], 40, 1),
        Err(PolicyError::Unaligned { .. })
    ));
    assert!(matches!(
        Stage2Table::build(&[rw(0xff_ffff_f000, 0x2000)], 40, 1),
        Err(PolicyError::OutsideIpaSpace { .. })
    ));
    assert!(matches!(
        Stage2Table::build(&[], 31, 1),
        Err(PolicyError::UnsupportedIpaBits(31))
    ));
    assert!(matches!(
        Stage2Table::build(&[], 49, 1),
        Err(PolicyError::UnsupportedIpaBits(49))
    ));
    // `Access::None` regions are allowed anywhere and map nothing.
    let none = Region {
        range: r(0x1000, 0x1000),
        access: Access::None,
    };
    let table = Stage2Table::build(&[rw(0x1000, 0x1000), none], 40, 1).expect("builds");
    assert_eq!(access_at(&table, 0x1000), Some(Access::RW));
}

#[test]
fn tables_can_be_shared_between_cpus() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Stage2Table>();
}

#[test]
fn geometry_and_registers() {
    for (bits, level, tables) in [
        (32, 1, 1),
        (39, 1, 1),
        (40, 1, 2),
        (42, 1, 8),
        (43, 1, 16),
        (44, 0, 1),
        (48, 0, 1),
    ] {
        let top = (1u64 << bits) - PAGE_SIZE;
        let regions = [Region {
            range: r(top, PAGE_SIZE),
            access: Access::RW,
        }];
        let table = Stage2Table::build(&regions, bits, 7).expect("builds");
        assert_eq!(
            (table.start_level(), table.root_tables()),
            (level, tables),
            "{bits} bits"
        );
        let root = table.root_pa().0;
        assert_eq!(
            root % (PAGE_SIZE * tables as u64),
            0,
            "root aligned to its size"
        );
        assert_eq!(table.vttbr(), root | 7 << 48);
        assert_eq!(
            table.translate(Ipa(top + 0x123)),
            Some((Pa(top + 0x123), Access::RW))
        );
        assert_eq!(table.translate(Ipa(top - 1)), None);
        assert_eq!(table.translate(Ipa(top + PAGE_SIZE)), None);
    }

    // VTCR_EL2 for 40 IPA bits, PS = 0b010 (40-bit PA), 8-bit VMIDs, from the field layout:
    //   T0SZ  [5:0]   = 64 - 40 = 24                     0x0000_0018
    //   SL0   [7:6]   = 0b01, start at level 1 (4K)      0x0000_0040
    //   IRGN0 [9:8]   = 0b01, WB RA WA                   0x0000_0100
    //   ORGN0 [11:10] = 0b01, WB RA WA                   0x0000_0400
    //   SH0   [13:12] = 0b11, inner shareable            0x0000_3000
    //   TG0   [15:14] = 0b00, 4 KiB                      0x0000_0000
    //   PS    [18:16] = 0b010                            0x0002_0000
    //   VS    [19]    = 0, 8-bit VMID                    0x0000_0000
    //   bit 31 RES1                                      0x8000_0000
    //                                            total = 0x8002_3558
    let table40 = Stage2Table::build(&[], 40, 1).expect("builds");
    assert_eq!(table40.vtcr(0b010, false), 0x8002_3558);
    // VTCR_EL2 for 48 IPA bits, PS = 0b101 (48-bit PA), 16-bit VMIDs:
    //   T0SZ = 16 (0x10), SL0 = 0b10, start at level 0 (0x80), IRGN0/ORGN0/SH0 as above (0x3500),
    //   PS = 0b101 (0x5_0000), VS = 1 (0x8_0000), RES1 (0x8000_0000)          = 0x800D_3590
    let table48 = Stage2Table::build(&[], 48, 1).expect("builds");
    assert_eq!(table48.vtcr(0b101, true), 0x800D_3590);
    // 39 bits: T0SZ 25, level-1 start, one table.
    let table39 = Stage2Table::build(&[], 39, 1).expect("builds");
    assert_eq!(table39.vtcr(0b010, false), 0x8002_3559);
}

#[test]
fn concatenated_root_matches_aarch64_paging() {
    // The hardware-visible walk (concatenated level-1 root for 40..=43 bits) and aarch64-paging's
    // own walk of the tables it built agree on every boundary of the QEMU map.
    for bits in [40, 42, 43, 44] {
        let mut map = qemu_map();
        map.ipa_bits = bits;
        let table = Stage2Table::build(&cpu_policy(&map, Mode::Normal, true), bits, 1).expect("ok");
        for pa in boundary_pages(&map) {
            // Attribute bits only: the address bits [47:12] are compared through `translate`.
            let ours = raw_leaf(&table, pa).map(|(descriptor, _)| descriptor & !0xffff_ffff_f000);
            let theirs = idmap_lookup(&table, pa).map(|(flags, _)| flags);
            assert_eq!(ours, theirs, "{bits} bits at {pa:#x}");
            let pa_ours = table.translate(Ipa(pa)).map(|(out, _)| out.0);
            assert_eq!(pa_ours, idmap_lookup(&table, pa).map(|(_, out)| out));
        }
    }
}

// Random region layouts: page-granular runs whose sizes favour 2 MiB and 1 GiB multiples and odd
// offsets, so that blocks, pages and every split between them get exercised.
fn layout() -> impl Strategy<Value = (u32, Vec<Region>)> {
    let size = prop_oneof![
        1u64..64,
        (1u64..8).prop_map(|n| n * 512),
        (1u64..4).prop_map(|n| n * 512 + 1),
        (1u64..3).prop_map(|n| n * 512 * 512),
        (1u64..3).prop_map(|n| n * 512 * 512 - 3),
    ];
    let access = prop_oneof![
        Just(Access::RWX),
        Just(Access::RW),
        Just(Access::RO),
        Just(Access::Device),
        Just(Access::None),
        Just(Access::NormalMemory {
            read: false,
            write: true,
            exec: true
        }),
    ];
    let run = (size.clone(), size, access);
    (
        prop_oneof![Just(36u32), Just(39), Just(40), Just(42), Just(44)],
        prop::collection::vec(run, 1..12),
    )
        .prop_map(|(bits, runs)| {
            let limit_pages = 1u64 << (bits - 12);
            let mut regions = Vec::new();
            let mut page = 0u64;
            for (gap, len, access) in runs {
                let start = page + gap;
                let end = (start + len).min(limit_pages);
                if start >= end {
                    break;
                }
                regions.push(Region {
                    range: PhysRange::from_bounds(start * PAGE_SIZE, end * PAGE_SIZE),
                    access,
                });
                page = end;
            }
            (bits, regions)
        })
}

fn lookup(regions: &[Region], ipa: u64) -> Option<Access> {
    regions
        .iter()
        .find(|r| r.range.contains(Pa(ipa)) && r.access != Access::None)
        .map(|r| r.access)
}

fn random_map() -> impl Strategy<Value = AddressMap> {
    // One or two RAM banks with Portcullis and the crash region inside the first, page-granular.
    (
        1u64..0x8000,       // first bank start, in pages above 1 GiB
        0x800u64..0x4_0000, // first bank size, pages
        0u64..0x400,        // hyp offset
        1u64..0x2000,       // hyp size
        proptest::option::of((0u64..0x1000, 1u64..0x8000)), // crash offset from hyp end, size
        proptest::option::of(1u64..0x10000), // second bank: gap, pages
        0u64..0x4_0000,     // SMMU page below 1 GiB
        prop_oneof![Just(40u32), Just(42), Just(44)],
        prop::collection::vec((0u64..0x2000_0000, 1u64..0x400), 0..4), // device pages, anywhere
    )
        .prop_map(
            |(bank, size, hyp_off, hyp_size, crash, bank2, smmu, bits, devices)| {
                let page = |p: u64| p * PAGE_SIZE;
                let start = GIB + page(bank);
                let hyp = r(start + page(hyp_off), page(hyp_size));
                let mut ram = vec![r(start, page(size + hyp_off + hyp_size + 0x9000))];
                let crash = crash.map(|(off, len)| r(hyp.end.0 + page(off), page(len)));
                if let Some(gap) = bank2 {
                    ram.push(r(ram[0].end.0 + page(gap), 0x4000_0000));
                }
                AddressMap {
                    ram,
                    hyp,
                    crash,
                    smmu: Some(r(page(smmu), 0x2_0000)),
                    its_doorbells: vec![r(page(smmu) + 0x4_0000, PAGE_SIZE)],
                    devices: devices
                        .into_iter()
                        .map(|(p, n)| r(page(p), page(n)))
                        .collect(),
                    trapped: Vec::new(),
                    report: None,
                    ipa_bits: bits,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn translate_agrees_with_region_list((bits, regions) in layout(), probes in prop::collection::vec(any::<u64>(), 64)) {
        let table = Stage2Table::build(&regions, bits, 3).expect("disjoint aligned regions build");
        let limit = 1u64 << bits;
        let mut addresses: Vec<u64> = probes.iter().map(|p| p % limit).collect();
        for region in &regions {
            let (s, e) = (region.range.start.0, region.range.end.0);
            addresses.extend([s, s + 1, e - 1, e, s.wrapping_sub(1)]);
        }
        for ipa in addresses.into_iter().filter(|a| *a < limit) {
            let want = lookup(&regions, ipa);
            let got = table.translate(Ipa(ipa));
            prop_assert_eq!(got.map(|(_, a)| a), want, "at {:#x}", ipa);
            if let Some((pa, _)) = got {
                prop_assert_eq!(pa, Pa(ipa));
            }
        }
    }

    #[test]
    fn random_maps_follow_the_architecture_table(map in random_map(), probes in prop::collection::vec(any::<u64>(), 32)) {
        prop_assume!(map.validate().is_ok());
        let mut pages = boundary_pages(&map);
        pages.extend(probes.iter().map(|p| p % map.ipa_limit()));
        for (cpu, mode, kexec_trap) in [
            (true, Mode::Normal, true),
            (true, Mode::Normal, false),
            (true, Mode::Crash, true),
            (false, Mode::Normal, false),
            (false, Mode::Crash, false),
        ] {
            let regions = if cpu { cpu_policy(&map, mode, kexec_trap) } else { dma_policy(&map, mode) };
            let table = Stage2Table::build(&regions, map.ipa_bits, 1).expect("policy builds");
            for &pa in &pages {
                prop_assert_eq!(
                    access_at(&table, pa),
                    expected(&map, cpu, mode, kexec_trap, pa),
                    "cpu {} {:?} at {:#x}", cpu, mode, pa
                );
            }
        }
    }
}

#[test]
fn devices_never_win_over_ram_holes_or_the_crash_region() {
    // A tree whose device ranges cover everything: only the device map's pages are devices, and
    // RAM, Portcullis, the SMMU frame, the crash region and the report keep their own policy.
    let mut map = qemu_map();
    map.report = Some(r(0x7b00_0000, 0x1_0000));
    map.devices = vec![r(0, 0x100_0000_0000)];
    assert_eq!(map.validate(), Ok(()));
    for mode in [Mode::Normal, Mode::Crash] {
        let table = check_against_oracle(&map, true, mode, true);
        assert_eq!(access_at(&table, 0x0905_0000), None, "SMMU");
        assert_eq!(access_at(&table, 0x4020_0000), None, "Portcullis");
        assert_ne!(
            access_at(&table, 0x7c00_0000),
            Some(Access::Device),
            "crash region"
        );
        assert_ne!(
            access_at(&table, 0x7b00_0000),
            Some(Access::Device),
            "report"
        );
        assert!(access_at(&table, 0x4000_0000).is_some());
        assert_ne!(access_at(&table, 0x4000_0000), Some(Access::Device), "RAM");
        assert_eq!(access_at(&table, 0x0902_0000), Some(Access::Device));
    }
    // Device pages past the IPA space are cut off, not an error.
    map.devices = vec![r(0xff_ffff_0000, 0x2_0000)];
    assert_eq!(map.validate(), Ok(()));
    let table = check_against_oracle(&map, true, Mode::Normal, true);
    assert_eq!(access_at(&table, 0xff_ffff_f000), Some(Access::Device));
    // Without device pages, nothing outside RAM is mapped at all.
    map.devices.clear();
    let table = check_against_oracle(&map, true, Mode::Normal, true);
    for pa in [0, 0x0900_0000, 0x3eff_0000, 0x80_0000_0000] {
        assert_eq!(access_at(&table, pa), None, "{pa:#x}");
    }
}

#[test]
fn fault_report_region_per_mode() {
    let mut map = qemu_map();
    let report = r(0x7b00_0000, 0x1_0000);
    map.report = Some(report);
    let normal = Stage2Table::build(&cpu_policy(&map, Mode::Normal, true), map.ipa_bits, 1)
        .expect("table builds");
    let crash = Stage2Table::build(&cpu_policy(&map, Mode::Crash, true), map.ipa_bits, 3)
        .expect("table builds");
    let first = Ipa(report.start.raw());
    let last = Ipa(report.end.raw() - PAGE_SIZE);
    // Normal mode: Portcullis' alone; the pages around it are ordinary RAM.
    assert_eq!(normal.translate(first), None);
    assert_eq!(normal.translate(last), None);
    assert_eq!(
        normal.translate(Ipa(report.end.raw())).map(|t| t.1),
        Some(Access::RWX)
    );
    assert_eq!(
        normal
            .translate(Ipa(report.start.raw() - PAGE_SIZE))
            .map(|t| t.1),
        Some(Access::RWX)
    );
    // Crash mode: the capture kernel reads it, like the rest of the dump, but cannot write it.
    assert_eq!(crash.translate(first).map(|t| t.1), Some(Access::RO));
    assert_eq!(crash.translate(last).map(|t| t.1), Some(Access::RO));
    // Never reachable by DMA, in either mode.
    for mode in [Mode::Normal, Mode::Crash] {
        let dma =
            Stage2Table::build(&dma_policy(&map, mode), map.ipa_bits, 2).expect("table builds");
        assert_eq!(dma.translate(first), None, "{mode:?}");
        assert_eq!(dma.translate(last), None, "{mode:?}");
    }
}

#[test]
fn crash_mode_keeps_hardware_tables_writable() {
    let map = qemu_map();
    let crash = cpu_policy(&map, Mode::Crash, true);
    // An LPI configuration table in the dump, and a "table" the capture kernel must not get:
    // Portcullis' own memory.
    let prop = r(0x5000_0000, 0x1_0000);
    let sneaky = map.hyp;
    let widened = with_writable(&crash, &[prop, sneaky]);
    let table = Stage2Table::build(&widened, map.ipa_bits, 3).expect("table builds");
    assert_eq!(
        table.translate(Ipa(prop.start.raw())).map(|t| t.1),
        Some(Access::RW)
    );
    assert_eq!(
        table
            .translate(Ipa(prop.end.raw() - PAGE_SIZE))
            .map(|t| t.1),
        Some(Access::RW)
    );
    // Around it, the dump stays read-only.
    assert_eq!(
        table.translate(Ipa(prop.end.raw())).map(|t| t.1),
        Some(Access::RO)
    );
    assert_eq!(
        table
            .translate(Ipa(prop.start.raw() - PAGE_SIZE))
            .map(|t| t.1),
        Some(Access::RO)
    );
    // Nothing unmapped became reachable, nothing else changed.
    assert_eq!(table.translate(Ipa(sneaky.start.raw())), None);
    let crash_region = map.crash.expect("qemu map has a crash region");
    assert_eq!(
        table.translate(Ipa(crash_region.start.raw())).map(|t| t.1),
        Some(Access::RWX)
    );
}
