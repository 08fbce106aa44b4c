//! The physical SMMU's register frame, accessed with single volatile loads and stores.

use aarch64_cpu::asm::barrier;

/// The SMMU's register frame, mapped as Device memory in Portcullis' EL2 tables.
#[derive(Debug)]
pub struct SmmuFrame {
    base: usize,
    size: usize,
}

impl SmmuFrame {
    /// # Safety
    /// `[base, base + size)` must be the SMMU's register frame, mapped as Device memory, and
    /// accessed by nothing else in Portcullis.
    pub unsafe fn new(base: u64, size: u64) -> Self {
        Self {
            base: base as usize,
            size: size as usize,
        }
    }

    fn addr(&self, offset: usize, width: usize) -> usize {
        assert!(
            offset.is_multiple_of(width) && offset + width <= self.size,
            "SMMU register access at offset {offset:#x} (width {width}) outside the frame"
        );
        self.base + offset
    }

    pub fn read32(&mut self, offset: usize) -> u32 {
        let p = self.addr(offset, 4) as *const u32;
        // SAFETY: an aligned register inside the frame `new`'s caller vouched for.
        unsafe { p.read_volatile() }
    }

    pub fn write32(&mut self, offset: usize, value: u32) {
        let p = self.addr(offset, 4) as *mut u32;
        // SAFETY: as for `read32`.
        unsafe { p.write_volatile(value) }
    }

    pub fn read64(&mut self, offset: usize) -> u64 {
        let p = self.addr(offset, 8) as *const u64;
        // SAFETY: as for `read32`.
        unsafe { p.read_volatile() }
    }

    pub fn write64(&mut self, offset: usize, value: u64) {
        let p = self.addr(offset, 8) as *mut u64;
        // SAFETY: as for `read32`.
        unsafe { p.write_volatile(value) }
    }
}

/// Orders Portcullis' stores to memory the SMMU reads (STEs, commands) before a following
/// register write that tells the SMMU to look: the SMMU is an observer in the outer-shareable
/// domain for non-coherent cases, inner for coherent; `dsb sy` covers both.
pub fn write_barrier() {
    barrier::dsb(barrier::SY);
}

/// Orders a register read (e.g. a producer index) before reads of the memory it describes.
pub fn read_barrier() {
    barrier::dsb(barrier::SY);
}
