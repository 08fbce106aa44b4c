//! The device-tree reads and edits the scripts make, with Portcullis' own parser
//! ([`platform::devtree::Platform`]) and dtoolkit's model and writer, so that the scripts read a
//! tree exactly as Portcullis does (the root's `#address-cells` / `#size-cells` included) and write
//! what it reads back.

/// Offset of `boot_cpuid_phys` in the FDT header, which dtoolkit's writer zeroes.
const BOOT_CPUID_OFFSET: usize = 28;

use dtoolkit::fdt::Fdt;
use dtoolkit::model::{DeviceTree, DeviceTreeNode, DeviceTreeProperty};
use dtoolkit::standard::NodeStandard;
use dtoolkit::{Node, Property};
use platform::devtree::{Platform, dtb_slice};

/// The base of RAM (the lowest RAM address) as Portcullis reads the tree.
pub fn ram_base(dtb: &[u8]) -> Result<u64, String> {
    let platform = Platform::parse(dtb).map_err(|e| e.to_string())?;
    platform
        .memory
        .first()
        .map(|r| r.start.raw())
        .ok_or_else(|| String::from("no memory"))
}

/// The `/chosen` properties Portcullis and the host kernel read at boot; `None` leaves one as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChosenEdit {
    /// `portcullis,kernel = <address size>` in the root's cells: where the host's Image lies.
    pub kernel: Option<(u64, u64)>,
    /// `linux,initrd-start` and `linux,initrd-end` (two cells each).
    pub initrd: Option<(u64, u64)>,
    /// `bootargs`: the host's command line.
    pub bootargs: Option<String>,
    /// `portcullis,bootargs`: Portcullis' options.
    pub hyp_args: Option<String>,
}

/// `value` as `cells` big-endian cells (1 to 4); `None` if it does not fit.
fn encode(value: u64, cells: u32) -> Option<Vec<u8>> {
    let cells = usize::try_from(cells)
        .ok()
        .filter(|c| (1..=4).contains(c))?;
    let bytes = u128::from(value).to_be_bytes();
    let (high, low) = bytes.split_at(bytes.len() - 4 * cells);
    high.iter().all(|b| *b == 0).then(|| low.to_vec())
}

/// `dtb` with `/chosen` edited (created if missing), checked by parsing it back with Portcullis'
/// parser. Every other node, `/memreserve/` and the boot CPU stay; the blob is written compact
/// (QEMU's `dumpdtb` pads its tree to 1 MiB, and a tree grown past that does not boot).
pub fn set_chosen(dtb: &[u8], edit: &ChosenEdit) -> Result<Vec<u8>, String> {
    let dtb = dtb_slice(dtb).map_err(|e| e.to_string())?;
    let root = Fdt::new(dtb).map_err(|e| e.to_string())?.root();
    let (address_cells, size_cells) = (
        root.address_cells().map_err(|e| e.to_string())?,
        root.size_cells().map_err(|e| e.to_string())?,
    );
    let mut props: Vec<(&str, Vec<u8>)> = Vec::new();
    if let Some((addr, size)) = edit.kernel {
        let mut value = encode(addr, address_cells).ok_or_else(|| {
            format!("kernel address {addr:#x} does not fit in {address_cells} cell(s)")
        })?;
        value.extend(encode(size, size_cells).ok_or_else(|| {
            format!("kernel size {size:#x} does not fit in {size_cells} cell(s)")
        })?);
        props.push(("portcullis,kernel", value));
    }
    if let Some((start, end)) = edit.initrd {
        props.push(("linux,initrd-start", start.to_be_bytes().to_vec()));
        props.push(("linux,initrd-end", end.to_be_bytes().to_vec()));
    }
    for (name, text) in [
        ("bootargs", &edit.bootargs),
        ("portcullis,bootargs", &edit.hyp_args),
    ] {
        if let Some(text) = text {
            if text.contains('\0') {
                return Err(format!("{name} contains a NUL"));
            }
            let mut value = text.clone().into_bytes();
            value.push(0);
            props.push((name, value));
        }
    }

    let fdt = Fdt::new(dtb).map_err(|e| e.to_string())?;
    let mut tree = DeviceTree::from_fdt(&fdt);
    if tree.root.child_mut("chosen").is_none() {
        tree.root
            .add_child(DeviceTreeNode::new("chosen").map_err(|e| e.to_string())?);
    }
    let chosen = tree
        .root
        .child_mut("chosen")
        .ok_or_else(|| String::from("/chosen vanished"))?;
    for (name, value) in props {
        chosen.add_property(DeviceTreeProperty::new(name, value).map_err(|e| e.to_string())?);
    }
    let mut out = tree.to_dtb();
    out[BOOT_CPUID_OFFSET..BOOT_CPUID_OFFSET + 4]
        .copy_from_slice(&fdt.boot_cpuid_phys().to_be_bytes());

    let back = Platform::parse(&out).map_err(|e| format!("the edited tree does not parse: {e}"))?;
    let got = &back.chosen;
    let same = edit.kernel.is_none_or(|(a, s)| {
        got.kernel
            .is_some_and(|k| (k.start.raw(), k.size()) == (a, s))
    }) && edit.initrd.is_none_or(|(s, e)| {
        got.initrd
            .is_some_and(|r| (r.start.raw(), r.end.raw()) == (s, e))
    }) && edit
        .bootargs
        .as_ref()
        .is_none_or(|b| got.bootargs.as_ref() == Some(b))
        && edit
            .hyp_args
            .as_ref()
            .is_none_or(|b| got.portcullis_bootargs.as_ref() == Some(b));
    if !same {
        return Err(format!("the edited /chosen reads back as {got:?}"));
    }
    Ok(out)
}

/// Property `prop` of node `path`: its strings one per line if it is a list of printable strings,
/// else its cells in hex (or its bytes, if not whole cells). A path component names a node by its
/// exact name first, else by its name without unit address (`/memory` finds `/memory@40000000`),
/// as Portcullis and Linux look nodes up.
pub fn get(dtb: &[u8], path: &str, prop: &str) -> Result<String, String> {
    let fdt = Fdt::new(dtb_slice(dtb).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    if !path.starts_with('/') {
        return Err(format!("{path}: not an absolute path"));
    }
    let mut node = fdt.root();
    for component in path.split('/').filter(|c| !c.is_empty()) {
        node = node
            .children()
            .find(|c| c.name() == component)
            .or_else(|| node.child(component))
            .ok_or_else(|| format!("no node {path}"))?;
    }
    let property = node
        .property(prop)
        .ok_or_else(|| format!("{path} has no property {prop}"))?;
    let value = property.value();
    let printable = |s: &[u8]| !s.is_empty() && s.iter().all(|b| (0x20..0x7f).contains(b));
    if value.last() == Some(&0) && value[..value.len() - 1].split(|b| *b == 0).all(printable) {
        let strings: Vec<&str> = property.value_as().map_err(|e| e.to_string())?;
        return Ok(strings.join("\n"));
    }
    if let Ok(cells) = property.value_as::<Vec<u32>>() {
        let words: Vec<String> = cells.iter().map(|c| format!("{c:#x}")).collect();
        return Ok(words.join(" "));
    }
    let bytes: Vec<String> = value.iter().map(|b| format!("{b:02x}")).collect();
    Ok(bytes.join(" "))
}

// Tests unwrap freely: their inputs are fixtures they control.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
