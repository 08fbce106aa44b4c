//! The host's Event queue, and which physical events belong in it.
//!
//! Writing a record (section 7.4): while `CR0.EVENTQEN` is 1, a record goes into the entry
//! `EVENTQ_PROD.WR` indexes at `EVENTQ_BASE`, then `WR` advances. A full queue (same index,
//! different wrap flags) loses the record and toggles `EVENTQ_PROD.OVFLG`, unless an overflow is
//! already pending (OVFLG differs from `EVENTQ_CONS.OVACKFLG`). A queue that lies where the host may
//! not write (Portcullis' memory, device memory, read-only memory in crash mode) is an external
//! abort on the SMMU's write: the record is lost and `GERROR.EVENTQ_ABT_ERR` is activated. While
//! EVENTQEN is 0 records are dropped without trace.
//!
//! Routing (ARCHITECTURE.md, "Fault forwarding"): Portcullis drains the physical Event queue and
//! asks [`EmulatedSmmu::route`] where each record goes. The rule: a record belongs to the host if
//! it is about one of the physical streams the emulation configures and it is about the host's
//! side of the translation (its stage 1: CDs, its page tables, its SubstreamIDs, unsupported
//! transactions). Everything else is Portcullis':
//! - stage 2 faults (`S2 == 1`): the firewall refusing a host device, or (after the fence) a late
//!   transaction of the dead kernel's devices, which goes to the fence's ring;
//! - configuration errors of the physical STEs (C_BAD_STREAMID, F_STE_FETCH, C_BAD_STE, F_VMS_FETCH,
//!   F_CFG_CONFLICT): Portcullis wrote those STEs, and the emulation reports the host's own
//!   configuration errors itself;
//! - records of features the host was not offered (ATS, PRI) and IMPLEMENTATION DEFINED records;
//! - streams the emulation does not configure.

use super::HostMemory;
use super::state::{Delivery, EmulatedSmmu, Note, push_note, queue_base_addr};
use crate::smmu::event::{EVENT_SIZE, Event};
use crate::smmu::queue::{OutputQueueCons, OutputQueueProd, QueuePair};
use crate::smmu::regs::CR0;

/// Where a record from the physical Event queue goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventRoute {
    /// Into the host's Event queue ([`EmulatedSmmu::deliver_record`]).
    Host,
    /// Portcullis' own: logged, or kept for the fault report.
    Portcullis,
}

impl EmulatedSmmu {
    /// Writes `event` into the host's Event queue.
    pub fn deliver_event<M: HostMemory>(&mut self, event: &Event, mem: &mut M) -> Delivery {
        self.deliver_record(event.encode(), mem)
    }

    /// Writes a raw 32-byte record (as read from the physical Event queue) into the host's Event
    /// queue.
    pub fn deliver_record<M: HostMemory>(&mut self, record: [u64; 4], mem: &mut M) -> Delivery {
        if self.regs.cr0 & CR0::EVTQEN::SET.value == 0 {
            return Delivery::QueueDisabled;
        }
        let log2 = self.evtq_log2();
        let mut prod = OutputQueueProd::decode(log2, self.regs.evtq_prod);
        let cons = OutputQueueCons::decode(log2, self.regs.evtq_cons);
        // A consumer index the host moved beyond the producer leaves no room that can be trusted.
        let full = QueuePair::new(prod.wr, cons.rd).map_or(true, |q| q.is_full());
        if full {
            prod.record_overflow(&cons);
            self.regs.evtq_prod = prod.encode();
            return Delivery::Overflow;
        }
        let base = queue_base_addr(self.regs.evtq_base);
        let offset = prod.wr.byte_offset(EVENT_SIZE) as u64;
        let mut bytes = [0u8; EVENT_SIZE];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(record) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        let written = base
            .checked_add(offset)
            .map(|addr| mem.write(addr, &bytes).is_ok())
            .unwrap_or(false);
        if !written {
            self.raise_evtq_abort();
            return Delivery::WriteAborted;
        }
        prod.wr = prod.wr.advance(1);
        self.regs.evtq_prod = prod.encode();
        Delivery::Written
    }

    /// [`deliver_event`](Self::deliver_event) for the emulation's own records, noting a loss.
    pub(super) fn deliver_event_noted<M: HostMemory>(
        &mut self,
        event: &Event,
        mem: &mut M,
        notes: &mut alloc::vec::Vec<Note>,
    ) {
        match self.deliver_event(event, mem) {
            Delivery::Written => {}
            reason => push_note(
                notes,
                Note::EventLost {
                    event: event.id().0,
                    reason,
                },
            ),
        }
    }

    /// Where a record from the physical Event queue goes (see the module documentation).
    pub fn route(&self, event: &Event) -> EventRoute {
        let Some(state) = self.streams.get(&event.sid()) else {
            return EventRoute::Portcullis;
        };
        if !state.is_live() {
            // Aborted streams record nothing; anything seen there predates the change.
            return EventRoute::Portcullis;
        }
        let host_side = match event {
            Event::Translation(t)
            | Event::AddrSize(t)
            | Event::Access(t)
            | Event::Permission(t) => !t.stage2,
            Event::WalkEabt { stage2, .. } | Event::TlbConflict { stage2, .. } => !stage2,
            Event::Uut { .. }
            | Event::StreamDisabled { .. }
            | Event::BadSubstreamId { .. }
            | Event::CdFetch { .. }
            | Event::BadCd { .. } => true,
            Event::BadStreamId { .. }
            | Event::SteFetch { .. }
            | Event::BadSte { .. }
            | Event::VmsFetch { .. }
            | Event::CfgConflict { .. }
            | Event::BadAtsTreq { .. }
            | Event::TranslForbidden { .. }
            | Event::PageRequest { .. }
            | Event::ImpDef { .. } => false,
        };
        if host_side {
            EventRoute::Host
        } else {
            EventRoute::Portcullis
        }
    }

    /// `EVENTQ_PROD` and `EVENTQ_CONS` as the host sees them.
    pub fn event_queue_indexes(&self) -> (OutputQueueProd, OutputQueueCons) {
        let log2 = self.evtq_log2();
        (
            OutputQueueProd::decode(log2, self.regs.evtq_prod),
            OutputQueueCons::decode(log2, self.regs.evtq_cons),
        )
    }
}
