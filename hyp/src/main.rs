//! The Portcullis image: the thin, architecture-specific layer over the portable core.
//!
//! `primary_main` runs once on the boot CPU: it takes the machine (its own page tables, heap,
//! console), reads the device tree, decides the host's memory map with the portable core, builds the
//! host's stage 2 and device tree, and enters the host at EL1. From then on Portcullis runs only when
//! the host traps (`dispatch::handle_trap`).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod arch;
#[cfg(target_os = "none")]
mod boot_clock;
#[cfg(target_os = "none")]
mod crash;
#[cfg(target_os = "none")]
mod dispatch;
#[cfg(target_os = "none")]
mod firewall;
#[cfg(target_os = "none")]
mod gic_mediation;
#[cfg(target_os = "none")]
mod host;
#[cfg(target_os = "none")]
mod host_ram;
#[cfg(target_os = "none")]
mod limited;
#[cfg(all(target_os = "none", feature = "test-hooks"))]
mod test_hooks;
#[cfg(target_os = "none")]
mod window;

#[cfg(target_os = "none")]
mod image {
    use crate::arch::{console, cpu, firmware, head, mmu};
    use crate::{boot_clock, firewall, gic_mediation, host};
    use buddy_system_allocator::Heap;
    use core::alloc::{GlobalAlloc, Layout};
    use core::ptr::{self, NonNull};
    use platform::addr::PhysRange;
    use spin::mutex::TicketMutex;

    /// The buddy heap and the room it grows into: `[next, limit)` is not in the heap yet.
    struct Growing {
        heap: Heap<32>,
        next: u64,
        limit: u64,
    }

    /// The buddy heap behind a ticket lock: every CPU allocating on a trap path gets its turn.
    /// It starts empty and takes memory from the image's heap room when an allocation needs it
    /// (`portcullis::boot::heap`), up to a limit decided at boot from the machine.
    struct TicketHeap(TicketMutex<Growing>);

    // SAFETY: allocation and deallocation are serialised by the lock and delegated to the buddy
    // allocator, which hands out non-overlapping blocks of at least the requested layout; the
    // memory it is given is the image's heap room, each byte added once.
    unsafe impl GlobalAlloc for TicketHeap {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let mut g = self.0.lock();
            loop {
                if let Ok(p) = g.heap.alloc(layout) {
                    return p.as_ptr();
                }
                let Some(end) = portcullis::boot::heap::grow_step(
                    g.next,
                    g.limit,
                    layout.size() as u64,
                    layout.align() as u64,
                ) else {
                    return ptr::null_mut();
                };
                let start = g.next;
                // SAFETY: `[start, end)` is heap room (the linker script's `.heap`, below the
                // limit), never added before: `next` only grows.
                unsafe { g.heap.add_to_heap(start as usize, end as usize) };
                g.next = end;
            }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: the caller's layout, passed on.
            let p = unsafe { self.alloc(layout) };
            if !p.is_null() {
                // SAFETY: a block of `layout.size()` bytes just given out, in the heap room:
                // RAM, mapped Normal by the EL2 tables (the heap is empty until the MMU is on).
                unsafe { crate::arch::cache::zero(p, layout.size()) };
            }
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            if let Some(p) = NonNull::new(ptr) {
                // SAFETY: the caller returns a block this allocator gave out, with its layout.
                unsafe { self.0.lock().heap.dealloc(p, layout) }
            }
        }
    }

    #[global_allocator]
    static HEAP: TicketHeap = TicketHeap(TicketMutex::new(Growing {
        heap: Heap::empty(),
        next: 0,
        limit: 0,
    }));

    fn symbol(s: &u8) -> u64 {
        s as *const u8 as u64
    }

    /// Reads the `totalsize` word of a flattened device tree header with a single aligned load.
    fn dtb_size(dtb: u64) -> u64 {
        if dtb == 0 || !dtb.is_multiple_of(8) {
            return 0;
        }
        // SAFETY: the boot protocol places a device tree at x0; its header's second word is its size.
        let raw = unsafe { ((dtb + 4) as *const u32).read_volatile() };
        u64::from(u32::from_be(raw))
    }

    #[unsafe(no_mangle)]
    extern "C" fn primary_main(dtb: u64, _load_base: u64, entry_counter: u64) -> ! {
        boot_clock::mark("head");
        // SAFETY: linker-script symbols; only their addresses are used.
        let (image, text_end, rodata_end, heap) = unsafe {
            (
                PhysRange::from_bounds(symbol(&head::__image_start), symbol(&head::__image_end)),
                symbol(&head::__text_end),
                symbol(&head::__rodata_end),
                PhysRange::from_bounds(symbol(&head::__heap_start), symbol(&head::__heap_end)),
            )
        };
        let dtb_len = dtb_size(dtb).clamp(0x40, 2 << 20);
        let dtb_range = PhysRange::from_bounds(dtb, dtb + dtb_len);
        // SAFETY: primary CPU, MMU off, nothing else running; image and tree are in RAM.
        unsafe { mmu::enable_boot_tables(&[image, dtb_range]) };
        boot_clock::mark("mmu");
        {
            // The heap room is reserved by the linker script for this allocator alone.
            let mut g = HEAP.0.lock();
            g.next = heap.start.raw();
            g.limit = heap.end.raw();
        }

        // SAFETY: the tree lies at `dtb` with the size its header gives, in RAM mapped by the boot
        // tables, and nothing writes to it while Portcullis reads it.
        let blob = unsafe { core::slice::from_raw_parts(dtb as *const u8, dtb_len as usize) };
        let machine = match platform::devtree::Platform::parse(blob) {
            Ok(p) => p,
            // No console without a tree: nothing to report to. Park the CPU.
            Err(_) => halt(),
        };
        boot_clock::mark("parse");
        // An unknown UART (or none) gets no console: Portcullis logs to nothing.
        if let Ok(device) = platform::console::from_uart(machine.uart.as_ref()) {
            // SAFETY: the boot tables map every non-RAM block as Device memory; the UART is
            // Portcullis' console from now on (the host shares it: both only ever write whole bytes).
            unsafe { console::init(device) };
        }
        let options = host::options(&machine);
        console::init_logger(options.log_level);
        portcullis::diag::counters::set_line_at_cpu_off(options.counters_at_cpu_off);
        // SAFETY: a linker-script symbol; only its address is used.
        let file_end = unsafe { symbol(&head::__data_end) };
        log::info!(
            "Portcullis {} at EL2: image {image}, device tree at {dtb:#x} ({dtb_len} bytes)",
            env!("CARGO_PKG_VERSION")
        );
        log::debug!(
            "board: {:?} ({}; root compatible {:?})",
            platform::boards::Board::identify(&machine.compatible),
            machine.model.as_deref().unwrap_or("no model"),
            machine.compatible
        );
        for w in &options.warnings {
            log::warn!("portcullis,bootargs: {w}");
        }
        boot_clock::mark("console");

        let mut devices = alloc::vec::Vec::new();
        if let Some(uart) = &machine.uart {
            devices.push(uart.base);
        }
        if let Some(smmu) = &machine.smmu {
            devices.push(smmu.regs);
        }
        // Each PCI root bus's configuration space: the firewall finds the devices there.
        devices.extend(
            machine
                .pci
                .iter()
                .filter_map(portcullis::boot::pci_scan::root_bus_ecam),
        );
        // GIC mediation: the distributor (GICD_TYPER), redistributors and ITSs.
        if let Some(gic) = &machine.gic {
            devices.push(gic.distributor);
            devices.extend(gic.redistributors.iter().copied());
            devices.extend(gic.its.iter().copied());
        }
        let el2_map = mmu::install_final_tables(&mmu::El2Layout {
            ram: &machine.memory,
            image,
            text_end,
            rodata_end,
            devices: &devices,
        });
        // Live for ever: secondaries and every trap run on it.
        core::mem::forget(el2_map);
        boot_clock::mark("el2-tables");
        log::debug!("EL2 stage-1 tables installed");
        #[cfg(feature = "test-hooks")]
        crate::test_hooks::init();

        match machine.psci.as_ref().map(|p| p.conduit) {
            Some(platform::devtree::Conduit::Smc) => {
                firmware::init(platform::devtree::Conduit::Smc)
            }
            other => log::error!(
                "PSCI conduit {other:?}: Portcullis runs at EL2 and can only call firmware by SMC; \
                 the host's PSCI calls will be answered NOT_SUPPORTED"
            ),
        }

        // Before the host's stage 2 is built: it leaves the mediated GIC pages unmapped.
        let trapped = gic_mediation::init(&machine);
        boot_clock::mark("gic");
        let hyp = decide_heap(&machine, image, heap, file_end, dtb_len);
        boot_clock::mark("heap");
        #[cfg(feature = "test-hooks")]
        {
            let tail = {
                let mut g = HEAP.0.lock();
                g.limit -= 4096;
                g.limit
            };
            // SAFETY: the last page of Portcullis' memory, now above the heap's limit: nothing
            // else uses it; the EL2 tables map all RAM read-write.
            unsafe { crate::test_hooks::tail_canary(tail) };
        }
        let (entry, map) = match host::prepare(&machine, hyp, dtb_range, trapped) {
            Ok(prepared) => prepared,
            Err(e) => {
                log::error!("cannot boot the host: {e}");
                firmware::system_off()
            }
        };
        boot_clock::mark("host");
        gic_mediation::set_policy(&map);
        if let Err(e) = firewall::init(&machine, &map) {
            // The SMMU keeps refusing DMA (GBPA abort, invalid STEs) if it got that far; the host
            // boots either way, and the console says plainly what is not protected.
            log::error!("DMA firewall not raised: {e}");
        }
        boot_clock::mark("firewall");
        firewall::write_report();
        boot_clock::mark("report");
        if cfg!(feature = "test-hooks") {
            log::warn!("test build: test-hooks hypervisor calls are answered");
        }
        let (used, grown) = {
            let g = HEAP.0.lock();
            (
                g.heap.stats_alloc_actual() as u64,
                g.next - heap.start.raw(),
            )
        };
        let hz = cpu::counter_hz().max(1);
        let boot_us = cpu::counter()
            .wrapping_sub(entry_counter)
            .saturating_mul(1_000_000)
            / hz;
        log::info!(
            "boot: {}.{:03} ms from Portcullis' EL2 entry (CNTPCT at its first instruction) to the \
             host's entry; heap {} KiB in use, {} KiB taken of {} KiB kept",
            boot_us / 1000,
            boot_us % 1000,
            used >> 10,
            grown >> 10,
            (hyp.end.raw() - heap.start.raw()) >> 10
        );
        log::debug!(
            "boot phases (ms): {}",
            boot_clock::phases().report(entry_counter, hz)
        );
        log::info!(
            "entering the host at {:#x} (EL1h) with its device tree at {:#x}",
            entry.pc,
            entry.x0
        );
        host::enter(cpu::index(), entry)
    }

    /// Decides where Portcullis' memory ends: the heap taken so far plus what the machine still
    /// needs (`portcullis::boot::heap::reserve`), within the image's heap room; the rest of the
    /// room goes to the host. Returns Portcullis' memory.
    fn decide_heap(
        machine: &platform::devtree::Platform,
        image: PhysRange,
        heap: PhysRange,
        file_end: u64,
        dtb_len: u64,
    ) -> PhysRange {
        use portcullis::boot::devices::DeviceMap;
        use portcullis::boot::heap;
        let needs = heap::Machine {
            cpus: machine.cpus.len() as u64,
            ram_bytes: portcullis::boot::layout::total_ram(&machine.memory),
            ram_banks: machine.memory.len() as u64,
            // The device pages the host's stage 2 maps, and the pages Portcullis traps.
            device_ranges: DeviceMap::decide(machine).allowed.len() as u64 + 8,
            dtb_bytes: dtb_len,
            ..firewall::heap_needs(machine)
        };
        let reserve = heap::reserve(&needs);
        let (plan, fits) = {
            let mut g = HEAP.0.lock();
            let (plan, fits) = heap::HeapPlan::decide(g.next, reserve.total(), heap.end.raw());
            g.limit = plan.limit;
            (plan, fits)
        };
        let hyp = PhysRange::from_bounds(image.start.raw(), plan.limit);
        // Short at the default level: under QEMU each console byte is a trap.
        log::info!(
            "memory: {} KiB reserved (image file {} KiB, heap {} KiB)",
            hyp.size() >> 10,
            (file_end - image.start.raw()) >> 10,
            (plan.limit - heap.start.raw()) >> 10,
        );
        log::debug!(
            "memory: the rest is stacks, bss and alignment; heap room {} KiB, the rest given to \
             the host",
            heap.size() >> 10
        );
        log::debug!("heap reserve after the boot allocations: {reserve:?}");
        if !fits {
            log::error!(
                "the heap reserve ({} KiB) does not fit the image's heap room: Portcullis keeps \
                 all of it and may run short",
                reserve.total() >> 10
            );
        }
        hyp
    }

    #[unsafe(no_mangle)]
    extern "C" fn secondary_main(index: u64) -> ! {
        host::secondary_start(index as usize)
    }

    fn halt() -> ! {
        loop {
            aarch64_cpu::asm::wfe();
        }
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo) -> ! {
        console::print(format_args!(
            "\nportcullis[{}] PANIC: {info}\n",
            cpu::index()
        ));
        firmware::system_off()
    }
}

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "portcullis is a bare-metal image: build it with --target aarch64-unknown-none-softfloat"
    );
}
