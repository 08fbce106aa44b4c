//! Data-cache maintenance by address.

use aarch64_cpu::asm::barrier;
use core::arch::asm;
use tock_registers::interfaces::Readable;

/// The smallest data-cache line of this CPU, from CTR_EL0.DminLine.
fn dcache_line() -> usize {
    portcullis::sysregs::dcache_line(super::sysreg::CTR_EL0.get())
}

/// Cleans `[start, start + len)` to the point of coherency, so that an observer with its caches
/// off (a CPU coming up, a non-coherent device) sees what was written.
pub fn clean_to_poc(start: usize, len: usize) {
    let line = dcache_line();
    let mut addr = start & !(line - 1);
    while addr < start + len {
        // SAFETY: cache maintenance by VA does not change memory contents; the address is mapped.
        unsafe { asm!("dc cvac, {}", in(reg) addr, options(nostack, preserves_flags)) };
        addr += line;
    }
    barrier::dsb(barrier::SY);
}

/// Zeroes `[ptr, ptr + len)`: the whole DC ZVA blocks inside it with DC ZVA (one instruction per
/// block; under QEMU TCG a block is one host memset instead of a loop of translated stores), the
/// rest with ordinary stores. DC ZVA orders like stores, so nothing more is needed after it.
///
/// # Safety
///
/// `[ptr, ptr + len)` is valid for writes and mapped as Normal memory with the MMU on (DC ZVA to
/// Device memory faults).
// Not inlined: one copy for every caller (each copy is more code for QEMU to translate at boot).
#[inline(never)]
pub unsafe fn zero(ptr: *mut u8, len: usize) {
    let start = ptr as usize;
    let dczid = super::sysreg::DCZID_EL0.get();
    let Some((first, end, block)) = portcullis::sysregs::zva_span(dczid, start, len) else {
        // SAFETY: the caller's range.
        unsafe { core::ptr::write_bytes(ptr, 0, len) };
        return;
    };
    // SAFETY: `[start, first)` and `[end, start + len)` lie in the caller's range.
    unsafe {
        core::ptr::write_bytes(ptr, 0, first - start);
        core::ptr::write_bytes(end as *mut u8, 0, start + len - end);
    }
    let mut addr = first;
    while addr < end {
        // SAFETY: a whole, aligned block inside the caller's range, Normal memory (the caller's
        // promise); DC ZVA writes zeros to exactly that block.
        unsafe { asm!("dc zva, {}", in(reg) addr, options(nostack, preserves_flags)) };
        addr += block;
    }
}
