//! GICv3 register offsets and fields that Portcullis mediates (Arm IHI 0069: chapter 12, "GIC
//! Redistributor", "ITS"; section 5.3, "ITS commands").
//!
//! Only the registers that hold memory addresses, or gate whether the GIC uses them, are named
//! here: the rest of the GIC is the host's, untouched.

use tock_registers::register_bitfields;

pub use spec::gic::{gicd, gicr, gits};

register_bitfields! [u64,
    /// GICD_TYPER (the fields Portcullis reads).
    pub GICD_TYPER [
        /// Interrupt identifier bits supported, minus one.
        IDbits OFFSET(19) NUMBITS(5) [],
        LPIS OFFSET(17) NUMBITS(1) []
    ],
    pub GICR_TYPER [
        PLPIS OFFSET(0) NUMBITS(1) [],
        VLPIS OFFSET(1) NUMBITS(1) [],
        Last OFFSET(4) NUMBITS(1) [],
        Processor_Number OFFSET(8) NUMBITS(16) [],
        Affinity_Value OFFSET(32) NUMBITS(32) []
    ],
    pub GICR_PROPBASER [
        /// Interrupt identifier bits the configuration table covers, minus one.
        IDbits OFFSET(0) NUMBITS(5) [],
        /// Bits [51:12] of the table's physical address.
        Physical_Address OFFSET(12) NUMBITS(40) []
    ],
    pub GICR_PENDBASER [
        /// Bits [51:16] of the table's physical address.
        Physical_Address OFFSET(16) NUMBITS(36) [],
        PTZ OFFSET(62) NUMBITS(1) []
    ],
    pub GITS_TYPER [
        Physical OFFSET(0) NUMBITS(1) [],
        Virtual OFFSET(1) NUMBITS(1) [],
        /// Bytes per ITT entry, minus one.
        ITT_entry_size OFFSET(4) NUMBITS(4) [],
        /// EventID bits, minus one.
        ID_bits OFFSET(8) NUMBITS(5) [],
        /// DeviceID bits, minus one.
        Devbits OFFSET(13) NUMBITS(5) [],
        /// Target addresses are redistributor physical addresses (else processor numbers).
        PTA OFFSET(19) NUMBITS(1) [],
        HCC OFFSET(24) NUMBITS(8) [],
        /// CollectionID bits, minus one (when CIL).
        CIDbits OFFSET(32) NUMBITS(4) [],
        CIL OFFSET(36) NUMBITS(1) [],
        VMOVP OFFSET(37) NUMBITS(1) [],
        MPAM OFFSET(38) NUMBITS(1) [],
        VSGI OFFSET(39) NUMBITS(1) [],
        VMAPP OFFSET(40) NUMBITS(1) [],
        SVPET OFFSET(41) NUMBITS(2) []
    ],
    pub GITS_BASER [
        /// Pages, minus one.
        Size OFFSET(0) NUMBITS(8) [],
        Page_Size OFFSET(8) NUMBITS(2) [
            Size4K = 0,
            Size16K = 1,
            Size64K = 2
        ],
        Shareability OFFSET(10) NUMBITS(2) [
            NonShareable = 0,
            InnerShareable = 1
        ],
        /// Bits [47:12] of the table's address (with 64 KiB pages, [47:16] and [51:48] in [15:12]).
        Physical_Address OFFSET(12) NUMBITS(36) [],
        /// Bytes per entry, minus one (read-only).
        Entry_Size OFFSET(48) NUMBITS(5) [],
        OuterCache OFFSET(53) NUMBITS(3) [],
        Type OFFSET(56) NUMBITS(3) [
            Unimplemented = 0,
            Devices = 1,
            VPEs = 2,
            Collections = 4
        ],
        InnerCache OFFSET(59) NUMBITS(3) [
            /// Normal, inner write-back, read- and write-allocate.
            RaWaWb = 7
        ],
        Indirect OFFSET(62) NUMBITS(1) [],
        Valid OFFSET(63) NUMBITS(1) []
    ],
    pub GITS_CBASER [
        /// 4 KiB pages, minus one.
        Size OFFSET(0) NUMBITS(8) [],
        Shareability OFFSET(10) NUMBITS(2) [
            NonShareable = 0,
            InnerShareable = 1
        ],
        /// Bits [51:12] of the queue's address.
        Physical_Address OFFSET(12) NUMBITS(40) [],
        OuterCache OFFSET(53) NUMBITS(3) [],
        InnerCache OFFSET(59) NUMBITS(3) [
            RaWaWb = 7
        ],
        Valid OFFSET(63) NUMBITS(1) []
    ],
    /// GITS_CWRITER and GITS_CREADR share the layout; bit 0 is Retry (CWRITER) or Stalled (CREADR).
    pub GITS_CQ_INDEX [
        RetryOrStalled OFFSET(0) NUMBITS(1) [],
        /// Bits [19:5] of the byte offset in the queue.
        Offset OFFSET(5) NUMBITS(15) []
    ]
];

register_bitfields! [u32,
    pub GICR_CTLR [
        EnableLPIs OFFSET(0) NUMBITS(1) []
    ],
    pub GITS_CTLR [
        Enabled OFFSET(0) NUMBITS(1) [],
        Quiescent OFFSET(31) NUMBITS(1) []
    ]
];

/// Bytes in one ITS command.
pub const COMMAND_BYTES: u64 = 32;

/// The byte offset a GITS_CWRITER / GITS_CREADR value names.
pub fn queue_offset(value: u64) -> u64 {
    value & 0xf_ffe0
}

/// Whether `offset` in a trapped frame is an architected or ID register (the hardware's), rather
/// than the IMPLEMENTATION DEFINED range (`0x1000..0xFFD0`, of which `0xC000..0xFFD0` is defined
/// as such and the rest reserved).
pub fn architected(offset: usize) -> bool {
    offset < 0x1000 || (ID_REGISTERS..gicr::FRAME as usize).contains(&offset)
}

/// The ID registers at the end of every GIC frame.
const ID_REGISTERS: usize = 0xffd0;
