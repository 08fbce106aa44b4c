/*
 * Shared by the Portcullis image and the guest-test payloads: the arm64 Image header of Linux's boot
 * protocol (Documentation/arch/arm64/booting.rst) and self-relocation of a position-independent image.
 * Both images are linked at address 0 as static PIEs; a boot loader may place them at any 2 MiB-aligned
 * address (plus text_offset = 0), so the first thing each does is apply its R_AARCH64_RELATIVE relocations.
 * The linker script must define __image_size (absolute), __rela_start and __rela_end.
 */

/* The 64-byte header. `entry` is where execution continues (code0 is a branch to it). */
.macro arm64_image_header entry
    b       \entry                  /* code0 */
    .long   0                       /* code1 */
    .quad   0                       /* text_offset */
    .quad   __image_size            /* image_size: the whole footprint, including .bss */
    .quad   0xa                     /* flags: little-endian, 4 KiB pages, anywhere in RAM */
    .quad   0                       /* res2 */
    .quad   0                       /* res3 */
    .quad   0                       /* res4 */
    .byte   0x41, 0x52, 0x4d, 0x64  /* magic "ARM\x64" */
    .long   0                       /* res5: no PE/COFF header */
.endm

/*
 * Apply every R_AARCH64_RELATIVE relocation: *(base + offset) = base + addend. Any other type means
 * the image was linked wrongly; there is no console yet, so the CPU parks in a WFE loop.
 * Clobbers x9-x13. Runs with the MMU off: only aligned 64-bit accesses.
 */
.macro apply_relocations base
    adrp    x9, __rela_start
    add     x9, x9, :lo12:__rela_start
    adrp    x10, __rela_end
    add     x10, x10, :lo12:__rela_end
101:
    cmp     x9, x10
    b.hs    103f
    ldp     x11, x12, [x9], #16
    ldr     x13, [x9], #8
    cmp     x12, #1027              /* R_AARCH64_RELATIVE, symbol index 0 */
    b.ne    102f
    add     x13, x13, \base
    str     x13, [\base, x11]
    b       101b
102:
    wfe
    b       102b
103:
.endm

/* Zero [start, end): both 16-byte aligned symbols. Clobbers x9, x10. */
.macro zero_symbols start, end
    adrp    x9, \start
    add     x9, x9, :lo12:\start
    adrp    x10, \end
    add     x10, x10, :lo12:\end
104:
    cmp     x9, x10
    b.hs    105f
    stp     xzr, xzr, [x9], #16
    b       104b
105:
.endm
