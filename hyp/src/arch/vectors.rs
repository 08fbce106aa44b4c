//! EL2 exception vectors and the register frame of a trap.
//!
//! Every exception from the host saves x0–x30, SP_EL1, ELR_EL2 and SPSR_EL2 (and the counter at
//! the vector, for the fence window) into a `TrapFrame` on this CPU's EL2 stack, so an emulated load can write any register and a handler can change where
//! the host resumes. Exceptions taken at EL2 itself are Portcullis bugs and end in a panic that names
//! them.

use core::arch::global_asm;

/// The host's general-purpose state at a trap.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TrapFrame {
    /// x0–x30.
    pub x: [u64; 31],
    pub sp_el1: u64,
    pub elr: u64,
    pub spsr: u64,
    /// `CNTPCT_EL0` at the vector, before anything is saved, for an instruction abort from the
    /// host (0 for any other exception): where the fence window starts.
    pub vector_ticks: u64,
    _pad: u64,
}

const FRAME_SIZE: usize = core::mem::size_of::<TrapFrame>();
const _: () = assert!(FRAME_SIZE == 36 * 8 && FRAME_SIZE.is_multiple_of(16));

/// What kind of exception a vector is for (its position within a group of four).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExceptionType {
    Sync,
    Irq,
    Fiq,
    SError,
}

/// Which vector an exception came through, decoded from its index in the table (0..=15): four
/// groups of four (current EL with SP0, current EL with SPx, lower EL AArch64, lower EL AArch32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vector {
    /// Taken from EL1/EL0 (the host), not from EL2 itself.
    pub from_lower_el: bool,
    /// The lower EL was in AArch32.
    pub aarch32: bool,
    pub kind: ExceptionType,
    /// The raw vector index, for messages.
    pub index: u64,
}

impl Vector {
    pub fn from_raw(raw: u64) -> Self {
        let index = raw & 15;
        let group = index >> 2;
        let kind = match index & 3 {
            0 => ExceptionType::Sync,
            1 => ExceptionType::Irq,
            2 => ExceptionType::Fiq,
            _ => ExceptionType::SError,
        };
        Self {
            from_lower_el: group >= 2,
            aarch32: group == 3,
            kind,
            index,
        }
    }
}

global_asm!(
    r#"
.macro save_frame
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    mrs     x9, sp_el1
    stp     x30, x9, [sp, #240]
    mrs     x9, elr_el2
    mrs     x10, spsr_el2
    stp     x9, x10, [sp, #256]
.endm

.macro restore_frame_and_eret
    ldp     x9, x10, [sp, #256]
    msr     elr_el2, x9
    msr     spsr_el2, x10
    ldp     x30, x9, [sp, #240]
    msr     sp_el1, x9
    ldp     x0, x1, [sp, #0]
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    add     sp, sp, #{frame}
    eret
    dsb     nsh
    isb
.endm

/* Each vector: reserve a frame, save x0/x1, note the counter for an instruction abort from the
   host (EC 0x20: the kexec trap is one, and its fence window starts here; every other trap skips
   the read, which under QEMU TCG takes the emulator's global lock), tag the kind in x1 and go to
   the common path. */
.macro vector kind
    .balign 0x80
    sub     sp, sp, #{frame}
    stp     x0, x1, [sp, #0]
    mov     x0, xzr
    .if \kind == 8
    mrs     x1, esr_el2
    ubfx    x1, x1, #26, #6
    cmp     x1, #0x20
    b.ne    1f
    mrs     x0, cntpct_el0
1:
    .endif
    str     x0, [sp, #{ticks}]
    mov     x1, #\kind
    b       el2_trap_common
.endm

.section .text.vectors, "ax"
.balign 0x800
.global el2_vectors
el2_vectors:
    vector 0
    vector 1
    vector 2
    vector 3
    vector 4
    vector 5
    vector 6
    vector 7
    vector 8
    vector 9
    vector 10
    vector 11
    vector 12
    vector 13
    vector 14
    vector 15

el2_trap_common:
    save_frame
    mov     x0, sp
    bl      handle_trap
    restore_frame_and_eret

/* x0 = a TrapFrame at the top of this CPU's stack: load it and enter the host. */
.global enter_lower_el
enter_lower_el:
    mov     sp, x0
    restore_frame_and_eret
"#,
    frame = const FRAME_SIZE,
    ticks = const core::mem::offset_of!(TrapFrame, vector_ticks),
);

unsafe extern "C" {
    /// Loads `frame` (which must sit at the top of this CPU's EL2 stack, so the stack is empty once
    /// it has been popped) and returns to the lower exception level it describes.
    ///
    /// # Safety
    /// `frame` must be valid, at the top of the current CPU's stack, and describe a state that is safe
    /// to enter (EL1 or EL0, under the host's stage 2).
    pub fn enter_lower_el(frame: *const TrapFrame) -> !;
}
