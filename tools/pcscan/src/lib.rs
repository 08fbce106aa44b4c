//! The search of `pcscan` (see `main.rs`), without system calls: tested on the host.
#![no_std]

/// The longest match reported; a caller scanning a file in chunks keeps this many bytes of one
/// chunk for the next.
pub const MAX_MATCH: usize = 256;

/// Where matches go.
pub trait Sink {
    fn found(&mut self, text: &[u8]);
}

/// Where the next byte equal to `b` is in `hay[from..to]`, eight bytes at a time.
pub fn find_byte(hay: &[u8], from: usize, to: usize, b: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO * u64::from(b);
    let mut i = from;
    while i + 8 <= to {
        let mut word = [0u8; 8];
        word.copy_from_slice(&hay[i..i + 8]);
        let v = u64::from_le_bytes(word) ^ pattern;
        if (v.wrapping_sub(LO) & !v & HI) != 0 {
            break; // a byte equal to `b` in these eight (or a borrow artefact): look closely
        }
        i += 8;
    }
    (i..to).find(|&j| hay[j] == b)
}

/// Reports every match of `prefix` starting in `hay[..limit]` (a match may run past `limit`, up to
/// `hay.len()`).
pub fn scan(hay: &[u8], limit: usize, prefix: &[u8], max_len: usize, out: &mut impl Sink) {
    let mut i = 0;
    while let Some(at) = find_byte(hay, i, limit, prefix[0]) {
        i = at + 1;
        if hay.len() - at < prefix.len() || &hay[at..at + prefix.len()] != prefix {
            continue;
        }
        let mut end = at + prefix.len();
        while end < hay.len() && end - at < max_len && (0x20..0x7f).contains(&hay[end]) {
            end += 1;
        }
        out.found(&hay[at..end]);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    struct Collect(Vec<Vec<u8>>);

    impl Sink for Collect {
        fn found(&mut self, text: &[u8]) {
            self.0.push(text.to_vec());
        }
    }

    #[test]
    fn find_byte_agrees_with_a_plain_search() {
        let hay: Vec<u8> = (0..1000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        for b in [0u8, 1, 0x50, 0x80, 0xff] {
            for from in [0, 1, 7, 8, 9, 500] {
                for to in [from, from + 3, 999, 1000] {
                    let want = (from..to).find(|&j| hay[j] == b);
                    assert_eq!(find_byte(&hay, from, to, b), want, "b {b:#x} {from}..{to}");
                }
            }
        }
    }

    #[test]
    fn scan_reports_each_match_with_its_printable_tail() {
        let mut hay = Vec::new();
        hay.extend_from_slice(b"\0\0PCNIC-PRE t seq=1\nPCNIC-POST t seq=2\0\xffPCNIC");
        hay.extend_from_slice(b"PCNIC-PRE t seq=3");
        let mut c = Collect(Vec::new());
        scan(&hay, hay.len(), b"PCNIC-", 96, &mut c);
        let want: [&[u8]; 3] = [
            b"PCNIC-PRE t seq=1",
            b"PCNIC-POST t seq=2",
            b"PCNIC-PRE t seq=3",
        ];
        assert_eq!(c.0, want);
    }

    #[test]
    fn scan_stops_at_limit_and_max_len() {
        let hay = b"xxPCNIC-PRE 0123456789PCNIC-POST";
        let mut c = Collect(Vec::new());
        scan(hay, 22, b"PCNIC-", 12, &mut c);
        let want: [&[u8]; 1] = [b"PCNIC-PRE 01"];
        assert_eq!(c.0, want);
    }
}
