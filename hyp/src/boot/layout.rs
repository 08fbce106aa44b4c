//! The memory plan: where the crash region and the host's device tree go, given what is already
//! taken, and the arm64 `Image` header that says how much room the host kernel needs.
//!
//! The crash region is placed the way Linux arm64 would accept it as `crashkernel=SIZE@BASE`
//! (`reserve_crashkernel` with a fixed base allocates exactly there, 2 MiB aligned), so that after
//! [`super::cmdline::rewrite_crashkernel`] Portcullis and the host agree on it to the byte.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use platform::addr::{Pa, PhysRange, normalize_ranges, subtract_ranges};
use platform::devtree::{Platform, ReservedSource};

use super::cmdline::CrashRequest;

/// Alignment of the crash region's base and size: Linux arm64's `CRASH_ALIGN`, and the block size
/// of a level-2 stage-2 mapping, so the region's XN policy never splits a block.
pub const CRASH_ALIGN: u64 = 2 << 20;

/// Linux arm64's limit for the device tree (`Documentation/arch/arm64/booting.rst`), which is also
/// the alignment of the block the tree is put in when it cannot stay where it came in.
pub const DTB_MAX_SIZE: u64 = 2 << 20;

/// Without a base, the crash region goes wholly below this if it can (where 32-bit DMA reaches it,
/// as Linux prefers), else anywhere.
pub const LOW_LIMIT: u64 = 1 << 32;

/// What a taken range is, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakenKind {
    Portcullis,
    KernelImage,
    Initrd,
    IncomingDtb,
    MemReserve,
    /// A `/reserved-memory` child (its path).
    ReservedMemory(String),
    CrashRegion,
    FaultReport,
}

impl fmt::Display for TakenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Portcullis => f.write_str("Portcullis' own memory"),
            Self::KernelImage => f.write_str("the host kernel image"),
            Self::Initrd => f.write_str("the initrd"),
            Self::IncomingDtb => f.write_str("the incoming device tree"),
            Self::MemReserve => f.write_str("a /memreserve/ entry"),
            Self::ReservedMemory(path) => write!(f, "reserved memory {path}"),
            Self::CrashRegion => f.write_str("the crash region"),
            Self::FaultReport => f.write_str("the fault report region"),
        }
    }
}

/// A range of RAM nothing else may be placed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub kind: TakenKind,
    pub range: PhysRange,
}

impl Taken {
    pub fn new(kind: TakenKind, range: PhysRange) -> Self {
        Self { kind, range }
    }
}

/// What the device tree itself says is taken: the initrd, `/memreserve/` entries and
/// `/reserved-memory` children. The caller adds Portcullis' own memory, the kernel image's
/// footprint and the incoming tree.
pub fn platform_taken(platform: &Platform) -> Vec<Taken> {
    let mut taken: Vec<Taken> = platform
        .reserved_regions
        .iter()
        .map(|r| {
            let kind = match &r.source {
                ReservedSource::MemReserve => TakenKind::MemReserve,
                ReservedSource::Node(path) => TakenKind::ReservedMemory(path.clone()),
            };
            Taken::new(kind, r.range)
        })
        .collect();
    taken.extend(
        platform
            .chosen
            .initrd
            .map(|r| Taken::new(TakenKind::Initrd, r)),
    );
    taken
}

/// The total size of `ram` (overlaps counted once).
pub fn total_ram(ram: &[PhysRange]) -> u64 {
    let mut ram = ram.to_vec();
    normalize_ranges(&mut ram);
    ram.iter().map(PhysRange::size).sum()
}

/// Why a region could not be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacementError {
    ZeroSize,
    /// The size, rounded up, or the end of the region does not fit in 64 bits.
    SizeOverflow {
        size: u64,
    },
    BaseMisaligned {
        base: Pa,
        align: u64,
    },
    /// The requested region is not wholly inside one RAM range.
    OutsideRam {
        region: PhysRange,
    },
    /// The requested region overlaps something already taken.
    Overlaps {
        region: PhysRange,
        with: TakenKind,
        other: PhysRange,
    },
    /// No free gap (below the end of RAM, suitably aligned) is large enough.
    TooLarge {
        size: u64,
        largest_gap: u64,
    },
    /// A device tree larger than Linux accepts.
    DtbTooLarge {
        size: u64,
    },
}

impl fmt::Display for PlacementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroSize => f.write_str("the requested size is zero"),
            Self::SizeOverflow { size } => {
                write!(
                    f,
                    "a region of {size:#x} bytes does not fit in the address space"
                )
            }
            Self::BaseMisaligned { base, align } => {
                write!(f, "base {base} is not aligned to {align:#x}")
            }
            Self::OutsideRam { region } => write!(f, "{region} is not inside RAM"),
            Self::Overlaps {
                region,
                with,
                other,
            } => {
                write!(f, "{region} overlaps {with} at {other}")
            }
            Self::TooLarge { size, largest_gap } => write!(
                f,
                "no free, aligned gap of {size:#x} bytes in RAM (the largest free gap is \
                 {largest_gap:#x} bytes)"
            ),
            Self::DtbTooLarge { size } => write!(
                f,
                "the device tree is {size:#x} bytes, above the {DTB_MAX_SIZE:#x} Linux accepts"
            ),
        }
    }
}

impl core::error::Error for PlacementError {}

fn round_up(size: u64, align: u64) -> Result<u64, PlacementError> {
    size.checked_next_multiple_of(align)
        .ok_or(PlacementError::SizeOverflow { size })
}

/// The first (lowest) taken range overlapping `region`.
fn first_overlap<'t>(
    region: &PhysRange,
    taken: impl Iterator<Item = &'t Taken>,
) -> Option<&'t Taken> {
    taken
        .filter(|t| t.range.overlaps(region))
        .min_by_key(|t| t.range)
}

fn inside_ram(ram: &[PhysRange], region: &PhysRange) -> bool {
    let mut ram = ram.to_vec();
    normalize_ranges(&mut ram);
    ram.iter().any(|r| r.covers(region))
}

/// The highest `align`-aligned, non-zero base of a `size`-byte region inside one of the `free`
/// ranges and ending at or below `limit`.
fn highest_fit(free: &[PhysRange], size: u64, align: u64, limit: Option<u64>) -> Option<u64> {
    free.iter()
        .filter_map(|gap| {
            let end = limit.map_or(gap.end.raw(), |l| gap.end.raw().min(l));
            let base = end.checked_sub(size)? & !(align - 1);
            // Base 0 would read back as "anywhere" in `crashkernel=SIZE@0`.
            (base >= gap.start.raw() && base != 0).then_some(base)
        })
        .max()
}

/// A fitting rule: where in the free gaps a `size`-byte, `align`-aligned region goes, ending at or
/// below the limit if there is one.
type Fit = fn(&[PhysRange], u64, u64, Option<u64>) -> Option<u64>;

/// Places with `fit`: wholly below [`LOW_LIMIT`] if possible, else anywhere.
fn place(
    ram: &[PhysRange],
    taken: &[PhysRange],
    size: u64,
    align: u64,
    fit: Fit,
) -> Result<PhysRange, PlacementError> {
    let free = subtract_ranges(ram, taken);
    let base = fit(&free, size, align, Some(LOW_LIMIT)).or_else(|| fit(&free, size, align, None));
    match base.and_then(|b| PhysRange::new(b, size)) {
        Some(region) => Ok(region),
        None => Err(PlacementError::TooLarge {
            size,
            largest_gap: free.iter().map(PhysRange::size).max().unwrap_or(0),
        }),
    }
}

/// Places top-down: highest below [`LOW_LIMIT`], else highest anywhere (the device tree, the
/// fault report).
fn place_top_down(
    ram: &[PhysRange],
    taken: &[PhysRange],
    size: u64,
    align: u64,
) -> Result<PhysRange, PlacementError> {
    place(ram, taken, size, align, highest_fit)
}

/// The lowest `align`-aligned, non-zero base of a `size`-byte region inside one of the `free`
/// ranges and ending at or below `limit`.
fn lowest_fit(free: &[PhysRange], size: u64, align: u64, limit: Option<u64>) -> Option<u64> {
    free.iter()
        .filter_map(|gap| {
            // Base 0 would read back as "anywhere" in `crashkernel=SIZE@0`.
            let start = gap.start.raw().max(align);
            let base = start.checked_next_multiple_of(align)?;
            let end = base.checked_add(size)?;
            let limit_ok = limit.is_none_or(|l| end <= l);
            (end <= gap.end.raw() && limit_ok).then_some(base)
        })
        .min()
}

/// Places the default: the lowest fit wholly below [`LOW_LIMIT`], else the lowest anywhere.
///
/// Bottom-up, unlike Linux's own top-down choice, on purpose: Linux reserves the crash region only
/// after its early page-table and memblock allocations, which it takes top-down from the end of RAM;
/// a region placed at the top is already in use by then ("cannot allocate crashkernel"). The low
/// end, right above the images Linux reserves first, is still free when it gets there.
fn place_bottom_up(
    ram: &[PhysRange],
    taken: &[PhysRange],
    size: u64,
    align: u64,
) -> Result<PhysRange, PlacementError> {
    place(ram, taken, size, align, lowest_fit)
}

/// Places the crash region: base and size aligned to [`CRASH_ALIGN`] (the size rounded up).
/// `SIZE@BASE` is honoured exactly if it is aligned, inside RAM and free, else refused; `SIZE`
/// alone goes as low as possible, below [`LOW_LIMIT`] if it fits there (see [`place_bottom_up`]).
pub fn place_crash_region(
    ram: &[PhysRange],
    taken: &[Taken],
    request: &CrashRequest,
) -> Result<PhysRange, PlacementError> {
    if request.size == 0 {
        return Err(PlacementError::ZeroSize);
    }
    let size = round_up(request.size, CRASH_ALIGN)?;
    let Some(base) = request.base else {
        let taken: Vec<PhysRange> = taken.iter().map(|t| t.range).collect();
        return place_bottom_up(ram, &taken, size, CRASH_ALIGN);
    };
    if !base.is_aligned(CRASH_ALIGN) {
        return Err(PlacementError::BaseMisaligned {
            base,
            align: CRASH_ALIGN,
        });
    }
    let region = PhysRange::new(base.raw(), size).ok_or(PlacementError::SizeOverflow { size })?;
    if !inside_ram(ram, &region) {
        return Err(PlacementError::OutsideRam { region });
    }
    if let Some(t) = first_overlap(&region, taken.iter()) {
        return Err(PlacementError::Overlaps {
            region,
            with: t.kind.clone(),
            other: t.range,
        });
    }
    Ok(region)
}

/// Size of the fault report region (`portcullis,fault-report`).
pub const REPORT_SIZE: u64 = 64 << 10;

/// Places the fault report region: [`REPORT_SIZE`] bytes, aligned to their size, as high as
/// possible below [`LOW_LIMIT`] (it is reserved `no-map` in the host's tree before Linux allocates
/// anything, so the top of RAM is safe, unlike for the crash region).
pub fn place_report(ram: &[PhysRange], taken: &[Taken]) -> Result<PhysRange, PlacementError> {
    let taken: Vec<PhysRange> = taken.iter().map(|t| t.range).collect();
    place_top_down(ram, &taken, REPORT_SIZE, REPORT_SIZE)
}

/// Places the host's device tree (`size` bytes): where the incoming tree was (a
/// [`TakenKind::IncomingDtb`] entry) if it fits there without touching anything else taken and
/// without sharing a 2 MiB block with Portcullis' memory; otherwise at the start of a whole free
/// 2 MiB block (Linux maps the tree with blocks of up to 2 MiB), highest below [`LOW_LIMIT`] first.
/// `taken` must include the crash region.
pub fn place_dtb(
    ram: &[PhysRange],
    taken: &[Taken],
    size: u64,
) -> Result<PhysRange, PlacementError> {
    if size == 0 {
        return Err(PlacementError::ZeroSize);
    }
    if size > DTB_MAX_SIZE {
        return Err(PlacementError::DtbTooLarge { size });
    }
    let others = || taken.iter().filter(|t| t.kind != TakenKind::IncomingDtb);
    for incoming in taken.iter().filter(|t| t.kind == TakenKind::IncomingDtb) {
        let start = incoming.range.start;
        let Some(candidate) = PhysRange::new(start.raw(), size) else {
            continue;
        };
        let envelope = candidate
            .end
            .checked_align_up(DTB_MAX_SIZE)
            .map(|end| PhysRange::from_bounds(start.align_down(DTB_MAX_SIZE).raw(), end.raw()));
        let shares_block_with_portcullis = envelope.is_none_or(|e| {
            others().any(|t| t.kind == TakenKind::Portcullis && t.range.overlaps(&e))
        });
        if start.is_aligned(8)
            && inside_ram(ram, &candidate)
            && first_overlap(&candidate, others()).is_none()
            && !shares_block_with_portcullis
        {
            return Ok(candidate);
        }
    }
    let blocked: Vec<PhysRange> = others().map(|t| t.range).collect();
    let block = place_top_down(ram, &blocked, DTB_MAX_SIZE, DTB_MAX_SIZE)?;
    PhysRange::new(block.start.raw(), size).ok_or(PlacementError::SizeOverflow { size })
}

/// Why a host kernel image is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageError {
    /// No `ARM\x64` magic at offset 56: not an arm64 Linux `Image`.
    BadMagic { found: u32 },
    /// The image does not lie `text_offset` bytes above a 2 MiB aligned base.
    Misplaced { load: Pa, text_offset: u64 },
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic { found } => write!(
                f,
                "not an arm64 Image: magic at offset 56 is {found:#010x}, expected {:#010x} \
                 (\"ARM\\x64\")",
                ImageHeader::MAGIC
            ),
            Self::Misplaced { load, text_offset } => write!(
                f,
                "the Image at {load} is not text_offset ({text_offset:#x}) bytes above a 2 MiB \
                 aligned base"
            ),
        }
    }
}

impl core::error::Error for ImageError {}

/// The header at the start of an arm64 Linux `Image` (`Documentation/arch/arm64/booting.rst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    /// Offset of the image from a 2 MiB aligned base (0 since Linux 5.10).
    pub text_offset: u64,
    /// Bytes the kernel occupies from its load address, BSS included (0 before Linux 3.17).
    pub image_size: u64,
    pub flags: u64,
}

impl ImageHeader {
    /// `ARM\x64`, little-endian, at offset 56.
    pub const MAGIC: u32 = 0x644d_5241;
    /// Size of the header.
    pub const LEN: usize = 64;

    /// Reads the header; refuses anything without the magic.
    pub fn parse(bytes: &[u8; Self::LEN]) -> Result<Self, ImageError> {
        let u64_at = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(word)
        };
        let magic = u32::from_le_bytes([bytes[56], bytes[57], bytes[58], bytes[59]]);
        if magic != Self::MAGIC {
            return Err(ImageError::BadMagic { found: magic });
        }
        Ok(Self {
            text_offset: u64_at(8),
            image_size: u64_at(16),
            flags: u64_at(24),
        })
    }

    /// Flags bit 0: the kernel is big-endian.
    pub const fn big_endian(&self) -> bool {
        self.flags & 1 != 0
    }

    /// Flags bits 1-2: the kernel's page size, if it says.
    pub const fn page_size(&self) -> Option<u64> {
        match (self.flags >> 1) & 3 {
            1 => Some(4 << 10),
            2 => Some(16 << 10),
            3 => Some(64 << 10),
            _ => None,
        }
    }

    /// Flags bit 3: the 2 MiB aligned base may be anywhere in RAM (else as low as possible).
    pub const fn placement_anywhere(&self) -> bool {
        self.flags & (1 << 3) != 0
    }

    /// The memory the kernel occupies when loaded at `load`: `image_size` bytes, or the file size
    /// if that is larger (or `image_size` is unknown). `None` if it wraps.
    pub fn footprint(&self, load: Pa, file_size: u64) -> Option<PhysRange> {
        PhysRange::new(load.raw(), self.image_size.max(file_size))
    }

    /// Checks that an image loaded at `load` lies `text_offset` bytes above a 2 MiB aligned base.
    pub fn check_load_address(&self, load: Pa) -> Result<(), ImageError> {
        let misplaced = ImageError::Misplaced {
            load,
            text_offset: self.text_offset,
        };
        let base = load.raw().checked_sub(self.text_offset).ok_or(misplaced)?;
        if Pa(base).is_aligned(2 << 20) {
            Ok(())
        } else {
            Err(misplaced)
        }
    }
}

// Tests unwrap freely: their inputs are fixtures they control.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
