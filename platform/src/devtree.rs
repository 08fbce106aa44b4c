//! Address-map discovery from the flattened device tree.
//!
//! [`Platform::parse`] reads, from the tree the boot loader hands over, everything Portcullis needs
//! to know about the machine: RAM, what is already reserved, the CPUs and how to start them, the
//! interrupt controller, the console, the SMMU, the PCI host bridges (with their RID to StreamID
//! maps) and Portcullis' own boot interface in `/chosen`. No address is assumed: every one comes
//! from a `reg` or `ranges` property, decoded with the `#address-cells` / `#size-cells` of the node's
//! parent and translated through every `ranges` on the way up to the root.
//!
//! Every other node with registers or bus windows the CPU can reach is listed in
//! [`Platform::devices`] with its `compatible`, its status (inherited from its ancestors) and its
//! translated ranges, undecided: the hypervisor's device map decides what the host may have.
//!
//! The tree is boot-loader input, so every malformed property is a [`DtError`], never a panic.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use dtoolkit::error::{FdtParseError, PropertyError};
use dtoolkit::fdt::Fdt;
use dtoolkit::standard::Status;
use dtoolkit::{Cells, FromPropertyValue, ToCellInt};

use crate::fdt;

use crate::addr::{PhysRange, normalize_ranges};

/// The deepest node nesting accepted. Real trees stay below 10; the limit bounds the recursion of
/// every later walk over the tree (including the rewrite of the host's tree).
pub const MAX_DEPTH: usize = 32;

/// Linux's limit (`OF_MAX_ADDR_CELLS`) for `#address-cells` and `#size-cells`.
const MAX_CELLS: u32 = 4;

/// The most cells accepted for one interrupt specifier.
const MAX_INTERRUPT_CELLS: u32 = 8;

const FDT_MAGIC: u32 = 0xd00d_feed;

/// Size of the flattened device tree header (version 17).
pub const FDT_HEADER_LEN: usize = 40;

/// The affinity fields of MPIDR_EL1 (Aff3 and Aff2..Aff0), the part a CPU node's `reg` names.
pub const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;

/// Why a device tree could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DtError {
    /// The blob is shorter than its header (or the header itself) needs.
    Truncated { needed: usize, available: usize },
    /// The blob does not start with the device-tree magic.
    NotADeviceTree { magic: u32 },
    /// The header or the structure block is malformed (as reported by the FDT parser).
    Malformed(FdtParseError),
    /// The structure block does not read as tokens at this offset ([`crate::fdt`]; dtoolkit's
    /// validation accepts no such tree, so this is a second line of defence).
    Stream(fdt::Malformed),
    /// Nodes are nested deeper than [`MAX_DEPTH`].
    TooDeep { path: String },
    /// Two sibling nodes, or two properties of one node, have the same name.
    Duplicate {
        path: String,
        what: &'static str,
        name: String,
    },
    /// No available `device_type = "memory"` node with a non-empty `reg` under the root.
    NoMemory,
    /// `#address-cells`, `#size-cells` or `#interrupt-cells` is malformed or out of range.
    BadCells {
        path: String,
        property: &'static str,
    },
    /// A `reg` whose length is not a multiple of the parent's (address + size) cells.
    BadReg {
        path: String,
        len: usize,
        address_cells: u32,
        size_cells: u32,
    },
    /// A `ranges` whose length is not a multiple of its entry size.
    BadRanges {
        path: String,
        len: usize,
        entry_cells: u32,
    },
    /// A property Portcullis needs has the wrong shape or value.
    BadProperty {
        path: String,
        property: &'static str,
        reason: &'static str,
    },
    /// A node Portcullis needs lacks a property.
    MissingProperty {
        path: String,
        property: &'static str,
    },
    /// An address or size does not fit in 64 bits, or an address range wraps.
    AddressOverflow {
        path: String,
        property: &'static str,
    },
    /// A node Portcullis needs has an address that no chain of `ranges` maps to the CPU.
    Untranslatable { path: String, address: u128 },
}

impl fmt::Display for DtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { needed, available } => write!(
                f,
                "device tree truncated: {needed} bytes needed, only {available} available"
            ),
            Self::NotADeviceTree { magic } => write!(
                f,
                "not a device tree: magic is {magic:#010x}, expected {FDT_MAGIC:#010x}"
            ),
            Self::Malformed(e) => write!(f, "malformed device tree: {e}"),
            Self::Stream(fdt::Malformed(at)) => {
                write!(
                    f,
                    "malformed device tree: bad token at {at:#x} of the structure block"
                )
            }
            Self::TooDeep { path } => {
                write!(
                    f,
                    "device tree nested deeper than {MAX_DEPTH} levels at {path}"
                )
            }
            Self::Duplicate { path, what, name } => {
                write!(f, "{path}: duplicate {what} \"{name}\"")
            }
            Self::NoMemory => f.write_str(
                "device tree has no usable memory: no available device_type = \"memory\" node \
                 with a non-empty reg under the root",
            ),
            Self::BadCells { path, property } => write!(
                f,
                "{path}: {property} is malformed or out of range (must be one cell, at most \
                 {MAX_CELLS})"
            ),
            Self::BadReg {
                path,
                len,
                address_cells,
                size_cells,
            } => write!(
                f,
                "{path}: reg is {len} bytes, not a multiple of (#address-cells {address_cells} + \
                 #size-cells {size_cells}) cells"
            ),
            Self::BadRanges {
                path,
                len,
                entry_cells,
            } => write!(
                f,
                "{path}: ranges is {len} bytes, not a multiple of the {entry_cells}-cell entry"
            ),
            Self::BadProperty {
                path,
                property,
                reason,
            } => {
                write!(f, "{path}: property {property} is invalid: {reason}")
            }
            Self::MissingProperty { path, property } => {
                write!(f, "{path}: required property {property} is missing")
            }
            Self::AddressOverflow { path, property } => {
                write!(
                    f,
                    "{path}: an address range in {property} does not fit in 64 bits"
                )
            }
            Self::Untranslatable { path, address } => write!(
                f,
                "{path}: bus address {address:#x} is not mapped to a CPU address by the \
                 parents' ranges"
            ),
        }
    }
}

impl core::error::Error for DtError {}

impl From<FdtParseError> for DtError {
    fn from(e: FdtParseError) -> Self {
        Self::Malformed(e)
    }
}

/// Whether a `device_type` value names `ty`, read as Linux reads it (`strcmp`): up to the first
/// NUL, or to the end (FDT pads every value with zeros, so a missing terminator still reads as the
/// string). Every reader of `device_type` in Portcullis uses this, so that the parser and the
/// host-tree rewrite agree with each other and with Linux on which nodes are memory.
pub fn device_type_matches(value: &[u8], ty: &str) -> bool {
    value.split(|b| *b == 0).next() == Some(ty.as_bytes())
}

/// The `totalsize` field of a device tree header, after checking the magic. The arch layer uses it
/// to know how many bytes to map before calling [`Platform::parse`].
pub fn dtb_total_size(header: &[u8]) -> Result<usize, DtError> {
    let word = |i: usize| -> Result<u32, DtError> {
        header
            .get(i..i + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or(DtError::Truncated {
                needed: FDT_HEADER_LEN,
                available: header.len(),
            })
    };
    let magic = word(0)?;
    if magic != FDT_MAGIC {
        return Err(DtError::NotADeviceTree { magic });
    }
    let total = word(4)? as usize;
    if total < FDT_HEADER_LEN {
        return Err(DtError::Truncated {
            needed: FDT_HEADER_LEN,
            available: total,
        });
    }
    Ok(total)
}

/// `data` cut to the blob's `totalsize`: a boot loader's buffer may be longer than the tree.
pub fn dtb_slice(data: &[u8]) -> Result<&[u8], DtError> {
    let total = dtb_total_size(data)?;
    data.get(..total).ok_or(DtError::Truncated {
        needed: total,
        available: data.len(),
    })
}

/// One CPU, as `/cpus` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cpu {
    /// The node's `reg`: the CPU's MPIDR_EL1 affinity fields ([`MPIDR_AFFINITY_MASK`]).
    pub mpidr: u64,
    /// `enable-method`, e.g. `psci` or `spin-table`.
    pub enable_method: Option<String>,
}

/// How PSCI calls are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conduit {
    Smc,
    Hvc,
}

/// The newest PSCI interface the node claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PsciVersion {
    /// `arm,psci`: function IDs come from the node.
    V0_1,
    /// `arm,psci-0.2`: standard function IDs, `PSCI_VERSION` available.
    V0_2,
    /// `arm,psci-1.0`.
    V1_0,
}

/// The PSCI 0.1 function IDs given in the node (ignored by callers of 0.2 and later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PsciFunctionIds {
    pub cpu_suspend: Option<u32>,
    pub cpu_off: Option<u32>,
    pub cpu_on: Option<u32>,
    pub migrate: Option<u32>,
}

/// The PSCI firmware interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Psci {
    pub conduit: Conduit,
    pub version: PsciVersion,
    /// Every string of the node's `compatible`.
    pub compatible: Vec<String>,
    pub function_ids: PsciFunctionIds,
}

/// GIC architecture version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GicVersion {
    V2,
    V3,
}

/// The interrupt controller's register frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gic {
    pub version: GicVersion,
    pub path: String,
    pub phandle: Option<u32>,
    /// GICD.
    pub distributor: PhysRange,
    /// GICv3 redistributor regions (`#redistributor-regions` of them); empty for GICv2.
    pub redistributors: Vec<PhysRange>,
    /// GICC (GICv2, or the optional GICv3 legacy interface).
    pub cpu_interface: Option<PhysRange>,
    /// GICH.
    pub hyp_interface: Option<PhysRange>,
    /// GICV.
    pub vcpu_interface: Option<PhysRange>,
    /// GICv3 ITS frames (children compatible with `arm,gic-v3-its`).
    pub its: Vec<PhysRange>,
    /// GICv2m MSI frames (children compatible with `arm,gic-v2m-frame`).
    pub v2m_frames: Vec<PhysRange>,
}

/// What kind of UART the console is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UartKind {
    /// `arm,pl011`.
    Pl011,
    /// `arm,sbsa-uart`: the PL011 subset of the SBSA.
    SbsaUart,
    /// `ns16550a` / `ns16550`.
    Ns16550,
    /// Anything else; see [`Uart::compatible`].
    Unknown,
}

/// The console named by `/chosen/stdout-path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uart {
    pub path: String,
    pub kind: UartKind,
    pub base: PhysRange,
    /// What followed the `:` in `stdout-path`, e.g. `115200n8`.
    pub options: Option<String>,
    pub compatible: Vec<String>,
    /// `reg-shift` and `reg-io-width` (8250 bindings) as one cell each; `None` if absent or not
    /// one cell. [`crate::console`] decides what they mean.
    pub reg_shift: Option<u32>,
    pub reg_io_width: Option<u32>,
}

/// The type of a GIC interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqKind {
    Spi,
    Ppi,
    /// GICv3.1 extended SPI range.
    ExtendedSpi,
    ExtendedPpi,
    /// An unknown GIC type, or an interrupt parent that is not a GIC (then `number` is the first
    /// cell of the specifier and `flags` the second).
    Other,
}

/// One interrupt, decoded from a specifier of the node's interrupt parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Irq {
    pub kind: IrqKind,
    /// The number within its kind (an SPI number for SPIs, as the binding writes it).
    pub number: u32,
    /// Trigger flags (the binding's third cell).
    pub flags: u32,
}

impl Irq {
    /// The GIC interrupt ID (INTID), where the kind has one.
    pub fn intid(&self) -> Option<u32> {
        let base = match self.kind {
            IrqKind::Spi => 32,
            IrqKind::Ppi => 16,
            IrqKind::ExtendedSpi => 4096,
            IrqKind::ExtendedPpi => 1056,
            IrqKind::Other => return None,
        };
        self.number.checked_add(base)
    }
}

/// The SMMU's wired interrupts, by their `interrupt-names`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SmmuInterrupts {
    pub eventq: Option<Irq>,
    pub priq: Option<Irq>,
    pub cmdq_sync: Option<Irq>,
    pub gerror: Option<Irq>,
    pub combined: Option<Irq>,
}

/// The SMMUv3 Portcullis takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smmu {
    pub path: String,
    pub regs: PhysRange,
    pub phandle: Option<u32>,
    pub interrupts: SmmuInterrupts,
    pub msi_parent: Option<u32>,
    pub dma_coherent: bool,
}

/// A PCI address space, from bits 25:24 of a `ranges` entry's phys.hi cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PciSpace {
    Config,
    Io,
    Mem32,
    Mem64,
}

/// One window of a PCI host bridge: PCI bus addresses `[pci_addr, +size)` appear to the CPU at `cpu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciWindow {
    pub space: PciSpace,
    pub prefetchable: bool,
    pub pci_addr: u64,
    pub cpu: PhysRange,
}

/// One entry of an `iommu-map` or `msi-map`: IDs `[id_base, +length)` become `[out_base, +length)`
/// of the IOMMU / MSI controller with phandle `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMapEntry {
    pub id_base: u32,
    pub target: u32,
    pub out_base: u32,
    pub length: u32,
}

/// An `iommu-map` / `msi-map` with its mask, with the lookup rules of the PCI IOMMU / MSI bindings
/// (first matching entry wins, the ID is masked first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMap {
    pub entries: Vec<IdMapEntry>,
    pub mask: u32,
}

impl IdMap {
    /// The target and output ID for input `id`, from the first entry that covers it.
    pub fn map(&self, id: u32) -> Option<(u32, u32)> {
        let id = id & self.mask;
        self.entries.iter().find_map(|e| {
            let offset = id.checked_sub(e.id_base)?;
            (offset < e.length).then(|| Some((e.target, e.out_base.checked_add(offset)?)))?
        })
    }

    /// The input ID that [`map`](Self::map) sends to `out` (on `target`, if given): the inverse, for
    /// reporting. `None` if no input ID maps there.
    pub fn unmap(&self, out: u32, target: Option<u32>) -> Option<u32> {
        self.entries.iter().find_map(|e| {
            if target.is_some_and(|t| t != e.target) {
                return None;
            }
            let offset = out.checked_sub(e.out_base)?;
            if offset >= e.length {
                return None;
            }
            let id = e.id_base.checked_add(offset)?;
            (self.map(id) == Some((e.target, out))).then_some(id)
        })
    }
}

/// A PCI bus/device/function, printed as `bus:dev.fn` in hex like `lspci` (`00:1f.7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    pub bus: u8,
    /// 0..=31.
    pub device: u8,
    /// 0..=7.
    pub function: u8,
}

impl Bdf {
    /// Splits a requester ID.
    pub const fn from_rid(rid: u16) -> Self {
        Self {
            bus: (rid >> 8) as u8,
            device: ((rid >> 3) & 0x1f) as u8,
            function: (rid & 7) as u8,
        }
    }

    /// The requester ID (`bus << 8 | device << 3 | function`), fields truncated to their widths.
    pub const fn rid(&self) -> u16 {
        ((self.bus as u16) << 8) | (((self.device & 0x1f) as u16) << 3) | (self.function & 7) as u16
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02x}:{:02x}.{:x}",
            self.bus, self.device, self.function
        )
    }
}

/// A generic ECAM PCI host bridge (`pci-host-ecam-generic`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciHost {
    pub path: String,
    /// The configuration space window.
    pub ecam: PhysRange,
    /// First and last bus number (`bus-range`, default 0 to 255).
    pub bus_range: (u8, u8),
    /// `linux,pci-domain`.
    pub domain: Option<u32>,
    pub windows: Vec<PciWindow>,
    /// RID to StreamID; `None` if the host has no `iommu-map` (its devices are not behind an IOMMU).
    pub iommu_map: Option<IdMap>,
    /// RID to MSI device ID; `None` if absent (then the binding says the ID is the RID).
    pub msi_map: Option<IdMap>,
    pub msi_parent: Option<u32>,
    pub dma_coherent: bool,
}

impl PciHost {
    /// The StreamID the SMMU sees for requester ID `rid`.
    pub fn stream_id(&self, rid: u16) -> Option<u32> {
        self.iommu_map
            .as_ref()?
            .map(u32::from(rid))
            .map(|(_, sid)| sid)
    }

    /// The requester ID whose DMA carries StreamID `sid` (the inverse of
    /// [`stream_id`](Self::stream_id)).
    pub fn rid_for_stream(&self, sid: u32) -> Option<u16> {
        let rid = self.iommu_map.as_ref()?.unmap(sid, None)?;
        u16::try_from(rid).ok()
    }

    /// The function behind StreamID `sid`, for reports.
    pub fn bdf_for_stream(&self, sid: u32) -> Option<Bdf> {
        self.rid_for_stream(sid).map(Bdf::from_rid)
    }
}

/// A node whose registers or bus windows the CPU can reach: what the tree says, undecided. Whether
/// the host may have it is the device map's decision (the hypervisor's `boot::devices`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    pub path: String,
    /// Every string of `compatible`, most specific first.
    pub compatible: Vec<String>,
    /// `status` as written, if present.
    pub status: Option<String>,
    /// `status` of this node and of every ancestor is absent, `okay` or `ok`.
    pub available: bool,
    /// `device_type`, if present (`pci` for PCI host bridges).
    pub device_type: Option<String>,
    /// Its `reg` entries as CPU ranges (through every parent's `ranges`); entries no `ranges`
    /// chain maps to the CPU (a CPU's MPIDR, an I2C address, a PCI config address) are not MMIO and
    /// are left out.
    pub regs: Vec<PhysRange>,
    /// Its `ranges` as CPU ranges: where its children's registers appear (a bus), or a PCI host's
    /// I/O and memory windows. Empty for `ranges;` (identity: the children's own `reg` say it all).
    pub windows: Vec<PhysRange>,
    /// Index in [`Platform::devices`] of the nearest listed ancestor.
    pub parent: Option<usize>,
}

impl DeviceNode {
    pub fn is_compatible(&self, compatible: &str) -> bool {
        self.compatible.iter().any(|c| c == compatible)
    }

    /// The node's name (the last path component).
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// The boot interface in `/chosen`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chosen {
    /// The host's command line.
    pub bootargs: Option<String>,
    /// `portcullis,bootargs`: Portcullis' own options.
    pub portcullis_bootargs: Option<String>,
    /// `linux,initrd-start` to `linux,initrd-end`.
    pub initrd: Option<PhysRange>,
    /// `portcullis,kernel = <addr size>`: where the host's Image lies.
    pub kernel: Option<PhysRange>,
    /// `stdout-path` (or the older `linux,stdout-path`), as written.
    pub stdout_path: Option<String>,
}

/// Where a reserved range comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReservedSource {
    /// The header's memory reservation block.
    MemReserve,
    /// A child of `/reserved-memory` (its path).
    Node(String),
}

/// One reserved range, with its origin for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedRegion {
    pub range: PhysRange,
    pub source: ReservedSource,
    /// `no-map`: the OS must not map it at all.
    pub no_map: bool,
}

/// Everything Portcullis learns about the machine from its device tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// RAM: every `reg` (or `linux,usable-memory`) entry of every available memory node, sorted and
    /// merged.
    pub memory: Vec<PhysRange>,
    /// `/memreserve/` entries and `/reserved-memory` children with a `reg`, sorted and merged.
    pub reserved: Vec<PhysRange>,
    /// The same, unmerged and named.
    pub reserved_regions: Vec<ReservedRegion>,
    pub cpus: Vec<Cpu>,
    pub psci: Option<Psci>,
    pub gic: Option<Gic>,
    pub uart: Option<Uart>,
    /// The first available `arm,smmu-v3`.
    pub smmu: Option<Smmu>,
    pub pci: Vec<PciHost>,
    /// Every node with MMIO (a `reg` or `ranges` that reaches the CPU), in document order: the
    /// input of the device map ([`DeviceNode`]).
    pub devices: Vec<DeviceNode>,
    pub chosen: Chosen,
    /// The highest end (exclusive) of anything with a CPU address in the tree: any `reg`, any
    /// `ranges` window, memory, reservations. Sizes the IPA space.
    pub max_address: u64,
    /// The root's `model`.
    pub model: Option<String>,
    /// The root's `compatible`.
    pub compatible: Vec<String>,
    /// The header's `boot_cpuid_phys`.
    pub boot_cpuid_phys: u32,
}

impl Platform {
    /// Discovers the machine's address map from a flattened device tree. `dtb` may be longer than
    /// the tree (it is cut to the header's `totalsize`).
    pub fn parse(dtb: &[u8]) -> Result<Platform, DtError> {
        let blob = dtb_slice(dtb)?;
        let fdt = Fdt::new(blob)?;
        let tree = Tree::build(fdt, blob)?;

        let memory = tree.memory()?;
        let reserved_regions = tree.reserved()?;
        let mut reserved: Vec<PhysRange> = reserved_regions.iter().map(|r| r.range).collect();
        normalize_ranges(&mut reserved);
        let chosen = tree.chosen()?;
        let uart = tree.uart(chosen.stdout_path.as_deref())?;

        let mut max_address = tree.max_address()?;
        for r in memory.iter().chain(&reserved) {
            max_address = max_address.max(r.end.0);
        }

        Ok(Platform {
            memory,
            reserved,
            reserved_regions,
            cpus: tree.cpus()?,
            psci: tree.psci()?,
            gic: tree.gic()?,
            uart,
            smmu: tree.smmu()?,
            pci: tree.pci_hosts()?,
            devices: tree.devices()?,
            chosen,
            max_address,
            model: tree.str_prop(0, "model")?.map(ToOwned::to_owned),
            compatible: tree.strings(0, "compatible"),
            boot_cpuid_phys: fdt.boot_cpuid_phys(),
        })
    }

    /// The total size of RAM.
    pub fn memory_size(&self) -> u64 {
        self.memory.iter().map(PhysRange::size).sum()
    }

    /// The PCI host whose domain (or, without domains, position) is `segment`.
    pub fn pci_host(&self, segment: u32) -> Option<&PciHost> {
        self.pci
            .iter()
            .find(|h| h.domain == Some(segment))
            .or_else(|| {
                let i = usize::try_from(segment).ok()?;
                self.pci.get(i).filter(|h| h.domain.is_none())
            })
    }
}

/// One node of the index over the tree.
struct TreeNode<'a> {
    node: Indexed<'a>,
    parent: Option<usize>,
    children: Vec<usize>,
    path: String,
}

/// A property of the index: its name and value in the blob.
#[derive(Clone, Copy)]
struct Prop<'a> {
    name: &'a str,
    value: &'a [u8],
}

impl<'a> Prop<'a> {
    fn value(&self) -> &'a [u8] {
        self.value
    }

    /// The value read as dtoolkit reads it (the same conversions).
    fn value_as<T: FromPropertyValue<'a>>(&self) -> Result<T, PropertyError> {
        T::from_property_value(self.value)
    }
}

/// A node with its name and properties read once, in one linear pass over the blob
/// ([`crate::fdt`]). dtoolkit's node iterators walk the blob again for every child, property and
/// lookup (each child iterator also reads its parent's cells), and that was most of
/// [`Platform::parse`]'s time. The standard properties are read as dtoolkit's [`NodeStandard`]
/// reads them.
///
/// [`NodeStandard`]: dtoolkit::standard::NodeStandard
struct Indexed<'a> {
    name: &'a str,
    props: Vec<Prop<'a>>,
    /// The `compatible` value, looked up once: the boot asks every node about many.
    compatible: Option<&'a [u8]>,
}

impl<'a> Indexed<'a> {
    fn name(&self) -> &'a str {
        self.name
    }

    fn name_without_address(&self) -> &'a str {
        self.name.split_once('@').map_or(self.name, |(n, _)| n)
    }

    fn property(&self, name: &str) -> Option<Prop<'a>> {
        self.props.iter().find(|p| p.name == name).copied()
    }

    fn u32_or(&self, name: &str, default: u32) -> Result<u32, PropertyError> {
        self.property(name)
            .map_or(Ok(default), |p| p.value_as::<u32>())
    }

    fn phandle(&self) -> Result<Option<u32>, PropertyError> {
        self.property("phandle")
            .map(|p| p.value_as::<u32>())
            .transpose()
    }

    /// `status`, `okay` when absent; an error for a value dtoolkit does not read as a status.
    fn status(&self) -> Result<Status, ()> {
        match self.property("status") {
            None => Ok(Status::Okay),
            Some(p) => p
                .value_as::<&str>()
                .map_err(|_| ())?
                .parse()
                .map_err(|_| ()),
        }
    }

    fn address_cells(&self) -> Result<u32, PropertyError> {
        self.u32_or("#address-cells", 2)
    }

    fn size_cells(&self) -> Result<u32, PropertyError> {
        self.u32_or("#size-cells", 1)
    }

    fn dma_coherent(&self) -> bool {
        self.property("dma-coherent").is_some()
    }

    /// Whether `compatible` is in the node's `compatible` list, as dtoolkit's string-list reader
    /// finds it (the list ends at its first entry that is not NUL-terminated UTF-8), without
    /// decoding the entries that are plain ASCII.
    fn is_compatible(&self, compatible: &str) -> bool {
        let Some(mut rest) = self.compatible else {
            return false;
        };
        while let Some(nul) = rest.iter().position(|b| *b == 0) {
            let entry = &rest[..nul];
            if entry == compatible.as_bytes() {
                return true;
            }
            if !entry.is_ascii() && core::str::from_utf8(entry).is_err() {
                return false;
            }
            rest = &rest[nul + 1..];
        }
        false
    }
}

/// The tree, indexed once so that parents, paths and phandles are cheap to find (dtoolkit's nodes
/// know their children, not their parent). Node 0 is the root; nodes are in document order.
struct Tree<'a> {
    fdt: Fdt<'a>,
    nodes: Vec<TreeNode<'a>>,
    /// (phandle, node), sorted.
    phandles: Vec<(u32, usize)>,
}

fn is_gic(tree: &Tree<'_>, idx: usize) -> bool {
    GIC_V3_COMPATIBLE
        .iter()
        .chain(GIC_V2_COMPATIBLE)
        .any(|c| tree.is_compatible(idx, c))
}

const GIC_V3_COMPATIBLE: &[&str] = &["arm,gic-v3"];
const GIC_V2_COMPATIBLE: &[&str] = &[
    "arm,gic-400",
    "arm,cortex-a15-gic",
    "arm,cortex-a9-gic",
    "arm,cortex-a7-gic",
    "arm,pl390",
];

impl<'a> Tree<'a> {
    fn build(fdt: Fdt<'a>, blob: &'a [u8]) -> Result<Self, DtError> {
        let input = fdt::Input::new(blob).map_err(DtError::Stream)?;
        let mut nodes: Vec<TreeNode<'a>> = Vec::new();
        // The open nodes, innermost last.
        let mut open: Vec<usize> = Vec::new();
        let mut off = 0;
        loop {
            let (token, next) = input.token(off).map_err(DtError::Stream)?;
            match token {
                fdt::Token::Begin(name) => {
                    let name = core::str::from_utf8(name)
                        .map_err(|_| DtError::Stream(fdt::Malformed(off)))?;
                    let parent = open.last().copied();
                    let path = match parent.and_then(|p| nodes.get(p)) {
                        None => String::from("/"),
                        Some(p) if p.path == "/" => format!("/{name}"),
                        Some(p) => format!("{}/{name}", p.path),
                    };
                    if open.len() > MAX_DEPTH {
                        return Err(DtError::TooDeep { path });
                    }
                    let (raw, after) = input.props(next).map_err(DtError::Stream)?;
                    let mut props = Vec::with_capacity(raw.len());
                    for p in raw {
                        let name = core::str::from_utf8(p.name)
                            .map_err(|_| DtError::Stream(fdt::Malformed(off)))?;
                        props.push(Prop {
                            name,
                            value: p.value,
                        });
                    }
                    let mut prop_names: Vec<&str> = props.iter().map(|p| p.name).collect();
                    if let Some(dup) = first_duplicate(&mut prop_names) {
                        return Err(DtError::Duplicate {
                            path,
                            what: "property",
                            name: dup.to_owned(),
                        });
                    }
                    let idx = nodes.len();
                    if let Some(p) = parent.and_then(|p| nodes.get_mut(p)) {
                        p.children.push(idx);
                    }
                    let compatible = props
                        .iter()
                        .find(|p| p.name == "compatible")
                        .map(|p| p.value);
                    nodes.push(TreeNode {
                        node: Indexed {
                            name,
                            props,
                            compatible,
                        },
                        parent,
                        children: Vec::new(),
                        path,
                    });
                    open.push(idx);
                    off = after;
                }
                fdt::Token::End => {
                    let idx = open.pop().ok_or(DtError::Stream(fdt::Malformed(off)))?;
                    let mut child_names: Vec<&str> = nodes[idx]
                        .children
                        .iter()
                        .map(|&c| nodes[c].node.name)
                        .collect();
                    if let Some(dup) = first_duplicate(&mut child_names) {
                        return Err(DtError::Duplicate {
                            path: nodes[idx].path.clone(),
                            what: "node",
                            name: dup.to_owned(),
                        });
                    }
                    off = next;
                }
                // Properties after a child node are not the node's (dtoolkit reads none there).
                fdt::Token::Prop(_) | fdt::Token::Nop => off = next,
                fdt::Token::Finish => break,
            }
            if open.is_empty() {
                break;
            }
        }
        if nodes.is_empty() {
            return Err(DtError::Stream(fdt::Malformed(off)));
        }

        let mut tree = Tree {
            fdt,
            nodes,
            phandles: Vec::new(),
        };
        let mut phandles = Vec::new();
        for idx in 0..tree.nodes.len() {
            let bad = || DtError::BadProperty {
                path: tree.path(idx),
                property: "phandle",
                reason: "not a single 32-bit cell",
            };
            let ph = match tree.nodes[idx].node.phandle().map_err(|_| bad())? {
                Some(ph) => Some(ph),
                None => tree.u32_prop(idx, "linux,phandle")?,
            };
            if let Some(ph) = ph {
                phandles.push((ph, idx));
            }
        }
        crate::sort::sort_small(&mut phandles);
        tree.phandles = phandles;
        Ok(tree)
    }

    fn path(&self, idx: usize) -> String {
        self.nodes[idx].path.clone()
    }

    fn parent(&self, idx: usize) -> Option<usize> {
        self.nodes[idx].parent
    }

    fn prop(&self, idx: usize, name: &str) -> Option<Prop<'a>> {
        self.nodes[idx].node.property(name)
    }

    fn raw(&self, idx: usize, name: &str) -> Option<&'a [u8]> {
        self.prop(idx, name)
            .and_then(|p| p.value_as::<&'a [u8]>().ok())
    }

    fn has(&self, idx: usize, name: &str) -> bool {
        self.prop(idx, name).is_some()
    }

    /// A string property as Portcullis takes it: NUL-terminated UTF-8 (dtoolkit's reading) with
    /// no NUL inside (a string list is not one string).
    fn str_prop(&self, idx: usize, name: &'static str) -> Result<Option<&'a str>, DtError> {
        match self.prop(idx, name).map(|p| p.value_as::<&'a str>()) {
            None => Ok(None),
            Some(Ok(s)) if !s.contains('\0') => Ok(Some(s)),
            Some(_) => Err(DtError::BadProperty {
                path: self.path(idx),
                property: name,
                reason: "not a NUL-terminated UTF-8 string",
            }),
        }
    }

    /// A string list; lenient (stops at the first malformed string), for `compatible`.
    fn strings(&self, idx: usize, name: &str) -> Vec<String> {
        self.prop(idx, name)
            .and_then(|p| p.value_as::<Vec<&'a str>>().ok())
            .unwrap_or_default()
            .into_iter()
            .map(String::from)
            .collect()
    }

    fn is_compatible(&self, idx: usize, compatible: &str) -> bool {
        self.nodes[idx].node.is_compatible(compatible)
    }

    fn u32_prop(&self, idx: usize, name: &'static str) -> Result<Option<u32>, DtError> {
        self.prop(idx, name)
            .map(|p| p.value_as::<u32>())
            .transpose()
            .map_err(|_| DtError::BadProperty {
                path: self.path(idx),
                property: name,
                reason: "not a single 32-bit cell",
            })
    }

    /// A one-cell property; `None` if absent or not one cell.
    fn u32_lenient(&self, idx: usize, name: &str) -> Option<u32> {
        self.prop(idx, name).and_then(|p| p.value_as::<u32>().ok())
    }

    /// A list of cells; `None` if absent, `Err` if not whole cells.
    fn u32_list(&self, idx: usize, name: &'static str) -> Result<Option<Vec<u32>>, DtError> {
        self.prop(idx, name)
            .map(|p| p.value_as::<Vec<u32>>())
            .transpose()
            .map_err(|_| DtError::BadProperty {
                path: self.path(idx),
                property: name,
                reason: "not whole cells",
            })
    }

    /// `status` absent or `okay` (dtoolkit's reading), or `ok`, the older spelling Linux also
    /// accepts (with or without the NUL, which FDT padding supplies to Linux's `strcmp`).
    fn available(&self, idx: usize) -> bool {
        match self.nodes[idx].node.status() {
            Ok(status) => status == Status::Okay,
            Err(_) => matches!(self.raw(idx, "status"), Some(b"ok\0" | b"okay" | b"ok")),
        }
    }

    fn device_type_is(&self, idx: usize, ty: &str) -> bool {
        self.raw(idx, "device_type")
            .is_some_and(|v| device_type_matches(v, ty))
    }

    /// The `#address-cells` and `#size-cells` this node gives its children, each one cell of at
    /// most [`MAX_CELLS`]. dtoolkit reads them without the bound and takes the default for a
    /// malformed one: every reader of `reg` or `ranges` calls this first.
    fn cells(&self, idx: usize) -> Result<(u32, u32), DtError> {
        let node = &self.nodes[idx].node;
        let check = |value: Result<u32, PropertyError>, property| match value {
            Ok(v) if v <= MAX_CELLS => Ok(v),
            _ => Err(DtError::BadCells {
                path: self.path(idx),
                property,
            }),
        };
        Ok((
            check(node.address_cells(), "#address-cells")?,
            check(node.size_cells(), "#size-cells")?,
        ))
    }

    /// A child by name: the exact name first, as Linux's `of_find_node_by_path` and the host-tree
    /// rewrite (which edits `/chosen` and `/reserved-memory` by exact name) take it; else, for a
    /// name without a unit address, the first child with that name and any unit address
    /// (dtoolkit's `Node::child` rule, which alone would take `chosen@0` before `chosen`).
    fn child_named(&self, idx: usize, name: &str) -> Option<usize> {
        let children = &self.nodes[idx].children;
        let find = |matches: &dyn Fn(&Indexed<'a>) -> bool| {
            children
                .iter()
                .copied()
                .find(|&c| matches(&self.nodes[c].node))
        };
        find(&|n| n.name() == name).or_else(|| {
            if name.contains('@') {
                return None;
            }
            find(&|n| n.name_without_address() == name)
        })
    }

    /// A node by absolute path, with [`child_named`](Self::child_named)'s rule per component.
    fn find_path(&self, path: &str) -> Option<usize> {
        let rest = path.strip_prefix('/')?;
        let mut idx = 0;
        for component in rest.split('/').filter(|c| !c.is_empty()) {
            idx = self.child_named(idx, component)?;
        }
        Some(idx)
    }

    fn by_phandle(&self, phandle: u32) -> Option<usize> {
        let i = self
            .phandles
            .binary_search_by_key(&phandle, |(p, _)| *p)
            .ok()?;
        self.phandles.get(i).map(|(_, idx)| *idx)
    }

    fn phandle(&self, idx: usize) -> Option<u32> {
        self.phandles
            .iter()
            .find(|(_, i)| *i == idx)
            .map(|(p, _)| *p)
    }

    /// Property `name` of `idx` as a prop-encoded array of `widths` cells per field (each at most
    /// [`MAX_CELLS`]); `None` if absent, `Some(Err)` if its length is no multiple of the entry.
    fn entries<const N: usize>(
        &self,
        idx: usize,
        name: &str,
        widths: [u32; N],
    ) -> Option<Result<Vec<[u128; N]>, PropertyError>> {
        let prop = self.prop(idx, name)?;
        // dtoolkit refuses zero-cell entries even in an empty property, which holds no entry.
        if prop.value().is_empty() {
            return Some(Ok(Vec::new()));
        }
        // As dtoolkit's prop-encoded-array reader: whole entries of the given fields, each field a
        // big-endian number of its cells (at most MAX_CELLS: the callers bound them).
        let entry_bytes = widths.iter().map(|w| *w as usize * 4).sum::<usize>();
        if entry_bytes == 0 || !prop.value().len().is_multiple_of(entry_bytes) {
            return Some(Err(PropertyError::InvalidLength));
        }
        let entries = prop.value().chunks_exact(entry_bytes).map(|entry| {
            let mut words = entry
                .chunks_exact(4)
                .map(|w| u128::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]])));
            widths.map(|w| (0..w).fold(0u128, |acc, _| (acc << 32) | words.next().unwrap_or(0)))
        });
        Some(Ok(entries.collect()))
    }

    /// `reg` entries of `idx` as (bus address, size) in the parent's address space.
    fn reg(&self, idx: usize) -> Result<Vec<(u128, u128)>, DtError> {
        self.reg_like(idx, "reg")
    }

    /// `reg`, or a property in its format (`linux,usable-memory`).
    fn reg_like(&self, idx: usize, name: &str) -> Result<Vec<(u128, u128)>, DtError> {
        let Some(parent) = self.parent(idx) else {
            return Ok(Vec::new());
        };
        let (address_cells, size_cells) = self.cells(parent)?;
        match self.entries(idx, name, [address_cells, size_cells]) {
            None => Ok(Vec::new()),
            Some(Ok(entries)) => Ok(entries.into_iter().map(|[a, s]| (a, s)).collect()),
            Some(Err(_)) => Err(DtError::BadReg {
                path: self.path(idx),
                len: self.raw(idx, name).map_or(0, <[u8]>::len),
                address_cells,
                size_cells,
            }),
        }
    }

    /// `ranges` of `idx` as (child address, parent address, size) from dtoolkit's reader; `None`
    /// if absent (or for the root, which has no parent bus), empty for `ranges;` (identity).
    fn ranges(&self, idx: usize) -> Result<Option<Vec<[u128; 3]>>, DtError> {
        let Some(parent) = self.parent(idx) else {
            return Ok(None);
        };
        let Some(bytes) = self.raw(idx, "ranges") else {
            return Ok(None);
        };
        if bytes.is_empty() {
            return Ok(Some(Vec::new()));
        }
        // The cells dtoolkit's reader takes, bounded.
        let (child_cells, size_cells) = self.cells(idx)?;
        let (parent_cells, _) = self.cells(parent)?;
        // (child address, parent address, length): the node's cells, the parent's, the node's.
        match self.entries(idx, "ranges", [child_cells, parent_cells, size_cells]) {
            None => Ok(None),
            Some(Ok(entries)) => Ok(Some(entries)),
            Some(Err(_)) => Err(DtError::BadRanges {
                path: self.path(idx),
                len: bytes.len(),
                entry_cells: child_cells + parent_cells + size_cells,
            }),
        }
    }

    /// Translates `addr`, an address in the space `space` defines for its children, to a CPU
    /// address. `None` where some ancestor has no `ranges` or no window covers the address.
    fn translate(&self, mut space: usize, mut addr: u128) -> Result<Option<u64>, DtError> {
        // Each step moves one level up, so the depth bound also bounds the loop.
        for _ in 0..=MAX_DEPTH + 1 {
            let Some(parent) = self.parent(space) else {
                return Ok(u64::try_from(addr).ok());
            };
            let Some(ranges) = self.ranges(space)? else {
                return Ok(None);
            };
            if !ranges.is_empty() {
                let hit = ranges.iter().find(|[child, _, len]| {
                    addr.checked_sub(*child).is_some_and(|offset| offset < *len)
                });
                let Some([child, parent_addr, _]) = hit else {
                    return Ok(None);
                };
                let Some(moved) = parent_addr.checked_add(addr - child) else {
                    return Ok(None);
                };
                addr = moved;
            }
            space = parent;
        }
        Ok(None)
    }

    /// The `reg` of `idx` as CPU ranges; an error if any entry does not translate.
    fn reg_ranges(&self, idx: usize) -> Result<Vec<PhysRange>, DtError> {
        let parent = self.parent(idx).unwrap_or(0);
        self.reg(idx)?
            .into_iter()
            .map(|(bus, size)| {
                let cpu = self
                    .translate(parent, bus)?
                    .ok_or_else(|| DtError::Untranslatable {
                        path: self.path(idx),
                        address: bus,
                    })?;
                self.phys_range(idx, "reg", cpu, size)
            })
            .collect()
    }

    fn phys_range(
        &self,
        idx: usize,
        property: &'static str,
        start: u64,
        size: u128,
    ) -> Result<PhysRange, DtError> {
        u64::try_from(size)
            .ok()
            .and_then(|size| PhysRange::new(start, size))
            .ok_or_else(|| DtError::AddressOverflow {
                path: self.path(idx),
                property,
            })
    }

    fn first_reg(&self, idx: usize) -> Result<PhysRange, DtError> {
        self.reg_ranges(idx)?
            .first()
            .copied()
            .ok_or_else(|| DtError::MissingProperty {
                path: self.path(idx),
                property: "reg",
            })
    }

    fn first_compatible(&self, compatible: &[&str]) -> Option<usize> {
        (0..self.nodes.len())
            .find(|&i| self.available(i) && compatible.iter().any(|c| self.is_compatible(i, c)))
    }

    fn memory(&self) -> Result<Vec<PhysRange>, DtError> {
        let mut memory = Vec::new();
        for &idx in &self.nodes[0].children {
            if !self.device_type_is(idx, "memory") || !self.available(idx) {
                continue;
            }
            let name = if self.has(idx, "linux,usable-memory") {
                "linux,usable-memory"
            } else {
                "reg"
            };
            for (addr, size) in self.reg_like(idx, name)? {
                let start = u64::try_from(addr).map_err(|_| DtError::AddressOverflow {
                    path: self.path(idx),
                    property: "reg",
                })?;
                memory.push(self.phys_range(idx, "reg", start, size)?);
            }
        }
        normalize_ranges(&mut memory);
        if memory.is_empty() {
            return Err(DtError::NoMemory);
        }
        Ok(memory)
    }

    fn reserved(&self) -> Result<Vec<ReservedRegion>, DtError> {
        let mut out: Vec<ReservedRegion> = self
            .fdt
            .memory_reservations()
            .filter(|r| r.size() != 0)
            .map(|r| {
                PhysRange::new(r.address(), r.size())
                    .map(|range| ReservedRegion {
                        range,
                        source: ReservedSource::MemReserve,
                        no_map: false,
                    })
                    .ok_or(DtError::AddressOverflow {
                        path: String::from("/memreserve/"),
                        property: "size",
                    })
            })
            .collect::<Result<_, _>>()?;
        if let Some(rm) = self.child_named(0, "reserved-memory") {
            for &child in &self.nodes[rm].children {
                if !self.available(child) {
                    continue;
                }
                let no_map = self.has(child, "no-map");
                for range in self.reg_ranges(child)? {
                    out.push(ReservedRegion {
                        range,
                        source: ReservedSource::Node(self.path(child)),
                        no_map,
                    });
                }
            }
        }
        Ok(out)
    }

    fn cpus(&self) -> Result<Vec<Cpu>, DtError> {
        let Some(cpus) = self.child_named(0, "cpus") else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for &idx in &self.nodes[cpus].children {
            if !self.device_type_is(idx, "cpu") {
                continue;
            }
            let (mpidr, _) =
                self.reg(idx)?
                    .first()
                    .copied()
                    .ok_or_else(|| DtError::MissingProperty {
                        path: self.path(idx),
                        property: "reg",
                    })?;
            out.push(Cpu {
                mpidr: (mpidr as u64) & MPIDR_AFFINITY_MASK,
                enable_method: self.str_prop(idx, "enable-method")?.map(ToOwned::to_owned),
            });
        }
        Ok(out)
    }

    fn psci(&self) -> Result<Option<Psci>, DtError> {
        let Some(idx) = self.first_compatible(&["arm,psci-1.0", "arm,psci-0.2", "arm,psci"]) else {
            return Ok(None);
        };
        let conduit = match self.str_prop(idx, "method")? {
            Some("smc") => Conduit::Smc,
            Some("hvc") => Conduit::Hvc,
            Some(_) => {
                return Err(DtError::BadProperty {
                    path: self.path(idx),
                    property: "method",
                    reason: "must be \"smc\" or \"hvc\"",
                });
            }
            None => {
                return Err(DtError::MissingProperty {
                    path: self.path(idx),
                    property: "method",
                });
            }
        };
        let version = if self.is_compatible(idx, "arm,psci-1.0") {
            PsciVersion::V1_0
        } else if self.is_compatible(idx, "arm,psci-0.2") {
            PsciVersion::V0_2
        } else {
            PsciVersion::V0_1
        };
        Ok(Some(Psci {
            conduit,
            version,
            compatible: self.strings(idx, "compatible"),
            function_ids: PsciFunctionIds {
                cpu_suspend: self.u32_prop(idx, "cpu_suspend")?,
                cpu_off: self.u32_prop(idx, "cpu_off")?,
                cpu_on: self.u32_prop(idx, "cpu_on")?,
                migrate: self.u32_prop(idx, "migrate")?,
            },
        }))
    }

    fn gic(&self) -> Result<Option<Gic>, DtError> {
        let mut all = GIC_V3_COMPATIBLE.to_vec();
        all.extend_from_slice(GIC_V2_COMPATIBLE);
        let Some(idx) = self.first_compatible(&all) else {
            return Ok(None);
        };
        let version = if GIC_V3_COMPATIBLE.iter().any(|c| self.is_compatible(idx, c)) {
            GicVersion::V3
        } else {
            GicVersion::V2
        };
        let regs = self.reg_ranges(idx)?;
        let mut regs = regs.into_iter();
        let distributor = regs.next().ok_or_else(|| DtError::MissingProperty {
            path: self.path(idx),
            property: "reg",
        })?;
        let mut redistributors = Vec::new();
        if version == GicVersion::V3 {
            let count = self.u32_prop(idx, "#redistributor-regions")?.unwrap_or(1);
            for _ in 0..count {
                redistributors.push(regs.next().ok_or_else(|| DtError::BadProperty {
                    path: self.path(idx),
                    property: "reg",
                    reason: "fewer redistributor regions than #redistributor-regions",
                })?);
            }
        }
        let cpu_interface = regs.next();
        let hyp_interface = regs.next();
        let vcpu_interface = regs.next();
        if version == GicVersion::V2 && cpu_interface.is_none() {
            return Err(DtError::BadProperty {
                path: self.path(idx),
                property: "reg",
                reason: "GICv2 needs distributor and CPU interface regions",
            });
        }

        let mut its = Vec::new();
        let mut v2m_frames = Vec::new();
        for &child in &self.nodes[idx].children {
            if !self.available(child) {
                continue;
            }
            if self.is_compatible(child, "arm,gic-v3-its") {
                its.push(self.first_reg(child)?);
            } else if self.is_compatible(child, "arm,gic-v2m-frame") {
                v2m_frames.push(self.first_reg(child)?);
            }
        }
        Ok(Some(Gic {
            version,
            path: self.path(idx),
            phandle: self.phandle(idx),
            distributor,
            redistributors,
            cpu_interface,
            hyp_interface,
            vcpu_interface,
            its,
            v2m_frames,
        }))
    }

    fn chosen(&self) -> Result<Chosen, DtError> {
        let Some(idx) = self.child_named(0, "chosen") else {
            return Ok(Chosen::default());
        };
        let owned = |v: Option<&str>| v.map(ToOwned::to_owned);

        // One or two cells, as `linux,initrd-start` allows.
        let number = |name: &'static str| -> Result<Option<u64>, DtError> {
            let Some(prop) = self.prop(idx, name) else {
                return Ok(None);
            };
            prop.value_as::<Cells<'_>>()
                .ok()
                .filter(|c| matches!(c.as_ref().len(), 1 | 2))
                .and_then(|c| c.to_int::<u64>().ok())
                .map(Some)
                .ok_or_else(|| DtError::BadProperty {
                    path: self.path(idx),
                    property: name,
                    reason: "must be one or two cells",
                })
        };
        let initrd = match (number("linux,initrd-start")?, number("linux,initrd-end")?) {
            (None, None) => None,
            (Some(start), Some(end)) if end >= start => Some(PhysRange::from_bounds(start, end)),
            (Some(_), Some(_)) => {
                return Err(DtError::BadProperty {
                    path: self.path(idx),
                    property: "linux,initrd-end",
                    reason: "below linux,initrd-start",
                });
            }
            (Some(_), None) => {
                return Err(DtError::MissingProperty {
                    path: self.path(idx),
                    property: "linux,initrd-end",
                });
            }
            (None, Some(_)) => {
                return Err(DtError::MissingProperty {
                    path: self.path(idx),
                    property: "linux,initrd-start",
                });
            }
        };

        let (address_cells, size_cells) = self.cells(0)?;
        let kernel = match self.entries(idx, "portcullis,kernel", [address_cells, size_cells]) {
            None => None,
            Some(entries) => {
                let bad = |reason| DtError::BadProperty {
                    path: self.path(idx),
                    property: "portcullis,kernel",
                    reason,
                };
                match entries.as_deref() {
                    Ok([[addr, size]]) => {
                        let addr = u64::try_from(*addr)
                            .map_err(|_| bad("address does not fit in 64 bits"))?;
                        Some(self.phys_range(idx, "portcullis,kernel", addr, *size)?)
                    }
                    _ => return Err(bad("must be one <address size> pair in the root's cells")),
                }
            }
        };

        let stdout_path = match self.str_prop(idx, "stdout-path")? {
            Some(p) => Some(p),
            None => self.str_prop(idx, "linux,stdout-path")?,
        };
        Ok(Chosen {
            bootargs: owned(self.str_prop(idx, "bootargs")?),
            portcullis_bootargs: owned(self.str_prop(idx, "portcullis,bootargs")?),
            initrd,
            kernel,
            stdout_path: owned(stdout_path),
        })
    }

    /// The node `stdout-path` names: an absolute path or an alias, optionally followed by
    /// `:options`.
    fn uart(&self, stdout_path: Option<&str>) -> Result<Option<Uart>, DtError> {
        let Some(stdout_path) = stdout_path else {
            return Ok(None);
        };
        let (path, options) = match stdout_path.split_once(':') {
            Some((p, o)) => (p, Some(String::from(o))),
            None => (stdout_path, None),
        };
        let idx = if path.starts_with('/') {
            self.find_path(path)
        } else {
            let (alias, rest) = path.split_once('/').unwrap_or((path, ""));
            let target = self
                .child_named(0, "aliases")
                .and_then(|a| self.raw(a, alias))
                .and_then(|v| v.strip_suffix(&[0]))
                .and_then(|v| core::str::from_utf8(v).ok());
            target.and_then(|t| {
                if rest.is_empty() {
                    self.find_path(t)
                } else {
                    self.find_path(&format!("{t}/{rest}"))
                }
            })
        };
        let Some(idx) = idx else {
            log::warn!("stdout-path {stdout_path:?} names no node; no console");
            return Ok(None);
        };
        let kind = if self.is_compatible(idx, "arm,pl011") {
            UartKind::Pl011
        } else if self.is_compatible(idx, "arm,sbsa-uart") {
            UartKind::SbsaUart
        } else if self.is_compatible(idx, "ns16550a") || self.is_compatible(idx, "ns16550") {
            UartKind::Ns16550
        } else {
            UartKind::Unknown
        };
        Ok(Some(Uart {
            path: self.path(idx),
            kind,
            base: self.first_reg(idx)?,
            options,
            compatible: self.strings(idx, "compatible"),
            reg_shift: self.u32_lenient(idx, "reg-shift"),
            reg_io_width: self.u32_lenient(idx, "reg-io-width"),
        }))
    }

    fn interrupt_parent(&self, idx: usize) -> Result<Option<usize>, DtError> {
        let mut cur = Some(idx);
        while let Some(i) = cur {
            if let Some(ph) = self.u32_prop(i, "interrupt-parent")? {
                return Ok(self.by_phandle(ph));
            }
            cur = self.parent(i);
        }
        Ok(None)
    }

    fn interrupt_cells(&self, controller: usize) -> Result<u32, DtError> {
        let bad = || DtError::BadCells {
            path: self.path(controller),
            property: "#interrupt-cells",
        };
        match self.u32_prop(controller, "#interrupt-cells") {
            Ok(Some(n)) if (1..=MAX_INTERRUPT_CELLS).contains(&n) => Ok(n),
            _ => Err(bad()),
        }
    }

    fn decode_irq(&self, controller: usize, spec: &[u32]) -> Irq {
        let cell = |i: usize| spec.get(i).copied().unwrap_or(0);
        if is_gic(self, controller) && spec.len() >= 3 {
            let kind = match cell(0) {
                0 => IrqKind::Spi,
                1 => IrqKind::Ppi,
                2 => IrqKind::ExtendedSpi,
                3 => IrqKind::ExtendedPpi,
                _ => IrqKind::Other,
            };
            Irq {
                kind,
                number: cell(1),
                flags: cell(2),
            }
        } else {
            Irq {
                kind: IrqKind::Other,
                number: cell(0),
                flags: cell(1),
            }
        }
    }

    /// The node's interrupts, from `interrupts-extended` or `interrupts` with the interrupt parent.
    fn interrupts(&self, idx: usize) -> Result<Vec<Irq>, DtError> {
        let bad = |property, reason| DtError::BadProperty {
            path: self.path(idx),
            property,
            reason,
        };
        if let Some(cells) = self.u32_list(idx, "interrupts-extended")? {
            let mut out = Vec::new();
            let mut rest = cells.as_slice();
            while let Some((&phandle, tail)) = rest.split_first() {
                let controller = self
                    .by_phandle(phandle)
                    .ok_or(bad("interrupts-extended", "names an unknown phandle"))?;
                let n = self.interrupt_cells(controller)? as usize;
                let spec = tail
                    .get(..n)
                    .ok_or(bad("interrupts-extended", "truncated specifier"))?;
                out.push(self.decode_irq(controller, spec));
                rest = tail.get(n..).unwrap_or(&[]);
            }
            return Ok(out);
        }
        let Some(cells) = self.u32_list(idx, "interrupts")? else {
            return Ok(Vec::new());
        };
        let controller = self
            .interrupt_parent(idx)?
            .ok_or(bad("interrupts", "no interrupt-parent resolves to a node"))?;
        let n = self.interrupt_cells(controller)? as usize;
        if !cells.len().is_multiple_of(n) {
            return Err(bad(
                "interrupts",
                "not a multiple of the parent's #interrupt-cells",
            ));
        }
        Ok(cells
            .chunks_exact(n)
            .map(|spec| self.decode_irq(controller, spec))
            .collect())
    }

    fn smmu(&self) -> Result<Option<Smmu>, DtError> {
        let Some(idx) = self.first_compatible(&["arm,smmu-v3"]) else {
            return Ok(None);
        };
        let irqs = self.interrupts(idx)?;
        let names = self.strings(idx, "interrupt-names");
        let mut interrupts = SmmuInterrupts::default();
        for (name, irq) in names.iter().zip(irqs) {
            let slot = match name.as_str() {
                "eventq" => &mut interrupts.eventq,
                "priq" => &mut interrupts.priq,
                "cmdq-sync" => &mut interrupts.cmdq_sync,
                "gerror" => &mut interrupts.gerror,
                "combined" => &mut interrupts.combined,
                _ => continue,
            };
            *slot = Some(irq);
        }
        Ok(Some(Smmu {
            path: self.path(idx),
            regs: self.first_reg(idx)?,
            phandle: self.phandle(idx),
            interrupts,
            msi_parent: self.u32_prop(idx, "msi-parent").ok().flatten(),
            dma_coherent: self.nodes[idx].node.dma_coherent(),
        }))
    }

    fn id_map(
        &self,
        idx: usize,
        name: &'static str,
        mask_name: &'static str,
    ) -> Result<Option<IdMap>, DtError> {
        let Some(entries) = self.entries(idx, name, [1, 1, 1, 1]) else {
            return Ok(None);
        };
        let entries = entries
            .ok()
            .filter(|e| !e.is_empty())
            .ok_or_else(|| DtError::BadProperty {
                path: self.path(idx),
                property: name,
                reason: "must be a non-empty list of <id-base phandle out-base length>",
            })?
            .into_iter()
            // Each field is one cell, so it fits in 32 bits.
            .map(|[id_base, target, out_base, length]| IdMapEntry {
                id_base: id_base as u32,
                target: target as u32,
                out_base: out_base as u32,
                length: length as u32,
            })
            .collect();
        let mask = self.u32_prop(idx, mask_name)?.unwrap_or(u32::MAX);
        Ok(Some(IdMap { entries, mask }))
    }

    fn pci_hosts(&self) -> Result<Vec<PciHost>, DtError> {
        let mut hosts = Vec::new();
        for idx in 0..self.nodes.len() {
            if !self.available(idx) || !self.is_compatible(idx, "pci-host-ecam-generic") {
                continue;
            }
            let path = self.path(idx);
            let bad = |property, reason| DtError::BadProperty {
                path: path.clone(),
                property,
                reason,
            };
            let ecam = self.first_reg(idx)?;
            let bus_range = match self.raw(idx, "bus-range") {
                None => (0, 255),
                Some(_) => match self.u32_list(idx, "bus-range").ok().flatten().as_deref() {
                    Some(&[first, last]) if first <= last && last <= 255 => {
                        (first as u8, last as u8)
                    }
                    _ => {
                        return Err(bad(
                            "bus-range",
                            "must be <first last> with first <= last <= 255",
                        ));
                    }
                },
            };
            let (address_cells, _) = self.cells(idx)?;
            if address_cells != 3 {
                return Err(bad(
                    "#address-cells",
                    "a PCI host must have #address-cells = <3>",
                ));
            }
            let mut windows = Vec::new();
            let parent = self.parent(idx).unwrap_or(0);
            for [child, parent_addr, size] in self.ranges(idx)?.unwrap_or_default() {
                let hi = (child >> 64) as u32;
                let space = match (hi >> 24) & 3 {
                    0 => PciSpace::Config,
                    1 => PciSpace::Io,
                    2 => PciSpace::Mem32,
                    _ => PciSpace::Mem64,
                };
                let cpu = self.translate(parent, parent_addr)?.ok_or_else(|| {
                    DtError::Untranslatable {
                        path: path.clone(),
                        address: parent_addr,
                    }
                })?;
                windows.push(PciWindow {
                    space,
                    prefetchable: hi & 0x4000_0000 != 0,
                    pci_addr: child as u64,
                    cpu: self.phys_range(idx, "ranges", cpu, size)?,
                });
            }
            hosts.push(PciHost {
                ecam,
                bus_range,
                domain: self.u32_prop(idx, "linux,pci-domain")?,
                windows,
                iommu_map: self.id_map(idx, "iommu-map", "iommu-map-mask")?,
                msi_map: self.id_map(idx, "msi-map", "msi-map-mask")?,
                msi_parent: self.u32_prop(idx, "msi-parent").ok().flatten(),
                dma_coherent: self.nodes[idx].node.dma_coherent(),
                path,
            });
        }
        Ok(hosts)
    }

    /// Whether `idx` heads a subtree that describes no device: CPUs, memory, reserved memory, the
    /// boot interface.
    fn not_devices(&self, idx: usize) -> bool {
        let top_level = self.parent(idx) == Some(0);
        (top_level
            && matches!(
                self.nodes[idx].node.name(),
                "cpus" | "chosen" | "aliases" | "reserved-memory" | "__symbols__" | "__fixups__"
            ))
            || self.device_type_is(idx, "memory")
    }

    /// Every node with a CPU-visible `reg` or `ranges`, see [`DeviceNode`].
    fn devices(&self) -> Result<Vec<DeviceNode>, DtError> {
        let mut out: Vec<DeviceNode> = Vec::new();
        // For each tree node: whether it and its ancestors are available, whether it lies in a
        // subtree that describes no device, and its index in `out`.
        let mut available = vec![true; self.nodes.len()];
        let mut skipped = vec![false; self.nodes.len()];
        let mut listed: Vec<Option<usize>> = vec![None; self.nodes.len()];
        // Document order: every parent comes before its children.
        for idx in 1..self.nodes.len() {
            let parent = self.parent(idx).unwrap_or(0);
            available[idx] = available[parent] && self.available(idx);
            skipped[idx] = skipped[parent] || self.not_devices(idx);
            if skipped[idx] {
                continue;
            }
            let mut regs = Vec::new();
            for (bus, size) in self.reg(idx)? {
                if let Some(cpu) = self.translate(parent, bus)? {
                    regs.push(self.phys_range(idx, "reg", cpu, size)?);
                }
            }
            let mut windows = Vec::new();
            for [_, parent_addr, size] in self.ranges(idx)?.unwrap_or_default() {
                if let Some(cpu) = self.translate(parent, parent_addr)? {
                    windows.push(self.phys_range(idx, "ranges", cpu, size)?);
                }
            }
            let ancestor = {
                let mut a = self.parent(idx);
                while let Some(i) = a.filter(|&i| listed[i].is_none() && i != 0) {
                    a = self.parent(i);
                }
                a.and_then(|i| listed[i])
            };
            if regs.is_empty() && windows.is_empty() {
                continue;
            }
            listed[idx] = Some(out.len());
            out.push(DeviceNode {
                path: self.path(idx),
                compatible: self.strings(idx, "compatible"),
                status: self
                    .str_prop(idx, "status")
                    .ok()
                    .flatten()
                    .map(ToOwned::to_owned),
                available: available[idx],
                device_type: self
                    .str_prop(idx, "device_type")
                    .ok()
                    .flatten()
                    .map(ToOwned::to_owned),
                regs,
                windows,
                parent: ancestor,
            });
        }
        Ok(out)
    }

    /// The highest end of every `reg` and `ranges` window that translates to a CPU address.
    fn max_address(&self) -> Result<u64, DtError> {
        let mut max = 0u64;
        for idx in 1..self.nodes.len() {
            let parent = self.parent(idx).unwrap_or(0);
            let mut windows = self.reg(idx)?;
            windows.extend(
                self.ranges(idx)?
                    .unwrap_or_default()
                    .into_iter()
                    .map(|[_, p, s]| (p, s)),
            );
            for (bus, size) in windows {
                if let Some(cpu) = self.translate(parent, bus)? {
                    let end =
                        u64::try_from(u128::from(cpu).saturating_add(size)).map_err(|_| {
                            DtError::AddressOverflow {
                                path: self.path(idx),
                                property: "reg/ranges",
                            }
                        })?;
                    max = max.max(end);
                }
            }
        }
        Ok(max)
    }
}

/// A name that occurs twice in `names` (the first repeated one for a few names, the smallest for
/// many), if any.
fn first_duplicate<S: AsRef<str> + Ord>(names: &mut [S]) -> Option<&str> {
    // A node's few names compared pairwise, without the sort's code (under QEMU TCG the boot's
    // time is mostly translating code that runs once); sorted past that.
    if names.len() <= 64 {
        return names
            .iter()
            .enumerate()
            .find(|(i, a)| names[..*i].iter().any(|b| b == *a))
            .map(|(_, a)| a.as_ref());
    }
    names.sort_unstable();
    names
        .windows(2)
        .find(|w| w[0] == w[1])
        .map(|w| w[0].as_ref())
}

// Tests unwrap freely: their inputs are fixtures they control.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
