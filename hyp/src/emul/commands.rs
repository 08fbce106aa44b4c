//! The host's Command queue.
//!
//! Commands are consumed while `CR0.CMDQEN` is 1 (whatever SMMUEN is) and no Command queue error
//! is active: on a `CMDQ_PROD` write, when CMDQEN is set, and when the host acknowledges an error.
//! Each command between `CMDQ_CONS` and `CMDQ_PROD` is read from host memory through
//! [`HostMemory`], decoded strictly ([`Command::decode`]), checked against the features the host
//! was shown ([`Command::check_host`]) and executed:
//!
//! | host command                                   | effect                                      |
//! |------------------------------------------------|---------------------------------------------|
//! | CFGI_STE, CFGI_STE_RANGE, CFGI_ALL             | physical STEs of the streams it covers recomposed (SMMUEN = 1) |
//! | CFGI_CD, CFGI_CD_ALL                           | forwarded, for a physical stream            |
//! | TLBI_NH_ALL, _ASID, _VA, _VAA                  | forwarded with Portcullis' VMID             |
//! | TLBI_NSNH_ALL                                  | TLBI_NH_ALL with Portcullis' VMID           |
//! | PREFETCH_CONFIG, PREFETCH_ADDR                 | accepted, dropped (a hint)                  |
//! | CMD_SYNC, CS = SIG_NONE or SIG_SEV             | completes after a physical CMD_SYNC         |
//! | CMD_SYNC, CS = SIG_IRQ                         | CERROR_ILL (no MSI, no wired interrupt Portcullis could raise) |
//! | stage 2, EL2, EL3 invalidations, CFGI_VMS_PIDM | CERROR_ILL (no stage 2, no EL2 offered)     |
//! | ATC_INV, PRI_RESP, RESUME, STALL_TERM          | CERROR_ILL (ATS, PRI, stalls not offered)   |
//! | anything malformed or Reserved                 | CERROR_ILL                                  |
//!
//! SIG_SEV needs no event: the command completes before the host's `CMDQ_PROD` write returns
//! (`IDR0.SEV` reads 0).
//!
//! Errors (section 7.1): consumption stops at the offending command, `CMDQ_CONS.RD` points at it,
//! `CMDQ_CONS.ERR` holds CERROR_ILL (or CERROR_ABT for a command Portcullis may not read because
//! the host's queue lies outside the memory the host may access), `GERROR.CMDQ_ERR` toggles. The
//! commands before it are complete. Consumption resumes, at the command `CMDQ_CONS` points to,
//! when the host acknowledges through `GERRORN`.
//!
//! Cost: the physical work of a whole batch (everything from `CMDQ_CONS` to `CMDQ_PROD`) is
//! published in host order, then one physical CMD_SYNC completes every host CMD_SYNC of the
//! batch at once, which is indistinguishable for the host: it sees `CMDQ_CONS` move only when the
//! trapped write returns. If the physical SMMU fails (an STE write, a submission or the sync),
//! `CMDQ_CONS` stops at the first host CMD_SYNC of the batch: the host never sees a sync complete
//! that did not, and retries it on its next `CMDQ_PROD` write.

use alloc::vec;
use alloc::vec::Vec;
use core::ops::RangeInclusive;

use super::device::{EmulatedSmmu, Note, push_note, queue_base_addr};
use super::streams::{Trigger, read_words};
use super::{HostMemory, PhysicalSmmu};
use crate::smmu::StreamId;
use crate::smmu::cmd::{COMMAND_SIZE, Command, CommandError, SyncSignal};
use crate::smmu::queue::{CmdqCons, CommandQueueError, QueueIndex, QueuePair};
use crate::smmu::ste::Ste;

/// Physical work collected while a host batch runs, published in host order.
///
/// What it holds at once is bounded by the number of physical streams, not by the length of the
/// host's batch: once it holds [`PhysBatch::limit`] STEs and commands it must be flushed (the
/// caller does so between compositions), so that a queue full of CMD_CFGI_ALL never materialises
/// every stream's STE once per command. Flushing early changes nothing the host can see: the work
/// is still published in host order, and the batch's host CMD_SYNCs still complete with the one
/// physical sync at its end.
#[derive(Debug)]
pub(super) struct PhysBatch {
    ops: Vec<Pending>,
    /// STEs and commands in `ops`.
    held: usize,
    limit: usize,
    /// Some physical operation of this batch failed.
    pub failed: bool,
}

#[derive(Debug)]
enum Pending {
    Stes(Vec<(StreamId, Ste)>),
    Commands(Vec<Command>),
}

impl PhysBatch {
    /// The fewest entries a batch holds before it asks to be flushed.
    const MIN_LIMIT: usize = 64;

    /// A batch for an SMMU with `streams` physical streams: it holds at most one STE per stream
    /// (or [`Self::MIN_LIMIT`] entries) before it is full.
    pub fn for_streams(streams: usize) -> Self {
        Self {
            ops: Vec::new(),
            held: 0,
            limit: streams.max(Self::MIN_LIMIT),
            failed: false,
        }
    }

    /// Whether the batch must be flushed before more is added.
    pub fn is_full(&self) -> bool {
        self.held >= self.limit
    }

    pub fn push_ste(&mut self, sid: StreamId, ste: Ste) {
        self.held += 1;
        match self.ops.last_mut() {
            Some(Pending::Stes(stes)) => stes.push((sid, ste)),
            _ => self.ops.push(Pending::Stes(vec![(sid, ste)])),
        }
    }

    pub fn push_command(&mut self, cmd: Command) {
        self.held += 1;
        match self.ops.last_mut() {
            Some(Pending::Commands(cmds)) => cmds.push(cmd),
            _ => self.ops.push(Pending::Commands(vec![cmd])),
        }
    }

    /// Hands everything to the physical SMMU; returns the streams whose STE write failed.
    pub fn flush<P: PhysicalSmmu>(&mut self, phys: &mut P, notes: &mut Vec<Note>) -> Vec<StreamId> {
        let mut failed_streams = Vec::new();
        self.held = 0;
        for op in self.ops.drain(..) {
            match op {
                Pending::Stes(stes) => {
                    if let Err(e) = phys.write_stes(&stes) {
                        push_note(notes, Note::physical("STE write", &e));
                        failed_streams.extend(stes.iter().map(|(sid, _)| *sid));
                        self.failed = true;
                    }
                }
                Pending::Commands(cmds) => {
                    if let Err(e) = phys.submit(&cmds) {
                        push_note(notes, Note::physical("command submission", &e));
                        self.failed = true;
                    }
                }
            }
        }
        failed_streams
    }
}

/// What executing one command asks of the end of the batch.
enum Executed {
    Done,
    /// A CMD_SYNC: completes with the batch's physical sync.
    Sync,
}

impl EmulatedSmmu {
    /// Consumes the host's commands from `CMDQ_CONS` up to `CMDQ_PROD` (see the module
    /// documentation).
    pub(super) fn process_commands<M: HostMemory, P: PhysicalSmmu>(
        &mut self,
        mem: &mut M,
        phys: &mut P,
        notes: &mut Vec<Note>,
    ) {
        if !self.cmdq_enabled() || self.cmdq_error_active() {
            return;
        }
        let log2 = self.cmdq_log2();
        let prod = QueueIndex::from_field(log2, self.regs.cmdq_prod);
        let mut cons_reg = CmdqCons::decode(log2, self.regs.cmdq_cons);
        if QueuePair::new(prod, cons_reg.rd).is_err() {
            push_note(
                notes,
                Note::CommandQueueOverrun {
                    prod: self.regs.cmdq_prod,
                    cons: self.regs.cmdq_cons,
                },
            );
            return;
        }
        let base = queue_base_addr(self.regs.cmdq_base);
        let mut batch = PhysBatch::for_streams(self.streams.len());
        let mut cons = cons_reg.rd;
        let mut first_sync = None;
        let mut error = None;
        while cons != prod {
            let offset = cons.byte_offset(COMMAND_SIZE) as u64;
            let addr = base.checked_add(offset).unwrap_or(base);
            let raw = match read_words::<2, M>(mem, addr) {
                Ok(raw) => raw,
                Err(denied) => {
                    push_note(notes, Note::CommandFetchAborted { ipa: denied.ipa });
                    error = Some(CommandQueueError::Abort);
                    break;
                }
            };
            match self.execute(raw, mem, phys, &mut batch, notes) {
                Ok(Executed::Done) => {}
                Ok(Executed::Sync) => {
                    first_sync.get_or_insert(cons);
                }
                Err(e) => {
                    push_note(
                        notes,
                        Note::IllegalCommand {
                            index: cons.index(),
                            raw,
                            error: e,
                        },
                    );
                    error = Some(e.cerror());
                    break;
                }
            }
            cons = cons.advance(1);
            if batch.is_full() {
                self.flush(&mut batch, phys, notes);
            }
        }

        self.flush(&mut batch, phys, notes);
        let mut failed = batch.failed;
        if first_sync.is_some()
            && !failed
            && let Err(e) = phys.sync()
        {
            push_note(notes, Note::physical("CMD_SYNC", &e));
            failed = true;
        }
        if let (true, Some(sync)) = (failed, first_sync) {
            // Hold the host at its first CMD_SYNC; a later error in the batch is found again
            // when the host retries.
            cons = sync;
            error = None;
        }
        cons_reg.rd = cons;
        self.regs.cmdq_cons = cons_reg.encode();
        if let Some(e) = error {
            self.raise_cmdq_error(e.code());
        }
    }

    /// Executes one host command.
    fn execute<M: HostMemory, P: PhysicalSmmu>(
        &mut self,
        raw: [u64; 2],
        mem: &mut M,
        phys: &mut P,
        batch: &mut PhysBatch,
        notes: &mut Vec<Note>,
    ) -> Result<Executed, CommandError> {
        let cmd = Command::decode(raw)?;
        // CMD_TLBI_NSNH_ALL is legal without stage 2 (it then invalidates all stage 1 entries);
        // `check_host` classes it with the stage 2 maintenance the host may not issue.
        if cmd != Command::TlbiNsnhAll {
            cmd.check_host(&self.host)?;
        }
        let vmid = phys.stage2().vmid;
        let forward = match cmd {
            Command::PrefetchConfig { .. } | Command::PrefetchAddr { .. } => None,
            Command::CfgiSte { sid, .. } => {
                self.invalidate_stes(sid..=sid, Trigger::Named, mem, phys, batch, notes);
                None
            }
            Command::CfgiSteRange { sid, range } => {
                // Range <= 30 here (31 decodes as CFGI_ALL): 2^(Range + 1) StreamIDs, aligned.
                let span = 1u64 << (u32::from(range) + 1);
                let first = u64::from(sid) & !(span - 1);
                let last = (first + span - 1).min(u64::from(StreamId::MAX));
                let range = first as StreamId..=last as StreamId;
                self.invalidate_stes(range, Trigger::Bulk, mem, phys, batch, notes);
                None
            }
            Command::CfgiAll => {
                self.invalidate_stes(0..=StreamId::MAX, Trigger::Bulk, mem, phys, batch, notes);
                None
            }
            Command::CfgiCd { sid, .. } | Command::CfgiCdAll { sid } => {
                self.streams.contains_key(&sid).then_some(cmd)
            }
            Command::TlbiNhAll { .. } | Command::TlbiNsnhAll => Some(Command::TlbiNhAll { vmid }),
            Command::TlbiNhAsid { asid, .. } => Some(Command::TlbiNhAsid { vmid, asid }),
            Command::TlbiNhVa {
                asid, va, scope, ..
            } => Some(Command::TlbiNhVa {
                vmid,
                asid,
                va,
                scope,
            }),
            Command::TlbiNhVaa { va, scope, .. } => Some(Command::TlbiNhVaa { vmid, va, scope }),
            Command::Sync(sync) => {
                return match sync.signal {
                    SyncSignal::None | SyncSignal::Sev => Ok(Executed::Sync),
                    SyncSignal::Irq => Err(CommandError::NotSupported {
                        feature: "CMD_SYNC completion interrupt",
                    }),
                };
            }
            // `check_host` refused every other command; should one get here, refuse it the same.
            other => return Err(CommandError::NotForHost(other.class())),
        };
        if let Some(cmd) = forward {
            batch.push_command(cmd);
        }
        Ok(Executed::Done)
    }

    /// CMD_CFGI_STE*: the STEs of the physical streams in `range` are recomposed from the host's
    /// table. While SMMUEN is 0 the streams follow GBPA and nothing is read; the table is read
    /// when SMMUEN is set.
    fn invalidate_stes<M: HostMemory, P: PhysicalSmmu>(
        &mut self,
        range: RangeInclusive<StreamId>,
        trigger: Trigger,
        mem: &mut M,
        phys: &mut P,
        batch: &mut PhysBatch,
        notes: &mut Vec<Note>,
    ) {
        if !self.smmu_enabled() {
            return;
        }
        let sids = self.streams_in(range);
        self.recompose(&sids, trigger, mem, phys, batch, notes);
    }
}
