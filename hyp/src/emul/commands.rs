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
//! | CMD_SYNC, CS = SIG_IRQ                         | the same, then its MSI written if the DMA policy allows ([`super::msi`]) |
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
//! that did not, and retries it on its next `CMDQ_PROD` write. A batch that is only stage-1 TLB
//! invalidations and one CMD_SYNC (a strict unmap's) takes a short path ([`super::fast`]): the
//! same checks and translation, one physical submission with its sync, none of the batching.

use alloc::vec::Vec;
use core::ops::RangeInclusive;

use super::state::{EmulatedSmmu, Note, Trigger, push_note, queue_base_addr, read_words};
use super::{AccessDenied, HostMemory, PhysicalSmmu, fast};
use crate::prof::{self, Stage};
use crate::smmu::cmd::{COMMAND_SIZE, Command, CommandError};
use crate::smmu::queue::{CmdqCons, CommandQueueError, QueueIndex, QueuePair};
use crate::smmu::ste::Ste;
use crate::smmu::{Ipa, StreamId};

/// At most this many STEs are composed before they go to the physical SMMU: the memory one host
/// batch takes is bounded whatever it asks (a batch of CFGI_ALLs over 2^16 streams used to hold
/// every composed STE at once). Runs of identical STEs inside a chunk still go as one physical
/// update (the firewall batches their invalidations), so enabling 65 536 streams costs 64 rounds.
pub(super) const STE_CHUNK: usize = 1024;
/// Likewise for forwarded commands.
pub(super) const COMMAND_CHUNK: usize = 64;

/// The heap could not give the memory a host batch needs: the command is refused with CERROR_ABT
/// (or, for a register write, the streams are written one at a time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct OutOfMemory;

/// Physical work of a host batch, held at most a chunk at a time and published in host order.
#[derive(Debug, Default)]
pub(super) struct PhysBatch {
    pub(super) stes: Vec<(StreamId, Ste)>,
    cmds: Vec<Command>,
    /// Some physical operation of this batch failed.
    pub failed: bool,
    /// The StreamID ranges a bulk invalidation of this batch has recomposed already.
    pub(super) covered: Covered,
    /// Without memory for a chunk, write STEs one at a time instead of failing (register writes,
    /// which have no error to report).
    pub(super) unbuffered_fallback: bool,
    /// A stream composed to the same aborting state as before keeps its physical abort STE
    /// (host command batches: most of 65 536 streams of a CFGI_ALL have no STE at all, and used to
    /// be rewritten, unchanged, on every one). Register writes and policy switches rewrite all.
    pub(super) skip_unchanged_aborts: bool,
    /// Completion MSIs of the batch's host CMD_SYNCs, made once the physical sync returns.
    pub(super) msis: super::state::PendingMsis,
}

impl PhysBatch {
    /// A batch for a register write: never fails for want of memory.
    pub fn unbuffered_fallback() -> Self {
        Self {
            unbuffered_fallback: true,
            ..Self::default()
        }
    }
}

/// StreamID ranges recomposed by a bulk invalidation earlier in the same host batch.
///
/// A host batch (everything between `CMDQ_CONS` and `CMDQ_PROD` at one `CMDQ_PROD` write) is
/// consumed inside one trap, under the lock every other access to the emulated SMMU takes: the
/// host cannot observe, nor order its own stores against, any point inside it. Recomposing a
/// stream twice in one batch therefore reads nothing the first reading could not have read, and a
/// second CFGI_ALL (or a range already covered) need not redo the work. The set is small and fixed
/// (no allocation); when full, new ranges are simply not remembered (recomposed again if named
/// again: correct, only slower).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Covered {
    /// Disjoint, non-adjacent, sorted inclusive ranges; the first `len` are used.
    ranges: [(StreamId, StreamId); Covered::CAPACITY],
    len: usize,
}

impl Covered {
    const CAPACITY: usize = 16;

    fn used(&self) -> &[(StreamId, StreamId)] {
        &self.ranges[..self.len]
    }

    /// The parts of `range` not covered yet, in order (at most `CAPACITY + 1`).
    pub fn gaps(
        &self,
        range: &RangeInclusive<StreamId>,
    ) -> impl Iterator<Item = RangeInclusive<StreamId>> + '_ {
        let (first, last) = (*range.start(), *range.end());
        let mut next = Some(first);
        let mut covered = self.used().iter();
        core::iter::from_fn(move || {
            loop {
                let from = next.filter(|&f| f <= last)?;
                match covered.next() {
                    Some(&(_, b)) if b < from => continue,
                    Some(&(a, b)) if a <= from => next = b.checked_add(1),
                    Some(&(a, b)) => {
                        next = b.checked_add(1);
                        return Some(from..=(a - 1).min(last));
                    }
                    None => {
                        next = None;
                        return Some(from..=last);
                    }
                }
            }
        })
    }

    #[cfg(test)]
    pub fn len_for_tests(&self) -> usize {
        self.len
    }

    /// Remembers `range` as recomposed.
    pub fn insert(&mut self, range: &RangeInclusive<StreamId>) {
        let (mut a, mut b) = (*range.start(), *range.end());
        if a > b {
            return;
        }
        let mut out = [(0, 0); Self::CAPACITY];
        let mut n = 0;
        let mut placed = false;
        for &(c, d) in self.used() {
            let touches = c <= b.saturating_add(1) && a <= d.saturating_add(1);
            if touches {
                a = a.min(c);
                b = b.max(d);
                continue;
            }
            if !placed && d < a {
                out[n] = (c, d);
                n += 1;
                continue;
            }
            if !placed {
                if n == Self::CAPACITY {
                    return;
                }
                out[n] = (a, b);
                n += 1;
                placed = true;
            }
            if n == Self::CAPACITY {
                return;
            }
            out[n] = (c, d);
            n += 1;
        }
        if !placed {
            if n == Self::CAPACITY {
                return;
            }
            out[n] = (a, b);
            n += 1;
        }
        self.ranges = out;
        self.len = n;
    }
}

impl EmulatedSmmu {
    /// Makes room in `batch` for one STE, publishing what it holds first if that is commands or a
    /// full chunk.
    pub(super) fn reserve_ste<P: PhysicalSmmu>(
        &mut self,
        batch: &mut PhysBatch,
        phys: &mut P,
        notes: &mut Vec<Note>,
    ) -> Result<(), OutOfMemory> {
        if !batch.cmds.is_empty() || batch.stes.len() >= STE_CHUNK {
            self.flush(batch, phys, notes);
        }
        if batch.stes.capacity() < STE_CHUNK {
            batch
                .stes
                .try_reserve_exact(STE_CHUNK)
                .map_err(|_| OutOfMemory)?;
        }
        Ok(())
    }

    /// Queues a forwarded command behind what `batch` holds.
    pub(super) fn batch_command<P: PhysicalSmmu>(
        &mut self,
        batch: &mut PhysBatch,
        cmd: Command,
        phys: &mut P,
        notes: &mut Vec<Note>,
    ) -> Result<(), OutOfMemory> {
        if !batch.stes.is_empty() || batch.cmds.len() >= COMMAND_CHUNK {
            self.flush(batch, phys, notes);
        }
        if batch.cmds.capacity() < COMMAND_CHUNK {
            batch
                .cmds
                .try_reserve_exact(COMMAND_CHUNK)
                .map_err(|_| OutOfMemory)?;
        }
        batch.cmds.push(cmd);
        Ok(())
    }

    /// Publishes what `batch` holds on the physical SMMU. A failed STE write leaves its streams
    /// [`StreamState::Unknown`](super::StreamState::Unknown).
    pub(super) fn flush<P: PhysicalSmmu>(
        &mut self,
        batch: &mut PhysBatch,
        phys: &mut P,
        notes: &mut Vec<Note>,
    ) {
        if !batch.stes.is_empty() {
            if let Err(e) = phys.write_stes(&batch.stes) {
                push_note(notes, Note::physical("STE write", &e));
                for (sid, _) in &batch.stes {
                    self.streams.insert(*sid, super::StreamState::Unknown);
                }
                batch.failed = true;
            }
            batch.stes.clear();
        }
        if !batch.cmds.is_empty() {
            if let Err(e) = phys.submit(&batch.cmds) {
                push_note(notes, Note::physical("command submission", &e));
                batch.failed = true;
            }
            batch.cmds.clear();
        }
    }
}

/// Host commands read ahead of their execution, up to four (64 bytes) at a time, never past
/// `CMDQ_PROD` nor the queue's end: a strict unmap's TLBI + CMD_SYNC costs one host-memory access
/// (one policy check), not one per command. Reading ahead is
/// what an SMMU may do too: the commands between `CMDQ_CONS` and `CMDQ_PROD` are the host's to have
/// written before it moved `CMDQ_PROD`.
#[derive(Default)]
struct Fetched {
    /// The queue entry number of `words[0]`.
    first: u32,
    len: u32,
    words: [[u64; 2]; FETCH_BLOCK],
}

/// Commands per host-memory access: 64 bytes, the most [`HostMemory`] is asked for at once.
const FETCH_BLOCK: usize = 4;

impl Fetched {
    /// The command at `cons`, read from the block it starts (`prod` bounds the read-ahead).
    fn command<M: HostMemory>(
        &mut self,
        mem: &M,
        base: Ipa,
        cons: QueueIndex,
        prod: QueueIndex,
    ) -> Result<[u64; 2], AccessDenied> {
        let at = cons.index();
        if at >= self.first && at - self.first < self.len {
            return Ok(self.words[(at - self.first) as usize]);
        }
        let produced = QueuePair::new(prod, cons).map_or(1, |q| q.len());
        let to_queue_end = cons.capacity() - at;
        let n = (FETCH_BLOCK as u32).min(produced).min(to_queue_end).max(1);
        let offset = cons.byte_offset(COMMAND_SIZE) as u64;
        let addr = base.checked_add(offset).unwrap_or(base);
        let mut bytes = [0u8; FETCH_BLOCK * COMMAND_SIZE];
        let len = n as usize * COMMAND_SIZE;
        self.len = 0;
        if mem.read(addr, &mut bytes[..len]).is_err() {
            // Some command of the run may not be read: the first one decides for itself.
            return read_words::<2, M>(mem, addr);
        }
        for (i, w) in bytes[..len].chunks_exact(8).enumerate() {
            let mut le = [0u8; 8];
            le.copy_from_slice(w);
            self.words[i / 2][i % 2] = u64::from_le_bytes(le);
        }
        self.first = at;
        self.len = n;
        Ok(self.words[0])
    }
}

/// Why a command stopped the queue.
enum Stop {
    Illegal(CommandError),
    OutOfMemory,
}

impl From<CommandError> for Stop {
    fn from(e: CommandError) -> Self {
        Self::Illegal(e)
    }
}

impl From<OutOfMemory> for Stop {
    fn from(_: OutOfMemory) -> Self {
        Self::OutOfMemory
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
        let mut fetched = Fetched::default();
        prof::lap(Stage::Register);
        if let Some(done) =
            self.short_batch(&mut fetched, mem, phys, base, cons_reg.rd, prod, notes)
        {
            cons_reg.rd = done;
            self.regs.cmdq_cons = cons_reg.encode();
            return;
        }
        let mut batch = PhysBatch {
            skip_unchanged_aborts: true,
            cmds: core::mem::take(&mut self.command_scratch),
            ..PhysBatch::default()
        };
        let mut cons = cons_reg.rd;
        let mut first_sync = None;
        let mut error = None;
        while cons != prod {
            let raw = match fetched.command(mem, base, cons, prod) {
                Ok(raw) => raw,
                Err(denied) => {
                    push_note(notes, Note::CommandFetchAborted { ipa: denied.ipa });
                    error = Some(CommandQueueError::Abort);
                    break;
                }
            };
            prof::lap(Stage::HostRead);
            let executed = self.execute(raw, mem, phys, &mut batch, notes);
            prof::lap(Stage::Execute);
            match executed {
                Ok(Executed::Done) => {}
                Ok(Executed::Sync) => {
                    first_sync.get_or_insert(cons);
                }
                Err(Stop::Illegal(e)) => {
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
                Err(Stop::OutOfMemory) => {
                    push_note(
                        notes,
                        Note::CommandOutOfMemory {
                            index: cons.index(),
                        },
                    );
                    error = Some(CommandQueueError::Abort);
                    break;
                }
            }
            cons = cons.advance(1);
        }

        self.flush(&mut batch, phys, notes);
        self.command_scratch = core::mem::take(&mut batch.cmds);
        prof::lap(Stage::Flush);
        let mut failed = batch.failed;
        if first_sync.is_some()
            && !failed
            && let Err(e) = phys.sync()
        {
            push_note(notes, Note::physical("CMD_SYNC", &e));
            failed = true;
        }
        if failed {
            batch.msis.clear();
        } else {
            self.complete_msis(&mut batch, mem, phys, notes);
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

    /// The short path ([`super::fast`]): a batch of at most [`fast::MAX_ENTRIES`] commands, read
    /// in one host-memory access, that is stage-1 TLB invalidations and one CMD_SYNC goes to the
    /// physical SMMU as one submission with its sync. Returns the new `CMDQ_CONS.RD` (past the
    /// batch; at its CMD_SYNC if the physical SMMU failed, as on the general path), or `None`
    /// for the general path, with what was read left in `fetched`.
    #[allow(clippy::too_many_arguments)]
    fn short_batch<M: HostMemory, P: PhysicalSmmu>(
        &mut self,
        fetched: &mut Fetched,
        mem: &mut M,
        phys: &mut P,
        base: Ipa,
        cons: QueueIndex,
        prod: QueueIndex,
        notes: &mut Vec<Note>,
    ) -> Option<QueueIndex> {
        let n = QueuePair::new(prod, cons).ok()?.len();
        if n == 0 || n as usize > fast::MAX_ENTRIES {
            return None;
        }
        fetched.command(mem, base, cons, prod).ok()?;
        if fetched.first != cons.index() || fetched.len != n {
            // Unreadable as one block, or wrapping at the queue's end.
            return None;
        }
        prof::lap(Stage::HostRead);
        let entries = &fetched.words[..n as usize];
        let batch = fast::classify(entries, &self.host, phys.stage2().vmid)?;
        let msi = self.count_sync(&batch.sync);
        self.sync_stats.short_batches += 1;
        prof::lap(Stage::Execute);
        if let Err(e) = phys.submit_synced(batch.commands()) {
            push_note(notes, Note::physical("TLBI + CMD_SYNC", &e));
            return Some(cons.advance(n - 1));
        }
        if let Some(msi) = msi {
            self.complete_msi(msi, mem, phys, notes);
        }
        Some(prod)
    }

    /// Executes one host command.
    fn execute<M: HostMemory, P: PhysicalSmmu>(
        &mut self,
        raw: [u64; 2],
        mem: &mut M,
        phys: &mut P,
        batch: &mut PhysBatch,
        notes: &mut Vec<Note>,
    ) -> Result<Executed, Stop> {
        let cmd = fast::decode_checked(raw, &self.host)?;
        let vmid = phys.stage2().vmid;
        let forward = match cmd {
            Command::PrefetchConfig { .. } | Command::PrefetchAddr { .. } => None,
            Command::CfgiSte { sid, .. } => {
                self.invalidate_stes(sid..=sid, Trigger::Named, mem, phys, batch, notes)?;
                None
            }
            Command::CfgiSteRange { sid, range } => {
                // Range <= 30 here (31 decodes as CFGI_ALL): 2^(Range + 1) StreamIDs, aligned.
                let span = 1u64 << (u32::from(range) + 1);
                let first = u64::from(sid) & !(span - 1);
                let last = (first + span - 1).min(u64::from(StreamId::MAX));
                let range = first as StreamId..=last as StreamId;
                self.invalidate_stes(range, Trigger::Bulk, mem, phys, batch, notes)?;
                None
            }
            Command::CfgiAll => {
                self.invalidate_stes(0..=StreamId::MAX, Trigger::Bulk, mem, phys, batch, notes)?;
                None
            }
            Command::CfgiCd { sid, .. } | Command::CfgiCdAll { sid } => {
                self.streams.contains_key(&sid).then_some(cmd)
            }
            Command::TlbiNhAll { .. }
            | Command::TlbiNsnhAll
            | Command::TlbiNhAsid { .. }
            | Command::TlbiNhVa { .. }
            | Command::TlbiNhVaa { .. } => fast::forward_tlbi(&cmd, vmid),
            Command::Sync(sync) => {
                self.note_sync(&sync, mem, phys, batch, notes);
                return Ok(Executed::Sync);
            }
            // `check_host` refused every other command; should one get here, refuse it the same.
            other => return Err(Stop::Illegal(CommandError::NotForHost(other.class()))),
        };
        if let Some(cmd) = forward {
            self.batch_command(batch, cmd, phys, notes)?;
        }
        Ok(Executed::Done)
    }

    /// CMD_CFGI_STE*: the STEs of the physical streams in `range` are recomposed from the host's
    /// table. While SMMUEN is 0 the streams follow GBPA and nothing is read; the table is read
    /// when SMMUEN is set. A bulk invalidation skips what an earlier one of the batch covered.
    fn invalidate_stes<M: HostMemory, P: PhysicalSmmu>(
        &mut self,
        range: RangeInclusive<StreamId>,
        trigger: Trigger,
        mem: &mut M,
        phys: &mut P,
        batch: &mut PhysBatch,
        notes: &mut Vec<Note>,
    ) -> Result<(), OutOfMemory> {
        if !self.smmu_enabled() {
            return Ok(());
        }
        if trigger == Trigger::Named {
            return self.recompose(range, trigger, mem, phys, batch, notes);
        }
        let covered = batch.covered;
        for gap in covered.gaps(&range) {
            self.recompose(gap, trigger, mem, phys, batch, notes)?;
        }
        batch.covered.insert(&range);
        Ok(())
    }
}
