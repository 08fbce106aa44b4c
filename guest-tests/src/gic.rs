//! Just enough of a GICv3 redistributor and ITS driver (Arm IHI 0069) for the hostile suite to
//! point their memory tables where a host may not, the way a hostile host kernel would: the LPI
//! tables (`GICR_PROPBASER`, `GICR_PENDBASER`), the ITS tables (`GITS_BASERn`), the ITS command
//! queue (`GITS_CBASER`) and the ITT address of `MAPD`.
//!
//! Every register access is a single load or store (a valid syndrome if Portcullis traps it).
//! Tables the payload owns are plain host RAM the caller names (the MMU is off: Device memory, no
//! cache maintenance needed on QEMU).

use crate::dt::Tree;
use crate::mmio::{mmio_read32, mmio_write32, read64, write64};
use crate::rt::{tick_hz, ticks};
use spec::gic::{gicr, gits};

/// QEMU virt's GIC, as fallbacks when the tree does not say.
const VIRT_GICR: u64 = 0x080a_0000;
const VIRT_ITS: u64 = 0x0808_0000;

/// A GICv3 redistributor's frames (`RD_base`, `SGI_base`) without GICv4's two more.
pub const GICR_STRIDE: u64 = 2 * gicr::FRAME;
// The register offsets, from the one table the hypervisor uses too (`spec::gic`).
pub const GICR_CTLR: u64 = gicr::CTLR as u64;
pub const GICR_TYPER: u64 = gicr::TYPER as u64;
pub const GICR_PROPBASER: u64 = gicr::PROPBASER as u64;
pub const GICR_PENDBASER: u64 = gicr::PENDBASER as u64;
pub const CTLR_ENABLE_LPIS: u32 = 1;

pub const GITS_CTLR: u64 = gits::CTLR as u64;
pub const GITS_TYPER: u64 = gits::TYPER as u64;
pub const GITS_CBASER: u64 = gits::CBASER as u64;
pub const GITS_CWRITER: u64 = gits::CWRITER as u64;
pub const GITS_CREADR: u64 = gits::CREADR as u64;
pub const GITS_BASER0: u64 = gits::BASER as u64;
const GITS_CTLR_ENABLED: u32 = 1;
const GITS_CTLR_QUIESCENT: u32 = 1 << 31;

const VALID: u64 = 1 << 63;
/// `GITS_BASERn.Type`.
pub const BASER_TYPE_DEVICE: u64 = 1;
pub const BASER_TYPE_COLLECTION: u64 = 4;
/// The first LPI.
pub const LPI_BASE: u32 = 8192;
/// Bytes of an ITS command.
pub const CMD_BYTES: u64 = 32;

/// 4 KiB address bits [51:12] of a table register.
fn pa4k(addr: u64) -> u64 {
    addr & 0x000f_ffff_ffff_f000
}

/// The redistributor frames' base (`/intc`'s second reg) and the ITS frame.
pub fn frames(tree: &Tree) -> (u64, u64) {
    let gicr = tree
        .regs_of("/intc@8000000")
        .nth(1)
        .map_or(VIRT_GICR, |r| r.base);
    let its = tree
        .regs_of("/intc@8000000/its@8080000")
        .next()
        .map_or(VIRT_ITS, |r| r.base);
    (gicr, its)
}

/// One redistributor's RD_base frame.
#[derive(Clone, Copy, Debug)]
pub struct Redist(pub u64);

impl Redist {
    pub fn nth(gicr: u64, i: u64) -> Redist {
        Redist(gicr + i * GICR_STRIDE)
    }

    /// The processor number (`GICR_TYPER.Processor_Number`), the ITS's RDbase with PTA = 0.
    pub fn processor(&self) -> u64 {
        // SAFETY: a redistributor frame register.
        (unsafe { read64(self.0 + GICR_TYPER) } >> 8) & 0xffff
    }

    pub fn ctlr(&self) -> u32 {
        // SAFETY: as above.
        unsafe { mmio_read32(self.0 + GICR_CTLR) }
    }

    pub fn propbaser(&self) -> u64 {
        // SAFETY: as above.
        unsafe { read64(self.0 + GICR_PROPBASER) }
    }

    pub fn pendbaser(&self) -> u64 {
        // SAFETY: as above.
        unsafe { read64(self.0 + GICR_PENDBASER) }
    }

    /// Points the LPI tables at `prop` (16 ID bits) and `pend` (64 KiB-aligned), then sets
    /// EnableLPIs: the host's part of LPI bring-up.
    pub fn enable_lpis(&self, prop: u64, pend: u64) {
        // SAFETY: redistributor registers; the host may program them.
        unsafe {
            write64(self.0 + GICR_PROPBASER, pa4k(prop) | 15);
            write64(self.0 + GICR_PENDBASER, pend & 0x000f_ffff_ffff_0000);
            mmio_write32(self.0 + GICR_CTLR, CTLR_ENABLE_LPIS);
        }
    }

    /// The redistributor holds `prop` and `pend` with LPIs enabled.
    pub fn uses(&self, prop: u64, pend: u64) -> bool {
        self.ctlr() & CTLR_ENABLE_LPIS != 0
            && pa4k(self.propbaser()) == pa4k(prop)
            && self.pendbaser() & 0x000f_ffff_ffff_0000 == pend & 0x000f_ffff_ffff_0000
    }
}

/// An ITS command, four 64-bit words.
pub type ItsCommand = [u64; 4];

pub fn mapd(device: u32, itt: u64, valid: bool) -> ItsCommand {
    let v = if valid { VALID } else { 0 };
    [
        0x08 | u64::from(device) << 32,
        0, // Size: 1 EventID bit
        v | (itt & 0x000f_ffff_ffff_ff00),
        0,
    ]
}

pub fn mapc(icid: u16, rdbase: u64) -> ItsCommand {
    [
        0x09,
        0,
        VALID | (rdbase & 0xf_ffff_ffff) << 16 | u64::from(icid),
        0,
    ]
}

pub fn mapti(device: u32, event: u32, intid: u32, icid: u16) -> ItsCommand {
    [
        0x0a | u64::from(device) << 32,
        u64::from(event) | u64::from(intid) << 32,
        u64::from(icid),
        0,
    ]
}

pub fn int(device: u32, event: u32) -> ItsCommand {
    [0x03 | u64::from(device) << 32, u64::from(event), 0, 0]
}

pub fn sync(rdbase: u64) -> ItsCommand {
    [0x05, 0, (rdbase & 0xf_ffff_ffff) << 16, 0]
}

/// The ITS, driven with a command queue at `queue` (`pages` 4 KiB pages).
#[derive(Clone, Copy, Debug)]
pub struct Its {
    pub base: u64,
}

impl Its {
    pub fn read32(&self, off: u64) -> u32 {
        // SAFETY: an ITS register.
        unsafe { mmio_read32(self.base + off) }
    }
    pub fn read64(&self, off: u64) -> u64 {
        // SAFETY: an ITS register.
        unsafe { read64(self.base + off) }
    }
    pub fn write32(&self, off: u64, v: u32) {
        // SAFETY: an ITS register the host may program.
        unsafe { mmio_write32(self.base + off, v) }
    }
    pub fn write64(&self, off: u64, v: u64) {
        // SAFETY: as above.
        unsafe { write64(self.base + off, v) }
    }

    /// The GITS_BASERn of `kind` (`BASER_TYPE_*`), if the ITS has one.
    pub fn baser_of(&self, kind: u64) -> Option<u64> {
        (0..8)
            .map(|n| GITS_BASER0 + 8 * n)
            .find(|&off| (self.read64(off) >> 56) & 7 == kind)
    }

    /// Disables the ITS and waits (bounded) for it to be quiescent.
    pub fn disable(&self) {
        self.write32(GITS_CTLR, 0);
        let start = ticks();
        while self.read32(GITS_CTLR) & GITS_CTLR_QUIESCENT == 0
            && ticks().wrapping_sub(start) < tick_hz() / 10
        {
            core::hint::spin_loop();
        }
    }

    /// Disabled, then: the command queue at `queue` (`pages` pages, CWRITER = 0), the device and
    /// collection tables at `devices` and `collections` (one page each), enabled.
    pub fn setup(&self, queue: u64, pages: u64, devices: u64, collections: u64) {
        self.disable();
        self.write64(GITS_CBASER, VALID | pa4k(queue) | (pages - 1).min(255));
        self.write64(GITS_CWRITER, 0);
        for (kind, at) in [
            (BASER_TYPE_DEVICE, devices),
            (BASER_TYPE_COLLECTION, collections),
        ] {
            if let Some(off) = self.baser_of(kind) {
                let ro = self.read64(off) & (0x7 << 56 | 0x1f << 48);
                self.write64(off, VALID | ro | (at & 0x0000_ffff_ffff_f000));
            }
        }
        self.write32(GITS_CTLR, GITS_CTLR_ENABLED);
    }

    /// Writes `cmds` into the queue at `queue` from byte offset `at` and moves CWRITER past them;
    /// waits (bounded, 200 ms) for CREADR to follow. Returns CREADR's offset afterwards.
    pub fn run(&self, queue: u64, at: u64, cmds: &[ItsCommand]) -> u64 {
        let mut off = at;
        for c in cmds {
            for (i, w) in c.iter().enumerate() {
                // SAFETY: the caller's queue, host RAM.
                unsafe { write64(queue + off + 8 * i as u64, *w) };
            }
            off += CMD_BYTES;
        }
        self.write64(GITS_CWRITER, off);
        self.wait_read(off)
    }

    /// Waits (bounded, 200 ms) for CREADR to reach `off`; returns its offset.
    pub fn wait_read(&self, off: u64) -> u64 {
        let start = ticks();
        loop {
            let r = self.read64(GITS_CREADR) & 0xf_ffe0;
            if r == off || ticks().wrapping_sub(start) > tick_hz() / 5 {
                return r;
            }
            core::hint::spin_loop();
        }
    }
}

/// Enables LPI `intid` (priority 0xa0) in the configuration table at `prop` (host RAM). The GIC
/// sets an LPI's pending bit only while it is enabled there.
pub fn enable_lpi(prop: u64, intid: u32) {
    let at = prop + u64::from(intid - LPI_BASE);
    // SAFETY: the caller's configuration table, host RAM.
    unsafe { crate::mmio::mmio_write8(at, 0xa1) };
}
