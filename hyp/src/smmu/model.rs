//! An in-memory SMMUv3 for host tests of the driver (test builds only).
//!
//! What it models, from IHI 0070:
//! - ID registers from an [`SmmuFeatures`] (QEMU-like by default: 16 StreamID bits, stage 1 and
//!   stage 2, two-level Stream tables, 2^19-entry queues, 44-bit OAS, 4 KiB granule, coherent);
//! - `CR0`/`CR0ACK` with an acknowledgement delay, `GBPA` with the Update procedure (reset to
//!   bypass, as QEMU does), `IRQ_CTRL`/`IRQ_CTRLACK`, `GERROR`/`GERRORN`;
//! - the rules about which registers may change while enabled (breaking one is a *violation*);
//! - a Command queue processor that reads commands from the queue memory, validates them with
//!   [`Command::decode`] and [`Command::check_features`], stops at an illegal one with
//!   `CMDQ_CONS.ERR = CERROR_ILL` and `GERROR.CMDQ_ERR`, and restarts when that is acknowledged;
//! - a configuration cache: before every command it fetches the *watched* StreamIDs' STEs (as
//!   hardware may at any time, invalid ones included), CMD_CFGI_* drop entries, and a CMD_SYNC
//!   checks that no cached STE differs from memory (a change without its invalidation). An STE
//!   that turns valid must not bring words the cache had not seen while it was invalid
//!   (section 3.21.3.1: fill, invalidate, then set V);
//! - every driver write to DMA memory is observed (through `driver::write_observer`), so the state
//!   of a watched STE *between any two stores* is recorded in the trace, exactly what hardware
//!   fetching at an arbitrary moment could see;
//! - the barriers: a `CMDQ_PROD` write must publish only commands and STEs written before the last
//!   write barrier, and an L1STD may only link a level 2 table written before it;
//! - an Event queue the tests inject records into, with overflow signalling when it is full;
//! - transactions ([`Model::transact`]) of stage-2-only streams: the STE as the configuration
//!   cache holds it (fetched on a miss), a TLB per (VMID, page) filled by successful walks and
//!   emptied only by CMD_TLBI_S12_VMALL / CMD_TLBI_NSNH_ALL (so a test sees what a stale entry would
//!   let through), the walk itself through a registered [`Stage2Table`] as the hardware would
//!   read it at that moment, and a recorded F_TRANSLATION (S2R) for a refused one.
//!
//! Memory: an arena of zeroed blocks whose address is their "physical address"; the model only
//! dereferences addresses inside blocks it handed out and still owns.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::boxed::Box;
use std::cell::{RefCell, RefMut};
use std::collections::{BTreeMap, BTreeSet};
use std::format;
use std::ptr::NonNull;
use std::rc::{Rc, Weak};
use std::string::String;
use std::vec::Vec;

use super::cmd::{COMMAND_SIZE, Command};
use super::driver::{DmaBlock, DmaMemory, SmmuMmio, write_observer};
use super::event::EVENT_SIZE;
use super::queue::{OutputQueueCons, OutputQueueProd, QueueIndex, QueuePair};
use super::regs::{
    CR0, GBPA, GERROR, Httu, QUEUE_BASE, STRTAB_BASE, SmmuFeatures, StallModel, TableEndianness,
    TableFormats, offset,
};
use super::ste::{L1Std, STE_SIZE, STE0, Ste, SteLocation, StreamTableLayout};
use super::{Pa, StreamId};
use crate::stage2::{Access, Stage2Table};
use platform::addr::Ipa as WalkIpa;

/// Blocks of zeroed memory, addressed by their host address.
struct Arena {
    blocks: BTreeMap<u64, (NonNull<u8>, Layout)>,
}

impl Arena {
    fn alloc(&mut self, bytes: usize, align: usize) -> Option<NonNull<u8>> {
        let layout = Layout::from_size_align(bytes.max(8), align.max(8)).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) })?;
        self.blocks.insert(ptr.as_ptr() as u64, (ptr, layout));
        Some(ptr)
    }

    /// The block containing `[pa, pa + len)`: its start and size.
    fn block(&self, pa: u64, len: u64) -> Option<(u64, u64)> {
        let (&start, (_, layout)) = self.blocks.range(..=pa).next_back()?;
        let end = start + layout.size() as u64;
        (pa.checked_add(len)? <= end).then_some((start, layout.size() as u64))
    }

    fn read(&self, pa: u64) -> Option<u64> {
        if !pa.is_multiple_of(8) {
            return None;
        }
        self.block(pa, 8)?;
        // SAFETY: `[pa, pa + 8)` lies inside a live block this arena allocated (checked above)
        // and is 8-byte aligned; nothing else runs concurrently in a host test.
        Some(unsafe { (pa as *const u64).read_volatile() })
    }

    fn write(&mut self, pa: u64, value: u64) -> bool {
        if !pa.is_multiple_of(8) || self.block(pa, 8).is_none() {
            return false;
        }
        // SAFETY: as for `read`.
        unsafe { (pa as *mut u64).write_volatile(value) };
        true
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        for (ptr, layout) in self.blocks.values() {
            // SAFETY: allocated by `alloc` with this layout, freed once.
            unsafe { dealloc(ptr.as_ptr(), *layout) };
        }
    }
}

/// Knobs that make the model misbehave.
#[derive(Clone, Copy, Debug, Default)]
pub struct Knobs {
    /// CR0ACK reads that still show the old value after a CR0 write.
    pub cr0_ack_delay: u32,
    /// CR0ACK never follows CR0.
    pub cr0_ack_never: bool,
    /// CR0ACK never acknowledges a CR0 write that sets SMMUEN (other writes are acknowledged).
    pub smmuen_ack_never: bool,
    /// GBPA reads that still show Update after an update.
    pub gbpa_update_delay: u32,
    /// GBPA.Update never clears.
    pub gbpa_update_never: bool,
    /// The Command queue consumes nothing.
    pub cmdq_stalled: bool,
    /// `None`: commands are consumed as soon as CMDQ_PROD is written. `Some(n)`: only when
    /// CMDQ_CONS is read, `n` at a time.
    pub cmdq_per_poll: Option<u32>,
    /// DMA memory allocations that still succeed (`None`: all of them): the driver's heap runs
    /// out after this many.
    pub allocs_left: Option<u32>,
}

/// Which barrier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Barrier {
    Write,
    Read,
    Full,
}

/// Something the model saw, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trace {
    Write32 {
        off: usize,
        value: u32,
    },
    Write64 {
        off: usize,
        value: u64,
    },
    Barrier(Barrier),
    /// A command consumed.
    Exec(Command),
    /// A watched StreamID's STE, as the SMMU could fetch it now, changed (`None`: unreachable).
    Ste {
        sid: StreamId,
        ste: Option<Ste>,
    },
}

/// What happened to an injected event record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Injected {
    Written,
    /// The queue was full: the record was discarded and overflow signalled.
    Overflow,
    /// The Event queue is off.
    Dropped,
}

/// The model's state; tests reach it through [`Model::state`].
pub struct State {
    pub features: SmmuFeatures,
    pub knobs: Knobs,
    arena: Arena,
    cr0: u32,
    cr0ack: u32,
    cr0_reads_left: u32,
    cr1: u32,
    cr2: u32,
    gbpa: u32,
    /// An update in progress: the value and the reads left.
    gbpa_update: Option<(u32, u32)>,
    irq_ctrl: u32,
    pub gerror: u32,
    pub gerrorn: u32,
    strtab_base: u64,
    strtab_cfg: u32,
    cmdq_base: u64,
    cmdq_prod: u32,
    cmdq_cons: u32,
    cmdq_err: u8,
    evtq_base: u64,
    evtq_prod: u32,
    evtq_cons: u32,
    pub trace: Vec<Trace>,
    /// Register offsets read through [`ModelMmio`], in order.
    pub reads: Vec<usize>,
    pub executed: Vec<Command>,
    pub violations: Vec<String>,
    /// The configuration cache.
    cache: BTreeMap<StreamId, [u64; 8]>,
    /// What the last fetch of each watched StreamID returned.
    last_fetched: BTreeMap<StreamId, [u64; 8]>,
    watched: BTreeSet<StreamId>,
    /// The last recorded state of each watched STE.
    watched_state: BTreeMap<StreamId, Option<[u64; 8]>>,
    /// Where each watched, reachable STE is.
    watched_at: BTreeMap<u64, StreamId>,
    /// Blocks of DMA memory the driver wrote since the last write barrier.
    dirty_since_wmb: BTreeSet<u64>,
    /// Command queue contents and watched STEs at the last write barrier.
    cmdq_at_wmb: Vec<u64>,
    stes_at_wmb: BTreeMap<StreamId, Option<[u64; 8]>>,
    pub barriers: [u64; 3],
    /// Records discarded because the Event queue was full.
    pub events_lost: u64,
    /// Stage 2 tables transactions may walk, by root address.
    stage2s: BTreeMap<u64, &'static Stage2Table>,
    /// The TLB: (VMID, IPA page) -> (PA page, writable).
    tlb: BTreeMap<(u16, u64), (u64, bool)>,
}

/// What became of one transaction ([`Model::transact`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transaction {
    /// It reached memory at this address.
    Landed(u64),
    /// Refused at stage 2; `recorded` if an event record was written (S2R).
    Faulted { recorded: bool },
    /// Terminated by the configuration (abort, invalid STE, no STE) without a translation.
    Aborted,
}

/// A handle to the model for a test.
#[derive(Clone)]
pub struct Model(Rc<RefCell<State>>);

/// The model's register interface, handed to the driver.
pub struct ModelMmio(Rc<RefCell<State>>);

/// The model's DMA memory and barriers, handed to the driver.
pub struct ModelDma(Rc<RefCell<State>>);

impl core::fmt::Debug for State {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("State")
            .field("cr0", &self.cr0)
            .field("cr0ack", &self.cr0ack)
            .field("gbpa", &self.gbpa)
            .field("executed", &self.executed.len())
            .field("violations", &self.violations)
            .finish_non_exhaustive()
    }
}

impl core::fmt::Debug for Model {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Model")
    }
}

impl core::fmt::Debug for ModelMmio {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ModelMmio")
    }
}

impl core::fmt::Debug for ModelDma {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ModelDma")
    }
}

/// QEMU virt's SMMUv3 as the driver sees it, roughly.
pub fn qemu_features() -> SmmuFeatures {
    let mut f = SmmuFeatures::from_idr(0, 0, 0, 0);
    f.stage1 = true;
    f.stage2 = true;
    f.table_formats = TableFormats::AArch64;
    f.coherent = true;
    f.httu = Httu::None;
    f.asid16 = true;
    f.vmid16 = true;
    f.endianness = TableEndianness::Little;
    f.stall_model = StallModel::TerminateOnly;
    f.two_level_strtab = true;
    f.sid_bits = 16;
    f.ssid_bits = 20;
    f.cmdq_log2 = 19;
    f.evtq_log2 = 19;
    f.priq_log2 = 19;
    f.oas_bits = 44;
    f.gran4k = true;
    f.gran64k = true;
    f.ril = true;
    f
}

const CR0_ENABLES: u32 = 0b1111;

impl State {
    fn violation(&mut self, what: String) {
        self.violations.push(what);
    }

    fn enabled(&self, bit: u32) -> bool {
        // A field counts as set from the write until an update to 0 completes.
        (self.cr0 | self.cr0ack) & bit != 0
    }

    fn cmdq_log2(&self) -> u8 {
        (QUEUE_BASE::LOG2SIZE.read(self.cmdq_base) as u8).min(self.features.cmdq_log2)
    }

    fn evtq_log2(&self) -> u8 {
        (QUEUE_BASE::LOG2SIZE.read(self.evtq_base) as u8).min(self.features.evtq_log2)
    }

    fn queue_addr(base: u64) -> u64 {
        QUEUE_BASE::ADDR.read(base) << QUEUE_BASE::ADDR.shift
    }

    fn strtab_addr(&self) -> u64 {
        STRTAB_BASE::ADDR.read(self.strtab_base) << STRTAB_BASE::ADDR.shift
    }

    fn layout(&self) -> StreamTableLayout {
        StreamTableLayout::decode(self.strtab_cfg, &self.features)
    }

    /// Where `sid`'s STE is, if reachable.
    fn ste_addr(&self, sid: StreamId) -> Option<u64> {
        let layout = self.layout();
        let base = self.strtab_addr();
        match layout.locate(sid).ok()? {
            SteLocation::Linear { offset } => Some(base + offset),
            SteLocation::TwoLevel {
                l1_offset,
                l2_index,
            } => {
                let split = match layout.format {
                    super::ste::StreamTableFormat::TwoLevel { split } => split,
                    super::ste::StreamTableFormat::Linear => return None,
                };
                let l1 = L1Std::<Pa>::decode(self.arena.read(base + l1_offset)?);
                let off = l1.ste_offset(l2_index, split).ok()?;
                Some(l1.l2_table.0 + off)
            }
        }
    }

    /// The STE of `sid` in memory, if reachable.
    fn ste_words(&self, sid: StreamId) -> Option<[u64; 8]> {
        let at = self.ste_addr(sid)?;
        let mut words = [0; 8];
        for (i, w) in words.iter_mut().enumerate() {
            *w = self.arena.read(at + 8 * i as u64)?;
        }
        Some(words)
    }

    /// A driver write to DMA memory at `pa`.
    fn observe_write(&mut self, pa: u64) {
        if let Some((block, _)) = self.arena.block(pa, 8) {
            self.dirty_since_wmb.insert(block);
        }
        let layout = self.layout();
        let base = self.strtab_addr();
        let linking = matches!(
            layout.format,
            super::ste::StreamTableFormat::TwoLevel { .. }
        ) && (base..base + layout.top_level_bytes()).contains(&pa);
        if linking && let Some(raw) = self.arena.read(pa) {
            let l1 = L1Std::<Pa>::decode(raw);
            if l1.span > 0 && self.dirty_since_wmb.contains(&l1.l2_table.0) {
                self.violation(format!(
                    "L1STD at {pa:#x} links level 2 table {} written after the last write barrier",
                    l1.l2_table
                ));
            }
        }
        self.observe(Some(pa));
    }

    /// Records the state of the watched STEs (all, or the one at `pa`) if it changed.
    fn observe(&mut self, pa: Option<u64>) {
        let top = self.layout().top_level_bytes();
        let base = self.strtab_addr();
        let sids: Vec<StreamId> = match pa {
            Some(pa) if !(base..base + top).contains(&pa) => {
                match self.watched_at.range(..=pa).next_back() {
                    Some((&at, &sid)) if pa < at + STE_SIZE as u64 => std::vec![sid],
                    _ => return,
                }
            }
            _ => self.watched.iter().copied().collect(),
        };
        for sid in sids {
            let now = self.ste_words(sid);
            if self.watched_state.get(&sid) != Some(&now) {
                self.watched_state.insert(sid, now);
                self.trace.push(Trace::Ste {
                    sid,
                    ste: now.map(Ste),
                });
            }
        }
        self.watched_at = self
            .watched
            .iter()
            .filter_map(|&sid| Some((self.ste_addr(sid)?, sid)))
            .collect();
    }

    /// Fetches the watched STEs that are not cached, as hardware may at any time.
    fn prefetch(&mut self) {
        if self.cr0ack & CR0::SMMUEN::SET.value == 0 {
            return;
        }
        let v = STE0::V::SET.value;
        let sids: Vec<StreamId> = self.watched.iter().copied().collect();
        for sid in sids {
            if self.cache.contains_key(&sid) {
                continue;
            }
            let Some(now) = self.ste_words(sid) else {
                continue;
            };
            if let Some(before) = self.last_fetched.get(&sid)
                && before[0] & v == 0
                && now[0] & v != 0
                && before[1..] != now[1..]
            {
                self.violation(format!(
                    "sid {sid:#x}: STE became valid with words not invalidated while it was \
                     invalid (was {before:x?}, now {now:x?})"
                ));
            }
            self.last_fetched.insert(sid, now);
            self.cache.insert(sid, now);
        }
    }

    fn cmdq_running(&self) -> bool {
        self.cr0ack & CR0::CMDQEN::SET.value != 0
            && (self.gerror ^ self.gerrorn) & GERROR::CMDQ_ERR::SET.value == 0
            && !self.knobs.cmdq_stalled
    }

    fn process_commands(&mut self, budget: u32) {
        let log2 = self.cmdq_log2();
        for _ in 0..budget {
            if !self.cmdq_running() {
                return;
            }
            let prod = QueueIndex::from_field(log2, self.cmdq_prod);
            let cons = QueueIndex::from_field(log2, self.cmdq_cons);
            match QueuePair::new(prod, cons) {
                Ok(q) if q.is_empty() => return,
                Ok(_) => {}
                Err(e) => {
                    self.violation(format!("command queue PROD {prod:?} vs CONS {cons:?}: {e}"));
                    return;
                }
            }
            self.prefetch();
            let at = Self::queue_addr(self.cmdq_base) + cons.byte_offset(COMMAND_SIZE) as u64;
            let raw = match (self.arena.read(at), self.arena.read(at + 8)) {
                (Some(w0), Some(w1)) => [w0, w1],
                _ => {
                    self.cmdq_err = 0x02;
                    self.gerror ^= GERROR::CMDQ_ERR::SET.value;
                    return;
                }
            };
            let features = self.features;
            match Command::decode(raw).and_then(|c| c.check_features(&features).map(|()| c)) {
                Ok(cmd) => {
                    self.execute(cmd);
                    self.cmdq_cons = cons.advance(1).field();
                }
                Err(_) => {
                    self.cmdq_err = 0x01;
                    self.gerror ^= GERROR::CMDQ_ERR::SET.value;
                    return;
                }
            }
        }
    }

    fn execute(&mut self, cmd: Command) {
        match cmd {
            Command::CfgiSte { sid, .. } => {
                self.cache.remove(&sid);
            }
            Command::CfgiSteRange { sid, range } => {
                let span = 1u64 << (range + 1);
                let first = u64::from(sid) & !(span - 1);
                self.cache
                    .retain(|&s, _| !(first..first + span).contains(&u64::from(s)));
            }
            Command::CfgiAll => self.cache.clear(),
            Command::TlbiS12Vmall { vmid } => self.tlb.retain(|&(v, _), _| v != vmid),
            Command::TlbiNsnhAll => self.tlb.clear(),
            Command::Sync(_) => {
                self.prefetch();
                let stale: Vec<StreamId> = self
                    .cache
                    .iter()
                    .filter(|&(&sid, words)| self.ste_words(sid) != Some(*words))
                    .map(|(&sid, _)| sid)
                    .collect();
                for sid in stale {
                    self.violation(format!(
                        "sid {sid:#x}: cached STE differs from memory at CMD_SYNC (change not \
                         invalidated)"
                    ));
                    self.cache.remove(&sid);
                }
            }
            _ => {}
        }
        self.executed.push(cmd);
        self.trace.push(Trace::Exec(cmd));
    }

    /// The CMDQ_PROD write publishes commands: they, and the watched STEs, must be what they were
    /// at the last write barrier.
    fn check_publication(&mut self, new_prod: u32) {
        let log2 = self.cmdq_log2();
        let old = QueueIndex::from_field(log2, self.cmdq_prod);
        let new = QueueIndex::from_field(log2, new_prod);
        let cons = QueueIndex::from_field(log2, self.cmdq_cons);
        if QueuePair::new(new, cons).is_err() {
            self.violation(format!("CMDQ_PROD {new:?} overruns CONS {cons:?}"));
        }
        let base = Self::queue_addr(self.cmdq_base);
        let mut i = old;
        while i != new {
            let at = base + i.byte_offset(COMMAND_SIZE) as u64;
            let word = i.byte_offset(COMMAND_SIZE) / 8;
            for w in 0..2 {
                let now = self.arena.read(at + 8 * w as u64);
                if self.cmdq_at_wmb.get(word + w).copied() != now {
                    self.violation(format!(
                        "command at {i:?} published without a write barrier after it was written"
                    ));
                }
            }
            i = i.advance(1);
        }
        let sids: Vec<StreamId> = self.watched.iter().copied().collect();
        for sid in sids {
            let now = self.ste_words(sid);
            if self.stes_at_wmb.get(&sid).is_some_and(|&then| then != now) {
                self.violation(format!(
                    "sid {sid:#x}: STE written after the last write barrier before CMDQ_PROD"
                ));
            }
        }
    }

    fn snapshot_at_wmb(&mut self) {
        let base = Self::queue_addr(self.cmdq_base);
        let words = (COMMAND_SIZE << self.cmdq_log2()) / 8;
        self.cmdq_at_wmb = (0..words)
            .map_while(|w| self.arena.read(base + 8 * w as u64))
            .collect();
        self.stes_at_wmb = self
            .watched
            .iter()
            .map(|&sid| (sid, self.ste_words(sid)))
            .collect();
    }

    /// Checks that a base register points at a block of the arena big enough.
    fn check_table(&mut self, what: &str, addr: u64, bytes: u64) {
        if self.arena.block(addr, bytes).is_none() {
            self.violation(format!(
                "{what} enabled with its base {addr:#x} (+{bytes:#x}) outside allocated memory"
            ));
        }
    }

    fn write_cr0(&mut self, value: u32) {
        let enabling = value & !self.cr0ack;
        if enabling & CR0::CMDQEN::SET.value != 0 {
            let bytes = (COMMAND_SIZE as u64) << self.cmdq_log2();
            self.check_table("CMDQEN", Self::queue_addr(self.cmdq_base), bytes);
        }
        if enabling & CR0::EVTQEN::SET.value != 0 {
            let bytes = (EVENT_SIZE as u64) << self.evtq_log2();
            self.check_table("EVTQEN", Self::queue_addr(self.evtq_base), bytes);
        }
        if enabling & CR0::SMMUEN::SET.value != 0 {
            let bytes = self.layout().top_level_bytes();
            self.check_table("SMMUEN", self.strtab_addr(), bytes);
            self.check_enabling_smmu();
        }
        self.cr0 = value;
        self.cr0_reads_left = self.knobs.cr0_ack_delay;
    }

    /// Setting SMMUEN: the SMMU starts using the Stream table at `STRTAB_BASE` and whatever its
    /// configuration cache holds. Every block of the table must have been written before the
    /// last write barrier, and no cached STE may differ from memory (a table switched while the
    /// SMMU was off needs CMD_CFGI_ALL and a CMD_SYNC before SMMUEN is set again).
    fn check_enabling_smmu(&mut self) {
        let layout = self.layout();
        let base = self.strtab_addr();
        let mut blocks = Vec::new();
        if let Some((block, _)) = self.arena.block(base, 8) {
            blocks.push(block);
        }
        if let super::ste::StreamTableFormat::TwoLevel { split } = layout.format {
            for l1 in 0..layout.top_level_entries() {
                let Some(raw) = self.arena.read(base + 8 * l1) else {
                    break;
                };
                let desc = L1Std::<Pa>::decode(raw);
                if desc.span > 0
                    && desc.span <= split + 1
                    && let Some((block, _)) = self.arena.block(desc.l2_table.0, 8)
                {
                    blocks.push(block);
                }
            }
        }
        for block in blocks {
            if self.dirty_since_wmb.contains(&block) {
                self.violation(format!(
                    "SMMUEN set with Stream table block {block:#x} written after the last write \
                     barrier"
                ));
            }
        }
        let stale: Vec<StreamId> = self
            .cache
            .iter()
            .filter(|&(&sid, words)| self.ste_words(sid) != Some(*words))
            .map(|(&sid, _)| sid)
            .collect();
        for sid in stale {
            self.violation(format!(
                "sid {sid:#x}: SMMUEN set while the configuration cache holds an STE that differs \
                 from the Stream table"
            ));
        }
    }

    /// The STE of `sid` in the table at `base`, laid out like the live one, if reachable there.
    fn ste_words_in(&self, base: u64, sid: StreamId) -> Option<[u64; 8]> {
        let layout = self.layout();
        let at = match layout.locate(sid).ok()? {
            SteLocation::Linear { offset } => base + offset,
            SteLocation::TwoLevel {
                l1_offset,
                l2_index,
            } => {
                let super::ste::StreamTableFormat::TwoLevel { split } = layout.format else {
                    return None;
                };
                let l1 = L1Std::<Pa>::decode(self.arena.read(base + l1_offset)?);
                l1.l2_table.0 + l1.ste_offset(l2_index, split).ok()?
            }
        };
        let mut words = [0; 8];
        for (i, w) in words.iter_mut().enumerate() {
            *w = self.arena.read(at + 8 * i as u64)?;
        }
        Some(words)
    }

    fn read_cr0ack(&mut self) -> u32 {
        let refused = self.knobs.smmuen_ack_never && self.cr0 & CR0::SMMUEN::SET.value != 0;
        if self.cr0ack != self.cr0 && !self.knobs.cr0_ack_never && !refused {
            if self.cr0_reads_left > 0 {
                self.cr0_reads_left -= 1;
            } else {
                self.cr0ack = self.cr0;
                self.cr0_acked();
            }
        }
        self.cr0ack
    }

    fn cr0_acked(&mut self) {
        if self.knobs.cmdq_per_poll.is_none() {
            self.process_commands(u32::MAX);
        }
        self.observe(None);
    }

    fn read_gbpa(&mut self) -> u32 {
        if let Some((value, left)) = self.gbpa_update {
            if self.knobs.gbpa_update_never {
                return self.gbpa | GBPA::UPDATE::SET.value;
            }
            if left > 0 {
                self.gbpa_update = Some((value, left - 1));
                return self.gbpa | GBPA::UPDATE::SET.value;
            }
            self.gbpa = value;
            self.gbpa_update = None;
        }
        self.gbpa
    }

    fn write_gbpa(&mut self, value: u32) {
        let update = GBPA::UPDATE::SET.value;
        if self.gbpa_update.is_some() {
            self.violation(format!("GBPA written ({value:#x}) during an update"));
        } else if value & update != 0 {
            self.gbpa_update = Some((value & !update, self.knobs.gbpa_update_delay));
        }
    }

    fn guard(&mut self, off: usize, bits: u32, what: &str) {
        if self.enabled(bits) {
            self.violation(format!("register {off:#x} written while {what} is enabled"));
        }
    }

    fn write32(&mut self, off: usize, value: u32) {
        self.trace.push(Trace::Write32 { off, value });
        if off != offset::GBPA && self.gbpa & GBPA::ABORT::SET.value == 0 {
            self.violation(format!(
                "register {off:#x} written while GBPA lets traffic bypass the SMMU"
            ));
        }
        match off {
            offset::CR0 => self.write_cr0(value),
            offset::CR1 => {
                self.guard(off, CR0_ENABLES, "the SMMU or a queue");
                self.cr1 = value;
            }
            offset::CR2 => {
                self.guard(off, CR0::SMMUEN::SET.value, "SMMUEN");
                self.cr2 = value;
            }
            offset::GBPA => self.write_gbpa(value),
            offset::IRQ_CTRL => self.irq_ctrl = value,
            offset::GERRORN => {
                self.gerrorn = value;
                if (self.gerror ^ self.gerrorn) & GERROR::CMDQ_ERR::SET.value == 0 {
                    self.cmdq_err = 0;
                    if self.knobs.cmdq_per_poll.is_none() {
                        self.process_commands(u32::MAX);
                    }
                }
            }
            offset::STRTAB_BASE_CFG => {
                self.guard(off, CR0::SMMUEN::SET.value, "SMMUEN");
                self.strtab_cfg = value;
                self.observe(None);
            }
            offset::CMDQ_PROD => {
                if self.enabled(CR0::CMDQEN::SET.value) {
                    self.check_publication(value);
                }
                self.cmdq_prod = value & ((1 << 20) - 1);
                if self.knobs.cmdq_per_poll.is_none() {
                    self.process_commands(u32::MAX);
                }
            }
            offset::CMDQ_CONS => {
                self.guard(off, CR0::CMDQEN::SET.value, "CMDQEN");
                self.cmdq_cons = value & ((1 << 20) - 1);
            }
            offset::EVTQ_PROD => {
                self.guard(off, CR0::EVTQEN::SET.value, "EVTQEN");
                self.evtq_prod = value;
            }
            offset::EVTQ_CONS => self.write_evtq_cons(value),
            _ => self.violation(format!("write32 of {value:#x} to unmodelled {off:#x}")),
        }
    }

    fn write_evtq_cons(&mut self, value: u32) {
        if self.enabled(CR0::EVTQEN::SET.value) {
            let log2 = self.evtq_log2();
            let prod = OutputQueueProd::decode(log2, self.evtq_prod);
            let old = OutputQueueCons::decode(log2, self.evtq_cons);
            let new = OutputQueueCons::decode(log2, value);
            match (
                QueuePair::new(prod.wr, old.rd),
                QueuePair::new(prod.wr, new.rd),
            ) {
                (Ok(before), Ok(after)) if after.len() <= before.len() => {}
                _ => self.violation(format!(
                    "EVTQ_CONS {:?} not between CONS {:?} and PROD {:?}",
                    new.rd, old.rd, prod.wr
                )),
            }
        }
        self.evtq_cons = value;
    }

    fn read32(&mut self, off: usize) -> u32 {
        let [idr0, idr1, idr3, idr5] = self.features.to_idr();
        match off {
            offset::IDR0 => idr0,
            offset::IDR1 => idr1,
            offset::IDR2 | offset::IDR4 => 0,
            offset::IDR3 => idr3,
            offset::IDR5 => idr5,
            offset::CR0 => self.cr0,
            offset::CR0ACK => self.read_cr0ack(),
            offset::CR1 => self.cr1,
            offset::CR2 => self.cr2,
            offset::GBPA => self.read_gbpa(),
            offset::IRQ_CTRL | offset::IRQ_CTRLACK => self.irq_ctrl,
            offset::GERROR => self.gerror,
            offset::GERRORN => self.gerrorn,
            offset::STRTAB_BASE_CFG => self.strtab_cfg,
            offset::CMDQ_PROD => self.cmdq_prod,
            offset::CMDQ_CONS => {
                if let Some(n) = self.knobs.cmdq_per_poll {
                    self.process_commands(n);
                }
                self.cmdq_cons | u32::from(self.cmdq_err) << 24
            }
            offset::EVTQ_PROD => self.evtq_prod,
            offset::EVTQ_CONS => self.evtq_cons,
            _ => {
                self.violation(format!("read32 of unmodelled {off:#x}"));
                0
            }
        }
    }

    fn write64(&mut self, off: usize, value: u64) {
        self.trace.push(Trace::Write64 { off, value });
        if self.gbpa & GBPA::ABORT::SET.value == 0 {
            self.violation(format!(
                "register {off:#x} written while GBPA lets traffic bypass the SMMU"
            ));
        }
        match off {
            offset::STRTAB_BASE => {
                self.guard(off, CR0::SMMUEN::SET.value, "SMMUEN");
                self.strtab_base = value;
                self.observe(None);
            }
            offset::CMDQ_BASE => {
                self.guard(off, CR0::CMDQEN::SET.value, "CMDQEN");
                self.cmdq_base = value;
            }
            offset::EVTQ_BASE => {
                self.guard(off, CR0::EVTQEN::SET.value, "EVTQEN");
                self.evtq_base = value;
            }
            _ => self.violation(format!("write64 of {value:#x} to unmodelled {off:#x}")),
        }
    }

    fn read64(&mut self, off: usize) -> u64 {
        match off {
            offset::STRTAB_BASE => self.strtab_base,
            offset::CMDQ_BASE => self.cmdq_base,
            offset::EVTQ_BASE => self.evtq_base,
            _ => {
                self.violation(format!("read64 of unmodelled {off:#x}"));
                0
            }
        }
    }
}

impl Model {
    /// A model of an SMMU with `features`, reset as QEMU resets it (GBPA bypass, all off).
    /// Installs this thread's DMA write observer.
    pub fn new(features: SmmuFeatures) -> Self {
        let state = State {
            features,
            knobs: Knobs::default(),
            arena: Arena {
                blocks: BTreeMap::new(),
            },
            cr0: 0,
            cr0ack: 0,
            cr0_reads_left: 0,
            cr1: 0,
            cr2: 0,
            gbpa: 0,
            gbpa_update: None,
            irq_ctrl: 0,
            gerror: 0,
            gerrorn: 0,
            strtab_base: 0,
            strtab_cfg: 0,
            cmdq_base: 0,
            cmdq_prod: 0,
            cmdq_cons: 0,
            cmdq_err: 0,
            evtq_base: 0,
            evtq_prod: 0,
            evtq_cons: 0,
            trace: Vec::new(),
            reads: Vec::new(),
            executed: Vec::new(),
            violations: Vec::new(),
            cache: BTreeMap::new(),
            last_fetched: BTreeMap::new(),
            watched: BTreeSet::new(),
            watched_state: BTreeMap::new(),
            watched_at: BTreeMap::new(),
            dirty_since_wmb: BTreeSet::new(),
            cmdq_at_wmb: Vec::new(),
            stes_at_wmb: BTreeMap::new(),
            barriers: [0; 3],
            events_lost: 0,
            stage2s: BTreeMap::new(),
            tlb: BTreeMap::new(),
        };
        let shared = Rc::new(RefCell::new(state));
        let weak: Weak<RefCell<State>> = Rc::downgrade(&shared);
        write_observer::set(Some(Box::new(move |pa| {
            if let Some(state) = weak.upgrade() {
                state.borrow_mut().observe_write(pa);
            }
        })));
        Self(shared)
    }

    pub fn mmio(&self) -> ModelMmio {
        ModelMmio(self.0.clone())
    }

    pub fn dma(&self) -> ModelDma {
        ModelDma(self.0.clone())
    }

    /// The state, for knobs and inspection. Do not hold it across a driver call.
    pub fn state(&self) -> RefMut<'_, State> {
        self.0.borrow_mut()
    }

    /// Has the configuration cache and the trace follow these StreamIDs.
    pub fn watch(&self, sids: impl IntoIterator<Item = StreamId>) {
        let mut s = self.state();
        s.watched.extend(sids);
        s.observe(None);
    }

    /// The STE the SMMU would fetch for `sid` now, `None` if there is none reachable.
    pub fn ste(&self, sid: StreamId) -> Option<Ste> {
        self.state().ste_words(sid).map(Ste)
    }

    /// The Stream table base the SMMU uses (`STRTAB_BASE.ADDR`).
    pub fn strtab_base(&self) -> Pa {
        Pa(self.state().strtab_addr())
    }

    /// The raw `STRTAB_BASE_CFG`.
    pub fn strtab_cfg(&self) -> u32 {
        self.state().strtab_cfg
    }

    /// The STE for `sid` in a Stream table at `base` laid out like the live one (say, one that
    /// was live before a switch), `None` if it has none there.
    pub fn ste_in(&self, base: Pa, sid: StreamId) -> Option<Ste> {
        self.state().ste_words_in(base.0, sid).map(Ste)
    }

    /// The L1STD for `l1` (two-level tables).
    pub fn l1std(&self, l1: usize) -> Option<L1Std<Pa>> {
        let s = self.state();
        let raw = s.arena.read(s.strtab_addr() + 8 * l1 as u64)?;
        Some(L1Std::decode(raw))
    }

    /// Raw register values the tests look at.
    pub fn cr0ack(&self) -> u32 {
        self.state().cr0ack
    }

    pub fn gbpa(&self) -> u32 {
        self.state().gbpa
    }

    pub fn cr1(&self) -> u32 {
        self.state().cr1
    }

    pub fn cr2(&self) -> u32 {
        self.state().cr2
    }

    pub fn evtq_prod_cons(&self) -> (u32, u32) {
        let s = self.state();
        (s.evtq_prod, s.evtq_cons)
    }

    /// Writes an event record as the SMMU would, or signals overflow when the queue is full.
    pub fn inject_event(&self, raw: [u64; 4]) -> Injected {
        let mut s = self.state();
        if s.cr0ack & CR0::EVTQEN::SET.value == 0 {
            return Injected::Dropped;
        }
        let log2 = s.evtq_log2();
        let mut prod = OutputQueueProd::decode(log2, s.evtq_prod);
        let cons = OutputQueueCons::decode(log2, s.evtq_cons);
        let Ok(q) = QueuePair::new(prod.wr, cons.rd) else {
            s.violation(format!(
                "event queue PROD {:?} vs CONS {:?}",
                prod.wr, cons.rd
            ));
            return Injected::Dropped;
        };
        if q.is_full() {
            prod.record_overflow(&cons);
            s.evtq_prod = prod.encode();
            s.events_lost += 1;
            return Injected::Overflow;
        }
        let at = State::queue_addr(s.evtq_base) + prod.wr.byte_offset(EVENT_SIZE) as u64;
        for (i, &w) in raw.iter().enumerate() {
            if !s.arena.write(at + 8 * i as u64, w) {
                s.violation(format!("event queue slot {at:#x} outside allocated memory"));
            }
        }
        prod.wr = prod.wr.advance(1);
        s.evtq_prod = prod.encode();
        Injected::Written
    }

    /// Lets transactions walk `table` (found by the S2TTB of their STE).
    pub fn register_stage2(&self, table: &'static Stage2Table) {
        self.state().stage2s.insert(table.root_pa().0, table);
    }

    /// How many TLB entries the model holds for `vmid`.
    pub fn tlb_entries(&self, vmid: u16) -> usize {
        self.state().tlb.keys().filter(|&&(v, _)| v == vmid).count()
    }

    /// A transaction of stream `sid` at `addr` (a write if `write`), as the SMMU would handle it
    /// now: STE from the configuration cache (fetched on a miss), TLB, stage-2 walk, record.
    pub fn transact(&self, sid: StreamId, addr: u64, write: bool) -> Transaction {
        let mut s = self.state();
        let words = match s.cache.get(&sid) {
            Some(w) => Some(*w),
            None => {
                let w = s.ste_words(sid);
                if let Some(w) = w {
                    s.cache.insert(sid, w);
                }
                w
            }
        };
        let origin = super::event::Origin::stream(sid);
        let Some(words) = words else {
            // Beyond the table, or no level 2 table (L1STD invalid): C_BAD_STREAMID, recorded
            // when CR2.RECINVSID is set (IHI 0070 7.3.2).
            let record = s.cr2 & super::regs::CR2::RECINVSID::SET.value != 0;
            drop(s);
            if record {
                self.inject_event(super::event::Event::BadStreamId { origin }.encode());
            }
            return Transaction::Aborted;
        };
        let ste = Ste(words);
        if ste.0[0] & super::ste::STE0::V::SET.value == 0 {
            // An invalid STE: C_BAD_STE (IHI 0070 7.3.4).
            drop(s);
            self.inject_event(super::event::Event::BadSte { origin }.encode());
            return Transaction::Aborted;
        }
        if ste.config() != super::ste::StreamConfig::Stage2 {
            return Transaction::Aborted;
        }
        let (vmid, page) = (ste.vmid(), addr & !0xfff);
        let hit = s.tlb.get(&(vmid, page)).copied();
        let walked = hit.or_else(|| {
            let table = s.stage2s.get(&ste.s2ttb().0)?;
            match table.translate(WalkIpa(page))? {
                (
                    pa,
                    Access::NormalMemory {
                        read: true,
                        write: w,
                        ..
                    },
                ) => Some((pa.0, w)),
                (pa, Access::Device) => Some((pa.0, true)),
                _ => None,
            }
        });
        match walked {
            Some((pa, writable)) if writable || !write => {
                s.tlb.insert((vmid, page), (pa, writable));
                Transaction::Landed(pa | (addr & 0xfff))
            }
            _ => {
                let recorded = ste.s2r();
                drop(s);
                if recorded {
                    let ev = super::event::stage2_translation_fault(sid, addr, write);
                    self.inject_event(ev.encode());
                }
                Transaction::Faulted { recorded }
            }
        }
    }

    /// Activates global errors (toggles GERROR bits).
    pub fn raise_gerror(&self, bits: u32) {
        self.state().gerror ^= bits;
    }

    /// The commands consumed so far.
    pub fn executed(&self) -> Vec<Command> {
        self.state().executed.clone()
    }

    pub fn violations(&self) -> Vec<String> {
        self.state().violations.clone()
    }

    pub fn trace(&self) -> Vec<Trace> {
        self.state().trace.clone()
    }

    /// The register offsets the driver read, in order.
    pub fn reads(&self) -> Vec<usize> {
        self.state().reads.clone()
    }
}

impl SmmuMmio for ModelMmio {
    fn read32(&mut self, offset: usize) -> u32 {
        let mut s = self.0.borrow_mut();
        s.reads.push(offset);
        s.read32(offset)
    }
    fn write32(&mut self, offset: usize, value: u32) {
        self.0.borrow_mut().write32(offset, value);
    }
    fn read64(&mut self, offset: usize) -> u64 {
        let mut s = self.0.borrow_mut();
        s.reads.push(offset);
        s.read64(offset)
    }
    fn write64(&mut self, offset: usize, value: u64) {
        self.0.borrow_mut().write64(offset, value);
    }
}

impl DmaMemory for ModelDma {
    fn alloc_zeroed(&mut self, bytes: usize, align: usize) -> Option<DmaBlock> {
        let mut s = self.0.borrow_mut();
        if let Some(left) = s.knobs.allocs_left.as_mut() {
            *left = left.checked_sub(1)?;
        }
        let ptr = s.arena.alloc(bytes, align)?;
        drop(s);
        // SAFETY: the arena keeps the block allocated until the model's state is dropped, which
        // this `ModelDma` (held by the driver along with every block) keeps alive; only the
        // driver and the model (standing for the SMMU) access it.
        Some(unsafe { DmaBlock::new(ptr, Pa(ptr.as_ptr() as u64), bytes) })
    }

    fn wmb(&self) {
        let mut s = self.0.borrow_mut();
        s.barriers[0] += 1;
        s.trace.push(Trace::Barrier(Barrier::Write));
        s.dirty_since_wmb.clear();
        s.snapshot_at_wmb();
    }

    fn rmb(&self) {
        let mut s = self.0.borrow_mut();
        s.barriers[1] += 1;
        s.trace.push(Trace::Barrier(Barrier::Read));
    }

    fn mb(&self) {
        let mut s = self.0.borrow_mut();
        s.barriers[2] += 1;
        s.trace.push(Trace::Barrier(Barrier::Full));
    }
}
