use super::*;
use alloc::collections::BTreeMap;
use alloc::vec;

#[derive(Default)]
struct FakeGicr {
    regs: BTreeMap<u64, u64>,
    writes: Vec<(u64, u64)>,
}

impl PhysRedist for FakeGicr {
    fn read32(&mut self, pa: u64) -> u32 {
        self.read64(pa & !7).wrapping_shr(((pa & 4) * 8) as u32) as u32
    }
    fn write32(&mut self, pa: u64, value: u32) {
        self.writes.push((pa, u64::from(value)));
        if pa & !7 == pa {
            let old = self.read64(pa);
            self.regs
                .insert(pa, (old & !0xffff_ffff) | u64::from(value));
        }
    }
    fn read64(&mut self, pa: u64) -> u64 {
        self.regs.get(&pa).copied().unwrap_or(0)
    }
    fn write64(&mut self, pa: u64, value: u64) {
        self.writes.push((pa, value));
        self.regs.insert(pa, value);
    }
}

const RD0: u64 = 0x080a_0000;

fn frames() -> Vec<RdFrame> {
    // Two CPUs' redistributors, QEMU virt layout.
    let typers = [(0u64, 0u64), (1, 1 << 4)];
    let region = [PhysRange::from_bounds(RD0, RD0 + 0xf6_0000)];
    let mut i = 0;
    enumerate(&region, 512, |pa| {
        assert_eq!(pa, RD0 + 0x2_0000 * i as u64);
        let (cpu, last) = typers[i];
        i += 1;
        1 | (cpu << 8) | last
    })
}

fn window() -> DmaWindow {
    DmaWindow::from_ranges(vec![
        PhysRange::from_bounds(0x4000_0000, 0x4020_0000),
        PhysRange::from_bounds(0x4080_0000, 0x7c00_0000),
    ])
}

fn at(index: usize, offset: usize) -> Located {
    Located {
        index,
        offset,
        vlpi: false,
    }
}

#[test]
fn frames_targets_and_trapped_pages() {
    let f = frames();
    assert_eq!(f.len(), 2);
    assert_eq!(f[1].rd_base, RD0 + 0x2_0000);
    assert_eq!(targets(&f, false), vec![0, 1]);
    assert_eq!(targets(&f, true), vec![RD0 >> 16, (RD0 + 0x2_0000) >> 16]);
    assert_eq!(
        trapped_pages(&f)[1],
        PhysRange::from_bounds(RD0 + 0x2_0000, RD0 + 0x3_0000)
    );
    let r = Redistributors::new(f, 16);
    assert_eq!(r.locate(RD0 + 0x2_0078), Some(at(1, 0x78)));
    assert_eq!(r.locate(RD0 + 0x2_ffe8), Some(at(1, 0xffe8)));
    // SGI_base is the host's.
    assert_eq!(r.locate(RD0 + 0x1_0000), None);
    // A region without Last ends at its end; a hostile-looking huge region is capped.
    let many = enumerate(&[PhysRange::from_bounds(0, 1 << 40)], 8, |_| 0);
    assert_eq!(many.len(), 8);
}

#[test]
fn lpi_tables_must_be_device_writable() {
    let mut r = Redistributors::new(frames(), 16);
    let mut g = FakeGicr::default();
    let w = window();
    // Inside Portcullis, straddling into it, in the crash region / report (outside the window),
    // wrapping: refused, nothing written.
    for (reg, value) in [
        (gicr::PROPBASER, 0x4030_0000 | 15),
        (gicr::PROPBASER, 0x401f_8000 | 15),
        (gicr::PROPBASER, 0x401f_f000 | 15),
        (gicr::PROPBASER, 0x7c00_0000 | 15),
        (gicr::PENDBASER, 0x4030_0000),
        (gicr::PENDBASER, 0x4020_0000),
        (gicr::PENDBASER, 0x7bff_0000 + 0x1_0000),
        (gicr::PENDBASER, 0x000f_ffff_ffff_0000),
    ] {
        let refusal = r.write(at(0, reg), 8, value, &w, &mut g);
        assert!(
            matches!(refusal, Some(RdRefusal::Table { .. })),
            "{value:#x}"
        );
    }
    assert!(g.writes.is_empty());
    // With 24 ID bits the pending table is 2 MiB: at 0x4010_0000 it straddles into Portcullis.
    let mut wide = Redistributors::new(frames(), 24);
    assert!(matches!(
        wide.write(at(0, gicr::PENDBASER), 8, 0x4010_0000, &w, &mut g),
        Some(RdRefusal::Table { .. })
    ));
    assert!(g.writes.is_empty());
    // EnableLPIs before both tables: dropped, the rest of the write passes.
    assert_eq!(
        r.write(at(0, gicr::CTLR), 4, 1 | 2, &w, &mut g),
        Some(RdRefusal::EnableLpis)
    );
    assert_eq!(g.writes, vec![(RD0, 2)]);
    // Good tables: written, then EnableLPIs passes.
    assert_eq!(
        r.write(at(0, gicr::PROPBASER), 8, 0x4800_0000 | 15, &w, &mut g),
        None
    );
    assert_eq!(
        r.write(at(0, gicr::PENDBASER), 8, 0x4801_0000, &w, &mut g),
        None
    );
    assert_eq!(r.write(at(0, gicr::CTLR), 4, 1, &w, &mut g), None);
    assert_eq!(g.read64(RD0) & 1, 1);
    // Once enabled, the registers cannot move.
    assert_eq!(
        r.write(at(0, gicr::PENDBASER), 8, 0x4900_0000, &w, &mut g),
        Some(RdRefusal::WhileEnabled {
            register: "GICR_PENDBASER"
        })
    );
    assert_eq!(g.read64(RD0 + 0x78), 0x4801_0000);
    // Other registers pass through (GICR_WAKER).
    assert_eq!(r.write(at(1, 0x14), 4, 0, &w, &mut g), None);
    assert_eq!(g.writes.last(), Some(&(RD0 + 0x2_0014, 0)));
}

#[test]
fn implementation_defined_registers_are_not_the_hosts() {
    let mut r = Redistributors::new(frames(), 16);
    let mut g = FakeGicr::default();
    g.regs.insert(RD0 + 0xc000, 0x1234);
    g.regs.insert(RD0 + 0xffe8, 0x3b);
    assert_eq!(r.read(at(0, 0xc000), 8, &mut g), 0);
    assert_eq!(r.read(at(0, 0xffe8), 4, &mut g), 0x3b);
    assert_eq!(
        r.write(at(0, 0xc000), 8, 0x4030_0000, &window(), &mut g),
        None
    );
    assert_eq!(r.write(at(0, 0xffe8), 4, 0, &window(), &mut g), None);
    assert!(g.writes.is_empty());
}

#[test]
fn half_writes_are_checked_as_a_whole() {
    let mut r = Redistributors::new(frames(), 16);
    let mut g = FakeGicr::default();
    let w = window();
    assert_eq!(
        r.write(at(0, gicr::PENDBASER), 4, 0x4801_0000, &w, &mut g),
        None
    );
    // The high half moves the table to 0x1_4801_0000: outside RAM.
    assert!(
        r.write(at(0, gicr::PENDBASER + 4), 4, 1, &w, &mut g)
            .is_some()
    );
    assert_eq!(g.read64(RD0 + 0x78), 0x4801_0000);
}

#[test]
fn crash_mode_keeps_only_accepted_tables_of_enabled_redistributors() {
    let mut r = Redistributors::new(frames(), 16);
    let mut g = FakeGicr::default();
    let w = window();
    for i in 0..2 {
        assert_eq!(
            r.write(at(i, gicr::PROPBASER), 8, 0x4800_0000 | 15, &w, &mut g),
            None
        );
        assert_eq!(
            r.write(
                at(i, gicr::PENDBASER),
                8,
                0x4801_0000 + 0x1_0000 * i as u64,
                &w,
                &mut g
            ),
            None
        );
    }
    assert_eq!(r.write(at(0, gicr::CTLR), 4, 1, &w, &mut g), None);
    // The hardware registers say something else (the host cannot do that, but Portcullis must not
    // care): the accepted values count.
    g.regs.insert(RD0 + 0x70, 0x4020_0000 | 31);
    let (keep, skipped) =
        r.enter_crash(&[PhysRange::from_bounds(0x4020_0000, 0x4080_0000)], &mut g);
    assert_eq!(
        keep,
        vec![
            PhysRange::from_bounds(0x4800_0000, 0x4801_0000),
            PhysRange::from_bounds(0x4801_0000, 0x4802_0000)
        ]
    );
    assert!(skipped.is_empty());
    // Redistributor 1 had no EnableLPIs: its values are forgotten, EnableLPIs now needs new ones.
    assert_eq!(
        r.write(at(1, gicr::CTLR), 4, 1, &w, &mut g),
        Some(RdRefusal::EnableLpis)
    );
    // A table overlapping a forbidden range would be skipped.
    let (keep, skipped) =
        r.enter_crash(&[PhysRange::from_bounds(0x4801_0000, 0x4801_1000)], &mut g);
    assert_eq!(keep.len(), 1);
    assert_eq!(skipped.len(), 1);
}

#[test]
fn vlpi_base_writes_are_ignored() {
    let f = vec![RdFrame {
        rd_base: RD0,
        processor: 0,
        vlpis: true,
    }];
    assert_eq!(
        trapped_pages(&f)[1],
        PhysRange::from_bounds(RD0 + 0x2_0000, RD0 + 0x3_0000)
    );
    let mut r = Redistributors::new(f, 16);
    let mut g = FakeGicr::default();
    let loc = r.locate(RD0 + 0x2_0078).expect("VLPI page");
    assert!(loc.vlpi);
    assert_eq!(
        r.write(loc, 8, 0x4030_0000, &window(), &mut g),
        Some(RdRefusal::Virtual)
    );
    assert!(g.writes.is_empty());
}

mod property {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the host writes, in any order and width, the hardware's PROPBASER and
        /// PENDBASER only ever name tables inside the window, and EnableLPIs needs them.
        #[test]
        fn hardware_registers_stay_inside_the_window(
            writes in proptest::collection::vec((0usize..0x100, any::<bool>(), any::<u64>()), 1..64)
        ) {
            let mut r = Redistributors::new(frames(), 16);
            let mut g = FakeGicr::default();
            let w = window();
            for (offset, wide, value) in writes {
                let (size, offset) = if wide { (8, offset & !7) } else { (4, offset & !3) };
                // Aim often at the interesting registers.
                let offset = match offset % 4 {
                    0 => gicr::PROPBASER + (offset & 4),
                    1 => gicr::PENDBASER + (offset & 4),
                    2 => gicr::CTLR,
                    _ => offset,
                };
                let _ = r.write(at(0, offset), size, value, &w, &mut g);
                let prop = g.read64(RD0 + gicr::PROPBASER as u64);
                let pend = g.read64(RD0 + gicr::PENDBASER as u64);
                if let Ok(Some(t)) = lpi::property_table(prop, 16)
                    && prop != 0
                {
                    prop_assert!(w.check(t.start.raw(), t.size()).is_ok(), "PROPBASER {prop:#x}");
                }
                if pend != 0 {
                    let t = lpi::pending_table(pend, 16).expect("no wrap");
                    prop_assert!(w.check(t.start.raw(), t.size()).is_ok(), "PENDBASER {pend:#x}");
                }
                // EnableLPIs only after an accepted PENDBASER (address 0 is outside the window; a
                // PROPBASER of fewer than 14 ID bits names no table and is accepted).
                if g.read64(RD0) & 1 != 0 {
                    prop_assert!(pend != 0);
                }
            }
        }
    }
}
