//! The emulated SMMU's state and the vocabulary its parts share: the register file
//! ([`super::device`]), the command queue ([`super::commands`]), the stream table
//! ([`super::streams`]) and the event queue ([`super::events`]) each add methods to
//! [`EmulatedSmmu`] and import it, with what they pass each other, from here. This module imports
//! none of them (no cycles between the parts).

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use tock_registers::LocalRegisterCopy;

use super::registers::IrqSource;
use super::{AccessDenied, HostMemory};
use crate::smmu::cmd::{Command, CommandError};
use crate::smmu::regs::{QUEUE_BASE, SmmuFeatures};
use crate::smmu::ste::{SteError, StreamTableError};
use crate::smmu::{Ipa, StreamId};

/// The host-visible registers (the ones with state).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct RegisterFile {
    pub cr0: u32,
    pub cr1: u32,
    pub cr2: u32,
    pub gbpa: u32,
    pub irq_ctrl: u32,
    pub gerror: u32,
    pub gerrorn: u32,
    pub strtab_base: u64,
    pub strtab_base_cfg: u32,
    pub cmdq_base: u64,
    pub cmdq_prod: u32,
    pub cmdq_cons: u32,
    pub evtq_base: u64,
    pub evtq_prod: u32,
    pub evtq_cons: u32,
    pub gerror_irq: IrqCfg,
    pub evtq_irq: IrqCfg,
}

/// The emulated SMMUv3.
///
/// One per physical SMMU; the arch layer serialises calls (one lock around it) and feeds it every
/// trapped access to the SMMU frame.
#[derive(Debug)]
pub struct EmulatedSmmu {
    pub(super) physical: SmmuFeatures,
    pub(super) host: SmmuFeatures,
    pub(super) idr: [u32; 6],
    pub(super) iidr: u32,
    pub(super) aidr: u32,
    pub(super) regs: RegisterFile,
    /// Every physical stream and what the emulation last made of it.
    pub(super) streams: BTreeMap<StreamId, StreamState>,
    /// See [`EmulConfig::on_demand`](super::EmulConfig::on_demand).
    pub(super) on_demand: Option<StreamId>,
    pub(super) sync_stats: SyncStats,
    /// The forwarded-command chunk of a host batch, kept from one batch to the next (empty in
    /// between): a strict unmap's TLBI + CMD_SYNC then costs no heap allocation.
    pub(super) command_scratch: Vec<Command>,
}

/// Something about an access the caller should log: the host did something odd, or Portcullis
/// could not do what the host asked. None of these is an error of Portcullis itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// No register at this offset: read as zero, write ignored.
    UnknownRegister { offset: usize, write: bool },
    /// An access size or alignment the register does not take: read as zero, write ignored.
    BadAccess {
        offset: usize,
        size: u8,
        write: bool,
    },
    /// A write the architecture allows the SMMU to ignore, ignored.
    WriteIgnored {
        register: &'static str,
        reason: &'static str,
    },
    /// A host command was refused with CERROR_ILL.
    IllegalCommand {
        index: u32,
        raw: [u64; 2],
        error: CommandError,
    },
    /// A command could not be read (its queue lies where the host may not go): CERROR_ABT.
    CommandFetchAborted { ipa: Ipa },
    /// `CMDQ_PROD` is more than a queue ahead of `CMDQ_CONS`; nothing was consumed.
    CommandQueueOverrun { prod: u32, cons: u32 },
    /// A record for the host's Event queue was lost.
    EventLost { event: u8, reason: Delivery },
    /// The physical SMMU failed an operation; the host's CMD_SYNC (if any) was held back.
    Physical {
        operation: &'static str,
        error: String,
    },
    /// Portcullis' heap could not hold the work of a command: CERROR_ABT.
    CommandOutOfMemory { index: u32 },
    /// The completion MSI of a host CMD_SYNC was refused (the address is not one a device of the
    /// host may write): `GERROR.MSI_CMDQ_ABT_ERR`, nothing written.
    SyncMsiAborted { ipa: Ipa },
    /// The host enabled an interrupt with an MSI address: the emulation does not send it as an
    /// MSI (the host still gets the physical SMMU's wired interrupt).
    IrqMsiNotSent { source: IrqSource },
    /// StreamIDs the host configured to reach memory that the physical Stream table could not
    /// take (no memory or no budget for their level 2 tables): they stay refused.
    StreamsRefused { count: u32 },
    /// More notes of the same access than are kept.
    MoreNotes { count: u64 },
}

/// The notes kept for one access: a host can make one per stream of a bulk invalidation.
pub(super) const MAX_NOTES: usize = 32;

/// Adds `note` to `notes`, counting instead of keeping it past [`MAX_NOTES`] (or when the heap
/// has no room for it).
pub(super) fn push_note(notes: &mut Vec<Note>, note: Note) {
    if notes.len() + 1 < MAX_NOTES {
        if notes.try_reserve(1).is_ok() {
            notes.push(note);
        }
        return;
    }
    match notes.last_mut() {
        Some(Note::MoreNotes { count }) => *count += 1,
        _ => {
            if notes.try_reserve(1).is_ok() {
                notes.push(Note::MoreNotes { count: 1 });
            }
        }
    }
}

impl Note {
    pub(super) fn physical(operation: &'static str, error: &impl fmt::Display) -> Self {
        Self::Physical {
            operation,
            error: error.to_string(),
        }
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownRegister { offset, write } => {
                let what = if *write { "write to" } else { "read of" };
                write!(f, "{what} unknown SMMU register {offset:#x}")
            }
            Self::BadAccess {
                offset,
                size,
                write,
            } => {
                let what = if *write { "write" } else { "read" };
                write!(
                    f,
                    "{size}-byte {what} at SMMU offset {offset:#x} not supported"
                )
            }
            Self::WriteIgnored { register, reason } => {
                write!(f, "write to {register} ignored: {reason}")
            }
            Self::IllegalCommand { index, raw, error } => write!(
                f,
                "CERROR_ILL at command {index} [{:#018x}, {:#018x}]: {error}",
                raw[0], raw[1]
            ),
            Self::CommandFetchAborted { ipa } => {
                write!(f, "CERROR_ABT: command at {ipa} not accessible to the host")
            }
            Self::CommandQueueOverrun { prod, cons } => write!(
                f,
                "CMDQ_PROD {prod:#x} more than a queue ahead of CMDQ_CONS {cons:#x}"
            ),
            Self::EventLost { event, reason } => {
                write!(f, "event {event:#04x} for the host lost: {reason}")
            }
            Self::Physical { operation, error } => {
                write!(f, "physical SMMU {operation} failed: {error}")
            }
            Self::CommandOutOfMemory { index } => {
                write!(f, "CERROR_ABT at command {index}: no memory for its work")
            }
            Self::SyncMsiAborted { ipa } => write!(
                f,
                "CMD_SYNC MSI to {ipa} refused (not writable by the host's devices): \
                 GERROR.MSI_CMDQ_ABT_ERR"
            ),
            Self::IrqMsiNotSent { source } => write!(
                f,
                "{source:?} interrupt enabled with an MSI address: not sent as an MSI (wired only)"
            ),
            Self::StreamsRefused { count } => write!(
                f,
                "{count} configured StreamID(s) left without a physical STE (Stream table budget \
                 spent): refused and recorded"
            ),
            Self::MoreNotes { count } => write!(f, "... and {count} more notes"),
        }
    }
}

/// What the emulation made of one physical stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamState {
    /// SMMUEN = 0: GBPA applies (aborted, or stage 2 only).
    Global { abort: bool },
    /// The StreamID has no STE in the host's table.
    NoSte(StreamTableError),
    /// The host's table (or L1STD) lies where the host may not go: F_STE_FETCH.
    FetchAborted { at: Ipa },
    /// STE.V = 0.
    Invalid,
    /// The host's STE is ILLEGAL: C_BAD_STE.
    Illegal(SteError),
    /// The host's STE aborts the stream.
    Abort,
    /// The host's STE bypasses: stage 2 only.
    Bypass,
    /// The host's STE translates with stage 1: nested, with the host's CD table.
    Stage1 { cd_table: Ipa },
    /// A physical write failed: the physical STE is not known (treated as live).
    Unknown,
}

impl StreamState {
    /// Whether the physical STE of this state is [`Ste::abort`](crate::smmu::ste::Ste::abort)
    /// whatever the policy and the attributes (so that composing the same state again need not
    /// rewrite it).
    pub fn aborts(&self) -> bool {
        matches!(
            self,
            Self::Global { abort: true }
                | Self::NoSte(_)
                | Self::FetchAborted { .. }
                | Self::Invalid
                | Self::Illegal(_)
                | Self::Abort
        )
    }

    /// Whether the stream's device can reach memory through it.
    pub fn is_live(&self) -> bool {
        matches!(
            self,
            Self::Global { abort: false } | Self::Bypass | Self::Stage1 { .. } | Self::Unknown
        )
    }
}

/// Why a stream is being recomposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Trigger {
    /// A CMD_CFGI_STE naming the stream.
    Named,
    /// A range or global invalidation, or a change of SMMUEN, GBPA or the DMA policy.
    Bulk,
}

/// What became of a record given to the host's Event queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    Written,
    /// `CR0.EVENTQEN` is 0: dropped.
    QueueDisabled,
    /// The queue was full (or its indexes inconsistent): dropped, overflow signalled.
    Overflow,
    /// The queue lies where the host may not write: dropped, `GERROR.EVENTQ_ABT_ERR` active.
    WriteAborted,
}

impl fmt::Display for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Written => "written",
            Self::QueueDisabled => "event queue disabled",
            Self::Overflow => "event queue full",
            Self::WriteAborted => "event queue not writable",
        })
    }
}

/// Reads `N` little-endian 64-bit words at `ipa`.
pub(super) fn read_words<const N: usize, M: HostMemory>(
    mem: &M,
    ipa: Ipa,
) -> Result<[u64; N], AccessDenied> {
    let mut bytes = [0u8; 64];
    let buf = &mut bytes[..N * 8];
    mem.read(ipa, buf)?;
    let mut words = [0u64; N];
    for (word, chunk) in words.iter_mut().zip(buf.chunks_exact(8)) {
        let mut le = [0u8; 8];
        le.copy_from_slice(chunk);
        *word = u64::from_le_bytes(le);
    }
    Ok(words)
}

/// The queue base address of a `*Q_BASE` register value.
pub(super) fn queue_base_addr(base: u64) -> Ipa {
    let b = LocalRegisterCopy::<u64, QUEUE_BASE::Register>::new(base);
    Ipa(b.read(QUEUE_BASE::ADDR) << QUEUE_BASE::ADDR.shift)
}

/// How many CMD_SYNCs the host issued, by completion signal, and what became of their MSIs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    pub sig_none: u64,
    pub sig_irq: u64,
    pub sig_sev: u64,
    /// Completion writes made.
    pub msi_written: u64,
    /// Completion writes refused (`GERROR.MSI_CMDQ_ABT_ERR`).
    pub msi_aborted: u64,
    /// Host batches that took the short path (stage-1 TLBIs and one CMD_SYNC: `emul::fast`).
    pub short_batches: u64,
}

/// The MSI configuration registers of one interrupt source, as the host wrote them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct IrqCfg {
    pub cfg0: u64,
    pub cfg1: u32,
    pub cfg2: u32,
}

/// The `SIG_IRQ` completions one host batch holds before it completes them early.
pub const MAX_PENDING: usize = 8;

/// One completion write owed to the host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct SyncMsi {
    pub addr: Ipa,
    pub data: u32,
}

/// The completion writes of the host CMD_SYNCs of a batch, in host order, not yet made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct PendingMsis {
    held: [SyncMsi; MAX_PENDING],
    len: usize,
}

impl PendingMsis {
    pub fn is_full(&self) -> bool {
        self.len == MAX_PENDING
    }

    /// Holds `msi`; the caller makes room first ([`is_full`](Self::is_full)).
    pub(super) fn push(&mut self, msi: SyncMsi) {
        if let Some(slot) = self.held.get_mut(self.len) {
            *slot = msi;
            self.len += 1;
        }
    }

    /// Hands out what is held, in order, and forgets it.
    pub(super) fn take(&mut self) -> impl Iterator<Item = SyncMsi> {
        let (held, len) = (self.held, self.len);
        self.len = 0;
        held.into_iter().take(len)
    }

    /// Forgets what is held (the syncs did not complete).
    pub fn clear(&mut self) {
        self.len = 0;
    }
}
