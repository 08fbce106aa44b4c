//! The in-place edits of a live stage 2 the fence makes: top-level invalidation (DMA) and the swap
//! to another policy's subtrees (CPU), and the dead CPUs' policy.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use platform::addr::{Ipa, Pa, PhysRange};

use super::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn r(start: u64, size: u64) -> PhysRange {
    PhysRange::new(start, size).expect("test range")
}

/// QEMU virt with 2 GiB of RAM, a crash region and a report region.
fn map(ipa_bits: u32) -> AddressMap {
    AddressMap {
        ram: vec![r(0x4000_0000, 2 * GIB)],
        hyp: r(0x4020_0000, 0x0200_0000),
        crash: Some(r(0x7c00_0000, 64 * MIB)),
        smmu: Some(r(0x0905_0000, 0x2_0000)),
        its_doorbells: vec![r(0x0809_0000, 0x1000)],
        devices: vec![r(0x0900_0000, 0x1000)],
        trapped: Vec::new(),
        report: Some(r(0xbfff_0000, 0x1_0000)),
        ipa_bits,
    }
}

fn leak(t: Stage2Table) -> &'static Stage2Table {
    Box::leak(Box::new(t))
}

/// Pages on and around every boundary of `m`, and a spread over the IPA space.
fn probes(m: &AddressMap) -> Vec<u64> {
    let mut edges: Vec<u64> = vec![0, m.hyp.start.0, m.hyp.end.0];
    for range in m.ram.iter().chain(m.crash.iter()).chain(m.report.iter()) {
        edges.extend([range.start.0, range.end.0]);
    }
    edges.extend(m.smmu.iter().flat_map(|s| [s.start.0, s.end.0]));
    edges.extend(m.its_doorbells.iter().map(|d| d.start.0));
    edges.extend(m.devices.iter().flat_map(|d| [d.start.0, d.end.0]));
    let mut pages = Vec::new();
    for e in edges {
        for p in [e.saturating_sub(PAGE_SIZE), e, e + PAGE_SIZE] {
            pages.push(p & !(PAGE_SIZE - 1));
        }
    }
    pages.extend((0..64).map(|i| (m.ipa_limit() / 64) * i));
    pages.retain(|&p| p < m.ipa_limit());
    pages
}

#[test]
fn invalidating_the_valid_top_entries_unmaps_everything() {
    for bits in [39, 40, 42, 44, 48] {
        let m = map(bits);
        let t = Stage2Table::build(&dma_policy(&m, Mode::Normal), bits, 2).expect("builds");
        let top = t.valid_top_entries();
        // A fixed handful, independent of any stream count: RAM (2 GiB) and the ITS doorbell
        // take at most 3 top-level entries of 1 GiB, or 1 of 512 GiB.
        assert!(!top.is_empty() && top.len() <= 3, "{bits} bits: {top:?}");
        let stores = t.invalidate_top(&top);
        assert_eq!(stores, top.len());
        for p in probes(&m) {
            assert_eq!(
                t.translate(Ipa(p)),
                None,
                "{bits} bits: {p:#x} still mapped"
            );
        }
        assert!(t.valid_top_entries().is_empty());
    }
}

#[test]
fn a_swap_makes_the_live_table_translate_as_the_target() {
    for bits in [39, 40, 43, 44] {
        let m = map(bits);
        let live =
            leak(Stage2Table::build(&cpu_policy(&m, Mode::Normal, true), bits, 1).expect("builds"));
        let dead = leak(Stage2Table::build(&dead_cpu_policy(&m), bits, 1).expect("builds"));
        let root = live.root_pa();
        let swap = live.swap_plan(dead).expect("same geometry");
        // Only the entries over RAM change (MMIO is the same in both policies).
        assert!(
            !swap.is_empty() && swap.len() <= 3,
            "{bits} bits: {}",
            swap.len()
        );
        let broken = live.break_top(&swap);
        assert_eq!(broken, swap.len());
        // Between break and make, whatever the swap changes is unmapped (a walker faults).
        for i in swap.indices() {
            let ipa = i as u64 * live.top_entry_size();
            assert_eq!(
                live.translate(Ipa(ipa)),
                None,
                "{bits} bits: {ipa:#x} during the swap"
            );
        }
        assert_eq!(live.make_top(&swap), swap.len());
        assert_eq!(live.root_pa(), root, "the root itself never moves");
        for p in probes(&m) {
            assert_eq!(
                live.translate(Ipa(p)),
                dead.translate(Ipa(p)),
                "{bits} bits at {p:#x}"
            );
        }
        // Swapping again to the same target changes nothing.
        assert!(live.swap_plan(dead).expect("same geometry").is_empty());
    }
}

#[test]
fn a_swap_plan_needs_the_same_geometry() {
    let live = Stage2Table::build(&[], 40, 1).expect("builds");
    let other = leak(Stage2Table::build(&[], 44, 1).expect("builds"));
    assert!(live.swap_plan(other).is_err());
}

#[test]
fn dead_cpus_write_nothing() {
    let m = map(40);
    let t = Stage2Table::build(&dead_cpu_policy(&m), 40, 1).expect("builds");
    let crash = m.crash.expect("crash region");
    let report = m.report.expect("report region");
    for p in probes(&m) {
        let got = t.translate(Ipa(p)).map(|(_, a)| a);
        let pa = Pa(p);
        if m.hyp.contains(pa) || m.smmu.is_some_and(|s| s.contains(pa)) {
            assert_eq!(got, None, "{p:#x}");
        } else if report.contains(pa) {
            assert_eq!(got, Some(Access::RO), "{p:#x}");
        } else if crash.contains(pa) || m.ram.iter().any(|r| r.contains(pa)) {
            assert_eq!(
                got,
                Some(Access::NormalMemory {
                    read: true,
                    write: false,
                    exec: true
                }),
                "{p:#x}"
            );
        } else if m.devices.iter().any(|d| d.contains(pa)) {
            assert_eq!(got, Some(Access::Device), "{p:#x}");
        } else {
            // Default-deny: MMIO the device map did not allow stays unmapped.
            assert_eq!(got, None, "{p:#x}");
        }
    }
}
