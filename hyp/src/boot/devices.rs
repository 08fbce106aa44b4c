//! The device map: which devices of the machine the host may touch directly.
//!
//! Default-deny. A device is **allowed** (mapped as Device memory in the host's stage 2, kept in its
//! tree) only if the host needs it *and* it cannot write memory behind Portcullis' back: it is on
//! [`RULES`] as such, or it is a PCI host bridge whose every requester ID the SMMU Portcullis owns
//! translates. It is **withheld** (unmapped, `status = "disabled"` in the host's tree) if it can
//! master memory without that SMMU (fw_cfg's DMA interface, virtio-mmio transports, QEMU's dynamic
//! sysbus, a PCI host not wholly behind the SMMU, an SMMU Portcullis does not own), if the tree
//! disables it or a node above it is withheld, and if its `compatible` is on no list at all. The
//! SMMU Portcullis owns is **mediated**: unmapped, every access trapped and emulated.
//!
//! Granularity: stage 2 maps 4 KiB pages, so an allowed device that shares a page with a withheld
//! or mediated one loses that page: **withheld wins**. The lost pages are listed
//! ([`DeviceMap::conflicts`]) and logged; the host's accesses there abort.
//!
//! A node without `reg` that only opens a bus window (`simple-bus` and the like) is not a device:
//! its children decide for themselves, and its window is neither mapped nor withheld unless a rule
//! withholds the bus as a whole (QEMU's platform bus).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use platform::addr::{PhysRange, normalize_ranges, subtract_ranges};
use platform::devtree::{DeviceNode, PciHost, Platform};

use crate::stage2::PAGE_SIZE;

/// What the host gets of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Mapped as Device memory, kept in the host's tree.
    Allow,
    /// Unmapped and disabled in the host's tree.
    Withhold,
    /// Unmapped, kept in the tree: Portcullis traps and emulates every access.
    Mediated,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Allow => "allow",
            Self::Withhold => "withhold",
            Self::Mediated => "mediated",
        })
    }
}

/// One entry of [`RULES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub compatible: &'static str,
    pub decision: Decision,
    pub reason: &'static str,
}

const fn allow(compatible: &'static str, reason: &'static str) -> Rule {
    Rule {
        compatible,
        decision: Decision::Allow,
        reason,
    }
}

const fn withhold(compatible: &'static str, reason: &'static str) -> Rule {
    Rule {
        compatible,
        decision: Decision::Withhold,
        reason,
    }
}

/// The allow-list, and the bus masters known by name, with the reason for each. A node that
/// matches a withhold rule with any of its `compatible` strings is withheld whatever else it
/// matches; generic strings such as `arm,primecell` or `simple-bus` are deliberately absent (a
/// PrimeCell can be a PL330 DMA engine).
pub const RULES: &[Rule] = &[
    allow("arm,pl011", "UART, no bus master"),
    allow("arm,sbsa-uart", "UART, no bus master"),
    allow("ns16550a", "8250 UART, no bus master"),
    allow("ns16550", "8250 UART, no bus master"),
    allow("arm,pl031", "RTC, no bus master"),
    allow("arm,pl061", "GPIO, no bus master"),
    allow("cfi-flash", "NOR flash, no bus master"),
    allow(
        "arm,gic-v3",
        "interrupt controller; LPI table registers mediated separately",
    ),
    allow(
        "arm,gic-v3-its",
        "ITS; its table and queue registers mediated separately",
    ),
    allow("arm,gic-400", "interrupt controller, no bus master"),
    allow("arm,cortex-a15-gic", "interrupt controller, no bus master"),
    allow("arm,cortex-a9-gic", "interrupt controller, no bus master"),
    allow("arm,cortex-a7-gic", "interrupt controller, no bus master"),
    allow("arm,pl390", "interrupt controller, no bus master"),
    allow(
        "arm,gic-v2m-frame",
        "MSI frame: devices write it, it writes nothing",
    ),
    allow("arm,armv8-timer", "system timer, no bus master"),
    allow("arm,armv7-timer", "system timer, no bus master"),
    withhold(
        "qemu,fw-cfg-mmio",
        "fw_cfg DMA writes memory directly, not through the SMMU",
    ),
    withhold(
        "virtio,mmio",
        "virtio-mmio transport DMAs directly, not through the SMMU",
    ),
    withhold(
        "qemu,platform",
        "dynamic sysbus: devices plugged at run time, not behind the SMMU",
    ),
];

const REASON_SMMU: &str = "the SMMU Portcullis owns: trapped and emulated";
const REASON_OTHER_SMMU: &str = "an SMMU Portcullis does not own: the host could set bypass";
const REASON_PCI_BEHIND_SMMU: &str = "PCI host (ECAM, windows): every RID translated by the SMMU";
const REASON_PCI_NOT_BEHIND_SMMU: &str =
    "PCI host with RIDs outside the SMMU's iommu-map: their DMA bypasses it";
const REASON_DISABLED: &str = "disabled in the tree";
const REASON_INSIDE_WITHHELD: &str = "inside a withheld node";
const REASON_DEFAULT_DENY: &str = "not on the allow-list (default-deny)";

/// The decision for one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceEntry {
    pub path: String,
    /// The CPU ranges the decision covers: the node's `reg`, and its bus windows for a PCI host or
    /// a withheld bus.
    pub ranges: Vec<PhysRange>,
    pub decision: Decision,
    pub reason: &'static str,
    /// Whether the host's tree must be changed to hide it (withheld and still enabled there).
    pub disable_in_tree: bool,
}

impl fmt::Display for DeviceEntry {
    /// One table line: path, every range, decision, reason.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ranges = String::new();
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                ranges.push(' ');
            }
            ranges.push_str(&alloc::format!("{r}"));
        }
        if ranges.is_empty() {
            ranges.push('-');
        }
        write!(
            f,
            "{:<36} {:<8} {:<44} {}",
            self.path, self.decision, ranges, self.reason
        )
    }
}

/// Pages an allowed device shares with a withheld or mediated one: unmapped (withheld wins).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub allowed: String,
    pub withheld: String,
    pub pages: PhysRange,
}

/// The decisions for every device of the machine and the pages the host may map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceMap {
    /// One entry per device node, in tree order.
    pub entries: Vec<DeviceEntry>,
    /// The pages of allowed devices minus every page of a withheld or mediated one: sorted, merged.
    pub allowed: Vec<PhysRange>,
    pub conflicts: Vec<Conflict>,
}

impl DeviceMap {
    /// Decides every device of `platform`.
    pub fn decide(platform: &Platform) -> DeviceMap {
        let smmu_path = platform.smmu.as_ref().map(|s| s.path.as_str());
        let smmu_phandle = platform.smmu.as_ref().and_then(|s| s.phandle);
        let mut entries = Vec::new();
        // Per discovered node: whether it (or a node above it) is withheld.
        let mut withheld = Vec::with_capacity(platform.devices.len());
        for node in &platform.devices {
            let inherited = node
                .parent
                .and_then(|p| withheld.get(p).copied())
                .unwrap_or(false);
            let decided = decide_one(
                node,
                inherited,
                smmu_path,
                smmu_phandle,
                pci_host(platform, node),
            );
            withheld.push(
                decided
                    .as_ref()
                    .is_some_and(|e| e.decision == Decision::Withhold),
            );
            entries.extend(decided);
        }
        let (allowed, conflicts) = pages(&entries);
        DeviceMap {
            entries,
            allowed,
            conflicts,
        }
    }

    /// The paths to disable in the host's tree.
    pub fn to_disable(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| e.disable_in_tree)
            .map(|e| e.path.clone())
            .collect()
    }

    /// How many entries have `decision`.
    pub fn count(&self, decision: Decision) -> usize {
        self.entries
            .iter()
            .filter(|e| e.decision == decision)
            .count()
    }
}

fn pci_host<'a>(platform: &'a Platform, node: &DeviceNode) -> Option<&'a PciHost> {
    platform.pci.iter().find(|h| h.path == node.path)
}

fn is_pci_host(node: &DeviceNode) -> bool {
    node.device_type.as_deref() == Some("pci") || node.is_compatible("pci-host-ecam-generic")
}

/// Whether the SMMU with phandle `smmu` translates every requester ID of `host`'s bus range.
fn behind_smmu(host: &PciHost, smmu: Option<u32>) -> bool {
    let (Some(smmu), Some(map)) = (smmu, host.iommu_map.as_ref()) else {
        return false;
    };
    let (first, last) = host.bus_range;
    let (lo, hi) = (u32::from(first) << 8, u32::from(last) << 8 | 0xff);
    let to_smmu = |rid: u32| map.map(rid).is_some_and(|(target, _)| target == smmu);
    let span = (u64::from(hi) + 1).next_power_of_two() - 1;
    if u64::from(map.mask) & span != span {
        // A mask that folds requester IDs together: ask for each one.
        return (lo..=hi).all(to_smmu);
    }
    // Between two consecutive entry bounds the first matching entry is the same for every
    // requester ID, so one per stretch answers for all (65 536 lookups cost a few ms at boot).
    let mut starts: Vec<u32> = map
        .entries
        .iter()
        .flat_map(|e| [e.id_base, e.id_base.saturating_add(e.length)])
        .filter(|&b| b > lo && b <= hi)
        .collect();
    starts.push(lo);
    platform::sort::sort_small(&mut starts);
    starts.dedup();
    starts.into_iter().all(to_smmu)
}

fn decide_one(
    node: &DeviceNode,
    inside_withheld: bool,
    smmu_path: Option<&str>,
    smmu_phandle: Option<u32>,
    pci: Option<&PciHost>,
) -> Option<DeviceEntry> {
    let rule = |decision: Decision| {
        RULES
            .iter()
            .find(|r| r.decision == decision && node.compatible.iter().any(|c| c == r.compatible))
    };
    let (decision, reason) = if inside_withheld {
        (Decision::Withhold, REASON_INSIDE_WITHHELD)
    } else if !node.available {
        (Decision::Withhold, REASON_DISABLED)
    } else if smmu_path == Some(node.path.as_str()) {
        (Decision::Mediated, REASON_SMMU)
    } else if node.is_compatible("arm,smmu-v3") {
        (Decision::Withhold, REASON_OTHER_SMMU)
    } else if let Some(r) = rule(Decision::Withhold) {
        (Decision::Withhold, r.reason)
    } else if is_pci_host(node) {
        if pci.is_some_and(|h| behind_smmu(h, smmu_phandle)) {
            (Decision::Allow, REASON_PCI_BEHIND_SMMU)
        } else {
            (Decision::Withhold, REASON_PCI_NOT_BEHIND_SMMU)
        }
    } else if let Some(r) = rule(Decision::Allow) {
        (Decision::Allow, r.reason)
    } else if node.regs.is_empty() {
        // Only a bus window: its children decide.
        return None;
    } else {
        (Decision::Withhold, REASON_DEFAULT_DENY)
    };
    let mut ranges = node.regs.clone();
    if decision == Decision::Withhold || is_pci_host(node) {
        ranges.extend(node.windows.iter().copied());
    }
    Some(DeviceEntry {
        path: node.path.clone(),
        ranges,
        decision,
        reason,
        disable_in_tree: decision == Decision::Withhold && node.available && !inside_withheld,
    })
}

/// The smallest page-aligned range containing `range` (saturating at the top of the space).
fn pages_of(range: &PhysRange) -> PhysRange {
    let start = range.start.align_down(PAGE_SIZE).raw();
    let end = range
        .end
        .checked_align_up(PAGE_SIZE)
        .map_or(!(PAGE_SIZE - 1), |e| e.raw());
    PhysRange::from_bounds(start, end.max(start))
}

/// The allowed pages (withheld wins) and the pages allowed devices lose to withheld ones.
fn pages(entries: &[DeviceEntry]) -> (Vec<PhysRange>, Vec<Conflict>) {
    let denied: Vec<(&DeviceEntry, PhysRange)> = entries
        .iter()
        .filter(|e| e.decision != Decision::Allow)
        .flat_map(|e| e.ranges.iter().map(move |r| (e, pages_of(r))))
        .collect();
    let mut allowed = Vec::new();
    let mut conflicts = Vec::new();
    for entry in entries.iter().filter(|e| e.decision == Decision::Allow) {
        for range in &entry.ranges {
            let wanted = pages_of(range);
            for (other, cut) in &denied {
                if let Some(pages) = wanted.intersection(cut) {
                    conflicts.push(Conflict {
                        allowed: entry.path.clone(),
                        withheld: other.path.clone(),
                        pages,
                    });
                }
            }
            allowed.push(wanted);
        }
    }
    let denied: Vec<PhysRange> = denied.into_iter().map(|(_, r)| r).collect();
    let mut allowed = subtract_ranges(&allowed, &denied);
    normalize_ranges(&mut allowed);
    (allowed, conflicts)
}

// Tests unwrap freely: their inputs are fixtures they control.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
