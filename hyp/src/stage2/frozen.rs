//! The CPU stage 2 of the dead kernel's CPUs after the fence.
//!
//! The fence swaps the host's one CPU stage 2 (the table every CPU of the dead kernel runs under)
//! to this policy in place, for every CPU at once. Only the CPU that took the kexec trap, and the
//! CPUs the capture kernel starts afterwards, run under the crash-mode policy proper
//! ([`cpu_policy`] with [`Mode::Crash`]: the crash region read-write-execute). A CPU the dead kernel
//! failed to stop (or, from a hostile host, kept running on purpose) may read and execute what it
//! had, but writes nothing: not the dump, not the crash region where the capture kernel runs, not
//! the fault report.
//!
//! | region                 | dead CPUs, after the fence |
//! |------------------------|----------------------------|
//! | Portcullis' own memory | unmapped                   |
//! | fault report           | read-only, execute-never   |
//! | crash region           | read-only, executable      |
//! | rest of host RAM       | read-only, executable      |
//! | SMMU MMIO              | unmapped (emulated)        |
//! | other MMIO             | device RW                  |
//!
//! Executable, because a parked CPU of the dead kernel spins in the dead kernel's code: making it
//! execute-never would turn every parked CPU into an endless stream of instruction aborts.

use alloc::vec::Vec;

use platform::addr::PhysRange;

use super::policy::{Access, AddressMap, Mode, Region, cpu_policy};

/// Read-only, executable.
const RX: Access = Access::NormalMemory {
    read: true,
    write: false,
    exec: true,
};

/// The stage-2 policy of the dead kernel's CPUs after the fence (see the module documentation).
pub fn dead_cpu_policy(map: &AddressMap) -> Vec<Region> {
    let mut out = Vec::new();
    for r in cpu_policy(map, Mode::Crash, true) {
        if !matches!(r.access, Access::NormalMemory { read: true, .. }) {
            out.push(r);
            continue;
        }
        // The report stays read-only and execute-never; the rest becomes RX.
        match map.report.and_then(|p| p.intersection(&r.range)) {
            None => out.push(Region { access: RX, ..r }),
            Some(p) => {
                let before = PhysRange::from_bounds(r.range.start.0, p.start.0);
                let after = PhysRange::from_bounds(p.end.0, r.range.end.0);
                for part in [before, after] {
                    if !part.is_empty() {
                        out.push(Region {
                            range: part,
                            access: RX,
                        });
                    }
                }
                out.push(Region {
                    range: p,
                    access: Access::RO,
                });
            }
        }
    }
    out.sort_unstable_by_key(|r| r.range.start);
    out
}
