//! The host's [`AddressMap`], assembled from what the device tree describes and what boot decided:
//! the one map every stage-2 policy (CPU and DMA, normal and crash mode) and every GIC check is
//! built from. [`place`] decides where the crash region and the fault report go; [`assemble`]
//! puts the map together.
//!
//! From the platform: RAM, the SMMU frame (emulated: unmapped for the host) and the ITS doorbell
//! pages (the only MMIO a device may write). From boot: Portcullis' own memory, the crash region
//! and the fault report region as placed ([`super::layout`]), the device pages the device map
//! allows ([`super::devices::DeviceMap::allowed`]), and the GIC pages Portcullis mediates (found
//! by reading the GIC, so handed in).

use alloc::vec::Vec;

use platform::addr::PhysRange;
use platform::devtree::Platform;

use super::cmdline::{self, CmdlineError};
use super::devices::DeviceMap;
use super::layout::{self, PlacementError, Taken, TakenKind};
use crate::gic::regs::gits;
use crate::stage2::{self, AddressMap, PolicyError};

/// Why the host has no crash region although its command line asks for one. The host boots
/// without one either way (the caller says why on the console).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoCrashRegion {
    /// `crashkernel=` is malformed.
    Malformed(CmdlineError),
    /// `crashkernel=` cannot be honoured in this RAM.
    CannotHonour(PlacementError),
}

/// Where boot put Portcullis' ranges, and everything else in RAM it had to avoid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub placed: Placed,
    /// Every range in use: the platform's reserved ranges and initrd, Portcullis, the kernel
    /// image, the incoming tree, the crash region and the report (the host's tree goes elsewhere).
    pub taken: Vec<Taken>,
    /// Why `placed.crash` is `None` although the host asked for a crash region.
    pub crash_refused: Option<NoCrashRegion>,
    /// Why `placed.report` is `None` although there is a crash region to report on.
    pub report_refused: Option<PlacementError>,
}

/// Places the crash region as `machine`'s `bootargs` ask (`crashkernel=`, against the RAM the host
/// will see) and, with a crash region, the fault report region, avoiding the platform's reserved
/// ranges, Portcullis (`hyp`), the kernel image's `footprint` and the `incoming_dtb`. Without a
/// crash region there is nothing to report, so no report region either.
pub fn place(
    machine: &Platform,
    hyp: PhysRange,
    footprint: PhysRange,
    incoming_dtb: PhysRange,
) -> Placement {
    let bootargs = machine.chosen.bootargs.as_deref().unwrap_or("");
    let mut taken = layout::platform_taken(machine);
    taken.push(Taken::new(TakenKind::Portcullis, hyp));
    taken.push(Taken::new(TakenKind::KernelImage, footprint));
    taken.push(Taken::new(TakenKind::IncomingDtb, incoming_dtb));
    let (crash, crash_refused) =
        match cmdline::parse_crashkernel(bootargs, layout::total_ram(&machine.memory)) {
            Ok(None) => (None, None),
            Ok(Some(request)) => {
                match layout::place_crash_region(&machine.memory, &taken, &request) {
                    Ok(region) => (Some(region), None),
                    Err(e) => (None, Some(NoCrashRegion::CannotHonour(e))),
                }
            }
            Err(e) => (None, Some(NoCrashRegion::Malformed(e))),
        };
    if let Some(c) = crash {
        taken.push(Taken::new(TakenKind::CrashRegion, c));
    }
    let (report, report_refused) =
        match crash.map(|_| layout::place_report(&machine.memory, &taken)) {
            Some(Ok(r)) => {
                taken.push(Taken::new(TakenKind::FaultReport, r));
                (Some(r), None)
            }
            Some(Err(e)) => (None, Some(e)),
            None => (None, None),
        };
    Placement {
        placed: Placed { hyp, crash, report },
        taken,
        crash_refused,
        report_refused,
    }
}

/// Where boot put Portcullis' own ranges in host RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    /// Portcullis' image, heap, stacks and tables.
    pub hyp: PhysRange,
    /// The crash region, if the host asked for one and it could be placed.
    pub crash: Option<PhysRange>,
    /// The fault report region (only with a crash region).
    pub report: Option<PhysRange>,
}

/// The `GITS_TRANSLATER` page of each ITS: the first page of its translation frame, 64 KiB above
/// `ITS_base` (IHI 0069, "The ITS register map"). A device's MSI is a write there, so the DMA
/// policies map these pages and nothing else outside RAM.
pub fn its_doorbells(machine: &Platform) -> Vec<PhysRange> {
    const PAGE: u64 = 0x1000;
    machine
        .gic
        .iter()
        .flat_map(|g| g.its.iter())
        .filter_map(|its| PhysRange::new(its.start.raw() + gits::TRANSLATION_FRAME, PAGE))
        .collect()
}

/// The host's address map: `machine`'s RAM, SMMU frame and ITS doorbells, the device pages
/// `devices` allows, the GIC pages in `trapped`, Portcullis' ranges as `placed`, and an IPA space
/// that reaches everything the tree describes within the CPU's `pa_bits`
/// ([`stage2::ipa_bits_for`]). Checked ([`AddressMap::validate`]) before it is returned.
pub fn assemble(
    machine: &Platform,
    devices: &DeviceMap,
    placed: &Placed,
    trapped: Vec<PhysRange>,
    pa_bits: u32,
) -> Result<AddressMap, PolicyError> {
    let map = AddressMap {
        ram: machine.memory.clone(),
        hyp: placed.hyp,
        crash: placed.crash,
        smmu: machine.smmu.as_ref().map(|s| s.regs),
        its_doorbells: its_doorbells(machine),
        devices: devices.allowed.clone(),
        trapped,
        report: placed.report,
        ipa_bits: stage2::ipa_bits_for(machine.max_address.saturating_sub(1), pa_bits),
    };
    map.validate()?;
    Ok(map)
}

/// The ranges no hardware-owned table of the dead kernel may make writable in crash mode, however
/// the GIC was programmed: Portcullis' own memory and the fault report.
pub fn never_writable(map: &AddressMap) -> Vec<PhysRange> {
    [Some(map.hyp), map.report].into_iter().flatten().collect()
}

#[cfg(test)]
mod tests;
