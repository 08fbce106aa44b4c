//! PCI enumeration through ECAM, the way firmware would do it (nothing else configures PCI before a
//! payload runs: QEMU's `-kernel` boot has no firmware, and Portcullis leaves PCI to the host).
//!
//! [`scan`] walks the host bridge's root bus and, recursively, the buses behind PCI-PCI bridges: it
//! numbers the buses (primary/secondary/subordinate), sizes every memory BAR and places it in the
//! host's 32-bit window (or, for a 64-bit prefetchable BAR, in the 64-bit window when the path to it
//! can forward one), programs each bridge's memory windows around what lies behind it and enables
//! memory decoding and bus mastering on the bridges. Endpoints are left disabled until a driver calls
//! [`Function::enable`]. I/O BARs are left unassigned and I/O decoding off.
//!
//! Every configuration access is a single plain load or store of its natural size.

use crate::dt::{PciHost, PciWindow};
use crate::mmio::{mmio_read8, mmio_read16, mmio_read32, mmio_write8, mmio_write16, mmio_write32};
use core::fmt;

/// Most functions [`scan`] records.
pub const MAX_FUNCTIONS: usize = 32;

// Configuration header offsets (PCI Local Bus 3.0 §6.1, PCI-PCI Bridge 1.2 §3.2).
const VENDOR_ID: u64 = 0x00;
const DEVICE_ID: u64 = 0x02;
const COMMAND: u64 = 0x04;
const CLASS_REV: u64 = 0x08;
const HEADER_TYPE: u64 = 0x0e;
const BAR0: u64 = 0x10;
const PRIMARY_BUS: u64 = 0x18;
const SECONDARY_BUS: u64 = 0x19;
const SUBORDINATE_BUS: u64 = 0x1a;
const IO_BASE: u64 = 0x1c;
const IO_LIMIT: u64 = 0x1d;
const MEMORY_BASE: u64 = 0x20;
const MEMORY_LIMIT: u64 = 0x22;
const PREF_MEMORY_BASE: u64 = 0x24;
const PREF_MEMORY_LIMIT: u64 = 0x26;
const PREF_BASE_UPPER32: u64 = 0x28;
const PREF_LIMIT_UPPER32: u64 = 0x2c;
const IO_BASE_UPPER16: u64 = 0x30;
const IO_LIMIT_UPPER16: u64 = 0x32;

const COMMAND_MEMORY: u16 = 1 << 1;
const COMMAND_BUS_MASTER: u16 = 1 << 2;

const HEADER_MULTI_FUNCTION: u8 = 0x80;
const HEADER_ENDPOINT: u8 = 0;
const HEADER_BRIDGE: u8 = 1;

const BAR_IO: u32 = 1 << 0;
const BAR_TYPE_64: u32 = 0b10 << 1;
const BAR_TYPE_MASK: u32 = 0b11 << 1;
const BAR_PREFETCHABLE: u32 = 1 << 3;

/// Bridge windows have 1 MiB granularity.
const BRIDGE_WINDOW_ALIGN: u64 = 1 << 20;
/// The low nibble of the prefetchable base register says whether the bridge decodes 64 bits.
const PREF_64: u16 = 0x1;

/// Bus, device and function.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bdf {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl Bdf {
    /// The PCIe requester ID: bus[15:8], device[7:3], function[2:0].
    pub fn rid(&self) -> u16 {
        (u16::from(self.bus) << 8) | (u16::from(self.device) << 3) | u16::from(self.function)
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// A memory BAR as [`scan`] placed it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bar {
    /// Where the CPU reaches it.
    pub cpu_addr: u64,
    /// What the BAR register holds (the PCI bus address).
    pub pci_addr: u64,
    pub size: u64,
    pub is_64bit: bool,
    pub prefetchable: bool,
}

/// One PCI function found by [`scan`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Function {
    pub bdf: Bdf,
    pub vendor: u16,
    pub device: u16,
    /// Class code (base class, subclass, programming interface).
    pub class: u32,
    /// Header type without the multi-function bit: 0 endpoint, 1 PCI-PCI bridge.
    pub header_type: u8,
    /// The PCIe requester ID (= `bdf.rid()`).
    pub rid: u16,
    /// The SMMU StreamID of the function's DMA, from the host's `iommu-map`; `None` if no entry
    /// covers its RID.
    pub stream_id: Option<u32>,
    /// The bridge whose secondary bus the function sits on; `None` on the root bus.
    pub parent: Option<Bdf>,
    /// Memory BARs by index; a 64-bit BAR takes two indices and is recorded at the lower one.
    pub bars: [Option<Bar>; 6],
    config: u64,
}

impl Function {
    pub fn is_bridge(&self) -> bool {
        self.header_type == HEADER_BRIDGE
    }

    pub fn bar(&self, index: usize) -> Option<Bar> {
        self.bars.get(index).copied().flatten()
    }

    /// The CPU address of the function's 4 KiB configuration space.
    pub fn config_base(&self) -> u64 {
        self.config
    }

    /// Turns on memory decoding and bus mastering (I/O decoding stays off).
    pub fn enable(&self) {
        let cfg = Config(self.config);
        let cmd = cfg.read16(COMMAND);
        cfg.write16(COMMAND, cmd | COMMAND_MEMORY | COMMAND_BUS_MASTER);
    }

    /// The command register (bit 1 memory, bit 2 bus master).
    pub fn command(&self) -> u16 {
        Config(self.config).read16(COMMAND)
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{} [{:04x}:{:04x}] RID {:#06x}",
            self.bdf, self.vendor, self.device, self.rid
        )?;
        match self.stream_id {
            Some(sid) => write!(f, " SID {sid:#x}"),
            None => write!(f, " SID none"),
        }
    }
}

/// What [`scan`] found.
#[derive(Clone, Copy, Debug)]
pub struct Topology {
    functions: [Function; MAX_FUNCTIONS],
    len: usize,
    /// The highest bus number assigned.
    pub last_bus: u8,
}

impl Topology {
    pub fn functions(&self) -> &[Function] {
        &self.functions[..self.len]
    }

    /// The functions with this vendor and device ID, in scan (depth-first bus) order.
    pub fn find(&self, vendor: u16, device: u16) -> impl Iterator<Item = &Function> + '_ {
        self.functions()
            .iter()
            .filter(move |f| f.vendor == vendor && f.device == device)
    }
}

/// Why enumeration failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciError {
    /// More bridges than the host's bus range has numbers for.
    OutOfBusNumbers {
        bridge: Bdf,
        bus_end: u8,
    },
    /// A BAR does not fit in what is left of the window.
    OutOfWindowSpace {
        bdf: Bdf,
        bar: usize,
        size: u64,
    },
    /// The host has no 32-bit memory window to place BARs in.
    NoMemoryWindow,
    TooManyFunctions,
}

impl fmt::Display for PciError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::OutOfBusNumbers { bridge, bus_end } => {
                write!(
                    f,
                    "no bus number left for bridge {bridge} (bus range ends at {bus_end:#x})"
                )
            }
            Self::OutOfWindowSpace { bdf, bar, size } => {
                write!(
                    f,
                    "{bdf} BAR{bar} ({size:#x} bytes) does not fit in the memory window"
                )
            }
            Self::NoMemoryWindow => write!(f, "the PCI host has no 32-bit memory window in ranges"),
            Self::TooManyFunctions => write!(f, "more than {MAX_FUNCTIONS} PCI functions"),
        }
    }
}

/// One function's configuration space through the ECAM.
#[derive(Clone, Copy)]
struct Config(u64);

impl Config {
    fn read8(self, off: u64) -> u8 {
        // SAFETY: `self.0` is a function's 4 KiB ECAM page (from the host's `reg`) and `off` is
        // inside it; configuration reads have no side effects beyond the device's own.
        unsafe { mmio_read8(self.0 + off) }
    }
    fn read16(self, off: u64) -> u16 {
        // SAFETY: as in `read8`.
        unsafe { mmio_read16(self.0 + off) }
    }
    fn read32(self, off: u64) -> u32 {
        // SAFETY: as in `read8`.
        unsafe { mmio_read32(self.0 + off) }
    }
    fn write8(self, off: u64, v: u8) {
        // SAFETY: as in `read8`; enumeration owns the PCI hierarchy.
        unsafe { mmio_write8(self.0 + off, v) }
    }
    fn write16(self, off: u64, v: u16) {
        // SAFETY: as in `write8`.
        unsafe { mmio_write16(self.0 + off, v) }
    }
    fn write32(self, off: u64, v: u32) {
        // SAFETY: as in `write8`.
        unsafe { mmio_write32(self.0 + off, v) }
    }
}

/// A bump allocator over one window, in PCI bus addresses.
#[derive(Clone, Copy)]
struct Allocator {
    window: PciWindow,
    next: u64,
}

impl Allocator {
    fn new(window: PciWindow) -> Self {
        Allocator {
            window,
            next: window.pci_base,
        }
    }

    fn end(&self) -> u64 {
        self.window.pci_base + self.window.size
    }

    fn align(&mut self, align: u64) {
        self.next = self.next.next_multiple_of(align).min(self.end());
    }

    /// `size` bytes aligned to `size` (a BAR's natural alignment).
    fn take(&mut self, size: u64) -> Option<u64> {
        let base = self.next.checked_next_multiple_of(size)?;
        let end = base.checked_add(size)?;
        (end <= self.end()).then(|| {
            self.next = end;
            base
        })
    }
}

struct Scanner<'a> {
    host: &'a PciHost,
    mem32: Allocator,
    mem64: Option<Allocator>,
    next_bus: u16,
    found: Topology,
}

/// Enumerates and configures everything below `host` (see the module documentation).
pub fn scan(host: &PciHost) -> Result<Topology, PciError> {
    let mem32 = Allocator::new(host.mem32.ok_or(PciError::NoMemoryWindow)?);
    let mut s = Scanner {
        host,
        mem32,
        mem64: host.mem64.map(Allocator::new),
        next_bus: u16::from(host.bus_start) + 1,
        found: Topology {
            functions: [Function::default(); MAX_FUNCTIONS],
            len: 0,
            last_bus: host.bus_start,
        },
    };
    let pref64 = s.mem64.is_some();
    let last = s.scan_bus(host.bus_start, None, pref64)?;
    s.found.last_bus = last;
    Ok(s.found)
}

impl Scanner<'_> {
    fn config(&self, bus: u8, device: u8, function: u8) -> Config {
        let bus_off = u64::from(bus - self.host.bus_start) << 20;
        Config(
            self.host.ecam.base + bus_off + (u64::from(device) << 15) + (u64::from(function) << 12),
        )
    }

    /// Scans `bus` and everything behind it; returns the highest bus number below it.
    fn scan_bus(&mut self, bus: u8, parent: Option<Bdf>, pref64: bool) -> Result<u8, PciError> {
        let mut last_bus = bus;
        for device in 0..32u8 {
            for function in 0..8u8 {
                let cfg = self.config(bus, device, function);
                if cfg.read16(VENDOR_ID) == 0xffff {
                    if function == 0 {
                        break;
                    }
                    continue;
                }
                let header = cfg.read8(HEADER_TYPE);
                let bdf = Bdf {
                    bus,
                    device,
                    function,
                };
                let mut f = Function {
                    bdf,
                    vendor: cfg.read16(VENDOR_ID),
                    device: cfg.read16(DEVICE_ID),
                    class: cfg.read32(CLASS_REV) >> 8,
                    header_type: header & !HEADER_MULTI_FUNCTION,
                    rid: bdf.rid(),
                    stream_id: self.host.stream_id(bdf.rid()).map(|(_, sid)| sid),
                    parent,
                    bars: [None; 6],
                    config: cfg.0,
                };
                match f.header_type {
                    HEADER_ENDPOINT => {
                        self.assign_bars(cfg, &mut f, 6, pref64)?;
                        self.record(f)?;
                    }
                    HEADER_BRIDGE => {
                        self.assign_bars(cfg, &mut f, 2, pref64)?;
                        self.record(f)?; // Before what lies behind it.
                        last_bus = last_bus.max(self.configure_bridge(cfg, bdf, pref64)?);
                    }
                    _ => self.record(f)?, // CardBus: recorded, not configured.
                }
                if function == 0 && header & HEADER_MULTI_FUNCTION == 0 {
                    break;
                }
            }
        }
        Ok(last_bus)
    }

    fn record(&mut self, f: Function) -> Result<(), PciError> {
        let slot = self
            .found
            .functions
            .get_mut(self.found.len)
            .ok_or(PciError::TooManyFunctions)?;
        *slot = f;
        self.found.len += 1;
        Ok(())
    }

    /// Sizes and places the first `count` BARs (memory BARs only).
    fn assign_bars(
        &mut self,
        cfg: Config,
        f: &mut Function,
        count: usize,
        pref64: bool,
    ) -> Result<(), PciError> {
        // No decoding while BARs hold sizing masks.
        let cmd = cfg.read16(COMMAND);
        cfg.write16(COMMAND, cmd & !(COMMAND_MEMORY | 1));
        let mut i = 0;
        while i < count {
            let off = BAR0 + 4 * i as u64;
            let orig = cfg.read32(off);
            if orig & BAR_IO != 0 {
                i += 1;
                continue;
            }
            let is_64bit = orig & BAR_TYPE_MASK == BAR_TYPE_64 && i + 1 < count;
            let prefetchable = orig & BAR_PREFETCHABLE != 0;
            cfg.write32(off, u32::MAX);
            let lo = cfg.read32(off) & !0xf;
            let hi = if is_64bit {
                let orig_hi = cfg.read32(off + 4);
                cfg.write32(off + 4, u32::MAX);
                let hi = cfg.read32(off + 4);
                cfg.write32(off + 4, orig_hi);
                hi
            } else {
                u32::MAX
            };
            let mask = (u64::from(hi) << 32) | u64::from(lo);
            let step = if is_64bit { 2 } else { 1 };
            if lo == 0 && (!is_64bit || hi == 0) {
                cfg.write32(off, orig); // Not implemented.
                i += step;
                continue;
            }
            let size = (!mask).wrapping_add(1);
            // A 64-bit prefetchable BAR may go above 4 GiB if every bridge on the way forwards a
            // 64-bit prefetchable window; everything else goes in the 32-bit window (a bridge's
            // non-prefetchable window is 32-bit only).
            let high = is_64bit && prefetchable && pref64;
            let (pci, window) = match (high, self.mem64.as_mut()) {
                (true, Some(a)) => match a.take(size) {
                    Some(p) => (Some(p), a.window),
                    None => (self.mem32.take(size), self.mem32.window),
                },
                _ => (self.mem32.take(size), self.mem32.window),
            };
            let pci = pci.ok_or(PciError::OutOfWindowSpace {
                bdf: f.bdf,
                bar: i,
                size,
            })?;
            if !is_64bit && pci > u64::from(u32::MAX) {
                return Err(PciError::OutOfWindowSpace {
                    bdf: f.bdf,
                    bar: i,
                    size,
                });
            }
            cfg.write32(off, (pci as u32) | (orig & 0xf));
            if is_64bit {
                cfg.write32(off + 4, (pci >> 32) as u32);
            }
            f.bars[i] = Some(Bar {
                cpu_addr: window.to_cpu(pci),
                pci_addr: pci,
                size,
                is_64bit,
                prefetchable,
            });
            i += step;
        }
        Ok(())
    }

    /// Numbers the bridge's buses, scans behind it, then opens its memory windows around what was
    /// placed there and enables it. Returns its subordinate bus number.
    fn configure_bridge(&mut self, cfg: Config, bdf: Bdf, pref64: bool) -> Result<u8, PciError> {
        let bus_end = self.host.bus_end;
        if self.next_bus > u16::from(bus_end) {
            return Err(PciError::OutOfBusNumbers {
                bridge: bdf,
                bus_end,
            });
        }
        let secondary = self.next_bus as u8;
        self.next_bus += 1;
        cfg.write8(PRIMARY_BUS, bdf.bus);
        cfg.write8(SECONDARY_BUS, secondary);
        // Forward everything above while the buses behind are numbered; narrowed afterwards.
        cfg.write8(SUBORDINATE_BUS, bus_end);

        let bridge_pref64 = cfg.read16(PREF_MEMORY_BASE) & 0xf == PREF_64;
        let child_pref64 = pref64 && bridge_pref64;
        self.mem32.align(BRIDGE_WINDOW_ALIGN);
        let mem_start = self.mem32.next;
        let pref_start = self.mem64.as_mut().map(|a| {
            a.align(BRIDGE_WINDOW_ALIGN);
            a.next
        });

        let subordinate = self.scan_bus(secondary, Some(bdf), child_pref64)?;
        cfg.write8(SUBORDINATE_BUS, subordinate);

        self.mem32.align(BRIDGE_WINDOW_ALIGN);
        let mem_end = self.mem32.next;
        if mem_end > mem_start {
            cfg.write16(MEMORY_BASE, ((mem_start >> 16) as u16) & 0xfff0);
            cfg.write16(MEMORY_LIMIT, (((mem_end - 1) >> 16) as u16) & 0xfff0);
        } else {
            cfg.write16(MEMORY_BASE, 0xfff0);
            cfg.write16(MEMORY_LIMIT, 0);
        }

        let pref_end = self.mem64.as_mut().map(|a| {
            a.align(BRIDGE_WINDOW_ALIGN);
            a.next
        });
        match (pref_start, pref_end) {
            (Some(start), Some(end)) if end > start && child_pref64 => {
                cfg.write16(PREF_MEMORY_BASE, ((start >> 16) as u16) & 0xfff0);
                cfg.write16(PREF_MEMORY_LIMIT, (((end - 1) >> 16) as u16) & 0xfff0);
                cfg.write32(PREF_BASE_UPPER32, (start >> 32) as u32);
                cfg.write32(PREF_LIMIT_UPPER32, ((end - 1) >> 32) as u32);
            }
            _ => {
                cfg.write16(PREF_MEMORY_BASE, 0xfff0);
                cfg.write16(PREF_MEMORY_LIMIT, 0);
                if bridge_pref64 {
                    cfg.write32(PREF_BASE_UPPER32, u32::MAX);
                    cfg.write32(PREF_LIMIT_UPPER32, 0);
                }
            }
        }
        // No I/O is forwarded: base above limit.
        cfg.write8(IO_BASE, 0xf0);
        cfg.write8(IO_LIMIT, 0);
        cfg.write16(IO_BASE_UPPER16, 0);
        cfg.write16(IO_LIMIT_UPPER16, 0);

        let cmd = cfg.read16(COMMAND);
        cfg.write16(COMMAND, (cmd & !1) | COMMAND_MEMORY | COMMAND_BUS_MASTER);
        Ok(subordinate)
    }
}
