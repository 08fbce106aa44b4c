//! The transmit side of an 8250/16550-family UART (the 16550 data sheet's register set, which the
//! DesignWare APB UART and most SoC UARTs implement), over any register access: the arch layer
//! gives it Device-memory MMIO, the host tests a fake.
//!
//! Only the transmitter is driven, polled, with the line as firmware configured it (like the PL011
//! console): the host owns the same UART and Portcullis never reprograms it. Register `n` is at
//! byte offset `n << reg_shift`, accessed 8 or 32 bits wide (`platform::console::RegWidth`).

use platform::console::RegWidth;
use tock_registers::LocalRegisterCopy;
use tock_registers::register_bitfields;

use super::TxPort;

/// Register indices (before `reg_shift`).
mod reg {
    /// Transmit Holding Register (write; DLAB = 0).
    pub const THR: u64 = 0;
    /// Line Status Register (read).
    pub const LSR: u64 = platform::console::NS16550_LSR;
}

register_bitfields! [u8,
    /// Line Status Register.
    pub LSR [
        /// Transmitter empty: THR and the shift register are both empty.
        TEMT OFFSET(6) NUMBITS(1) [],
        /// Transmit Holding Register empty (with FIFOs: the TX FIFO is empty).
        THRE OFFSET(5) NUMBITS(1) [],
        /// Data ready.
        DR OFFSET(0) NUMBITS(1) []
    ]
];

/// Register-sized loads and stores at byte offsets into the UART's frame.
pub trait UartMmio {
    fn read8(&self, offset: u64) -> u8;
    fn write8(&mut self, offset: u64, value: u8);
    fn read32(&self, offset: u64) -> u32;
    fn write32(&mut self, offset: u64, value: u32);
}

/// An 8250/16550 transmitter.
#[derive(Debug)]
pub struct Ns16550<M> {
    mmio: M,
    reg_shift: u8,
    width: RegWidth,
}

impl<M: UartMmio> Ns16550<M> {
    pub fn new(mmio: M, reg_shift: u8, width: RegWidth) -> Self {
        Self {
            mmio,
            reg_shift,
            width,
        }
    }

    fn read(&self, index: u64) -> u8 {
        let offset = index << self.reg_shift;
        match self.width {
            RegWidth::Byte => self.mmio.read8(offset),
            // The register is the low byte of the word.
            RegWidth::Word => self.mmio.read32(offset) as u8,
        }
    }

    fn write(&mut self, index: u64, value: u8) {
        let offset = index << self.reg_shift;
        match self.width {
            RegWidth::Byte => self.mmio.write8(offset, value),
            RegWidth::Word => self.mmio.write32(offset, u32::from(value)),
        }
    }

    fn lsr(&self) -> LocalRegisterCopy<u8, LSR::Register> {
        LocalRegisterCopy::new(self.read(reg::LSR))
    }
}

impl<M: UartMmio> TxPort for Ns16550<M> {
    /// The holding register (or, with FIFOs enabled, the whole TX FIFO) is not yet empty. The
    /// 16550 reports no "FIFO full", so a character waits for an empty FIFO: slower than a PL011
    /// at worst, never an overrun.
    fn tx_full(&self) -> bool {
        !self.lsr().is_set(LSR::THRE)
    }

    fn put(&mut self, byte: u8) {
        self.write(reg::THR, byte);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use core::cell::RefCell;

    /// A fake 16550 frame: records every access; LSR reads as `lsr`.
    #[derive(Default)]
    struct Fake {
        lsr: u8,
        lsr_offset: u64,
        accesses: RefCell<Vec<(char, u64, u8, u32)>>,
    }

    impl UartMmio for &Fake {
        fn read8(&self, offset: u64) -> u8 {
            self.accesses.borrow_mut().push(('r', offset, 1, 0));
            if offset == self.lsr_offset {
                self.lsr
            } else {
                0
            }
        }
        fn write8(&mut self, offset: u64, value: u8) {
            self.accesses
                .borrow_mut()
                .push(('w', offset, 1, u32::from(value)));
        }
        fn read32(&self, offset: u64) -> u32 {
            self.accesses.borrow_mut().push(('r', offset, 4, 0));
            if offset == self.lsr_offset {
                // Upper bytes of a 32-bit register are not part of the 8250 register.
                0xffff_ff00 | u32::from(self.lsr)
            } else {
                0
            }
        }
        fn write32(&mut self, offset: u64, value: u32) {
            self.accesses.borrow_mut().push(('w', offset, 4, value));
        }
    }

    #[test]
    fn byte_registers_adjacent() {
        let fake = Fake {
            lsr: 0x60,
            lsr_offset: 5,
            ..Default::default()
        };
        let mut uart = Ns16550::new(&fake, 0, RegWidth::Byte);
        assert!(!uart.tx_full());
        uart.put(b'A');
        assert_eq!(
            *fake.accesses.borrow(),
            [('r', 5, 1, 0), ('w', 0, 1, u32::from(b'A'))]
        );
    }

    #[test]
    fn dw_apb_words_four_apart() {
        let fake = Fake {
            lsr: LSR::THRE::SET.value,
            lsr_offset: 20,
            ..Default::default()
        };
        let mut uart = Ns16550::new(&fake, 2, RegWidth::Word);
        assert!(!uart.tx_full());
        uart.put(b'\n');
        assert_eq!(
            *fake.accesses.borrow(),
            [('r', 20, 4, 0), ('w', 0, 4, 0x0a)]
        );
    }

    #[test]
    fn full_until_the_holding_register_empties() {
        // DR and TEMT set, THRE clear: still sending. The upper bytes of the word do not count.
        let fake = Fake {
            lsr: 0x41,
            lsr_offset: 20,
            ..Default::default()
        };
        let uart = Ns16550::new(&fake, 2, RegWidth::Word);
        assert!(uart.tx_full());
    }

    /// Through the bounded console writer: a transmitter that never empties costs one budget,
    /// then characters are dropped without waiting.
    #[test]
    fn a_stuck_transmitter_is_bounded() {
        use crate::diag::BoundedTx;
        use crate::diag::console_tx::Budget;
        let fake = Fake {
            lsr: 0,
            lsr_offset: 5,
            ..Default::default()
        };
        let mut uart = Ns16550::new(&fake, 0, RegWidth::Byte);
        let mut tx = BoundedTx::new();
        let mut t = 0u64;
        let mut clock = || {
            t += 1;
            t
        };
        let budget = Budget {
            ticks: 100,
            polls: 1000,
        };
        assert!(!tx.put(&mut uart, b'x', &mut clock, budget));
        let reads = fake.accesses.borrow().len();
        assert!(!tx.put(&mut uart, b'y', &mut clock, budget));
        assert_eq!(fake.accesses.borrow().len(), reads + 1, "one look, no wait");
        assert!(fake.accesses.borrow().iter().all(|a| a.0 == 'r'));
        assert!(tx.is_stalled());
        assert_eq!(tx.take_dropped(), 0, "reported once output works again");
    }
}
