//! The DMA firewall: Portcullis' physical SMMUv3, every stream translated by the DMA policy of the
//! current mode, and the faults it records.
//!
//! The portable driver (`portcullis::smmu::driver`) decides everything; this module gives it the
//! register frame, identity-mapped heap memory and barriers, installs the policy at boot, and drains
//! the event queue when something can have arrived (`portcullis::emul::drain`: the host reading its
//! event registers, any trap a millisecond after the last drain in crash mode, a backstop every few
//! milliseconds otherwise), so faults are recorded without the host's cooperation.

use crate::arch::smmu_mmio::{self, SmmuFrame};
use crate::arch::vectors::TrapFrame;
use crate::host_ram::HostRam;
use crate::limited::limited;
use crate::window::{self, Run};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::alloc::Layout;
use core::fmt;
use core::ptr::NonNull;
use platform::addr::{Pa, PhysRange};
use platform::devtree::{PciHost, Platform};
use portcullis::diag::counters::COUNTERS;
use portcullis::emul::{
    Delivery, EmulConfig, EmulatedSmmu, EventRoute, Note, PhysicalSmmu, StreamState,
};
use portcullis::fence::profile::Checkpoint;
use portcullis::fence::{self, ReportInput, ReportState};
use portcullis::smmu::StreamId;
use portcullis::smmu::cmd::Command;
use portcullis::smmu::driver::{
    self, DmaBlock, DmaMemory, EventRecord, GlobalErrors, SmmuDriver, SmmuError, SmmuMmio,
};
use portcullis::smmu::faults::{FaultBook, FaultRecord};
use portcullis::smmu::queue::QueuePair;
use portcullis::smmu::regs::offset;
use portcullis::smmu::ste::{Stage2Config, Ste, StreamConfig};
use portcullis::smmu::stream_set::StreamSet;
use portcullis::stage2::{self, AddressMap, Mode, Stage2Table};
use portcullis::trap::mmio::MmioAccess;
use spin::Once;
use spin::mutex::TicketMutex as Mutex;

impl SmmuMmio for SmmuFrame {
    fn read32(&mut self, offset: usize) -> u32 {
        COUNTERS.physical(offset, false);
        if offset == offset::CMDQ_CONS {
            window::cons_read();
        }
        SmmuFrame::read32(self, offset)
    }
    fn write32(&mut self, offset: usize, value: u32) {
        COUNTERS.physical(offset, true);
        SmmuFrame::write32(self, offset, value);
        if offset == offset::CMDQ_PROD {
            window::mark(Checkpoint::ProdWritten);
        }
    }
    fn read64(&mut self, offset: usize) -> u64 {
        COUNTERS.physical(offset, false);
        SmmuFrame::read64(self, offset)
    }
    fn write64(&mut self, offset: usize, value: u64) {
        COUNTERS.physical(offset, true);
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
        window::mark(Checkpoint::CommandsWritten);
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
    /// The STE every stream got at boot: stage 2 only, through the normal DMA stage 2 (after the
    /// fence: through nothing, recording every transaction with its input address).
    normal_ste: Ste,
    /// The stage 2 every physical STE of a host stream carries now.
    stage2: Stage2Config,
    pci: Vec<PciHost>,
    faults: FaultBook,
    /// The SMMU the host drives.
    emul: EmulatedSmmu,
    /// The physical IRQ_CTRL last mirrored from the host's (the event-queue interrupt is wired
    /// straight to the host through the GIC).
    irq_ctrl: u32,
    /// Everything the fence needs, prebuilt at boot (none without a crash region).
    crash: Option<CrashSide>,
    /// After the fence: which streams still translate through the terminating stage 2.
    fenced: Option<StreamSet>,
    fence: FenceStats,
    /// At the fence: the streams the dead kernel had live, and where its Event queue was (a capture
    /// kernel that keeps it gets no forwarded records there).
    dead: DeadKernel,
    /// Whether the host wrote `STRTAB_BASE` after the fence.
    strtab_rewritten: bool,
    /// What went wrong after the fence's window (logged by the caller, after the fence).
    fence_note: Option<SmmuError>,
    /// The fault report region (host RAM, reserved no-map in the host's tree).
    report: Option<PhysRange>,
    /// Bytes of the report region that may be non-zero (all of it, until the first write).
    report_written: usize,
    /// How many times the report was written (its `generation:`).
    report_generation: u64,
    /// `Phys`'s held commands, kept between traps (empty in between).
    pending: Vec<Command>,
}

/// The crash-mode DMA side, built once at boot and never edited.
struct CrashSide {
    /// The crash-mode DMA policy (VMID 4): the crash region only, for the capture kernel's devices.
    dma: Stage2Table,
    dma_stage2: Stage2Config,
    /// The crash region: after the fence, the only memory the capture kernel (and nothing else)
    /// can write.
    region: PhysRange,
}

/// The DMA fence's stores, usable without the firewall's lock: the normal DMA stage 2 (VMID 2,
/// which every normal-mode physical STE with a stage 2 carries; leaked, as the SMMU walks it for
/// ever) and its valid top-level entries, found at boot.
struct DmaCut {
    table: &'static Stage2Table,
    top: Vec<usize>,
    /// A top-level entry that is invalid and stays so: the rehearsal's store (zero over zero).
    spare: Option<usize>,
}

static DMA_CUT: Once<DmaCut> = Once::new();

/// Step 1 of the DMA fence, the first thing the kexec trap does: an invalid descriptor over every
/// valid top-level entry of the normal DMA stage 2 (a handful: one per 1 GiB or 512 GiB of the IPA
/// space that holds host RAM or an ITS doorbell, however many streams there are). No lock, no
/// allocation, no log. From the `DSB` that follows, every walk of that stage 2 -- by any stream,
/// for any address -- ends in a stage-2 translation fault, recorded (every such STE has S2R); what
/// the SMMU's TLBs still hold goes with [`fence`]'s CMD_TLBI_S12_VMALL. Returns the store count.
/// A rehearsal (`crash::rehearse_once`) runs the same code over an entry that is invalid already.
pub fn cut_dma(run: Run) -> usize {
    DMA_CUT.get().map_or(0, |c| {
        let top: &[usize] = match (run, &c.spare) {
            (Run::Fence, _) => &c.top,
            (Run::Rehearsal, Some(spare)) => core::slice::from_ref(spare),
            (Run::Rehearsal, None) => &[],
        };
        c.table.invalidate_top(top)
    })
}

/// What the dead kernel left configured, recorded at the fence.
#[derive(Debug, Default)]
struct DeadKernel {
    live: Vec<StreamId>,
    evtq_base: u64,
}

/// The address bits of a host STRTAB_BASE / EVTQ_BASE value.
const BASE_ADDR: u64 = 0x000f_ffff_ffff_ffe0;

fn host_base(emul: &EmulatedSmmu, reg: usize) -> u64 {
    emul.read(reg, 8).value & BASE_ADDR
}

/// What the fence did, for the console and the report.
#[derive(Clone, Copy, Debug, Default)]
pub struct FenceStats {
    pub window_ns: u64,
    pub commands: u64,
    pub streams: u64,
    pub live: u64,
    /// Descriptor stores of the fence: DMA top-level entries and the CPU side's break and make.
    pub stores: u64,
    /// Nested streams of the dead kernel given the stage-2-only STE after the window.
    pub restaged: u64,
    /// From the trap to the completion of the CPU side (after the DMA side).
    pub cpu_window_ns: u64,
}

/// The physical SMMU as the emulation uses it. Commands are held until `sync`, so a host batch of
/// invalidations costs one physical CMD_SYNC; an STE write first flushes what is held, keeping order.
struct Phys<'a> {
    driver: &'a mut Driver,
    stage2: Stage2Config,
    /// Held commands (the firewall's scratch vector, kept between traps: no allocation per batch).
    pending: &'a mut Vec<Command>,
    /// After the fence: the dead kernel's streams, kept on the terminating stage 2 until the
    /// capture kernel configures them with a stage 1 of its own.
    fenced: Option<&'a mut StreamSet>,
    /// After the fence: where the host's Stream table is, to tell whether an STE comes from a
    /// table the capture kernel set up after the fence (`fence::from_capture_table`).
    lift: Option<LiftCheck>,
    /// The live DMA policy (the normal one; the crash-mode one after the fence): what a CMD_SYNC
    /// completion MSI may write.
    dma: Option<&'a Stage2Table>,
}

/// What `Phys::admit` needs to check where a lifting STE comes from.
struct LiftCheck {
    /// `STRTAB_BASE` was written after the fence.
    rewritten: bool,
    base: portcullis::smmu::Ipa,
    layout: portcullis::smmu::ste::StreamTableLayout,
    capture: PhysRange,
}

impl LiftCheck {
    fn allows(&self, sid: StreamId) -> bool {
        let at = fence::host_ste_location(self.base, &self.layout, sid, |l1| {
            let mut b = [0u8; 8];
            portcullis::emul::HostMemory::read(&HostRam, l1, &mut b).ok()?;
            Some(u64::from_le_bytes(b))
        });
        fence::from_capture_table(self.rewritten, at, &[self.capture])
    }
}

impl Phys<'_> {
    /// Writes one admitted STE.
    fn write_one(&mut self, sid: StreamId, ste: &Ste) -> Result<(), SmmuError> {
        self.flush()?;
        let report = self.driver.write_ste(sid, ste)?;
        if report.unchanged == 0 {
            // Portcullis' own record of what each host stream really does (the smoke tests read
            // it). Aborts come by the thousand when a host enables or resets its SMMU: debug only.
            let config = ste.config();
            if config == StreamConfig::Nested {
                log::info!(
                    "physical STE for stream {sid:#06x}: {config:?}, stage 2 VMID {}",
                    self.stage2.vmid
                );
            } else {
                log::debug!("physical STE for stream {sid:#06x}: {config:?}");
            }
        }
        Ok(())
    }

    /// Whether `ste` may replace the terminate STE of `sid` (always, for a stream not fenced).
    fn admit(&mut self, sid: StreamId, ste: &Ste) -> bool {
        let Some(fenced) = self.fenced.as_deref_mut() else {
            return true;
        };
        if !fenced.contains(sid) {
            return true;
        }
        if !fence::should_lift(sid, ste, true) {
            return false;
        }
        if !self.lift.as_ref().is_some_and(|l| l.allows(sid)) {
            log::debug!("stream {sid:#x}: STE not from a Stream table set up after the fence");
            return false;
        }
        log::info!("stream {sid:#x}: configured by the capture kernel, lifted from the fence");
        fenced.remove(sid);
        true
    }
}

impl Phys<'_> {
    fn flush(&mut self) -> Result<(), SmmuError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.submit_pending()
    }

    /// Submits the held commands (with the driver's CMD_SYNC) and empties the scratch vector,
    /// keeping the capacity a usual batch needs.
    fn submit_pending(&mut self) -> Result<(), SmmuError> {
        let r = self.driver.submit(self.pending);
        self.pending.clear();
        self.pending.shrink_to(PENDING_KEPT);
        r
    }
}

impl PhysicalSmmu for Phys<'_> {
    type Error = SmmuError;

    fn stage2(&self) -> Stage2Config {
        self.stage2
    }

    fn write_ste(&mut self, sid: StreamId, ste: &Ste) -> Result<(), SmmuError> {
        if !self.admit(sid, ste) {
            // A stream the dead kernel had stays terminated, and its late transactions recorded.
            return Ok(());
        }
        self.write_one(sid, ste)
    }

    /// Runs of identical STEs (a host enabling, disabling or resetting its SMMU recomposes every
    /// stream, 65 536 on QEMU) are written as one batch: the driver's update rounds then cost a
    /// few CMD_SYNCs for the whole run instead of a few per stream.
    fn write_stes(&mut self, stes: &[(StreamId, Ste)]) -> Result<(), SmmuError> {
        let start = crate::arch::cpu::counter();
        let r = self.write_stes_timed(stes);
        STE_WRITE_TICKS.fetch_add(
            crate::arch::cpu::counter().wrapping_sub(start),
            core::sync::atomic::Ordering::Relaxed,
        );
        r
    }

    fn submit(&mut self, cmds: &[Command]) -> Result<(), SmmuError> {
        if self.pending.try_reserve(cmds.len()).is_err() {
            // No heap to hold them until the sync: submit now (order is kept).
            self.flush()?;
            return self.driver.submit(cmds);
        }
        self.pending.extend_from_slice(cmds);
        Ok(())
    }

    fn sync(&mut self) -> Result<(), SmmuError> {
        self.submit_pending()
    }

    /// Straight to the physical queue (after anything held): no copy into the held commands.
    fn submit_synced(&mut self, cmds: &[Command]) -> Result<(), SmmuError> {
        self.flush()?;
        self.driver.submit(cmds)
    }

    fn device_may_write(&self, ipa: portcullis::smmu::Ipa, len: usize) -> bool {
        self.dma
            .is_some_and(|t| portcullis::emul::msi::device_write_allowed(t, ipa, len))
    }

    /// After the fence no default applies: a device that was not a physical stream of the dead
    /// kernel stays refused (recorded), whatever the capture kernel's GBPA.
    fn set_default(&mut self, ste: Option<&Ste>) -> Result<(), SmmuError> {
        self.flush()?;
        let ste = if self.fenced.is_some() { None } else { ste };
        self.driver.set_default_ste(ste)
    }

    /// A level 2 table for `sid` if it has none, within [`ON_DEMAND_L2_TABLES`].
    fn cover(&mut self, sid: StreamId) -> Result<(), SmmuError> {
        if self.driver.covers(sid) {
            return Ok(());
        }
        self.flush()?;
        self.driver.reserve_stream(sid)
    }
}

/// Commands the held-command scratch vector keeps room for between traps.
const PENDING_KEPT: usize = 64;

/// Counter ticks spent writing physical STEs (for the trap-cost report of a `CMDQ_PROD` write).
static STE_WRITE_TICKS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

impl Phys<'_> {
    fn write_stes_timed(&mut self, stes: &[(StreamId, Ste)]) -> Result<(), SmmuError> {
        let mut i = 0;
        while i < stes.len() {
            let ste = stes[i].1;
            let run = stes[i..].iter().take_while(|(_, s)| *s == ste).count();
            // The emulation hands over a chunk at most; without heap for the run, one at a time.
            let mut sids: Vec<StreamId> = Vec::new();
            if sids.try_reserve_exact(run).is_err() {
                for (sid, ste) in &stes[i..i + run] {
                    self.write_ste(*sid, ste)?;
                }
                i += run;
                continue;
            }
            for &(sid, _) in &stes[i..i + run] {
                if self.admit(sid, &ste) {
                    sids.push(sid);
                }
            }
            if sids.len() == 1 {
                self.write_one(sids[0], &ste)?;
            } else if !sids.is_empty() {
                self.flush()?;
                let report = self.driver.write_stes(&sids, &ste)?;
                log::debug!(
                    "{} physical STEs: {:?} ({report:?})",
                    sids.len(),
                    ste.config()
                );
            }
            i += run;
        }
        Ok(())
    }
}

/// Boxed: 13 KiB of state (the fault book) would otherwise sit in the image file as initialised
/// data (`None` is not all zeros).
static FIREWALL: Mutex<Option<Box<Firewall>>> = Mutex::new(None);

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

/// Level 2 Stream tables (16 KiB each, one per PCI bus with an identity `iommu-map`) the host's
/// configurations may add beyond those of the devices found at boot: 32 buses behind bridges,
/// 512 KiB. A host that configures StreamIDs on more buses (a dead kernel giving all 65 536 an
/// STE) gets, for the rest, what an SMMU reports for a StreamID it cannot hold: no STE, its
/// transactions refused with C_BAD_STREAMID, and a C_BAD_STREAMID record for a CMD_CFGI_STE
/// naming it. Bounded, so that the heap is sized at boot and a host cannot exhaust it.
pub const ON_DEMAND_L2_TABLES: usize = 32;

/// The StreamIDs of the PCI functions on each root bus (read through ECAM, mapped in
/// Portcullis' EL2 tables by `main`): the streams that exist before the host runs.
fn present_stream_ids(machine: &Platform, smmu_phandle: Option<u32>) -> Vec<StreamId> {
    use portcullis::boot::pci_scan;
    pci_scan::present_stream_ids(&machine.pci, smmu_phandle, |host, offset| {
        match pci_scan::root_bus_ecam(host) {
            // SAFETY: the root bus's ECAM window is mapped as Device memory at EL2 (`main` maps
            // every `root_bus_ecam`); `offset` is inside it (`bus_functions` reads at most
            // device 31, function 7, register 0xc), 4-byte aligned; configuration reads of the
            // ID and header-type words have no side effects.
            Some(w) if offset + 4 <= w.size() => unsafe {
                ((w.start.raw() + offset) as *const u32).read_volatile()
            },
            _ => u32::MAX,
        }
    })
}

/// Takes the physical SMMU and confines every stream to the normal-mode DMA policy.
pub fn init(machine: &Platform, map: &AddressMap) -> Result<(), FirewallError> {
    let smmu = machine.smmu.as_ref().ok_or(FirewallError::NoSmmu)?;
    // SAFETY: the frame comes from the device tree, is mapped as Device memory in Portcullis' EL2
    // tables, unmapped for the host, and only this driver touches it.
    let frame = unsafe { SmmuFrame::new(smmu.regs.start.raw(), smmu.regs.size()) };
    let mut drv = SmmuDriver::probe(frame, HeapDma).map_err(FirewallError::Smmu)?;
    log::debug!("SMMU at {}: {}", smmu.regs, drv.features());
    crate::boot_clock::mark("smmu-probe");

    let max_sid = portcullis::boot::pci_scan::max_stream_id(&machine.pci, smmu.phandle)
        .ok_or(FirewallError::NoStreams)?;
    let sids = present_stream_ids(machine, smmu.phandle);
    let report = drv.init(max_sid).map_err(FirewallError::Smmu)?;
    // At debug unless the SMMU had errors left active: the firewall line says it is up (under
    // QEMU each console byte before the host's entry is a trap).
    if report.stale_errors.is_empty() {
        log::debug!("{report}");
    } else {
        log::warn!("{report}");
    }
    crate::boot_clock::mark("smmu-init");

    let ias = driver::ias_bits(drv.features());
    // The policy's regions do not depend on the IPA size; the IPA size depends on them.
    let regions = stage2::dma_policy(map, Mode::Normal);
    let mapped: Vec<PhysRange> = regions.iter().map(|r| r.range).collect();
    let ipa_bits = fence::dma_ipa_bits(map.ipa_bits, u32::from(ias), &mapped);
    let dma_map = AddressMap {
        ipa_bits,
        ..map.clone()
    };
    let table =
        Stage2Table::build(&regions, ipa_bits, VMID_DMA_NORMAL).map_err(FirewallError::Policy)?;
    for r in &regions {
        log::debug!("DMA policy (normal): {} {:?}", r.range, r.access);
    }
    crate::boot_clock::mark("dma-s2");
    let ste = driver::stage2_ste(&table, drv.features()).map_err(FirewallError::Smmu)?;
    let written = drv
        .install_streams(sids.iter().copied(), &ste)
        .map_err(FirewallError::Smmu)?;
    drv.set_l2_budget(drv.l2_tables() + ON_DEMAND_L2_TABLES);
    // The host's SMMU resets disabled with GBPA bypass: every other StreamID too is stage 2 only
    // (one shared level 2 table), until the host enables its SMMU.
    drv.set_default_ste(Some(&ste))
        .map_err(FirewallError::Smmu)?;
    log::info!(
        "DMA firewall up: {} StreamIDs present on the root bus {sids:x?} stage 2 only, VMID 2, \
         {ipa_bits} IPA bits, fault recording on",
        sids.len(),
    );
    log::debug!(
        "DMA firewall: StreamIDs up to {max_sid:#x} get an STE when the host configures them ({} \
         more level 2 tables at most)",
        ON_DEMAND_L2_TABLES,
    );
    log::debug!("physical STEs at boot: {written:?}");
    let stage2 = driver::stage2_config(&table, drv.features()).map_err(FirewallError::Smmu)?;
    let mut config = EmulConfig::new(*drv.features(), map.ipa_bits as u8);
    config.iidr = drv.mmio().read32(offset::IIDR);
    config.aidr = drv.mmio().read32(offset::AIDR);
    config.on_demand = Some(max_sid);
    let emul = EmulatedSmmu::new(&config, sids.iter().copied()).map_err(FirewallError::Emul)?;
    log::debug!("emulated SMMU for the host: {}", emul.host_features());
    crate::boot_clock::mark("emul");
    let crash = match map.crash {
        Some(region) => Some(prepare_crash_side(&mut drv, &dma_map, region)?),
        None => None,
    };
    // The SMMU walks the normal DMA stage 2 until the machine stops, and the fence edits it
    // without the firewall's lock: it lives for ever, outside the lock.
    let table: &'static Stage2Table = alloc::boxed::Box::leak(alloc::boxed::Box::new(table));
    let top = table.valid_top_entries();
    log::debug!(
        "fence armed: {} top-level entries of the normal DMA stage 2 ({} GiB each) to invalidate in place",
        top.len(),
        table.top_entry_size() >> 30
    );
    let spare = (0..table.top_entries()).find(|&i| table.top_entry(i) == 0);
    DMA_CUT.call_once(|| DmaCut { table, top, spare });
    *FIREWALL.lock() = Some(Box::new(Firewall {
        driver: drv,
        normal_ste: ste,
        stage2,
        pci: machine.pci.clone(),
        faults: FaultBook::default(),
        emul,
        irq_ctrl: 0,
        crash,
        fenced: None,
        fence: FenceStats::default(),
        dead: DeadKernel::default(),
        fence_note: None,
        strtab_rewritten: false,
        report: map.report,
        report_written: map.report.map_or(0, |r| r.size() as usize),
        report_generation: 0,
        pending: Vec::new(),
    }));
    Ok(())
}

fn describe_stream(pci: &[PciHost], sid: StreamId) -> Option<platform::devtree::Bdf> {
    pci.iter().find_map(|h| h.bdf_for_stream(sid))
}

/// The counter at the last drain of the physical Event queue.
static LAST_DRAIN: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The drain a trap owes first, if any (`portcullis::emul::drain::on_trap`: at most every
/// millisecond in crash mode, every few milliseconds otherwise). No MMIO and no lock when none is
/// due. Returns the counter it read (the trap's start, for [`emulated_access`]: one counter read
/// per trap, which under an emulator is not free).
pub fn poll_if_due() -> u64 {
    let now = crate::arch::cpu::counter();
    let last = LAST_DRAIN.load(core::sync::atomic::Ordering::Relaxed);
    let hz = crate::arch::cpu::counter_hz();
    if portcullis::emul::drain::on_trap(crate::host::in_crash_mode(), now, last, hz) {
        poll();
    }
    now
}

/// Logs the counters line (`portcullis::diag::counters`: the interface benchmarks read), with the
/// host's CMD_SYNCs from the emulated SMMU. Host-triggered, so rate-limited, but to 20 lines a
/// second rather than `limited!`'s 5: a benchmark brackets its I/O phases with CPU_OFFs in quick
/// succession, and a line lost to the limit is a phase without figures.
pub fn log_counters(at: &str) {
    static LIMIT: portcullis::diag::RateLimit = portcullis::diag::RateLimit::new(20);
    crate::limited::log(
        &LIMIT,
        log::Level::Info,
        format_args!("{}", COUNTERS.render(at, &sync_stats())),
    );
}

/// The host's CMD_SYNCs by completion signal, and their MSIs.
pub fn sync_stats() -> portcullis::emul::state::SyncStats {
    FIREWALL
        .lock()
        .as_ref()
        .map(|fw| fw.emul.sync_stats())
        .unwrap_or_default()
}

/// Drains the physical event queue: every record is kept (or counted as overflowed), and logged
/// within the console's rate limit.
pub fn poll() {
    let mut guard = FIREWALL.lock();
    let Some(fw) = guard.as_deref_mut() else {
        return;
    };
    LAST_DRAIN.store(
        crate::arch::cpu::counter(),
        core::sync::atomic::Ordering::Relaxed,
    );
    COUNTERS.drain();
    let fenced = fw.fenced.is_some();
    let before = fw.faults.streams.total();
    let Firewall {
        driver,
        pci,
        faults,
        emul,
        dead,
        fenced: fenced_set,
        ..
    } = fw;
    let fenced_set = fenced_set.as_ref();
    let mut on_record = |rec: EventRecord| {
        // After the fence a stream the dead kernel had is Portcullis' until lifted, whatever the
        // record says (an SMMU may report a stage-2 fault on a stage-1 walk as stage 1: QEMU 10).
        let fenced_stream = fenced_set.is_some_and(|f| f.contains(rec.sid()));
        if let Ok(ev) = &rec.event
            && !fenced_stream
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
            limited!(
                Error,
                "SMMU event queue overflowed: some fault records were lost by the SMMU"
            );
        }
        Ok(_) => {}
        Err(e) => limited!(Error, "SMMU event queue: {e}"),
    }
    // An SMMU that cannot write a record (QEMU's, when its Event queue is full) raises
    // GERROR.EVTQ_ABT_ERR instead of the queue's overflow flag: the record is lost just the same,
    // and the report must say records were lost.
    let errors = driver.global_errors();
    if errors.has(GlobalErrors::EVTQ_ABT_ERR) {
        faults.ring.note_hardware_overflow();
    }
    if !errors.is_empty() {
        limited!(Error, "SMMU global errors: {errors}");
    }
    // After the fence, the dead kernel's refused transactions go to the capture kernel too: into an
    // Event queue it set up itself (not the dead kernel's, which lies in the read-only dump), as
    // far as that queue has room; the rest waits in the ring.
    if fenced && emul.event_queue_enabled() && host_base(emul, offset::EVTQ_BASE) != dead.evtq_base
    {
        while let Some(r) = faults.ring.front().copied() {
            let (prod, cons) = emul.event_queue_indexes();
            let room = QueuePair::new(prod.wr, cons.rd).is_ok_and(|q| !q.is_full());
            if !room {
                break;
            }
            match emul.deliver_record(r.raw, &mut HostRam) {
                Delivery::Written => {
                    faults.ring.pop();
                }
                other => {
                    limited!(
                        Warn,
                        "fence record for stream {:#x} not forwarded yet: {other}",
                        r.sid
                    );
                    break;
                }
            }
        }
    }
    let changed = faults.streams.total() != before;
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
    if fenced && changed {
        drop(guard);
        write_report();
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

/// Logs what the emulation noted, at most a few lines per access: a host that points its tables
/// somewhere it may not go can make thousands of identical notes in one register write.
fn log_notes(notes: &[Note]) {
    const LINES: usize = 4;
    let mut lost = 0usize;
    let mut others = 0usize;
    for n in notes {
        if matches!(n, Note::EventLost { .. }) {
            lost += 1;
            if lost > 1 {
                continue;
            }
        } else {
            others += 1;
            if others > LINES {
                continue;
            }
        }
        limited!(Warn, "emulated SMMU: {n}");
    }
    if lost > 1 {
        limited!(
            Warn,
            "emulated SMMU: ... {} more events for the host lost",
            lost - 1
        );
    }
    if others > LINES {
        limited!(Warn, "emulated SMMU: ... and {} more notes", others - LINES);
    }
}

/// A host access to the emulated SMMU's register frame (`access.ipa` inside it), in a trap that
/// started at counter `entered`.
pub fn emulated_access(frame: &mut TrapFrame, access: &MmioAccess, frame_base: u64, entered: u64) {
    let mut guard = FIREWALL.lock();
    let Some(fw) = guard.as_mut() else {
        // No SMMU under Portcullis' control: the frame reads as zero and ignores writes.
        if !access.write {
            access.complete_load(&mut frame.x, 0);
        }
        return;
    };
    let offset = (access.ipa.raw() - frame_base) as usize;
    COUNTERS.emulated(offset, access.write);
    if access.write {
        let value = access.store_value(&frame.x);
        if fw.fenced.is_some() && (offset::STRTAB_BASE..offset::STRTAB_BASE + 8).contains(&offset) {
            fw.strtab_rewritten = true;
        }
        let lift = match (&fw.fenced, &fw.crash) {
            (Some(_), Some(crash)) => Some(LiftCheck {
                rewritten: fw.strtab_rewritten,
                base: fw.emul.strtab_base(),
                layout: fw.emul.strtab_layout(),
                capture: crash.region,
            }),
            _ => None,
        };
        let dma = match (&fw.fenced, &fw.crash) {
            (Some(_), Some(crash)) => Some(&crash.dma),
            (Some(_), None) => None,
            (None, _) => DMA_CUT.get().map(|c| c.table),
        };
        let fenced = fw.fenced.as_mut();
        let mut phys = Phys {
            fenced,
            lift,
            dma,
            driver: &mut fw.driver,
            stage2: fw.stage2,
            pending: &mut fw.pending,
        };
        portcullis::prof::lap(portcullis::prof::Stage::Lock);
        let ste_ticks = STE_WRITE_TICKS.load(core::sync::atomic::Ordering::Relaxed);
        let short = fw.emul.sync_stats().short_batches;
        let notes = fw
            .emul
            .write(offset, access.size_bytes, value, &mut HostRam, &mut phys);
        portcullis::prof::lap(portcullis::prof::Stage::Finish);
        if fw.emul.sync_stats().short_batches == short {
            // (A short-path batch is a few commands and one sync, bounded by the driver's own
            // timeout: not timed, which spares a counter read on every strict unmap.)
            report_slow_write(offset, entered, ste_ticks);
        }
        if let Err(e) = phys.flush() {
            log::error!("emulated SMMU: physical commands failed: {e}");
        }
        log_notes(&notes);
        mirror_irq_ctrl(fw);
        drop(guard);
        portcullis::prof::lap(portcullis::prof::Stage::After);
    } else {
        if portcullis::emul::drain::on_host_access(offset, false) {
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
        drop(guard);
        portcullis::prof::lap(portcullis::prof::Stage::Read);
    }
}

/// Logs (rate-limited) an emulated-SMMU register write that held the trap for a millisecond or
/// more: the figure `scripts/bench`-style measurements of a host batch read.
fn report_slow_write(offset: usize, start: u64, ste_ticks_before: u64) {
    let hz = crate::arch::cpu::counter_hz().max(1);
    let elapsed = crate::arch::cpu::counter().wrapping_sub(start);
    if elapsed.saturating_mul(1000) < hz {
        return;
    }
    let ste = STE_WRITE_TICKS
        .load(core::sync::atomic::Ordering::Relaxed)
        .wrapping_sub(ste_ticks_before);
    let us = |t: u64| t.saturating_mul(1_000_000) / hz;
    limited!(
        Info,
        "emulated SMMU: write at {offset:#x} held the trap {} us ({} us writing physical STEs)",
        us(elapsed),
        us(ste)
    );
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

/// VMIDs of the physical stage 2s: the normal DMA policy and the crash-mode one. (The host's CPU
/// stage 2 is VMID 1.)
const VMID_DMA_NORMAL: u16 = 2;
const VMID_DMA_CRASH: u16 = 4;

/// Builds, at boot, the crash-mode DMA policy the capture kernel's streams get once lifted.
fn prepare_crash_side(
    drv: &mut Driver,
    dma_map: &AddressMap,
    region: PhysRange,
) -> Result<CrashSide, FirewallError> {
    let regions = stage2::dma_policy(dma_map, Mode::Crash);
    let dma = Stage2Table::build(&regions, dma_map.ipa_bits, VMID_DMA_CRASH)
        .map_err(FirewallError::Policy)?;
    let dma_stage2 = driver::stage2_config(&dma, drv.features()).map_err(FirewallError::Smmu)?;
    for r in &regions {
        log::debug!("DMA policy (crash): {} {:?}", r.range, r.access);
    }
    Ok(CrashSide {
        dma,
        dma_stage2,
        region,
    })
}

/// Why the DMA fence could not be raised.
#[derive(Debug)]
pub enum FenceError {
    NoFirewall,
    NotArmed,
    Smmu(SmmuError),
}

impl fmt::Display for FenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoFirewall => write!(f, "no SMMU under Portcullis' control"),
            Self::NotArmed => write!(
                f,
                "no crash-mode DMA policy (no crash region), or already fenced"
            ),
            Self::Smmu(e) => write!(f, "SMMU: {e}"),
        }
    }
}

/// Step 2 of the DMA fence, after [`cut_dma`]: CMD_CFGI_ALL, CMD_TLBI_S12_VMALL for the normal
/// DMA stage 2's VMID, and one CMD_SYNC, awaited. Nothing else changes on the SMMU: no STE, no
/// register, `SMMUEN` stays 1, so there is no instant in which a transaction is refused without a
/// record (GBPA never applies). Three commands, whatever the number of streams.
///
/// Why this is the whole fence (IHI 0070G.b):
/// - ordering: `cut_dma`'s stores precede the `CMDQ_PROD` write that publishes the commands, with
///   the driver's `DSB` between them (section 3.5, "the Command queue": commands and the
///   structures they refer to must be observable before the producer index moves);
/// - section 3.21, structure access rules: the SMMU reads a translation table descriptor 64 bits
///   at a time (single-copy atomic) and caches translations only from valid descriptors; once the
///   invalid descriptors are observable, every walk through this stage 2 ends in a stage-2
///   Translation fault, recorded because every STE carrying it has S2R = 1;
/// - section 4.4, CMD_TLBI_S12_VMALL: every TLB and walk-cache entry tagged with the VMID goes,
///   nested streams' combined stage-1 + stage-2 entries included; section 4.3, CMD_CFGI_ALL:
///   every cached STE and CD goes, so a nested stream's CD is fetched again -- through the fenced
///   stage 2, which refuses it (a stage-2 fault with CLASS = CD, recorded under S2R) whatever the
///   dead kernel's CD.R, also on SMMUs that report a stage-2 fault on a stage-1 table walk as a
///   stage-1 fault (QEMU 10);
/// - why CMD_CFGI_ALL at all, when no STE or CD changes: the configuration caches hold STEs and
///   CDs, not translations, and a CD cached before the fence still walks its stage-1 tables
///   through the fenced stage 2 -- a stage-2 fault with CLASS = TT, recorded under S2R. On an SMMU
///   that follows the architecture CMD_TLBI_S12_VMALL and CMD_SYNC would do: nothing is
///   translated through the normal policy either way. CMD_CFGI_ALL is for the *record* on SMMUs
///   that, like QEMU 10, report that fault as a stage-1 fault (recorded only if the dead kernel's
///   CD.R says so): the CD fetch itself then fails at stage 2. It costs one queue slot; the SMMU's
///   whole share of the window (writing `CMDQ_PROD` to the completed sync) is ~20 us under QEMU;
/// - section 4.7, CMD_SYNC: its completion means every earlier command has completed, and the
///   invalidations have with every transaction that used the entries they removed: from then on no
///   transaction of any stream is translated through the normal policy;
/// - break-before-make (section 3.21.x; ARM ARM "Using break-before-make when updating
///   translation table entries") is owed when a valid descriptor is replaced by another valid one;
///   here valid descriptors become invalid and stay so (the capture kernel's streams get the
///   crash-mode policy under another VMID, through their STEs).
///
/// Returns the counter at the completed CMD_SYNC: the end of the window.
pub fn fence() -> Result<u64, FenceError> {
    let mut guard = FIREWALL.lock();
    let fw = guard.as_mut().ok_or(FenceError::NoFirewall)?;
    if fw.crash.is_none() {
        return Err(FenceError::NotArmed);
    }
    if fw.fenced.is_some() {
        return Err(FenceError::NotArmed);
    }
    let synced = fw
        .driver
        .submit(&fence::in_place_commands(VMID_DMA_NORMAL))
        .map_err(FenceError::Smmu);
    let end = crate::arch::cpu::counter();
    synced?;
    Ok(end)
}

/// The SMMU commands of the DMA fence, its CMD_SYNC included.
pub fn fence_command_count() -> u64 {
    fence::in_place_commands(VMID_DMA_NORMAL).len() as u64 + 1
}

/// After the fence (logs, allocations allowed): the bookkeeping, and the dead kernel's nested
/// streams made stage 2 only through the (now empty) normal DMA stage 2, as every stream was at
/// boot, so that their late transactions are refused at their input (CLASS = IN) and recorded
/// with the device's own address, not at a stage-1 walk or CD fetch.
pub fn after_fence(window_ns: u64, stores: u64, cpu_window_ns: u64) -> FenceStats {
    let mut guard = FIREWALL.lock();
    let Some(fw) = guard.as_mut() else {
        return FenceStats::default();
    };
    let Some(crash) = fw.crash.as_ref() else {
        return FenceStats::default();
    };
    let crash_stage2 = crash.dma_stage2;
    let nested: Vec<StreamId> = fw
        .emul
        .streams()
        .filter(|(_, st)| matches!(st, StreamState::Stage1 { .. } | StreamState::Unknown))
        .map(|(sid, _)| sid)
        .collect();
    let normal_ste = fw.normal_ste;
    let restaged = fw.driver.write_stes(&nested, &normal_ste);
    fw.stage2 = crash_stage2;
    let sids: Vec<StreamId> = fw.emul.streams().map(|(sid, _)| sid).collect();
    let fenced = StreamSet::full(&sids);
    fw.fence = FenceStats {
        window_ns,
        commands: fence_command_count(),
        // The StreamIDs without a physical STE of their own that followed the default (the
        // dead kernel's SMMU disabled, GBPA bypass) were cut with the same stage 2.
        streams: fenced.len() + fw.driver.default_streams(),
        live: fw.emul.live_streams().count() as u64,
        stores,
        restaged: if restaged.is_ok() {
            nested.len() as u64
        } else {
            0
        },
        cpu_window_ns,
    };
    if let Err(e) = restaged {
        fw.fence_note = Some(e);
    }
    fw.fenced = Some(fenced);
    fw.dead = DeadKernel {
        live: fw.emul.live_streams().collect(),
        evtq_base: host_base(&fw.emul, offset::EVTQ_BASE),
    };
    // The ring now collects what the fence causes (what came before is counted per stream and
    // was logged).
    fw.faults.ring.clear();
    fw.fence
}

/// Writes the fault report (see `portcullis::fence::render_report` for the format) into the report
/// region, if there is one.
pub fn write_report() {
    let mut guard = FIREWALL.lock();
    let Some(fw) = guard.as_mut() else { return };
    let Some(region) = fw.report else { return };
    let live: Vec<StreamId> = match fw.fenced {
        Some(_) => fw.dead.live.clone(),
        None => fw.emul.live_streams().collect(),
    };
    let pci = &fw.pci;
    let lpi_tables = crate::gic_mediation::lpi_tables();
    let bdf = |sid: StreamId| describe_stream(pci, sid).map(|b| alloc::format!("{b}"));
    fw.report_generation += 1;
    let input = ReportInput {
        generation: fw.report_generation,
        state: if fw.fenced.is_some() {
            ReportState::Fenced
        } else {
            ReportState::Armed
        },
        window_ns: fw.fence.window_ns,
        commands: fw.fence.commands,
        stores: fw.fence.stores,
        cpu_window_ns: fw.fence.cpu_window_ns,
        streams_terminated: fw.fence.streams,
        live_streams: &live,
        lpi_tables: &lpi_tables,
        faults: &fw.faults,
        bdf: &bdf,
    };
    let text = fence::render_report(&input);
    let len = (text.len() as u64).min(region.size()) as usize;
    let base = region.start.raw() as *mut u8;
    // Rewritten on every new fault in crash mode: touch only the new text and what is left of the
    // previous (longer) one, not the whole 64 KiB.
    let end = len.max(fw.report_written);
    fw.report_written = len;
    // Front to back in three steps, each visible to other CPUs before the next starts: the first
    // lines (with `generation:`), the body, then the closing lines (`generation-end:`) and the
    // padding. A reader that sees the same generation in both read one whole report (see
    // `fence::render_report`).
    let [first, closing] = fence::report_write_steps(&text, len);
    let mut from = 0;
    for to in [first, closing, end] {
        let mut i = from;
        while i < to {
            // The padding after the text (the whole region at boot) a word at a time where aligned.
            if i >= len && i.is_multiple_of(8) && i + 8 <= to {
                // SAFETY: as below; `base + i` is 8-byte aligned and `i + 8 <= end`, inside the
                // region.
                unsafe { base.add(i).cast::<u64>().write_volatile(0) };
                i += 8;
                continue;
            }
            let b = if i < len { text.as_bytes()[i] } else { 0 };
            // SAFETY: the report region is host RAM reserved for Portcullis (no-map in the host's
            // tree, read-only or unmapped for the host, never mapped for DMA), identity-mapped at
            // EL2.
            unsafe { base.add(i).write_volatile(b) };
            i += 1;
        }
        core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
        from = to;
    }
    #[cfg(feature = "test-hooks")]
    crate::test_hooks::report::written(region.start.raw(), region.size());
}

/// What went wrong after the fence's window, once (for the caller's log after the fence).
pub fn take_fence_note() -> Option<SmmuError> {
    FIREWALL.lock().as_mut().and_then(|fw| fw.fence_note.take())
}

/// What the fence did (zeros before it).
#[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
pub fn fence_stats() -> FenceStats {
    FIREWALL
        .lock()
        .as_ref()
        .map(|fw| fw.fence)
        .unwrap_or_default()
}

/// What the SMMU's tables and queues will take, for the heap's reserve (read before the firewall
/// is raised: the ID registers, the `iommu-map`s and the root buses). Zeros without an SMMU.
pub fn heap_needs(machine: &Platform) -> portcullis::boot::heap::Machine {
    use portcullis::smmu::ste::{STE_SIZE, StreamTableFormat};
    let mut needs = portcullis::boot::heap::Machine::default();
    let Some(smmu) = machine.smmu.as_ref() else {
        return needs;
    };
    let Some(max_sid) = portcullis::boot::pci_scan::max_stream_id(&machine.pci, smmu.phandle)
    else {
        return needs;
    };
    // SAFETY: as in `init`: the SMMU frame is mapped as Device memory at EL2; ID registers only
    // are read, before the driver takes the frame.
    let mut frame = unsafe { SmmuFrame::new(smmu.regs.start.raw(), smmu.regs.size()) };
    let f = portcullis::smmu::regs::SmmuFeatures::from_idr(
        frame.read32(offset::IDR0),
        frame.read32(offset::IDR1),
        frame.read32(offset::IDR3),
        frame.read32(offset::IDR5),
    );
    needs.queue_bytes = (portcullis::smmu::cmd::COMMAND_SIZE
        << f.cmdq_log2.min(driver::CMDQ_MAX_LOG2)) as u64
        + (portcullis::smmu::event::EVENT_SIZE << f.evtq_log2.min(driver::EVTQ_MAX_LOG2)) as u64;
    let Ok(layout) = driver::stream_table_layout(&f, max_sid) else {
        return needs;
    };
    needs.strtab_top_bytes = layout.top_level_bytes();
    if let StreamTableFormat::TwoLevel { split } = layout.format {
        let mut groups: Vec<StreamId> = present_stream_ids(machine, smmu.phandle)
            .iter()
            .map(|sid| sid >> split)
            .collect();
        groups.dedup();
        needs.l2_tables = (groups.len() + ON_DEMAND_L2_TABLES) as u64;
        needs.l2_bytes = (STE_SIZE << split) as u64;
    }
    needs
}
