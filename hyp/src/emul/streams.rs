//! The host's Stream table, and the physical STE each stream gets from it.
//!
//! The emulation composes a physical STE for a stream when the host's configuration of it may have
//! changed: on CMD_CFGI_STE / CMD_CFGI_STE_RANGE / CMD_CFGI_ALL while SMMUEN is 1, and for every
//! stream when SMMUEN or GBPA change (and when Portcullis switches its DMA policy). Only the
//! streams Portcullis' physical Stream table covers are composed: no other StreamID can carry
//! traffic.
//!
//! | host state                                      | physical STE                        |
//! |-------------------------------------------------|-------------------------------------|
//! | SMMUEN = 0, GBPA.ABORT = 1                      | abort                               |
//! | SMMUEN = 0, GBPA.ABORT = 0                      | stage 2 only, GBPA's attributes     |
//! | StreamID beyond the table / no level 2 table    | abort (C_BAD_STREAMID, see below)   |
//! | table or L1STD where the host may not go        | abort, F_STE_FETCH                  |
//! | STE.V = 0                                       | abort                               |
//! | STE ILLEGAL for the emulated SMMU (5.2.2)       | abort, C_BAD_STE                    |
//! | STE Config = abort                              | abort                               |
//! | STE Config = bypass                             | stage 2 only, the STE's attributes  |
//! | STE Config = stage 1                            | nested: host S1 fields + stage 2    |
//!
//! "Stage 2" is always [`PhysicalSmmu::stage2`]; the stage 2 fields of the host's STE (and every
//! other field Portcullis owns: EATS, STRW, S2VMID, ...) are never read.
//!
//! Events. On hardware, C_BAD_STE, F_STE_FETCH and C_BAD_STREAMID are recorded when a transaction
//! meets the configuration. The emulation sees no transactions, so it records them when it
//! composes, once per composition:
//! - C_BAD_STE and F_STE_FETCH always (they only arise from a host that wrote or pointed at
//!   something wrong);
//! - C_BAD_STREAMID only when a CMD_CFGI_STE names the stream and `CR2.RECINVSID` is set. A
//!   two-level table legitimately has no level 2 table for the devices the host does not use, so
//!   bulk recompositions (CMD_CFGI_ALL, enabling the SMMU) would otherwise flood the host's queue
//!   with events hardware would never record (those devices send no traffic).
//!
//! Reading the host's table: the Stream table and level 1 descriptors are read through
//! [`HostMemory`] (so under the host's CPU stage 2 policy); Context descriptors are never read:
//! in nested mode the SMMU fetches them itself, through Portcullis' stage 2.

use alloc::vec::Vec;
use core::ops::RangeInclusive;

use tock_registers::LocalRegisterCopy;

use super::commands::{OutOfMemory, PhysBatch};
use super::state::{EmulatedSmmu, Note, StreamState, Trigger, push_note, read_words};
use super::{HostMemory, PhysicalSmmu};
use crate::smmu::event::{Event, Origin};
use crate::smmu::regs::{GBPA, STRTAB_BASE, StallModel};
use crate::smmu::ste::{
    AttrOverrides, HostSte, HostStreamConfig, L1Std, Stage2Config, Ste, SteError, SteLocation,
    StreamTableError, StreamTableFormat, StreamTableLayout,
};
use crate::smmu::{Ipa, Pa, StreamId};

/// The level 1 descriptor read last while recomposing a range: 2^SPLIT consecutive StreamIDs
/// share it, so a bulk invalidation reads each once instead of once per stream (a host batch is
/// atomic to the host, see `commands::Covered`, so one reading serves the whole range).
#[derive(Default)]
struct L1Cache {
    last: Option<(Ipa, Result<u64, Ipa>)>,
}

/// Why no host STE could be read.
#[derive(Clone, Copy)]
enum Fetch {
    NoSte(StreamTableError),
    Denied(Ipa),
}

/// One composed stream: its new state, its physical STE, and a record for the host.
struct Composition {
    state: StreamState,
    ste: Ste,
    event: Option<Event>,
}

impl Composition {
    fn abort(state: StreamState, event: Option<Event>) -> Self {
        Self {
            state,
            ste: Ste::abort(),
            event,
        }
    }
}

impl EmulatedSmmu {
    /// The host's Stream table layout, as this SMMU interprets `STRTAB_BASE_CFG`.
    pub fn strtab_layout(&self) -> StreamTableLayout {
        StreamTableLayout::decode(self.regs.strtab_base_cfg, &self.host)
    }

    /// The host's Stream table base (`STRTAB_BASE.ADDR`).
    pub fn strtab_base(&self) -> Ipa {
        let b = LocalRegisterCopy::<u64, STRTAB_BASE::Register>::new(self.regs.strtab_base);
        Ipa(b.read(STRTAB_BASE::ADDR) << STRTAB_BASE::ADDR.shift)
    }

    /// The GBPA attributes as STE overrides the physical SMMU implements.
    pub(super) fn gbpa_overrides(&self) -> AttrOverrides {
        let g = LocalRegisterCopy::<u32, GBPA::Register>::new(self.regs.gbpa);
        AttrOverrides {
            mtcfg: g.is_set(GBPA::MTCFG),
            mem_attr: g.read(GBPA::MEMATTR) as u8,
            alloccfg: g.read(GBPA::ALLOCCFG) as u8,
            shcfg: g.read(GBPA::SHCFG) as u8,
            privcfg: g.read(GBPA::PRIVCFG) as u8,
            instcfg: g.read(GBPA::INSTCFG) as u8,
        }
        .restricted_to(&self.physical)
    }

    /// Reads the host's STE for `sid`: the level 1 descriptor first for a two-level table.
    fn fetch_host_ste<M: HostMemory>(
        &self,
        sid: StreamId,
        mem: &M,
        l1_cache: &mut L1Cache,
    ) -> Result<[u64; 8], Fetch> {
        let base = self.strtab_base();
        let at = |base: Ipa, offset: u64| base.checked_add(offset).ok_or(Fetch::Denied(base));
        let layout = self.strtab_layout();
        let ste_addr = match (layout.locate(sid).map_err(Fetch::NoSte)?, layout.format) {
            (SteLocation::Linear { offset }, _) => at(base, offset)?,
            (
                SteLocation::TwoLevel {
                    l1_offset,
                    l2_index,
                },
                StreamTableFormat::TwoLevel { split },
            ) => {
                let l1_addr = at(base, l1_offset)?;
                let raw = match l1_cache.last {
                    Some((addr, read)) if addr == l1_addr => read,
                    _ => {
                        let read = read_words::<1, M>(mem, l1_addr)
                            .map(|[w]| w)
                            .map_err(|d| d.ipa);
                        l1_cache.last = Some((l1_addr, read));
                        read
                    }
                }
                .map_err(Fetch::Denied)?;
                let l1 = L1Std::<Ipa>::decode(raw);
                let offset = l1.ste_offset(l2_index, split).map_err(Fetch::NoSte)?;
                at(l1.l2_table, offset)?
            }
            // `locate` gives two-level locations for two-level layouts only.
            (SteLocation::TwoLevel { .. }, StreamTableFormat::Linear) => {
                return Err(Fetch::NoSte(StreamTableError::NoLevel2));
            }
        };
        read_words::<8, M>(mem, ste_addr).map_err(|d| Fetch::Denied(d.ipa))
    }

    /// The physical STE for `sid` in the current state.
    fn compose<M: HostMemory>(
        &self,
        sid: StreamId,
        s2: &Stage2Config,
        trigger: Trigger,
        mem: &M,
        l1_cache: &mut L1Cache,
    ) -> Composition {
        let origin = Origin::stream(sid);
        if !self.smmu_enabled() {
            let abort = self.regs.gbpa & GBPA::ABORT::SET.value != 0;
            let state = StreamState::Global { abort };
            return if abort {
                Composition::abort(state, None)
            } else {
                Composition {
                    state,
                    ste: Ste::stage2(s2, &self.gbpa_overrides()),
                    event: None,
                }
            };
        }
        let raw = match self.fetch_host_ste(sid, mem, l1_cache) {
            Ok(raw) => raw,
            Err(Fetch::NoSte(e)) => {
                let record = trigger == Trigger::Named && self.recinvsid();
                let event = record.then_some(Event::BadStreamId { origin });
                return Composition::abort(StreamState::NoSte(e), event);
            }
            Err(Fetch::Denied(at)) => {
                let event = Event::SteFetch {
                    origin,
                    reason: 0,
                    gpcf: false,
                    fetch_addr: fetch_address(at),
                };
                return Composition::abort(StreamState::FetchAborted { at }, Some(event));
            }
        };
        let view = HostSte::decode(raw).and_then(|v| v.validate(&self.host, self.host.oas_bits));
        match view {
            Err(SteError::NotValid) => Composition::abort(StreamState::Invalid, None),
            Err(e) => Composition::abort(StreamState::Illegal(e), Some(Event::BadSte { origin })),
            Ok(view) => match view.config {
                HostStreamConfig::Abort => Composition::abort(StreamState::Abort, None),
                HostStreamConfig::Bypass => Composition {
                    state: StreamState::Bypass,
                    ste: Ste::stage2(s2, &view.overrides),
                    event: None,
                },
                HostStreamConfig::Stage1(mut s1) => {
                    // The host sees no stalls. Where the physical SMMU lets STEs forbid them,
                    // forbid them, so that a CD asking to stall (ILLEGAL for the host) is
                    // refused by the hardware as C_BAD_CD rather than stalling.
                    s1.stall_disable = self.physical.stall_model == StallModel::StallAndTerminate;
                    Composition {
                        state: StreamState::Stage1 {
                            cd_table: s1.cd_table,
                        },
                        ste: Ste::nested(&s1, s2, &view),
                        event: None,
                    }
                }
            },
        }
    }

    /// Composes the physical STEs of the physical streams in `range` into `batch` (published a
    /// chunk at a time), recording their new state and writing any event into the host's Event
    /// queue. Fails only for want of memory, before the stream it could not hold is touched.
    ///
    /// With on-demand streams ([`EmulConfig::on_demand`](super::EmulConfig)) and SMMUEN = 1,
    /// every StreamID of `range` the physical table can hold is composed, not only the physical
    /// streams so far: one the host configures to reach memory becomes a physical stream
    /// ([`PhysicalSmmu::cover`]); one it leaves aborted stays without a physical STE (a stray
    /// device there is refused and recorded, C_BAD_STREAMID or C_BAD_STE). If the physical
    /// table cannot take it (no memory, no budget), the stream stays refused and, for a
    /// CMD_CFGI_STE naming it, the host gets the C_BAD_STREAMID record its own SMMU would make
    /// for a StreamID it does not support.
    pub(super) fn recompose<M: HostMemory, P: PhysicalSmmu>(
        &mut self,
        range: RangeInclusive<StreamId>,
        trigger: Trigger,
        mem: &mut M,
        phys: &mut P,
        batch: &mut PhysBatch,
        notes: &mut Vec<Note>,
    ) -> Result<(), OutOfMemory> {
        let s2 = phys.stage2();
        let mut l1_cache = L1Cache::default();
        let last = *range.end();
        let mut from = *range.start();
        let scan_to = match self.on_demand {
            Some(max) if self.smmu_enabled() => Some(last.min(max)),
            _ => None,
        };
        // StreamIDs are taken a few at a time (one map search per group, not per stream), into a
        // small array on the stack; `None`: not a physical stream yet.
        const GROUP: usize = 64;
        let mut group = [(0 as StreamId, None::<StreamState>); GROUP];
        let mut refused = 0u32;
        while from <= last {
            let mut n = 0;
            match scan_to {
                Some(to) => {
                    let mut sid = from;
                    while n < GROUP && sid <= to {
                        group[n] = (sid, self.streams.get(&sid).copied());
                        n += 1;
                        match sid.checked_add(1) {
                            Some(next) => sid = next,
                            None => break,
                        }
                    }
                }
                None => {
                    for (&sid, &old) in self.streams.range(from..=last).take(GROUP) {
                        group[n] = (sid, Some(old));
                        n += 1;
                    }
                }
            }
            if n == 0 {
                break;
            }
            // A stream's state changes only once it is composed below (a failed flush marks only
            // streams already composed), so `old` is still its state when its turn comes.
            for &(sid, old) in &group[..n] {
                let Some(old) = old else {
                    match self.compose_new(
                        sid,
                        &s2,
                        trigger,
                        mem,
                        phys,
                        batch,
                        notes,
                        &mut l1_cache,
                    ) {
                        Ok(true) => {}
                        Ok(false) => refused += 1,
                        Err(e) => return Err(e),
                    }
                    continue;
                };
                let buffered = match self.reserve_ste(batch, phys, notes) {
                    Ok(()) => true,
                    Err(e) if !batch.unbuffered_fallback => return Err(e),
                    Err(_) => false,
                };
                let c = self.compose(sid, &s2, trigger, mem, &mut l1_cache);
                let mut state = c.state;
                let unchanged_abort = batch.skip_unchanged_aborts && state.aborts() && old == state;
                if unchanged_abort {
                    // Its physical STE is the abort STE already written for it.
                } else if buffered {
                    batch.stes.push((sid, c.ste));
                } else if let Err(e) = phys.write_stes(&[(sid, c.ste)]) {
                    push_note(notes, Note::physical("STE write", &e));
                    state = StreamState::Unknown;
                    batch.failed = true;
                }
                if let Some(s) = self.streams.get_mut(&sid) {
                    *s = state;
                }
                if let Some(event) = c.event {
                    self.deliver_event_noted(&event, mem, notes);
                }
            }
            match group[n - 1].0.checked_add(1) {
                Some(next) => from = next,
                None => break,
            }
        }
        if refused > 0 {
            push_note(notes, Note::StreamsRefused { count: refused });
        }
        Ok(())
    }

    /// [`recompose`](Self::recompose) of a StreamID that is not a physical stream yet: it becomes
    /// one if the host lets it reach memory and the physical table can take it. Returns whether
    /// the host's configuration is in effect (`false`: the physical table refused the stream).
    #[allow(clippy::too_many_arguments)]
    fn compose_new<M: HostMemory, P: PhysicalSmmu>(
        &mut self,
        sid: StreamId,
        s2: &Stage2Config,
        trigger: Trigger,
        mem: &mut M,
        phys: &mut P,
        batch: &mut PhysBatch,
        notes: &mut Vec<Note>,
        l1_cache: &mut L1Cache,
    ) -> Result<bool, OutOfMemory> {
        let c = self.compose(sid, s2, trigger, mem, l1_cache);
        if !c.state.is_live() {
            // Its invalid physical STE refuses it already. Hardware records nothing for a
            // StreamID no device uses, so only a CMD_CFGI_STE naming it gets its record.
            if let Some(event) = c.event.filter(|_| trigger == Trigger::Named) {
                self.deliver_event_noted(&event, mem, notes);
            }
            return Ok(true);
        }
        let buffered = match self.reserve_ste(batch, phys, notes) {
            Ok(()) => true,
            Err(e) if !batch.unbuffered_fallback => return Err(e),
            Err(_) => false,
        };
        if phys.cover(sid).is_err() {
            if trigger == Trigger::Named && self.recinvsid() {
                let event = Event::BadStreamId {
                    origin: Origin::stream(sid),
                };
                self.deliver_event_noted(&event, mem, notes);
            }
            return Ok(false);
        }
        let mut state = c.state;
        if buffered {
            batch.stes.push((sid, c.ste));
        } else if let Err(e) = phys.write_stes(&[(sid, c.ste)]) {
            push_note(notes, Note::physical("STE write", &e));
            state = StreamState::Unknown;
            batch.failed = true;
        }
        self.streams.insert(sid, state);
        if let Some(event) = c.event {
            self.deliver_event_noted(&event, mem, notes);
        }
        Ok(true)
    }
}

/// The address an F_STE_FETCH record reports: the host's (intermediate) physical address, as
/// the host's own SMMU would report its fetch address, 8-byte aligned and within the 56 bits the
/// record holds.
fn fetch_address(at: Ipa) -> Pa {
    Pa(at.0 & ((1 << 56) - 1) & !7)
}
