//! Entry, exception vectors and the scenario driver.

use crate::{Outcome, console, dt, psci, semihosting};
use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::*;
use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub const STACK_SIZE: usize = 64 * 1024;
pub const MAX_CPUS: usize = 8;

global_asm!(
    include_str!("../../platform/asm/arm64_image.S"),
    include_str!("../../platform/asm/cpu_entry.S"),
    include_str!("../../platform/asm/vectors.S"),
    r#"
.section .text.head, "ax"
.global _start
_start:
    arm64_image_header guest_entry

.text
guest_entry:
    mov     x19, x0
    adr_l   x20, __image_start
    apply_relocations x20
    zero_symbols __bss_start, __bss_end
    set_cpu_stack xzr, {stack_size}
    msr     tpidr_el1, xzr
    adr_l   x9, guest_vectors
    msr     vbar_el1, x9
    isb
    mov     x0, x19
    bl      guest_main
1:  b       1b

/* Secondary CPUs: x0 = CPU index (the PSCI context id). */
.global guest_secondary_entry
guest_secondary_entry:
    mov     x19, x0
    set_cpu_stack x19, {stack_size}
    msr     tpidr_el1, x19
    adr_l   x9, guest_vectors
    msr     vbar_el1, x9
    isb
    mov     x0, x19
    bl      guest_secondary_main
2:  b       2b

.balign 0x800
guest_vectors:
    exception_vectors {frame}, guest_exception_common

/* Saves what a Rust call may clobber (x0..x18, x29, x30), calls guest_exception(kind). */
guest_exception_common:
    save_x2_x17
    stp     x18, x29, [sp, #144]
    str     x30, [sp, #160]
    mov     x0, x1
    bl      guest_exception
    restore_x0_x17
    ldp     x18, x29, [sp, #144]
    ldr     x30, [sp, #160]
    add     sp, sp, #{frame}
    eret
"#,
    stack_size = const STACK_SIZE,
    frame = const EXCEPTION_FRAME,
);

/// Bytes the guest's vectors reserve on the stack: x0..x18, x29, x30, rounded up to 16.
const EXCEPTION_FRAME: usize = 192;

unsafe extern "C" {
    fn guest_secondary_entry();
}

/// The physical address secondaries start at (the payload runs with its MMU off).
pub fn secondary_entry_address() -> u64 {
    guest_secondary_entry as *const () as u64
}

/// This CPU's index: 0 for the boot CPU, the CPU_ON context id for the others.
pub fn cpu_index() -> u64 {
    TPIDR_EL1.get()
}

/// This CPU's affinity fields (Aff3..Aff0) of MPIDR_EL1, as PSCI and the device tree name CPUs.
pub fn mpidr() -> u64 {
    let m = MPIDR_EL1.extract();
    (m.read(MPIDR_EL1::Aff3) << 32)
        | (m.read(MPIDR_EL1::Aff2) << 16)
        | (m.read(MPIDR_EL1::Aff1) << 8)
        | m.read(MPIDR_EL1::Aff0)
}

/// The virtual count (CNTVCT_EL0): the host keeps the generic timer, so it ticks under Portcullis too.
pub fn ticks() -> u64 {
    // The ISB orders the read after what precedes.
    barrier::isb(barrier::SY);
    CNTVCT_EL0.get()
}

/// The counter's frequency in Hz (CNTFRQ_EL0), as firmware (QEMU) set it.
pub fn tick_hz() -> u64 {
    CNTFRQ_EL0.get()
}

/// Milliseconds between two counter readings (0 if the frequency is unknown).
pub fn ticks_to_ms(ticks: u64) -> u64 {
    let hz = tick_hz();
    if hz == 0 {
        0
    } else {
        (u128::from(ticks) * 1000 / u128::from(hz)) as u64
    }
}

unsafe extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// Where the payload itself lies in physical memory, `[start, end)`: text, data, bss and stacks.
pub fn image_extent() -> (u64, u64) {
    // The symbols come from image.ld; only their addresses are taken (PC-relative, so they are
    // already the relocated, physical addresses: the MMU is off).
    let start = core::ptr::addr_of!(__image_start) as u64;
    let end = core::ptr::addr_of!(__image_end) as u64;
    (start, end)
}

unsafe extern "C" {
    static __data_end: u8;
}

/// Where the payload's image lies and how much of it is file data, as a loader (or kexec) sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageLayout {
    /// `__image_start`: the Image header, the first byte a loader places.
    pub start: u64,
    /// `__image_end`: past the stacks, `image_size` in the header (2 MiB-aligned).
    pub end: u64,
    /// Bytes of file data from `start`: text, rodata, relocations and data, everything a copy needs
    /// (.bss and the stacks are zeroed or set up at entry).
    pub file_size: u64,
}

/// The payload's [`ImageLayout`] at its current (relocated, physical) address.
pub fn image_layout() -> ImageLayout {
    let (start, end) = image_extent();
    // As in `image_extent`: only the symbol's PC-relative address is taken.
    let data_end = core::ptr::addr_of!(__data_end) as u64;
    ImageLayout {
        start,
        end,
        file_size: data_end - start,
    }
}

/// The exception level and stack pointer selection the payload runs at: (EL, SPSel).
pub fn current_el() -> (u64, u64) {
    (CurrentEL.read(CurrentEL::EL), SPSel.read(SPSel::SP))
}

/// An exception the payload caught while one was expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caught {
    pub esr: u64,
    pub far: u64,
    pub elr: u64,
}

impl Caught {
    pub fn ec(&self) -> u64 {
        (self.esr >> 26) & 0x3f
    }
    /// DFSC/IFSC.
    pub fn fsc(&self) -> u64 {
        self.esr & 0x3f
    }
}

static EXPECTING: AtomicBool = AtomicBool::new(false);
static CAUGHT: AtomicBool = AtomicBool::new(false);
static CAUGHT_ESR: AtomicU64 = AtomicU64::new(0);
static CAUGHT_FAR: AtomicU64 = AtomicU64::new(0);
static CAUGHT_ELR: AtomicU64 = AtomicU64::new(0);

/// Runs `f`, which is expected to take one synchronous exception (boot CPU only). The faulting
/// instruction is skipped. Returns what was caught, or `None` if `f` completed without exception.
pub fn expect_exception(f: impl FnOnce()) -> Option<Caught> {
    CAUGHT.store(false, Ordering::SeqCst);
    EXPECTING.store(true, Ordering::SeqCst);
    f();
    EXPECTING.store(false, Ordering::SeqCst);
    CAUGHT.load(Ordering::SeqCst).then(|| Caught {
        esr: CAUGHT_ESR.load(Ordering::SeqCst),
        far: CAUGHT_FAR.load(Ordering::SeqCst),
        elr: CAUGHT_ELR.load(Ordering::SeqCst),
    })
}

#[unsafe(no_mangle)]
extern "C" fn guest_exception(kind: u64) {
    let (esr, far, elr) = (ESR_EL1.get(), FAR_EL1.get(), ELR_EL1.get());
    let sync = kind.is_multiple_of(4);
    if sync && EXPECTING.load(Ordering::SeqCst) && !CAUGHT.load(Ordering::SeqCst) {
        CAUGHT_ESR.store(esr, Ordering::SeqCst);
        CAUGHT_FAR.store(far, Ordering::SeqCst);
        CAUGHT_ELR.store(elr, Ordering::SeqCst);
        CAUGHT.store(true, Ordering::SeqCst);
        // Skipping the faulting instruction (always 4 bytes in A64) resumes after it.
        ELR_EL1.set(elr + 4);
        return;
    }
    crate::println!(
        "GUEST-TEST {}: FAIL: unexpected exception kind {kind} esr={esr:#x} far={far:#x} elr={elr:#x}",
        scenario_name()
    );
    semihosting::exit(1);
}

static NAME_PTR: AtomicU64 = AtomicU64::new(0);
static NAME_LEN: AtomicU64 = AtomicU64::new(0);

fn scenario_name() -> &'static str {
    let p = NAME_PTR.load(Ordering::Relaxed) as *const u8;
    let n = NAME_LEN.load(Ordering::Relaxed) as usize;
    if p.is_null() {
        return "?";
    }
    // SAFETY: set from a `&'static str` in `run_scenario`.
    unsafe { core::str::from_utf8_unchecked(core::slice::from_raw_parts(p, n)) }
}

/// What a scenario gets: the device tree it was booted with.
#[derive(Debug)]
pub struct Context {
    pub dtb_addr: u64,
    pub dtb: dt::Tree,
}

/// Sets up the console and PSCI from the tree, runs the scenario, prints the verdict and exits.
pub fn run_scenario(name: &'static str, dtb: u64, run: fn(&Context) -> Outcome) -> ! {
    NAME_PTR.store(name.as_ptr() as u64, Ordering::Relaxed);
    NAME_LEN.store(name.len() as u64, Ordering::Relaxed);
    // SAFETY: the boot protocol passes the device tree's address in x0.
    let tree = unsafe { dt::Tree::from_addr(dtb) };
    let tree = match tree {
        Ok(t) => t,
        Err(_) => semihosting::exit(2),
    };
    if let Some(uart) = tree.stdout_base() {
        console::init(uart);
    }
    psci::init(tree.psci_uses_hvc());
    crate::println!("GUEST-TEST {name}: start (dtb at {dtb:#x})");
    let ctx = Context {
        dtb_addr: dtb,
        dtb: tree,
    };
    match run(&ctx) {
        Ok(()) => {
            crate::println!("GUEST-TEST {name}: PASS");
            semihosting::exit(0)
        }
        Err(f) => {
            crate::println!("GUEST-TEST {name}: FAIL: {}", f.message());
            semihosting::exit(1)
        }
    }
}

type SecondaryFn = fn(u64);
static SECONDARY_FN: AtomicU64 = AtomicU64::new(0);

/// Sets what secondary CPUs run when started at `secondary_entry_address()`.
pub fn set_secondary_fn(f: SecondaryFn) {
    SECONDARY_FN.store(f as usize as u64, Ordering::SeqCst);
}

#[unsafe(no_mangle)]
extern "C" fn guest_secondary_main(index: u64) -> ! {
    let f = SECONDARY_FN.load(Ordering::SeqCst);
    if f != 0 {
        // SAFETY: only ever set from a `SecondaryFn` in `set_secondary_fn`.
        let f: SecondaryFn = unsafe { core::mem::transmute::<usize, SecondaryFn>(f as usize) };
        f(index);
    }
    psci::cpu_off();
    loop {
        core::hint::spin_loop();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    crate::println!("GUEST-TEST {}: FAIL: panic: {info}", scenario_name());
    semihosting::exit(1)
}
