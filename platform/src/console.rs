//! Which console driver the UART named by `/chosen/stdout-path` gets, and how its registers are
//! reached.
//!
//! Two families are driven: the Arm PL011 (`arm,pl011`, and the SBSA generic UART, its subset) and
//! the 8250/16550 family (`ns16550a`, `ns16550`, `ns8250`, and the Synopsys DesignWare APB UART
//! `snps,dw-apb-uart`), whose registers are `reg-shift` apart and must be accessed `reg-io-width`
//! bytes wide (Linux's `Documentation/devicetree/bindings/serial/8250.yaml`). Anything else gets
//! no console: writing a PL011's data register offset into an unknown device could do anything.

use alloc::string::String;

use crate::addr::{Pa, PhysRange};
use crate::devtree::Uart;

/// How wide each 8250 register access is (`reg-io-width`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegWidth {
    /// 8-bit accesses (`reg-io-width = <1>`, the default).
    Byte,
    /// 32-bit accesses (`reg-io-width = <4>`), e.g. the DesignWare APB UART.
    Word,
}

impl RegWidth {
    pub const fn bytes(self) -> u64 {
        match self {
            Self::Byte => 1,
            Self::Word => 4,
        }
    }
}

/// The console device and how to drive it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleDevice {
    /// A PL011 (or SBSA UART) register frame.
    Pl011 { base: Pa },
    /// An 8250/16550-family UART: register `n` is at `base + (n << reg_shift)`.
    Ns16550 {
        base: Pa,
        reg_shift: u8,
        width: RegWidth,
    },
}

/// Why there is no console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoConsole {
    /// `/chosen/stdout-path` is absent or names no node.
    NoStdout,
    /// The node is not a UART Portcullis drives; its `compatible` strings.
    UnknownUart { compatible: String },
    /// `reg-shift` larger than any 8250 binding uses.
    BadRegShift(u32),
    /// `reg-io-width` other than 1 or 4.
    BadRegIoWidth(u32),
    /// The 8250 registers up to LSR do not fit in the node's `reg`.
    FrameTooSmall { size: u64, needed: u64 },
}

/// Compatible strings driven as a PL011.
const PL011: &[&str] = &["arm,pl011", "arm,sbsa-uart"];
/// Compatible strings driven as an 8250/16550.
const NS16550: &[&str] = &["ns16550a", "ns16550", "ns8250", "snps,dw-apb-uart"];

/// The line status register's index: the last register the 8250 driver touches.
pub const NS16550_LSR: u64 = 5;
/// The largest `reg-shift` accepted (registers 4 KiB apart would be no 8250 anyone built).
const MAX_REG_SHIFT: u32 = 12;

/// The decision, from the node's `compatible` list, its first `reg`, and its `reg-shift` /
/// `reg-io-width` properties (absent: 0 and 1).
pub fn select(
    compatible: &[&str],
    frame: PhysRange,
    reg_shift: Option<u32>,
    reg_io_width: Option<u32>,
) -> Result<ConsoleDevice, NoConsole> {
    let any = |set: &[&str]| compatible.iter().any(|c| set.contains(c));
    if any(PL011) {
        return Ok(ConsoleDevice::Pl011 {
            base: Pa(frame.start.raw()),
        });
    }
    if !any(NS16550) {
        return Err(NoConsole::UnknownUart {
            compatible: compatible.join(","),
        });
    }
    let shift = reg_shift.unwrap_or(0);
    if shift > MAX_REG_SHIFT {
        return Err(NoConsole::BadRegShift(shift));
    }
    let width = match reg_io_width.unwrap_or(1) {
        1 => RegWidth::Byte,
        4 => RegWidth::Word,
        other => return Err(NoConsole::BadRegIoWidth(other)),
    };
    let needed = (NS16550_LSR << shift) + width.bytes();
    if frame.size() < needed {
        return Err(NoConsole::FrameTooSmall {
            size: frame.size(),
            needed,
        });
    }
    Ok(ConsoleDevice::Ns16550 {
        base: Pa(frame.start.raw()),
        reg_shift: shift as u8,
        width,
    })
}

/// The console for the UART the tree's `stdout-path` named (`uart`, from
/// [`crate::devtree::Platform`], which read its `reg-shift` and `reg-io-width`).
pub fn from_uart(uart: Option<&Uart>) -> Result<ConsoleDevice, NoConsole> {
    let uart = uart.ok_or(NoConsole::NoStdout)?;
    let compatible: alloc::vec::Vec<&str> = uart.compatible.iter().map(String::as_str).collect();
    select(&compatible, uart.base, uart.reg_shift, uart.reg_io_width)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::devtree::Platform;
    use alloc::vec::Vec;
    use dtoolkit::fdt::Fdt;
    use dtoolkit::model::{DeviceTree, DeviceTreeProperty};

    const QEMU: &[u8] = include_bytes!("../tests/fixtures/qemu-virt-smmuv3.dtb");

    fn frame(start: u64, size: u64) -> PhysRange {
        PhysRange::new(start, size).unwrap()
    }

    #[test]
    fn pl011_and_sbsa() {
        let f = frame(0x900_0000, 0x1000);
        let want = Ok(ConsoleDevice::Pl011 {
            base: Pa(0x900_0000),
        });
        assert_eq!(select(&["arm,pl011", "arm,primecell"], f, None, None), want);
        assert_eq!(select(&["arm,sbsa-uart"], f, None, None), want);
    }

    #[test]
    fn the_8250_family() {
        let f = frame(0xfe66_0000, 0x100);
        assert_eq!(
            select(&["ns16550a"], f, None, None),
            Ok(ConsoleDevice::Ns16550 {
                base: Pa(0xfe66_0000),
                reg_shift: 0,
                width: RegWidth::Byte
            })
        );
        // A Rockchip-style DesignWare UART: 32-bit registers 4 bytes apart.
        assert_eq!(
            select(
                &["rockchip,rk3568-uart", "snps,dw-apb-uart"],
                f,
                Some(2),
                Some(4)
            ),
            Ok(ConsoleDevice::Ns16550 {
                base: Pa(0xfe66_0000),
                reg_shift: 2,
                width: RegWidth::Word
            })
        );
        assert_eq!(
            select(&["ns16550"], f, Some(2), Some(2)),
            Err(NoConsole::BadRegIoWidth(2))
        );
        assert_eq!(
            select(&["ns16550"], f, Some(40), None),
            Err(NoConsole::BadRegShift(40))
        );
        // LSR at 5 << 2 = 20, four bytes wide: 24 bytes needed.
        assert_eq!(
            select(&["snps,dw-apb-uart"], frame(0x1000, 0x14), Some(2), Some(4)),
            Err(NoConsole::FrameTooSmall {
                size: 0x14,
                needed: 24
            })
        );
        assert!(select(&["snps,dw-apb-uart"], frame(0x1000, 0x18), Some(2), Some(4)).is_ok());
    }

    #[test]
    fn an_unknown_uart_gets_no_console() {
        assert_eq!(
            select(
                &["fsl,imx8mq-uart", "fsl,imx6q-uart"],
                frame(0x3086_0000, 0x1_0000),
                None,
                None
            ),
            Err(NoConsole::UnknownUart {
                compatible: "fsl,imx8mq-uart,fsl,imx6q-uart".into()
            })
        );
        assert!(select(&[], frame(0, 0x1000), None, None).is_err());
    }

    fn console_of(dtb: &[u8]) -> Result<ConsoleDevice, NoConsole> {
        let p = Platform::parse(dtb).unwrap();
        from_uart(p.uart.as_ref())
    }

    #[test]
    fn from_qemu_virt() {
        assert_eq!(
            console_of(QEMU),
            Ok(ConsoleDevice::Pl011 {
                base: Pa(0x900_0000)
            })
        );
    }

    /// QEMU's tree with its UART node made a DesignWare 8250 (`reg-shift`, `reg-io-width`), and
    /// then something unknown.
    #[test]
    fn from_edited_trees() {
        let fdt = Fdt::new(QEMU).unwrap();
        let path = Platform::parse(QEMU).unwrap().uart.unwrap().path;
        let edit = |props: &[(&str, Vec<u8>)]| {
            let mut tree = DeviceTree::from_fdt(&fdt);
            let node = tree.find_node_mut(&path).unwrap();
            for (name, value) in props {
                node.add_property(DeviceTreeProperty::new(*name, value.clone()).unwrap());
            }
            tree.to_dtb()
        };
        let dw = edit(&[
            ("compatible", b"snps,dw-apb-uart\0".to_vec()),
            ("reg-shift", 2u32.to_be_bytes().to_vec()),
            ("reg-io-width", 4u32.to_be_bytes().to_vec()),
        ]);
        assert_eq!(
            console_of(&dw),
            Ok(ConsoleDevice::Ns16550 {
                base: Pa(0x900_0000),
                reg_shift: 2,
                width: RegWidth::Word
            })
        );
        let unknown = edit(&[("compatible", b"vendor,mystery-uart\0".to_vec())]);
        assert!(matches!(
            console_of(&unknown),
            Err(NoConsole::UnknownUart { .. })
        ));
        let none = edit(&[]);
        assert!(console_of(&none).is_ok());
        assert_eq!(from_uart(None), Err(NoConsole::NoStdout));
    }
}
