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
