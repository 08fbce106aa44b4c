use alloc::string::ToString;
use alloc::vec;

use proptest::prelude::*;

use super::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn r(start: u64, size: u64) -> PhysRange {
    PhysRange::new(start, size).unwrap()
}

fn taken(kind: TakenKind, start: u64, size: u64) -> Taken {
    Taken::new(kind, r(start, size))
}

fn auto(size: u64) -> CrashRequest {
    CrashRequest { size, base: None }
}

fn fixed(size: u64, base: u64) -> CrashRequest {
    CrashRequest {
        size,
        base: Some(Pa(base)),
    }
}

/// QEMU virt with 1 GiB: Portcullis at the top, the kernel low, the initrd above it.
fn qemu_taken() -> Vec<Taken> {
    vec![
        taken(TakenKind::KernelImage, 0x4020_0000, 0x300_0000),
        taken(TakenKind::Initrd, 0x4800_0000, 0x80_0000),
        taken(TakenKind::IncomingDtb, 0x4900_0000, 0x1_0000),
        taken(TakenKind::Portcullis, 0x7e00_0000, 0x200_0000),
    ]
}

const QEMU_RAM: [PhysRange; 1] = [PhysRange::from_bounds(0x4000_0000, 0x8000_0000)];

#[test]
fn size_alone_goes_low_above_what_is_taken() {
    // The first gap that fits: between the kernel image and the initrd.
    let region = place_crash_region(&QEMU_RAM, &qemu_taken(), &auto(64 * MIB)).unwrap();
    assert_eq!(region, r(0x4320_0000, 64 * MIB));
    // Too large for that gap: above the incoming tree.
    let region = place_crash_region(&QEMU_RAM, &qemu_taken(), &auto(128 * MIB)).unwrap();
    assert_eq!(region, r(0x4920_0000, 128 * MIB));
    // Nothing taken: the very bottom.
    assert_eq!(
        place_crash_region(&QEMU_RAM, &[], &auto(64 * MIB)),
        Ok(r(0x4000_0000, 64 * MIB))
    );
}

#[test]
fn size_is_rounded_up() {
    let region = place_crash_region(&QEMU_RAM, &[], &auto(64 * MIB + 1)).unwrap();
    assert_eq!(region, r(0x4000_0000, 66 * MIB));
    let region = place_crash_region(&QEMU_RAM, &[], &fixed(1, 0x4000_0000)).unwrap();
    assert_eq!(region, r(0x4000_0000, 2 * MIB));
}

#[test]
fn unaligned_taken_ranges_push_the_base_up() {
    let t = [taken(TakenKind::Portcullis, 0x4000_0000, 0x1000)];
    let region = place_crash_region(&QEMU_RAM, &t, &auto(64 * MIB)).unwrap();
    assert_eq!(region, r(0x4020_0000, 64 * MIB));
}

#[test]
fn several_banks() {
    let ram = [
        r(0x4000_0000, 0x1000_0000),
        r(0x8000_0000, 0x3000_0000),
        r(0xc000_0000, 0x80_0000),
    ];
    // The low bank fits exactly.
    assert_eq!(
        place_crash_region(&ram, &[], &auto(256 * MIB)),
        Ok(r(0x4000_0000, 256 * MIB))
    );
    // Too large for the low bank: the bottom of the middle one.
    assert_eq!(
        place_crash_region(&ram, &[], &auto(512 * MIB)),
        Ok(r(0x8000_0000, 512 * MIB))
    );
    // The low bank taken in part, the middle one at its bottom: just above that.
    let t = [
        taken(TakenKind::KernelImage, 0x4000_0000, 0x800_0000),
        taken(
            TakenKind::ReservedMemory("/reserved-memory/fw@80000000".into()),
            0x8000_0000,
            0x800_0000,
        ),
    ];
    assert_eq!(
        place_crash_region(&ram, &t, &auto(256 * MIB)),
        Ok(r(0x8800_0000, 256 * MIB))
    );
    // Low bank all taken: the middle bank.
    let t = [taken(TakenKind::Portcullis, 0x4000_0000, 0x1000_0000)];
    assert_eq!(
        place_crash_region(&ram, &t, &auto(128 * MIB)),
        Ok(r(0x8000_0000, 128 * MIB))
    );
    // A region never spans two banks, even if the sizes add up.
    let t = [taken(TakenKind::Portcullis, 0x8000_0000, 0x3000_0000)];
    let e = place_crash_region(&ram, &t, &auto(0x1000_0000 + 4 * MIB)).unwrap_err();
    assert_eq!(
        e,
        PlacementError::TooLarge {
            size: 0x1040_0000,
            largest_gap: 0x1000_0000
        }
    );
    // Adjacent banks are one range.
    let ram = [r(0x4000_0000, 0x1000_0000), r(0x5000_0000, 0x1000_0000)];
    assert_eq!(
        place_crash_region(&ram, &[], &auto(0x1800_0000)),
        Ok(r(0x4000_0000, 0x1800_0000))
    );
}

#[test]
fn four_gib_boundary() {
    let ram = [PhysRange::from_bounds(2 * GIB, 6 * GIB)];
    // Fits below 4 GiB: the lowest spot.
    assert_eq!(
        place_crash_region(&ram, &[], &auto(512 * MIB)),
        Ok(r(2 * GIB, 512 * MIB))
    );
    // Too large to fit below: the lowest anywhere, across the boundary.
    assert_eq!(
        place_crash_region(&ram, &[], &auto(3 * GIB)),
        Ok(r(2 * GIB, 3 * GIB))
    );
    // Low memory almost all taken: what is left below 4 GiB is too small, so the lowest spot
    // anywhere, which crosses the boundary.
    let t = [taken(TakenKind::Portcullis, 2 * GIB, 2 * GIB - 100 * MIB)];
    assert_eq!(
        place_crash_region(&ram, &t, &auto(128 * MIB)),
        Ok(r(4 * GIB - 100 * MIB, 128 * MIB))
    );
    // A request that fits below 4 GiB stays there, even above a low hole.
    assert_eq!(
        place_crash_region(&ram, &t, &auto(64 * MIB)),
        Ok(r(4 * GIB - 100 * MIB, 64 * MIB))
    );
    // RAM only above 4 GiB.
    let ram = [r(0x8_0000_0000, 4 * GIB)];
    assert_eq!(
        place_crash_region(&ram, &[], &auto(GIB)),
        Ok(r(0x8_0000_0000, GIB))
    );
}

#[test]
fn requests_that_do_not_fit() {
    let e = place_crash_region(&QEMU_RAM, &qemu_taken(), &auto(GIB)).unwrap_err();
    assert_eq!(
        e,
        PlacementError::TooLarge {
            size: GIB,
            largest_gap: 0x34ff_0000
        }
    );
    assert!(e.to_string().contains("no free"));
    assert_eq!(
        place_crash_region(&[], &[], &auto(2 * MIB)),
        Err(PlacementError::TooLarge {
            size: 2 * MIB,
            largest_gap: 0
        })
    );
    assert_eq!(
        place_crash_region(&QEMU_RAM, &[], &auto(0)),
        Err(PlacementError::ZeroSize)
    );
    assert_eq!(
        place_crash_region(&QEMU_RAM, &[], &auto(u64::MAX)),
        Err(PlacementError::SizeOverflow { size: u64::MAX })
    );
}

#[test]
fn ram_at_zero_never_gives_base_zero() {
    let ram = [r(0, 64 * MIB)];
    assert_eq!(
        place_crash_region(&ram, &[], &auto(62 * MIB)),
        Ok(r(2 * MIB, 62 * MIB))
    );
    assert!(matches!(
        place_crash_region(&ram, &[], &auto(64 * MIB)),
        Err(PlacementError::TooLarge { .. })
    ));
}

#[test]
fn fixed_base() {
    let t = qemu_taken();
    assert_eq!(
        place_crash_region(&QEMU_RAM, &t, &fixed(64 * MIB, 0x6000_0000)),
        Ok(r(0x6000_0000, 64 * MIB))
    );
    // Right below Portcullis, touching it.
    assert_eq!(
        place_crash_region(&QEMU_RAM, &t, &fixed(32 * MIB, 0x7c00_0000)),
        Ok(r(0x7c00_0000, 32 * MIB))
    );
}

#[test]
fn fixed_base_errors() {
    let t = qemu_taken();
    let e = place_crash_region(&QEMU_RAM, &t, &fixed(64 * MIB, 0x6010_0000)).unwrap_err();
    assert_eq!(
        e,
        PlacementError::BaseMisaligned {
            base: Pa(0x6010_0000),
            align: CRASH_ALIGN
        }
    );
    assert!(e.to_string().contains("0x60100000"));

    let e = place_crash_region(&QEMU_RAM, &t, &fixed(32 * MIB, 0x7e00_0000)).unwrap_err();
    assert_eq!(
        e,
        PlacementError::Overlaps {
            region: r(0x7e00_0000, 32 * MIB),
            with: TakenKind::Portcullis,
            other: r(0x7e00_0000, 0x200_0000)
        }
    );
    assert!(e.to_string().contains("Portcullis' own memory"), "{e}");

    // Overlapping the end of Portcullis' memory from below.
    let e = place_crash_region(&QEMU_RAM, &t, &fixed(64 * MIB, 0x7c00_0000)).unwrap_err();
    assert!(matches!(
        e,
        PlacementError::Overlaps {
            with: TakenKind::Portcullis,
            ..
        }
    ));

    // Overlapping two: the lowest is named.
    let e = place_crash_region(&QEMU_RAM, &t, &fixed(256 * MIB, 0x4000_0000)).unwrap_err();
    assert!(
        matches!(
            e,
            PlacementError::Overlaps {
                with: TakenKind::KernelImage,
                ..
            }
        ),
        "{e:?}"
    );

    // Past the end of RAM, before it, or in a hole between banks.
    let e =
        place_crash_region(&QEMU_RAM, &t, &fixed(64 * MIB, 0x7e00_0000 + 64 * MIB)).unwrap_err();
    assert!(matches!(e, PlacementError::OutsideRam { .. }));
    assert!(e.to_string().contains("not inside RAM"));
    let e = place_crash_region(&QEMU_RAM, &t, &fixed(64 * MIB, 0x3e00_0000)).unwrap_err();
    assert!(matches!(e, PlacementError::OutsideRam { .. }));
    let ram = [r(0x4000_0000, 0x1000_0000), r(0x6000_0000, 0x1000_0000)];
    let e = place_crash_region(&ram, &[], &fixed(64 * MIB, 0x4e00_0000)).unwrap_err();
    assert_eq!(
        e,
        PlacementError::OutsideRam {
            region: r(0x4e00_0000, 64 * MIB)
        }
    );

    let e = place_crash_region(&QEMU_RAM, &t, &fixed(4 * MIB, u64::MAX - 2 * MIB + 1)).unwrap_err();
    assert!(matches!(e, PlacementError::SizeOverflow { .. }));
    assert_eq!(
        place_crash_region(&QEMU_RAM, &t, &fixed(0, 0x6000_0000)),
        Err(PlacementError::ZeroSize)
    );
}

#[test]
fn dtb_stays_where_it_came_in() {
    let t = qemu_taken();
    assert_eq!(
        place_dtb(&QEMU_RAM, &t, 0x1_2000),
        Ok(r(0x4900_0000, 0x1_2000))
    );
}

#[test]
fn dtb_moves_when_its_place_is_taken() {
    let mut t = qemu_taken();
    t.push(taken(TakenKind::CrashRegion, 0x7a00_0000, 64 * MIB));
    // Grown into the next taken range.
    t.push(taken(TakenKind::FaultReport, 0x4901_0000, 0x1000));
    // The highest free 2 MiB block, below the crash region.
    assert_eq!(
        place_dtb(&QEMU_RAM, &t, 0x1_2000),
        Ok(r(0x79e0_0000, 0x1_2000))
    );
    // Its own space is free again, so the original size fits.
    assert_eq!(
        place_dtb(&QEMU_RAM, &t, 0x1_0000),
        Ok(r(0x4900_0000, 0x1_0000))
    );
}

#[test]
fn dtb_does_not_share_a_block_with_portcullis() {
    let t = [
        taken(TakenKind::IncomingDtb, 0x7fe0_0000, 0x1000),
        taken(TakenKind::Portcullis, 0x7ff0_0000, 0x10_0000),
    ];
    assert_eq!(place_dtb(&QEMU_RAM, &t, 0x1000), Ok(r(0x7fc0_0000, 0x1000)));
}

#[test]
fn dtb_misaligned_or_outside_ram() {
    let t = [taken(TakenKind::IncomingDtb, 0x4900_0004, 0x1000)];
    assert_eq!(place_dtb(&QEMU_RAM, &t, 0x1000), Ok(r(0x7fe0_0000, 0x1000)));
    let t = [taken(TakenKind::IncomingDtb, 0x7fff_f000, 0x1000)];
    // The incoming tree's own block is free for the new one.
    assert_eq!(place_dtb(&QEMU_RAM, &t, 0x2000), Ok(r(0x7fe0_0000, 0x2000)));
    let t = [taken(TakenKind::IncomingDtb, 0x1000, 0x1000)];
    assert_eq!(place_dtb(&QEMU_RAM, &t, 0x1000), Ok(r(0x7fe0_0000, 0x1000)));
}

#[test]
fn dtb_errors() {
    assert_eq!(
        place_dtb(&QEMU_RAM, &[], DTB_MAX_SIZE + 1),
        Err(PlacementError::DtbTooLarge {
            size: DTB_MAX_SIZE + 1
        })
    );
    assert_eq!(place_dtb(&QEMU_RAM, &[], 0), Err(PlacementError::ZeroSize));
    let all = [taken(TakenKind::Portcullis, 0x4000_0000, 0x3ff0_0000)];
    assert!(matches!(
        place_dtb(&QEMU_RAM, &all, 0x1000),
        Err(PlacementError::TooLarge { .. })
    ));
}

#[test]
fn taken_from_the_tree() {
    let dtb = include_bytes!("../../../../platform/tests/fixtures/synthetic.dtb");
    let p = Platform::parse(dtb).unwrap();
    let t = platform_taken(&p);
    assert_eq!(
        t,
        [
            taken(TakenKind::MemReserve, 0x4800_0000, MIB),
            taken(
                TakenKind::ReservedMemory("/reserved-memory/firmware@4fe00000".into()),
                0x4fe0_0000,
                2 * MIB
            ),
            Taken::new(
                TakenKind::Initrd,
                PhysRange::from_bounds(0x4880_0000, 0x4900_0000)
            ),
        ]
    );
    assert_eq!(total_ram(&p.memory), 0x4000_0000);
    assert_eq!(total_ram(&[r(0, 0x1000), r(0x800, 0x1000)]), 0x1800);
    let region = place_crash_region(&p.memory, &t, &auto(256 * MIB)).unwrap();
    assert_eq!(region, r(0x8000_0000, 256 * MIB));
    // Asking for the reserved firmware region names it.
    let e = place_crash_region(&p.memory, &t, &fixed(32 * MIB, 0x4e00_0000)).unwrap_err();
    assert!(
        e.to_string()
            .contains("reserved memory /reserved-memory/firmware@4fe00000"),
        "{e}"
    );
}

fn image_header(text_offset: u64, image_size: u64, flags: u64) -> [u8; 64] {
    let mut h = [0u8; 64];
    h[0..4].copy_from_slice(&0x1400_0000u32.to_le_bytes());
    h[8..16].copy_from_slice(&text_offset.to_le_bytes());
    h[16..24].copy_from_slice(&image_size.to_le_bytes());
    h[24..32].copy_from_slice(&flags.to_le_bytes());
    h[56..60].copy_from_slice(b"ARM\x64");
    h
}

#[test]
fn image_header_parse() {
    let h = ImageHeader::parse(&image_header(0, 0x2a3_0000, 0b1010)).unwrap();
    assert_eq!(h.text_offset, 0);
    assert_eq!(h.image_size, 0x2a3_0000);
    assert!(!h.big_endian());
    assert_eq!(h.page_size(), Some(4096));
    assert!(h.placement_anywhere());
    assert_eq!(
        h.footprint(Pa(0x4020_0000), 0x190_0000),
        Some(r(0x4020_0000, 0x2a3_0000))
    );
    // A file larger than the declared size (or no declared size) counts the file.
    assert_eq!(
        h.footprint(Pa(0x4020_0000), 0x300_0000),
        Some(r(0x4020_0000, 0x300_0000))
    );
    assert_eq!(h.footprint(Pa(u64::MAX - 10), 0), None);
    assert_eq!(h.check_load_address(Pa(0x4020_0000)), Ok(()));
    assert_eq!(
        h.check_load_address(Pa(0x4030_0000)),
        Err(ImageError::Misplaced {
            load: Pa(0x4030_0000),
            text_offset: 0
        })
    );

    let old = ImageHeader::parse(&image_header(0x8_0000, 0, 1 | (3 << 1))).unwrap();
    assert!(old.big_endian());
    assert_eq!(old.page_size(), Some(64 << 10));
    assert!(!old.placement_anywhere());
    assert_eq!(old.check_load_address(Pa(0x4028_0000)), Ok(()));
    assert!(old.check_load_address(Pa(0x4000)).is_err());
    assert_eq!(
        ImageHeader::parse(&image_header(0, 0, 2 << 1))
            .unwrap()
            .page_size(),
        Some(16 << 10)
    );
    assert_eq!(
        ImageHeader::parse(&image_header(0, 0, 0))
            .unwrap()
            .page_size(),
        None
    );
}

#[test]
fn image_header_refuses_other_files() {
    let mut h = image_header(0, 0x100_0000, 0);
    h[59] = 0x65;
    let e = ImageHeader::parse(&h).unwrap_err();
    assert_eq!(e, ImageError::BadMagic { found: 0x654d_5241 });
    assert!(e.to_string().contains("not an arm64 Image"));
    assert!(ImageHeader::parse(&[0; 64]).is_err());
    assert!(ImageHeader::parse(&[0xff; 64]).is_err());
}

#[test]
fn messages() {
    let errors = [
        PlacementError::ZeroSize,
        PlacementError::SizeOverflow { size: 1 },
        PlacementError::BaseMisaligned {
            base: Pa(1),
            align: 2,
        },
        PlacementError::OutsideRam { region: r(0, 1) },
        PlacementError::Overlaps {
            region: r(0, 1),
            with: TakenKind::Initrd,
            other: r(0, 1),
        },
        PlacementError::TooLarge {
            size: 1,
            largest_gap: 0,
        },
        PlacementError::DtbTooLarge { size: 1 << 22 },
    ];
    for e in errors {
        assert!(e.to_string().len() > 15, "{e}");
    }
}

// --- properties ---

/// Ranges at 4 KiB granularity in the first 8 GiB.
fn range_strategy(max_size: u64) -> impl Strategy<Value = PhysRange> {
    (0u64..((8 * GIB) >> 12), 1u64..(max_size >> 12)).prop_map(|(s, n)| r(s << 12, n << 12))
}

/// Brute force over every aligned base: the expected bottom-up placement (lowest wholly below
/// 4 GiB, else lowest anywhere).
fn brute_force(ram: &[PhysRange], taken: &[Taken], size: u64) -> Option<PhysRange> {
    let mut low = None;
    let mut any = None;
    let mut base = CRASH_ALIGN;
    while base < 12 * GIB {
        let region = r(base, size);
        if inside_ram(ram, &region) && !taken.iter().any(|t| t.range.overlaps(&region)) {
            if region.end.raw() <= LOW_LIMIT && low.is_none() {
                low = Some(region);
            }
            if any.is_none() {
                any = Some(region);
            }
        }
        base += CRASH_ALIGN;
    }
    low.or(any)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn placement_is_aligned_inside_ram_and_free(
        ram in proptest::collection::vec(range_strategy(3 * GIB), 0..4),
        taken_ranges in proptest::collection::vec(range_strategy(GIB), 0..6),
        size in 1u64..(2 * GIB),
        base in proptest::option::of(prop_oneof![
            (1u64..((8 * GIB) >> 21)).prop_map(|b| b << 21),
            0u64..(8 * GIB),
        ]),
    ) {
        let taken: Vec<Taken> =
            taken_ranges.iter().map(|t| Taken::new(TakenKind::Portcullis, *t)).collect();
        let request = CrashRequest { size, base: base.filter(|b| *b != 0).map(Pa) };
        let rounded = size.next_multiple_of(CRASH_ALIGN);
        match place_crash_region(&ram, &taken, &request) {
            Ok(region) => {
                prop_assert!(region.start.is_aligned(CRASH_ALIGN));
                prop_assert_eq!(region.size(), rounded);
                prop_assert!(region.start.raw() != 0);
                prop_assert!(inside_ram(&ram, &region));
                for t in &taken {
                    prop_assert!(!t.range.overlaps(&region), "{:?} overlaps {:?}", region, t);
                }
                match request.base {
                    Some(b) => prop_assert_eq!(region.start, b),
                    None => prop_assert_eq!(Some(region), brute_force(&ram, &taken, rounded)),
                }
            }
            Err(PlacementError::TooLarge { .. }) => {
                prop_assert!(request.base.is_none());
                prop_assert_eq!(brute_force(&ram, &taken, rounded), None);
            }
            Err(e) => prop_assert!(request.base.is_some(), "{e}"),
        }
    }

    #[test]
    fn dtb_placement_is_free_and_inside_ram(
        ram in proptest::collection::vec(range_strategy(3 * GIB), 1..4),
        taken_ranges in proptest::collection::vec(range_strategy(GIB), 0..6),
        incoming in (0u64..((8 * GIB) >> 3)).prop_map(|a| a << 3),
        size in 1u64..(3 * MIB),
    ) {
        let mut taken: Vec<Taken> =
            taken_ranges.iter().map(|t| Taken::new(TakenKind::Portcullis, *t)).collect();
        taken.push(taken_entry(incoming));
        match place_dtb(&ram, &taken, size) {
            Ok(dtb) => {
                prop_assert!(dtb.start.is_aligned(8));
                prop_assert_eq!(dtb.size(), size);
                prop_assert!(inside_ram(&ram, &dtb));
                for t in taken.iter().filter(|t| t.kind != TakenKind::IncomingDtb) {
                    prop_assert!(!t.range.overlaps(&dtb));
                }
            }
            Err(PlacementError::DtbTooLarge { .. }) => prop_assert!(size > DTB_MAX_SIZE),
            Err(e) => prop_assert!(matches!(e, PlacementError::TooLarge { .. }), "{e}"),
        }
    }
}

fn taken_entry(incoming: u64) -> Taken {
    Taken::new(TakenKind::IncomingDtb, r(incoming, 0x1000))
}

#[test]
fn report_goes_high_and_aligned() {
    let region = place_report(&QEMU_RAM, &qemu_taken()).unwrap();
    // Portcullis takes the top 32 MiB in this layout: the report goes right below it.
    assert_eq!(region, r(0x7e00_0000 - REPORT_SIZE, REPORT_SIZE));
    let region = place_report(&QEMU_RAM, &[]).unwrap();
    assert_eq!(region, r(0x8000_0000 - REPORT_SIZE, REPORT_SIZE));
    assert!(matches!(
        place_report(&[r(0x4000_0000, 0x8000)], &[]),
        Err(PlacementError::TooLarge { .. })
    ));
}
