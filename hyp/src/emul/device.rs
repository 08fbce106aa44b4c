//! [`EmulatedSmmu`]: the register file of the emulated SMMU and the effects of writing it.
//!
//! Every effect of a register write is complete when [`EmulatedSmmu::write`] returns, so each
//! acknowledgement register (`CR0ACK`, `IRQ_CTRLACK`, `GBPA.UPDATE`) already shows the new state
//! when the host polls it: an enable that needs physical work (SMMUEN changes recompose and sync
//! the physical STEs of every stream) has done it by then.
//!
//! What may change while enabled (section 6.3, the "Guarded by" rules of each register). A write
//! to a guarded register while its guard is set is CONSTRAINED UNPREDICTABLE: either ignored or
//! taking effect with unpredictable results. The emulated SMMU always takes the first choice,
//! ignores the write and reports it ([`Note::WriteIgnored`]):
//!
//! | register                          | writable only while                          |
//! |-----------------------------------|----------------------------------------------|
//! | `STRTAB_BASE`, `STRTAB_BASE_CFG`  | `CR0.SMMUEN == 0` (6.3.24, 6.3.25)           |
//! | `CR2`                             | `CR0.SMMUEN == 0` (6.3.12)                   |
//! | `CR1`                             | SMMUEN, CMDQEN and EVENTQEN all 0 (6.3.11)    |
//! | `CMDQ_BASE`, `CMDQ_CONS`          | `CR0.CMDQEN == 0` (6.3.26, 6.3.28)           |
//! | `EVENTQ_BASE`, `EVENTQ_PROD`      | `CR0.EVENTQEN == 0` (6.3.29, 6.3.95)         |
//! | `GBPA`                            | a write that sets `UPDATE` (6.3.14)          |
//!
//! `CR0ACK` equals `CR0` at all times here, so "CR0 or CR0ACK" in those rules is just `CR0`.

use alloc::vec::Vec;
use core::fmt;

use tock_registers::LocalRegisterCopy;

use super::commands::PhysBatch;
use super::features::{host_view, oas_for_ipa_bits};
use super::registers::{self, DecodeError, Reg, mask};
use super::state::SyncStats;
use super::state::{EmulatedSmmu, Note, RegisterFile, StreamState, Trigger};
use super::{HostMemory, PhysicalSmmu};
use crate::smmu::StreamId;
use crate::smmu::queue::{QueueIndex, clamp_log2_size};
use crate::smmu::regs::{
    CMDQ_CONS, CR0, CR1, CR2, GBPA, GERROR, IRQ_CTRL, QUEUE_BASE, SmmuFeatures,
};
use crate::smmu::ste::Ste;

/// How the emulated SMMU is set up at boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmulConfig {
    /// The physical SMMU's features (its ID registers).
    pub physical: SmmuFeatures,
    /// The size of the host's IPA space in bits; the advertised OAS is the smallest architected
    /// size that covers it.
    pub ipa_bits: u8,
    /// `SMMU_IIDR` as the host reads it (the physical one, so that the host's errata workarounds
    /// match the hardware its stage 1 runs on).
    pub iidr: u32,
    /// `SMMU_AIDR` as the host reads it.
    pub aidr: u32,
    /// log2 of the largest Command queue the host may configure (`IDR1.CMDQS`).
    pub cmdq_log2: u8,
    /// log2 of the largest Event queue the host may configure (`IDR1.EVENTQS`).
    pub evtq_log2: u8,
    /// `GBPA.ABORT` at reset. `false` (bypass, as QEMU resets it) matches Portcullis' boot state,
    /// where every stream is stage 2 only with the DMA policy.
    pub gbpa_abort: bool,
    /// `Some(max)`: the physical Stream table gives StreamIDs up to `max` a slot on demand
    /// ([`PhysicalSmmu::cover`](super::PhysicalSmmu::cover)), so a StreamID the host configures
    /// to reach memory becomes a physical stream when it does. `None`: only the streams the
    /// emulation is built with exist.
    pub on_demand: Option<StreamId>,
}

impl EmulConfig {
    /// Queues of 2^8 entries (4 KiB of commands, 8 KiB of events), GBPA resetting to bypass.
    pub fn new(physical: SmmuFeatures, ipa_bits: u8) -> Self {
        Self {
            physical,
            ipa_bits,
            iidr: 0,
            aidr: 0,
            cmdq_log2: 8,
            evtq_log2: 8,
            gbpa_abort: false,
            on_demand: None,
        }
    }
}

/// Why an [`EmulConfig`] cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmulError {
    /// No architected OAS covers this IPA size.
    IpaBits(u8),
    /// A queue size above what the queue index registers can hold (2^19).
    QueueTooLarge(u8),
    /// SIDSIZE above 32.
    SidBits(u8),
}

impl fmt::Display for EmulError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IpaBits(b) => write!(f, "no architected OAS for a {b}-bit IPA space"),
            Self::QueueTooLarge(l) => write!(f, "queue of 2^{l} entries is above 2^19"),
            Self::SidBits(b) => write!(f, "SIDSIZE {b} above 32"),
        }
    }
}

/// The answer to a register read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MmioRead {
    /// The value, in the low `size` bytes.
    pub value: u64,
    pub note: Option<Note>,
}

impl EmulatedSmmu {
    /// The emulated SMMU in its reset state (everything disabled, GBPA as configured) for the
    /// physical streams `streams` (the StreamIDs Portcullis' physical Stream table covers).
    ///
    /// Nothing is written to the physical SMMU: its boot configuration must match the reset state
    /// (every stream stage 2 only with the DMA policy for a bypass GBPA), or the caller makes it
    /// so with [`EmulatedSmmu::recompose_all`].
    pub fn new(
        config: &EmulConfig,
        streams: impl IntoIterator<Item = StreamId>,
    ) -> Result<Self, EmulError> {
        let oas = oas_for_ipa_bits(config.ipa_bits).ok_or(EmulError::IpaBits(config.ipa_bits))?;
        for log2 in [config.cmdq_log2, config.evtq_log2] {
            if log2 > QueueIndex::MAX_LOG2_SIZE {
                return Err(EmulError::QueueTooLarge(log2));
            }
        }
        if config.physical.sid_bits > 32 {
            return Err(EmulError::SidBits(config.physical.sid_bits));
        }
        let host = host_view(&config.physical, oas, config.cmdq_log2, config.evtq_log2);
        let [i0, i1, i3, i5] = host.to_idr();
        let gbpa = {
            let mut g = LocalRegisterCopy::<u32, GBPA::Register>::new(0);
            // SHCFG resets to "use incoming" (section 6.3.14).
            g.write(GBPA::SHCFG::Incoming + GBPA::ABORT.val(u32::from(config.gbpa_abort)));
            g.get()
        };
        let initial = StreamState::Global {
            abort: config.gbpa_abort,
        };
        Ok(Self {
            physical: config.physical,
            host,
            idr: [i0, i1, 0, i3, 0, i5],
            iidr: config.iidr,
            aidr: config.aidr,
            regs: RegisterFile {
                gbpa,
                ..RegisterFile::default()
            },
            streams: streams.into_iter().map(|sid| (sid, initial)).collect(),
            sync_stats: SyncStats::default(),
            command_scratch: Vec::new(),
            on_demand: config.on_demand,
        })
    }

    /// The features the host sees.
    pub fn host_features(&self) -> &SmmuFeatures {
        &self.host
    }

    /// `SMMU_IDR0..5` as the host reads them.
    pub fn idr(&self) -> [u32; 6] {
        self.idr
    }

    /// Whether the host has the SMMU enabled (`CR0.SMMUEN`).
    pub fn smmu_enabled(&self) -> bool {
        self.regs.cr0 & CR0::SMMUEN::SET.value != 0
    }

    /// Whether the host has its Command queue enabled.
    pub fn cmdq_enabled(&self) -> bool {
        self.regs.cr0 & CR0::CMDQEN::SET.value != 0
    }

    /// Whether the host has its Event queue enabled: records given to
    /// [`deliver_event`](Self::deliver_event) land in it.
    pub fn event_queue_enabled(&self) -> bool {
        self.regs.cr0 & CR0::EVTQEN::SET.value != 0
    }

    /// Whether `GERROR.CMDQ_ERR` is active (the Command queue is stopped).
    pub fn cmdq_error_active(&self) -> bool {
        (self.regs.gerror ^ self.regs.gerrorn) & GERROR::CMDQ_ERR::SET.value != 0
    }

    pub(super) fn cmdq_log2(&self) -> u8 {
        queue_log2(self.regs.cmdq_base, self.host.cmdq_log2)
    }

    pub(super) fn evtq_log2(&self) -> u8 {
        queue_log2(self.regs.evtq_base, self.host.evtq_log2)
    }

    pub(super) fn recinvsid(&self) -> bool {
        self.regs.cr2 & CR2::RECINVSID::SET.value != 0
    }

    /// Reads `size` bytes at `offset` from the base of the SMMU frame (page 1 at `0x1_0000`).
    /// Reads have no side effects.
    pub fn read(&self, offset: usize, size: u8) -> MmioRead {
        let (reg, part) = match registers::decode(offset, size) {
            Ok(decoded) => decoded,
            Err(e) => {
                return MmioRead {
                    value: 0,
                    note: Some(decode_note(e, offset, size, false)),
                };
            }
        };
        let r = &self.regs;
        let value: u64 = match reg {
            Reg::Idr(n) => u64::from(self.idr[usize::from(n)]),
            Reg::Iidr => u64::from(self.iidr),
            Reg::Aidr => u64::from(self.aidr),
            Reg::Cr0 | Reg::Cr0Ack => u64::from(r.cr0),
            Reg::Cr1 => u64::from(r.cr1),
            Reg::Cr2 => u64::from(r.cr2),
            Reg::Gbpa => u64::from(r.gbpa),
            Reg::IrqCtrl | Reg::IrqCtrlAck => u64::from(r.irq_ctrl),
            Reg::Gerror => u64::from(r.gerror),
            Reg::Gerrorn => u64::from(r.gerrorn),
            Reg::StrtabBase => r.strtab_base,
            Reg::StrtabBaseCfg => u64::from(r.strtab_base_cfg),
            Reg::CmdqBase => r.cmdq_base,
            Reg::CmdqProd => u64::from(r.cmdq_prod),
            Reg::CmdqCons => u64::from(r.cmdq_cons),
            Reg::EvtqBase => r.evtq_base,
            Reg::EvtqProd => u64::from(r.evtq_prod),
            Reg::EvtqCons => u64::from(r.evtq_cons),
            Reg::IrqCfg(source, n) => {
                return MmioRead {
                    value: self.read_irq_cfg(source, n, part),
                    note: None,
                };
            }
            Reg::Absent { .. } => 0,
        };
        MmioRead {
            value: registers::read_part(value, part),
            note: None,
        }
    }

    /// Writes the low `size` bytes of `value` at `offset` from the base of the SMMU frame, with
    /// all its effects: commands executed, physical STEs recomposed, events written.
    pub fn write<M: HostMemory, P: PhysicalSmmu>(
        &mut self,
        offset: usize,
        size: u8,
        value: u64,
        mem: &mut M,
        phys: &mut P,
    ) -> Vec<Note> {
        let mut notes = Vec::new();
        let (reg, part) = match registers::decode(offset, size) {
            Ok(decoded) => decoded,
            Err(e) => {
                notes.push(decode_note(e, offset, size, true));
                return notes;
            }
        };
        let value = if size == 8 {
            value
        } else {
            value & 0xffff_ffff
        };
        // A 32-bit register written whole: the value is 32 bits wide.
        let v32 = value as u32;
        let ignored = |notes: &mut Vec<Note>, reason: &'static str| {
            notes.push(Note::WriteIgnored {
                register: reg.name(),
                reason,
            });
        };
        match reg {
            Reg::Idr(_) | Reg::Iidr | Reg::Aidr | Reg::Cr0Ack | Reg::IrqCtrlAck | Reg::Gerror => {
                ignored(&mut notes, "read-only register")
            }
            Reg::Absent { .. } => {}
            Reg::Cr0 => self.write_cr0(v32, mem, phys, &mut notes),
            Reg::Cr1 => {
                if self.regs.cr0 != 0 {
                    ignored(&mut notes, "SMMUEN, CMDQEN or EVENTQEN set");
                } else {
                    self.regs.cr1 = v32 & mask::CR1_BITS;
                }
            }
            Reg::Cr2 => {
                if self.smmu_enabled() {
                    ignored(&mut notes, "SMMUEN set");
                } else {
                    self.regs.cr2 = v32 & mask::CR2_BITS;
                }
            }
            Reg::Gbpa => self.write_gbpa(v32, mem, phys, &mut notes),
            Reg::IrqCtrl => {
                self.regs.irq_ctrl = v32 & mask::IRQ_CTRL_BITS;
                self.check_irq_msis(&mut notes);
            }
            Reg::IrqCfg(source, n) => self.write_irq_cfg(source, n, part, value, &mut notes),
            Reg::Gerrorn => self.write_gerrorn(v32, mem, phys, &mut notes),
            Reg::StrtabBase | Reg::StrtabBaseCfg if self.smmu_enabled() => {
                ignored(&mut notes, "SMMUEN set");
            }
            Reg::StrtabBase => {
                let merged = registers::merge_part(self.regs.strtab_base, part, value);
                self.regs.strtab_base = merged & mask::STRTAB_BASE_BITS;
            }
            Reg::StrtabBaseCfg => self.regs.strtab_base_cfg = v32 & mask::STRTAB_BASE_CFG_BITS,
            Reg::CmdqBase | Reg::CmdqCons if self.cmdq_enabled() => {
                ignored(&mut notes, "CMDQEN set");
            }
            Reg::CmdqBase => {
                let merged = registers::merge_part(self.regs.cmdq_base, part, value);
                self.regs.cmdq_base = merged & mask::QUEUE_BASE_BITS;
            }
            Reg::CmdqCons => {
                // Software sets the read index; ERR is the SMMU's to report.
                self.regs.cmdq_cons = v32 & mask::CMDQ_CONS_RD_BITS;
            }
            Reg::CmdqProd => {
                self.regs.cmdq_prod = v32 & mask::CMDQ_PROD_BITS;
                self.process_commands(mem, phys, &mut notes);
            }
            Reg::EvtqBase | Reg::EvtqProd if self.event_queue_enabled() => {
                ignored(&mut notes, "EVENTQEN set");
            }
            Reg::EvtqBase => {
                let merged = registers::merge_part(self.regs.evtq_base, part, value);
                self.regs.evtq_base = merged & mask::QUEUE_BASE_BITS;
            }
            Reg::EvtqProd => self.regs.evtq_prod = v32 & mask::OUTQ_PROD_BITS,
            Reg::EvtqCons => self.regs.evtq_cons = v32 & mask::OUTQ_CONS_BITS,
        }
        notes
    }

    fn write_cr0<M: HostMemory, P: PhysicalSmmu>(
        &mut self,
        value: u32,
        mem: &mut M,
        phys: &mut P,
        notes: &mut Vec<Note>,
    ) {
        let old = self.regs.cr0;
        let new = value & mask::CR0_BITS;
        self.regs.cr0 = new;
        if (old ^ new) & CR0::SMMUEN::SET.value != 0 {
            // 0 -> 1: the host's tables apply (read now: nothing is cached yet).
            // 1 -> 0: configuration cached from the tables is no longer used; every stream
            // follows GBPA (section 6.3.9.x, SMMUEN). Either way every stream is recomposed and
            // in effect before CR0ACK shows the change.
            self.recompose_all_noted(mem, phys, notes);
        }
        if new & CR0::CMDQEN::SET.value != 0 {
            // Commands already between CONS and PROD are consumed once the queue is enabled.
            self.process_commands(mem, phys, notes);
        }
    }

    fn write_gbpa<M: HostMemory, P: PhysicalSmmu>(
        &mut self,
        value: u32,
        mem: &mut M,
        phys: &mut P,
        notes: &mut Vec<Note>,
    ) {
        if value & GBPA::UPDATE::SET.value == 0 {
            notes.push(Note::WriteIgnored {
                register: Reg::Gbpa.name(),
                reason: "UPDATE not set",
            });
            return;
        }
        let old = self.regs.gbpa;
        self.regs.gbpa = value & mask::GBPA_BITS;
        if old != self.regs.gbpa && !self.smmu_enabled() {
            self.recompose_all_noted(mem, phys, notes);
        }
    }

    /// Acknowledges the active global errors whose GERRORN bit now matches GERROR. Toggling the
    /// bit of an inactive error (CONSTRAINED UNPREDICTABLE) is ignored, so the host cannot make
    /// up an error that stops its own queue.
    fn write_gerrorn<M: HostMemory, P: PhysicalSmmu>(
        &mut self,
        value: u32,
        mem: &mut M,
        phys: &mut P,
        notes: &mut Vec<Note>,
    ) {
        let was_stopped = self.cmdq_error_active();
        let active = (self.regs.gerror ^ self.regs.gerrorn) & mask::GERROR_BITS;
        let acked = active & !(value ^ self.regs.gerror);
        self.regs.gerrorn ^= acked;
        if was_stopped && !self.cmdq_error_active() {
            // Section 7.1: consumption restarts at the command CONS points to (which the host may
            // have replaced in the meantime). ERR is only meaningful while the error is active.
            self.regs.cmdq_cons &= !(CMDQ_CONS::ERR.mask << CMDQ_CONS::ERR.shift);
            self.process_commands(mem, phys, notes);
        }
    }

    /// Recomposes the physical STE of every stream from the current state (GBPA while SMMUEN is
    /// 0, the host's Stream table otherwise) and the current DMA policy, and waits until it is in
    /// effect. Portcullis calls it after switching the live DMA policy (so that no physical STE
    /// keeps the old stage 2), and once at boot if the physical streams do not already match the
    /// reset state.
    pub fn recompose_all<M: HostMemory, P: PhysicalSmmu>(
        &mut self,
        mem: &mut M,
        phys: &mut P,
    ) -> Vec<Note> {
        let mut notes = Vec::new();
        self.recompose_all_noted(mem, phys, &mut notes);
        notes
    }

    /// [`recompose_all`](Self::recompose_all), for SMMUEN and GBPA changes.
    fn recompose_all_noted<M: HostMemory, P: PhysicalSmmu>(
        &mut self,
        mem: &mut M,
        phys: &mut P,
        notes: &mut Vec<Note>,
    ) {
        let mut batch = PhysBatch::unbuffered_fallback();
        if self.on_demand.is_some() {
            // The StreamIDs that are not physical streams follow GBPA too: a device the host
            // numbered behind a bridge since boot DMAs, stage 2 only, while GBPA bypasses.
            let bypass = !self.smmu_enabled() && self.regs.gbpa & GBPA::ABORT::SET.value == 0;
            let ste = bypass.then(|| Ste::stage2(&phys.stage2(), &self.gbpa_overrides()));
            if let Err(e) = phys.set_default(ste.as_ref()) {
                notes.push(Note::physical("default STE", &e));
            }
        }
        // With the fallback, only a physical failure can stop it, and that is noted.
        let _ = self.recompose(
            0..=StreamId::MAX,
            Trigger::Bulk,
            mem,
            phys,
            &mut batch,
            notes,
        );
        self.flush(&mut batch, phys, notes);
        if let Err(e) = phys.sync() {
            notes.push(Note::physical("CMD_SYNC", &e));
        }
    }

    /// Raises `GERROR.CMDQ_ERR` with `CMDQ_CONS.ERR = code`, unless already active.
    pub(super) fn raise_cmdq_error(&mut self, code: u8) {
        if self.cmdq_error_active() {
            return;
        }
        let mut cons = LocalRegisterCopy::<u32, CMDQ_CONS::Register>::new(self.regs.cmdq_cons);
        cons.modify(CMDQ_CONS::ERR.val(u32::from(code)));
        self.regs.cmdq_cons = cons.get();
        self.regs.gerror ^= GERROR::CMDQ_ERR::SET.value;
    }

    /// Raises `GERROR.EVENTQ_ABT_ERR`, unless already active.
    pub(super) fn raise_evtq_abort(&mut self) {
        self.raise_global_error(GERROR::EVTQ_ABT_ERR::SET.value);
    }

    /// Raises the global error `bit` (one of [`mask::GERROR_BITS`]), unless already active.
    pub(super) fn raise_global_error(&mut self, bit: u32) {
        if (self.regs.gerror ^ self.regs.gerrorn) & bit == 0 {
            self.regs.gerror ^= bit;
        }
    }

    /// What the emulation last made of `sid`, if it is one of the physical streams.
    pub fn stream_state(&self, sid: StreamId) -> Option<StreamState> {
        self.streams.get(&sid).copied()
    }

    /// Every physical stream and its state, by StreamID.
    pub fn streams(&self) -> impl Iterator<Item = (StreamId, StreamState)> + '_ {
        self.streams.iter().map(|(sid, state)| (*sid, *state))
    }

    /// The streams whose physical STE lets the host's device reach memory (stage 2 only or
    /// nested, or of unknown state after a failed physical write): the streams a dead kernel had
    /// live, which the crash fence must cut off.
    pub fn live_streams(&self) -> impl Iterator<Item = StreamId> + '_ {
        self.streams
            .iter()
            .filter(|(_, state)| state.is_live())
            .map(|(sid, _)| *sid)
    }

    /// `CR1` as the host wrote it (the attributes it wants for table and queue accesses).
    pub fn cr1(&self) -> LocalRegisterCopy<u32, CR1::Register> {
        LocalRegisterCopy::new(self.regs.cr1)
    }

    /// `IRQ_CTRL` as the host wrote it: which wired interrupts it wants. The host keeps the GIC and
    /// the physical SMMU's wired interrupt lines, so the arch layer may mirror these enables onto
    /// the physical SMMU: a physical Event queue interrupt then makes the host read its emulated
    /// `EVENTQ_PROD`, a trap on which Portcullis drains and forwards.
    pub fn irq_ctrl(&self) -> LocalRegisterCopy<u32, IRQ_CTRL::Register> {
        LocalRegisterCopy::new(self.regs.irq_ctrl)
    }

    /// The physical SMMU's features, as given at construction.
    pub fn physical_features(&self) -> &SmmuFeatures {
        &self.physical
    }
}

fn queue_log2(base: u64, max: u8) -> u8 {
    let b = LocalRegisterCopy::<u64, QUEUE_BASE::Register>::new(base);
    clamp_log2_size(b.read(QUEUE_BASE::LOG2SIZE) as u8, max)
}

fn decode_note(e: DecodeError, offset: usize, size: u8, write: bool) -> Note {
    match e {
        DecodeError::Unknown => Note::UnknownRegister { offset, write },
        DecodeError::BadAccess => Note::BadAccess {
            offset,
            size,
            write,
        },
    }
}
