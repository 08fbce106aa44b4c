//! The few device-tree lookups the payloads need, over dtoolkit's read-only parser.

use dtoolkit::fdt::Fdt;
use dtoolkit::{Node, Property};

/// The tree the payload was booted with.
#[derive(Debug)]
pub struct Tree {
    fdt: Fdt<'static>,
    addr_cells: usize,
    size_cells: usize,
}

/// The address passed as the device tree does not hold a valid blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadTree;

/// A `reg` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reg {
    pub base: u64,
    pub size: u64,
}

impl Reg {
    pub fn end(&self) -> u64 {
        self.base + self.size
    }
    pub fn overlaps(&self, other: &Reg) -> bool {
        self.base < other.end() && other.base < self.end()
    }
}

/// Property values borrow from the property handle; the blob itself lives for the whole run.
fn value(p: impl Property) -> &'static [u8] {
    let v = p.value();
    // SAFETY: every property value lies inside the blob, which `Tree::from_addr`'s caller keeps in
    // place for the whole run.
    unsafe { core::slice::from_raw_parts(v.as_ptr(), v.len()) }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn cells(b: &[u8], n: usize) -> u64 {
    (0..n).fold(0u64, |acc, i| (acc << 32) | u64::from(be32(&b[4 * i..])))
}

impl Tree {
    /// # Safety
    /// `addr` must point at a device tree blob that stays in place for the whole run.
    pub unsafe fn from_addr(addr: u64) -> Result<Tree, BadTree> {
        if addr == 0 || !addr.is_multiple_of(8) {
            return Err(BadTree);
        }
        // SAFETY: the header is readable per the caller's contract; totalsize is its second word.
        let header = unsafe { core::slice::from_raw_parts(addr as *const u8, 8) };
        if be32(header) != 0xd00d_feed {
            return Err(BadTree);
        }
        let size = be32(&header[4..]) as usize;
        // SAFETY: the blob is `size` bytes long, per its header.
        let blob = unsafe { core::slice::from_raw_parts(addr as *const u8, size) };
        let fdt = Fdt::new(blob).map_err(|_| BadTree)?;
        let root = fdt.root();
        let read = |name: &str, default: usize| {
            root.property(name)
                .map(|p| be32(p.value()) as usize)
                .unwrap_or(default)
        };
        let addr_cells = read("#address-cells", 2);
        let size_cells = read("#size-cells", 1);
        Ok(Tree {
            fdt,
            addr_cells,
            size_cells,
        })
    }

    pub fn fdt(&self) -> Fdt<'static> {
        self.fdt
    }

    /// `reg` of a node directly under the root (the only kind the payloads look at).
    pub fn regs_of(&self, path: &str) -> impl Iterator<Item = Reg> + '_ {
        let value: &[u8] = self
            .fdt
            .find_node(path)
            .and_then(|n| n.property("reg").map(value))
            .unwrap_or(&[]);
        let stride = 4 * (self.addr_cells + self.size_cells);
        value.chunks_exact(stride).map(move |c| Reg {
            base: cells(c, self.addr_cells),
            size: cells(&c[4 * self.addr_cells..], self.size_cells),
        })
    }

    /// Every reg entry of every `device_type = "memory"` node.
    pub fn memory(&self) -> impl Iterator<Item = Reg> + '_ {
        let root = self.fdt.root();
        root.children()
            .filter(|n| {
                n.property("device_type")
                    .is_some_and(|p| p.value().starts_with(b"memory"))
            })
            .flat_map(move |n| {
                let stride = 4 * (self.addr_cells + self.size_cells);
                let v: &'static [u8] = n.property("reg").map(value).unwrap_or(&[]);
                v.chunks_exact(stride).map(move |c| Reg {
                    base: cells(c, self.addr_cells),
                    size: cells(&c[4 * self.addr_cells..], self.size_cells),
                })
            })
    }

    /// Children of `/reserved-memory` with the given compatible string, as (node name, reg).
    pub fn reserved_with_compatible(&self, compatible: &str) -> Option<Reg> {
        let rm = self.fdt.find_node("/reserved-memory")?;
        let ac = rm
            .property("#address-cells")
            .map(|p| be32(p.value()) as usize)
            .unwrap_or(2);
        let sc = rm
            .property("#size-cells")
            .map(|p| be32(p.value()) as usize)
            .unwrap_or(2);
        rm.children().find_map(|n| {
            let compat = n.property("compatible")?;
            if !compat
                .value()
                .split(|&b| b == 0)
                .any(|s| s == compatible.as_bytes())
            {
                return None;
            }
            let v = value(n.property("reg")?);
            (v.len() >= 4 * (ac + sc)).then(|| Reg {
                base: cells(v, ac),
                size: cells(&v[4 * ac..], sc),
            })
        })
    }

    pub fn has_no_map(&self, compatible: &str) -> bool {
        let Some(rm) = self.fdt.find_node("/reserved-memory") else {
            return false;
        };
        rm.children().any(|n| {
            n.property("compatible").is_some_and(|c| {
                c.value()
                    .split(|&b| b == 0)
                    .any(|s| s == compatible.as_bytes())
            }) && n.property("no-map").is_some()
        })
    }

    pub fn string(&self, path: &str, prop: &str) -> Option<&'static str> {
        let p = self.fdt.find_node(path)?.property(prop)?;
        let v = value(p);
        let v = v.strip_suffix(&[0]).unwrap_or(v);
        core::str::from_utf8(v).ok()
    }

    pub fn bootargs(&self) -> Option<&'static str> {
        self.string("/chosen", "bootargs")
    }

    /// The base of the UART `/chosen/stdout-path` names.
    pub fn stdout_base(&self) -> Option<u64> {
        let path = self.string("/chosen", "stdout-path")?;
        let path = path.split(':').next()?;
        self.regs_of(path).next().map(|r| r.base)
    }

    pub fn psci_uses_hvc(&self) -> bool {
        self.string("/psci", "method") == Some("hvc")
    }

    /// MPIDRs of the CPUs under /cpus.
    pub fn cpus(&self, out: &mut [u64]) -> usize {
        let Some(cpus) = self.fdt.find_node("/cpus") else {
            return 0;
        };
        let ac = cpus
            .property("#address-cells")
            .map(|p| be32(p.value()) as usize)
            .unwrap_or(1);
        let mut n = 0;
        for c in cpus.children() {
            if !c
                .property("device_type")
                .is_some_and(|p| p.value().starts_with(b"cpu"))
            {
                continue;
            }
            if let Some(reg) = c.property("reg")
                && n < out.len()
                && reg.value().len() >= 4 * ac
            {
                out[n] = cells(reg.value(), ac);
                n += 1;
            }
        }
        n
    }

    /// The GICv3 under the root (`arm,gic-v3`): its distributor, first redistributor region and
    /// first ITS (`arm,gic-v3-its` child), if any.
    pub fn gic_v3(&self) -> Option<GicV3> {
        let is = |n: &dtoolkit::fdt::FdtNode<'_>, c: &[u8]| {
            n.property("compatible")
                .is_some_and(|p| p.value().split(|&b| b == 0).any(|s| s == c))
        };
        let root = self.fdt.root();
        let gic = root.children().find(|n| is(n, b"arm,gic-v3"))?;
        let v = value(gic.property("reg")?);
        let (ac, sc) = (self.addr_cells, self.size_cells);
        let stride = 4 * (ac + sc);
        let reg = |c: &[u8], ac: usize, sc: usize| Reg {
            base: cells(c, ac),
            size: cells(&c[4 * ac..], sc),
        };
        let mut regs = v.chunks_exact(stride).map(|c| reg(c, ac, sc));
        let distributor = regs.next()?;
        let redistributors = regs.next()?;
        let cac = gic
            .property("#address-cells")
            .map_or(ac, |p| be32(p.value()) as usize);
        let csc = gic
            .property("#size-cells")
            .map_or(sc, |p| be32(p.value()) as usize);
        let its = gic
            .children()
            .find(|n| is(n, b"arm,gic-v3-its"))
            .and_then(|n| {
                let v = value(n.property("reg")?);
                (v.len() >= 4 * (cac + csc)).then(|| reg(v, cac, csc))
            });
        Some(GicV3 {
            distributor,
            redistributors,
            its,
        })
    }

    /// The register frame of the first `arm,smmu-v3` node.
    pub fn smmu(&self) -> Option<Reg> {
        let root = self.fdt.root();
        let node = root.children().find(|n| {
            n.property("compatible")
                .is_some_and(|c| c.value().split(|&b| b == 0).any(|s| s == b"arm,smmu-v3"))
        })?;
        let v = value(node.property("reg")?);
        let (ac, sc) = (self.addr_cells, self.size_cells);
        (v.len() >= 4 * (ac + sc)).then(|| Reg {
            base: cells(v, ac),
            size: cells(&v[4 * ac..], sc),
        })
    }
}

/// A GICv3's register frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GicV3 {
    pub distributor: Reg,
    pub redistributors: Reg,
    pub its: Option<Reg>,
}

/// A window of a PCI host bridge's `ranges`: PCI bus addresses `[pci_base, pci_base + size)` appear
/// to the CPU at `[cpu_base, cpu_base + size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciWindow {
    pub pci_base: u64,
    pub cpu_base: u64,
    pub size: u64,
    pub prefetchable: bool,
}

impl PciWindow {
    /// The CPU address of a PCI bus address inside the window.
    pub fn to_cpu(&self, pci: u64) -> u64 {
        pci - self.pci_base + self.cpu_base
    }
}

/// One `iommu-map` entry: RIDs `[rid_base, rid_base + length)` are StreamIDs from `sid_base` on the
/// IOMMU with phandle `iommu`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IommuMapEntry {
    pub rid_base: u32,
    pub iommu: u32,
    pub sid_base: u32,
    pub length: u32,
}

/// Most `iommu-map` entries kept (QEMU's virt has one).
pub const MAX_IOMMU_MAP: usize = 8;

/// A `pci-host-ecam-generic` host bridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciHost {
    /// The ECAM: its first MiB is bus `bus_start`'s configuration space.
    pub ecam: Reg,
    pub bus_start: u8,
    pub bus_end: u8,
    /// The largest 32-bit memory window (space code 0b10).
    pub mem32: Option<PciWindow>,
    /// The largest 64-bit memory window (space code 0b11).
    pub mem64: Option<PciWindow>,
    iommu_map: [IommuMapEntry; MAX_IOMMU_MAP],
    iommu_map_len: usize,
    iommu_map_mask: u32,
}

impl PciHost {
    pub fn iommu_map(&self) -> &[IommuMapEntry] {
        &self.iommu_map[..self.iommu_map_len]
    }

    /// The StreamID (and the IOMMU's phandle) a requester ID maps to, per `iommu-map` (and
    /// `iommu-map-mask`), as Linux' `of_map_id` reads them.
    pub fn stream_id(&self, rid: u16) -> Option<(u32, u32)> {
        let rid = u32::from(rid) & self.iommu_map_mask;
        self.iommu_map().iter().find_map(|e| {
            (e.rid_base <= rid && u64::from(rid) < u64::from(e.rid_base) + u64::from(e.length))
                .then(|| (e.iommu, e.sid_base + (rid - e.rid_base)))
        })
    }
}

/// Why the PCI host bridge node could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciHostError {
    NotFound,
    BadReg,
    BadBusRange,
    /// The ECAM is too small for the bus range it is said to cover.
    EcamTooSmall {
        ecam_size: u64,
        buses: u32,
    },
    BadRanges,
    BadIommuMap,
}

impl core::fmt::Display for PciHostError {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self {
            Self::NotFound => write!(f, "no pci-host-ecam-generic node under the root"),
            Self::BadReg => write!(f, "the PCI host's reg (ECAM) is missing or malformed"),
            Self::BadBusRange => write!(f, "the PCI host's bus-range is malformed"),
            Self::EcamTooSmall { ecam_size, buses } => {
                write!(
                    f,
                    "the ECAM ({ecam_size:#x} bytes) does not cover {buses} buses"
                )
            }
            Self::BadRanges => write!(f, "the PCI host's ranges is malformed"),
            Self::BadIommuMap => write!(f, "the PCI host's iommu-map is malformed"),
        }
    }
}

/// Parses a memory size or address as the kernel's `memparse` does: decimal or 0x-hex, with an
/// optional K/M/G/T suffix.
pub fn parse_size(s: &str) -> Option<u64> {
    let (num, shift) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 10),
        b'M' | b'm' => (&s[..s.len() - 1], 20),
        b'G' | b'g' => (&s[..s.len() - 1], 30),
        b'T' | b't' => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    let v = match num.strip_prefix("0x").or_else(|| num.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None => num.parse().ok()?,
    };
    v.checked_mul(1u64 << shift)
}

fn compatible_with(n: &impl Node, compatible: &str) -> bool {
    n.property("compatible").is_some_and(|c| {
        c.value()
            .split(|&b| b == 0)
            .any(|s| s == compatible.as_bytes())
    })
}

fn cell_count(n: &impl Node, name: &str, default: usize) -> usize {
    n.property(name)
        .map(|p| be32(p.value()) as usize)
        .unwrap_or(default)
}

impl Tree {
    /// The blob's size in bytes, from its header.
    pub fn total_size(&self) -> u64 {
        self.fdt.data().len() as u64
    }

    /// The crash region the command line (`/chosen/bootargs`) names as `crashkernel=SIZE@BASE`:
    /// `Ok(None)` without `crashkernel=`, `Err(value)` if it is there but not in that form.
    pub fn crash_region(&self) -> Result<Option<Reg>, &'static str> {
        let bootargs = self.bootargs().unwrap_or("");
        let Some(ck) = bootargs
            .split_ascii_whitespace()
            .find_map(|t| t.strip_prefix("crashkernel="))
        else {
            return Ok(None);
        };
        let (size, base) = ck.split_once('@').ok_or(ck)?;
        match (parse_size(size), parse_size(base)) {
            (Some(size), Some(base)) if size > 0 && base.checked_add(size).is_some() => {
                Ok(Some(Reg { base, size }))
            }
            _ => Err(ck),
        }
    }

    /// The phandle of the first `arm,smmu-v3` node under the root.
    pub fn smmu_phandle(&self) -> Option<u32> {
        let root = self.fdt.root();
        let node = root
            .children()
            .find(|n| compatible_with(n, "arm,smmu-v3"))?;
        let p = node
            .property("phandle")
            .or_else(|| node.property("linux,phandle"))?;
        (p.value().len() == 4).then(|| be32(p.value()))
    }

    /// The first `pci-host-ecam-generic` node under the root: its ECAM (`reg`), bus range, memory
    /// windows (`ranges`, 3-cell PCI addresses whose top cell holds the space code in bits 25:24
    /// and the prefetchable flag in bit 30) and `iommu-map`.
    pub fn pci_host(&self) -> Result<PciHost, PciHostError> {
        let root = self.fdt.root();
        let node = root
            .children()
            .find(|n| compatible_with(n, "pci-host-ecam-generic"))
            .ok_or(PciHostError::NotFound)?;
        let (pac, psc) = (self.addr_cells, self.size_cells);

        let reg = node
            .property("reg")
            .map(value)
            .ok_or(PciHostError::BadReg)?;
        if reg.len() < 4 * (pac + psc) {
            return Err(PciHostError::BadReg);
        }
        let ecam = Reg {
            base: cells(reg, pac),
            size: cells(&reg[4 * pac..], psc),
        };

        let (bus_start, bus_end) = match node.property("bus-range").map(value) {
            Some(v) if v.len() == 8 => (be32(v), be32(&v[4..])),
            Some(_) => return Err(PciHostError::BadBusRange),
            None => (0, ((ecam.size >> 20).clamp(1, 256) - 1) as u32),
        };
        if bus_start > bus_end || bus_end > 255 {
            return Err(PciHostError::BadBusRange);
        }
        let buses = bus_end - bus_start + 1;
        if ecam.size < u64::from(buses) << 20 {
            return Err(PciHostError::EcamTooSmall {
                ecam_size: ecam.size,
                buses,
            });
        }

        let cac = cell_count(&node, "#address-cells", 3);
        let csc = cell_count(&node, "#size-cells", 2);
        if cac != 3 {
            return Err(PciHostError::BadRanges);
        }
        let ranges = node.property("ranges").map(value).unwrap_or(&[]);
        let stride = 4 * (cac + pac + csc);
        if ranges.len() % stride != 0 {
            return Err(PciHostError::BadRanges);
        }
        let (mut mem32, mut mem64): (Option<PciWindow>, Option<PciWindow>) = (None, None);
        for r in ranges.chunks_exact(stride) {
            let hi = be32(r);
            let window = PciWindow {
                pci_base: cells(&r[4..], 2),
                cpu_base: cells(&r[4 * cac..], pac),
                size: cells(&r[4 * (cac + pac)..], csc),
                prefetchable: hi & (1 << 30) != 0,
            };
            let slot = match (hi >> 24) & 3 {
                0b10 => &mut mem32,
                0b11 => &mut mem64,
                _ => continue, // configuration and I/O space
            };
            if slot.is_none_or(|w| w.size < window.size) {
                *slot = Some(window);
            }
        }

        let mut iommu_map = [IommuMapEntry::default(); MAX_IOMMU_MAP];
        let mut iommu_map_len = 0;
        if let Some(v) = node.property("iommu-map").map(value) {
            if v.len() % 16 != 0 || v.len() / 16 > MAX_IOMMU_MAP {
                return Err(PciHostError::BadIommuMap);
            }
            for (slot, e) in iommu_map.iter_mut().zip(v.chunks_exact(16)) {
                *slot = IommuMapEntry {
                    rid_base: be32(e),
                    iommu: be32(&e[4..]),
                    sid_base: be32(&e[8..]),
                    length: be32(&e[12..]),
                };
                iommu_map_len += 1;
            }
        }
        let iommu_map_mask = match node.property("iommu-map-mask").map(value) {
            Some(v) if v.len() == 4 => be32(v),
            Some(_) => return Err(PciHostError::BadIommuMap),
            None => u32::MAX,
        };

        Ok(PciHost {
            ecam,
            bus_start: bus_start as u8,
            bus_end: bus_end as u8,
            mem32,
            mem64,
            iommu_map,
            iommu_map_len,
            iommu_map_mask,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C, align(8))]
    struct Aligned<const N: usize>([u8; N]);

    const BLOB_BYTES: &[u8] = include_bytes!("../tests/fixtures/pci-host.dtb");
    static BLOB: Aligned<{ BLOB_BYTES.len() }> = {
        let mut a = [0u8; BLOB_BYTES.len()];
        let mut i = 0;
        while i < a.len() {
            a[i] = BLOB_BYTES[i];
            i += 1;
        }
        Aligned(a)
    };

    fn tree() -> Tree {
        // SAFETY: a static blob, in place for the whole test run.
        unsafe { Tree::from_addr(BLOB.0.as_ptr() as u64) }.expect("the fixture parses")
    }

    #[test]
    fn pci_host_ecam_bus_range_and_windows() {
        let host = tree().pci_host().expect("the fixture has a PCI host");
        assert_eq!(
            host.ecam,
            Reg {
                base: 0x40_1000_0000,
                size: 0x100_0000
            }
        );
        assert_eq!((host.bus_start, host.bus_end), (0, 0xf));
        assert_eq!(
            host.mem32,
            Some(PciWindow {
                pci_base: 0x1000_0000,
                cpu_base: 0x1000_0000,
                size: 0x2eff_0000,
                prefetchable: false
            })
        );
        assert_eq!(
            host.mem64,
            Some(PciWindow {
                pci_base: 0x80_0000_0000,
                cpu_base: 0x80_0000_0000,
                size: 0x80_0000_0000,
                prefetchable: true
            })
        );
    }

    #[test]
    fn stream_ids_follow_iommu_map_and_mask() {
        let tree = tree();
        let host = tree.pci_host().expect("the fixture has a PCI host");
        let smmu = tree.smmu_phandle().expect("the SMMU has a phandle");
        assert_eq!(host.iommu_map().len(), 2);
        // 00:01.0: first entry, identity.
        assert_eq!(host.stream_id(0x0008), Some((smmu, 0x8)));
        // The mask drops the function bits: 00:01.3 is 00:01.0.
        assert_eq!(host.stream_id(0x000b), Some((smmu, 0x8)));
        // 01:00.0: second entry, sid-base 0x1000.
        assert_eq!(host.stream_id(0x0100), Some((smmu, 0x1000)));
        assert_eq!(host.stream_id(0x01f8), Some((smmu, 0x10f8)));
        // Bus 2 is not covered.
        assert_eq!(host.stream_id(0x0200), None);
    }

    #[test]
    fn crash_region_from_bootargs() {
        let tree = tree();
        assert_eq!(
            tree.crash_region(),
            Ok(Some(Reg {
                base: 0x7e00_0000,
                size: 32 << 20
            }))
        );
        assert_eq!(
            tree.reserved_with_compatible("portcullis,hypervisor"),
            Some(Reg {
                base: 0x4020_0000,
                size: 0x120_0000
            })
        );
        assert!(tree.total_size() >= BLOB_BYTES.len() as u64 - 8);
    }

    #[test]
    fn sizes_parse_like_memparse() {
        assert_eq!(parse_size("32M"), Some(32 << 20));
        assert_eq!(parse_size("0x7e000000"), Some(0x7e00_0000));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_size("0x"), None);
        assert_eq!(parse_size("99999999999T"), None);
    }
}
