//! The device tree the host is given: the boot loader's tree with Portcullis' memory taken out and
//! reserved, the crash region fixed on the command line, Portcullis' own `/chosen` properties
//! removed, the devices the device map withholds disabled, and optionally the SMMU hidden.
//!
//! The incoming tree is fully validated by [`Platform::parse`] first (structure, nesting depth,
//! duplicate names, cell sizes); the rewrite then copies it token by token ([`fdt`]), editing
//! properties on the way, without a model of the whole tree (building and writing dtoolkit's model
//! was a third of Portcullis' boot). What the edits do, node by node, is what a model edit would
//! do: a replaced property keeps its place, an added one goes to the node's end, an added node to
//! its parent's end.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use dtoolkit::error::ModelError;
use platform::addr::{PhysRange, subtract_ranges};
use platform::devtree::{DtError, Platform, device_type_matches, dtb_slice};

use fdt::{Input, Malformed, Output, Prop, Token};

use super::cmdline::rewrite_crashkernel;
use super::layout::DTB_MAX_SIZE;

mod fdt;

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
    /// The incoming tree's blocks or tokens are malformed at `offset` (of the structure block;
    /// of the blob for the header and the memory reservations).
    Malformed { offset: usize },
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
            Self::Malformed { offset } => write!(
                f,
                "cannot build the host's device tree: the incoming tree is malformed at {offset:#x}"
            ),
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
    let input =
        Input::new(input).map_err(|Malformed(offset)| HostTreeError::Malformed { offset })?;
    let mut edit = Editor::new(&input, platform, params)?;
    edit.run()?;
    let dtb = edit.out.finish(&input);
    if dtb.len() as u64 > DTB_MAX_SIZE {
        return Err(HostTreeError::TooLarge { size: dtb.len() });
    }
    Ok(dtb)
}

/// A property value: the input's, or one Portcullis composed.
enum Value<'a> {
    Set(Vec<u8>),
    Remove,
    /// Set only if the node lacks the property (the value is added at the node's end).
    Default(&'a [u8]),
}

/// What happens to one node's properties: `(name, value)` in the order they are applied.
type Edits<'a> = Vec<(&'static str, Value<'a>)>;

/// The node being copied, for what is appended at its end.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Root,
    Reserved,
    Other,
}

/// The streaming rewrite: the input copied token by token, each node's properties edited as
/// [`build_host_tree_from`] documents.
struct Editor<'a, 'p> {
    input: &'a Input<'a>,
    platform: &'p Platform,
    params: &'p HostTreeParams,
    out: Output<'a>,
    root_cells: (u32, u32),
    /// `(phandle, #iommu-cells)` of every node, when the SMMU is hidden.
    iommu_cells: Vec<(u32, u32)>,
    /// The reserved-memory children Portcullis adds: (node name, compatible, range).
    reserved: Vec<(String, &'static str, PhysRange)>,
    seen_reserved: bool,
    seen_chosen: bool,
}

fn find<'v>(props: &[Prop<'v>], name: &str) -> Option<&'v [u8]> {
    props
        .iter()
        .find(|p| p.name == name.as_bytes())
        .map(|p| p.value)
}

fn u32_of(props: &[Prop<'_>], name: &str) -> Option<u32> {
    find(props, name)
        .and_then(|v| <[u8; 4]>::try_from(v).ok())
        .map(u32::from_be_bytes)
}

fn cells_in(props: &[Prop<'_>]) -> (u32, u32) {
    (
        u32_of(props, "#address-cells").unwrap_or(2),
        u32_of(props, "#size-cells").unwrap_or(1),
    )
}

fn with_nul(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 1);
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    v
}

fn malformed(Malformed(offset): Malformed) -> HostTreeError {
    HostTreeError::Malformed { offset }
}

impl<'a, 'p> Editor<'a, 'p> {
    fn new(
        input: &'a Input<'a>,
        platform: &'p Platform,
        params: &'p HostTreeParams,
    ) -> Result<Self, HostTreeError> {
        let mut reserved = Vec::new();
        let mut add = |name: &str, compatible, range: PhysRange| {
            reserved.push((format!("{name}@{:x}", range.start.raw()), compatible, range));
        };
        add("portcullis", "portcullis,hypervisor", params.portcullis);
        if let Some(report) = params.fault_report {
            add("portcullis-report", "portcullis,fault-report", report);
        }
        let mut edit = Self {
            input,
            platform,
            params,
            out: Output::new(input),
            root_cells: (2, 1),
            iommu_cells: Vec::new(),
            reserved,
            seen_reserved: false,
            seen_chosen: false,
        };
        if params.hide_smmu && platform.smmu.as_ref().is_some_and(|s| s.phandle.is_some()) {
            edit.collect_iommu_cells()?;
        }
        Ok(edit)
    }

    fn collect_iommu_cells(&mut self) -> Result<(), HostTreeError> {
        let mut off = 0;
        loop {
            let (tok, next) = self.input.token(off).map_err(malformed)?;
            match tok {
                Token::Begin(_) => {
                    let (props, after) = self.input.props(next).map_err(malformed)?;
                    if let (Some(ph), Some(cells)) =
                        (u32_of(&props, "phandle"), u32_of(&props, "#iommu-cells"))
                    {
                        self.iommu_cells.push((ph, cells));
                    }
                    off = after;
                }
                Token::Finish => return Ok(()),
                _ => off = next,
            }
        }
    }

    fn run(&mut self) -> Result<(), HostTreeError> {
        let mut off = 0;
        // (path length before this node, kind) of each open node.
        let mut open: Vec<(usize, Kind)> = Vec::new();
        let mut path = String::new();
        loop {
            let (tok, next) = self.input.token(off).map_err(malformed)?;
            match tok {
                Token::Nop => off = next,
                Token::Finish => {
                    if !open.is_empty() {
                        return Err(HostTreeError::Malformed { offset: off });
                    }
                    return Ok(());
                }
                Token::Prop(p) => {
                    // A property after a child node: copied as it is.
                    self.out.prop_at(p.name_off, p.value);
                    off = next;
                }
                Token::End => {
                    let (len, kind) = open.pop().ok_or(HostTreeError::Malformed { offset: off })?;
                    self.close(kind)?;
                    self.out.end();
                    path.truncate(len);
                    off = next;
                }
                Token::Begin(name) => {
                    let name = core::str::from_utf8(name)
                        .map_err(|_| HostTreeError::Malformed { offset: off })?;
                    let depth = open.len();
                    if depth > platform::devtree::MAX_DEPTH {
                        return Err(HostTreeError::Malformed { offset: off });
                    }
                    let before = path.len();
                    if depth == 0 {
                        path.push('/');
                    } else {
                        if depth > 1 {
                            path.push('/');
                        }
                        path.push_str(name);
                    }
                    let (props, after) = self.input.props(next).map_err(malformed)?;
                    let parent = open.last().map(|(_, k)| *k);
                    match self.node(&path, name, depth, parent, &props)? {
                        Some((edits, kind)) => {
                            self.out.begin(name.as_bytes());
                            self.emit(&props, &edits);
                            open.push((before, kind));
                            off = after;
                        }
                        None => {
                            path.truncate(before);
                            off = self.input.skip_subtree(after).map_err(malformed)?;
                        }
                    }
                }
            }
        }
    }

    /// The edits of the node at `path`, or `None` to drop it with its subtree.
    fn node(
        &mut self,
        path: &str,
        name: &str,
        depth: usize,
        parent: Option<Kind>,
        props: &[Prop<'a>],
    ) -> Result<Option<(Edits<'a>, Kind)>, HostTreeError> {
        let mut edits: Edits<'a> = Vec::new();
        let mut kind = Kind::Other;
        if depth == 0 {
            self.root_cells = cells_in(props);
            kind = Kind::Root;
        } else if depth == 1 && name == "reserved-memory" {
            let cells = cells_in(props);
            if cells != self.root_cells {
                return Err(HostTreeError::ReservedMemoryCells {
                    node: cells,
                    root: self.root_cells,
                });
            }
            edits.push(("ranges", Value::Default(&[])));
            self.seen_reserved = true;
            kind = Kind::Reserved;
        } else if depth == 1 && name == "chosen" {
            self.seen_chosen = true;
            edits.extend(self.chosen_edits());
        } else if depth == 1
            && find(props, "device_type").is_some_and(|v| device_type_matches(v, "memory"))
        {
            let cut = self.params.portcullis;
            let mut emptied = false;
            for prop in ["reg", "linux,usable-memory"] {
                let Some(ranges) = find(props, prop).and_then(|b| decode_reg(b, self.root_cells))
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
                let value = encode_reg(&kept, self.root_cells, &format!("/{name}"))?;
                edits.push((prop, Value::Set(value)));
            }
            if emptied {
                return Ok(None);
            }
        } else if parent == Some(Kind::Reserved) && self.reserved.iter().any(|(n, ..)| n == name) {
            // Replaced by Portcullis' node of the same name, added at the end.
            return Ok(None);
        }

        let hidden =
            self.params.hide_smmu && self.platform.smmu.as_ref().is_some_and(|s| s.path == path);
        if hidden || self.params.disable.iter().any(|d| d == path) {
            edits.push(("status", Value::Set(with_nul("disabled"))));
        }
        if self.params.hide_smmu
            && let Some(phandle) = self.platform.smmu.as_ref().and_then(|s| s.phandle)
        {
            self.unlink_smmu(props, phandle, &mut edits);
        }
        Ok(Some((edits, kind)))
    }

    /// The host's `bootargs` with the crash region fixed, and Portcullis' own properties removed.
    fn chosen_edits(&self) -> Edits<'a> {
        let mut edits = Vec::new();
        let old = self.platform.chosen.bootargs.as_deref();
        let new = rewrite_crashkernel(old.unwrap_or(""), self.params.crash_region);
        if old.is_some() || !new.is_empty() {
            edits.push(("bootargs", Value::Set(with_nul(&new))));
        }
        edits.push(("portcullis,kernel", Value::Remove));
        edits.push(("portcullis,bootargs", Value::Remove));
        edits
    }

    /// Removes every `iommu-map` entry and `iommus` specifier that names the SMMU, so the host
    /// expects no translation from it.
    fn unlink_smmu(&self, props: &[Prop<'a>], phandle: u32, edits: &mut Edits<'a>) {
        let cells_for = |ph: u32| {
            self.iommu_cells
                .iter()
                .find(|(p, _)| *p == ph)
                .map(|(_, c)| *c as usize)
        };
        if let Some(map) = find(props, "iommu-map") {
            let cells = be_cells(map);
            if map.len().is_multiple_of(16) {
                let kept: Vec<u32> = cells
                    .chunks_exact(4)
                    .filter(|entry| entry[1] != phandle)
                    .flatten()
                    .copied()
                    .collect();
                if kept.is_empty() {
                    edits.push(("iommu-map", Value::Remove));
                    edits.push(("iommu-map-mask", Value::Remove));
                } else if kept.len() != cells.len() {
                    edits.push(("iommu-map", Value::Set(cells_bytes(&kept))));
                }
            }
        }
        if let Some(list) = find(props, "iommus") {
            let cells = be_cells(list);
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
                edits.push(("iommus", Value::Remove));
            } else if parsed && kept.len() != cells.len() {
                edits.push(("iommus", Value::Set(cells_bytes(&kept))));
            }
        }
    }

    /// Copies `props` with `edits` applied: a set property keeps its place, one the node lacks
    /// goes at its end, a removed one is dropped.
    fn emit(&mut self, props: &[Prop<'a>], edits: &Edits<'a>) {
        let edit_of = |name: &[u8]| {
            edits
                .iter()
                .rev()
                .find(|(n, _)| n.as_bytes() == name)
                .map(|(_, v)| v)
        };
        for p in props {
            match edit_of(p.name) {
                None | Some(Value::Default(_)) => {
                    self.out.prop_at(p.name_off, p.value);
                }
                Some(Value::Set(v)) => self.out.prop_at(p.name_off, v),
                Some(Value::Remove) => {}
            }
        }
        for (i, (name, value)) in edits.iter().enumerate() {
            let later = edits[i + 1..].iter().any(|(n, _)| n == name);
            if later || props.iter().any(|p| p.name == name.as_bytes()) {
                continue;
            }
            match value {
                Value::Set(v) => self.out.prop(name, v),
                Value::Default(v) => self.out.prop(name, v),
                Value::Remove => {}
            }
        }
    }

    /// What a node gets at its end, before its `END_NODE`.
    fn close(&mut self, kind: Kind) -> Result<(), HostTreeError> {
        match kind {
            Kind::Reserved => self.reserved_children(),
            Kind::Root => {
                if !self.seen_reserved {
                    let (a, s) = self.root_cells;
                    self.out.begin(b"reserved-memory");
                    self.out.prop("#address-cells", &a.to_be_bytes());
                    self.out.prop("#size-cells", &s.to_be_bytes());
                    self.out.prop("ranges", &[]);
                    self.reserved_children()?;
                    self.out.end();
                }
                if !self.seen_chosen {
                    self.out.begin(b"chosen");
                    for (name, value) in self.chosen_edits() {
                        if let Value::Set(v) = value {
                            self.out.prop(name, &v);
                        }
                    }
                    self.out.end();
                }
                Ok(())
            }
            Kind::Other => Ok(()),
        }
    }

    /// Portcullis' `/reserved-memory` children: `<name>@<addr>` { compatible, reg, no-map }.
    /// Linux reads their `reg` as root addresses (it only checks that `ranges` exists).
    fn reserved_children(&mut self) -> Result<(), HostTreeError> {
        for (name, compatible, range) in core::mem::take(&mut self.reserved) {
            let path = format!("/reserved-memory/{name}");
            let reg = encode_reg(&[range], self.root_cells, &path)?;
            self.out.begin(name.as_bytes());
            self.out.prop("compatible", &with_nul(compatible));
            self.out.prop("reg", &reg);
            self.out.prop("no-map", &[]);
            self.out.end();
        }
        Ok(())
    }
}

fn cells_bytes(cells: &[u32]) -> Vec<u8> {
    cells.iter().flat_map(|c| c.to_be_bytes()).collect()
}

fn be_cells(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
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

// Tests unwrap freely: their inputs are fixtures they control.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
