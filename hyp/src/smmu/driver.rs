//! Portcullis' driver of the physical SMMUv3: bring-up, the Stream table, the Command queue and the
//! Event queue (Arm IHI 0070: 3.3 Stream table, 3.5 queues, 3.21 update rules, 6.3 registers, 7.1
//! Command queue errors, 7.4 Event queue overflow).
//!
//! The driver is portable: it reaches the SMMU through two small traits that the arch layer
//! implements, and is tested on the development host against the in-memory model of `model.rs`.
//!
//! - [`SmmuMmio`]: 32- and 64-bit register accesses at an offset from the SMMU's base (page 1 at
//!   `0x1_0000`). Plain single accesses to Device memory; the driver issues every barrier it needs
//!   itself, so the implementation adds none.
//! - [`DmaMemory`]: zeroed, aligned, Portcullis-owned memory that the SMMU reads and writes (the
//!   Stream table and the queues), and the three barriers that order CPU accesses to it against the
//!   SMMU's view:
//!   - [`DmaMemory::wmb`] between writing STEs, L1STDs or commands and the write that lets the SMMU
//!     see them (a `CMDQ_PROD` update, an L1STD that makes a level 2 table reachable, a
//!     `GERRORN` acknowledgement that restarts the queue). Section 3.21.2 asks for "a DSB";
//!   - [`DmaMemory::rmb`] between reading `EVENTQ_PROD` and reading the records it publishes;
//!   - [`DmaMemory::mb`] between reading records and writing `EVENTQ_CONS`, which hands their slots
//!     back to the SMMU.
//!
//! Every wait is a bounded poll ([`POLL_LIMIT`] register reads by default) that ends in
//! [`SmmuError::Timeout`] naming what did not happen. Nothing here panics on what the SMMU
//! reports; panics are reserved for broken invariants of the driver itself.
//!
//! Interrupts stay off (`IRQ_CTRL = 0`): Portcullis drains the Event queue whenever it runs.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::Cell;
use core::fmt;
use core::ptr::NonNull;

use super::cmd::{Command, CommandError, ResumeAction, Sync as SyncCommand};
use super::event::{EVENT_SIZE, Event, EventError, EventId};
use super::queue::{
    CmdqCons, CommandQueueError, OutputQueueCons, OutputQueueProd, QueueIndex, QueuePair,
    cmdq_prod_value,
};
use super::regs::{
    CR0, CR1, CR2, GBPA, GERROR, QUEUE_BASE, STRTAB_BASE, SmmuFeatures, StallModel,
    TableEndianness, TableFormats, offset,
};
use super::ste::{
    AttrOverrides, Granule, L1STD_SIZE, L1Std, STE_SIZE, STE0, Stage2Config, Ste, SteLocation,
    StreamConfig, StreamTableFormat, StreamTableLayout, WalkAttrs,
};
use super::{Pa, StreamId};
use crate::prof::{self, Stage};
use crate::stage2::Stage2Table;

/// Register reads a poll makes before giving up. An SMMU register read takes well under a
/// microsecond, so this is at least tens of milliseconds: far beyond any architected update.
pub const POLL_LIMIT: u32 = 1_000_000;
/// Largest Command queue Portcullis allocates: 2^8 commands, 4 KiB.
pub const CMDQ_MAX_LOG2: u8 = 8;
/// Largest Event queue Portcullis allocates: 2^12 records, 128 KiB: room for a burst of refused
/// DMA from a device that keeps going after the fence (a NIC with 255 posted receive buffers makes
/// ~500 records within a second) between two drains, so that no other device's records are lost.
pub const EVTQ_MAX_LOG2: u8 = 12;
/// StreamID bits indexing a level 2 Stream table: 256 STEs, 16 KiB per level 2 table.
pub const STRTAB_SPLIT: u8 = 8;
/// A linear Stream table is used up to this many StreamID bits (2^8 STEs, 16 KiB, four pages).
pub const LINEAR_STRTAB_MAX_BITS: u8 = 8;
/// Largest linear table on an SMMU without two-level tables: 2^16 STEs, 4 MiB.
pub const LINEAR_STRTAB_LIMIT_BITS: u8 = 16;
/// Largest level 1 table: 2^16 L1STDs, 512 KiB (24 StreamID bits with `STRTAB_SPLIT`).
pub const L1_STRTAB_LIMIT_BITS: u8 = 16;
/// Above this many STEs invalidated in one step, one CMD_CFGI_ALL replaces the CMD_CFGI_STEs.
pub const CFGI_ALL_THRESHOLD: usize = 32;

/// Register access to one SMMUv3, implemented by the arch layer with single volatile loads and
/// stores at the SMMU's base (no barriers: the driver issues them).
pub trait SmmuMmio {
    fn read32(&mut self, offset: usize) -> u32;
    fn write32(&mut self, offset: usize, value: u32);
    fn read64(&mut self, offset: usize) -> u64;
    fn write64(&mut self, offset: usize, value: u64);
}

/// Memory the SMMU reads and writes, and the barriers that order the CPU's accesses to it.
///
/// In the hypervisor the heap is identity-mapped, so a block's physical address is its pointer;
/// memory must be Normal, inner/outer write-back cacheable, inner shareable (what `CR1` announces)
/// and the SMMU coherent (`IDR0.COHACC`, required by [`check_features`]), so no cache
/// maintenance is needed.
pub trait DmaMemory {
    /// `bytes` zeroed bytes aligned to `align` (a power of two, at least 8), or `None`.
    fn alloc_zeroed(&mut self, bytes: usize, align: usize) -> Option<DmaBlock>;
    /// Orders earlier writes to DMA memory before later writes, to memory or to SMMU registers
    /// (`dsb st`; `dmb oshst` is the architectural minimum, the SMMU being an outer-shareable
    /// observer).
    fn wmb(&self);
    /// Orders an earlier SMMU register read before later reads of DMA memory (`dsb ld`, or at least
    /// `dmb oshld`).
    fn rmb(&self);
    /// Orders earlier reads and writes of DMA memory before a later SMMU register write (`dsb sy`,
    /// or at least `dmb osh`).
    fn mb(&self);
}

/// A block of [`DmaMemory`]: where it is for the CPU and for the SMMU, and volatile 64-bit access.
pub struct DmaBlock {
    base: NonNull<u64>,
    pa: Pa,
    words: usize,
}

// SAFETY: a `DmaBlock` is a handle to memory reserved for the driver and the SMMU (see
// `DmaBlock::new`); it is not tied to the thread that allocated it.
unsafe impl Send for DmaBlock {}

impl DmaBlock {
    /// A handle to `bytes` bytes at `base`, which the SMMU reaches at `pa`.
    ///
    /// # Safety
    ///
    /// `base` must be valid for volatile reads and writes of `bytes` bytes for as long as the
    /// block (and the SMMU's use of it) lives, and nothing but the holder of this block and the
    /// SMMU may access that memory meanwhile.
    ///
    /// # Panics
    ///
    /// If `base` is not 8-byte aligned or `bytes` not a multiple of 8: an allocator bug.
    pub unsafe fn new(base: NonNull<u8>, pa: Pa, bytes: usize) -> Self {
        assert!(
            (base.as_ptr() as usize).is_multiple_of(8) && bytes.is_multiple_of(8),
            "DmaBlock: {base:p}+{bytes:#x} not 8-byte aligned"
        );
        Self {
            base: base.cast(),
            pa,
            words: bytes / 8,
        }
    }

    /// Where the SMMU finds the block.
    pub fn pa(&self) -> Pa {
        self.pa
    }

    /// Size in bytes.
    pub fn bytes(&self) -> usize {
        self.words * 8
    }

    /// Reads 64-bit word `word` (a single-copy-atomic access).
    ///
    /// # Panics
    ///
    /// If `word` is beyond the block: a driver bug.
    pub fn read(&self, word: usize) -> u64 {
        assert!(word < self.words, "DmaBlock: word {word} beyond the block");
        // SAFETY: in bounds (checked above) of memory `new`'s caller promised valid and ours.
        unsafe { self.base.as_ptr().add(word).read_volatile() }
    }

    /// Writes 64-bit word `word` (a single-copy-atomic access).
    ///
    /// # Panics
    ///
    /// If `word` is beyond the block: a driver bug.
    pub fn write(&self, word: usize, value: u64) {
        assert!(word < self.words, "DmaBlock: word {word} beyond the block");
        // SAFETY: in bounds (checked above) of memory `new`'s caller promised valid and ours.
        unsafe { self.base.as_ptr().add(word).write_volatile(value) };
        #[cfg(test)]
        write_observer::notify(self.pa.0 + 8 * word as u64);
    }
}

impl fmt::Debug for DmaBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DmaBlock({} + {:#x})", self.pa, self.bytes())
    }
}

/// Host tests only: lets the SMMU model watch every write the driver makes to DMA memory, the way
/// hardware may fetch a structure between any two of the driver's stores.
#[cfg(test)]
pub(crate) mod write_observer {
    use std::boxed::Box;
    use std::cell::RefCell;

    type Observer = Box<dyn FnMut(u64)>;

    std::thread_local! {
        static OBSERVER: RefCell<Option<Observer>> = const { RefCell::new(None) };
    }

    /// Installs (or with `None` removes) this thread's observer of DMA memory writes.
    pub(crate) fn set(observer: Option<Observer>) {
        OBSERVER.with(|o| *o.borrow_mut() = observer);
    }

    pub(super) fn notify(pa: u64) {
        OBSERVER.with(|o| {
            if let Some(f) = o.borrow_mut().as_mut() {
                f(pa);
            }
        });
    }
}

/// What went wrong with a command, as the SMMU reported it (section 7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandFailure {
    /// `CMDQ_CONS.ERR` (codes above 3 are IMPLEMENTATION DEFINED).
    pub code: u8,
    /// The queue entry of the command.
    pub index: u32,
    /// The command as it was in the queue.
    pub raw: [u64; 2],
    /// The command, if it decodes.
    pub command: Option<Command>,
    /// Why the architecture makes it illegal on this SMMU, if Portcullis can tell.
    pub reason: Option<CommandError>,
}

impl fmt::Display for CommandFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match CommandQueueError::from_code(self.code) {
            Some(e) => write!(f, "{e}")?,
            None => write!(f, "command error {:#x}", self.code)?,
        }
        write!(f, " at command queue entry {}: ", self.index)?;
        match &self.command {
            Some(c) => write!(f, "{c}")?,
            None => write!(f, "[{:#018x}, {:#018x}]", self.raw[0], self.raw[1])?,
        }
        match &self.reason {
            Some(r) => write!(f, " ({r})"),
            None => Ok(()),
        }
    }
}

/// Why the driver could not do what it was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmmuError {
    /// The SMMU lacks something Portcullis needs.
    Unsupported(&'static str),
    /// The SMMU did not do something in time: an acknowledgement, an update, a command.
    Timeout(&'static str),
    /// No DMA memory for a table or queue.
    OutOfMemory { bytes: usize },
    /// [`SmmuDriver::init`] has not run (or failed).
    NotInitialized,
    /// [`SmmuDriver::init`] already ran.
    AlreadyInitialized,
    /// The StreamIDs to cover need a Stream table larger than Portcullis builds.
    StreamTableTooLarge { sid_bits: u8 },
    /// The StreamID is beyond the Stream table.
    StreamIdOutOfRange { sid: StreamId, sid_bits: u8 },
    /// The StreamID has no level 2 table and the budget of level 2 tables is spent.
    StreamTableFull { sid: StreamId, tables: usize },
    /// A stage-2 table cannot be used by this SMMU: `what` is `value`, the SMMU allows `limit`.
    Stage2Mismatch {
        what: &'static str,
        value: u64,
        limit: u64,
    },
    /// The SMMU reported a queue index that cannot be (a consumer beyond the producer).
    QueueIndex { queue: &'static str, value: u32 },
    /// The SMMU refused a command; it was replaced by a CMD_SYNC and the queue restarted.
    CommandFailed(CommandFailure),
}

impl fmt::Display for SmmuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unsupported(what) => write!(f, "SMMU unsupported: no {what}"),
            Self::Timeout(what) => write!(f, "SMMU timeout waiting for {what}"),
            Self::OutOfMemory { bytes } => {
                write!(f, "no memory for {bytes:#x} bytes of SMMU tables")
            }
            Self::NotInitialized => write!(f, "SMMU not initialised"),
            Self::AlreadyInitialized => write!(f, "SMMU already initialised"),
            Self::StreamTableTooLarge { sid_bits } => {
                write!(
                    f,
                    "a Stream table for {sid_bits} StreamID bits is too large"
                )
            }
            Self::StreamIdOutOfRange { sid, sid_bits } => {
                write!(
                    f,
                    "StreamID {sid:#x} beyond the {sid_bits}-bit Stream table"
                )
            }
            Self::StreamTableFull { sid, tables } => write!(
                f,
                "no level 2 Stream table for StreamID {sid:#x}: all {tables} allowed are in use"
            ),
            Self::Stage2Mismatch { what, value, limit } => {
                write!(f, "stage 2 {what} {value:#x} beyond the SMMU's {limit:#x}")
            }
            Self::QueueIndex { queue, value } => {
                write!(f, "inconsistent {queue} index {value:#x} from the SMMU")
            }
            Self::CommandFailed(failure) => write!(f, "SMMU refused a command: {failure}"),
        }
    }
}

/// `SMMU_GERROR` bits that are active (differ from `SMMU_GERRORN`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalErrors(pub u32);

impl GlobalErrors {
    const NAMES: [(u32, &'static str); 10] = [
        (0, "CMDQ_ERR"),
        (2, "EVTQ_ABT_ERR"),
        (3, "PRIQ_ABT_ERR"),
        (4, "MSI_CMDQ_ABT_ERR"),
        (5, "MSI_EVTQ_ABT_ERR"),
        (6, "MSI_PRIQ_ABT_ERR"),
        (7, "MSI_GERROR_ABT_ERR"),
        (8, "SFM_ERR"),
        (9, "CMDQP_ERR"),
        (10, "DPT_ERR"),
    ];

    /// `GERROR.EVENTQ_ABT_ERR`: the SMMU could not write an event record (it is lost).
    pub const EVTQ_ABT_ERR: u32 = 1 << 2;

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// Whether the error bit(s) `mask` are among these.
    pub fn has(&self, mask: u32) -> bool {
        self.0 & mask != 0
    }
}

impl fmt::Display for GlobalErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("none");
        }
        let mut first = true;
        for (bit, name) in Self::NAMES {
            if self.0 & (1 << bit) != 0 {
                write!(f, "{}{name}", if first { "" } else { " " })?;
                first = false;
            }
        }
        let unknown = self.0 & !Self::NAMES.iter().fold(0, |m, (b, _)| m | 1 << b);
        if unknown != 0 {
            write!(f, "{}{unknown:#x}", if first { "" } else { " " })?;
        }
        Ok(())
    }
}

/// Checks that Portcullis can drive an SMMU with these features: stage 2, AArch64 tables,
/// little-endian walks, the 4 KiB granule, coherent table and queue accesses, and tables and
/// queues that software places.
pub fn check_features(f: &SmmuFeatures) -> Result<(), SmmuError> {
    let need = |ok: bool, what| {
        if ok {
            Ok(())
        } else {
            Err(SmmuError::Unsupported(what))
        }
    };
    need(f.stage2, "stage 2 translation (IDR0.S2P)")?;
    need(
        matches!(f.table_formats, TableFormats::AArch64 | TableFormats::Both),
        "AArch64 translation tables (IDR0.TTF)",
    )?;
    need(
        matches!(
            f.endianness,
            TableEndianness::Mixed | TableEndianness::Little
        ),
        "little-endian table walks (IDR0.TTENDIAN)",
    )?;
    need(f.gran4k, "4 KiB granule (IDR5.GRAN4K)")?;
    need(
        f.coherent,
        "coherent table and queue accesses (IDR0.COHACC)",
    )?;
    need(
        !f.tables_preset && !f.queues_preset,
        "software-placed tables and queues (IDR1.TABLES_PRESET/QUEUES_PRESET)",
    )?;
    need(
        f.stall_model != StallModel::Reserved,
        "architected stall model (IDR0.STALL_MODEL)",
    )
}

/// The input address size of stage 2 (section 3.4): the OAS, or at least 40 bits if AArch32
/// tables are supported.
pub fn ias_bits(f: &SmmuFeatures) -> u8 {
    match f.table_formats {
        TableFormats::AArch32 | TableFormats::Both => f.oas_bits.max(40),
        _ => f.oas_bits,
    }
}

/// The stage-2 half of an STE that makes the SMMU walk `table` exactly as the CPU would with its
/// `VTTBR_EL2`/`VTCR_EL2`: same root (including a concatenated level-1 root), VMID, T0SZ and start
/// level, 4 KiB granule, write-back inner-shareable walks, output size from the SMMU's OAS (at most
/// 48 bits without LPA2), faults recorded (S2R) so every refused transaction leaves an event, and
/// access-flag faults enabled (every descriptor of a `Stage2Table` has AF set).
pub fn stage2_config(table: &Stage2Table, f: &SmmuFeatures) -> Result<Stage2Config, SmmuError> {
    let mismatch = |what, value: u64, limit: u64| SmmuError::Stage2Mismatch { what, value, limit };
    let vmid = table.vmid();
    let vmid_limit = if f.vmid16 { 0xffff } else { 0xff };
    if u64::from(vmid) > vmid_limit {
        return Err(mismatch("VMID", vmid.into(), vmid_limit));
    }
    let ipa_bits = table.ipa_bits();
    let ias = ias_bits(f);
    if ipa_bits > u32::from(ias) {
        return Err(mismatch("IPA bits", ipa_bits.into(), ias.into()));
    }
    // Without STT the smallest IPA space is 25 bits (T0SZ <= 39); Stage2Table builds >= 32.
    let t0sz = 64 - ipa_bits as u8;
    // VTCR_EL2.SL0 encodings for a 4 KiB granule: level 1 = 0b01, level 0 = 0b10.
    let sl0 = match table.start_level() {
        0 => 0b10,
        _ => 0b01,
    };
    let ps_bits = f.oas_bits.min(48);
    let root = table.root_pa();
    if root.0 >> ps_bits != 0 {
        return Err(mismatch("table root", root.0, (1u64 << ps_bits) - 1));
    }
    Ok(Stage2Config {
        vmid,
        ttb: root,
        t0sz,
        sl0,
        granule: Granule::K4,
        ps_bits,
        walk: WalkAttrs::WB_INNER_SHAREABLE,
        record_faults: true,
        // A forced-stall SMMU makes S2S == 0 ILLEGAL; the driver terminates stalled transactions
        // as it drains their events.
        stall: f.stall_model == StallModel::StallForced,
        affd: false,
        ptw: true,
    })
}

/// The STE of the normal DMA policy: stage 2 only through `table`, incoming memory attributes.
pub fn stage2_ste(table: &Stage2Table, f: &SmmuFeatures) -> Result<Ste, SmmuError> {
    Ok(Ste::stage2(
        &stage2_config(table, f)?,
        &AttrOverrides::incoming(f),
    ))
}

/// The Stream table layout for StreamIDs `0..=max_sid` on this SMMU: linear up to
/// [`LINEAR_STRTAB_MAX_BITS`] bits (or always, without two-level support), two levels with
/// [`STRTAB_SPLIT`] above.
pub fn stream_table_layout(
    f: &SmmuFeatures,
    max_sid: StreamId,
) -> Result<StreamTableLayout, SmmuError> {
    let needed = (u32::BITS - max_sid.leading_zeros()) as u8;
    let log2_size = needed.min(f.sid_bits);
    if log2_size <= LINEAR_STRTAB_MAX_BITS || !f.two_level_strtab {
        if log2_size > LINEAR_STRTAB_LIMIT_BITS {
            return Err(SmmuError::StreamTableTooLarge {
                sid_bits: log2_size,
            });
        }
        return Ok(StreamTableLayout {
            log2_size,
            format: StreamTableFormat::Linear,
        });
    }
    if log2_size - STRTAB_SPLIT > L1_STRTAB_LIMIT_BITS {
        return Err(SmmuError::StreamTableTooLarge {
            sid_bits: log2_size,
        });
    }
    Ok(StreamTableLayout {
        log2_size,
        format: StreamTableFormat::TwoLevel {
            split: STRTAB_SPLIT,
        },
    })
}

/// One event record as drained: the raw record and, unless its event number is Reserved, its
/// decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventRecord {
    pub raw: [u64; 4],
    pub event: Result<Event, EventError>,
}

impl EventRecord {
    pub fn decode(raw: [u64; 4]) -> Self {
        Self {
            raw,
            event: Event::decode(raw),
        }
    }

    pub fn id(&self) -> EventId {
        EventId(self.raw[0] as u8)
    }

    pub fn sid(&self) -> StreamId {
        (self.raw[0] >> 32) as StreamId
    }
}

/// What one [`SmmuDriver::drain_events`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainReport {
    pub records: u32,
    /// The SMMU had discarded records because the queue was full (acknowledged now).
    pub overflow: bool,
    /// Stalled transactions terminated (forced-stall SMMUs only).
    pub terminated_stalls: u32,
}

/// How the STEs of one [`SmmuDriver::write_ste`] / [`SmmuDriver::install_streams`] were written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SteWriteReport {
    /// Already as asked.
    pub unchanged: u32,
    /// Changed in one 64-bit word, in place.
    pub in_place: u32,
    /// Written into an invalid STE (filled, invalidated, then made valid).
    pub made: u32,
    /// Valid STEs changed in several words: invalidated, filled, made valid again.
    pub break_before_make: u32,
    /// STEs written into level 2 tables created by this call (before they became reachable).
    pub in_new_tables: u32,
    /// Level 2 tables created.
    pub new_tables: u32,
    /// CMD_SYNCs issued.
    pub syncs: u32,
}

/// What [`SmmuDriver::init`] set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitReport {
    pub stream_table: StreamTableLayout,
    pub cmdq_log2: u8,
    pub evtq_log2: u8,
    /// Global errors left active by whoever used the SMMU before (acknowledged now).
    pub stale_errors: GlobalErrors,
    /// GBPA before Portcullis set it to abort.
    pub previous_gbpa: u32,
}

impl fmt::Display for InitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = match self.stream_table.format {
            StreamTableFormat::Linear => "linear",
            StreamTableFormat::TwoLevel { .. } => "2-level",
        };
        write!(
            f,
            "SMMU up: stream table {st} {}b, cmdq 2^{}, evtq 2^{}, GBPA was {:#x}, stale errors {}",
            self.stream_table.log2_size,
            self.cmdq_log2,
            self.evtq_log2,
            self.previous_gbpa,
            self.stale_errors
        )
    }
}

/// Counters kept by the driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverStats {
    pub commands: u64,
    pub syncs: u64,
    pub command_errors: u64,
    pub event_records: u64,
    pub event_overflows: u64,
}

struct StreamTable {
    layout: StreamTableLayout,
    /// Linear: the STEs. Two-level: the L1STDs.
    top: DmaBlock,
    /// Two-level: the level 2 tables created so far, by L1STD index (only the StreamIDs that
    /// exist or that the host configures have one: every other L1STD stays invalid).
    l2: BTreeMap<usize, DmaBlock>,
    /// Two-level: at most this many level 2 tables (the heap's budget for them).
    l2_budget: usize,
    /// Two-level: one level 2 table every L1STD without a table of its own points at while a
    /// default STE applies (see [`SmmuDriver::set_default_ste`]): 16 KiB for any number of
    /// StreamIDs.
    shared: Option<DmaBlock>,
    /// The STE every slot of `shared` holds, while L1STDs point at it.
    default: Option<Ste>,
}

impl StreamTable {
    fn split(&self) -> Option<u8> {
        match self.layout.format {
            StreamTableFormat::Linear => None,
            StreamTableFormat::TwoLevel { split } => Some(split),
        }
    }

    fn check(&self, sid: StreamId) -> Result<SteLocation, SmmuError> {
        self.layout
            .locate(sid)
            .map_err(|_| SmmuError::StreamIdOutOfRange {
                sid,
                sid_bits: self.layout.log2_size,
            })
    }

    /// The block holding `sid`'s STE and the STE's first word, if its level 2 table exists.
    fn slot(&self, sid: StreamId) -> Result<Option<(&DmaBlock, usize)>, SmmuError> {
        Ok(match self.check(sid)? {
            SteLocation::Linear { offset } => Some((&self.top, offset as usize / 8)),
            SteLocation::TwoLevel {
                l1_offset,
                l2_index,
            } => self
                .l2
                .get(&(l1_offset as usize / L1STD_SIZE))
                .map(|b| (b, l2_index as usize * STE_SIZE / 8)),
        })
    }

    fn read(&self, sid: StreamId) -> Result<Ste, SmmuError> {
        Ok(match self.slot(sid)? {
            Some((block, w)) => Ste(core::array::from_fn(|i| block.read(w + i))),
            None => Ste::INVALID,
        })
    }

    /// Writes words `words` of `ste` into `sid`'s slot, in order.
    fn write(&self, sid: StreamId, ste: &[u64; 8], words: impl Iterator<Item = usize>) {
        let Ok(Some((block, w))) = self.slot(sid) else {
            panic!("StreamTable: writing StreamID {sid:#x} without a slot");
        };
        for i in words {
            block.write(w + i, ste[i]);
        }
    }
}

struct CommandQueue {
    mem: DmaBlock,
    /// Where the next command goes (what `CMDQ_PROD` says once published).
    prod: QueueIndex,
    /// The last `CMDQ_CONS.RD` the SMMU showed. The SMMU's index only moves forward, so the room
    /// counted from it is room the queue has: a batch that fits needs no register read first.
    cons: QueueIndex,
}

struct EventQueue {
    mem: DmaBlock,
    cons: OutputQueueCons,
}

struct Live {
    strtab: StreamTable,
    cmdq: CommandQueue,
    evtq: EventQueue,
}

/// The physical SMMUv3, driven by Portcullis.
pub struct SmmuDriver<M: SmmuMmio, D: DmaMemory> {
    mmio: M,
    dma: D,
    features: SmmuFeatures,
    live: Option<Live>,
    /// What Portcullis last wrote to `CR0`.
    cr0: u32,
    poll_limit: u32,
    stats: DriverStats,
    /// Level 2 tables the Stream table may have (see [`SmmuDriver::set_l2_budget`]).
    l2_budget: usize,
}

impl<M: SmmuMmio, D: DmaMemory> fmt::Debug for SmmuDriver<M, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmmuDriver")
            .field("features", &alloc::format!("{}", self.features))
            .field("cr0", &self.cr0)
            .field("stream_table", &self.live.as_ref().map(|l| l.strtab.layout))
            .field("stats", &self.stats)
            .finish()
    }
}

/// The plan of a batch of STE writes (see [`SmmuDriver::write_stes`]).
#[derive(Default)]
struct StePlan {
    /// Valid STEs to invalidate first (V already cleared).
    break_first: Vec<StreamId>,
    /// STEs to fill (with V == 0) once no valid copy can be cached.
    fill: Vec<StreamId>,
    /// STEs to make valid at the end.
    make_valid: Vec<StreamId>,
    /// STEs to change in one word (which), at the end.
    in_place: Vec<(StreamId, usize)>,
    /// Level 1 indexes of new level 2 tables to link at the end.
    new_tables: Vec<usize>,
    /// VMIDs whose stage 2 configuration changed under the same VMID.
    tlbi_vmids: Vec<u16>,
}

impl<M: SmmuMmio, D: DmaMemory> SmmuDriver<M, D> {
    /// Reads the ID registers and checks that Portcullis can drive this SMMU. Nothing is written.
    pub fn probe(mut mmio: M, dma: D) -> Result<Self, SmmuError> {
        let features = SmmuFeatures::from_idr(
            mmio.read32(offset::IDR0),
            mmio.read32(offset::IDR1),
            mmio.read32(offset::IDR3),
            mmio.read32(offset::IDR5),
        );
        check_features(&features)?;
        Ok(Self {
            mmio,
            dma,
            features,
            live: None,
            cr0: 0,
            poll_limit: POLL_LIMIT,
            stats: DriverStats::default(),
            l2_budget: usize::MAX,
        })
    }

    /// Limits a two-level Stream table to `tables` level 2 tables (unlimited by default): a
    /// write that would need one more fails with [`SmmuError::StreamTableFull`] before anything
    /// is written, and the StreamIDs it names stay without an STE (C_BAD_STREAMID).
    pub fn set_l2_budget(&mut self, tables: usize) {
        self.l2_budget = tables;
        if let Some(live) = self.live.as_mut() {
            live.strtab.l2_budget = tables;
        }
    }

    /// Level 2 tables created so far (0 for a linear Stream table).
    pub fn l2_tables(&self) -> usize {
        self.live.as_ref().map_or(0, |l| l.strtab.l2.len())
    }

    /// Whether `sid` has a slot in the Stream table (linear: within it; two-level: its level 2
    /// table exists), so that [`write_ste`](Self::write_ste) needs no new table for it.
    pub fn covers(&self, sid: StreamId) -> bool {
        self.live
            .as_ref()
            .is_some_and(|l| matches!(l.strtab.slot(sid), Ok(Some(_))))
    }

    /// Sets what every StreamID without a level 2 table of its own gets (two-level tables only;
    /// nothing for a linear one): `Some(ste)` points every such L1STD at one shared level 2
    /// table whose STEs are all `ste` (the host's SMMU disabled with GBPA bypass: every device,
    /// also one behind a bridge the host numbered since boot, gets stage 2 only); `None` makes
    /// them invalid again (C_BAD_STREAMID). Each change is one CMD_CFGI_ALL and a CMD_SYNC; the
    /// shared table is refilled only while no L1STD points at it (after the sync of the unlink).
    pub fn set_default_ste(&mut self, ste: Option<&Ste>) -> Result<(), SmmuError> {
        let strtab = &self.live_ref()?.strtab;
        let Some(split) = strtab.split() else {
            return Ok(());
        };
        if strtab.default.as_ref() == ste {
            return Ok(());
        }
        let entries = strtab.layout.top_level_entries() as usize;
        if strtab.default.is_some() {
            let live = self.live.as_mut().ok_or(SmmuError::NotInitialized)?;
            for l1 in (0..entries).filter(|l1| !live.strtab.l2.contains_key(l1)) {
                live.strtab.top.write(l1, 0);
            }
            live.strtab.default = None;
            self.submit(&[Command::CfgiAll])?;
        }
        let Some(ste) = ste else {
            return Ok(());
        };
        if self.live_ref()?.strtab.shared.is_none() {
            let bytes = STE_SIZE << split;
            let block = self.alloc(bytes, bytes)?;
            self.live
                .as_mut()
                .ok_or(SmmuError::NotInitialized)?
                .strtab
                .shared = Some(block);
        }
        let live = self.live.as_mut().ok_or(SmmuError::NotInitialized)?;
        let Some(shared) = live.strtab.shared.as_ref() else {
            panic!("SmmuDriver: the shared level 2 table vanished");
        };
        for i in 0..(1usize << split) {
            for (w, word) in ste.0.iter().enumerate() {
                shared.write(i * STE_SIZE / 8 + w, *word);
            }
        }
        // The shared table is complete before any L1STD makes it reachable.
        self.dma.wmb();
        let desc = L1Std::<Pa> {
            span: split + 1,
            l2_table: shared.pa(),
        }
        .encode();
        for l1 in (0..entries).filter(|l1| !live.strtab.l2.contains_key(l1)) {
            live.strtab.top.write(l1, desc);
        }
        live.strtab.default = Some(*ste);
        self.submit(&[Command::CfgiAll])
    }

    /// How many StreamIDs the default STE applies to now (0 without one).
    pub fn default_streams(&self) -> u64 {
        let Some(strtab) = self.live.as_ref().map(|l| &l.strtab) else {
            return 0;
        };
        match (strtab.split(), strtab.default) {
            (Some(split), Some(_)) => {
                let shared = strtab.layout.top_level_entries() - strtab.l2.len() as u64;
                shared << split
            }
            _ => 0,
        }
    }

    /// Gives `sid` a slot in the Stream table: with a two-level table, creates and links its
    /// level 2 table (every STE invalid) if it has none, within the budget. Fails, with nothing
    /// changed, for a StreamID beyond the table, without budget or without memory.
    pub fn reserve_stream(&mut self, sid: StreamId) -> Result<(), SmmuError> {
        let strtab = &self.live_ref()?.strtab;
        strtab.check(sid)?;
        let Some(split) = strtab.split() else {
            return Ok(());
        };
        let l1 = (sid >> split) as usize;
        if strtab.l2.contains_key(&l1) {
            return Ok(());
        }
        if strtab.l2.len() >= strtab.l2_budget {
            return Err(SmmuError::StreamTableFull {
                sid,
                tables: strtab.l2_budget,
            });
        }
        let bytes = STE_SIZE << split;
        let block = self.alloc(bytes, bytes)?;
        // The zeroed table is complete before the L1STD makes it reachable.
        self.dma.wmb();
        let desc = L1Std::<Pa> {
            span: split + 1,
            l2_table: block.pa(),
        };
        let live = self.live.as_mut().ok_or(SmmuError::NotInitialized)?;
        live.strtab.top.write(l1, desc.encode());
        live.strtab.l2.insert(l1, block);
        self.submit(&[Command::CfgiSteRange {
            sid: (l1 as StreamId) << split,
            range: split - 1,
        }])
    }

    /// Sets how many register reads a poll makes before it times out (default [`POLL_LIMIT`]).
    pub fn set_poll_limit(&mut self, limit: u32) {
        self.poll_limit = limit.max(1);
    }

    pub fn features(&self) -> &SmmuFeatures {
        &self.features
    }

    pub fn stats(&self) -> DriverStats {
        self.stats
    }

    /// The register interface (for the arch layer's diagnostics and the host tests).
    pub fn mmio(&mut self) -> &mut M {
        &mut self.mmio
    }

    /// The Stream table's layout, once initialised.
    pub fn strtab_layout(&self) -> Option<StreamTableLayout> {
        self.live.as_ref().map(|l| l.strtab.layout)
    }

    /// Brings the SMMU up, covering StreamIDs `0..=max_sid` (clamped to SIDSIZE), with every
    /// STE invalid: until [`install_streams`](Self::install_streams) runs, every transaction is
    /// aborted and recorded (C_BAD_STE, or C_BAD_STREAMID for a StreamID without a level 2
    /// table). The order:
    /// 1. `GBPA.ABORT` (with Update, polled), before any other write: QEMU resets GBPA to bypass,
    ///    and until `SMMUEN` is set GBPA is all that stands between devices and memory;
    /// 2. `CR0 = 0`, acknowledged: whoever ran before is switched off; interrupts off;
    /// 3. stale global errors acknowledged (and reported);
    /// 4. `CR1` (write-back, inner-shareable table and queue accesses), `CR2` (`RECINVSID`, `PTM`
    ///    where broadcast TLB maintenance exists, `E2H = 0`);
    /// 5. the zeroed Stream table, Command queue and Event queue, and their base registers;
    /// 6. `CMDQEN`, then `EVTQEN`, each acknowledged;
    /// 7. CMD_CFGI_ALL, CMD_TLBI_NSNH_ALL, CMD_TLBI_EL2_ALL (with `IDR0.Hyp`), one CMD_SYNC;
    /// 8. `SMMUEN`, acknowledged.
    ///
    /// If a step fails the driver stays uninitialised; GBPA (abort) or the all-invalid Stream
    /// table keeps refusing DMA whatever state the SMMU was left in.
    pub fn init(&mut self, max_sid: StreamId) -> Result<InitReport, SmmuError> {
        if self.live.is_some() {
            return Err(SmmuError::AlreadyInitialized);
        }
        let result = self.bring_up(max_sid);
        if result.is_err() {
            self.live = None;
        }
        result
    }

    fn bring_up(&mut self, max_sid: StreamId) -> Result<InitReport, SmmuError> {
        let previous_gbpa = self.abort_incoming()?;
        self.update_cr0(0, "CR0ACK (disabling)")?;
        self.mmio.write32(offset::IRQ_CTRL, 0);
        self.poll("IRQ_CTRLACK", |s| s.mmio.read32(offset::IRQ_CTRLACK) == 0)?;
        let stale_errors = self.acknowledge_global_errors(u32::MAX);

        let cr1 = CR1::QUEUE_IC::WriteBack
            + CR1::QUEUE_OC::WriteBack
            + CR1::QUEUE_SH::InnerShareable
            + CR1::TABLE_IC::WriteBack
            + CR1::TABLE_OC::WriteBack
            + CR1::TABLE_SH::InnerShareable;
        self.mmio.write32(offset::CR1, cr1.value);
        // PTM is RES0 without broadcast TLB maintenance.
        let cr2 =
            CR2::RECINVSID::SET + CR2::PTM.val(u32::from(self.features.btm)) + CR2::E2H::CLEAR;
        self.mmio.write32(offset::CR2, cr2.value);

        let layout = stream_table_layout(&self.features, max_sid)?;
        let top_bytes = layout.top_level_bytes() as usize;
        let top = self.alloc(top_bytes, top_bytes.max(64))?;
        let cmdq_log2 = self.features.cmdq_log2.min(CMDQ_MAX_LOG2);
        let evtq_log2 = self.features.evtq_log2.min(EVTQ_MAX_LOG2);
        let cmdq_bytes = super::cmd::COMMAND_SIZE << cmdq_log2;
        let evtq_bytes = EVENT_SIZE << evtq_log2;
        let cmdq_mem = self.alloc(cmdq_bytes, cmdq_bytes.max(32))?;
        let evtq_mem = self.alloc(evtq_bytes, evtq_bytes.max(32))?;
        // The zeroed memory is visible before the SMMU is told where it is.
        self.dma.wmb();

        let strtab_base =
            STRTAB_BASE::ADDR.val(top.pa().0 >> STRTAB_BASE::ADDR.shift) + STRTAB_BASE::RA::SET;
        self.mmio.write64(offset::STRTAB_BASE, strtab_base.value);
        self.mmio.write32(offset::STRTAB_BASE_CFG, layout.encode());
        let queue_base = |mem: &DmaBlock, log2: u8| {
            (QUEUE_BASE::ADDR.val(mem.pa().0 >> QUEUE_BASE::ADDR.shift)
                + QUEUE_BASE::LOG2SIZE.val(log2.into())
                + QUEUE_BASE::ALLOCATE::SET)
                .value
        };
        self.mmio
            .write64(offset::CMDQ_BASE, queue_base(&cmdq_mem, cmdq_log2));
        self.mmio.write32(offset::CMDQ_PROD, 0);
        self.mmio.write32(offset::CMDQ_CONS, 0);
        self.mmio
            .write64(offset::EVTQ_BASE, queue_base(&evtq_mem, evtq_log2));
        self.mmio.write32(offset::EVTQ_PROD, 0);
        self.mmio.write32(offset::EVTQ_CONS, 0);
        self.live = Some(Live {
            strtab: StreamTable {
                layout,
                top,
                l2: BTreeMap::new(),
                l2_budget: self.l2_budget,
                shared: None,
                default: None,
            },
            cmdq: CommandQueue {
                mem: cmdq_mem,
                prod: QueueIndex::zero(cmdq_log2),
                cons: QueueIndex::zero(cmdq_log2),
            },
            evtq: EventQueue {
                mem: evtq_mem,
                cons: OutputQueueCons {
                    rd: QueueIndex::zero(evtq_log2),
                    ovackflg: false,
                },
            },
        });

        let queues = CR0::CMDQEN::SET.value;
        self.update_cr0(queues, "CR0ACK.CMDQEN")?;
        let queues = queues | CR0::EVTQEN::SET.value;
        self.update_cr0(queues, "CR0ACK.EVTQEN")?;
        let mut invalidate = vec![Command::CfgiAll, Command::TlbiNsnhAll];
        if self.features.hyp {
            invalidate.push(Command::TlbiEl2All);
        }
        self.submit(&invalidate)?;
        self.update_cr0(queues | CR0::SMMUEN::SET.value, "CR0ACK.SMMUEN")?;
        Ok(InitReport {
            stream_table: layout,
            cmdq_log2,
            evtq_log2,
            stale_errors,
            previous_gbpa,
        })
    }

    fn alloc(&mut self, bytes: usize, align: usize) -> Result<DmaBlock, SmmuError> {
        let block = self
            .dma
            .alloc_zeroed(bytes, align)
            .ok_or(SmmuError::OutOfMemory { bytes })?;
        assert!(
            block.bytes() >= bytes && block.pa().is_aligned(align as u64),
            "DmaMemory: {block:?} is not {bytes:#x} bytes aligned to {align:#x}"
        );
        Ok(block)
    }

    /// Polls `done` up to the poll limit.
    fn poll(
        &mut self,
        what: &'static str,
        done: impl FnMut(&mut Self) -> bool,
    ) -> Result<(), SmmuError> {
        self.poll_counted(what, &mut 0, done)
    }

    /// `GBPA.ABORT = 1` through the Update procedure; returns the previous GBPA.
    fn abort_incoming(&mut self) -> Result<u32, SmmuError> {
        self.abort_incoming_counted("GBPA.Update", &mut 0)
    }

    /// [`abort_incoming`](Self::abort_incoming), counting the register polls in `polls`; `what`
    /// names the wait for this update to complete.
    fn abort_incoming_counted(
        &mut self,
        what: &'static str,
        polls: &mut u32,
    ) -> Result<u32, SmmuError> {
        let update = GBPA::UPDATE::SET.value;
        // GBPA is read-only while an earlier update is in progress.
        self.poll_counted("GBPA.Update (earlier update)", polls, |s| {
            s.mmio.read32(offset::GBPA) & update == 0
        })?;
        let previous = self.mmio.read32(offset::GBPA);
        // The other fields only describe bypass, which ABORT overrides; keep them.
        self.mmio
            .write32(offset::GBPA, previous | GBPA::ABORT::SET.value | update);
        self.poll_counted(what, polls, |s| s.mmio.read32(offset::GBPA) & update == 0)?;
        Ok(previous)
    }

    fn update_cr0(&mut self, value: u32, what: &'static str) -> Result<(), SmmuError> {
        self.mmio.write32(offset::CR0, value);
        self.cr0 = value;
        self.poll(what, |s| s.mmio.read32(offset::CR0ACK) == value)
    }

    /// Reads the active global errors among `mask` and acknowledges them.
    fn acknowledge_global_errors(&mut self, mask: u32) -> GlobalErrors {
        let gerror = self.mmio.read32(offset::GERROR);
        let gerrorn = self.mmio.read32(offset::GERRORN);
        let active = (gerror ^ gerrorn) & mask;
        if active != 0 {
            self.mmio.write32(offset::GERRORN, gerrorn ^ active);
        }
        GlobalErrors(active)
    }

    /// Reports (and acknowledges) the active global errors other than `CMDQ_ERR`, which the
    /// Command queue code handles itself. Call it whenever the Event queue is drained.
    pub fn global_errors(&mut self) -> GlobalErrors {
        self.acknowledge_global_errors(!GERROR::CMDQ_ERR::SET.value)
    }

    /// Writes `cmds` to the Command queue (waiting for room as needed) followed by one CMD_SYNC,
    /// and waits for the SYNC. A command the SMMU refuses is replaced by a CMD_SYNC, the queue is
    /// restarted, the rest of the batch runs, and the error names the refused command.
    pub fn submit(&mut self, cmds: &[Command]) -> Result<(), SmmuError> {
        let mut failure = None;
        let result = self.submit_inner(cmds, &mut failure);
        match (result, failure) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(f)) => Err(SmmuError::CommandFailed(f)),
            (Ok(()), None) => Ok(()),
        }
    }

    /// A CMD_SYNC on its own: everything submitted before has completed when it returns.
    pub fn sync(&mut self) -> Result<(), SmmuError> {
        self.submit(&[])
    }

    fn submit_inner(
        &mut self,
        cmds: &[Command],
        failure: &mut Option<CommandFailure>,
    ) -> Result<(), SmmuError> {
        if self.live.is_none() {
            return Err(SmmuError::NotInitialized);
        }
        self.submit_counted(cmds, failure, &Cell::new(0))
    }

    /// Polls `CMDQ_CONS` until `done` holds for the queue, recovering from command errors on the
    /// way (the first is kept in `failure`). Returns the free space.
    fn wait_cmdq(
        &mut self,
        what: &'static str,
        failure: &mut Option<CommandFailure>,
        done: impl Fn(&QueuePair) -> bool,
    ) -> Result<u32, SmmuError> {
        let prod = self
            .live
            .as_ref()
            .ok_or(SmmuError::NotInitialized)?
            .cmdq
            .prod;
        for _ in 0..self.poll_limit {
            let cons = CmdqCons::decode(prod.log2_size(), self.mmio.read32(offset::CMDQ_CONS));
            let pair = QueuePair::new(prod, cons.rd).map_err(|_| SmmuError::QueueIndex {
                queue: "CMDQ_CONS",
                value: cons.rd.field(),
            })?;
            if let Some(live) = self.live.as_mut() {
                live.cmdq.cons = cons.rd;
            }
            if done(&pair) {
                return Ok(pair.free());
            }
            let gerror = self.mmio.read32(offset::GERROR);
            let gerrorn = self.mmio.read32(offset::GERRORN);
            if (gerror ^ gerrorn) & GERROR::CMDQ_ERR::SET.value != 0 {
                // CONS.ERR is visible before GERROR.CMDQ_ERR (section 7.1): read CONS again.
                let cons = CmdqCons::decode(prod.log2_size(), self.mmio.read32(offset::CMDQ_CONS));
                let f = self.recover_command_error(cons, gerrorn);
                failure.get_or_insert(f);
                continue;
            }
            core::hint::spin_loop();
        }
        Err(SmmuError::Timeout(what))
    }

    /// Section 7.1: the SMMU stopped at the command at `CONS.RD`. Replace it with a CMD_SYNC
    /// (harmless, and it keeps the queue's shape), make that visible, and restart the queue by
    /// acknowledging `GERROR.CMDQ_ERR`.
    fn recover_command_error(&mut self, cons: CmdqCons, gerrorn: u32) -> CommandFailure {
        self.stats.command_errors += 1;
        let features = self.features;
        let Some(live) = self.live.as_mut() else {
            panic!("SmmuDriver: command error without a command queue");
        };
        let slot = cons.rd.index() as usize * 2;
        let raw = [live.cmdq.mem.read(slot), live.cmdq.mem.read(slot + 1)];
        let (command, reason) = match Command::decode(raw) {
            Ok(c) => (Some(c), c.check_features(&features).err()),
            Err(e) => (None, Some(e)),
        };
        let [w0, w1] = Command::Sync(SyncCommand::POLL).encode();
        live.cmdq.mem.write(slot, w0);
        live.cmdq.mem.write(slot + 1, w1);
        self.dma.wmb();
        self.mmio
            .write32(offset::GERRORN, gerrorn ^ GERROR::CMDQ_ERR::SET.value);
        CommandFailure {
            code: cons.err,
            index: cons.rd.index(),
            raw,
            command,
            reason,
        }
    }

    /// The STE in memory for `sid` (an absent level 2 table reads as invalid).
    pub fn read_ste(&self, sid: StreamId) -> Result<Ste, SmmuError> {
        self.live
            .as_ref()
            .ok_or(SmmuError::NotInitialized)?
            .strtab
            .read(sid)
    }

    /// Writes one STE following section 3.21.3: see [`write_stes`](Self::write_stes).
    pub fn write_ste(&mut self, sid: StreamId, new: &Ste) -> Result<SteWriteReport, SmmuError> {
        self.write_stes(&[sid], new)
    }

    /// Writes `ste` for every StreamID in `sids` (the StreamIDs the PCI root complex can emit,
    /// from its `iommu-map`), creating the level 2 tables that cover them. Costs at most three
    /// CMD_SYNCs however many StreamIDs there are.
    pub fn install_streams(
        &mut self,
        sids: impl IntoIterator<Item = StreamId>,
        ste: &Ste,
    ) -> Result<SteWriteReport, SmmuError> {
        let sids: Vec<StreamId> = sids.into_iter().collect();
        self.write_stes(&sids, ste)
    }

    /// Writes `new` as the STE of every StreamID in `sids`, so that the SMMU never uses a torn
    /// STE. The SMMU may fetch (and cache) any reachable STE at any time, invalid ones included,
    /// and only 64-bit single-copy atomicity is guaranteed (section 3.21.3), so each STE takes
    /// one of these paths:
    /// - in a level 2 table created now: written whole while unreachable; the L1STD that links
    ///   the table is written after a barrier, then CMD_CFGI_STE_RANGE over the table;
    /// - both valid, one 64-bit word differs: that word in place, then CMD_CFGI_STE;
    /// - otherwise (section 3.21.3.1): if valid, *break*: V = 0, CMD_CFGI_STE, CMD_SYNC; *fill*
    ///   the other words with V still 0, CMD_CFGI_STE, CMD_SYNC (so no cached copy holds the old
    ///   words when V becomes 1); *make*: word 0 with V = 1, CMD_CFGI_STE.
    ///
    /// Each step is one batch for all StreamIDs, closed by one CMD_SYNC; the last batch also
    /// carries CMD_TLBI_S12_VMALL for a VMID whose stage 2 tables changed under it. Between
    /// break and make, transactions see an invalid STE: aborted and recorded as C_BAD_STE.
    pub fn write_stes(
        &mut self,
        sids: &[StreamId],
        new: &Ste,
    ) -> Result<SteWriteReport, SmmuError> {
        let mut sids = sids.to_vec();
        platform::sort::sort_small(&mut sids);
        sids.dedup();
        let mut report = SteWriteReport::default();
        let plan = self.plan_ste_writes(&sids, new, &mut report)?;

        if !plan.break_first.is_empty() {
            self.submit(&cfgi_commands(&plan.break_first))?;
            report.syncs += 1;
        }
        if !plan.fill.is_empty() {
            let strtab = &self.live_ref()?.strtab;
            let mut fill = new.0;
            fill[0] &= !STE0::V::SET.value;
            for &sid in &plan.fill {
                strtab.write(sid, &fill, (1..8).chain(0..1));
            }
            self.submit(&cfgi_commands(&plan.fill))?;
            report.syncs += 1;
        }
        let mut last = Vec::new();
        {
            let strtab = &self.live_ref()?.strtab;
            for &sid in &plan.make_valid {
                strtab.write(sid, &new.0, 0..1);
            }
            for &(sid, word) in &plan.in_place {
                strtab.write(sid, &new.0, word..word + 1);
            }
            let mut invalidated: Vec<StreamId> = plan.make_valid.clone();
            invalidated.extend(plan.in_place.iter().map(|&(sid, _)| sid));
            platform::sort::sort_small(&mut invalidated);
            last.extend(cfgi_commands(&invalidated));
            if !plan.new_tables.is_empty() {
                // The level 2 tables are complete before an L1STD makes them reachable.
                self.dma.wmb();
                let split = strtab.split().unwrap_or(0);
                for &l1 in &plan.new_tables {
                    let Some(l2) = strtab.l2.get(&l1) else {
                        panic!("SmmuDriver: new level 2 table {l1} vanished");
                    };
                    let desc = L1Std::<Pa> {
                        span: split + 1,
                        l2_table: l2.pa(),
                    };
                    strtab.top.write(l1, desc.encode());
                    last.push(Command::CfgiSteRange {
                        sid: (l1 as StreamId) << split,
                        range: split - 1,
                    });
                }
            }
        }
        for &vmid in &plan.tlbi_vmids {
            last.push(Command::TlbiS12Vmall { vmid });
        }
        if !last.is_empty() {
            self.submit(&last)?;
            report.syncs += 1;
        }
        Ok(report)
    }

    fn live_ref(&self) -> Result<&Live, SmmuError> {
        self.live.as_ref().ok_or(SmmuError::NotInitialized)
    }

    /// Classifies each StreamID, creating level 2 tables, and does the writes that come first:
    /// STEs in new (unreachable) tables and breaks of valid ones.
    fn plan_ste_writes(
        &mut self,
        sids: &[StreamId],
        new: &Ste,
        report: &mut SteWriteReport,
    ) -> Result<StePlan, SmmuError> {
        {
            let strtab = &self.live_ref()?.strtab;
            for &sid in sids {
                strtab.check(sid)?;
            }
        }
        // Every level 2 table the batch needs fits the budget, or nothing is written. (`sids` is
        // sorted, so the StreamIDs of one level 2 table are adjacent.)
        {
            let strtab = &self.live_ref()?.strtab;
            if let Some(split) = strtab.split() {
                let mut missing = 0;
                let mut last = None;
                for &sid in sids {
                    let l1 = (sid >> split) as usize;
                    if last != Some(l1) && !strtab.l2.contains_key(&l1) {
                        missing += 1;
                        if strtab.l2.len() + missing > strtab.l2_budget {
                            return Err(SmmuError::StreamTableFull {
                                sid,
                                tables: strtab.l2_budget,
                            });
                        }
                    }
                    last = Some(l1);
                }
            }
        }
        let mut plan = StePlan::default();
        let mut is_new: Vec<usize> = Vec::new();
        let v = STE0::V::SET.value;
        for &sid in sids {
            if let Some(split) = self.live_ref()?.strtab.split() {
                let l1 = (sid >> split) as usize;
                if !self.live_ref()?.strtab.l2.contains_key(&l1) {
                    let bytes = STE_SIZE << split;
                    match self.alloc(bytes, bytes) {
                        Ok(block) => {
                            let live = self.live.as_mut().ok_or(SmmuError::NotInitialized)?;
                            live.strtab.l2.insert(l1, block);
                        }
                        Err(e) => {
                            // Nothing is linked yet: forget this batch's tables, so that no
                            // StreamID appears to have a slot the SMMU cannot reach.
                            let live = self.live.as_mut().ok_or(SmmuError::NotInitialized)?;
                            for t in &plan.new_tables {
                                live.strtab.l2.remove(t);
                            }
                            return Err(e);
                        }
                    }
                    plan.new_tables.push(l1);
                    is_new.push(l1);
                    report.new_tables += 1;
                }
                if is_new.last() == Some(&l1) {
                    self.live_ref()?.strtab.write(sid, &new.0, 0..8);
                    report.in_new_tables += 1;
                    continue;
                }
            }
            let strtab = &self.live_ref()?.strtab;
            let cur = strtab.read(sid)?;
            if cur == *new {
                report.unchanged += 1;
                continue;
            }
            let cur_valid = cur.0[0] & v != 0;
            let new_valid = new.0[0] & v != 0;
            let differing: Vec<usize> = (0..8).filter(|&i| cur.0[i] != new.0[i]).collect();
            if stage2_changed_in_place(&cur, new) && !plan.tlbi_vmids.contains(&cur.vmid()) {
                plan.tlbi_vmids.push(cur.vmid());
            }
            if cur_valid && new_valid && differing.len() == 1 {
                // Written with the last batch, which carries its invalidation.
                plan.in_place.push((sid, differing[0]));
                report.in_place += 1;
                continue;
            }
            if cur_valid {
                let mut broken = cur.0;
                broken[0] &= !v;
                strtab.write(sid, &broken, 0..1);
                plan.break_first.push(sid);
                report.break_before_make += 1;
            } else {
                report.made += 1;
            }
            plan.fill.push(sid);
            if new_valid {
                plan.make_valid.push(sid);
            }
        }
        Ok(plan)
    }

    /// Reads the Event queue from CONS to PROD, hands every record to `out` (records with a
    /// Reserved event number undecoded), acknowledges an overflow, and hands the slots back.
    /// On a forced-stall SMMU, stalled transactions are terminated (CMD_RESUME with abort).
    pub fn drain_events(
        &mut self,
        out: &mut impl FnMut(EventRecord),
    ) -> Result<DrainReport, SmmuError> {
        let log2 = self.live_ref()?.evtq.cons.rd.log2_size();
        let prod = OutputQueueProd::decode(log2, self.mmio.read32(offset::EVTQ_PROD));
        // The records PROD publishes are read after PROD.
        self.dma.rmb();
        let live = self.live.as_mut().ok_or(SmmuError::NotInitialized)?;
        let mut cons = live.evtq.cons;
        let pair = QueuePair::new(prod.wr, cons.rd).map_err(|_| SmmuError::QueueIndex {
            queue: "EVENTQ_PROD",
            value: prod.wr.field(),
        })?;
        let mut report = DrainReport::default();
        let mut resumes = Vec::new();
        for _ in 0..pair.len() {
            let slot = cons.rd.index() as usize * 4;
            let raw: [u64; 4] = core::array::from_fn(|i| live.evtq.mem.read(slot + i));
            cons.rd = cons.rd.advance(1);
            let record = EventRecord::decode(raw);
            if let Ok(
                Event::Translation(t)
                | Event::AddrSize(t)
                | Event::Access(t)
                | Event::Permission(t),
            ) = record.event
                && t.stall
            {
                resumes.push(Command::Resume {
                    sid: t.origin.sid,
                    stag: t.stag,
                    action: ResumeAction::Terminate { abort: true },
                });
            }
            out(record);
            report.records += 1;
        }
        if prod.overflow_pending(&cons) {
            cons.ovackflg = prod.ovflg;
            report.overflow = true;
            self.stats.event_overflows += 1;
        }
        let moved = cons != live.evtq.cons;
        live.evtq.cons = cons;
        // Nothing consumed and no overflow to acknowledge: the SMMU's CONS already says so, and
        // the write would be one more physical register access per (mostly empty) drain.
        if moved {
            // The records are read before their slots are handed back.
            self.dma.mb();
            self.mmio.write32(offset::EVTQ_CONS, cons.encode());
        }
        self.stats.event_records += u64::from(report.records);
        if !resumes.is_empty() {
            report.terminated_stalls = resumes.len() as u32;
            self.submit(&resumes)?;
        }
        Ok(report)
    }
}

impl<M: SmmuMmio, D: DmaMemory> SmmuDriver<M, D> {
    /// [`poll`](Self::poll), counting the register reads in `polls`.
    fn poll_counted(
        &mut self,
        what: &'static str,
        polls: &mut u32,
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> Result<(), SmmuError> {
        for _ in 0..self.poll_limit {
            *polls = polls.saturating_add(1);
            if done(self) {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(SmmuError::Timeout(what))
    }

    /// `submit_inner`, counting the `CMDQ_CONS` polls in `polls`.
    fn submit_counted(
        &mut self,
        cmds: &[Command],
        failure: &mut Option<CommandFailure>,
        polls: &Cell<u32>,
    ) -> Result<(), SmmuError> {
        let tick = || polls.set(polls.get().saturating_add(1));
        let sync = [Command::Sync(SyncCommand::POLL)];
        let mut rest = cmds.iter().chain(sync.iter()).peekable();
        while rest.peek().is_some() {
            let cmdq = &self.live.as_ref().ok_or(SmmuError::NotInitialized)?.cmdq;
            let known_free = QueuePair::new(cmdq.prod, cmdq.cons).map_or(0, |q| q.free());
            let free = if known_free > 0 {
                known_free
            } else {
                self.wait_cmdq("command queue space", failure, |q| {
                    tick();
                    q.free() > 0
                })?
            };
            prof::lap(Stage::SubmitSpace);
            let cmdq = &mut self.live.as_mut().ok_or(SmmuError::NotInitialized)?.cmdq;
            for cmd in rest.by_ref().take(free as usize) {
                let [w0, w1] = cmd.encode();
                let slot = cmdq.prod.index() as usize * 2;
                cmdq.mem.write(slot, w0);
                cmdq.mem.write(slot + 1, w1);
                cmdq.prod = cmdq.prod.advance(1);
            }
            let prod = cmdq.prod;
            // The commands are observable before the SMMU is told they are there.
            self.dma.wmb();
            self.mmio.write32(offset::CMDQ_PROD, cmdq_prod_value(prod));
            prof::lap(Stage::SubmitWrite);
        }
        self.stats.commands += cmds.len() as u64;
        self.stats.syncs += 1;
        self.wait_cmdq("CMD_SYNC", failure, |q| {
            tick();
            q.is_empty()
        })?;
        prof::lap(Stage::SyncWait);
        Ok(())
    }
}

/// Whether the STE keeps its VMID but points it at different stage 2 tables (or walks them
/// differently), which leaves stale TLB entries under that VMID.
fn stage2_changed_in_place(cur: &Ste, new: &Ste) -> bool {
    let s2 = |s: &Ste| matches!(s.config(), StreamConfig::Stage2 | StreamConfig::Nested);
    s2(cur) && s2(new) && cur.vmid() == new.vmid() && cur.0[2..4] != new.0[2..4]
}

/// CMD_CFGI_STE (leaf) for each StreamID, or one CMD_CFGI_ALL for many.
fn cfgi_commands(sids: &[StreamId]) -> Vec<Command> {
    if sids.len() > CFGI_ALL_THRESHOLD {
        return vec![Command::CfgiAll];
    }
    sids.iter()
        .map(|&sid| Command::CfgiSte { sid, leaf: true })
        .collect()
}

#[cfg(test)]
mod tests;
