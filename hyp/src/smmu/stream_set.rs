//! A set of StreamIDs as a bitmap: after the fence, the streams of the dead kernel still held on
//! the fenced stage 2 (the firewall lifts one only when the capture kernel configures it).

use alloc::vec::Vec;

use super::StreamId;

/// A set of StreamIDs as a bitmap (every StreamID the physical tables cover).
#[derive(Debug)]
pub struct StreamSet(Vec<u64>);

impl StreamSet {
    /// The set of `sids`: one bit per StreamID up to the largest.
    pub fn full(sids: &[StreamId]) -> Self {
        let max = sids.iter().copied().max().unwrap_or(0) as usize;
        let mut bits = alloc::vec![0u64; max / 64 + 1];
        for &sid in sids {
            bits[sid as usize / 64] |= 1 << (sid % 64);
        }
        Self(bits)
    }
    pub fn contains(&self, sid: StreamId) -> bool {
        self.0
            .get(sid as usize / 64)
            .is_some_and(|w| w & (1 << (sid % 64)) != 0)
    }
    pub fn remove(&mut self, sid: StreamId) {
        if let Some(w) = self.0.get_mut(sid as usize / 64) {
            *w &= !(1 << (sid % 64));
        }
    }
    /// How many StreamIDs are in the set.
    pub fn len(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_contains_remove_len() {
        let mut set = StreamSet::full(&[0, 5, 63, 64, 0x1_0000]);
        assert_eq!(set.len(), 5);
        for sid in [0, 5, 63, 64, 0x1_0000] {
            assert!(set.contains(sid), "{sid:#x}");
        }
        for sid in [1, 62, 65, 0xffff, 0x1_0001, u32::MAX] {
            assert!(!set.contains(sid), "{sid:#x}");
        }
        set.remove(64);
        set.remove(64);
        set.remove(u32::MAX);
        assert!(!set.contains(64));
        assert_eq!(set.len(), 4);
        assert!(!set.is_empty());
    }

    #[test]
    fn empty() {
        let set = StreamSet::full(&[]);
        assert_eq!(set.len(), 0);
        assert!(set.is_empty());
        assert!(!set.contains(0));
    }
}
