//! The DMA firewall: Portcullis' physical SMMUv3, every stream translated by the DMA policy of the
//! current mode, and the faults it records.
//!
//! The portable driver (`portcullis::smmu::driver`) decides everything; this module gives it the
//! register frame, identity-mapped heap memory and barriers, installs the policy at boot, and drains
//! the event queue whenever Portcullis runs (every trap), so faults are recorded without the host's
//! cooperation.

use crate::arch::smmu_mmio::{self, SmmuFrame};
use crate::arch::vectors::TrapFrame;
use crate::host::HostRam;
use alloc::vec::Vec;
use core::alloc::Layout;
use core::fmt;
use core::ptr::NonNull;
use platform::addr::{Pa, PhysRange};
use platform::devtree::{PciHost, Platform};
use portcullis::emul::{EmulConfig, EmulatedSmmu, EventRoute, Note, PhysicalSmmu};
use portcullis::smmu::StreamId;
use portcullis::smmu::cmd::Command;
use portcullis::smmu::driver::{
    self, DmaBlock, DmaMemory, EventRecord, SmmuDriver, SmmuError, SmmuMmio,
};
use portcullis::smmu::faults::{FaultBook, FaultRecord};
use portcullis::smmu::regs::offset;
use portcullis::smmu::ste::{Stage2Config, Ste};
use portcullis::stage2::{self, AddressMap, Mode, Stage2Table};
use portcullis::trap::mmio::MmioAccess;
use spin::Mutex;

impl SmmuMmio for SmmuFrame {
    fn read32(&mut self, offset: usize) -> u32 {
        SmmuFrame::read32(self, offset)
    }
    fn write32(&mut self, offset: usize, value: u32) {
        SmmuFrame::write32(self, offset, value)
    }
    fn read64(&mut self, offset: usize) -> u64 {
        SmmuFrame::read64(self, offset)
    }
    fn write64(&mut self, offset: usize, value: u64) {
        SmmuFrame::write64(self, offset, value)
    }
}

/// Queues and stream tables come from Portcullis' heap: identity-mapped, Normal write-back,
/// inside Portcullis' own memory (so no policy maps them for the host or its devices).
struct HeapDma;

impl DmaMemory for HeapDma {
    fn alloc_zeroed(&mut self, bytes: usize, align: usize) -> Option<DmaBlock> {
        let layout = Layout::from_size_align(bytes, align).ok()?;
        // SAFETY: the layout has a non-zero size (the driver never asks for an empty block).
        let ptr = NonNull::new(unsafe { alloc::alloc::alloc_zeroed(layout) })?;
        // SAFETY: the block is fresh, never freed, and owned by the driver and the SMMU from now on;
        // the heap is identity-mapped, so its physical address is its pointer.
        Some(unsafe { DmaBlock::new(ptr, Pa(ptr.as_ptr() as u64), bytes) })
    }
    fn wmb(&self) {
        smmu_mmio::write_barrier();
    }
    fn rmb(&self) {
        smmu_mmio::read_barrier();
    }
    fn mb(&self) {
        smmu_mmio::write_barrier();
    }
}

type Driver = SmmuDriver<SmmuFrame, HeapDma>;

struct Firewall {
    driver: Driver,
    /// The live DMA policy's tables: the SMMU walks them, so they live as long as the firewall.
    _normal: Stage2Table,
    /// The stage 2 every physical STE of a host stream carries now.
    stage2: Stage2Config,
    pci: Vec<PciHost>,
    faults: FaultBook,
    /// The SMMU the host drives.
    emul: EmulatedSmmu,
    /// The physical IRQ_CTRL last mirrored from the host's (the event-queue interrupt is wired
    /// straight to the host through the GIC).
    irq_ctrl: u32,
}

/// The physical SMMU as the emulation uses it. Commands are held until `sync`, so a host batch of
/// invalidations costs one physical CMD_SYNC; an STE write first flushes what is held, keeping order.
struct Phys<'a> {
    driver: &'a mut Driver,
    stage2: Stage2Config,
    pending: Vec<Command>,
}

impl Phys<'_> {
    fn flush(&mut self) -> Result<(), SmmuError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let cmds = core::mem::take(&mut self.pending);
        self.driver.submit(&cmds)
    }
}

impl PhysicalSmmu for Phys<'_> {
    type Error = SmmuError;

    fn stage2(&self) -> Stage2Config {
        self.stage2
    }

    fn write_ste(&mut self, sid: StreamId, ste: &Ste) -> Result<(), SmmuError> {
        self.flush()?;
        self.driver.write_ste(sid, ste).map(|_| ())
    }

    fn submit(&mut self, cmds: &[Command]) -> Result<(), SmmuError> {
        self.pending.extend_from_slice(cmds);
        Ok(())
    }

    fn sync(&mut self) -> Result<(), SmmuError> {
        let cmds = core::mem::take(&mut self.pending);
        self.driver.submit(&cmds)
    }
}

static FIREWALL: Mutex<Option<Firewall>> = Mutex::new(None);

/// Why the firewall could not be raised.
#[derive(Debug)]
pub enum FirewallError {
    NoSmmu,
    NoStreams,
    Policy(stage2::PolicyError),
    Smmu(SmmuError),
    Emul(portcullis::emul::EmulError),
}

impl fmt::Display for FirewallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSmmu => write!(f, "the device tree has no SMMUv3: host DMA is NOT confined"),
            Self::NoStreams => write!(
                f,
                "no PCI host maps its requesters to the SMMU (no iommu-map)"
            ),
            Self::Policy(e) => write!(f, "cannot build the DMA policy: {e}"),
            Self::Smmu(e) => write!(f, "SMMU: {e}"),
            Self::Emul(e) => write!(f, "emulated SMMU: {e}"),
        }
    }
}

/// Every StreamID the PCI root complexes can emit towards this SMMU, from their `iommu-map`s.
fn stream_ids(machine: &Platform, smmu_phandle: Option<u32>) -> Vec<StreamId> {
    let mut sids: Vec<StreamId> = Vec::new();
    for host in &machine.pci {
        let Some(map) = &host.iommu_map else { continue };
        for e in &map.entries {
            if smmu_phandle.is_some_and(|p| p != e.target) {
                continue;
            }
            sids.extend(e.out_base..e.out_base.saturating_add(e.length));
        }
    }
    sids.sort_unstable();
    sids.dedup();
    sids
}

/// Takes the physical SMMU and confines every stream to the normal-mode DMA policy.
pub fn init(machine: &Platform, map: &AddressMap) -> Result<(), FirewallError> {
    let smmu = machine.smmu.as_ref().ok_or(FirewallError::NoSmmu)?;
    // SAFETY: the frame comes from the device tree, is mapped as Device memory in Portcullis' EL2
    // tables, unmapped for the host, and only this driver touches it.
    let frame = unsafe { SmmuFrame::new(smmu.regs.start.raw(), smmu.regs.size()) };
    let mut drv = SmmuDriver::probe(frame, HeapDma).map_err(FirewallError::Smmu)?;
    log::info!("SMMU at {}: {}", smmu.regs, drv.features());

    let sids = stream_ids(machine, smmu.phandle);
    let max_sid = *sids.last().ok_or(FirewallError::NoStreams)?;
    let report = drv.init(max_sid).map_err(FirewallError::Smmu)?;
    log::info!("{report}");

    let ias = driver::ias_bits(drv.features());
    let ipa_bits = map.ipa_bits.min(u32::from(ias));
    let dma_map = AddressMap {
        ipa_bits,
        ..map.clone()
    };
    let regions = stage2::dma_policy(&dma_map, Mode::Normal);
    let table = Stage2Table::build(&regions, ipa_bits, 2).map_err(FirewallError::Policy)?;
    for r in &regions {
        log::info!("DMA policy (normal): {} {:?}", r.range, r.access);
    }
    let ste = driver::stage2_ste(&table, drv.features()).map_err(FirewallError::Smmu)?;
    let written = drv
        .install_streams(sids.iter().copied(), &ste)
        .map_err(FirewallError::Smmu)?;
    log::info!(
        "DMA firewall up: {} StreamIDs ({:#x}..={max_sid:#x}) stage 2 only, VMID 2, {ipa_bits} IPA bits, \
         fault recording on; {written:?}",
        sids.len(),
        sids.first().copied().unwrap_or(0),
    );
    let stage2 = driver::stage2_config(&table, drv.features()).map_err(FirewallError::Smmu)?;
    let mut config = EmulConfig::new(*drv.features(), map.ipa_bits as u8);
    config.iidr = drv.mmio().read32(offset::IIDR);
    config.aidr = drv.mmio().read32(offset::AIDR);
    let emul = EmulatedSmmu::new(&config, sids.iter().copied()).map_err(FirewallError::Emul)?;
    log::info!("emulated SMMU for the host: {}", emul.host_features());
    *FIREWALL.lock() = Some(Firewall {
        driver: drv,
        _normal: table,
        stage2,
        pci: machine.pci.clone(),
        faults: FaultBook::default(),
        emul,
        irq_ctrl: 0,
    });
    Ok(())
}

fn describe_stream(pci: &[PciHost], sid: StreamId) -> Option<platform::devtree::Bdf> {
    pci.iter().find_map(|h| h.bdf_for_stream(sid))
}

/// Drains the physical event queue: every record is kept (or counted as overflowed), and logged
/// within the console's rate limit.
pub fn poll() {
    let mut guard = FIREWALL.lock();
    let Some(fw) = guard.as_mut() else { return };
    let Firewall {
        driver,
        pci,
        faults,
        emul,
        ..
    } = fw;
    let mut on_record = |rec: EventRecord| {
        if let Ok(ev) = &rec.event
            && emul.route(ev) == EventRoute::Host
        {
            let delivery = emul.deliver_record(rec.raw, &mut HostRam);
            log::debug!("SMMU event for the host: {ev} ({delivery})");
            return;
        }
        let record = match &rec.event {
            Ok(ev) => FaultRecord::from_event(ev, rec.raw),
            Err(_) => FaultRecord::from_raw(rec.raw),
        };
        if faults.record(record) {
            match (&rec.event, describe_stream(pci, record.sid)) {
                (Ok(ev), Some(bdf)) => log::warn!("SMMU event from PCI {bdf}: {ev}"),
                (Ok(ev), None) => log::warn!("SMMU event: {ev}"),
                (Err(e), _) => log::warn!("SMMU event record {:#x?} undecodable: {e}", rec.raw),
            }
        }
    };
    match driver.drain_events(&mut on_record) {
        Ok(report) if report.overflow => {
            faults.ring.note_hardware_overflow();
            log::error!("SMMU event queue overflowed: some fault records were lost by the SMMU");
        }
        Ok(_) => {}
        Err(e) => log::error!("SMMU event queue: {e}"),
    }
    for s in faults.console.summaries() {
        match s.sid {
            Some(sid) => log::warn!(
                "... and {} more SMMU events from StreamID {sid:#x}",
                s.suppressed
            ),
            None => log::warn!(
                "... and {} more SMMU events from other streams",
                s.suppressed
            ),
        }
    }
}

/// (faults recorded for `sid`, latest input address, event type << 8 | write) for the test hooks.
#[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
pub fn fault_summary(sid: StreamId) -> (u64, u64, u64) {
    poll();
    let guard = FIREWALL.lock();
    let Some(fw) = guard.as_ref() else {
        return (0, 0, 0);
    };
    match fw.faults.streams.get(sid) {
        Some(s) => (
            s.count,
            s.last_addr,
            (u64::from(s.last_event.0) << 8) | u64::from(s.last_write),
        ),
        None => (0, 0, 0),
    }
}

/// The GITS_TRANSLATER page of each ITS frame: the only MMIO a device may write (its MSIs).
pub fn its_doorbells(machine: &Platform) -> Vec<PhysRange> {
    const GITS_TRANSLATER_PAGE: u64 = 0x1_0000;
    machine
        .gic
        .iter()
        .flat_map(|g| g.its.iter())
        .filter_map(|its| PhysRange::new(its.start.raw() + GITS_TRANSLATER_PAGE, 0x1000))
        .collect()
}

fn log_notes(notes: &[Note]) {
    for n in notes {
        log::warn!("emulated SMMU: {n}");
    }
}

/// A host access to the emulated SMMU's register frame (`access.ipa` inside it).
pub fn emulated_access(frame: &mut TrapFrame, access: &MmioAccess, frame_base: u64) {
    let mut guard = FIREWALL.lock();
    let Some(fw) = guard.as_mut() else {
        // No SMMU under Portcullis' control: the frame reads as zero and ignores writes.
        if !access.write {
            access.complete_load(&mut frame.x, 0);
        }
        return;
    };
    let offset = (access.ipa.raw() - frame_base) as usize;
    if access.write {
        let value = access.store_value(&frame.x);
        let mut phys = Phys {
            driver: &mut fw.driver,
            stage2: fw.stage2,
            pending: Vec::new(),
        };
        let notes = fw
            .emul
            .write(offset, access.size_bytes, value, &mut HostRam, &mut phys);
        if let Err(e) = phys.flush() {
            log::error!("emulated SMMU: physical commands failed: {e}");
        }
        log_notes(&notes);
        mirror_irq_ctrl(fw);
    } else {
        if offset == offset::EVTQ_PROD {
            // The host looks for events: bring the physical queue's news first.
            drop(guard);
            poll();
            guard = FIREWALL.lock();
        }
        let Some(fw) = guard.as_mut() else { return };
        let read = fw.emul.read(offset, access.size_bytes);
        if let Some(n) = read.note {
            log_notes(&[n]);
        }
        access.complete_load(&mut frame.x, read.value);
    }
}

/// The host enables the event-queue interrupt on its SMMU: enable it on the physical one, whose
/// wired interrupt the host receives directly from the GIC; its handler's read of EVTQ_PROD traps
/// and drains the physical queue.
fn mirror_irq_ctrl(fw: &mut Firewall) {
    const EVENTQ_IRQEN: u32 = 1 << 2;
    let want = fw.emul.irq_ctrl().get() & EVENTQ_IRQEN;
    if want == fw.irq_ctrl {
        return;
    }
    let mmio = fw.driver.mmio();
    mmio.write32(offset::IRQ_CTRL, want);
    for _ in 0..100_000 {
        if mmio.read32(offset::IRQ_CTRLACK) == want {
            break;
        }
        core::hint::spin_loop();
    }
    fw.irq_ctrl = want;
}
