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
    pub unsafe fn from_addr(addr: u64) -> Result<Tree, ()> {
        if addr == 0 || addr % 8 != 0 {
            return Err(());
        }
        // SAFETY: the header is readable per the caller's contract; totalsize is its second word.
        let header = unsafe { core::slice::from_raw_parts(addr as *const u8, 8) };
        if be32(header) != 0xd00d_feed {
            return Err(());
        }
        let size = be32(&header[4..]) as usize;
        // SAFETY: the blob is `size` bytes long, per its header.
        let blob = unsafe { core::slice::from_raw_parts(addr as *const u8, size) };
        let fdt = Fdt::new(blob).map_err(|_| ())?;
        let root = fdt.root();
        let read = |name: &str, default: usize| {
            root.property(name).map(|p| be32(p.value()) as usize).unwrap_or(default)
        };
        let addr_cells = read("#address-cells", 2);
        let size_cells = read("#size-cells", 1);
        Ok(Tree { fdt, addr_cells, size_cells })
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
        let ac = rm.property("#address-cells").map(|p| be32(p.value()) as usize).unwrap_or(2);
        let sc = rm.property("#size-cells").map(|p| be32(p.value()) as usize).unwrap_or(2);
        rm.children().find_map(|n| {
            let compat = n.property("compatible")?;
            if !compat.value().split(|&b| b == 0).any(|s| s == compatible.as_bytes()) {
                return None;
            }
            let v = value(n.property("reg")?);
            (v.len() >= 4 * (ac + sc)).then(|| Reg { base: cells(v, ac), size: cells(&v[4 * ac..], sc) })
        })
    }

    pub fn has_no_map(&self, compatible: &str) -> bool {
        let Some(rm) = self.fdt.find_node("/reserved-memory") else { return false };
        rm.children().any(|n| {
            n.property("compatible")
                .is_some_and(|c| c.value().split(|&b| b == 0).any(|s| s == compatible.as_bytes()))
                && n.property("no-map").is_some()
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
        let Some(cpus) = self.fdt.find_node("/cpus") else { return 0 };
        let ac = cpus.property("#address-cells").map(|p| be32(p.value()) as usize).unwrap_or(1);
        let mut n = 0;
        for c in cpus.children() {
            if !c.property("device_type").is_some_and(|p| p.value().starts_with(b"cpu")) {
                continue;
            }
            if let Some(reg) = c.property("reg") {
                if n < out.len() && reg.value().len() >= 4 * ac {
                    out[n] = cells(reg.value(), ac);
                    n += 1;
                }
            }
        }
        n
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
        (v.len() >= 4 * (ac + sc)).then(|| Reg { base: cells(v, ac), size: cells(&v[4 * ac..], sc) })
    }
}
