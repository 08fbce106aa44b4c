//! The image header and the first instructions on every CPU.
//!
//! Primary CPU: enters at `_start` at EL2 with the MMU off and x0 = the device tree. It relocates the
//! image, zeroes `.bss`, takes its stack, installs the EL2 vectors, and calls `primary_main`.
//! Secondary CPUs: started by Portcullis through PSCI CPU_ON at `secondary_entry` with x0 = their CPU
//! index; they take their stack, turn on the MMU with the tables the primary built, and call
//! `secondary_main`.

use core::arch::global_asm;

/// Bytes of stack per CPU. The linker script reserves `MAX_CPUS * STACK_SIZE` at `__stacks_start`.
pub const STACK_SIZE: usize = 64 * 1024;
/// CPUs Portcullis can run on; a tree with more CPUs gets the rest left offline, with a log line.
pub const MAX_CPUS: usize = 8;

/// What a secondary CPU needs to turn on its MMU: written by the primary before any CPU_ON, read by
/// the secondary with its MMU and caches off (so the primary cleans it to the point of coherency).
#[repr(C)]
pub struct MmuConfig {
    pub mair: u64,
    pub tcr: u64,
    pub ttbr0: u64,
    pub sctlr: u64,
}

global_asm!(
    include_str!("../../../platform/asm/arm64_image.S"),
    include_str!("../../../platform/asm/cpu_entry.S"),
    r#"
.section .text.head, "ax"
.global _start
_start:
    arm64_image_header primary_entry

.text
primary_entry:
    mrs     x21, cntpct_el0             /* Portcullis' boot starts: reported at the host's entry */
    mov     x19, x0                     /* the device tree */
    mrs     x9, CurrentEL
    cmp     x9, #(2 << 2)
    b.ne    .Lnot_el2
    /* The boot protocol has the MMU and D-cache off; make sure of it before relocating. */
    mrs     x9, sctlr_el2
    bic     x9, x9, #1                  /* M */
    bic     x9, x9, #(1 << 2)           /* C */
    msr     sctlr_el2, x9
    isb
    adr_l   x20, __image_start
    apply_relocations x20
    zero_symbols __bss_start, __bss_end
    /* FP/SIMD/SVE/SME are the host's: never trapped, never used by Portcullis. */
    mov     x9, #{cptr}
    msr     cptr_el2, x9
    set_cpu_stack xzr, {stack_size}     /* CPU index 0 */
    msr     tpidr_el2, xzr
    adr_l   x9, el2_vectors
    msr     vbar_el2, x9
    isb
    mov     x0, x19
    mov     x1, x20
    mov     x2, x21
    bl      primary_main
.Lnot_el2:
    /* Not entered at EL2: nothing Portcullis can do, and no console yet. */
    wfe
    b       .Lnot_el2

.global secondary_entry
secondary_entry:
    /* x0 = CPU index (the PSCI context id Portcullis chose). */
    mov     x19, x0
    mov     x9, #{cptr}
    msr     cptr_el2, x9
    set_cpu_stack x19, {stack_size}
    msr     tpidr_el2, x19
    adr_l   x9, el2_vectors
    msr     vbar_el2, x9
    adr_l   x9, SECONDARY_MMU
    ldp     x10, x11, [x9]              /* mair, tcr */
    ldp     x12, x13, [x9, #16]         /* ttbr0, sctlr */
    msr     mair_el2, x10
    msr     tcr_el2, x11
    msr     ttbr0_el2, x12
    isb
    tlbi    alle2
    dsb     nsh
    isb
    msr     sctlr_el2, x13
    isb
    mov     x0, x19
    bl      secondary_main
1:  wfe
    b       1b

/*
 * Switch TTBR0_EL2 with the MMU briefly off, so that no TLB ever holds entries of both the boot
 * tables and the final ones (different block sizes for the same address would be a TLB conflict).
 * x0 = new TTBR0_EL2, x1 = SCTLR_EL2 to restore. Touches no memory while the MMU is off.
 */
.global switch_el2_tables
switch_el2_tables:
    mrs     x9, sctlr_el2
    bic     x9, x9, #1
    msr     sctlr_el2, x9
    isb
    msr     ttbr0_el2, x0
    isb
    tlbi    alle2
    dsb     nsh
    isb
    msr     sctlr_el2, x1
    isb
    ret
"#,
    stack_size = const STACK_SIZE,
    cptr = const portcullis::sysregs::CPTR_EL2_NOTHING_TRAPPED,
);

unsafe extern "C" {
    /// # Safety
    /// `ttbr0` must be the root of an EL2 table that maps all code, data and stacks in use, identically
    /// to the current tables; `sctlr` must enable the MMU with the current attributes.
    pub fn switch_el2_tables(ttbr0: u64, sctlr: u64);
    /// The entry point a secondary CPU is started at (by physical address).
    pub fn secondary_entry();
    pub static __image_start: u8;
    pub static __image_end: u8;
    pub static __text_end: u8;
    pub static __rodata_end: u8;
    pub static __data_end: u8;
    pub static __heap_start: u8;
    pub static __heap_end: u8;
    pub static __stacks_start: u8;
    pub static __stacks_end: u8;
}

/// The top of CPU `index`'s EL2 stack.
pub fn stack_top(index: usize) -> u64 {
    assert!(index < MAX_CPUS, "no EL2 stack for CPU {index}");
    let base = core::ptr::addr_of!(__stacks_start) as u64;
    base + ((index + 1) * STACK_SIZE) as u64
}

/// The MMU configuration secondaries load. Written once, by the primary CPU, before it starts any
/// secondary; read only by `secondary_entry`.
#[repr(transparent)]
pub struct SecondaryMmu(core::cell::UnsafeCell<MmuConfig>);

// SAFETY: written by the primary CPU alone, before any other CPU runs (see `publish`), then read-only.
unsafe impl Sync for SecondaryMmu {}

#[unsafe(no_mangle)]
pub static SECONDARY_MMU: SecondaryMmu = SecondaryMmu(core::cell::UnsafeCell::new(MmuConfig {
    mair: 0,
    tcr: 0,
    ttbr0: 0,
    sctlr: 0,
}));

impl SecondaryMmu {
    /// Stores the configuration and cleans it to the point of coherency, because secondaries read it
    /// with their caches off.
    ///
    /// # Safety
    /// Must be called on the primary CPU while no secondary CPU is running.
    pub unsafe fn publish(&self, config: MmuConfig) {
        let p = self.0.get();
        // SAFETY: no other CPU runs yet (caller's contract), so this is the only access.
        unsafe { p.write_volatile(config) };
        super::cache::clean_to_poc(p as usize, core::mem::size_of::<MmuConfig>());
    }
}
