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
}
