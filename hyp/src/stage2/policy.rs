//! The stage-2 policies of ARCHITECTURE.md "Modes and policies", as plain region lists.
//!
//! | region                 | CPU, normal           | DMA, normal    | CPU, crash | DMA, crash     |
//! |------------------------|-----------------------|----------------|------------|----------------|
//! | Portcullis' own memory | unmapped              | unmapped       | unmapped   | unmapped       |
//! | crash region           | RW, XN (kexec trap)   | unmapped       | RWX        | RW             |
//! | rest of host RAM       | RWX                   | RW             | read-only  | unmapped       |
//! | SMMU MMIO              | unmapped (emulated)   | —              | unmapped   | —              |
//! | allowed device MMIO    | device RW             | ITS doorbells  | device RW  | ITS doorbells  |
//! | trapped GIC MMIO       | unmapped (mediated)   | —              | unmapped   | —              |
//! | everything else        | unmapped              | unmapped       | unmapped   | unmapped       |
//!
//! Device MMIO is default-deny: the CPU gets Device-nGnRE only on [`AddressMap::devices`], the
//! pages of the devices the host needs and that cannot write memory behind the SMMU (the boot-time
//! device map decides which, `boot::devices`). Any other IPA is unmapped, so the host's access
//! traps and comes back as an injected abort. RAM, Portcullis' memory, the SMMU frame and the
//! crash region win over a device page that overlaps them.
//!
//! The functions here assume an address map that passed [`AddressMap::validate`], but stay on the
//! safe side for one that did not: ranges that must stay unmapped are widened to whole pages,
//! ranges that get mapped are narrowed to whole pages, and the unmapped ranges win every overlap.

use alloc::vec::Vec;

use platform::addr::PhysRange;

use super::PolicyError;

/// The translation granule of every stage-2 table Portcullis builds.
pub const PAGE_SIZE: u64 = 4096;

/// The smallest IPA size Portcullis builds tables for (the smallest PARange, 4 GiB).
pub const MIN_IPA_BITS: u32 = 32;

/// The largest IPA size with a 4 KiB granule and no FEAT_LPA2 (a level-0 start, 4 levels).
pub const MAX_IPA_BITS: u32 = 48;

/// At least this many IPA bits, so that QEMU virt's high ECAM (0x40_1000_0000) and high PCI MMIO
/// window (0x80_0000_0000..0x100_0000_0000) are inside the host's IPA space.
const DEFAULT_MIN_IPA_BITS: u32 = 40;

/// Where things are in the physical address space, as discovered from the device tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressMap {
    /// The host's RAM banks (the device tree's `/memory` nodes), including Portcullis' own memory.
    pub ram: Vec<PhysRange>,
    /// Portcullis' own memory: code, data, heap, page tables, stacks. Never mapped for the host.
    pub hyp: PhysRange,
    /// The crash (capture kernel) region, if the host has one.
    pub crash: Option<PhysRange>,
    /// The SMMU register frame: kept unmapped for the CPU so that every access traps.
    pub smmu: Option<PhysRange>,
    /// The GITS_TRANSLATER pages of the GIC ITSs: the only MMIO a device may write (MSIs).
    pub its_doorbells: Vec<PhysRange>,
    /// The device MMIO the host may touch directly, page-granular (the device map has already
    /// taken out every page a withheld device shares): the only IPAs outside RAM the CPU policies
    /// map. Never given to DMA.
    pub devices: Vec<PhysRange>,
    /// MMIO Portcullis mediates (the GIC's ITS control and redistributor LPI register pages):
    /// never mapped for the CPU, so that every access traps. They win every overlap with device
    /// mappings.
    pub trapped: Vec<PhysRange>,
    /// The fault report region (host RAM, reserved `no-map` in the host's tree): written by
    /// Portcullis alone, so unmapped for the host in normal mode, read-only for the capture kernel
    /// in crash mode, and never reachable by DMA.
    pub report: Option<PhysRange>,
    /// The size of the host's IPA space, see [`ipa_bits_for`].
    pub ipa_bits: u32,
}

/// Which of the two pairs of policies is live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The host kernel runs; the crash region is guarded against it and its devices.
    Normal,
    /// The capture kernel runs; the dead kernel's memory is evidence, read-only at most.
    Crash,
}

/// What a stage-2 mapping allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Normal memory, inner and outer write-back cacheable, inner shareable.
    NormalMemory { read: bool, write: bool, exec: bool },
    /// Device-nGnRE, read-write, never executable.
    Device,
    /// Not mapped: every access faults to EL2.
    None,
}

impl Access {
    /// Read, write and execute.
    pub const RWX: Self = Self::NormalMemory {
        read: true,
        write: true,
        exec: true,
    };
    /// Read and write, execute-never.
    pub const RW: Self = Self::NormalMemory {
        read: true,
        write: true,
        exec: false,
    };
    /// Read-only, execute-never.
    pub const RO: Self = Self::NormalMemory {
        read: true,
        write: false,
        exec: false,
    };
}

/// One range of IPA space and what the host may do there. Mappings are identity (IPA = PA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub range: PhysRange,
    pub access: Access,
}

/// The number of IPA bits for the host: enough to reach `max_address` (the highest address, inclusive,
/// of anything in the device tree), at least 40, and no more than the CPU supports
/// (`pa_range_bits`, see [`pa_range_bits`]) nor than [`MAX_IPA_BITS`].
pub fn ipa_bits_for(max_address: u64, pa_range_bits: u32) -> u32 {
    let needed = u64::BITS - max_address.leading_zeros();
    needed
        .max(DEFAULT_MIN_IPA_BITS)
        .min(pa_range_bits)
        .min(MAX_IPA_BITS)
}

/// The physical address size encoded by `ID_AA64MMFR0_EL1.PARange` (bits [3:0]), which is also
/// the encoding of `VTCR_EL2.PS`; `None` for a reserved encoding.
pub fn pa_range_bits(pa_range_field: u64) -> Option<u32> {
    match pa_range_field {
        0b0000 => Some(32),
        0b0001 => Some(36),
        0b0010 => Some(40),
        0b0011 => Some(42),
        0b0100 => Some(44),
        0b0101 => Some(48),
        0b0110 => Some(52),
        _ => None,
    }
}

impl AddressMap {
    /// One past the highest IPA of the host's address space (`2^ipa_bits`, saturating).
    pub fn ipa_limit(&self) -> u64 {
        ipa_limit(self.ipa_bits)
    }

    /// Checks what the policies rely on: a supported IPA size; page-aligned ranges inside it;
    /// disjoint RAM banks; a crash region inside RAM and outside Portcullis' memory; SMMU and ITS
    /// doorbells outside RAM and Portcullis' memory.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if !(MIN_IPA_BITS..=MAX_IPA_BITS).contains(&self.ipa_bits) {
            return Err(PolicyError::UnsupportedIpaBits(self.ipa_bits));
        }
        let limit = self.ipa_limit();
        let named = self
            .ram
            .iter()
            .map(|r| ("RAM bank", *r))
            .chain([("Portcullis memory", self.hyp)])
            .chain(self.crash.map(|r| ("crash region", r)))
            .chain(self.smmu.map(|r| ("SMMU frame", r)))
            .chain(self.its_doorbells.iter().map(|r| ("ITS doorbell", *r)));
        for (what, range) in named {
            if !range.start.is_aligned(PAGE_SIZE) || !range.end.is_aligned(PAGE_SIZE) {
                return Err(PolicyError::Unaligned { what, range });
            }
            if range.end.0 > limit {
                return Err(PolicyError::OutsideIpaSpace {
                    what,
                    range,
                    ipa_bits: self.ipa_bits,
                });
            }
        }
        // Device pages outside the IPA space are cut off by the policy, not an error: the tree may
        // describe more than the CPU's physical address size reaches.
        if let Some(&range) = self
            .devices
            .iter()
            .find(|r| !r.start.is_aligned(PAGE_SIZE) || !r.end.is_aligned(PAGE_SIZE))
        {
            return Err(PolicyError::Unaligned {
                what: "device MMIO",
                range,
            });
        }
        for (i, a) in self.ram.iter().enumerate() {
            for b in &self.ram[i + 1..] {
                check_disjoint(a, b)?;
            }
        }
        if let Some(report) = &self.report {
            if !report.start.is_aligned(PAGE_SIZE) || !report.end.is_aligned(PAGE_SIZE) {
                return Err(PolicyError::Unaligned {
                    what: "fault report",
                    range: *report,
                });
            }
            check_disjoint(report, &self.hyp)?;
            if let Some(crash) = &self.crash {
                check_disjoint(report, crash)?;
            }
            if !subtract(&[*report], &self.ram).is_empty() {
                return Err(PolicyError::ReportOutsideRam(*report));
            }
        }
        if let Some(crash) = &self.crash {
            check_disjoint(crash, &self.hyp)?;
            if !subtract(&[*crash], &self.ram).is_empty() {
                return Err(PolicyError::CrashOutsideRam(*crash));
            }
        }
        let mut reserved: Vec<PhysRange> = self.ram.clone();
        reserved.push(self.hyp);
        if let Some(smmu) = &self.smmu {
            for r in &reserved {
                check_disjoint(smmu, r)?;
            }
            reserved.push(*smmu);
        }
        for doorbell in &self.its_doorbells {
            for r in &reserved {
                check_disjoint(doorbell, r)?;
            }
        }
        Ok(())
    }

    /// Portcullis' memory, the SMMU frame and the trapped MMIO pages, widened to whole pages:
    /// never mapped for anyone.
    fn holes(&self) -> Vec<PhysRange> {
        [Some(self.hyp), self.smmu]
            .into_iter()
            .flatten()
            .chain(self.trapped.iter().copied())
            .map(align_out)
            .collect()
    }

    /// The crash region widened to whole pages (so that no page of it is treated as dump).
    fn crash_pages(&self) -> Option<PhysRange> {
        self.crash.map(align_out)
    }

    /// Host RAM that is neither Portcullis' nor the crash region nor the fault report: the dump,
    /// after a crash.
    fn rest_of_ram(&self) -> Vec<PhysRange> {
        let ram: Vec<PhysRange> = self.ram.iter().copied().map(align_in).collect();
        let mut cut = self.holes();
        cut.extend(self.crash_pages());
        cut.extend(self.report_pages());
        subtract(&ram, &cut)
    }

    /// The fault report region widened to whole pages, without any hole.
    fn report_pages(&self) -> Option<PhysRange> {
        self.report.map(align_out)
    }

    fn report_mapped(&self) -> Vec<PhysRange> {
        self.report_pages()
            .map_or_else(Vec::new, |r| subtract(&[r], &self.holes()))
    }

    /// The crash region as mapped, without any page of Portcullis' memory or the SMMU frame.
    fn crash_mapped(&self) -> Vec<PhysRange> {
        self.crash_pages()
            .map_or_else(Vec::new, |crash| subtract(&[crash], &self.holes()))
    }

    /// The allowed device pages below the limit, without any page of RAM or a hole.
    fn device_mmio(&self) -> Vec<PhysRange> {
        let pages: Vec<PhysRange> = self
            .devices
            .iter()
            .filter_map(|r| r.intersection(&PhysRange::from_bounds(0, self.ipa_limit())))
            .map(align_in)
            .collect();
        let mut cut: Vec<PhysRange> = self.ram.iter().copied().map(align_out).collect();
        cut.extend(self.holes());
        cut.extend(self.crash_pages());
        subtract(&pages, &cut)
    }

    /// The ITS doorbell pages, without anything that is RAM or a hole.
    fn doorbells(&self) -> Vec<PhysRange> {
        let pages: Vec<PhysRange> = self.its_doorbells.iter().copied().map(align_out).collect();
        let mut cut: Vec<PhysRange> = self.ram.iter().copied().map(align_out).collect();
        cut.extend(self.holes());
        cut.extend(self.crash_pages());
        subtract(&pages, &cut)
    }
}

/// The host CPU's stage-2 policy in `mode`.
///
/// `kexec_trap` makes the crash region execute-never in normal mode, so that the capture kernel's
/// first instruction fetch traps to EL2 (the kexec event). Without it the crash region is RWX in
/// normal mode too, for as long as nothing handles that trap. Crash mode ignores it.
pub fn cpu_policy(map: &AddressMap, mode: Mode, kexec_trap: bool) -> Vec<Region> {
    let (crash, rest) = match mode {
        Mode::Normal => {
            let crash = if kexec_trap { Access::RW } else { Access::RWX };
            (crash, Access::RWX)
        }
        Mode::Crash => (Access::RWX, Access::RO),
    };
    let mut regions = Vec::new();
    if mode == Mode::Crash {
        push_all(&mut regions, map.report_mapped(), Access::RO);
    }
    push_all(&mut regions, map.crash_mapped(), crash);
    push_all(&mut regions, map.rest_of_ram(), rest);
    push_all(&mut regions, map.device_mmio(), Access::Device);
    normalize(regions)
}

/// `regions` with the read-only parts that overlap `ranges` made read-write (never executable).
///
/// For the crash-mode CPU policy: hardware-owned tables the dead kernel allocated in what is now
/// the dump, which the capture kernel must keep using and writing (the GICv3 LPI configuration and
/// pending tables cannot be moved once LPIs are enabled). Only read-only normal memory is widened:
/// nothing unmapped (Portcullis, the crash region's neighbours, holes) becomes reachable.
pub fn with_writable(regions: &[Region], ranges: &[PhysRange]) -> Vec<Region> {
    let ranges: Vec<PhysRange> = ranges.iter().copied().map(align_out).collect();
    let mut out = Vec::new();
    for region in regions {
        if region.access != Access::RO {
            out.push(*region);
            continue;
        }
        let inside: Vec<PhysRange> = ranges
            .iter()
            .filter_map(|r| r.intersection(&region.range))
            .collect();
        push_all(&mut out, subtract(&[region.range], &inside), Access::RO);
        push_all(&mut out, inside, Access::RW);
    }
    normalize(out)
}

/// The stage-2 policy for every device behind the SMMU in `mode`.
pub fn dma_policy(map: &AddressMap, mode: Mode) -> Vec<Region> {
    let mut regions = Vec::new();
    match mode {
        Mode::Normal => push_all(&mut regions, map.rest_of_ram(), Access::RW),
        Mode::Crash => push_all(&mut regions, map.crash_mapped(), Access::RW),
    }
    push_all(&mut regions, map.doorbells(), Access::Device);
    normalize(regions)
}

pub(super) fn ipa_limit(ipa_bits: u32) -> u64 {
    1u64.checked_shl(ipa_bits).unwrap_or(u64::MAX)
}

fn check_disjoint(a: &PhysRange, b: &PhysRange) -> Result<(), PolicyError> {
    if a.overlaps(b) {
        Err(PolicyError::Overlap {
            first: *a,
            second: *b,
        })
    } else {
        Ok(())
    }
}

fn push_all(regions: &mut Vec<Region>, ranges: Vec<PhysRange>, access: Access) {
    regions.extend(ranges.into_iter().map(|range| Region { range, access }));
}

/// Sorted by start, empty regions dropped, touching regions with the same access merged (so that
/// the table builder sees the largest ranges and can use the largest blocks).
fn normalize(mut regions: Vec<Region>) -> Vec<Region> {
    regions.retain(|r| !r.range.is_empty() && r.access != Access::None);
    platform::sort::sort_small_by_key(&mut regions, |r| r.range.start);
    let mut out: Vec<Region> = Vec::with_capacity(regions.len());
    for region in regions {
        match out.last_mut() {
            Some(last) if last.access == region.access && last.range.end == region.range.start => {
                last.range.end = region.range.end;
            }
            _ => out.push(region),
        }
    }
    out
}

/// The smallest page-aligned range containing `range`.
fn align_out(range: PhysRange) -> PhysRange {
    let start = range.start.align_down(PAGE_SIZE).0;
    let end = match range.end.0.checked_add(PAGE_SIZE - 1) {
        Some(e) => e & !(PAGE_SIZE - 1),
        None => !(PAGE_SIZE - 1),
    };
    PhysRange::from_bounds(start, end.max(start))
}

/// The largest page-aligned range inside `range` (empty if there is none).
fn align_in(range: PhysRange) -> PhysRange {
    let end = range.end.align_down(PAGE_SIZE).0;
    let start = match range.start.0.checked_add(PAGE_SIZE - 1) {
        Some(s) => s & !(PAGE_SIZE - 1),
        None => end,
    };
    PhysRange::from_bounds(start.min(end), end)
}

/// `from` minus every range in `cut`, as sorted disjoint non-empty ranges.
fn subtract(from: &[PhysRange], cut: &[PhysRange]) -> Vec<PhysRange> {
    let mut out: Vec<PhysRange> = from.iter().copied().filter(|r| !r.is_empty()).collect();
    for c in cut.iter().filter(|c| !c.is_empty()) {
        let mut next = Vec::with_capacity(out.len() + 1);
        for r in out {
            if !r.overlaps(c) {
                next.push(r);
                continue;
            }
            if r.start < c.start {
                next.push(PhysRange {
                    start: r.start,
                    end: c.start,
                });
            }
            if c.end < r.end {
                next.push(PhysRange {
                    start: c.end,
                    end: r.end,
                });
            }
        }
        out = next;
    }
    platform::sort::sort_small(&mut out);
    out
}

/// Whether `pa` is inside any of `ranges`.
#[cfg(test)]
pub(super) fn in_any(ranges: &[PhysRange], pa: platform::addr::Pa) -> bool {
    ranges.iter().any(|r| r.contains(pa))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, size: u64) -> PhysRange {
        PhysRange::new(start, size).expect("test range")
    }

    #[test]
    fn ipa_bits() {
        // QEMU virt, highmem: the PCI MMIO window ends at 0x100_0000_0000 (last byte 2^40 - 1).
        assert_eq!(ipa_bits_for(0xff_ffff_ffff, 48), 40);
        // Only low memory: still 40 bits.
        assert_eq!(ipa_bits_for(0x7fff_ffff, 48), 40);
        // RAM above 1 TiB needs more.
        assert_eq!(ipa_bits_for(0x1_0000_0000_0000 - 1, 48), 48);
        assert_eq!(ipa_bits_for(0x200_0000_0000, 44), 42);
        // Capped at what the CPU implements, and at 48 (no LPA2).
        assert_eq!(ipa_bits_for(0xff_ffff_ffff, 36), 36);
        assert_eq!(ipa_bits_for(u64::MAX, 52), 48);
        assert_eq!(pa_range_bits(0b0010), Some(40));
        assert_eq!(pa_range_bits(0b0101), Some(48));
        assert_eq!(pa_range_bits(0b0111), None);
    }

    #[test]
    fn alignment_helpers() {
        assert_eq!(align_out(r(0x1800, 0x1000)), r(0x1000, 0x2000));
        assert_eq!(align_in(r(0x1800, 0x2000)), r(0x2000, 0x1000));
        assert!(align_in(r(0x1800, 0x100)).is_empty());
        assert_eq!(
            align_out(PhysRange::from_bounds(u64::MAX - 10, u64::MAX))
                .end
                .0,
            !0xfff
        );
        assert_eq!(
            subtract(&[r(0, 0x10000)], &[r(0x2000, 0x1000), r(0x8000, 0x10000)]),
            [r(0, 0x2000), r(0x3000, 0x5000)]
        );
    }

    #[test]
    fn validate_rejects_bad_maps() {
        let good = AddressMap {
            ram: alloc::vec![r(0x4000_0000, 0x4000_0000)],
            hyp: r(0x4020_0000, 0x200_0000),
            crash: Some(r(0x7c00_0000, 0x400_0000)),
            smmu: Some(r(0x0905_0000, 0x2_0000)),
            its_doorbells: alloc::vec![r(0x080a_0000, 0x1000)],
            devices: alloc::vec![r(0x0900_0000, 0x1000)],
            trapped: alloc::vec::Vec::new(),
            report: Some(r(0x7b00_0000, 0x1_0000)),
            ipa_bits: 40,
        };
        assert_eq!(good.validate(), Ok(()));

        let mut m = good.clone();
        m.report = Some(r(0x7c00_0000, 0x1_0000));
        assert!(matches!(m.validate(), Err(PolicyError::Overlap { .. })));
        let mut m = good.clone();
        m.report = Some(r(0x8000_0000, 0x1_0000));
        assert_eq!(
            m.validate(),
            Err(PolicyError::ReportOutsideRam(r(0x8000_0000, 0x1_0000)))
        );
        let mut m = good.clone();
        m.report = Some(r(0x7b00_0800, 0x1000));
        assert!(matches!(m.validate(), Err(PolicyError::Unaligned { .. })));

        let mut m = good.clone();
        m.devices.push(r(0x0902_0000, 0x18));
        assert!(matches!(
            m.validate(),
            Err(PolicyError::Unaligned {
                what: "device MMIO",
                ..
            })
        ));

        let mut m = good.clone();
        m.ipa_bits = 52;
        assert_eq!(m.validate(), Err(PolicyError::UnsupportedIpaBits(52)));

        let mut m = good.clone();
        m.crash = Some(r(0x7c00_0800, 0x1000));
        assert!(matches!(
            m.validate(),
            Err(PolicyError::Unaligned {
                what: "crash region",
                ..
            })
        ));

        let mut m = good.clone();
        m.crash = Some(r(0x4100_0000, 0x200_0000));
        assert!(matches!(m.validate(), Err(PolicyError::Overlap { .. })));

        let mut m = good.clone();
        m.crash = Some(r(0x7f00_0000, 0x200_0000));
        assert!(matches!(m.validate(), Err(PolicyError::CrashOutsideRam(_))));

        let mut m = good.clone();
        m.smmu = Some(r(0x4000_0000, 0x2_0000));
        assert!(matches!(m.validate(), Err(PolicyError::Overlap { .. })));

        let mut m = good.clone();
        m.ram.push(r(0x1_0000_0000_0000, 0x1000));
        assert!(matches!(
            m.validate(),
            Err(PolicyError::OutsideIpaSpace { .. })
        ));

        let mut m = good;
        m.ram.push(r(0x7000_0000, 0x2000_0000));
        assert!(matches!(m.validate(), Err(PolicyError::Overlap { .. })));
    }
}
