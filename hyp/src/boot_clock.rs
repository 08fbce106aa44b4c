//! The boot's phase checkpoints (`portcullis::boot::phases`): CNTPCT at the end of each phase on
//! the primary CPU, reported once at the host's entry.

use crate::arch::cpu;
use portcullis::boot::phases::Phases;
use spin::mutex::SpinMutex;

static PHASES: SpinMutex<Phases> = SpinMutex::new(Phases::new());

/// Records that the boot phase `name` ended now.
#[inline(never)]
pub fn mark(name: &'static str) {
    let now = cpu::counter();
    PHASES.lock().mark(name, now);
}

/// The checkpoints so far.
pub fn phases() -> Phases {
    *PHASES.lock()
}
