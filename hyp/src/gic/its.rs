//! The ITS the host drives: an emulated register file in front of a physical ITS whose tables and
//! command queue are Portcullis' own.
//!
//! - `GITS_BASER<n>` keep the host's values (Type and Entry_Size are the physical ones, Indirect
//!   reads as zero so the host uses flat tables), but the physical ITS never sees them: its device
//!   and collection tables are allocated in Portcullis' memory at boot ([`plan_tables`]), so the
//!   host can neither point them anywhere nor forge a device-table entry with an ITT address.
//! - `GITS_CBASER`, `GITS_CWRITER`, `GITS_CREADR` are emulated. On a `GITS_CWRITER` write the new
//!   commands are read from the host's queue through [`HostMemory`] (the host's own stage 2
//!   decides what it may name), checked ([`its_cmd::check`]), re-encoded into Portcullis' queue, and
//!   the physical `GITS_CWRITER` advanced; the emulated `GITS_CREADR` moves once the physical ITS has
//!   consumed them (a bounded wait: QEMU executes them synchronously on the write).
//! - A command that is refused or cannot be read stalls the emulated queue at that command
//!   (`GITS_CREADR.Stalled`), the architecture's IMPLEMENTATION DEFINED answer to a command error;
//!   a `GITS_CWRITER` write with `Retry` tries it again.
//! - `GITS_TYPER` hides everything of GICv4 and describes Portcullis' tables (Devbits, CIDbits).
//! - `GITS_CTLR.Enabled` follows the host's. Enabling reprograms the physical queue from empty.

use tock_registers::LocalRegisterCopy;

use super::its_cmd::{self, DeviceBitmap, ItsCommand, Limits, RdBase, Refusal};
use super::regs::{
    COMMAND_BYTES, GITS_BASER, GITS_CBASER, GITS_CQ_INDEX, GITS_CTLR, GITS_TYPER, architected,
    gits, queue_offset,
};
use super::window::DmaWindow;
use crate::emul::HostMemory;
use platform::addr::Ipa;

/// The physical ITS control frame and Portcullis' command queue, as the emulation uses them.
pub trait PhysIts {
    fn read32(&mut self, offset: usize) -> u32;
    fn write32(&mut self, offset: usize, value: u32);
    fn read64(&mut self, offset: usize) -> u64;
    fn write64(&mut self, offset: usize, value: u64);
    /// Writes `cmd` into `slot` of Portcullis' command queue, visible to the ITS before the next
    /// `GITS_CWRITER` write.
    fn put_command(&mut self, slot: usize, cmd: [u64; 4]);
}

/// Which table a `GITS_BASER<n>` describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableKind {
    Devices,
    Collections,
}

/// A table Portcullis allocates for the physical ITS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TablePlan {
    /// `n` of `GITS_BASER<n>`.
    pub index: usize,
    pub kind: TableKind,
    pub entry_bytes: u64,
    /// Bytes, a multiple of 64 KiB (the page size Portcullis programs).
    pub bytes: u64,
    /// Entries the table holds (IDs beyond are refused).
    pub entries: u32,
}

const PAGE_64K: u64 = 64 << 10;
/// At most 2^16 DeviceIDs (PCI requester IDs) and 2^13 collections (one per CPU is what Linux uses).
const MAX_DEVICE_BITS: u32 = 16;
const MAX_COLLECTION_BITS: u32 = 13;

/// The physical tables Portcullis allocates, from the physical `GITS_TYPER` and the reset values
/// of `GITS_BASER<n>` (their Type and Entry_Size): a flat device table for every DeviceID the ITS
/// implements (at most 2^16), a collection table for up to 2^13 collections.
pub fn plan_tables(typer: u64, basers: &[u64; gits::BASER_COUNT]) -> alloc::vec::Vec<TablePlan> {
    let t = LocalRegisterCopy::<u64, GITS_TYPER::Register>::new(typer);
    let device_bits = (t.read(GITS_TYPER::Devbits) as u32 + 1).min(MAX_DEVICE_BITS);
    let collection_bits = if t.is_set(GITS_TYPER::CIL) {
        t.read(GITS_TYPER::CIDbits) as u32 + 1
    } else {
        16
    }
    .min(MAX_COLLECTION_BITS);
    let mut out = alloc::vec::Vec::new();
    for (index, &raw) in basers.iter().enumerate() {
        let b = LocalRegisterCopy::<u64, GITS_BASER::Register>::new(raw);
        let entry_bytes = b.read(GITS_BASER::Entry_Size) + 1;
        let (kind, bits) = match b.read_as_enum(GITS_BASER::Type) {
            Some(GITS_BASER::Type::Value::Devices) => (TableKind::Devices, device_bits),
            Some(GITS_BASER::Type::Value::Collections) => (TableKind::Collections, collection_bits),
            _ => continue,
        };
        // At most 256 pages of 64 KiB per flat table.
        let bytes = ((1u64 << bits) * entry_bytes)
            .next_multiple_of(PAGE_64K)
            .min(256 * PAGE_64K);
        let entries = (bytes / entry_bytes).min(1 << bits) as u32;
        out.push(TablePlan {
            index,
            kind,
            entry_bytes,
            bytes,
            entries,
        });
    }
    out
}

/// The `GITS_BASER<n>` value for a table of `plan` at `pa` (64 KiB aligned): valid, flat, 64 KiB
/// pages, inner shareable, write-back.
pub fn baser_value(plan: &TablePlan, reset: u64, pa: u64) -> u64 {
    let keep = LocalRegisterCopy::<u64, GITS_BASER::Register>::new(reset);
    let mut v = LocalRegisterCopy::<u64, GITS_BASER::Register>::new(0);
    v.write(
        GITS_BASER::Valid::SET
            + GITS_BASER::InnerCache::RaWaWb
            + GITS_BASER::Type.val(keep.read(GITS_BASER::Type))
            + GITS_BASER::Entry_Size.val(keep.read(GITS_BASER::Entry_Size))
            + GITS_BASER::Shareability::InnerShareable
            + GITS_BASER::Page_Size::Size64K
            + GITS_BASER::Size.val(plan.bytes / PAGE_64K - 1),
    );
    // 64 KiB pages: address bits [47:16] in place, [51:48] in bits [15:12].
    v.get() | (pa & 0x0000_ffff_ffff_0000) | ((pa >> 48) & 0xf) << 12
}

/// The `GITS_CBASER` value for Portcullis' queue of `bytes` (4 KiB multiple, at most 1 MiB) at `pa`.
pub fn cbaser_value(pa: u64, bytes: u64) -> u64 {
    let mut v = LocalRegisterCopy::<u64, GITS_CBASER::Register>::new(0);
    v.write(
        GITS_CBASER::Valid::SET
            + GITS_CBASER::InnerCache::RaWaWb
            + GITS_CBASER::Shareability::InnerShareable
            + GITS_CBASER::Size.val((bytes / 4096).clamp(1, 256) - 1),
    );
    v.get() | (pa & 0x000f_ffff_ffff_f000)
}

/// What the emulation is built from, decided at boot.
#[derive(Clone, Debug)]
pub struct ItsConfig {
    /// The physical `GITS_TYPER`.
    pub typer: u64,
    /// The physical `GITS_BASER<n>` reset values (Type, Entry_Size).
    pub basers: [u64; gits::BASER_COUNT],
    /// Entries of Portcullis' device and collection tables.
    pub devices: u32,
    pub collections: u32,
    /// The RDbase values that name a redistributor ([`super::redist::targets`]).
    pub targets: alloc::vec::Vec<RdBase>,
    /// Slots of Portcullis' command queue, and the `GITS_CBASER` that names it.
    pub queue_slots: usize,
    pub queue_cbaser: u64,
    /// How many times to read `GITS_CREADR` / `GITS_CTLR` before giving up on the physical ITS.
    pub max_polls: u32,
}

/// Something the host did that the console should hear of (rate-limited by the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItsNote {
    /// The command at `offset` of the host's queue was refused: the queue stalls there.
    Refused { offset: u64, refusal: Refusal },
    /// The host's queue cannot be read at `ipa` (not its memory): the queue stalls.
    Unreadable { ipa: u64 },
    /// `GITS_CWRITER` beyond the end of the host's queue: the queue stalls.
    WriterOutOfRange { cwriter: u64 },
    /// The physical ITS stalled on a command Portcullis had accepted (the host's queue stalls there).
    PhysicalStall { offset: u64 },
    /// The physical ITS did not consume its queue in time; the rest waits for the next write.
    PhysicalTimeout,
    /// A base register written while the ITS is enabled (ignored, as QEMU and Linux expect).
    WhileEnabled { offset: usize },
}

impl core::fmt::Display for ItsNote {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Refused { offset, refusal } => {
                write!(
                    f,
                    "command at queue offset {offset:#x} refused: {refusal}; queue stalled"
                )
            }
            Self::Unreadable { ipa } => {
                write!(
                    f,
                    "command queue at {ipa:#x} is not the host's memory; queue stalled"
                )
            }
            Self::WriterOutOfRange { cwriter } => {
                write!(
                    f,
                    "GITS_CWRITER {cwriter:#x} beyond the queue; queue stalled"
                )
            }
            Self::PhysicalStall { offset } => write!(
                f,
                "the physical ITS stalled on the command from queue offset {offset:#x}; queue stalled"
            ),
            Self::PhysicalTimeout => write!(f, "the physical ITS is slow to consume commands"),
            Self::WhileEnabled { offset } => {
                write!(
                    f,
                    "register {offset:#x} written while the ITS is enabled; ignored"
                )
            }
        }
    }
}

/// The emulated ITS.
#[derive(Debug)]
pub struct EmulatedIts {
    cfg: ItsConfig,
    typer: u64,
    enabled: bool,
    basers: [u64; gits::BASER_COUNT],
    cbaser: u64,
    cwriter: u64,
    creadr: u64,
    stalled: bool,
    /// The next free slot of Portcullis' queue (the physical GITS_CWRITER).
    phys_next: usize,
    /// Devices mapped since the fence (allocated at boot: the fence allocates nothing here).
    remapped: DeviceBitmap,
    crash: bool,
}

const BASER_RO: u64 = (0x1f << 48) | (0x7 << 56);
const BASER_INDIRECT: u64 = 1 << 62;

fn log2(n: u32) -> u32 {
    31 - n.max(1).leading_zeros()
}

impl EmulatedIts {
    pub fn new(cfg: ItsConfig) -> Self {
        let mut t = LocalRegisterCopy::<u64, GITS_TYPER::Register>::new(cfg.typer);
        t.modify(
            GITS_TYPER::Virtual::CLEAR
                + GITS_TYPER::VMOVP::CLEAR
                + GITS_TYPER::MPAM::CLEAR
                + GITS_TYPER::VSGI::CLEAR
                + GITS_TYPER::VMAPP::CLEAR
                + GITS_TYPER::SVPET::CLEAR
                + GITS_TYPER::Devbits.val(u64::from(log2(cfg.devices).max(1) - 1))
                + GITS_TYPER::CIL::SET
                + GITS_TYPER::CIDbits.val(u64::from(log2(cfg.collections).clamp(1, 16) - 1)),
        );
        let basers = cfg.basers.map(|b| Self::visible_type(b) & BASER_RO);
        let cfg_devices = cfg.devices;
        Self {
            typer: t.get(),
            cfg,
            enabled: false,
            basers,
            cbaser: 0,
            cwriter: 0,
            creadr: 0,
            stalled: false,
            phys_next: 0,
            remapped: DeviceBitmap::new(cfg_devices),
            crash: false,
        }
    }

    /// A physical BASER as the host may see it: device and collection tables only.
    fn visible_type(b: u64) -> u64 {
        match LocalRegisterCopy::<u64, GITS_BASER::Register>::new(b).read_as_enum(GITS_BASER::Type)
        {
            Some(GITS_BASER::Type::Value::Devices | GITS_BASER::Type::Value::Collections) => b,
            _ => 0,
        }
    }

    /// The emulated `GITS_TYPER`.
    pub fn typer(&self) -> u64 {
        self.typer
    }

    /// Crash mode from now on: the ITS may only write ITTs of devices mapped after this call.
    pub fn enter_crash(&mut self) {
        self.remapped.clear();
        self.crash = true;
    }

    /// A host read of `size` bytes at `offset` of the control frame.
    pub fn read(&mut self, offset: usize, size: u8, phys: &mut impl PhysIts) -> u64 {
        let reg = offset & !7;
        let value = match reg {
            gits::CTLR => {
                let low = (phys.read32(gits::CTLR) & !1) | u32::from(self.enabled);
                let iidr = phys.read32(gits::CTLR + 4);
                u64::from(low) | (u64::from(iidr) << 32)
            }
            gits::TYPER => self.typer,
            gits::CBASER => self.cbaser,
            gits::CWRITER => self.cwriter,
            gits::CREADR => self.creadr | u64::from(self.stalled),
            r if (gits::BASER..gits::BASER + 8 * gits::BASER_COUNT).contains(&r) => {
                self.basers[(r - gits::BASER) / 8]
            }
            // The IMPLEMENTATION DEFINED range reads as zero.
            _ if !architected(offset) => return 0,
            // ID and status registers: the physical ITS's.
            _ => {
                return match size {
                    8 if offset.is_multiple_of(8) => phys.read64(offset),
                    4 if offset.is_multiple_of(4) => u64::from(phys.read32(offset)),
                    _ => 0,
                };
            }
        };
        match (size, offset % 8) {
            (8, 0) => value,
            (4, 0) => value & 0xffff_ffff,
            (4, 4) => value >> 32,
            _ => 0,
        }
    }

    /// A host write of `size` bytes at `offset` of the control frame. Returns what the console
    /// should hear of, if anything.
    pub fn write(
        &mut self,
        offset: usize,
        size: u8,
        value: u64,
        mem: &impl HostMemory,
        window: &DmaWindow,
        phys: &mut impl PhysIts,
    ) -> Option<ItsNote> {
        let reg = offset & !7;
        let merge = |old: u64| match (size, offset % 8) {
            (8, 0) => Some(value),
            (4, 0) => Some((old & !0xffff_ffff) | (value & 0xffff_ffff)),
            (4, 4) => Some((old & 0xffff_ffff) | (value << 32)),
            _ => None,
        };
        match reg {
            gits::CTLR if offset == gits::CTLR => {
                let enable = value & 1 != 0;
                if enable && !self.enabled {
                    self.enable_physical(phys);
                    return self.process(mem, window, phys);
                }
                if !enable && self.enabled {
                    self.enabled = false;
                    phys.write32(gits::CTLR, 0);
                }
                None
            }
            gits::CBASER => {
                let new = merge(self.cbaser)?;
                if self.enabled {
                    return Some(ItsNote::WhileEnabled { offset });
                }
                self.cbaser = new;
                self.creadr = 0;
                self.cwriter = 0;
                self.stalled = false;
                None
            }
            gits::CWRITER => {
                if offset != gits::CWRITER {
                    return None;
                }
                let v = LocalRegisterCopy::<u64, GITS_CQ_INDEX::Register>::new(value);
                self.cwriter = queue_offset(value);
                if v.is_set(GITS_CQ_INDEX::RetryOrStalled) {
                    self.stalled = false;
                }
                self.process(mem, window, phys)
            }
            r if (gits::BASER..gits::BASER + 8 * gits::BASER_COUNT).contains(&r) => {
                let n = (r - gits::BASER) / 8;
                let new = merge(self.basers[n])?;
                if self.enabled {
                    return Some(ItsNote::WhileEnabled { offset });
                }
                if Self::visible_type(self.cfg.basers[n]) != 0 {
                    self.basers[n] =
                        (new & !(BASER_RO | BASER_INDIRECT)) | (self.basers[n] & BASER_RO);
                }
                None
            }
            // TYPER, CREADR, ID registers: read-only. Anything else (STATUSR, UMSIR, IMPLEMENTATION
            // DEFINED registers) is ignored rather than passed on.
            _ => None,
        }
    }

    /// The physical ITS starts from an empty queue of Portcullis' (writing GITS_CBASER resets
    /// GITS_CREADR), then is enabled.
    fn enable_physical(&mut self, phys: &mut impl PhysIts) {
        for _ in 0..self.cfg.max_polls {
            let c = LocalRegisterCopy::<u32, GITS_CTLR::Register>::new(phys.read32(gits::CTLR));
            if c.is_set(GITS_CTLR::Quiescent) {
                break;
            }
            core::hint::spin_loop();
        }
        phys.write64(gits::CBASER, self.cfg.queue_cbaser);
        phys.write64(gits::CWRITER, 0);
        self.phys_next = 0;
        phys.write32(gits::CTLR, 1);
        self.enabled = true;
    }

    fn queue(&self) -> Option<(u64, u64)> {
        let c = LocalRegisterCopy::<u64, GITS_CBASER::Register>::new(self.cbaser);
        c.is_set(GITS_CBASER::Valid).then(|| {
            (
                c.read(GITS_CBASER::Physical_Address) << 12,
                (c.read(GITS_CBASER::Size) + 1) * 4096,
            )
        })
    }

    /// Executes the host's commands from GITS_CREADR to GITS_CWRITER.
    fn process(
        &mut self,
        mem: &impl HostMemory,
        window: &DmaWindow,
        phys: &mut impl PhysIts,
    ) -> Option<ItsNote> {
        if !self.enabled || self.stalled {
            return None;
        }
        let (base, qbytes) = self.queue()?;
        if self.cwriter >= qbytes {
            self.stalled = true;
            return Some(ItsNote::WriterOutOfRange {
                cwriter: self.cwriter,
            });
        }
        let capacity = self.cfg.queue_slots.saturating_sub(1).max(1);
        let mut batch: alloc::vec::Vec<ItsCommand> =
            alloc::vec::Vec::with_capacity(capacity.min(64));
        while self.creadr != self.cwriter {
            batch.clear();
            let mut at = self.creadr;
            let mut problem = None;
            while at != self.cwriter && batch.len() < capacity {
                match self.accept(base + at, at, mem, window) {
                    Ok(cmd) => batch.push(cmd),
                    Err(note) => {
                        problem = Some(note);
                        break;
                    }
                }
                at = (at + COMMAND_BYTES) % qbytes;
            }
            let done = match self.submit(&batch, phys) {
                Ok(()) => batch.len(),
                Err((done, note)) => {
                    self.advance(done, qbytes);
                    if matches!(note, ItsNote::PhysicalStall { .. }) {
                        self.stalled = true;
                        return Some(ItsNote::PhysicalStall {
                            offset: self.creadr,
                        });
                    }
                    return Some(note);
                }
            };
            self.advance(done, qbytes);
            if problem.is_some() {
                self.stalled = true;
                return problem;
            }
        }
        None
    }

    fn advance(&mut self, commands: usize, qbytes: u64) {
        self.creadr = (self.creadr + commands as u64 * COMMAND_BYTES) % qbytes;
    }

    /// Reads, decodes and checks the host command at `ipa` (queue offset `offset`).
    fn accept(
        &mut self,
        ipa: u64,
        offset: u64,
        mem: &impl HostMemory,
        window: &DmaWindow,
    ) -> Result<ItsCommand, ItsNote> {
        let mut bytes = [0u8; COMMAND_BYTES as usize];
        mem.read(Ipa(ipa), &mut bytes)
            .map_err(|e| ItsNote::Unreadable { ipa: e.ipa.raw() })?;
        let mut raw = [0u64; 4];
        for (i, dw) in raw.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[8 * i..8 * i + 8]);
            *dw = u64::from_le_bytes(b);
        }
        let t = LocalRegisterCopy::<u64, GITS_TYPER::Register>::new(self.cfg.typer);
        let refused = |refusal| ItsNote::Refused { offset, refusal };
        let cmd = its_cmd::decode(raw).map_err(refused)?;
        let limits = Limits {
            window,
            itt_entry_bytes: t.read(GITS_TYPER::ITT_entry_size) + 1,
            event_id_bits: t.read(GITS_TYPER::ID_bits) as u32 + 1,
            devices: self.cfg.devices,
            collections: self.cfg.collections,
            targets: &self.cfg.targets,
            remapped: self.crash.then_some(&self.remapped),
        };
        its_cmd::check(&cmd, &limits).map_err(refused)?;
        if let ItsCommand::Mapd {
            device,
            valid: true,
            ..
        } = cmd
            && self.crash
        {
            self.remapped.set(device);
        }
        Ok(cmd)
    }

    /// Puts `cmds` on Portcullis' queue and waits (bounded) until the ITS has consumed them.
    /// `Err((n, note))`: only the first `n` were executed.
    fn submit(
        &mut self,
        cmds: &[ItsCommand],
        phys: &mut impl PhysIts,
    ) -> Result<(), (usize, ItsNote)> {
        if cmds.is_empty() {
            return Ok(());
        }
        let slots = self.cfg.queue_slots;
        let slot_of = |v: u64| (queue_offset(v) / COMMAND_BYTES) as usize;
        // The queue is empty between batches unless the ITS was slow last time.
        if !self.wait_idle(phys) {
            return Err((0, ItsNote::PhysicalTimeout));
        }
        let start = self.phys_next;
        for (i, cmd) in cmds.iter().enumerate() {
            phys.put_command((start + i) % slots, cmd.encode());
        }
        self.phys_next = (start + cmds.len()) % slots;
        phys.write64(gits::CWRITER, (self.phys_next as u64) * COMMAND_BYTES);
        for _ in 0..self.cfg.max_polls {
            let r = phys.read64(gits::CREADR);
            let at = slot_of(r);
            if r & 1 != 0 {
                // Stalled on a command Portcullis accepted (hardware disagrees with the filter):
                // replace it and everything after with SYNCs to a real redistributor and resume,
                // so Portcullis' queue drains; the host's queue stalls at that command.
                let done = (at + slots - start) % slots;
                let sync = ItsCommand::Sync {
                    target: self.cfg.targets.first().copied().unwrap_or(0),
                };
                let mut s = at;
                while s != self.phys_next {
                    phys.put_command(s, sync.encode());
                    s = (s + 1) % slots;
                }
                phys.write64(gits::CWRITER, ((self.phys_next as u64) * COMMAND_BYTES) | 1);
                self.wait_idle(phys);
                return Err((done, ItsNote::PhysicalStall { offset: 0 }));
            }
            if at == self.phys_next {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        let at = slot_of(phys.read64(gits::CREADR));
        Err(((at + slots - start) % slots, ItsNote::PhysicalTimeout))
    }

    fn wait_idle(&self, phys: &mut impl PhysIts) -> bool {
        for _ in 0..self.cfg.max_polls {
            let r = phys.read64(gits::CREADR);
            if (queue_offset(r) / COMMAND_BYTES) as usize == self.phys_next {
                return true;
            }
            core::hint::spin_loop();
        }
        false
    }
}

#[cfg(test)]
mod tests;
