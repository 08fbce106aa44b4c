/*
 * Shared by the Portcullis image (EL2) and the guest-test payloads (EL1): an exception vector table
 * whose 16 entries all go to one handler, and the saving of the caller-saved registers around it.
 * Include once per crate's assembly (GNU as refuses a macro defined twice).
 */

/*
 * The 16 vectors (current EL with SP0, current EL with SPx, lower EL AArch64, lower EL AArch32;
 * Sync, IRQ, FIQ, SError in each): each reserves a \frame-byte frame on the stack, saves x0/x1 at
 * its start, puts its index (0..15) in x1 and branches to \common. Place after `.balign 0x800` and
 * the table's label.
 */
.macro exception_vectors frame, common
    .irp kind, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
    .balign 0x80
    sub     sp, sp, #\frame
    stp     x0, x1, [sp, #0]
    mov     x1, #\kind
    b       \common
    .endr
.endm

/* x2..x17 into the frame at sp, after x0/x1 (which the vector saved): offsets 16..128. */
.macro save_x2_x17
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
.endm

/* x0..x17 back from the frame at sp (offsets 0..128). */
.macro restore_x0_x17
    ldp     x0, x1, [sp, #0]
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
.endm
