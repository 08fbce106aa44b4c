//! MSIs of the emulated SMMU: the completion write of a host `CMD_SYNC` with `CS = SIG_IRQ`, and
//! the MSI configuration registers of the Event queue and GERROR interrupts.
//!
//! Why MSIs at all: with `IDR0.MSI` and a coherent SMMU (`IDR0.COHACC`, and `dma-coherent` in the
//! firmware description), Linux completes a CMD_SYNC by polling its own queue memory (its
//! `ARM_SMMU_OPT_MSIPOLL`): each CMD_SYNC carries `MSIADDR` = its own slot in the host's Command
//! queue and `MSIData` = 0, and the driver spins until the sync's first word reads 0. Without MSI
//! it polls `CMDQ_CONS`, and every poll of that register is a trap; with MSI a strict unmap costs
//! the host one trap (the `CMDQ_PROD` write), since the emulation completes the whole batch
//! before that write returns.
//!
//! **The completion write (IHI 0070 section 4.7.3, CMD_SYNC; section 3.18, MSIs).** When a host
//! CMD_SYNC with `SIG_IRQ` and a non-zero `MSIADDR` completes (after the batch's physical
//! CMD_SYNC), Portcullis writes the 32-bit `MSIData`, little-endian, to `MSIADDR` (an IPA of
//! the host) -- as the SMMU, a bus master of the host, would. So the write must pass, over all four
//! bytes:
//! - the **live DMA policy** ([`PhysicalSmmu::device_may_write`]): what any device of the host may
//!   write now -- never Portcullis' memory, the fault report, nor, in normal mode, the crash
//!   region (the loaded capture kernel); in crash mode only the capture kernel's region. Normal
//!   memory only: an MSI aimed at a device register (an ITS doorbell) would need the SMMU's own
//!   DeviceID, which a store from Portcullis cannot carry, so it is refused too;
//! - and the host's CPU policy, through the one checked path for every write Portcullis makes on
//!   the host's behalf ([`HostMemory::write`]). (DMA-writable memory is CPU-writable in both
//!   modes, so this only adds a second guard.)
//!
//! A refused write is what the architecture calls an MSI write that aborts: the SMMU sets
//! `GERROR.MSI_CMDQ_ABT_ERR` (section 7.5) and the CMD_SYNC still completes (`CMDQ_CONS` moves
//! past it). Nothing lands, Portcullis does not panic; the host sees the global error (Linux logs
//! "CMDQ MSI write aborted", and its poll of the sync times out). `MSH` and `MSIAttr` are not
//! honoured: Portcullis' store is a cacheable, inner-shareable write, which is what a coherent
//! SMMU's write-back MSI is to a coherent host.
//!
//! `SIG_IRQ` with `MSIADDR` = 0 sends nothing (section 4.7.3: no MSI is sent when the address is
//! 0; the emulated SMMU has no wired CMD_SYNC interrupt). `SIG_NONE` and `SIG_SEV` are as before.
//!
//! **Cost bound.** The MSIs of one host batch are held in a fixed array of [`MAX_PENDING`]
//! (no allocation on the command path); a batch with more `SIG_IRQ` syncs completes the held ones
//! early (flush, one physical CMD_SYNC, the writes) and goes on.
//!
//! **The IRQ_CFG registers.** `SMMU_GERROR_IRQ_CFG0..2` and `SMMU_EVENTQ_IRQ_CFG0..2` are
//! implemented as the architecture lays them out (sections 6.3.21-23, 6.3.30-32): writable while the
//! source's `IRQ_CTRL` enable is 0 (otherwise the write is ignored and noted), reading back what was
//! written. Linux clears them when `IDR0.MSI` is set and, without an `msi-parent` for the SMMU (QEMU
//! virt has none), keeps the wired interrupts, which the host receives straight from the physical
//! SMMU. Event and GERROR interrupts are never sent as MSIs by the emulation: a host that enables
//! one with a non-zero address gets a note ([`Note::IrqMsiNotSent`]), and still the wired line.

use alloc::vec::Vec;

use super::commands::PhysBatch;
use super::registers::{IrqSource, Part, merge_part, read_part};
use super::state::{EmulatedSmmu, IrqCfg, Note, SyncMsi, SyncStats, push_note};
use super::{HostMemory, PhysicalSmmu};
use crate::smmu::Ipa;
use crate::smmu::cmd::{Sync, SyncSignal};
use crate::smmu::regs::{GERROR, IRQ_CTRL};
use crate::stage2::Stage2Table;

/// Whether a device of the host may write every byte of `[ipa, ipa + len)` under the DMA policy
/// `table` (identity-mapped Normal memory, writable), page by page as the SMMU's stage 2 would
/// decide it. For [`PhysicalSmmu::device_may_write`] implementations.
pub fn device_write_allowed(table: &Stage2Table, ipa: Ipa, len: usize) -> bool {
    // The same page walk as the CPU side's checked path: identity-mapped normal memory, writable
    // (DMA policies map no memory write-only, so requiring it readable changes nothing).
    table.is_host_memory(ipa, len, true)
}

impl EmulatedSmmu {
    /// A host CMD_SYNC of the batch, counted; with `SIG_IRQ` and an address, its completion write
    /// is held for the end of the batch (completing the held ones first if the array is full).
    pub(super) fn note_sync<M: HostMemory, P: PhysicalSmmu>(
        &mut self,
        sync: &Sync,
        mem: &mut M,
        phys: &mut P,
        batch: &mut PhysBatch,
        notes: &mut Vec<Note>,
    ) {
        let Some(msi) = self.count_sync(sync) else {
            return;
        };
        if batch.msis.is_full() {
            self.flush(batch, phys, notes);
            if !batch.failed {
                match phys.sync() {
                    Ok(()) => self.complete_msis(batch, mem, phys, notes),
                    Err(e) => {
                        push_note(notes, Note::physical("CMD_SYNC", &e));
                        batch.failed = true;
                    }
                }
            }
            // After a failure the batch's syncs stay incomplete: nothing is written.
            batch.msis.clear();
        }
        batch.msis.push(msi);
    }

    /// Makes the held completion writes, in order: the syncs they belong to have completed (the
    /// physical CMD_SYNC after everything before them returned).
    pub(super) fn complete_msis<M: HostMemory, P: PhysicalSmmu>(
        &mut self,
        batch: &mut PhysBatch,
        mem: &mut M,
        phys: &mut P,
        notes: &mut Vec<Note>,
    ) {
        for msi in batch.msis.take() {
            self.complete_msi(msi, mem, phys, notes);
        }
    }

    /// Makes one completion write, checked against the live DMA policy and the host's CPU policy
    /// (module documentation); a refused one raises `GERROR.MSI_CMDQ_ABT_ERR`.
    pub(super) fn complete_msi<M: HostMemory, P: PhysicalSmmu>(
        &mut self,
        msi: SyncMsi,
        mem: &mut M,
        phys: &mut P,
        notes: &mut Vec<Note>,
    ) {
        let bytes = msi.data.to_le_bytes();
        let written =
            phys.device_may_write(msi.addr, bytes.len()) && mem.write(msi.addr, &bytes).is_ok();
        if written {
            self.sync_stats.msi_written += 1;
        } else {
            self.sync_stats.msi_aborted += 1;
            self.raise_global_error(GERROR::MSI_CMDQ_ABT_ERR::SET.value);
            push_note(notes, Note::SyncMsiAborted { ipa: msi.addr });
        }
    }

    /// Counts a host CMD_SYNC by its completion signal; the completion write it owes, if any
    /// (`SIG_IRQ` with an address).
    pub(super) fn count_sync(&mut self, sync: &Sync) -> Option<SyncMsi> {
        match sync.signal {
            SyncSignal::None => self.sync_stats.sig_none += 1,
            SyncSignal::Sev => self.sync_stats.sig_sev += 1,
            SyncSignal::Irq => self.sync_stats.sig_irq += 1,
        }
        (sync.signal == SyncSignal::Irq && sync.msi_addr != 0).then_some(SyncMsi {
            addr: Ipa(sync.msi_addr),
            data: sync.msi_data,
        })
    }

    /// The host's CMD_SYNCs so far, by signal, and their MSIs.
    pub fn sync_stats(&self) -> SyncStats {
        self.sync_stats
    }

    pub(super) fn read_irq_cfg(&self, source: IrqSource, n: u8, part: Part) -> u64 {
        let cfg = self.irq_cfg(source);
        let value = match n {
            0 => cfg.cfg0,
            1 => u64::from(cfg.cfg1),
            _ => u64::from(cfg.cfg2),
        };
        read_part(value, part)
    }

    /// A write to `SMMU_<source>_IRQ_CFG<n>`: ignored while the source's interrupt is enabled
    /// (sections 6.3.21-23, 6.3.30-32: the registers are guarded by `IRQ_CTRL`).
    pub(super) fn write_irq_cfg(
        &mut self,
        source: IrqSource,
        n: u8,
        part: Part,
        value: u64,
        notes: &mut Vec<Note>,
    ) {
        if self.irq_enabled(source) {
            notes.push(Note::WriteIgnored {
                register: super::registers::Reg::IrqCfg(source, n).name(),
                reason: "its interrupt is enabled in IRQ_CTRL",
            });
            return;
        }
        let cfg = match source {
            IrqSource::Gerror => &mut self.regs.gerror_irq,
            IrqSource::Evtq => &mut self.regs.evtq_irq,
        };
        match n {
            0 => {
                cfg.cfg0 = merge_part(cfg.cfg0, part, value) & super::registers::mask::IRQ_CFG0_BITS
            }
            1 => cfg.cfg1 = value as u32,
            _ => cfg.cfg2 = value as u32 & super::registers::mask::IRQ_CFG2_BITS,
        }
    }

    /// After an `IRQ_CTRL` write: an interrupt enabled with an MSI address is not sent as an MSI.
    pub(super) fn check_irq_msis(&self, notes: &mut Vec<Note>) {
        for source in [IrqSource::Gerror, IrqSource::Evtq] {
            if self.irq_enabled(source) && self.irq_cfg(source).cfg0 != 0 {
                notes.push(Note::IrqMsiNotSent { source });
            }
        }
    }

    fn irq_cfg(&self, source: IrqSource) -> IrqCfg {
        match source {
            IrqSource::Gerror => self.regs.gerror_irq,
            IrqSource::Evtq => self.regs.evtq_irq,
        }
    }

    fn irq_enabled(&self, source: IrqSource) -> bool {
        let bit = match source {
            IrqSource::Gerror => IRQ_CTRL::GERROR_IRQEN::SET.value,
            IrqSource::Evtq => IRQ_CTRL::EVTQ_IRQEN::SET.value,
        };
        self.regs.irq_ctrl & bit != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage2::{AddressMap, Mode, dma_policy};
    use alloc::vec;
    use platform::addr::PhysRange;

    fn r(start: u64, size: u64) -> PhysRange {
        PhysRange::new(start, size).expect("range")
    }

    /// QEMU virt with 1 GiB of RAM, Portcullis at 0x4020_0000, the crash region at 0x7c00_0000,
    /// the report just below it.
    fn map() -> AddressMap {
        AddressMap {
            ram: vec![r(0x4000_0000, 0x4000_0000)],
            hyp: r(0x4020_0000, 0x0200_0000),
            crash: Some(r(0x7c00_0000, 0x0400_0000)),
            smmu: Some(r(0x0905_0000, 0x2_0000)),
            its_doorbells: vec![r(0x0809_0000, 0x1000)],
            devices: vec![r(0x0900_0000, 0x1000)],
            trapped: alloc::vec::Vec::new(),
            report: Some(r(0x7bff_0000, 0x1_0000)),
            ipa_bits: 40,
        }
    }

    /// The MSI check against real DMA policies: the normal one refuses Portcullis, the report,
    /// the crash region, the ITS doorbell and device MMIO; the crash-mode one allows only the
    /// crash region.
    #[test]
    fn device_writes_by_mode() {
        let map = map();
        let normal = Stage2Table::build(&dma_policy(&map, Mode::Normal), 40, 2).expect("normal");
        let crash = Stage2Table::build(&dma_policy(&map, Mode::Crash), 40, 4).expect("crash");
        let ok = |t: &Stage2Table, a: u64| device_write_allowed(t, Ipa(a), 4);
        for a in [0x4000_0000, 0x4300_0000, 0x7bfe_fffc, 0x7fff_fffc] {
            assert_eq!(
                ok(&normal, a),
                !(0x7c00_0000..0x8000_0000).contains(&a),
                "{a:#x}"
            );
        }
        for a in [
            0x4020_0000,
            0x421f_fffc,
            0x7bff_0000,
            0x7c00_0000,
            0x0809_0040,
            0x0900_0000,
            0x8000_0000,
            0,
        ] {
            assert!(!ok(&normal, a), "normal {a:#x}");
        }
        assert!(ok(&crash, 0x7c00_0000) && ok(&crash, 0x7fff_fffc));
        for a in [
            0x4000_0000,
            0x4020_0000,
            0x7bff_0000,
            0x7bff_fffc,
            0x8000_0000,
        ] {
            assert!(!ok(&crash, a), "crash {a:#x}");
        }
        // Straddling into a refused page, and wrapping, are refused.
        assert!(!device_write_allowed(&normal, Ipa(0x7bff_fffe), 4));
        assert!(!device_write_allowed(&normal, Ipa(u64::MAX - 1), 4));
        assert!(device_write_allowed(&normal, Ipa(0x4000_0ffe), 4));
    }
}
