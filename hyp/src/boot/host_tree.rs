//! The device tree the host is given: the boot loader's tree with Portcullis' memory taken out and
//! reserved, the crash region fixed on the command line, Portcullis' own `/chosen` properties
//! removed, the devices the device map withholds disabled, and optionally the SMMU hidden.
//!
//! The incoming tree is fully validated by [`Platform::parse`] first (structure, nesting depth,
//! duplicate names, cell sizes) because the model dtoolkit edits it in recurses over nodes and
//! keys children by name.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use dtoolkit::error::ModelError;
use dtoolkit::fdt::Fdt;
use dtoolkit::model::{DeviceTree, DeviceTreeNode, DeviceTreeProperty};
use dtoolkit::{Node, Property};
use platform::addr::{PhysRange, subtract_ranges};
use platform::devtree::{DtError, Platform, Smmu, device_type_matches, dtb_slice};

use super::cmdline::rewrite_crashkernel;
use super::layout::DTB_MAX_SIZE;

/// What to change in the host's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTreeParams {
    /// Portcullis' own memory: cut out of every `/memory` node and reserved `no-map`.
    pub portcullis: PhysRange,
    /// The placed crash region, written as the only `crashkernel=SIZE@BASE`; `None` removes every
    /// `crashkernel=`.
    pub crash_region: Option<PhysRange>,
    /// Disable the SMMU node and drop `iommu-map` / `iommus` references to it, so the host drives
    /// no SMMU at all.
    pub hide_smmu: bool,
    /// Where fault reports for the capture kernel go: reserved `no-map` as
    /// `portcullis-report@…` with `compatible = "portcullis,fault-report"`.
    pub fault_report: Option<PhysRange>,
    /// Nodes to give `status = "disabled"`: the devices withheld from the host
    /// ([`super::devices::DeviceMap::to_disable`]). A path the tree lacks is skipped.
    pub disable: Vec<String>,
}

/// Why the host's tree could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostTreeError {
    /// The incoming tree is unusable.
    Parse(DtError),
    /// An address or size cannot be written in the cells of the node it belongs to.
    DoesNotFit {
        path: String,
        value: u64,
        cells: u32,
    },
    /// Portcullis' memory covers all of RAM: the host would have none.
    NoMemoryLeft { portcullis: PhysRange },
    /// The output exceeds what Linux accepts.
    TooLarge { size: usize },
    /// dtoolkit refused a node or property name (a broken invariant: the names are Portcullis').
    Model(ModelError),
    /// The tree's `/reserved-memory` has other `#address-cells` / `#size-cells` than the root:
    /// Linux would ignore every reservation in it (Portcullis' and the fault report's included).
    ReservedMemoryCells { node: (u32, u32), root: (u32, u32) },
}

impl fmt::Display for HostTreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Parse(e) => write!(f, "cannot build the host's device tree: {e}"),
            Self::DoesNotFit { path, value, cells } => {
                write!(f, "{path}: {value:#x} does not fit in {cells} cell(s)")
            }
            Self::NoMemoryLeft { portcullis } => {
                write!(
                    f,
                    "Portcullis' memory {portcullis} covers all of RAM, none is left for the host"
                )
            }
            Self::TooLarge { size } => write!(
                f,
                "the host's device tree is {size:#x} bytes, above the {DTB_MAX_SIZE:#x} Linux \
                 accepts"
            ),
            Self::Model(e) => write!(f, "cannot edit the host's device tree: {e}"),
            Self::ReservedMemoryCells { node, root } => write!(
                f,
                "/reserved-memory has #address-cells/#size-cells {node:?}, the root {root:?}: \
                 Linux would ignore its reservations"
            ),
        }
    }
}

impl core::error::Error for HostTreeError {}

impl From<DtError> for HostTreeError {
    fn from(e: DtError) -> Self {
        Self::Parse(e)
    }
}

impl From<ModelError> for HostTreeError {
    fn from(e: ModelError) -> Self {
        Self::Model(e)
    }
}

/// Offset of `boot_cpuid_phys` in the FDT header, which dtoolkit's writer zeroes.
const BOOT_CPUID_OFFSET: usize = 28;

/// Builds the host's device tree from the boot loader's (`input`, which may be longer than the
/// tree).
pub fn build_host_tree(input: &[u8], params: &HostTreeParams) -> Result<Vec<u8>, HostTreeError> {
    let platform = Platform::parse(dtb_slice(input)?)?;
    build_host_tree_from(input, &platform, params)
}

/// [`build_host_tree`] with the incoming tree already parsed into `platform` (at boot: parsing
/// it again would double the most expensive step of Portcullis' boot).
pub fn build_host_tree_from(
    input: &[u8],
    platform: &Platform,
    params: &HostTreeParams,
) -> Result<Vec<u8>, HostTreeError> {
    let input = dtb_slice(input)?;
    if subtract_ranges(&platform.memory, &[params.portcullis]).is_empty() {
        return Err(HostTreeError::NoMemoryLeft {
            portcullis: params.portcullis,
        });
    }
    let fdt = Fdt::new(input).map_err(DtError::from)?;
    let mut tree = DeviceTree::from_fdt(&fdt);
    let root_cells = cells_of(&tree.root);

    cut_memory(&mut tree.root, root_cells, params.portcullis)?;

    let reserved = reserved_memory(&mut tree.root, root_cells)?;
    add_reserved(
        reserved,
        "portcullis",
        "portcullis,hypervisor",
        params.portcullis,
    )?;
    if let Some(report) = params.fault_report {
        add_reserved(
            reserved,
            "portcullis-report",
            "portcullis,fault-report",
            report,
        )?;
    }

    rewrite_chosen(&mut tree.root, platform, params.crash_region)?;

    for path in &params.disable {
        if let Some(node) = tree.find_node_mut(path) {
            node.add_property(DeviceTreeProperty::new("status", "disabled")?);
        }
    }

    if params.hide_smmu
        && let Some(smmu) = &platform.smmu
    {
        hide_smmu(&mut tree, smmu);
    }

    let mut dtb = tree.to_dtb();
    if let Some(field) = dtb.get_mut(BOOT_CPUID_OFFSET..BOOT_CPUID_OFFSET + 4) {
        field.copy_from_slice(&fdt.boot_cpuid_phys().to_be_bytes());
    }
    if dtb.len() as u64 > DTB_MAX_SIZE {
        return Err(HostTreeError::TooLarge { size: dtb.len() });
    }
    Ok(dtb)
}

/// `#address-cells` / `#size-cells` of `node` (already validated by [`Platform::parse`]).
fn cells_of(node: &DeviceTreeNode) -> (u32, u32) {
    let get = |name, default| prop_u32(node, name).unwrap_or(default);
    (get("#address-cells", 2), get("#size-cells", 1))
}

fn prop_bytes(node: &DeviceTreeNode, name: &str) -> Option<Vec<u8>> {
    Node::property(node, name).map(|p| p.value().to_vec())
}

fn prop_u32(node: &DeviceTreeNode, name: &str) -> Option<u32> {
    prop_bytes(node, name)
        .and_then(|v| v.try_into().ok())
        .map(u32::from_be_bytes)
}

fn be_cells(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn set_prop(node: &mut DeviceTreeNode, name: &str, value: Vec<u8>) -> Result<(), ModelError> {
    node.add_property(DeviceTreeProperty::new(name, value)?);
    Ok(())
}

/// Decodes `(address, size)` pairs; `None` if the length does not fit or a value exceeds 64 bits.
fn decode_reg(bytes: &[u8], (address_cells, size_cells): (u32, u32)) -> Option<Vec<PhysRange>> {
    let cells = be_cells(bytes);
    let entry = (address_cells + size_cells) as usize;
    if entry == 0 || !bytes.len().is_multiple_of(4) || !cells.len().is_multiple_of(entry) {
        return None;
    }
    let number = |part: &[u32]| -> Option<u64> {
        let wide = part
            .iter()
            .fold(0u128, |acc, c| (acc << 32) | u128::from(*c));
        u64::try_from(wide).ok()
    };
    cells
        .chunks_exact(entry)
        .map(|e| {
            let (a, s) = e.split_at(address_cells as usize);
            PhysRange::new(number(a)?, number(s)?)
        })
        .collect()
}

/// Encodes ranges as `(address, size)` pairs in the given cells.
fn encode_reg(
    ranges: &[PhysRange],
    (address_cells, size_cells): (u32, u32),
    path: &str,
) -> Result<Vec<u8>, HostTreeError> {
    let mut out = Vec::new();
    let mut push = |value: u64, cells: u32| -> Result<(), HostTreeError> {
        if cells < 2 && value >> (32 * cells) != 0 {
            return Err(HostTreeError::DoesNotFit {
                path: path.to_owned(),
                value,
                cells,
            });
        }
        for i in (0..cells).rev() {
            let word = if i >= 2 {
                0
            } else {
                (value >> (32 * i)) as u32
            };
            out.extend_from_slice(&word.to_be_bytes());
        }
        Ok(())
    };
    for r in ranges {
        push(r.start.raw(), address_cells)?;
        push(r.size(), size_cells)?;
    }
    Ok(out)
}

fn is_memory_node(node: &DeviceTreeNode) -> bool {
    prop_bytes(node, "device_type").is_some_and(|v| device_type_matches(&v, "memory"))
}

/// Takes `cut` out of every `/memory` node's `reg` and `linux,usable-memory`, splitting entries;
/// a node left without memory is removed.
fn cut_memory(
    root: &mut DeviceTreeNode,
    root_cells: (u32, u32),
    cut: PhysRange,
) -> Result<(), HostTreeError> {
    let names: Vec<String> = Node::children(root)
        .filter(|c| is_memory_node(c))
        .map(|c| String::from(Node::name(c)))
        .collect();
    for name in names {
        let Some(node) = root.child_mut(&name) else {
            continue;
        };
        let mut emptied = false;
        for prop in ["reg", "linux,usable-memory"] {
            let Some(ranges) = prop_bytes(node, prop).and_then(|b| decode_reg(&b, root_cells))
            else {
                continue;
            };
            if !ranges.iter().any(|r| r.overlaps(&cut)) {
                continue;
            }
            let mut kept = Vec::new();
            for r in &ranges {
                kept.extend(subtract_ranges(&[*r], &[cut]));
            }
            emptied |= prop == "reg" && kept.is_empty();
            set_prop(
                node,
                prop,
                encode_reg(&kept, root_cells, &format!("/{name}"))?,
            )?;
        }
        if emptied {
            root.remove_child(&name);
        }
    }
    Ok(())
}

/// `/reserved-memory`, created if missing with the root's cells (Linux ignores the node unless its
/// cells equal the root's) and an empty `ranges`.
///
/// An existing `/reserved-memory` must be in the form Linux accepts (`__reserved_mem_check_root`:
/// the root's cells and a `ranges` property), or Linux ignores every reservation in it: a missing
/// `ranges` is added (empty: children's addresses are root addresses), other cells are an error.
fn reserved_memory(
    root: &mut DeviceTreeNode,
    (address_cells, size_cells): (u32, u32),
) -> Result<&mut DeviceTreeNode, HostTreeError> {
    if let Some(existing) = root.child_mut("reserved-memory") {
        let cells = cells_of(existing);
        if cells != (address_cells, size_cells) {
            return Err(HostTreeError::ReservedMemoryCells {
                node: cells,
                root: (address_cells, size_cells),
            });
        }
        if Node::property(&*existing, "ranges").is_none() {
            set_prop(existing, "ranges", Vec::new())?;
        }
    } else {
        let node = DeviceTreeNode::builder("reserved-memory")?
            .property(DeviceTreeProperty::new("#address-cells", address_cells)?)
            .property(DeviceTreeProperty::new("#size-cells", size_cells)?)
            .property(DeviceTreeProperty::new("ranges", Vec::<u8>::new())?)
            .build();
        root.add_child(node);
    }
    root.child_mut("reserved-memory")
        .ok_or(HostTreeError::Model(ModelError::InvalidNodeName(
            String::from("reserved-memory"),
        )))
}

/// Adds `<name>@<addr>` { reg, no-map, compatible } under `/reserved-memory`. Linux reads the
/// children's `reg` as root addresses (it only checks that `ranges` exists), so no translation.
fn add_reserved(
    reserved: &mut DeviceTreeNode,
    name: &str,
    compatible: &str,
    range: PhysRange,
) -> Result<(), HostTreeError> {
    let node_name = format!("{name}@{:x}", range.start.raw());
    let path = format!("/reserved-memory/{node_name}");
    let reg = encode_reg(&[range], cells_of(reserved), &path)?;
    let node = DeviceTreeNode::builder(node_name)?
        .property(DeviceTreeProperty::new("compatible", compatible)?)
        .property(DeviceTreeProperty::new("reg", reg)?)
        .property(DeviceTreeProperty::new("no-map", Vec::<u8>::new())?)
        .build();
    reserved.add_child(node);
    Ok(())
}

/// The host's `bootargs` with the crash region fixed, and Portcullis' own properties removed.
fn rewrite_chosen(
    root: &mut DeviceTreeNode,
    platform: &Platform,
    crash_region: Option<PhysRange>,
) -> Result<(), HostTreeError> {
    if root.child_mut("chosen").is_none() {
        root.add_child(DeviceTreeNode::new("chosen")?);
    }
    let Some(chosen) = root.child_mut("chosen") else {
        return Ok(());
    };
    let old = platform.chosen.bootargs.as_deref();
    let new = rewrite_crashkernel(old.unwrap_or(""), crash_region);
    if old.is_some() || !new.is_empty() {
        chosen.add_property(DeviceTreeProperty::new("bootargs", new)?);
    }
    chosen.remove_property("portcullis,kernel");
    chosen.remove_property("portcullis,bootargs");
    Ok(())
}

fn for_each_node(node: &DeviceTreeNode, f: &mut impl FnMut(&DeviceTreeNode)) {
    f(node);
    for child in Node::children(node) {
        for_each_node(child, f);
    }
}

fn for_each_node_mut(node: &mut DeviceTreeNode, f: &mut impl FnMut(&mut DeviceTreeNode)) {
    f(node);
    for child in node.children_mut() {
        for_each_node_mut(child, f);
    }
}

/// Disables the SMMU node and removes every `iommu-map` entry and `iommus` specifier that names
/// it, so the host neither probes it nor expects translation from it.
fn hide_smmu(tree: &mut DeviceTree, smmu: &Smmu) {
    if let Some(node) = tree.find_node_mut(&smmu.path) {
        node.add_property(DeviceTreeProperty::new_unchecked("status", "disabled"));
    }
    let Some(phandle) = smmu.phandle else { return };

    let mut iommu_cells: Vec<(u32, u32)> = Vec::new();
    for_each_node(&tree.root, &mut |node| {
        if let (Some(ph), Some(cells)) = (prop_u32(node, "phandle"), prop_u32(node, "#iommu-cells"))
        {
            iommu_cells.push((ph, cells));
        }
    });
    let cells_for = |ph: u32| {
        iommu_cells
            .iter()
            .find(|(p, _)| *p == ph)
            .map(|(_, c)| *c as usize)
    };

    for_each_node_mut(&mut tree.root, &mut |node| {
        if let Some(map) = prop_bytes(node, "iommu-map") {
            let cells = be_cells(&map);
            if map.len().is_multiple_of(16) {
                let kept: Vec<u32> = cells
                    .chunks_exact(4)
                    .filter(|entry| entry[1] != phandle)
                    .flatten()
                    .copied()
                    .collect();
                if kept.is_empty() {
                    node.remove_property("iommu-map");
                    node.remove_property("iommu-map-mask");
                } else if kept.len() != cells.len() {
                    node.add_property(DeviceTreeProperty::new_unchecked("iommu-map", kept));
                }
            }
        }
        if let Some(list) = prop_bytes(node, "iommus") {
            let cells = be_cells(&list);
            let mut kept = Vec::new();
            let mut rest = cells.as_slice();
            let mut parsed = list.len().is_multiple_of(4);
            while let Some((&ph, tail)) = rest.split_first() {
                let Some(n) = cells_for(ph).filter(|n| *n <= tail.len()) else {
                    parsed = false;
                    break;
                };
                let (spec, next) = tail.split_at(n);
                if ph != phandle {
                    kept.push(ph);
                    kept.extend_from_slice(spec);
                }
                rest = next;
            }
            // A list that does not parse is left alone: the disabled SMMU is not probed anyway.
            if parsed && kept.is_empty() {
                node.remove_property("iommus");
            } else if parsed && kept.len() != cells.len() {
                node.add_property(DeviceTreeProperty::new_unchecked("iommus", kept));
            }
        }
    });
}

// Tests unwrap freely: their inputs are fixtures they control.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
