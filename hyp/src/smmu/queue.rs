//! Circular queue index arithmetic (section 3.5, "Command and Event queues").
//!
//! Each SMMU queue has `2^log2size` entries. A producer index (PROD.WR) and a consumer index
//! (CONS.RD) each carry the entry number in bits `[log2size-1:0]` and a wrap flag in bit
//! `[log2size]` that toggles every time the index passes the end of the queue. The queue is empty
//! when both indexes and wrap flags are equal, and full when the indexes are equal and the wrap
//! flags differ. Indexes of up to 2^19 entries fit the registers' 20-bit WR/RD fields.
//!
//! The same arithmetic serves the physical queues Portcullis produces into (its Command queue) and
//! consumes from (the Event queue), and the emulated queues whose indexes the host writes.

use core::fmt;

use tock_registers::LocalRegisterCopy;

use super::regs::{CMDQ_CONS, CMDQ_PROD, OUTQ_CONS, OUTQ_PROD};

/// A queue index with its wrap flag, for a queue of `2^log2_size` entries.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueueIndex {
    log2_size: u8,
    /// Index in bits `[log2_size-1:0]`, wrap flag in bit `[log2_size]`.
    value: u32,
}

impl QueueIndex {
    /// Largest queue the 20-bit WR/RD fields can index: 2^19 entries.
    pub const MAX_LOG2_SIZE: u8 = 19;

    /// Index 0, wrap 0.
    ///
    /// # Panics
    ///
    /// If `log2_size` exceeds [`Self::MAX_LOG2_SIZE`]; callers clamp the host's LOG2SIZE first
    /// (see [`clamp_log2_size`]).
    pub const fn zero(log2_size: u8) -> Self {
        assert!(
            log2_size <= Self::MAX_LOG2_SIZE,
            "QueueIndex: log2 size above 19"
        );
        Self {
            log2_size,
            value: 0,
        }
    }

    /// The index held in a PROD.WR / CONS.RD field value. Bits above the wrap flag are ignored, as
    /// the SMMU ignores them.
    pub const fn from_field(log2_size: u8, field: u32) -> Self {
        let zero = Self::zero(log2_size);
        Self {
            log2_size,
            value: field & zero.value_mask(),
        }
    }

    /// The value to place in the WR / RD field.
    pub const fn field(self) -> u32 {
        self.value
    }

    pub const fn log2_size(self) -> u8 {
        self.log2_size
    }

    /// Number of entries in the queue.
    pub const fn capacity(self) -> u32 {
        1 << self.log2_size
    }

    /// The entry number, `0..capacity`.
    pub const fn index(self) -> u32 {
        self.value & (self.capacity() - 1)
    }

    /// The wrap flag.
    pub const fn wrap(self) -> bool {
        self.value & self.capacity() != 0
    }

    const fn value_mask(self) -> u32 {
        (self.capacity() << 1) - 1
    }

    /// The index `n` entries further on (wrapping, toggling the wrap flag as it passes the end).
    pub const fn advance(self, n: u32) -> Self {
        Self {
            log2_size: self.log2_size,
            value: self.value.wrapping_add(n) & self.value_mask(),
        }
    }

    /// Byte offset of the entry in a queue of `entry_size`-byte entries.
    pub const fn byte_offset(self, entry_size: usize) -> usize {
        self.index() as usize * entry_size
    }
}

impl fmt::Debug for QueueIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.index(), if self.wrap() { "w" } else { "" })
    }
}

/// Clamps a LOG2SIZE written to a queue base register: values above the implemented maximum
/// (`IDR1.CMDQS`/`EVENTQS`/`PRIQS`) behave as that maximum (sections 6.3.26, 6.3.29).
pub fn clamp_log2_size(requested: u8, implemented_max: u8) -> u8 {
    requested
        .min(implemented_max)
        .min(QueueIndex::MAX_LOG2_SIZE)
}

/// A queue's producer and consumer positions.
///
/// Both must belong to the same queue size; a producer that has run past the consumer by more
/// than a queue (which the host can write into the emulated registers) is not representable as
/// such and is reported by [`QueuePair::new`] as [`QueueError::Overrun`] (the entries it claims
/// cannot all be valid).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueuePair {
    pub prod: QueueIndex,
    pub cons: QueueIndex,
}

/// What can be wrong with a pair of queue indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// The two indexes were made for different queue sizes (a Portcullis bug if it ever shows).
    SizeMismatch,
    /// A producer claims more entries than the queue holds.
    Overrun,
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SizeMismatch => write!(f, "queue indexes of different queue sizes"),
            Self::Overrun => write!(f, "producer index beyond the consumer by more than a queue"),
        }
    }
}

impl QueuePair {
    /// Pairs two indexes of the same queue.
    pub fn new(prod: QueueIndex, cons: QueueIndex) -> Result<Self, QueueError> {
        if prod.log2_size != cons.log2_size {
            return Err(QueueError::SizeMismatch);
        }
        // With wrap flags, the distance prod - cons (mod 2 * capacity) is at most capacity
        // for any reachable state; anything larger is a producer that lapped the consumer.
        let pair = Self { prod, cons };
        if pair.raw_distance() > prod.capacity() {
            return Err(QueueError::Overrun);
        }
        Ok(pair)
    }

    fn raw_distance(&self) -> u32 {
        self.prod.value.wrapping_sub(self.cons.value) & self.prod.value_mask()
    }

    /// Whether there is nothing to consume.
    pub fn is_empty(&self) -> bool {
        self.prod.value == self.cons.value
    }

    /// Whether there is no room to produce: same index, different wrap flags.
    pub fn is_full(&self) -> bool {
        self.prod.index() == self.cons.index() && self.prod.wrap() != self.cons.wrap()
    }

    /// Entries produced and not yet consumed (the distance from consumer to producer).
    pub fn len(&self) -> u32 {
        self.raw_distance()
    }

    /// Entries the producer may still write.
    pub fn free(&self) -> u32 {
        self.prod.capacity() - self.len()
    }

    /// Whether `index` is one of the produced, not yet consumed entries.
    pub fn holds(&self, index: QueueIndex) -> bool {
        let from_cons = index.value.wrapping_sub(self.cons.value) & self.cons.value_mask();
        index.log2_size == self.cons.log2_size && from_cons < self.len()
    }
}

/// `SMMU_CMDQ_CONS.ERR`: why the Command queue stopped (section 7.1, "Command queue errors").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CommandQueueError {
    /// CERROR_NONE: only for completeness, never reported.
    None = 0x00,
    /// CERROR_ILL: a command was illegal (unknown opcode, reserved field value, unsupported).
    Illegal = 0x01,
    /// CERROR_ABT: an external abort on reading the queue.
    Abort = 0x02,
    /// CERROR_ATC_INV_SYNC: a CMD_SYNC failed to complete earlier CMD_ATC_INVs (ATS timeout).
    AtcInvSync = 0x03,
}

impl CommandQueueError {
    /// Decodes ERR; other values are IMPLEMENTATION DEFINED or Reserved.
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            0x00 => Some(Self::None),
            0x01 => Some(Self::Illegal),
            0x02 => Some(Self::Abort),
            0x03 => Some(Self::AtcInvSync),
            _ => None,
        }
    }

    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The specification's name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::None => "CERROR_NONE",
            Self::Illegal => "CERROR_ILL",
            Self::Abort => "CERROR_ABT",
            Self::AtcInvSync => "CERROR_ATC_INV_SYNC",
        }
    }
}

impl fmt::Display for CommandQueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `SMMU_CMDQ_PROD` decoded for a queue of a given size.
pub fn cmdq_prod(log2_size: u8, reg: u32) -> QueueIndex {
    let r = LocalRegisterCopy::<u32, CMDQ_PROD::Register>::new(reg);
    QueueIndex::from_field(log2_size, r.read(CMDQ_PROD::WR))
}

/// `SMMU_CMDQ_PROD` register value for an index.
pub fn cmdq_prod_value(prod: QueueIndex) -> u32 {
    (CMDQ_PROD::WR.val(prod.field())).value
}

/// `SMMU_CMDQ_CONS`: the consumer index and the error code (meaningful while `GERROR.CMDQ_ERR`
/// is active). The raw error code is kept because codes above 3 are IMPLEMENTATION DEFINED.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmdqCons {
    pub rd: QueueIndex,
    pub err: u8,
}

impl CmdqCons {
    pub fn decode(log2_size: u8, reg: u32) -> Self {
        let r = LocalRegisterCopy::<u32, CMDQ_CONS::Register>::new(reg);
        Self {
            rd: QueueIndex::from_field(log2_size, r.read(CMDQ_CONS::RD)),
            err: r.read(CMDQ_CONS::ERR) as u8,
        }
    }

    pub fn encode(&self) -> u32 {
        (CMDQ_CONS::RD.val(self.rd.field()) + CMDQ_CONS::ERR.val(u32::from(self.err))).value
    }

    /// The architected error, if the code is one.
    pub fn error(&self) -> Option<CommandQueueError> {
        CommandQueueError::from_code(self.err)
    }
}

/// `SMMU_EVENTQ_PROD` / `SMMU_PRIQ_PROD`: the producer index and the overflow flag.
///
/// The SMMU toggles OVFLG when it has to discard a record because the queue is full and no
/// overflow is already pending; software acknowledges by copying OVFLG into CONS.OVACKFLG
/// (section 7.4, "Event queue overflow"). An overflow is pending while the two differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputQueueProd {
    pub wr: QueueIndex,
    pub ovflg: bool,
}

impl OutputQueueProd {
    pub fn decode(log2_size: u8, reg: u32) -> Self {
        let r = LocalRegisterCopy::<u32, OUTQ_PROD::Register>::new(reg);
        Self {
            wr: QueueIndex::from_field(log2_size, r.read(OUTQ_PROD::WR)),
            ovflg: r.is_set(OUTQ_PROD::OVFLG),
        }
    }

    pub fn encode(&self) -> u32 {
        (OUTQ_PROD::WR.val(self.wr.field()) + OUTQ_PROD::OVFLG.val(u32::from(self.ovflg))).value
    }

    /// Whether an overflow has happened that `cons` has not acknowledged.
    pub fn overflow_pending(&self, cons: &OutputQueueCons) -> bool {
        self.ovflg != cons.ovackflg
    }

    /// Records that a record was lost to a full queue: toggles OVFLG unless an overflow is already
    /// pending (a second overflow cannot be signalled).
    pub fn record_overflow(&mut self, cons: &OutputQueueCons) {
        if !self.overflow_pending(cons) {
            self.ovflg = !self.ovflg;
        }
    }
}

/// `SMMU_EVENTQ_CONS` / `SMMU_PRIQ_CONS`: the consumer index and the overflow acknowledgement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputQueueCons {
    pub rd: QueueIndex,
    pub ovackflg: bool,
}

impl OutputQueueCons {
    pub fn decode(log2_size: u8, reg: u32) -> Self {
        let r = LocalRegisterCopy::<u32, OUTQ_CONS::Register>::new(reg);
        Self {
            rd: QueueIndex::from_field(log2_size, r.read(OUTQ_CONS::RD)),
            ovackflg: r.is_set(OUTQ_CONS::OVACKFLG),
        }
    }

    pub fn encode(&self) -> u32 {
        (OUTQ_CONS::RD.val(self.rd.field()) + OUTQ_CONS::OVACKFLG.val(u32::from(self.ovackflg)))
            .value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wrap_and_full() {
        // A 4-entry queue: after 4 productions the index is back at 0 with the wrap flag set,
        // which against a consumer at 0 (no wrap) is "full".
        let cons = QueueIndex::zero(2);
        let prod = cons.advance(4);
        assert_eq!((prod.index(), prod.wrap()), (0, true));
        assert_eq!(prod.field(), 0b100);
        let q = QueuePair::new(prod, cons).expect("valid pair");
        assert!(q.is_full() && !q.is_empty());
        assert_eq!((q.len(), q.free()), (4, 0));
        // Eight productions: both wrap flags equal again.
        assert_eq!(cons.advance(8), cons);
        // One too many is an overrun.
        let bad = QueueIndex::from_field(2, 0b101);
        assert_eq!(
            QueuePair::new(bad, QueueIndex::from_field(2, 0b000)),
            Err(QueueError::Overrun)
        );
    }

    #[test]
    fn register_views() {
        // CMDQ_CONS with ERR = CERROR_ILL (section 7.1) and RD = 5 in a 16-entry queue.
        let cons = CmdqCons::decode(4, 0x0100_0005);
        assert_eq!(cons.error(), Some(CommandQueueError::Illegal));
        assert_eq!(cons.rd.index(), 5);
        assert_eq!(cons.encode(), 0x0100_0005);
        // Bits above the wrap flag are ignored.
        assert_eq!(cmdq_prod(4, 0xfff_ff23).field(), 0x03);
        assert_eq!(cmdq_prod_value(QueueIndex::from_field(4, 0x13)), 0x13);
        // EVTQ_PROD with OVFLG set.
        let prod = OutputQueueProd::decode(3, 0x8000_0009);
        assert!(prod.ovflg);
        assert_eq!((prod.wr.index(), prod.wr.wrap()), (1, true));
        assert_eq!(prod.encode(), 0x8000_0009);
        let cons = OutputQueueCons::decode(3, 0x0000_0001);
        assert!(prod.overflow_pending(&cons));
    }

    #[test]
    fn overflow_flag_semantics() {
        let cons = OutputQueueCons {
            rd: QueueIndex::zero(3),
            ovackflg: false,
        };
        let mut prod = OutputQueueProd {
            wr: QueueIndex::zero(3),
            ovflg: false,
        };
        prod.record_overflow(&cons);
        assert!(prod.ovflg && prod.overflow_pending(&cons));
        // A second overflow while the first is unacknowledged changes nothing.
        prod.record_overflow(&cons);
        assert!(prod.ovflg);
        // The consumer acknowledges by copying the flag; a new overflow toggles it back.
        let cons = OutputQueueCons {
            ovackflg: prod.ovflg,
            ..cons
        };
        assert!(!prod.overflow_pending(&cons));
        prod.record_overflow(&cons);
        assert!(!prod.ovflg && prod.overflow_pending(&cons));
        assert_eq!(
            CommandQueueError::from_code(3),
            Some(CommandQueueError::AtcInvSync)
        );
        assert_eq!(CommandQueueError::from_code(4), None);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Produce(u32),
        Consume(u32),
    }

    fn ops() -> impl Strategy<Value = (u8, alloc::vec::Vec<Op>)> {
        (0u8..=QueueIndex::MAX_LOG2_SIZE).prop_flat_map(|log2| {
            let cap = 1u32 << log2;
            let op = prop_oneof![
                (0..=cap).prop_map(Op::Produce),
                (0..=cap).prop_map(Op::Consume)
            ];
            (Just(log2), proptest::collection::vec(op, 0..64))
        })
    }

    proptest! {
        /// Against a model counter: producing and consuming at most what fits keeps the empty and
        /// full tests, the length and the free space consistent.
        #[test]
        fn full_empty_invariants((log2, ops) in ops()) {
            let cap = 1u32 << log2;
            let mut prod = QueueIndex::zero(log2);
            let mut cons = QueueIndex::zero(log2);
            let mut model = 0u32;
            for op in ops {
                let q = QueuePair::new(prod, cons).expect("reachable state");
                match op {
                    Op::Produce(n) => {
                        let n = n.min(q.free());
                        prod = prod.advance(n);
                        model += n;
                    }
                    Op::Consume(n) => {
                        let n = n.min(q.len());
                        cons = cons.advance(n);
                        model -= n;
                    }
                }
                let q = QueuePair::new(prod, cons).expect("reachable state");
                prop_assert_eq!(q.len(), model);
                prop_assert_eq!(q.free(), cap - model);
                prop_assert_eq!(q.is_empty(), model == 0);
                prop_assert_eq!(q.is_full(), model == cap);
                prop_assert!(!(q.is_empty() && q.is_full()));
                if model > 0 {
                    prop_assert!(q.holds(cons));
                    prop_assert!(q.holds(cons.advance(model - 1)));
                }
                prop_assert!(!q.holds(prod) || q.is_full());
            }
        }

        /// Any register value decodes; field() of a decoded index re-decodes to itself.
        #[test]
        fn any_field_value(log2 in 0u8..=19, v in any::<u32>(), n in any::<u32>()) {
            let i = QueueIndex::from_field(log2, v);
            prop_assert_eq!(QueueIndex::from_field(log2, i.field()), i);
            prop_assert!(i.index() < i.capacity());
            let j = i.advance(n);
            prop_assert!(j.index() < j.capacity());
            let _ = QueuePair::new(i, QueueIndex::from_field(log2, n));
        }
    }
}
