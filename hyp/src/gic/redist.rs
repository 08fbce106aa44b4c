//! The redistributors' LPI registers: `GICR_PROPBASER` and `GICR_PENDBASER` name memory the
//! redistributor reads and writes on its own, so a write is passed to the hardware only when the
//! whole table it names is device-writable in the current mode, and `GICR_CTLR.EnableLPIs` only
//! when both registers hold values Portcullis accepted. Every other access is the hardware's.
//!
//! The whole `RD_base` frame of each redistributor is trapped, and with GICv4 its `VLPI_base`
//! frame, whose `GICR_VPROPBASER` / `GICR_VPENDBASER` writes are ignored (virtual LPIs are not
//! offered). The architected registers (the first 4 KiB) and the ID registers (from `0xFFD0`) are
//! the hardware's; the IMPLEMENTATION DEFINED range in between reads as zero and ignores writes, as
//! a vendor register there might hold an address too.

use alloc::vec::Vec;

use platform::addr::PhysRange;
use tock_registers::LocalRegisterCopy;

use super::its_cmd::RdBase;
use super::lpi;
use super::regs::{GICR_CTLR, GICR_TYPER, architected, gicr};
use super::window::{DmaWindow, Outside};

/// One redistributor, as found by walking the redistributor regions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RdFrame {
    /// Physical address of its `RD_base` frame.
    pub rd_base: u64,
    pub processor: u16,
    pub vlpis: bool,
}

/// Walks the redistributor regions (`reg` of the GIC node after the distributor), reading each
/// frame's `GICR_TYPER` with `read_typer(rd_base)`: frames are 128 KiB apart (256 KiB with
/// VLPIS) until `GICR_TYPER.Last` or the end of the region. At most `max` frames in all.
pub fn enumerate(
    regions: &[PhysRange],
    max: usize,
    mut read_typer: impl FnMut(u64) -> u64,
) -> Vec<RdFrame> {
    let mut out = Vec::new();
    for region in regions {
        let mut at = region.start.raw();
        while at
            .checked_add(2 * gicr::FRAME)
            .is_some_and(|end| end <= region.end.raw())
            && out.len() < max
        {
            let t = LocalRegisterCopy::<u64, GICR_TYPER::Register>::new(read_typer(at));
            let vlpis = t.is_set(GICR_TYPER::VLPIS);
            out.push(RdFrame {
                rd_base: at,
                processor: t.read(GICR_TYPER::Processor_Number) as u16,
                vlpis,
            });
            if t.is_set(GICR_TYPER::Last) {
                break;
            }
            at += if vlpis {
                4 * gicr::FRAME
            } else {
                2 * gicr::FRAME
            };
        }
    }
    out
}

/// The RDbase values commands may name: processor numbers, or (`GITS_TYPER.PTA`) bits [51:16]
/// of the `RD_base` addresses.
pub fn targets(frames: &[RdFrame], pta: bool) -> Vec<RdBase> {
    frames
        .iter()
        .map(|f| {
            if pta {
                f.rd_base >> 16
            } else {
                u64::from(f.processor)
            }
        })
        .collect()
}

/// The frames Portcullis traps: each `RD_base`, and each `VLPI_base`.
pub fn trapped_pages(frames: &[RdFrame]) -> Vec<PhysRange> {
    let mut out = Vec::new();
    for f in frames {
        out.extend(PhysRange::new(f.rd_base, gicr::FRAME));
        if f.vlpis {
            out.extend(PhysRange::new(f.rd_base + gicr::VLPI_FRAME, gicr::FRAME));
        }
    }
    out
}

/// The redistributor registers Portcullis reaches.
pub trait PhysRedist {
    fn read32(&mut self, pa: u64) -> u32;
    fn write32(&mut self, pa: u64, value: u32);
    fn read64(&mut self, pa: u64) -> u64;
    fn write64(&mut self, pa: u64, value: u64);
}

/// Why a redistributor write did not reach the hardware (in full).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RdRefusal {
    /// The table a PROPBASER / PENDBASER value names is not device-writable.
    Table {
        register: &'static str,
        value: u64,
        outside: Outside,
    },
    /// PROPBASER / PENDBASER written while EnableLPIs is set (the hardware may take it anyway).
    WhileEnabled { register: &'static str },
    /// EnableLPIs asked for before both tables were accepted; the bit was dropped.
    EnableLpis,
    /// GICv4 VPROPBASER / VPENDBASER.
    Virtual,
}

impl core::fmt::Display for RdRefusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Table {
                register,
                value,
                outside,
            } => {
                write!(f, "{register} {value:#x} refused: its table {outside}")
            }
            Self::WhileEnabled { register } => {
                write!(f, "{register} written while EnableLPIs is set; ignored")
            }
            Self::EnableLpis => write!(
                f,
                "EnableLPIs refused: PROPBASER and PENDBASER do not both hold accepted tables"
            ),
            Self::Virtual => write!(
                f,
                "VPROPBASER/VPENDBASER ignored (virtual LPIs not offered)"
            ),
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Accepted {
    prop: Option<u64>,
    pend: Option<u64>,
}

/// Portcullis' view of every redistributor.
#[derive(Debug)]
pub struct Redistributors {
    frames: Vec<RdFrame>,
    accepted: Vec<Accepted>,
    /// `GICD_TYPER.IDbits + 1`.
    id_bits: u32,
}

/// A trapped address, located.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Located {
    pub index: usize,
    pub offset: usize,
    pub vlpi: bool,
}

impl Redistributors {
    pub fn new(frames: Vec<RdFrame>, id_bits: u32) -> Self {
        let accepted = alloc::vec![Accepted::default(); frames.len()];
        Self {
            frames,
            accepted,
            id_bits,
        }
    }

    pub fn frames(&self) -> &[RdFrame] {
        &self.frames
    }

    /// Which trapped page `pa` falls in.
    pub fn locate(&self, pa: u64) -> Option<Located> {
        self.frames.iter().enumerate().find_map(|(index, f)| {
            let off = pa.checked_sub(f.rd_base)?;
            if off < gicr::FRAME {
                Some(Located {
                    index,
                    offset: off as usize,
                    vlpi: false,
                })
            } else if f.vlpis && (gicr::VLPI_FRAME..gicr::VLPI_FRAME + gicr::FRAME).contains(&off) {
                Some(Located {
                    index,
                    offset: (off - gicr::VLPI_FRAME) as usize,
                    vlpi: true,
                })
            } else {
                None
            }
        })
    }

    /// A host read: the hardware's value.
    pub fn read(&self, at: Located, size: u8, phys: &mut impl PhysRedist) -> u64 {
        if !architected(at.offset) {
            return 0;
        }
        let pa = self.pa(at);
        match size {
            8 if pa.is_multiple_of(8) => phys.read64(pa),
            4 if pa.is_multiple_of(4) => u64::from(phys.read32(pa)),
            _ => 0,
        }
    }

    fn pa(&self, at: Located) -> u64 {
        let f = &self.frames[at.index];
        f.rd_base + if at.vlpi { gicr::VLPI_FRAME } else { 0 } + at.offset as u64
    }

    /// A host write, checked against `window`.
    pub fn write(
        &mut self,
        at: Located,
        size: u8,
        value: u64,
        window: &DmaWindow,
        phys: &mut impl PhysRedist,
    ) -> Option<RdRefusal> {
        let pa = self.pa(at);
        let reg = at.offset & !7;
        if at.offset >= 0x1000 {
            // ID registers are read-only; the IMPLEMENTATION DEFINED range is not the host's.
            return None;
        }
        if at.vlpi {
            if reg == gicr::VPROPBASER || reg == gicr::VPENDBASER {
                return Some(RdRefusal::Virtual);
            }
            forward(phys, pa, size, value);
            return None;
        }
        let rd_base = self.frames[at.index].rd_base;
        match reg {
            gicr::PROPBASER | gicr::PENDBASER => {
                let prop = reg == gicr::PROPBASER;
                let register = if prop {
                    "GICR_PROPBASER"
                } else {
                    "GICR_PENDBASER"
                };
                let old = phys.read64(rd_base + reg as u64);
                let new = match (size, at.offset % 8) {
                    (8, 0) => value,
                    (4, 0) => (old & !0xffff_ffff) | (value & 0xffff_ffff),
                    (4, 4) => (old & 0xffff_ffff) | (value << 32),
                    _ => return None,
                };
                if self.lpis_enabled(at.index, phys) {
                    return Some(RdRefusal::WhileEnabled { register });
                }
                // A PROPBASER naming fewer than 14 ID bits names no table: nothing to check.
                let table = if prop {
                    lpi::property_table(new, self.id_bits)
                } else {
                    lpi::pending_table(new, self.id_bits).map(Some)
                };
                let checked = table.and_then(|t| match t {
                    Some(r) => window.check(r.start.raw(), r.size()).map(|_| ()),
                    None => Ok(()),
                });
                if let Err(outside) = checked {
                    return Some(RdRefusal::Table {
                        register,
                        value: new,
                        outside,
                    });
                }
                phys.write64(rd_base + reg as u64, new);
                let a = &mut self.accepted[at.index];
                if prop {
                    a.prop = Some(new);
                } else {
                    a.pend = Some(new);
                }
                None
            }
            gicr::CTLR if at.offset == gicr::CTLR => {
                let a = self.accepted[at.index];
                let wants = value & 1 != 0;
                let mut v = value;
                let mut refusal = None;
                if wants
                    && !self.lpis_enabled(at.index, phys)
                    && (a.prop.is_none() || a.pend.is_none())
                {
                    v &= !1;
                    refusal = Some(RdRefusal::EnableLpis);
                }
                forward(phys, pa, size, v);
                refusal
            }
            _ => {
                forward(phys, pa, size, value);
                None
            }
        }
    }

    fn lpis_enabled(&self, index: usize, phys: &mut impl PhysRedist) -> bool {
        let ctlr = LocalRegisterCopy::<u32, GICR_CTLR::Register>::new(
            phys.read32(self.frames[index].rd_base + gicr::CTLR as u64),
        );
        ctlr.is_set(GICR_CTLR::EnableLPIs)
    }

    /// At the fence: the LPI tables the capture kernel keeps using, from the values Portcullis
    /// accepted (never from the hardware), of redistributors with EnableLPIs set, bounded by the
    /// ID bits the GIC implements. Tables that would overlap `forbidden` (Portcullis' memory, the
    /// report) are left out and returned second — they cannot exist, as every accepted table was
    /// device-writable. Redistributors without EnableLPIs forget their accepted values: those
    /// were checked against the normal-mode policy.
    pub fn enter_crash(
        &mut self,
        forbidden: &[PhysRange],
        phys: &mut impl PhysRedist,
    ) -> (Vec<PhysRange>, Vec<PhysRange>) {
        let mut keep = Vec::new();
        let mut skipped = Vec::new();
        for index in 0..self.frames.len() {
            if !self.lpis_enabled(index, phys) {
                self.accepted[index] = Accepted::default();
                continue;
            }
            let a = self.accepted[index];
            let prop = a
                .prop
                .and_then(|v| lpi::property_table(v, self.id_bits).ok().flatten());
            let pend = a
                .pend
                .and_then(|v| lpi::pending_table(v, self.id_bits).ok());
            for t in [prop, pend].into_iter().flatten() {
                if forbidden.iter().any(|f| f.overlaps(&t)) {
                    skipped.push(t);
                } else if !keep.contains(&t) {
                    keep.push(t);
                }
            }
        }
        (keep, skipped)
    }
}

fn forward(phys: &mut impl PhysRedist, pa: u64, size: u8, value: u64) {
    match size {
        8 if pa.is_multiple_of(8) => phys.write64(pa, value),
        4 if pa.is_multiple_of(4) => phys.write32(pa, value as u32),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
