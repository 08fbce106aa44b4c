//! Sorting for short lists (the boot's ranges, regions, StreamIDs): insertion sort up to
//! [`INSERTION_MAX`] elements, the standard library's `sort_unstable` past that.
//!
//! Under QEMU TCG the boot's time is mostly QEMU translating code that runs once, and the
//! standard library's pattern-defeating quicksort is tens of translated blocks per element type
//! (the boot sorted seven types: ~330 blocks, about 2 ms). An insertion sort is a few blocks, and
//! for the few elements the boot sorts it is as fast. Longer lists keep the O(n log n) bound.

/// Longest list sorted by insertion.
pub const INSERTION_MAX: usize = 32;

/// Sorts `v` in ascending order (equal elements in any order, like `sort_unstable`).
pub fn sort_small<T: Ord>(v: &mut [T]) {
    if v.len() > INSERTION_MAX {
        v.sort_unstable();
    } else {
        insertion(v, |a, b| a < b);
    }
}

/// Sorts `v` by `key` in ascending order (equal keys in any order, like
/// `sort_unstable_by_key`).
pub fn sort_small_by_key<T, K: Ord>(v: &mut [T], mut key: impl FnMut(&T) -> K) {
    if v.len() > INSERTION_MAX {
        v.sort_unstable_by_key(key);
    } else {
        insertion(v, |a, b| key(a) < key(b));
    }
}

fn insertion<T>(v: &mut [T], mut less: impl FnMut(&T, &T) -> bool) {
    for i in 1..v.len() {
        let mut j = i;
        while j > 0 && less(&v[j], &v[j - 1]) {
            v.swap(j, j - 1);
            j -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Both paths (short and long lists) sort exactly like the standard library.
        #[test]
        fn sorts_like_std(mut v in proptest::collection::vec(0u8..16, 0..80)) {
            let mut expected = v.clone();
            expected.sort_unstable();
            sort_small(&mut v);
            prop_assert_eq!(v, expected);
        }

        #[test]
        fn sorts_by_key_like_std(mut v in proptest::collection::vec((0u8..8, 0u8..255), 0..80)) {
            let mut expected = v.clone();
            expected.sort_by_key(|p| p.0);
            sort_small_by_key(&mut v, |p| p.0);
            // Equal keys may come in any order: compare the keys, and the elements as multisets.
            let keys: Vec<u8> = v.iter().map(|p| p.0).collect();
            let expected_keys: Vec<u8> = expected.iter().map(|p| p.0).collect();
            prop_assert_eq!(keys, expected_keys);
            let (mut a, mut b) = (v.clone(), expected.clone());
            a.sort_unstable();
            b.sort_unstable();
            prop_assert_eq!(a, b);
        }
    }
}
