//! A fake of the physical ITS, shared by the unit tests and the fuzz targets (`fuzz/`, feature
//! `testing`).

use alloc::vec;
use alloc::vec::Vec;

use super::its::PhysIts;
use super::regs::gits;

/// A physical ITS that executes its queue synchronously on a GITS_CWRITER write, like QEMU's;
/// `executed` is every command it ran, in order.
#[derive(Debug)]
pub struct FakeIts {
    pub ctlr: u32,
    pub cbaser: u64,
    pub cwriter: u64,
    pub creadr: u64,
    pub slots: Vec<[u64; 4]>,
    pub executed: Vec<[u64; 4]>,
    /// Opcode the fake stalls on (once).
    pub stall_on: Option<u8>,
    /// Never consumes anything.
    pub frozen: bool,
}

impl FakeIts {
    pub fn new(slots: usize) -> Self {
        Self {
            ctlr: 1 << 31,
            cbaser: 0,
            cwriter: 0,
            creadr: 0,
            slots: vec![[0; 4]; slots],
            executed: Vec::new(),
            stall_on: None,
            frozen: false,
        }
    }

    /// Executes from GITS_CREADR to GITS_CWRITER while enabled (stalling once on `stall_on`).
    pub fn run(&mut self) {
        if self.ctlr & 1 == 0 || self.frozen {
            return;
        }
        let n = self.slots.len() as u64;
        while self.creadr & !1 != self.cwriter {
            let slot = (self.creadr / 32) as usize;
            let cmd = self.slots[slot];
            if self.stall_on == Some(cmd[0] as u8) {
                self.stall_on = None;
                self.creadr |= 1;
                return;
            }
            self.executed.push(cmd);
            self.creadr = ((self.creadr & !1) + 32) % (n * 32);
        }
    }
}

impl PhysIts for FakeIts {
    fn read32(&mut self, offset: usize) -> u32 {
        match offset {
            gits::CTLR => self.ctlr,
            4 => 0x43b,
            _ => 0,
        }
    }
    fn write32(&mut self, offset: usize, value: u32) {
        if offset == gits::CTLR {
            self.ctlr = (self.ctlr & !1) | (value & 1);
            self.run();
        }
    }
    fn read64(&mut self, offset: usize) -> u64 {
        match offset {
            gits::CREADR => self.creadr,
            gits::CWRITER => self.cwriter,
            gits::CBASER => self.cbaser,
            _ => 0xfeed,
        }
    }
    fn write64(&mut self, offset: usize, value: u64) {
        match offset {
            gits::CBASER => {
                self.cbaser = value;
                self.creadr = 0;
                self.cwriter = 0;
            }
            gits::CWRITER => {
                self.cwriter = value & !1;
                if value & 1 != 0 {
                    self.creadr &= !1;
                }
                self.run();
            }
            _ => {}
        }
    }
    fn put_command(&mut self, slot: usize, cmd: [u64; 4]) {
        self.slots[slot] = cmd;
    }
}
