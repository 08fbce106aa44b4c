//! GICv3 mediation, the thin layer: finds the redistributors and ITSs, gives the physical ITS its
//! own tables and command queue in Portcullis' memory, and answers the host's trapped accesses to
//! the ITS control page and the redistributors' LPI register pages with the portable core
//! (`portcullis::gic`). See that module for what is decided and why.

use crate::arch::cache;
use crate::arch::smmu_mmio::write_barrier;
use crate::arch::vectors::TrapFrame;
use crate::host_ram::HostRam;
use alloc::vec::Vec;
use core::alloc::Layout;
use platform::addr::{Ipa, PhysRange};
use platform::devtree::{GicVersion, Platform};
use portcullis::gic::its::{self, EmulatedIts, ItsConfig, PhysIts, TableKind};
use portcullis::gic::redist::{self, PhysRedist, Redistributors};
use portcullis::gic::regs::{GITS_CBASER, GITS_CTLR, GITS_TYPER, gicd, gicr, gits};
use portcullis::gic::{DmaWindow, lpi};
use portcullis::stage2::{AddressMap, Mode};
use portcullis::trap::mmio::MmioAccess;
use spin::Once;
// Fair: a trap storm on one CPU cannot starve another CPU's access (or the fence).
use spin::mutex::TicketMutex as Mutex;
use tock_registers::LocalRegisterCopy;

/// Portcullis' command queue for each physical ITS: 64 KiB, 2048 commands.
const QUEUE_BYTES: usize = 64 << 10;
/// Reads of GITS_CREADR / GITS_CTLR before Portcullis gives up waiting for the ITS.
const MAX_POLLS: u32 = 100_000;
/// At most this many redistributors are mediated (more than any board Portcullis knows).
const MAX_REDISTRIBUTORS: usize = 4096;

/// A register frame, mapped as Device memory in Portcullis' EL2 tables (`main.rs` maps the GIC's
/// distributor, redistributor and ITS frames).
struct Mmio;

impl Mmio {
    fn read32(pa: u64) -> u32 {
        // SAFETY: callers pass an aligned register of a GIC frame from the device tree, mapped as
        // Device memory at EL2; reads of these registers have no side effects.
        unsafe { (pa as *const u32).read_volatile() }
    }
    fn write32(pa: u64, value: u32) {
        write_barrier();
        // SAFETY: as for `read32`; the write is one the tested core decided.
        unsafe { (pa as *mut u32).write_volatile(value) }
    }
    fn read64(pa: u64) -> u64 {
        // SAFETY: as for `read32`.
        unsafe { (pa as *const u64).read_volatile() }
    }
    fn write64(pa: u64, value: u64) {
        write_barrier();
        // SAFETY: as for `write32`.
        unsafe { (pa as *mut u64).write_volatile(value) }
    }
}

impl PhysRedist for Mmio {
    fn read32(&mut self, pa: u64) -> u32 {
        Mmio::read32(pa)
    }
    fn write32(&mut self, pa: u64, value: u32) {
        Mmio::write32(pa, value)
    }
    fn read64(&mut self, pa: u64) -> u64 {
        Mmio::read64(pa)
    }
    fn write64(&mut self, pa: u64, value: u64) {
        Mmio::write64(pa, value)
    }
}

/// One physical ITS: its control frame and Portcullis' queue for it.
struct ItsHw {
    base: u64,
    queue: u64,
    /// The ITS does not snoop Portcullis' caches (GITS_CBASER did not keep Inner Shareable).
    clean: bool,
}

impl PhysIts for ItsHw {
    fn read32(&mut self, offset: usize) -> u32 {
        Mmio::read32(self.base + offset as u64)
    }
    fn write32(&mut self, offset: usize, value: u32) {
        Mmio::write32(self.base + offset as u64, value)
    }
    fn read64(&mut self, offset: usize) -> u64 {
        Mmio::read64(self.base + offset as u64)
    }
    fn write64(&mut self, offset: usize, value: u64) {
        Mmio::write64(self.base + offset as u64, value)
    }
    fn put_command(&mut self, slot: usize, cmd: [u64; 4]) {
        let at = self.queue + (slot % (QUEUE_BYTES / 32)) as u64 * 32;
        for (i, dw) in cmd.iter().enumerate() {
            // SAFETY: `at` is a slot of the queue this ITS owns, allocated from Portcullis' heap
            // (identity-mapped, never freed); only this ITS's lock holder writes it.
            unsafe { ((at + 8 * i as u64) as *mut u64).write_volatile(*dw) };
        }
        if self.clean {
            cache::clean_to_poc(at as usize, 32);
        }
    }
}

struct Its {
    frame: PhysRange,
    hw: ItsHw,
    emul: EmulatedIts,
}

struct Gic {
    its: Vec<Mutex<Its>>,
    redist: Mutex<Redistributors>,
    /// Every trapped page, sorted.
    trapped: Vec<PhysRange>,
}

static GIC: Once<Gic> = Once::new();

/// Device-writable memory in normal and in crash mode.
struct Windows {
    normal: DmaWindow,
    crash: DmaWindow,
}

static WINDOWS: Once<Windows> = Once::new();

/// The LPI tables the fence kept writable in the dump, for the report.
static CRASH_TABLES: Mutex<Vec<PhysRange>> = Mutex::new(Vec::new());

/// Allocates zeroed, `align`-aligned memory from Portcullis' heap for the ITS, for ever.
fn alloc_for_its(bytes: usize, align: usize) -> Option<u64> {
    let layout = Layout::from_size_align(bytes, align).ok()?;
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
    if p.is_null() {
        return None;
    }
    // The ITS may not snoop: what it reads first (zeroed tables) must be at the point of coherency.
    cache::clean_to_poc(p as usize, bytes);
    // Identity-mapped heap: the pointer is the physical address.
    Some(p as u64)
}

/// Finds the GIC's bus masters, takes the physical ITSs (their own tables and queue, disabled
/// until the host enables its emulated one) and returns the pages the host's stage 2 must leave
/// unmapped. Call before the host's stage 2 is built, with the GIC frames mapped at EL2.
pub fn init(machine: &Platform) -> Vec<PhysRange> {
    let Some(gic) = machine.gic.as_ref().filter(|g| g.version == GicVersion::V3) else {
        return Vec::new();
    };
    let id_bits = lpi::implemented_id_bits(Mmio::read32(
        gic.distributor.start.raw() + gicd::TYPER as u64,
    ) as u64);
    let frames = redist::enumerate(&gic.redistributors, MAX_REDISTRIBUTORS, |rd| {
        Mmio::read64(rd + gicr::TYPER as u64)
    });
    let mut trapped = redist::trapped_pages(&frames);
    let mut units = Vec::new();
    for frame in &gic.its {
        match take_its(frame.start.raw(), &frames) {
            Some(unit) => {
                trapped.push(unit.frame);
                units.push(Mutex::new(unit));
            }
            None => log::error!(
                "ITS at {frame}: cannot allocate its tables; left to the host UNMEDIATED"
            ),
        }
    }
    platform::sort::sort_small(&mut trapped);
    log::debug!(
        "GIC mediation: {} redistributors ({id_bits} interrupt ID bits), {} ITS; {} frames trapped",
        frames.len(),
        units.len(),
        trapped.len()
    );
    let out = trapped.clone();
    GIC.call_once(|| Gic {
        its: units,
        redist: Mutex::new(Redistributors::new(frames, id_bits)),
        trapped,
    });
    out
}

fn take_its(base: u64, frames: &[redist::RdFrame]) -> Option<Its> {
    let mut hw = ItsHw {
        base,
        queue: 0,
        clean: false,
    };
    // Quiescent and disabled before its tables change.
    hw.write32(gits::CTLR, 0);
    for _ in 0..MAX_POLLS {
        if LocalRegisterCopy::<u32, GITS_CTLR::Register>::new(hw.read32(gits::CTLR))
            .is_set(GITS_CTLR::Quiescent)
        {
            break;
        }
        core::hint::spin_loop();
    }
    let typer = hw.read64(gits::TYPER);
    let mut basers = [0u64; gits::BASER_COUNT];
    for (n, b) in basers.iter_mut().enumerate() {
        *b = hw.read64(gits::BASER + 8 * n);
    }
    let plans = its::plan_tables(typer, &basers);
    let (mut devices, mut collections) = (0, 0);
    for (n, &reset) in basers.iter().enumerate() {
        let value = match plans.iter().find(|p| p.index == n) {
            Some(plan) => {
                let pa = alloc_for_its(plan.bytes as usize, 64 << 10)?;
                match plan.kind {
                    TableKind::Devices => devices = plan.entries,
                    TableKind::Collections => collections = plan.entries,
                }
                its::baser_value(plan, reset, pa)
            }
            // Anything else (vPE tables, unimplemented): not valid.
            None => 0,
        };
        hw.write64(gits::BASER + 8 * n, value);
        if value != 0 && hw.read64(gits::BASER + 8 * n) != value {
            log::warn!(
                "ITS at {base:#x}: GITS_BASER{n} kept {:#x} of {value:#x}",
                hw.read64(gits::BASER + 8 * n)
            );
        }
    }
    hw.queue = alloc_for_its(QUEUE_BYTES, 64 << 10)?;
    let cbaser = its::cbaser_value(hw.queue, QUEUE_BYTES as u64);
    hw.write64(gits::CBASER, cbaser);
    let kept = LocalRegisterCopy::<u64, GITS_CBASER::Register>::new(hw.read64(gits::CBASER));
    hw.clean = kept.read(GITS_CBASER::Shareability) == 0;
    hw.write64(gits::CWRITER, 0);
    let pta = LocalRegisterCopy::<u64, GITS_TYPER::Register>::new(typer).is_set(GITS_TYPER::PTA);
    log::debug!(
        "ITS at {base:#x}: GITS_TYPER {typer:#x}; Portcullis' device table {devices} entries, \
         collection table {collections}, command queue {QUEUE_BYTES} bytes at {:#x}",
        hw.queue
    );
    let emul = EmulatedIts::new(ItsConfig {
        typer,
        basers,
        devices,
        collections,
        targets: redist::targets(frames, pta),
        queue_slots: QUEUE_BYTES / 32,
        queue_cbaser: cbaser,
        max_polls: MAX_POLLS,
    });
    Some(Its {
        // The control frame (ITS_base); the translation frame above it stays the host's.
        frame: PhysRange::new(base, gits::TRANSLATION_FRAME)?,
        hw,
        emul,
    })
}

/// The host's address map is known: the DMA windows every GIC table is checked against.
pub fn set_policy(map: &AddressMap) {
    WINDOWS.call_once(|| Windows {
        normal: DmaWindow::for_mode(map, Mode::Normal),
        crash: DmaWindow::for_mode(map, Mode::Crash),
    });
}

fn window() -> &'static DmaWindow {
    static NOTHING: DmaWindow = DmaWindow::empty();
    match WINDOWS.get() {
        Some(w) if crate::host::in_crash_mode() => &w.crash,
        Some(w) => &w.normal,
        None => &NOTHING,
    }
}

/// Whether `ipa` is a page Portcullis mediates.
pub fn is_trapped(ipa: Ipa) -> bool {
    GIC.get().is_some_and(|g| {
        g.trapped
            .iter()
            .any(|r| r.contains(platform::addr::Pa(ipa.raw())))
    })
}

/// A host access to a trapped GIC page (`is_trapped(access.ipa)`).
pub fn access(frame: &mut TrapFrame, access: &MmioAccess) {
    let Some(gic) = GIC.get() else { return };
    let pa = access.ipa.raw();
    let value = access.store_value(&frame.x);
    for unit in &gic.its {
        let mut guard = unit.lock();
        let its = &mut *guard;
        if !its.frame.contains(platform::addr::Pa(pa)) {
            continue;
        }
        let offset = (pa - its.frame.start.raw()) as usize;
        if access.write {
            if let Some(note) = its.emul.write(
                offset,
                access.size_bytes,
                value,
                &HostRam,
                window(),
                &mut its.hw,
            ) {
                warn_limited(format_args!("ITS at {}: {note}", its.frame.start));
            }
        } else {
            let v = its.emul.read(offset, access.size_bytes, &mut its.hw);
            access.complete_load(&mut frame.x, v);
        }
        return;
    }
    let mut rd = gic.redist.lock();
    let Some(at) = rd.locate(pa) else { return };
    if access.write {
        if let Some(refusal) = rd.write(at, access.size_bytes, value, window(), &mut Mmio) {
            warn_limited(format_args!(
                "redistributor {} (RD_base {:#x}): {refusal}",
                at.index,
                rd.frames()[at.index].rd_base
            ));
        }
    } else {
        let v = rd.read(at, access.size_bytes, &mut Mmio);
        access.complete_load(&mut frame.x, v);
    }
}

/// At the fence: the ITS may only write ITTs of devices mapped from now on, and the LPI tables
/// the capture kernel keeps writing are the accepted ones of redistributors with EnableLPIs set,
/// never overlapping `forbidden` (Portcullis' memory, the report). Returns those tables; nothing
/// is logged here (the caller logs once the fence is complete).
pub fn enter_crash(forbidden: &[PhysRange]) -> (Vec<PhysRange>, Vec<PhysRange>) {
    let Some(gic) = GIC.get() else {
        return (Vec::new(), Vec::new());
    };
    for unit in &gic.its {
        unit.lock().emul.enter_crash();
    }
    let (keep, skipped) = gic.redist.lock().enter_crash(forbidden, &mut Mmio);
    *CRASH_TABLES.lock() = keep.clone();
    (keep, skipped)
}

/// The LPI tables kept writable at the fence (empty before it).
pub fn lpi_tables() -> Vec<PhysRange> {
    CRASH_TABLES.lock().clone()
}

/// Host-triggered warnings, within the rate limit every host-triggered line has.
fn warn_limited(args: core::fmt::Arguments<'_>) {
    crate::limited::limited!(Warn, "GIC mediation: {args}");
}
