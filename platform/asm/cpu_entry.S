/*
 * Shared by the Portcullis image and the guest-test payloads: what every CPU does first on entry.
 * Include once per crate's assembly (GNU as refuses a macro defined twice), with arm64_image.S.
 */

/* \reg = the address of \sym (PC-relative, so correct before and after relocation). */
.macro adr_l reg, sym
    adrp    \reg, \sym
    add     \reg, \reg, :lo12:\sym
.endm

/*
 * sp = the top of CPU \index's stack: __stacks_start + (\index + 1) * \size (the linker script
 * reserves one \size-byte stack per CPU there). \index is a register (xzr for CPU 0).
 * Clobbers x9, x10.
 */
.macro set_cpu_stack index, size
    adr_l   x9, __stacks_start
    mov     x10, #\size
    madd    x9, \index, x10, x9
    add     sp, x9, x10
.endm
