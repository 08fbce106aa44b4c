//! Where a GIC bus master may write: the device-writable memory of the current mode's DMA policy.

use alloc::vec::Vec;

use platform::addr::{PhysRange, normalize_ranges};

use crate::stage2::{Access, AddressMap, Mode, dma_policy};

/// The memory the current mode's DMA policy lets devices write, as disjoint merged ranges: in
/// normal mode host RAM minus Portcullis' memory, the fault report and the crash region; in crash
/// mode the crash region. The GIC's tables and ITTs must lie wholly inside one of these ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DmaWindow {
    ranges: Vec<PhysRange>,
}

/// Why a table the host named may not be used by the GIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outside {
    /// `start + len` overflows the address space.
    Wraps { start: u64, len: u64 },
    /// Some byte of `[start, start + len)` is not device-writable memory.
    NotWritable { start: u64, len: u64 },
}

impl core::fmt::Display for Outside {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Wraps { start, len } => write!(f, "{start:#x} + {len:#x} wraps"),
            Self::NotWritable { start, len } => write!(
                f,
                "[{start:#x}, +{len:#x}) is not memory the DMA policy lets devices write"
            ),
        }
    }
}

impl DmaWindow {
    /// A window that admits nothing.
    pub const fn empty() -> Self {
        Self { ranges: Vec::new() }
    }

    /// The device-writable part of the DMA policy of `mode` over `map` (ITS doorbells excluded:
    /// they are MMIO).
    pub fn for_mode(map: &AddressMap, mode: Mode) -> Self {
        Self::from_ranges(
            dma_policy(map, mode)
                .into_iter()
                .filter(|r| matches!(r.access, Access::NormalMemory { write: true, .. }))
                .map(|r| r.range)
                .collect(),
        )
    }

    /// A window of exactly `ranges` (merged where they touch).
    pub fn from_ranges(mut ranges: Vec<PhysRange>) -> Self {
        normalize_ranges(&mut ranges);
        Self { ranges }
    }

    /// Checks that every byte of `[start, start + len)` is device-writable. An empty range is
    /// accepted only where its start would be.
    pub fn check(&self, start: u64, len: u64) -> Result<PhysRange, Outside> {
        let range = PhysRange::new(start, len).ok_or(Outside::Wraps { start, len })?;
        let probe = if len == 0 {
            PhysRange::new(start, 1).ok_or(Outside::Wraps { start, len })?
        } else {
            range
        };
        // The ranges are merged, so a range inside the window is inside one of them.
        if self.ranges.iter().any(|w| w.covers(&probe)) {
            Ok(range)
        } else {
            Err(Outside::NotWritable { start, len })
        }
    }

    pub fn ranges(&self) -> &[PhysRange] {
        &self.ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, size: u64) -> PhysRange {
        PhysRange::new(start, size).expect("test range")
    }

    /// QEMU virt-like: 1 GiB of RAM at 1 GiB, Portcullis at +2 MiB, the crash region and the
    /// report near the top.
    pub(crate) fn map() -> AddressMap {
        AddressMap {
            ram: alloc::vec![r(0x4000_0000, 0x4000_0000)],
            hyp: r(0x4020_0000, 0x600_0000),
            crash: Some(r(0x7c00_0000, 0x200_0000)),
            smmu: Some(r(0x0905_0000, 0x2_0000)),
            its_doorbells: alloc::vec![r(0x0809_0000, 0x1000)],
            devices: alloc::vec::Vec::new(),
            trapped: alloc::vec::Vec::new(),
            report: Some(r(0x7e00_0000, 0x1_0000)),
            ipa_bits: 40,
        }
    }

    #[test]
    fn normal_window_is_ram_minus_portcullis_report_and_crash() {
        let w = DmaWindow::for_mode(&map(), Mode::Normal);
        assert!(w.check(0x4000_0000, 0x1000).is_ok());
        assert!(w.check(0x5000_0000, 0x10_0000).is_ok());
        // Inside Portcullis, straddling into it, ending at its first byte (fine), the report, the
        // crash region, past the end of RAM, wrapping.
        assert!(w.check(0x4030_0000, 8).is_err());
        assert!(w.check(0x401f_f000, 0x2000).is_err());
        assert!(w.check(0x401f_f000, 0x1000).is_ok());
        assert!(w.check(0x7e00_0100, 0x10).is_err());
        assert!(w.check(0x7c00_0000, 0x1000).is_err());
        assert!(w.check(0x7bff_f000, 0x2000).is_err());
        assert!(w.check(0x7fff_f000, 0x2000).is_err());
        assert!(matches!(
            w.check(u64::MAX - 0xfff, 0x2000),
            Err(Outside::Wraps { .. })
        ));
        assert!(w.check(0x4030_0000, 0).is_err());
    }

    #[test]
    fn crash_window_is_the_crash_region() {
        let w = DmaWindow::for_mode(&map(), Mode::Crash);
        assert!(w.check(0x7c00_0000, 0x200_0000).is_ok());
        assert!(w.check(0x5000_0000, 0x1000).is_err());
        assert!(w.check(0x7dff_f000, 0x2000).is_err());
        assert_eq!(w.ranges(), &[r(0x7c00_0000, 0x200_0000)]);
    }

    /// The checks that decide, against the policy of a whole address map: the ITT of a MAPD, a
    /// PROPBASER and a PENDBASER, each inside Portcullis, straddling into it, in the report, in the
    /// crash region, and wrapping, in normal mode; in the dump, in crash mode.
    #[test]
    fn itts_and_lpi_tables_against_the_policy() {
        use crate::gic::its_cmd::{self, Limits, Refusal};
        use crate::gic::redist::{Located, RdFrame, RdRefusal, Redistributors};

        let normal = DmaWindow::for_mode(&map(), Mode::Normal);
        let crash = DmaWindow::for_mode(&map(), Mode::Crash);
        let mapd = |itt: u64| its_cmd::ItsCommand::Mapd {
            device: 1,
            size: 15,
            itt,
            valid: true,
        };
        let limits = |w| Limits {
            window: w,
            itt_entry_bytes: 8,
            event_id_bits: 16,
            devices: 1 << 16,
            collections: 64,
            targets: &[0],
            remapped: None,
        };
        // 2^16 entries of 8 bytes: 512 KiB.
        let bad = [
            0x4030_0000,           // inside Portcullis
            0x4020_0000 - 0x1000,  // straddling into it
            0x7e00_0000,           // the report
            0x7dff_0000,           // straddling into the report
            0x7c00_0000,           // the crash region
            0x000f_ffff_ffff_ff00, // wrapping past the top
        ];
        for itt in bad {
            assert!(
                matches!(
                    its_cmd::check(&mapd(itt), &limits(&normal)),
                    Err(Refusal::Itt { .. })
                ),
                "ITT at {itt:#x}"
            );
        }
        assert_eq!(its_cmd::check(&mapd(0x5000_0000), &limits(&normal)), Ok(()));
        assert!(its_cmd::check(&mapd(0x5000_0000), &limits(&crash)).is_err());
        assert_eq!(its_cmd::check(&mapd(0x7c00_0000), &limits(&crash)), Ok(()));

        let frames = alloc::vec![RdFrame {
            rd_base: 0x080a_0000,
            processor: 0,
            vlpis: false,
        }];
        struct Regs([u64; 0x80 / 8]);
        impl crate::gic::redist::PhysRedist for Regs {
            fn read32(&mut self, pa: u64) -> u32 {
                self.0[((pa & 0x7f) / 8) as usize] as u32
            }
            fn write32(&mut self, pa: u64, v: u32) {
                self.0[((pa & 0x7f) / 8) as usize] = u64::from(v);
            }
            fn read64(&mut self, pa: u64) -> u64 {
                self.0[((pa & 0x7f) / 8) as usize]
            }
            fn write64(&mut self, pa: u64, v: u64) {
                self.0[((pa & 0x7f) / 8) as usize] = v;
            }
        }
        let mut rd = Redistributors::new(frames, 16);
        let mut regs = Regs([0; 16]);
        // A pending table is 64 KiB aligned and (here) 64 KiB long: it cannot straddle a 64 KiB
        // boundary, so its straddling case is a property table's.
        let prop_bad: alloc::vec::Vec<u64> = bad.iter().map(|b| b & !0xfff).collect();
        let pend_bad: alloc::vec::Vec<u64> =
            [0x4030_0000, 0x7e00_0000, 0x7c00_0000, 0x000f_ffff_ffff_0000].to_vec();
        for (offset, base, list) in [(0x70usize, 15u64, &prop_bad), (0x78, 0, &pend_bad)] {
            let at = Located {
                index: 0,
                offset,
                vlpi: false,
            };
            for &table in list {
                assert!(
                    matches!(
                        rd.write(at, 8, table | base, &normal, &mut regs),
                        Some(RdRefusal::Table { .. })
                    ),
                    "{offset:#x} at {table:#x}"
                );
            }
            assert_eq!(regs.0[offset / 8], 0);
            assert!(
                rd.write(at, 8, 0x5000_0000 | base, &crash, &mut regs)
                    .is_some()
            );
            assert_eq!(
                rd.write(at, 8, 0x5000_0000 | base, &normal, &mut regs),
                None
            );
        }
    }
}
