//! GICv3 register offsets (Arm IHI 0069, chapter 12) that Portcullis mediates and the guest
//! payloads program: the registers that hold memory addresses, or gate whether the GIC uses them.

/// Offsets in a redistributor's `RD_base` frame (the first 64 KiB of each redistributor).
pub mod gicr {
    pub const CTLR: usize = 0x0000;
    pub const TYPER: usize = 0x0008;
    pub const PROPBASER: usize = 0x0070;
    pub const PENDBASER: usize = 0x0078;
    /// Size of one frame (`RD_base`, `SGI_base`, and with GICv4 `VLPI_base`, reserved).
    pub const FRAME: u64 = 0x1_0000;
    /// `VLPI_base` (GICv4: `GICR_TYPER.VLPIS`), two frames above `RD_base`.
    pub const VLPI_FRAME: u64 = 0x2_0000;
    /// `GICR_VPROPBASER` and `GICR_VPENDBASER` in the `VLPI_base` frame.
    pub const VPROPBASER: usize = 0x0070;
    pub const VPENDBASER: usize = 0x0078;
}

/// Offsets in the distributor frame.
pub mod gicd {
    pub const TYPER: usize = 0x0004;
}

/// Offsets in an ITS's control frame (`ITS_base`, the first 64 KiB of the ITS).
pub mod gits {
    pub const CTLR: usize = 0x0000;
    pub const TYPER: usize = 0x0008;
    pub const CBASER: usize = 0x0080;
    pub const CWRITER: usize = 0x0088;
    pub const CREADR: usize = 0x0090;
    /// `GITS_BASER0`; `GITS_BASER<n>` is at `BASER + 8 * n`.
    pub const BASER: usize = 0x0100;
    pub const BASER_COUNT: usize = 8;
    /// The translation frame (`GITS_TRANSLATER`), 64 KiB above `ITS_base`.
    pub const TRANSLATION_FRAME: u64 = 0x1_0000;
}
