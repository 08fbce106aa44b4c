//! Portcullis' own (EL2 stage-1) address space.
//!
//! Two steps, because Rust code must not run long with the MMU off (data accesses would be Device
//! memory, where exclusives — every lock — are not guaranteed to work):
//! 1. `enable_boot_tables`: a static identity map of the low 512 GiB in 1 GiB blocks, Normal memory
//!    for the blocks that hold the image and the device tree, Device memory for everything else.
//!    Built without allocation or atomics, while the MMU is still off.
//! 2. `install_final_tables`: an aarch64-paging `IdMap<El2>` built from the device tree: RAM as
//!    Normal execute-never, Portcullis' text read-only executable, read-only data read-only, the
//!    devices Portcullis drives as Device memory, nothing else.

use super::head::{self, MmuConfig};
use aarch64_paging::descriptor::El23Attributes;
use aarch64_paging::idmap::IdMap;
use aarch64_paging::paging::{El2, MemoryRegion};
use core::cell::UnsafeCell;
use platform::addr::PhysRange;

/// MAIR_EL2: attribute index 0 Device-nGnRE, index 1 Normal write-back (`portcullis::sysregs`).
fn mair() -> u64 {
    portcullis::sysregs::mair_el2()
}

const GIB: u64 = 1 << 30;
/// A boot-table block of Normal write-back memory (MAIR index 1), inner shareable, accessed.
const BLOCK_NORMAL: u64 = El23Attributes::VALID
    .union(El23Attributes::ATTRIBUTE_INDEX_1)
    .union(El23Attributes::INNER_SHAREABLE)
    .union(El23Attributes::ACCESSED)
    .union(El23Attributes::USER_RES1)
    .bits() as u64;
/// A boot-table block of Device-nGnRE memory (MAIR index 0), accessed, never executable.
const BLOCK_DEVICE: u64 = El23Attributes::VALID
    .union(El23Attributes::ATTRIBUTE_INDEX_0)
    .union(El23Attributes::ACCESSED)
    .union(El23Attributes::USER_RES1)
    .union(El23Attributes::XN)
    .bits() as u64;
const _: () = assert!(BLOCK_NORMAL == 0b01 | (1 << 2) | (3 << 8) | (1 << 10) | (1 << 6));
const _: () = assert!(BLOCK_DEVICE == 0b01 | (1 << 10) | (1 << 6) | (1 << 54));

#[repr(C, align(4096))]
struct BootTables {
    l0: [u64; 512],
    l1: [u64; 512],
}

struct BootTablesCell(UnsafeCell<BootTables>);
// SAFETY: written only by the primary CPU before the MMU is on and before any other CPU runs.
unsafe impl Sync for BootTablesCell {}

static BOOT_TABLES: BootTablesCell = BootTablesCell(UnsafeCell::new(BootTables {
    l0: [0; 512],
    l1: [0; 512],
}));

/// TCR_EL2 for a 48-bit VA space with 4 KiB pages and write-back walks; PS from the CPU's PARange.
fn tcr() -> u64 {
    use aarch64_cpu::registers::{ID_AA64MMFR0_EL1, Readable};
    portcullis::sysregs::tcr_el2(ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange))
}

/// SCTLR_EL2 with the MMU, caches and stack alignment checks on.
fn sctlr_on() -> u64 {
    portcullis::sysregs::sctlr_el2_mmu_on()
}

/// Builds the boot tables and turns the MMU on. `normal` lists what must be Normal memory (the
/// image, the device tree); every other 1 GiB block below 512 GiB is Device memory.
///
/// # Safety
/// Primary CPU only, MMU off, no other CPU running; `normal` must lie in RAM.
pub unsafe fn enable_boot_tables(normal: &[PhysRange]) {
    let tables = BOOT_TABLES.0.get();
    // SAFETY: the MMU is off and no other CPU runs, so this is the only reference; aligned accesses only.
    let t = unsafe { &mut *tables };
    for (i, entry) in t.l1.iter_mut().enumerate() {
        let base = i as u64 * GIB;
        let block = PhysRange::from_bounds(base, base + GIB);
        let is_normal = normal.iter().any(|r| r.overlaps(&block));
        *entry = base
            | if is_normal {
                BLOCK_NORMAL
            } else {
                BLOCK_DEVICE
            };
    }
    t.l0[0] = (t.l1.as_ptr() as u64) | 0b11;
    // SAFETY: the tables map the running code and stack (inside the image) identically as Normal
    // memory, so enabling the MMU does not change what the next instruction or load sees.
    unsafe {
        core::arch::asm!(
            "msr mair_el2, {mair}",
            "msr tcr_el2, {tcr}",
            "msr ttbr0_el2, {ttbr}",
            "isb",
            "tlbi alle2",
            "dsb nsh",
            "isb",
            "msr sctlr_el2, {sctlr}",
            "isb",
            mair = in(reg) mair(),
            tcr = in(reg) tcr(),
            ttbr = in(reg) t.l0.as_ptr() as u64,
            sctlr = in(reg) sctlr_on(),
            options(nostack),
        );
    }
}

/// What the final EL2 map must cover.
pub struct El2Layout<'a> {
    pub ram: &'a [PhysRange],
    pub image: PhysRange,
    pub text_end: u64,
    pub rodata_end: u64,
    pub devices: &'a [PhysRange],
}

fn region(r: PhysRange) -> MemoryRegion {
    MemoryRegion::new(r.start.raw() as usize, r.end.raw() as usize)
}

/// Builds the final tables, switches to them and publishes them for secondaries. The returned map
/// must live for ever (it is live).
pub fn install_final_tables(layout: &El2Layout) -> IdMap<El2> {
    let normal = El23Attributes::VALID
        | El23Attributes::ATTRIBUTE_INDEX_1
        | El23Attributes::INNER_SHAREABLE
        | El23Attributes::ACCESSED
        | El23Attributes::USER_RES1;
    let device = El23Attributes::VALID
        | El23Attributes::ATTRIBUTE_INDEX_0
        | El23Attributes::ACCESSED
        | El23Attributes::USER_RES1
        | El23Attributes::XN;
    let mut map = IdMap::new(0, El2);
    let map_or_panic = |map: &mut IdMap<El2>, r: PhysRange, a: El23Attributes, what: &str| {
        if let Err(e) = map.map_range(&region(r), a) {
            panic!("EL2 map: cannot map {what} {r}: {e}");
        }
    };
    for &r in layout.ram {
        map_or_panic(&mut map, r, normal | El23Attributes::XN, "RAM");
    }
    let img = layout.image;
    map_or_panic(
        &mut map,
        PhysRange::from_bounds(img.start.raw(), layout.text_end),
        normal | El23Attributes::READ_ONLY,
        "text",
    );
    map_or_panic(
        &mut map,
        PhysRange::from_bounds(layout.text_end, layout.rodata_end),
        normal | El23Attributes::READ_ONLY | El23Attributes::XN,
        "rodata",
    );
    map_or_panic(
        &mut map,
        PhysRange::from_bounds(layout.rodata_end, img.end.raw()),
        normal | El23Attributes::XN,
        "data",
    );
    for &r in layout.devices {
        let r =
            PhysRange::from_bounds(r.start.align_down(4096).raw(), (r.end.raw() + 4095) & !4095);
        map_or_panic(&mut map, r, device, "device");
    }
    let ttbr = map.root_address().0 as u64;
    // The table memory is Normal write-back and walks are write-back cacheable: no cleaning needed
    // for this CPU; secondaries turn their MMU on with the same coherent walk attributes.
    // SAFETY: the new map covers the image (code, data, stacks, heap) and every device in use,
    // identically to the boot tables.
    unsafe { head::switch_el2_tables(ttbr, sctlr_on()) };
    map.mark_active();
    // SAFETY: called on the primary before any CPU_ON.
    unsafe {
        head::SECONDARY_MMU.publish(MmuConfig {
            mair: mair(),
            tcr: tcr(),
            ttbr0: ttbr,
            sctlr: sctlr_on(),
        })
    };
    map
}
