//! Typed addresses.
//!
//! A physical address (`Pa`) and a guest-physical address (`Ipa`) are different things even where
//! Portcullis maps one onto the other by identity: the types keep a host-supplied IPA from being used
//! as a physical address without going through the stage-2 policy check.

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
            Some(end) => Some(Self { start: Pa(start), end: Pa(end) }),
            None => None,
        }
    }

    /// The range `[start, end)`; `end` must not be below `start`.
    pub const fn from_bounds(start: u64, end: u64) -> Self {
        assert!(end >= start, "PhysRange::from_bounds: end below start");
        Self { start: Pa(start), end: Pa(end) }
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
mod tests {
    use super::*;

    #[test]
    fn range_arithmetic() {
        let a = PhysRange::new(0x4000_0000, 0x4000_0000).unwrap();
        let b = PhysRange::new(0x7000_0000, 0x2000_0000).unwrap();
        assert!(a.overlaps(&b));
        assert_eq!(a.intersection(&b), Some(PhysRange::from_bounds(0x7000_0000, 0x8000_0000)));
        assert!(a.contains(Pa(0x7fff_ffff)));
        assert!(!a.contains(Pa(0x8000_0000)));
        assert!(PhysRange::new(u64::MAX, 2).is_none());
        assert!(!a.covers(&b));
        assert!(a.covers(&PhysRange::new(0x4000_0000, 0x1000).unwrap()));
    }
}
