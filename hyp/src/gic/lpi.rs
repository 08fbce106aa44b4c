//! Where a redistributor's LPI tables lie, from GICR_PROPBASER / GICR_PENDBASER and what the GIC
//! implements (`GICD_TYPER.IDbits`).
//!
//! Sizes follow IHI 0069 (5.1.1, "LPI Configuration tables"; 5.1.2, "LPI Pending tables"): the
//! configuration table has one byte per LPI, INTIDs 8192 .. 2^(IDbits+1); the pending table one
//! bit per INTID from 0, 64 KiB aligned. The configuration table's IDbits is the smaller of
//! PROPBASER's and the distributor's (an implementation ignores IDs it does not implement); its
//! extent is rounded up to 64 KiB, the unit in which Linux allocates it and in which a capture
//! kernel reusing it clears it (`gic_reset_prop_table` writes all of `LPI_PROPBASE_SZ`). The
//! pending table's extent uses the distributor's alone: PROPBASER.IDbits may be rewritten later,
//! the implemented maximum cannot, so the bound holds whatever the host does afterwards.

use platform::addr::PhysRange;
use tock_registers::LocalRegisterCopy;

use super::regs::{GICD_TYPER, GICR_PENDBASER, GICR_PROPBASER};
use super::window::Outside;

/// The first LPI INTID.
pub const LPI_BASE: u64 = 8192;
/// The alignment of a pending table, and the unit LPI table extents are rounded up to.
const PENDING_ALIGN: u64 = 64 << 10;

/// The interrupt ID bits the GIC implements: `GICD_TYPER.IDbits + 1`.
pub fn implemented_id_bits(gicd_typer: u64) -> u32 {
    LocalRegisterCopy::<u64, GICD_TYPER::Register>::new(gicd_typer).read(GICD_TYPER::IDbits) as u32
        + 1
}

/// The LPI configuration table PROPBASER names, or `None` when it names no LPIs (fewer than 14
/// ID bits: the redistributor then reads nothing); `Err` when the range would wrap.
pub fn property_table(propbaser: u64, id_bits: u32) -> Result<Option<PhysRange>, Outside> {
    let reg = LocalRegisterCopy::<u64, GICR_PROPBASER::Register>::new(propbaser);
    let bits = (reg.read(GICR_PROPBASER::IDbits) as u32 + 1).min(id_bits);
    if bits < 14 {
        return Ok(None);
    }
    let start = reg.read(GICR_PROPBASER::Physical_Address) << 12;
    let len = ((1u64 << bits.min(32)) - LPI_BASE).next_multiple_of(PENDING_ALIGN);
    PhysRange::new(start, len)
        .map(Some)
        .ok_or(Outside::Wraps { start, len })
}

/// The LPI pending table PENDBASER names, sized for every INTID the GIC implements; `Err` when
/// the range would wrap.
pub fn pending_table(pendbaser: u64, id_bits: u32) -> Result<PhysRange, Outside> {
    let reg = LocalRegisterCopy::<u64, GICR_PENDBASER::Register>::new(pendbaser);
    let start = reg.read(GICR_PENDBASER::Physical_Address) << 16;
    let len = ((1u64 << id_bits.clamp(14, 32)) / 8).next_multiple_of(PENDING_ALIGN);
    PhysRange::new(start, len).ok_or(Outside::Wraps { start, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU's GICD_TYPER: IDbits = 15 (16 ID bits), LPIS.
    const GICD_16: u64 = (15 << 19) | (1 << 17);

    #[test]
    fn sizes() {
        assert_eq!(implemented_id_bits(GICD_16), 16);
        // 16 ID bits: 2^16 - 8192 bytes of configuration and 8 KiB of pending bits, each
        // padded to 64 KiB.
        assert_eq!(
            property_table(0x4800_0000 | 15, 16),
            Ok(PhysRange::new(0x4800_0000, 0x1_0000))
        );
        assert_eq!(
            pending_table(0x4801_0000, 16),
            PhysRange::new(0x4801_0000, 0x1_0000).ok_or(Outside::Wraps { start: 0, len: 0 })
        );
        // PROPBASER asking for more than the GIC implements is capped by it.
        assert_eq!(
            property_table(0x4800_0000 | 31, 16),
            Ok(PhysRange::new(0x4800_0000, 0x1_0000))
        );
        // A GIC with 24 ID bits: the pending table is 2 MiB, whatever PROPBASER says.
        assert_eq!(
            pending_table(0x4801_0000, 24),
            PhysRange::new(0x4801_0000, 2 << 20).ok_or(Outside::Wraps { start: 0, len: 0 })
        );
        assert_eq!(
            property_table(0x4800_0000 | 23, 24),
            Ok(PhysRange::new(0x4800_0000, 1 << 24))
        );
        // Fewer than 14 bits: no LPIs, no table.
        assert_eq!(property_table(0x4800_0000 | 12, 16), Ok(None));
        // Low bits that are not address bits are ignored.
        assert_eq!(
            pending_table(0x4801_0000 | 0xffff | (1 << 62), 16),
            PhysRange::new(0x4801_0000, 0x1_0000).ok_or(Outside::Wraps { start: 0, len: 0 })
        );
    }

    #[test]
    fn linux_register_values() {
        // Linux on QEMU: IDbits = 15, cacheability and shareability bits set, PTZ on the pending
        // table: only the address bits count.
        let propbaser = 0x4680_0000 | (0b111 << 7) | (0b01 << 10) | 15;
        let pendbaser = 0x4690_0000 | (0b111 << 7) | (0b01 << 10) | (1 << 62);
        assert_eq!(
            property_table(propbaser, 16),
            Ok(PhysRange::new(0x4680_0000, 0x1_0000))
        );
        assert_eq!(
            pending_table(pendbaser, 16),
            PhysRange::new(0x4690_0000, 0x1_0000).ok_or(Outside::Wraps { start: 0, len: 0 })
        );
    }

    #[test]
    fn top_of_the_address_space_does_not_wrap_silently() {
        // The highest 52-bit addresses: representable, no wrap in u64.
        let prop = (0xf_ffff_ffffu64 << 12) | 15;
        assert!(property_table(prop, 16).is_ok());
        assert!(pending_table(0x000f_ffff_ffff_0000, 32).is_ok());
    }
}
