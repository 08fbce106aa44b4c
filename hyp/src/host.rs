//! The host: its stage 2, its device tree, and its CPUs coming and going through PSCI.

use crate::arch::head::{self, MAX_CPUS};
use crate::arch::vectors::{TrapFrame, enter_lower_el};
use crate::arch::{cpu, firmware};
use crate::window;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use log::LevelFilter;
use platform::addr::Ipa;
use platform::addr::PhysRange;
use platform::devtree::Platform;
use portcullis::boot::devices::{Decision, DeviceMap};
use portcullis::boot::layout::TakenKind;
use portcullis::boot::{address_map, cmdline, host_tree, layout};
use portcullis::fence::profile::Checkpoint;
use portcullis::stage2::{self, AddressMap, Mode, Stage2Table, TopSwap};
use portcullis::trap::cpus::{self, Arrival, CpuTable, HostEntry};
use portcullis::trap::psci::{self, code};
use spin::Once;

/// Portcullis' own options, from `/chosen/portcullis,bootargs`.
pub struct Options {
    pub log_level: LevelFilter,
    /// The counters line at each PSCI CPU_OFF too (`counters=cpu-off`).
    pub counters_at_cpu_off: bool,
    pub warnings: Vec<cmdline::OptionWarning>,
}

pub fn options(machine: &Platform) -> Options {
    let raw = machine.chosen.portcullis_bootargs.as_deref().unwrap_or("");
    let (parsed, warnings) = cmdline::parse_hyp_options(raw);
    Options {
        log_level: parsed.log_level.unwrap_or(LevelFilter::Info),
        counters_at_cpu_off: parsed.counters_at_cpu_off.unwrap_or(false),
        warnings,
    }
}

/// Where and how a CPU enters the host.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub pc: u64,
    pub x0: u64,
    /// Requested by the capture kernel (after the fence): the CPU enters under the crash-mode
    /// stage 2. A CPU the dead kernel asked for before the fence and that arrives after it enters
    /// under the dead CPUs' policy.
    pub capture: bool,
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
    /// The host's CPU stage 2 (VMID 1), every CPU's until the fence: the normal-mode policy (the
    /// crash region execute-never: the kexec trap). The fence swaps its top-level entries to
    /// `dead_stage2`'s subtrees in place, for every CPU at once: the dead kernel's CPUs write
    /// nothing from then on.
    stage2: Stage2Table,
    /// The dead kernel's CPUs' policy after the fence (`stage2::dead_cpu_policy`), prebuilt: only
    /// the source of the subtrees the fence swaps in.
    dead_stage2: Option<Stage2Table>,
    /// The crash-mode CPU stage 2 (VMID 3), prebuilt: the dump read-only, the crash region RWX.
    /// The CPU that took the kexec trap switches to it at the fence, and the CPUs the capture
    /// kernel starts enter with it.
    crash_stage2: Option<Stage2Table>,
    /// The address map the policies are built from (for the crash-mode variant built at the
    /// trap), and where RAM, Portcullis, the crash region and the SMMU frame are.
    map: AddressMap,
    vtcr: u64,
    cpus: Vec<u64>,
}

static HOST: Once<Host> = Once::new();

/// Each CPU's power state and, while it starts, where it enters the host (lock-free).
static CPUS: CpuTable<MAX_CPUS> = CpuTable::new();

/// VMIDs of the host's CPU stage 2s: every CPU's until the fence (then the dead kernel's CPUs'),
/// and the capture kernel's CPUs'. (The physical SMMU's stage 2s are VMID 2 and 4.)
const VMID_HOST: u16 = 1;
const VMID_CAPTURE: u16 = 3;

const MIB: u64 = 1 << 20;

/// Decides the host's memory map, writes its device tree and builds its stage 2. Returns where the
/// boot CPU enters the host.
/// `trapped`: the GIC pages Portcullis mediates (`gic_mediation::init`), unmapped for the host.
pub fn prepare(
    machine: &Platform,
    hyp: PhysRange,
    incoming_dtb: PhysRange,
    trapped: Vec<PhysRange>,
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
    log::debug!(
        "host kernel: {footprint} (text_offset {:#x})",
        header.text_offset
    );

    crate::boot_clock::mark("kernel");
    // The crash region: placed as the host asked, or none (with the reason on the console).
    let address_map::Placement {
        placed,
        mut taken,
        crash_refused,
        report_refused,
    } = address_map::place(machine, hyp, footprint, incoming_dtb);
    let (crash, report) = (placed.crash, placed.report);
    match crash_refused {
        Some(address_map::NoCrashRegion::CannotHonour(e)) => log::error!(
            "crashkernel= cannot be honoured: {e}; booting the host without a crash region"
        ),
        Some(address_map::NoCrashRegion::Malformed(e)) => {
            log::error!("crashkernel= is malformed: {e}; booting the host without a crash region")
        }
        None => {}
    }
    if let Some(region) = crash {
        log::info!("crash region: {region} ({} MiB)", region.size() / MIB);
    }
    if let Some(e) = report_refused {
        log::error!(
            "no room for the fault report region: {e}; the crash will not be reported in memory"
        );
    }
    if let Some(r) = report {
        log::info!("fault report region: {r}");
    }

    // The host's device tree, written over free host RAM (the incoming tree may be overwritten: it
    // has been read by now).
    // SAFETY: the incoming tree is in RAM, mapped, and not written while it is read.
    let incoming = unsafe {
        core::slice::from_raw_parts(
            incoming_dtb.start.raw() as *const u8,
            incoming_dtb.size() as usize,
        )
    };
    crate::boot_clock::mark("place");
    // Default-deny device map: what the host may touch directly, what it is kept away from.
    let devices = DeviceMap::decide(machine);
    log_device_map(&devices);
    crate::boot_clock::mark("devmap");
    let params = host_tree::HostTreeParams {
        portcullis: hyp,
        crash_region: crash,
        // The host drives the SMMU Portcullis emulates at the physical one's address.
        hide_smmu: false,
        fault_report: report,
        disable: devices.to_disable(),
    };
    let tree =
        host_tree::build_host_tree_from(incoming, machine, &params).map_err(HostError::Tree)?;
    crate::boot_clock::mark("host-tree");
    taken.retain(|t| t.kind != TakenKind::IncomingDtb);
    let tree_at = layout::place_dtb(&machine.memory, &taken, tree.len() as u64)
        .map_err(HostError::TreePlacement)?;
    // SAFETY: `tree_at` is host RAM outside every range in use (Portcullis, kernel, initrd, crash
    // region, reserved memory), mapped by the EL2 tables, and no other CPU runs yet.
    unsafe {
        core::ptr::copy_nonoverlapping(tree.as_ptr(), tree_at.start.raw() as *mut u8, tree.len())
    };
    log::debug!(
        "host device tree: {} bytes at {}",
        tree.len(),
        tree_at.start
    );

    crate::boot_clock::mark("tree-copy");
    // The host's CPU stage 2.
    let (pa_field, pa_bits) = cpu::pa_range();
    let map = address_map::assemble(machine, &devices, &placed, trapped, pa_bits)
        .map_err(HostError::Policy)?;
    // The crash region is execute-never: the capture kernel's first instruction fetch there is
    // the kexec event.
    let regions = stage2::cpu_policy(&map, Mode::Normal, true);
    let ram = map.ram.iter().map(|r| r.size()).sum();
    let table = Stage2Table::build_with(&regions, map.ipa_bits, VMID_HOST, stage2::cpu_leaves(ram))
        .map_err(HostError::Policy)?;
    let (dead_table, crash_table) = match crash {
        Some(_) => (
            Some(
                Stage2Table::build(&stage2::dead_cpu_policy(&map), map.ipa_bits, VMID_HOST)
                    .map_err(HostError::Policy)?,
            ),
            Some(
                Stage2Table::build(
                    &stage2::cpu_policy(&map, Mode::Crash, true),
                    map.ipa_bits,
                    VMID_CAPTURE,
                )
                .map_err(HostError::Policy)?,
            ),
        ),
        None => (None, None),
    };
    crate::boot_clock::mark("host-s2");
    let vtcr = table.vtcr(pa_field, cpu::vmid16());
    log::debug!(
        "host stage 2: {} IPA bits, VMID 1, {} regions, {} table pages; Portcullis' memory {hyp} unmapped",
        map.ipa_bits,
        regions.len(),
        table.table_pages()
    );
    HOST.call_once(|| Host {
        stage2: table,
        dead_stage2: dead_table,
        crash_stage2: crash_table,
        map: map.clone(),
        vtcr,
        cpus: machine.cpus.iter().map(|c| c.mpidr).collect(),
    });
    if let Some(boot) = tree_index(cpu::mpidr()) {
        BOOT_TREE_INDEX.store(boot, Ordering::Relaxed);
    }
    CPUS.booted(0);
    let h = host();
    if let Some(dead) = &h.dead_stage2 {
        let swap = h.stage2.swap_plan(dead).map_err(HostError::Policy)?;
        log::debug!(
            "fence armed (CPU side): {} top-level entries of the host stage 2 to swap to crash mode",
            swap.len()
        );
        CRASH_SWAP.call_once(|| swap);
    }
    Ok((
        Entry {
            pc: load.raw(),
            x0: tree_at.start.raw(),
            capture: false,
        },
        map,
    ))
}

/// The device map as a table on the console, one line per device.
fn log_device_map(map: &DeviceMap) {
    log::debug!(
        "device map: {} allowed, {} withheld, {} mediated; anything else unmapped (default-deny)",
        map.count(Decision::Allow),
        map.count(Decision::Withhold),
        map.count(Decision::Mediated)
    );
    // The table is debug: at info it was most of the boot's console output, and the console
    // (a trap into the UART model per byte under QEMU) most of the boot's time.
    log::debug!(
        "  {:<36} {:<8} {:<44} reason",
        "device",
        "decision",
        "ranges"
    );
    for entry in &map.entries {
        log::debug!("  {entry}");
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
    // A CPU the capture kernel started (after the fence; the dead kernel's CPUs cannot start any
    // then: see `cpu_on`) runs under the crash-mode stage 2; any other under the host's.
    let vttbr = match (&h.crash_stage2, entry.capture) {
        (Some(capture), true) => capture.vttbr(),
        _ => h.stage2.vttbr(),
    };
    cpu::configure_for_host(cpu::GuestStage2 {
        vtcr: h.vtcr,
        vttbr,
    });
    if entry.capture {
        cpu::capture_kernel_traps();
    }
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
        .position(|&m| m == mpidr & cpus::MPIDR_AFFINITY)
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
                    capture: e.capture,
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
    if in_crash_mode() && !is_capture_cpu() {
        // A CPU of the dead kernel still running after the fence: it may not start CPUs, which
        // would enter under the capture kernel's stage 2.
        return psci::x0(code::DENIED);
    }
    let Some(index) = cpu_slot(target) else {
        return psci::x0(code::INVALID_PARAMETERS);
    };
    if !cpus::entry_allowed(&h.map.ram, h.map.hyp, entry) {
        return psci::x0(code::INVALID_ADDRESS);
    }
    let request = HostEntry {
        pc: entry,
        context,
        capture: in_crash_mode(),
    };
    if let Err(code) = CPUS.request_on(index, request) {
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
    host().map.smmu.map_or(0, |r| r.start.raw())
}

/// Whether `ipa` falls in the SMMU's register frame, which Portcullis emulates.
pub fn is_emulated_smmu(ipa: platform::addr::Ipa) -> bool {
    host()
        .map
        .smmu
        .is_some_and(|r| r.contains(platform::addr::Pa(ipa.raw())))
}

/// Whether Portcullis has raised the fence (crash mode). Set once, never cleared.
static CRASH_MODE: AtomicBool = AtomicBool::new(false);

pub fn in_crash_mode() -> bool {
    CRASH_MODE.load(Ordering::Acquire)
}

/// The top-level stores that turn the host's stage 2 into the crash-mode policy, planned at boot.
static CRASH_SWAP: Once<TopSwap> = Once::new();

/// Odd while a break-before-make of the host's stage 2 is under way (between the break and the
/// make some host RAM is unmapped for an instant): a CPU faulting then waits and retries.
static SWAP_SEQ: AtomicU32 = AtomicU32::new(0);

/// The counter when the last swap completed: a fault that reaches Portcullis well after it is not
/// the swap's (so a fault Portcullis cannot explain is never retried for ever).
static SWAP_DONE_AT: AtomicU64 = AtomicU64::new(0);

/// The CPU stage 2 this CPU runs the host under: the capture kernel's after the fence for the
/// CPU that took the kexec trap and those the capture kernel started; the host's (in normal mode,
/// or swapped in place to the dead CPUs' policy) for every other.
pub fn live_stage2() -> &'static Stage2Table {
    let h = host();
    match &h.crash_stage2 {
        Some(capture) if in_crash_mode() && cpu::vttbr() == capture.vttbr() => capture,
        _ => &h.stage2,
    }
}

/// Whether this CPU is one of the dead kernel's, still running after the fence (bound by the
/// frozen stage 2; see `cut_cpu`).
pub fn is_dead_cpu() -> bool {
    in_crash_mode() && !is_capture_cpu()
}

/// Whether this CPU runs the capture kernel (after the fence).
fn is_capture_cpu() -> bool {
    host()
        .crash_stage2
        .as_ref()
        .is_some_and(|c| cpu::vttbr() == c.vttbr())
}

/// Replaces top-level entries of the live host stage 2 with `swap`'s, for every CPU at once:
/// 1. break: an invalid descriptor over every entry that changes and is valid;
/// 2. `DSB ISH`, `TLBI VMALLS12E1IS` (the host's VMID, broadcast to the Inner Shareable domain),
///    `DSB ISH`: no PE holds a TLB or walk-cache entry from a removed descriptor;
/// 3. make: the new descriptors; `DSB ISH`, `ISB`.
///
/// This is the break-before-make sequence of the ARM ARM (DDI 0487, "Using break-before-make when
/// updating translation table entries"): a table descriptor is replaced by one pointing at other
/// tables, so the old one must be invalid and invalidated from every TLB before the new one is
/// written, else a PE could hold both and use either (a TLB conflict, or the old policy). A host
/// access in between faults at stage 2 (translation fault) and is retried ([`retry_stage2_fault`]).
/// No lock, no allocation, no log. Returns the number of descriptor stores.
/// `table` must be the one this CPU's `VTTBR_EL2` names (the TLBI is for its VMID).
fn swap_live(table: &Stage2Table, swap: &TopSwap) -> usize {
    SWAP_SEQ.fetch_add(1, Ordering::AcqRel);
    let broken = table.break_top(swap);
    window::mark(Checkpoint::CpuBroken);
    cpu::stage2_break_broadcast();
    window::mark(Checkpoint::CpuInvalidated);
    let made = table.make_top(swap);
    cpu::stage2_publish();
    window::mark(Checkpoint::CpuMade);
    SWAP_DONE_AT.store(cpu::counter(), Ordering::Release);
    SWAP_SEQ.fetch_add(1, Ordering::AcqRel);
    broken + made
}

/// A host access that faulted at stage 2 while, or just after, the host's stage 2 was swapped:
/// waits for a swap under way to finish, then says whether the access is allowed now (the live
/// table maps `ipa` with `write` / `exec` permission). If so the caller resumes the host at the
/// same instruction; if not, the fault is the host's.
pub fn retry_stage2_fault(ipa: Ipa, write: bool, exec: bool) -> bool {
    if SWAP_SEQ.load(Ordering::Acquire) == 0 {
        return false;
    }
    while SWAP_SEQ.load(Ordering::Acquire) % 2 == 1 {
        core::hint::spin_loop();
    }
    // A fault taken in the swap's window reaches Portcullis within a few milliseconds of it, even
    // under an emulator; anything later is the host's own.
    let since = cpu::counter().wrapping_sub(SWAP_DONE_AT.load(Ordering::Acquire));
    if since > cpu::counter_hz() / 10 {
        return false;
    }
    live_stage2().permits(ipa, write, exec)
}

/// Step 1 of the CPU side of the fence, on the CPU that took the kexec trap (under the host's
/// stage 2, VMID 1): the host's stage 2 becomes the dead CPUs' policy for every CPU at one instant
/// (see [`swap_live`]), whether or not a CPU ever traps again; then this CPU, which carries on into
/// the capture kernel, moves to the crash-mode stage 2 (VMID 3, never used before: nothing of it is
/// cached anywhere). Nothing slow: the stores were planned at boot. Returns the descriptor stores.
pub fn cut_cpu() -> usize {
    let h = host();
    let stores = CRASH_SWAP.get().map_or(0, |s| swap_live(&h.stage2, s));
    if let Some(capture) = &h.crash_stage2 {
        cpu::set_vttbr_fresh(capture.vttbr());
    }
    CRASH_MODE.store(true, Ordering::Release);
    stores
}

/// The crash region, if the host has one.
pub fn crash_region() -> Option<PhysRange> {
    host().map.crash
}

/// What no table of the dead kernel's may make writable in crash mode (see
/// `portcullis::boot::address_map::never_writable`).
pub fn never_writable() -> Vec<PhysRange> {
    address_map::never_writable(&host().map)
}

/// Step 2 of the CPU side, after the fence, on the CPU that took the kexec trap (the slow part:
/// it allocates, logs): the crash-mode policy with `writable` (the GIC LPI tables the capture
/// kernel keeps using, as GIC mediation accepted them, never as the hardware says) writable is
/// built and swapped into the capture kernel's stage 2 in the same way as the fence's. `skipped`:
/// the tables refused because they overlap [`never_writable`].
pub fn finish_crash_mode(writable: &[PhysRange], skipped: &[PhysRange]) {
    let h = host();
    let Some(capture) = &h.crash_stage2 else {
        panic!("crash mode requested without a crash region");
    };
    for r in skipped {
        log::error!(
            "crash mode: GIC LPI table {r} overlaps Portcullis or the report; not writable"
        );
    }
    if writable.is_empty() {
        return;
    }
    let regions = stage2::with_writable(&stage2::cpu_policy(&h.map, Mode::Crash, true), writable);
    let table = match Stage2Table::build(&regions, h.map.ipa_bits, VMID_CAPTURE) {
        Ok(t) => t,
        Err(e) => {
            log::error!("crash mode without writable GIC LPI tables: {e}");
            return;
        }
    };
    // Walked from the live root from now on: it lives for ever.
    let table: &'static Stage2Table = alloc::boxed::Box::leak(alloc::boxed::Box::new(table));
    match capture.swap_plan(table) {
        Ok(swap) => {
            let stores = swap_live(capture, &swap);
            for r in writable {
                log::info!("crash mode: GIC LPI table {r} stays writable for the capture kernel");
            }
            log::info!("crash mode: {stores} descriptor stores for the writable ranges");
        }
        Err(e) => log::error!("crash mode without writable GIC LPI tables: {e}"),
    }
}
