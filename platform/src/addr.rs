//! Typed addresses.
//!
//! A physical address (`Pa`) and a guest-physical address (`Ipa`) are different things even where
//! Portcullis maps one onto the other by identity: the types keep a host-supplied IPA from being used
//! as a physical address without going through the stage-2 policy check.

use alloc::vec::Vec;
use core::fmt;

/// A physical address, as the CPU's stage-2 output or the SMMU sees it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pa(pub u64);

/// An intermediate physical (guest-physical) address: what the host kernel calls a physical address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ipa(pub u64);

macro_rules! addr_impls {
    ($t:ident, $prefix:literal) => {
        impl $t {
            /// The raw address.
            pub const fn raw(self) -> u64 {
                self.0
            }

            /// This address plus `offset`, or `None` on overflow.
            pub const fn checked_add(self, offset: u64) -> Option<Self> {
                match self.0.checked_add(offset) {
                    Some(a) => Some(Self(a)),
                    None => None,
                }
            }

            /// Whether the address is a multiple of `align` (a power of two).
            pub const fn is_aligned(self, align: u64) -> bool {
                self.0 & (align - 1) == 0
            }

            /// The address rounded down to a multiple of `align` (a power of two).
            pub const fn align_down(self, align: u64) -> Self {
                Self(self.0 & !(align - 1))
            }

            /// The address rounded up to a multiple of `align` (a power of two), or `None` on
            /// overflow.
            pub const fn checked_align_up(self, align: u64) -> Option<Self> {
                match self.0.checked_add(align - 1) {
                    Some(a) => Some(Self(a & !(align - 1))),
                    None => None,
                }
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "({:#x})"), self.0)
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }
    };
}

addr_impls!(Pa, "Pa");
addr_impls!(Ipa, "Ipa");

/// A half-open range of physical addresses `[start, end)`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PhysRange {
    pub start: Pa,
    pub end: Pa,
}

impl PhysRange {
    /// The range `[start, start + size)`, or `None` if it wraps around the address space.
    pub const fn new(start: u64, size: u64) -> Option<Self> {
        match start.checked_add(size) {
            Some(end) => Some(Self {
                start: Pa(start),
                end: Pa(end),
            }),
            None => None,
        }
    }

    /// The range `[start, end)`; `end` must not be below `start`.
    pub const fn from_bounds(start: u64, end: u64) -> Self {
        assert!(end >= start, "PhysRange::from_bounds: end below start");
        Self {
            start: Pa(start),
            end: Pa(end),
        }
    }

    pub const fn size(&self) -> u64 {
        self.end.0 - self.start.0
    }

    pub const fn is_empty(&self) -> bool {
        self.end.0 == self.start.0
    }

    pub const fn contains(&self, pa: Pa) -> bool {
        pa.0 >= self.start.0 && pa.0 < self.end.0
    }

    /// Whether `other` lies wholly inside this range.
    pub const fn covers(&self, other: &PhysRange) -> bool {
        other.start.0 >= self.start.0 && other.end.0 <= self.end.0
    }

    pub const fn overlaps(&self, other: &PhysRange) -> bool {
        self.start.0 < other.end.0 && other.start.0 < self.end.0
    }

    /// The common part of two ranges, if any.
    pub fn intersection(&self, other: &PhysRange) -> Option<PhysRange> {
        let start = self.start.0.max(other.start.0);
        let end = self.end.0.min(other.end.0);
        (start < end).then(|| PhysRange::from_bounds(start, end))
    }

    /// This range with `other` taken out: the part below `other` and the part above it, each
    /// `None` when empty.
    pub fn subtract(&self, other: &PhysRange) -> (Option<PhysRange>, Option<PhysRange>) {
        if !self.overlaps(other) {
            return if self.is_empty() {
                (None, None)
            } else {
                (Some(*self), None)
            };
        }
        let below = (self.start.0 < other.start.0)
            .then(|| PhysRange::from_bounds(self.start.0, other.start.0));
        let above =
            (other.end.0 < self.end.0).then(|| PhysRange::from_bounds(other.end.0, self.end.0));
        (below, above)
    }
}

/// Sorts `ranges`, drops empty ones and merges those that overlap or touch, so that the result is
/// a strictly increasing list of disjoint, non-adjacent ranges.
pub fn normalize_ranges(ranges: &mut Vec<PhysRange>) {
    ranges.retain(|r| !r.is_empty());
    crate::sort::sort_small(ranges);
    let mut merged: Vec<PhysRange> = Vec::with_capacity(ranges.len());
    for r in ranges.drain(..) {
        match merged.last_mut() {
            Some(last) if r.start.0 <= last.end.0 => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    *ranges = merged;
}

/// `from` with every range of `remove` taken out; the result is normalized (see
/// [`normalize_ranges`]).
pub fn subtract_ranges(from: &[PhysRange], remove: &[PhysRange]) -> Vec<PhysRange> {
    let mut out: Vec<PhysRange> = from.to_vec();
    normalize_ranges(&mut out);
    for cut in remove {
        let mut next = Vec::with_capacity(out.len() + 1);
        for r in &out {
            let (below, above) = r.subtract(cut);
            next.extend(below);
            next.extend(above);
        }
        out = next;
    }
    out
}

impl fmt::Debug for PhysRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.start.0, self.end.0)
    }
}

impl fmt::Display for PhysRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn range_arithmetic() {
        let a = PhysRange::new(0x4000_0000, 0x4000_0000).unwrap();
        let b = PhysRange::new(0x7000_0000, 0x2000_0000).unwrap();
        assert!(a.overlaps(&b));
        assert_eq!(
            a.intersection(&b),
            Some(PhysRange::from_bounds(0x7000_0000, 0x8000_0000))
        );
        assert!(a.contains(Pa(0x7fff_ffff)));
        assert!(!a.contains(Pa(0x8000_0000)));
        assert!(PhysRange::new(u64::MAX, 2).is_none());
        assert!(!a.covers(&b));
        assert!(a.covers(&PhysRange::new(0x4000_0000, 0x1000).unwrap()));
    }

    #[test]
    fn align_up() {
        assert_eq!(Pa(0x1001).checked_align_up(0x1000), Some(Pa(0x2000)));
        assert_eq!(Pa(0x2000).checked_align_up(0x1000), Some(Pa(0x2000)));
        assert_eq!(Pa(u64::MAX).checked_align_up(0x1000), None);
    }

    #[test]
    fn subtract_and_normalize() {
        let r = PhysRange::from_bounds(0x1000, 0x5000);
        let (lo, hi) = r.subtract(&PhysRange::from_bounds(0x2000, 0x3000));
        assert_eq!(lo, Some(PhysRange::from_bounds(0x1000, 0x2000)));
        assert_eq!(hi, Some(PhysRange::from_bounds(0x3000, 0x5000)));
        assert_eq!(r.subtract(&PhysRange::from_bounds(0, 0x9000)), (None, None));
        assert_eq!(
            r.subtract(&PhysRange::from_bounds(0x8000, 0x9000)),
            (Some(r), None)
        );

        let mut v = alloc::vec![
            PhysRange::from_bounds(0x5000, 0x6000),
            PhysRange::from_bounds(0x1000, 0x2000),
            PhysRange::from_bounds(0x2000, 0x3000),
            PhysRange::from_bounds(0x7000, 0x7000),
            PhysRange::from_bounds(0x5800, 0x6800),
        ];
        normalize_ranges(&mut v);
        assert_eq!(
            v,
            [
                PhysRange::from_bounds(0x1000, 0x3000),
                PhysRange::from_bounds(0x5000, 0x6800)
            ]
        );
        let left = subtract_ranges(&v, &[PhysRange::from_bounds(0x1800, 0x5400)]);
        assert_eq!(
            left,
            [
                PhysRange::from_bounds(0x1000, 0x1800),
                PhysRange::from_bounds(0x5400, 0x6800)
            ]
        );
    }
}
