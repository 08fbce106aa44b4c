//! The thin architecture layer: the only code that executes assembly, reads system registers or
//! touches MMIO. Everything it decides with comes from the portable core (`portcullis` lib).

pub mod cache;
pub mod console;
pub mod cpu;
pub mod firmware;
pub mod head;
pub mod mmu;
pub mod smmu_mmio;
pub mod sysreg;
pub mod vectors;
