//! The crash fence, as it happens.
//!
//! The host's first instruction fetch from the crash region (execute-never in the normal-mode CPU
//! stage 2) is the kexec event: the crashed kernel has stopped its other CPUs and is entering the
//! capture kernel's purgatory. Portcullis then, without the host's cooperation:
//! 1. fences every stream at once (`firewall::fence`: the prebuilt crash-mode Stream table, where
//!    every stream translates through a stage 2 that maps nothing and records faults);
//! 2. switches the host's CPUs to the crash-mode stage 2 (the dump read-only);
//! 3. writes the fault report, and resumes the capture kernel's entry path where it trapped.

use crate::arch::cpu;
use crate::{firewall, host};
use platform::addr::Ipa;

/// Raises the portcullis. Returns once the host may resume at the trapping instruction.
pub fn raise(ipa: Ipa) {
    let start = cpu::counter();
    log::warn!("kexec trap: the host fetched {ipa:?} in the crash region; raising the fence");
    let fenced = firewall::fence(start);
    host::switch_to_crash_mode();
    match fenced {
        Ok(f) => log::warn!(
            "fence raised: {} streams terminated ({} live in the dead kernel), {} SMMU commands, \
             window {} ns from the trap to the completed CMD_SYNC; CPU stage 2 now crash mode \
             (dump read-only)",
            f.streams,
            f.live,
            f.commands,
            f.window_ns
        ),
        // The DMA side could not be fenced (no SMMU under Portcullis' control, or it failed):
        // the CPU side still protects the dump, and the console says what is not protected.
        Err(e) => log::error!("DMA fence NOT raised: {e}; CPU stage 2 now crash mode"),
    }
    firewall::write_report();
}
