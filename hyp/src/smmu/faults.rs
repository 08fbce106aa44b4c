//! Fault bookkeeping: what Portcullis keeps of the SMMU's fault records once it has drained them.
//!
//! Three pieces, all pure data:
//! - [`FaultRing`]: a bounded ring of [`FaultRecord`]s (the evidence handed to the capture kernel).
//!   When it is full the *oldest* records are kept and newer ones are counted as overflowed: after
//!   the fence the first late transactions of each device are what tells which device misbehaved,
//!   later ones mostly repeat them. Nothing is ever lost silently: every record pushed is either in
//!   the ring, was popped, or is counted in [`FaultRing::overflowed`]. Records the SMMU itself had
//!   to discard (Event queue overflow) are counted separately, as episodes, because their number is
//!   unknowable.
//! - [`StreamCounters`]: per-StreamID totals with the latest address and event, bounded in size
//!   with one "other streams" bucket.
//! - [`ConsoleLimiter`]: at most N console lines per stream, then one summary line per stream
//!   ("… and K more") each time the caller asks for summaries.
//!
//! [`FaultBook`] puts the three together for the drain loop.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

use super::StreamId;
use super::event::{Event, EventId};

/// Default capacity of the fault ring.
pub const FAULT_RING_CAPACITY: usize = 256;
/// Default number of streams tracked individually (the others share one bucket).
pub const TRACKED_STREAMS: usize = 64;
/// Default number of console lines per stream before suppression.
pub const LINES_PER_STREAM: u32 = 4;

/// One fault record, as kept for the report: the decoded essentials and the raw record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FaultRecord {
    pub sid: StreamId,
    pub event: EventId,
    /// The address the device presented (the IPA for a stage-2-only stream); 0 for events that
    /// carry none.
    pub addr: u64,
    /// The access was a write (false for reads and for events without access attributes).
    pub write: bool,
    /// The fault was raised by stage 2.
    pub stage2: bool,
    /// The record as the SMMU wrote it.
    pub raw: [u64; 4],
}

impl FaultRecord {
    /// An empty slot value (never reported).
    const EMPTY: Self = Self {
        sid: 0,
        event: EventId(0),
        addr: 0,
        write: false,
        stage2: false,
        raw: [0; 4],
    };

    /// The record for a raw event record. Records with a Reserved event number keep their
    /// StreamID and number; their address is not interpreted.
    pub fn from_raw(raw: [u64; 4]) -> Self {
        match Event::decode(raw) {
            Ok(event) => Self::from_event(&event, raw),
            Err(_) => Self {
                sid: (raw[0] >> 32) as StreamId,
                event: EventId(raw[0] as u8),
                addr: 0,
                write: false,
                stage2: false,
                raw,
            },
        }
    }

    /// The record for a decoded event and the raw record it came from.
    pub fn from_event(event: &Event, raw: [u64; 4]) -> Self {
        let (addr, write, stage2) = match *event {
            Event::Translation(t)
            | Event::AddrSize(t)
            | Event::Access(t)
            | Event::Permission(t) => (t.input_addr, !t.access.read, t.stage2),
            Event::WalkEabt {
                access,
                stage2,
                input_addr,
                ..
            }
            | Event::TlbConflict {
                access,
                stage2,
                input_addr,
                ..
            } => (input_addr, !access.read, stage2),
            Event::Uut {
                access, input_addr, ..
            } => (input_addr, !access.read, false),
            Event::TranslForbidden {
                read, input_addr, ..
            } => (input_addr, !read, false),
            Event::BadAtsTreq { input_addr, .. } | Event::PageRequest { input_addr, .. } => {
                (input_addr, false, false)
            }
            _ => (0, false, false),
        };
        Self {
            sid: event.sid(),
            event: event.id(),
            addr,
            write,
            stage2,
            raw,
        }
    }
}

impl fmt::Display for FaultRecord {
    /// One console line, e.g. `F_TRANSLATION sid 0x8: write at 0x7c001000 (stage 2)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} sid {:#x}", self.event, self.sid)?;
        if self.addr != 0 || self.write || self.stage2 {
            let rw = if self.write { "write" } else { "read" };
            write!(f, ": {rw} at {:#x}", self.addr)?;
            if self.stage2 {
                write!(f, " (stage 2)")?;
            }
        }
        Ok(())
    }
}

/// A bounded ring of fault records that keeps the oldest and counts the rest.
#[derive(Clone, Debug)]
pub struct FaultRing<const N: usize> {
    slots: [FaultRecord; N],
    /// Index of the oldest record.
    head: usize,
    len: usize,
    /// Records refused because the ring was full.
    overflowed: u64,
    /// Event queue overflows the SMMU reported (each is one or more records it discarded).
    hardware_overflows: u64,
    /// Records pushed, stored or not.
    pushed: u64,
}

impl<const N: usize> Default for FaultRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FaultRing<N> {
    pub const fn new() -> Self {
        assert!(N > 0, "FaultRing: capacity 0");
        Self {
            slots: [FaultRecord::EMPTY; N],
            head: 0,
            len: 0,
            overflowed: 0,
            hardware_overflows: 0,
            pushed: 0,
        }
    }

    pub const fn capacity(&self) -> usize {
        N
    }

    pub const fn len(&self) -> usize {
        self.len
    }

    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Records refused because the ring was full.
    pub const fn overflowed(&self) -> u64 {
        self.overflowed
    }

    /// Records pushed in total (stored, since popped, or overflowed).
    pub const fn pushed(&self) -> u64 {
        self.pushed
    }

    /// Event queue overflow episodes reported by the SMMU (records lost before Portcullis saw them).
    pub const fn hardware_overflows(&self) -> u64 {
        self.hardware_overflows
    }

    /// Keeps `record` if there is room; otherwise counts it as overflowed. Returns whether it was
    /// stored.
    pub fn push(&mut self, record: FaultRecord) -> bool {
        self.pushed += 1;
        if self.len == N {
            self.overflowed += 1;
            return false;
        }
        self.slots[(self.head + self.len) % N] = record;
        self.len += 1;
        true
    }

    /// Counts one Event queue overflow episode reported by the SMMU.
    pub fn note_hardware_overflow(&mut self) {
        self.hardware_overflows += 1;
    }

    /// The oldest record, left in place (for a consumer that may fail to take it).
    pub fn front(&self) -> Option<&FaultRecord> {
        (self.len > 0).then(|| &self.slots[self.head])
    }

    /// Drops every stored record (they stay counted in `pushed` and in the per-stream counters):
    /// the fence starts the ring over, so that it holds what the fence caused, not the oldest
    /// records since boot.
    pub fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }

    /// Takes the oldest record.
    pub fn pop(&mut self) -> Option<FaultRecord> {
        if self.len == 0 {
            return None;
        }
        let record = self.slots[self.head];
        self.head = (self.head + 1) % N;
        self.len -= 1;
        Some(record)
    }

    /// The records, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &FaultRecord> + '_ {
        (0..self.len).map(move |i| &self.slots[(self.head + i) % N])
    }
}

/// What is known about the faults of one stream (or of the "other streams" bucket).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamFaultStats {
    pub count: u64,
    /// Of `count`, the refused writes (what could have changed memory).
    pub writes: u64,
    pub last_addr: u64,
    pub last_event: EventId,
    pub last_write: bool,
}

impl StreamFaultStats {
    const ZERO: Self = Self {
        count: 0,
        writes: 0,
        last_addr: 0,
        last_event: EventId(0),
        last_write: false,
    };

    fn record(&mut self, r: &FaultRecord) {
        self.count += 1;
        self.writes += u64::from(r.write);
        self.last_addr = r.addr;
        self.last_event = r.event;
        self.last_write = r.write;
    }
}

/// Per-StreamID fault counters, at most `capacity` streams individually; faults of further
/// streams go to one "other streams" bucket.
#[derive(Clone, Debug)]
pub struct StreamCounters {
    streams: BTreeMap<StreamId, StreamFaultStats>,
    capacity: usize,
    other: StreamFaultStats,
}

impl StreamCounters {
    pub fn new(capacity: usize) -> Self {
        Self {
            streams: BTreeMap::new(),
            capacity,
            other: StreamFaultStats::ZERO,
        }
    }

    pub fn record(&mut self, r: &FaultRecord) {
        if let Some(stats) = self.streams.get_mut(&r.sid) {
            stats.record(r);
        } else if self.streams.len() < self.capacity {
            let mut stats = StreamFaultStats::ZERO;
            stats.record(r);
            self.streams.insert(r.sid, stats);
        } else {
            self.other.record(r);
        }
    }

    /// The stream's counters, if it is tracked individually.
    pub fn get(&self, sid: StreamId) -> Option<&StreamFaultStats> {
        self.streams.get(&sid)
    }

    /// The bucket of the streams beyond the capacity.
    pub fn other(&self) -> &StreamFaultStats {
        &self.other
    }

    /// The individually tracked streams, by StreamID.
    pub fn iter(&self) -> impl Iterator<Item = (StreamId, &StreamFaultStats)> + '_ {
        self.streams.iter().map(|(&sid, s)| (sid, s))
    }

    /// Faults counted in total.
    pub fn total(&self) -> u64 {
        self.streams.values().map(|s| s.count).sum::<u64>() + self.other.count
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct LimiterEntry {
    printed: u32,
    suppressed: u64,
}

/// A summary line: `suppressed` faults of `sid` (or of untracked streams) were not printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// `None` for the "other streams" bucket.
    pub sid: Option<StreamId>,
    pub suppressed: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.sid {
            Some(sid) => write!(f, "sid {sid:#x}: … and {} more faults", self.suppressed),
            None => write!(f, "other streams: … and {} more faults", self.suppressed),
        }
    }
}

/// Rate limiter for console lines: the first `per_stream` faults of a stream are printed, the
/// rest are counted and reported as one summary line per stream by [`ConsoleLimiter::summaries`].
/// Bounded like [`StreamCounters`]: streams beyond the capacity share one entry.
#[derive(Clone, Debug)]
pub struct ConsoleLimiter {
    per_stream: u32,
    capacity: usize,
    streams: BTreeMap<StreamId, LimiterEntry>,
    other: LimiterEntry,
}

impl ConsoleLimiter {
    pub fn new(per_stream: u32, capacity: usize) -> Self {
        Self {
            per_stream,
            capacity,
            streams: BTreeMap::new(),
            other: LimiterEntry::default(),
        }
    }

    /// Whether a line for a fault of `sid` may be printed now. Either way the fault is counted.
    pub fn admit(&mut self, sid: StreamId) -> bool {
        let entry = if let Some(e) = self.streams.get_mut(&sid) {
            e
        } else if self.streams.len() < self.capacity {
            self.streams.entry(sid).or_default()
        } else {
            &mut self.other
        };
        if entry.printed < self.per_stream {
            entry.printed += 1;
            true
        } else {
            entry.suppressed += 1;
            false
        }
    }

    /// One summary per stream that had lines suppressed since the last call, in StreamID order
    /// (the "other streams" bucket last). The suppressed counts start again from zero; streams
    /// that used up their lines stay silent.
    pub fn summaries(&mut self) -> Vec<Summary> {
        let mut out: Vec<Summary> = self
            .streams
            .iter_mut()
            .filter(|(_, e)| e.suppressed > 0)
            .map(|(&sid, e)| Summary {
                sid: Some(sid),
                suppressed: core::mem::take(&mut e.suppressed),
            })
            .collect();
        if self.other.suppressed > 0 {
            out.push(Summary {
                sid: None,
                suppressed: core::mem::take(&mut self.other.suppressed),
            });
        }
        out
    }
}

/// The fault ring, the per-stream counters and the console limiter, fed together.
#[derive(Clone, Debug)]
pub struct FaultBook {
    pub ring: FaultRing<FAULT_RING_CAPACITY>,
    pub streams: StreamCounters,
    pub console: ConsoleLimiter,
}

impl Default for FaultBook {
    fn default() -> Self {
        Self::new(LINES_PER_STREAM)
    }
}

impl FaultBook {
    pub fn new(lines_per_stream: u32) -> Self {
        Self {
            ring: FaultRing::new(),
            streams: StreamCounters::new(TRACKED_STREAMS),
            console: ConsoleLimiter::new(lines_per_stream, TRACKED_STREAMS),
        }
    }

    /// Keeps a record; returns whether a console line should be printed for it.
    pub fn record(&mut self, record: FaultRecord) -> bool {
        self.streams.record(&record);
        self.ring.push(record);
        self.console.admit(record.sid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smmu::Pa;
    use crate::smmu::event::Origin;
    use proptest::prelude::*;

    #[test]
    fn front_then_clear() {
        let mut ring = FaultRing::<4>::new();
        assert!(ring.front().is_none());
        for addr in [0x1000, 0x2000, 0x3000] {
            ring.push(FaultRecord {
                addr,
                ..FaultRecord::EMPTY
            });
        }
        assert_eq!(ring.front().map(|r| r.addr), Some(0x1000));
        assert_eq!(ring.len(), 3, "front leaves the record in place");
        ring.clear();
        assert!(ring.is_empty() && ring.front().is_none());
        assert_eq!(ring.pushed(), 3);
        ring.push(FaultRecord {
            addr: 0x4000,
            ..FaultRecord::EMPTY
        });
        assert_eq!(ring.pop().map(|r| r.addr), Some(0x4000));
    }

    fn translation(sid: StreamId, addr: u64, write: bool) -> Event {
        crate::smmu::event::stage2_translation_fault(sid, addr, write)
    }

    fn record(sid: StreamId, addr: u64) -> FaultRecord {
        let e = translation(sid, addr, true);
        FaultRecord::from_event(&e, e.encode())
    }

    #[test]
    fn record_from_raw() {
        let e = translation(8, 0x7c00_1234, true);
        let r = FaultRecord::from_raw(e.encode());
        assert_eq!(
            (r.sid, r.event, r.addr),
            (8, EventId::F_TRANSLATION, 0x7c00_1234)
        );
        assert!(r.write && r.stage2);
        assert_eq!(
            alloc::format!("{r}"),
            "F_TRANSLATION sid 0x8: write at 0x7c001234 (stage 2)"
        );
        // A Reserved event number keeps StreamID and number.
        let r = FaultRecord::from_raw([0x0000_0005_0000_0077, 1, 2, 3]);
        assert_eq!((r.sid, r.event, r.addr), (5, EventId(0x77), 0));
        assert_eq!(alloc::format!("{r}"), "event 0x77 sid 0x5");
        let e = Event::SteFetch {
            origin: Origin::stream(3),
            reason: 0,
            gpcf: false,
            fetch_addr: Pa(0x1000),
        };
        let r = FaultRecord::from_event(&e, e.encode());
        assert_eq!((r.addr, r.write, r.stage2), (0, false, false));
        assert_eq!(alloc::format!("{r}"), "F_STE_FETCH sid 0x3");
    }

    #[test]
    fn ring_keeps_oldest_and_counts_overflow() {
        let mut ring = FaultRing::<4>::new();
        for i in 0..6 {
            let stored = ring.push(record(1, i * 0x1000));
            assert_eq!(stored, i < 4);
        }
        assert_eq!((ring.len(), ring.overflowed(), ring.pushed()), (4, 2, 6));
        let addrs: Vec<u64> = ring.iter().map(|r| r.addr).collect();
        assert_eq!(addrs, [0, 0x1000, 0x2000, 0x3000]);
        assert_eq!(ring.pop().map(|r| r.addr), Some(0));
        assert!(ring.push(record(1, 0x9000)));
        let addrs: Vec<u64> = ring.iter().map(|r| r.addr).collect();
        assert_eq!(addrs, [0x1000, 0x2000, 0x3000, 0x9000]);
        ring.note_hardware_overflow();
        assert_eq!(ring.hardware_overflows(), 1);
        while ring.pop().is_some() {}
        assert!(ring.is_empty());
    }

    #[test]
    fn per_stream_counters_bounded() {
        let mut c = StreamCounters::new(2);
        c.record(&record(1, 0x1000));
        c.record(&record(2, 0x2000));
        c.record(&record(1, 0x3000));
        c.record(&record(3, 0x4000));
        c.record(&record(4, 0x5000));
        let s1 = c.get(1).copied().expect("tracked");
        assert_eq!(
            (s1.count, s1.last_addr, s1.last_event),
            (2, 0x3000, EventId::F_TRANSLATION)
        );
        assert!(s1.last_write);
        assert!(c.get(3).is_none());
        assert_eq!((c.other().count, c.other().last_addr), (2, 0x5000));
        assert_eq!(c.total(), 5);
        assert_eq!(c.iter().map(|(sid, _)| sid).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn console_limiter_summaries() {
        let mut l = ConsoleLimiter::new(2, 2);
        let admitted: Vec<bool> = (0..5).map(|_| l.admit(7)).collect();
        assert_eq!(admitted, [true, true, false, false, false]);
        assert!(l.admit(9));
        // Two streams tracked; the third shares the other bucket (which also gets 2 lines).
        assert!(l.admit(10) && l.admit(11));
        assert!(!l.admit(12));
        let s = l.summaries();
        assert_eq!(
            s,
            [
                Summary {
                    sid: Some(7),
                    suppressed: 3
                },
                Summary {
                    sid: None,
                    suppressed: 1
                }
            ]
        );
        assert_eq!(alloc::format!("{}", s[0]), "sid 0x7: … and 3 more faults");
        assert_eq!(
            alloc::format!("{}", s[1]),
            "other streams: … and 1 more faults"
        );
        // Counts restart; the stream stays silent.
        assert!(l.summaries().is_empty());
        assert!(!l.admit(7));
        assert_eq!(l.summaries()[0].suppressed, 1);
    }

    #[test]
    fn fault_book_feeds_all_three() {
        let mut book = FaultBook::new(1);
        assert!(book.record(record(4, 0x1000)));
        assert!(!book.record(record(4, 0x2000)));
        assert_eq!(book.ring.len(), 2);
        assert_eq!(book.streams.get(4).map(|s| s.count), Some(2));
        assert_eq!(book.console.summaries().len(), 1);
    }

    proptest! {
        /// Nothing is lost silently: pushed == popped + held + overflowed at every step, the ring
        /// never exceeds its capacity, and records come out in the order they went in.
        #[test]
        fn ring_accounting(ops in proptest::collection::vec(any::<Option<u16>>(), 0..400)) {
            let mut ring = FaultRing::<16>::new();
            let mut popped = 0u64;
            let mut model = alloc::collections::VecDeque::new();
            for op in ops {
                match op {
                    Some(a) => {
                        let stored = ring.push(record(u32::from(a % 5), u64::from(a)));
                        prop_assert_eq!(stored, model.len() < 16);
                        if stored {
                            model.push_back(u64::from(a));
                        }
                    }
                    None => {
                        let got = ring.pop().map(|r| r.addr);
                        prop_assert_eq!(got, model.pop_front());
                        if got.is_some() {
                            popped += 1;
                        }
                    }
                }
                prop_assert!(ring.len() <= ring.capacity());
                prop_assert_eq!(ring.pushed(), popped + ring.len() as u64 + ring.overflowed());
            }
        }

        /// Every fault is either printed or reported in exactly one summary.
        #[test]
        fn limiter_accounts_every_fault(sids in proptest::collection::vec(0u32..8, 0..200),
                                        per in 0u32..4, cap in 0usize..6) {
            let mut l = ConsoleLimiter::new(per, cap);
            let mut printed = 0u64;
            for &sid in &sids {
                if l.admit(sid) {
                    printed += 1;
                }
            }
            let suppressed: u64 = l.summaries().iter().map(|s| s.suppressed).sum();
            prop_assert_eq!(printed + suppressed, sids.len() as u64);
            prop_assert!(printed <= u64::from(per) * (cap as u64 + 1));
        }
    }
}
