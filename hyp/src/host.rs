//! The host: its stage 2, its device tree, and its CPUs coming and going through PSCI.

use crate::arch::head::{self, MAX_CPUS};
use crate::arch::vectors::{TrapFrame, enter_lower_el};
use crate::arch::{cpu, firmware};
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use log::LevelFilter;
use platform::addr::Ipa;
use platform::addr::PhysRange;
use platform::devtree::Platform;
use portcullis::boot::devices::{Decision, DeviceMap};
use portcullis::boot::layout::{Taken, TakenKind};
use portcullis::boot::{cmdline, host_tree, layout};
use portcullis::emul::{AccessDenied, HostMemory};
use portcullis::stage2::{self, Access, AddressMap, Mode, Stage2Table};
use portcullis::trap::cpus::{self, Arrival, CpuTable, HostEntry};
use portcullis::trap::psci::{self, code};
use spin::Once;

/// Portcullis' own options, from `/chosen/portcullis,bootargs`.
pub struct Options {
    pub log_level: LevelFilter,
    pub warnings: Vec<cmdline::OptionWarning>,
}

pub fn options(machine: &Platform) -> Options {
    let raw = machine.chosen.portcullis_bootargs.as_deref().unwrap_or("");
    let (parsed, warnings) = cmdline::parse_hyp_options(raw);
    Options {
        log_level: parsed.log_level.unwrap_or(LevelFilter::Info),
        warnings,
    }
}

/// Where and how a CPU enters the host.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub pc: u64,
    pub x0: u64,
}

/// Why the host cannot be booted at all.
#[derive(Debug)]
pub enum HostError {
    NoKernel,
    KernelHeader(layout::ImageError),
    KernelFootprint(PhysRange),
    KernelOverlapsPortcullis(PhysRange),
    Tree(host_tree::HostTreeError),
    TreePlacement(layout::PlacementError),
    Policy(stage2::PolicyError),
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoKernel => write!(f, "no host kernel: /chosen/portcullis,kernel is missing"),
            Self::KernelHeader(e) => write!(f, "the host kernel is not an arm64 Image: {e}"),
            Self::KernelFootprint(r) => write!(
                f,
                "the host kernel at {r} claims a size past the end of memory"
            ),
            Self::KernelOverlapsPortcullis(r) => {
                write!(
                    f,
                    "the host kernel's footprint {r} overlaps Portcullis' own memory"
                )
            }
            Self::Tree(e) => write!(f, "cannot write the host's device tree: {e}"),
            Self::TreePlacement(e) => write!(f, "no room for the host's device tree: {e}"),
            Self::Policy(e) => write!(f, "cannot build the host's stage 2: {e}"),
        }
    }
}

/// What every CPU needs to run the host; fixed once the boot CPU has prepared it.
struct Host {
    /// The normal-mode CPU stage 2 (VMID 1): the crash region execute-never (the kexec trap).
    stage2: Stage2Table,
    /// The crash-mode CPU stage 2 (VMID 3), prebuilt: the dump read-only, the crash region RWX.
    crash_stage2: Option<Stage2Table>,
    crash: Option<PhysRange>,
    /// The address map the policies are built from (for the crash-mode variant built at the trap).
    map: AddressMap,
    vtcr: u64,
    ram: Vec<PhysRange>,
    hyp: PhysRange,
    smmu: Option<PhysRange>,
    cpus: Vec<u64>,
}

static HOST: Once<Host> = Once::new();

/// Each CPU's power state and, while it starts, where it enters the host (lock-free).
static CPUS: CpuTable<MAX_CPUS> = CpuTable::new();

const MIB: u64 = 1 << 20;

/// Decides the host's memory map, writes its device tree and builds its stage 2. Returns where the
/// boot CPU enters the host.
pub fn prepare(
    machine: &Platform,
    hyp: PhysRange,
    incoming_dtb: PhysRange,
) -> Result<(Entry, AddressMap), HostError> {
    let kernel = machine.chosen.kernel.ok_or(HostError::NoKernel)?;
    // SAFETY: the kernel range comes from the tree and lies in RAM, mapped by the EL2 tables; only
    // its 64-byte header is read.
    let header_bytes = unsafe { &*(kernel.start.raw() as *const [u8; layout::ImageHeader::LEN]) };
    let header = layout::ImageHeader::parse(header_bytes).map_err(HostError::KernelHeader)?;
    let load = kernel.start;
    header
        .check_load_address(load)
        .map_err(HostError::KernelHeader)?;
    let footprint = header
        .footprint(load, kernel.size())
        .ok_or(HostError::KernelFootprint(kernel))?;
    if footprint.overlaps(&hyp) {
        return Err(HostError::KernelOverlapsPortcullis(footprint));
    }
    log::info!(
        "host kernel: {footprint} (text_offset {:#x})",
        header.text_offset
    );

    // The crash region: placed as the host asked, or none (with the reason on the console).
    let bootargs = machine.chosen.bootargs.as_deref().unwrap_or("");
    let mut taken = layout::platform_taken(machine);
    taken.push(Taken::new(TakenKind::Portcullis, hyp));
    taken.push(Taken::new(TakenKind::KernelImage, footprint));
    taken.push(Taken::new(TakenKind::IncomingDtb, incoming_dtb));
    let crash = match cmdline::parse_crashkernel(bootargs, layout::total_ram(&machine.memory)) {
        Ok(None) => None,
        Ok(Some(request)) => match layout::place_crash_region(&machine.memory, &taken, &request) {
            Ok(region) => {
                log::info!("crash region: {region} ({} MiB)", region.size() / MIB);
                Some(region)
            }
            Err(e) => {
                log::error!(
                    "crashkernel= cannot be honoured: {e}; booting the host without a crash region"
                );
                None
            }
        },
        Err(e) => {
            log::error!("crashkernel= is malformed: {e}; booting the host without a crash region");
            None
        }
    };
    if let Some(c) = crash {
        taken.push(Taken::new(TakenKind::CrashRegion, c));
    }
    // The fault report for the capture kernel; without a crash region there is nothing to report.
    let report = match crash.map(|_| layout::place_report(&machine.memory, &taken)) {
        Some(Ok(r)) => {
            taken.push(Taken::new(TakenKind::FaultReport, r));
            log::info!("fault report region: {r}");
            Some(r)
        }
        Some(Err(e)) => {
            log::error!(
                "no room for the fault report region: {e}; the crash will not be reported in memory"
            );
            None
        }
        None => None,
    };

    // The host's device tree, written over free host RAM (the incoming tree may be overwritten: it
    // has been read by now).
    // SAFETY: the incoming tree is in RAM, mapped, and not written while it is read.
    let incoming = unsafe {
        core::slice::from_raw_parts(
            incoming_dtb.start.raw() as *const u8,
            incoming_dtb.size() as usize,
        )
    };
    // Default-deny device map: what the host may touch directly, what it is kept away from.
    let devices = DeviceMap::decide(machine);
    log_device_map(&devices);
    let params = host_tree::HostTreeParams {
        portcullis: hyp,
        crash_region: crash,
        // The host drives the SMMU Portcullis emulates at the physical one's address.
        hide_smmu: false,
        fault_report: report,
        disable: devices.to_disable(),
    };
    let tree = host_tree::build_host_tree(incoming, &params).map_err(HostError::Tree)?;
    taken.retain(|t| t.kind != TakenKind::IncomingDtb);
    let tree_at = layout::place_dtb(&machine.memory, &taken, tree.len() as u64)
        .map_err(HostError::TreePlacement)?;
    // SAFETY: `tree_at` is host RAM outside every range in use (Portcullis, kernel, initrd, crash
    // region, reserved memory), mapped by the EL2 tables, and no other CPU runs yet.
    unsafe {
        core::ptr::copy_nonoverlapping(tree.as_ptr(), tree_at.start.raw() as *mut u8, tree.len())
    };
    log::info!(
        "host device tree: {} bytes at {}",
        tree.len(),
        tree_at.start
    );

    // The host's CPU stage 2.
    let (pa_field, pa_bits) = cpu::pa_range();
    let map = AddressMap {
        ram: machine.memory.clone(),
        hyp,
        crash,
        smmu: machine.smmu.as_ref().map(|s| s.regs),
        its_doorbells: crate::firewall::its_doorbells(machine),
        devices: devices.allowed,
        trapped: crate::gic_mediation::trapped(),
        report,
        ipa_bits: stage2::ipa_bits_for(machine.max_address.saturating_sub(1), pa_bits),
    };
    map.validate().map_err(HostError::Policy)?;
    // The crash region is execute-never: the capture kernel's first instruction fetch there is
    // the kexec event.
    let regions = stage2::cpu_policy(&map, Mode::Normal, true);
    let table = Stage2Table::build(&regions, map.ipa_bits, 1).map_err(HostError::Policy)?;
    let crash_table = match crash {
        Some(_) => Some(
            Stage2Table::build(
                &stage2::cpu_policy(&map, Mode::Crash, true),
                map.ipa_bits,
                3,
            )
            .map_err(HostError::Policy)?,
        ),
        None => None,
    };
    let vtcr = table.vtcr(pa_field, cpu::vmid16());
    log::info!(
        "host stage 2: {} IPA bits, VMID 1, {} regions, {} table pages; Portcullis' memory {hyp} unmapped",
        map.ipa_bits,
        regions.len(),
        table.table_pages()
    );
    HOST.call_once(|| Host {
        stage2: table,
        crash_stage2: crash_table,
        crash,
        map: map.clone(),
        vtcr,
        ram: machine.memory.clone(),
        hyp,
        smmu: map.smmu,
        cpus: machine.cpus.iter().map(|c| c.mpidr).collect(),
    });
    if let Some(boot) = tree_index(cpu::mpidr()) {
        BOOT_TREE_INDEX.store(boot, Ordering::Relaxed);
    }
    CPUS.booted(0);
    Ok((
        Entry {
            pc: load.raw(),
            x0: tree_at.start.raw(),
        },
        map,
    ))
}

/// The device map as a table on the console, one line per device.
fn log_device_map(map: &DeviceMap) {
    log::info!(
        "device map: {} allowed, {} withheld, {} mediated; anything else unmapped (default-deny)",
        map.count(Decision::Allow),
        map.count(Decision::Withhold),
        map.count(Decision::Mediated)
    );
    log::info!(
        "  {:<36} {:<8} {:<44} reason",
        "device",
        "decision",
        "ranges"
    );
    for entry in &map.entries {
        log::info!("  {entry}");
    }
    for c in &map.conflicts {
        log::warn!(
            "device map: {} shares {} with withheld {}: unmapped for the host (withheld wins)",
            c.allowed,
            c.pages,
            c.withheld
        );
    }
}

fn host() -> &'static Host {
    HOST.get()
        .unwrap_or_else(|| panic!("the host is entered before it was prepared"))
}

/// Enters the host on this CPU: EL1h, interrupts masked, MMU off, as the boot protocol says.
pub fn enter(cpu_index: usize, entry: Entry) -> ! {
    let h = host();
    cpu::configure_for_host(cpu::GuestStage2 {
        vtcr: h.vtcr,
        vttbr: live_stage2().vttbr(),
    });
    let mut frame = TrapFrame::default();
    frame.x[0] = entry.x0;
    frame.elr = entry.pc;
    frame.spsr = SPSR_EL1H_MASKED;
    // SAFETY: the stack of `cpu_index` is inside the image; the frame goes at its top.
    unsafe {
        let top = head::stack_top(cpu_index);
        let slot = (top - core::mem::size_of::<TrapFrame>() as u64) as *mut TrapFrame;
        slot.write(frame);
        enter_lower_el(slot)
    }
}

/// EL1h with D, A, I and F masked.
const SPSR_EL1H_MASKED: u64 = 0x3c5;

/// The device-tree index of the CPU with affinity `mpidr`.
fn tree_index(mpidr: u64) -> Option<usize> {
    host()
        .cpus
        .iter()
        .position(|&m| m == mpidr & 0xff_00ff_ffff)
}

/// The device-tree index of the boot CPU.
static BOOT_TREE_INDEX: AtomicUsize = AtomicUsize::new(0);

/// The Portcullis CPU index (EL2 stack, TPIDR_EL2, state in `CPUS`) of the CPU with affinity
/// `mpidr` (`portcullis::trap::cpus::cpu_slot`).
fn cpu_slot(mpidr: u64) -> Option<usize> {
    let i = tree_index(mpidr)?;
    Some(cpus::cpu_slot(i, BOOT_TREE_INDEX.load(Ordering::Relaxed)))
}

/// A secondary CPU, just started at Portcullis' entry: enter the host where it asked. A CPU with
/// no CPU_ON pending (see `portcullis::trap::cpus`: only firmware starting a CPU unasked can do
/// that) is parked.
pub fn secondary_start(index: usize) -> ! {
    match CPUS.arrive(index) {
        Arrival::Enter(e) => {
            log::debug!(
                "CPU {index} (MPIDR {:#x}) entering the host at {:#x}",
                cpu::mpidr(),
                e.pc
            );
            enter(
                index,
                Entry {
                    pc: e.pc,
                    x0: e.context,
                },
            )
        }
        Arrival::Unexpected(state) => {
            log::error!(
                "CPU {index} (MPIDR {:#x}) started with no CPU_ON pending (state {state:?}); parking it",
                cpu::mpidr()
            );
            firmware::call(psci::PsciFunction::CpuOff.smc32_id(), [0; 3]);
            loop {
                aarch64_cpu::asm::wfe();
            }
        }
    }
}

/// The host's PSCI CPU_ON: checks the request, records where the CPU should enter the host (if it
/// is off), and has firmware start it at Portcullis' own entry.
pub fn cpu_on(target: u64, entry: u64, context: u64) -> u64 {
    let h = host();
    let Some(index) = cpu_slot(target) else {
        return psci::x0(code::INVALID_PARAMETERS);
    };
    let in_ram = h.ram.iter().any(|r| r.contains(platform::addr::Pa(entry)));
    if !in_ram || h.hyp.contains(platform::addr::Pa(entry)) {
        return psci::x0(code::INVALID_ADDRESS);
    }
    if let Err(code) = CPUS.request_on(index, HostEntry { pc: entry, context }) {
        return psci::x0(code);
    }
    let secondary = head::secondary_entry as *const () as u64;
    let r = firmware::cpu_on(target, secondary, index as u64);
    if r != i64::from(code::SUCCESS) {
        CPUS.firmware_refused(index);
    }
    r as u64
}

/// The host's PSCI CPU_OFF on this CPU: marked off first, then firmware; returns only if firmware
/// refused (x0..x3 for the host).
pub fn cpu_off(function_id: u32) -> [u64; 4] {
    let me = cpu_slot(cpu::mpidr());
    if let Some(i) = me {
        CPUS.turning_off(i);
    }
    let r = firmware::call(function_id, [0; 3]);
    if let Some(i) = me {
        CPUS.still_on(i);
    }
    r
}

/// The base of the SMMU's register frame (only called for an address inside it).
pub fn smmu_base() -> u64 {
    host().smmu.map_or(0, |r| r.start.raw())
}

/// Whether `ipa` falls in the SMMU's register frame, which Portcullis emulates.
pub fn is_emulated_smmu(ipa: platform::addr::Ipa) -> bool {
    host()
        .smmu
        .is_some_and(|r| r.contains(platform::addr::Pa(ipa.raw())))
}

/// The host's memory as Portcullis touches it on the emulated SMMU's behalf: every byte checked
/// against the host's live CPU stage 2 before it is read or written.
pub struct HostRam;

impl HostRam {
    /// Checks `[ipa, ipa + len)` page by page: every page mapped as normal memory, readable (and
    /// writable if `write`) for the host. Returns the physical address of `ipa`.
    fn check(ipa: Ipa, len: usize, write: bool) -> Result<u64, AccessDenied> {
        let denied = Err(AccessDenied { ipa });
        let Some(end) = ipa.raw().checked_add(len as u64) else {
            return denied;
        };
        let table = live_stage2();
        let mut page = ipa.raw() & !0xfff;
        while page < end {
            match table.translate(Ipa(page)) {
                Some((
                    pa,
                    Access::NormalMemory {
                        read: true,
                        write: w,
                        ..
                    },
                )) if pa.raw() == page && (w || !write) => {}
                _ => return denied,
            }
            page += 0x1000;
        }
        Ok(ipa.raw())
    }
}

impl HostMemory for HostRam {
    fn read(&self, ipa: Ipa, buf: &mut [u8]) -> Result<(), AccessDenied> {
        let pa = Self::check(ipa, buf.len(), false)?;
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: the whole range is host RAM the host's stage 2 maps readable (checked above),
            // identity-mapped in Portcullis' EL2 tables; a byte-wise volatile copy tolerates the
            // host changing it concurrently.
            *b = unsafe { ((pa + i as u64) as *const u8).read_volatile() };
        }
        Ok(())
    }

    fn write(&mut self, ipa: Ipa, bytes: &[u8]) -> Result<(), AccessDenied> {
        let pa = Self::check(ipa, bytes.len(), true)?;
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: as for `read`, with the range writable for the host.
            unsafe { ((pa + i as u64) as *mut u8).write_volatile(*b) };
        }
        Ok(())
    }
}

/// Whether Portcullis has raised the fence (crash mode). Set once, never cleared.
static CRASH_MODE: AtomicBool = AtomicBool::new(false);

pub fn in_crash_mode() -> bool {
    CRASH_MODE.load(Ordering::Acquire)
}

/// The crash-mode CPU stage 2 with the dead kernel's GIC LPI tables writable, built at the trap.
static CRASH_WITH_GIC: Once<Stage2Table> = Once::new();

/// The CPU stage 2 of the current mode.
fn live_stage2() -> &'static Stage2Table {
    let h = host();
    if !in_crash_mode() {
        return &h.stage2;
    }
    match (CRASH_WITH_GIC.get(), &h.crash_stage2) {
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) => &h.stage2,
    }
}

/// The crash region, if the host has one.
pub fn crash_region() -> Option<PhysRange> {
    host().crash
}

/// Enters crash mode for the host's CPUs: from now on every CPU runs the host under the crash-mode
/// stage 2. This CPU switches now; the others switch on their next trap into Portcullis (the
/// crashed kernel has stopped them; a capture kernel starting CPUs enters them in crash mode).
pub fn switch_to_crash_mode() {
    let h = host();
    if h.crash_stage2.is_none() {
        panic!("crash mode requested without a crash region");
    }
    // The dead kernel's LPI tables, as Portcullis accepted them (never as the hardware says).
    let forbidden: Vec<PhysRange> = [Some(h.hyp), h.map.report].into_iter().flatten().collect();
    let (lpi, skipped) = crate::gic_mediation::enter_crash(&forbidden);
    for r in &skipped {
        log::error!(
            "crash mode: GIC LPI table {r} overlaps Portcullis or the report; not writable"
        );
    }
    if !lpi.is_empty() {
        let regions = stage2::with_writable(&stage2::cpu_policy(&h.map, Mode::Crash, true), &lpi);
        match Stage2Table::build(&regions, h.map.ipa_bits, 3) {
            Ok(t) => {
                for r in &lpi {
                    log::info!(
                        "crash mode: GIC LPI table {r} stays writable for the capture kernel"
                    );
                }
                CRASH_WITH_GIC.call_once(|| t);
            }
            Err(e) => log::error!("crash mode without writable GIC LPI tables: {e}"),
        }
    }
    CRASH_MODE.store(true, Ordering::Release);
    ensure_live_stage2();
}

/// Makes this CPU's VTTBR_EL2 the live mode's (a no-op when it already is).
pub fn ensure_live_stage2() {
    let want = live_stage2().vttbr();
    if cpu::vttbr() != want {
        cpu::set_vttbr(want);
    }
}
