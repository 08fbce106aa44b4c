//! Single-instruction loads and stores for device registers and for memory whose access must
//! trap with a valid syndrome (one `ldr`/`str` with a plain base register). A leaf: the console, the
//! runtime and the drivers use it, and it uses nothing of the crate.

use core::arch::asm;

/// A 32-bit MMIO load as a single `ldr` with a plain base register (always a valid syndrome).
///
/// # Safety
/// `addr` must be a device register that may be read, or an address whose abort the caller expects.
pub unsafe fn mmio_read32(addr: u64) -> u32 {
    let v: u32;
    // SAFETY: per the caller's contract.
    unsafe { asm!("ldr {v:w}, [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack)) };
    v
}

/// A 32-bit MMIO store as a single `str` with a plain base register.
///
/// # Safety
/// As for `mmio_read32`.
pub unsafe fn mmio_write32(addr: u64, value: u32) {
    // SAFETY: per the caller's contract.
    unsafe { asm!("str {v:w}, [{a}]", a = in(reg) addr, v = in(reg) value, options(nostack)) };
}

/// An 8-bit MMIO load as a single `ldrb` with a plain base register.
///
/// # Safety
/// As for `mmio_read32`.
pub unsafe fn mmio_read8(addr: u64) -> u8 {
    let v: u32;
    // SAFETY: per the caller's contract.
    unsafe { asm!("ldrb {v:w}, [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack)) };
    v as u8
}

/// An 8-bit MMIO store as a single `strb` with a plain base register.
///
/// # Safety
/// As for `mmio_read32`.
pub unsafe fn mmio_write8(addr: u64, value: u8) {
    // SAFETY: per the caller's contract.
    unsafe {
        asm!("strb {v:w}, [{a}]", a = in(reg) addr, v = in(reg) u32::from(value), options(nostack))
    };
}

/// A 16-bit MMIO load as a single `ldrh` with a plain base register.
///
/// # Safety
/// As for `mmio_read32`.
pub unsafe fn mmio_read16(addr: u64) -> u16 {
    let v: u32;
    // SAFETY: per the caller's contract.
    unsafe { asm!("ldrh {v:w}, [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack)) };
    v as u16
}

/// A 16-bit MMIO store as a single `strh` with a plain base register.
///
/// # Safety
/// As for `mmio_read32`.
pub unsafe fn mmio_write16(addr: u64, value: u16) {
    // SAFETY: per the caller's contract.
    unsafe {
        asm!("strh {v:w}, [{a}]", a = in(reg) addr, v = in(reg) u32::from(value), options(nostack))
    };
}

/// A 64-bit load as a single `ldr`.
///
/// # Safety
/// As for `mmio_read32`.
pub unsafe fn read64(addr: u64) -> u64 {
    let v: u64;
    // SAFETY: per the caller's contract.
    unsafe { asm!("ldr {v}, [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack)) };
    v
}

/// A 64-bit store as a single `str`.
///
/// # Safety
/// As for `mmio_read32`.
pub unsafe fn write64(addr: u64, value: u64) {
    // SAFETY: per the caller's contract.
    unsafe { asm!("str {v}, [{a}]", a = in(reg) addr, v = in(reg) value, options(nostack)) };
}
