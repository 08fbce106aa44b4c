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
    use crate::{firewall, gic_mediation, host};
    use buddy_system_allocator::Heap;
    use core::alloc::{GlobalAlloc, Layout};
    use core::ptr::{self, NonNull};
    use platform::addr::PhysRange;
    use spin::mutex::TicketMutex;

    /// The buddy heap behind a ticket lock: every CPU allocating on a trap path gets its turn.
    struct TicketHeap(TicketMutex<Heap<32>>);

    // SAFETY: allocation and deallocation are serialised by the lock and delegated to the buddy
    // allocator, which hands out non-overlapping blocks of at least the requested layout.
    unsafe impl GlobalAlloc for TicketHeap {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            self.0
                .lock()
                .alloc(layout)
                .map_or(ptr::null_mut(), NonNull::as_ptr)
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            if let Some(p) = NonNull::new(ptr) {
                // SAFETY: the caller returns a block this allocator gave out, with its layout.
                unsafe { self.0.lock().dealloc(p, layout) }
            }
        }
    }

    #[global_allocator]
    static HEAP: TicketHeap = TicketHeap(TicketMutex::new(Heap::empty()));

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
    extern "C" fn primary_main(dtb: u64, _load_base: u64) -> ! {
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
        // SAFETY: the heap range is reserved by the linker script for this allocator alone.
        unsafe {
            HEAP.0
                .lock()
                .init(heap.start.raw() as usize, heap.size() as usize)
        };

        // SAFETY: the tree lies at `dtb` with the size its header gives, in RAM mapped by the boot
        // tables, and nothing writes to it while Portcullis reads it.
        let blob = unsafe { core::slice::from_raw_parts(dtb as *const u8, dtb_len as usize) };
        let machine = match platform::devtree::Platform::parse(blob) {
            Ok(p) => p,
            // No console without a tree: nothing to report to. Park the CPU.
            Err(_) => halt(),
        };
        // An unknown UART (or none) gets no console: Portcullis logs to nothing.
        if let Ok(device) = platform::console::from_tree(blob, machine.uart.as_ref()) {
            // SAFETY: the boot tables map every non-RAM block as Device memory; the UART is
            // Portcullis' console from now on (the host shares it: both only ever write whole bytes).
            unsafe { console::init(device) };
        }
        let options = host::options(&machine);
        console::init_logger(options.log_level);
        // SAFETY: a linker-script symbol; only its address is used.
        let file_end = unsafe { symbol(&head::__data_end) };
        log::info!(
            "Portcullis {} at EL2: image {image}, device tree at {dtb:#x} ({dtb_len} bytes)",
            env!("CARGO_PKG_VERSION")
        );
        log::info!(
            "board: {:?} ({}; root compatible {:?})",
            platform::boards::Board::identify(&machine.compatible),
            machine.model.as_deref().unwrap_or("no model"),
            machine.compatible
        );
        log::info!(
            "memory: {} KiB reserved (image file {} KiB, heap {} KiB, stacks, bss, alignment)",
            image.size() >> 10,
            (file_end - image.start.raw()) >> 10,
            heap.size() >> 10
        );
        for w in &options.warnings {
            log::warn!("portcullis,bootargs: {w}");
        }

        let mut devices = alloc::vec::Vec::new();
        if let Some(uart) = &machine.uart {
            devices.push(uart.base);
        }
        if let Some(smmu) = &machine.smmu {
            devices.push(smmu.regs);
        }
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
        let (entry, map) = match host::prepare(&machine, image, dtb_range, trapped) {
            Ok(prepared) => prepared,
            Err(e) => {
                log::error!("cannot boot the host: {e}");
                firmware::system_off()
            }
        };
        gic_mediation::set_policy(&map);
        if let Err(e) = firewall::init(&machine, &map) {
            // The SMMU keeps refusing DMA (GBPA abort, invalid STEs) if it got that far; the host
            // boots either way, and the console says plainly what is not protected.
            log::error!("DMA firewall not raised: {e}");
        }
        firewall::write_report();
        if cfg!(feature = "test-hooks") {
            log::warn!("test build: test-hooks hypervisor calls are answered");
        }
        log::info!(
            "entering the host at {:#x} (EL1h) with its device tree at {:#x}",
            entry.pc,
            entry.x0
        );
        host::enter(cpu::index(), entry)
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
