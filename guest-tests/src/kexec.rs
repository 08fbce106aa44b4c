//! A simulated kexec into the crash region, for the fence scenarios.
//!
//! The payloads are self-relocating static PIEs (platform/asm/arm64_image.S): linked at 0, every
//! absolute address is an `R_AARCH64_RELATIVE` relocation whose addend is the link-time value, so a
//! copy of the image's file data placed anywhere (4 KiB-aligned) re-applies them at its entry and
//! runs there, with its own .bss and stacks. The running payload (the "dead kernel", A) copies
//! itself into the crash region ([`load`]) and jumps to the copy ([`Loaded::exec`]) with x0 = the
//! device tree, like a kernel entering its capture kernel. That first instruction fetch from the
//! crash region is the kexec event Portcullis traps on: it raises the fence and resumes the copy
//! (the "capture kernel", B) where it trapped.
//!
//! The copy learns what A wants it to know through a [`Handoff`]: a static in `.data` (file data,
//! so it is part of the copy) that A writes into the copy after loading it. B reads its own.

use crate::rt::{ImageLayout, image_layout};
use core::arch::asm;
use core::cell::UnsafeCell;
use core::fmt;

/// Marks a [`Handoff`] written by a kernel that kexec'd into this copy.
const HANDOFF_MAGIC: u64 = 0x4b45_5845_4321_4f4b; // "KO!CEXEK"

/// A value the dead kernel hands to its capture kernel. Declare it as a static in `.data`:
///
/// ```ignore
/// #[unsafe(link_section = ".data.kexec_handoff")]
/// static HANDOFF: Handoff<T> = Handoff::new(T::EMPTY);
/// ```
///
/// (`.data`, not `.bss`: the capture kernel zeroes its .bss at entry, and only file data is copied.)
#[repr(C)]
pub struct Handoff<T: Copy> {
    magic: UnsafeCell<u64>,
    value: UnsafeCell<T>,
}

// SAFETY: only the boot CPU touches a handoff, with volatile accesses.
unsafe impl<T: Copy> Sync for Handoff<T> {}

impl<T: Copy> fmt::Debug for Handoff<T> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "Handoff({:#x})", self.magic.get() as u64)
    }
}

impl<T: Copy> Handoff<T> {
    pub const fn new(empty: T) -> Self {
        Handoff {
            magic: UnsafeCell::new(0),
            value: UnsafeCell::new(empty),
        }
    }

    /// What the kernel that kexec'd into this image handed over; `None` in a kernel booted
    /// normally.
    pub fn received(&self) -> Option<T> {
        // SAFETY: the cells are this static's own, plain data, read by the boot CPU only.
        let magic = unsafe { self.magic.get().read_volatile() };
        // SAFETY: as above; `T: Copy` holds no references to invalidate.
        (magic == HANDOFF_MAGIC).then(|| unsafe { self.value.get().read_volatile() })
    }
}

/// Why an image could not be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KexecError {
    /// The copy would not lie inside the region given.
    DoesNotFit {
        dest: u64,
        size: u64,
        region_end: u64,
    },
    /// The destination is not 2 MiB-aligned (the Image header's flags promise 2 MiB placement).
    Misaligned(u64),
    /// The destination overlaps the running image.
    OverlapsSelf { dest: u64, image: ImageLayout },
}

impl fmt::Display for KexecError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::DoesNotFit {
                dest,
                size,
                region_end,
            } => write!(
                f,
                "an image of {size:#x} bytes at {dest:#x} does not fit below {region_end:#x}"
            ),
            Self::Misaligned(d) => write!(f, "kexec destination {d:#x} is not 2 MiB-aligned"),
            Self::OverlapsSelf { dest, image } => write!(
                f,
                "kexec destination {dest:#x} overlaps the running image {:#x}..{:#x}",
                image.start, image.end
            ),
        }
    }
}

/// A copy of the running image, loaded and not yet entered.
#[derive(Debug)]
pub struct Loaded {
    pub dest: u64,
    pub image: ImageLayout,
}

/// Copies the running image's file data to `dest` (2 MiB-aligned), whose whole footprint
/// (`image.end - image.start`, .bss and stacks included) must lie below `region_end`.
///
/// # Safety
/// `[dest, dest + footprint)` must be RAM the payload may write and that nothing else uses.
pub unsafe fn load(dest: u64, region_end: u64) -> Result<Loaded, KexecError> {
    let image = image_layout();
    let footprint = image.end - image.start;
    if !dest.is_multiple_of(2 << 20) {
        return Err(KexecError::Misaligned(dest));
    }
    if dest.checked_add(footprint).is_none_or(|e| e > region_end) {
        return Err(KexecError::DoesNotFit {
            dest,
            size: footprint,
            region_end,
        });
    }
    if dest < image.end && image.start < dest + footprint {
        return Err(KexecError::OverlapsSelf { dest, image });
    }
    // The file size is a multiple of 16 (image.ld aligns __data_end); aligned 64-bit accesses
    // only, as the MMU is off.
    for off in (0..image.file_size).step_by(8) {
        // SAFETY: inside the running image (readable) and inside the destination, which the
        // caller vouches for.
        unsafe {
            let word = ((image.start + off) as *const u64).read_volatile();
            ((dest + off) as *mut u64).write_volatile(word);
        }
    }
    Ok(Loaded { dest, image })
}

impl Loaded {
    /// The copy's instance of `handoff` (a static of the running image).
    fn in_copy<T: Copy>(&self, handoff: &'static Handoff<T>) -> *mut Handoff<T> {
        let at = handoff as *const Handoff<T> as u64;
        assert!(
            at >= self.image.start && at < self.image.start + self.image.file_size,
            "the handoff at {at:#x} is not in the image's file data: declare it in .data"
        );
        (self.dest + (at - self.image.start)) as *mut Handoff<T>
    }

    /// Writes `value` into the copy's `handoff`, for the copy to receive.
    pub fn hand_over<T: Copy>(&self, handoff: &'static Handoff<T>, value: T) {
        let copy = self.in_copy(handoff);
        // SAFETY: `copy` is the copy's instance of the static, inside the loaded file data, which
        // only this CPU touches until the copy runs.
        unsafe {
            core::ptr::addr_of_mut!((*copy).value)
                .cast::<T>()
                .write_volatile(value);
            core::ptr::addr_of_mut!((*copy).magic)
                .cast::<u64>()
                .write_volatile(HANDOFF_MAGIC);
        }
    }

    /// Enters the copy at its start (the Image header's branch) with x0 = `dtb`, x1..x3 = 0, as
    /// Linux's boot protocol enters a kernel. Does not return.
    pub fn exec(self, dtb: u64) -> ! {
        // SAFETY: the copy is complete (the stores above are ordered before the jump by the DSB);
        // the instruction cache is invalidated so that nothing stale of that range is fetched.
        // The copy sets up its own stack and vectors and never returns here.
        unsafe {
            asm!(
                "dsb sy",
                "ic iallu",
                "dsb sy",
                "isb",
                "br {entry}",
                entry = in(reg) self.dest,
                in("x0") dtb,
                in("x1") 0u64,
                in("x2") 0u64,
                in("x3") 0u64,
                options(noreturn, nostack)
            )
        }
    }
}
