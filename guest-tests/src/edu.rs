//! A driver for QEMU's `edu` device: a PCI function with a 4 KiB buffer and a DMA engine that copies
//! between that buffer and any bus address. It is the guest tests' stand-in for a DMA-capable device.
//!
//! Register interface (QEMU `docs/specs/edu.rst`), in BAR0:
//!
//! | offset | register |
//! |---|---|
//! | 0x00 | identification `0xMMmm00ed` (major, minor version) |
//! | 0x04 | liveness check: reads the inverse of what was written |
//! | 0x80 | DMA source address (64-bit) |
//! | 0x88 | DMA destination address (64-bit) |
//! | 0x90 | DMA count (64-bit) |
//! | 0x98 | DMA command: bit 0 start/busy, bit 1 direction (1 = buffer to RAM), bit 2 raise IRQ |
//!
//! The buffer sits at device address [`BUFFER_ADDR`]. A transfer completes 100 ms (virtual time)
//! after it is started, all at once; the engine ignores register writes while one is in flight.
//!
//! Two properties of QEMU's model matter to the tests:
//! - it never reports a failed DMA: a transfer the SMMU refuses still completes (bit 0 clears).
//!   A refused write lands nowhere; a refused read fills the buffer range with what QEMU's
//!   unassigned-memory handler returns (zeros, in QEMU 10). Proving confinement therefore means
//!   checking the target memory and the buffer, plus the SMMU's fault records.
//! - it does not check the buffer range itself (it only logs): an out-of-range transfer would
//!   overrun QEMU's own buffer. The driver refuses such a transfer before touching the device.

use crate::mmio::{mmio_read32, mmio_write32, read64, write64};
use crate::pci::Function;
use crate::rt::{tick_hz, ticks, ticks_to_ms};
use aarch64_cpu::asm::barrier;
use core::cell::Cell;
use core::fmt;

pub const VENDOR_ID: u16 = 0x1234;
pub const DEVICE_ID: u16 = 0x11e8;

/// The device address of the edu's buffer.
pub const BUFFER_ADDR: u64 = 0x40000;
/// The buffer's size.
pub const BUFFER_SIZE: usize = 4096;

/// How long a transfer may take before the driver gives up: a DMA takes 100 ms of virtual time.
pub const DMA_TIMEOUT_MS: u64 = 5_000;

const REG_ID: u64 = 0x00;
const REG_LIVENESS: u64 = 0x04;
const REG_DMA_SRC: u64 = 0x80;
const REG_DMA_DST: u64 = 0x88;
const REG_DMA_COUNT: u64 = 0x90;
const REG_DMA_CMD: u64 = 0x98;

const ID_MAGIC: u32 = 0xed;
const CMD_START: u64 = 1 << 0;
const CMD_TO_RAM: u64 = 1 << 1;

/// Which way a transfer goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// RAM to the device's buffer (the device reads memory).
    ToDevice,
    /// The device's buffer to RAM (the device writes memory).
    FromDevice,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Self::ToDevice => "RAM->device",
            Self::FromDevice => "device->RAM",
        })
    }
}

/// Why an edu operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EduError {
    /// The function is not an edu (vendor:device).
    NotEdu { vendor: u16, device: u16 },
    /// BAR0 was not assigned.
    NoBar0,
    /// The identification register lacks the 0xed magic.
    BadIdentification(u32),
    /// The liveness register did not return the inverse of what was written.
    NotAlive { wrote: u32, read: u32 },
    /// The transfer would leave the 4 KiB buffer.
    OutOfBuffer { offset: usize, len: usize },
    /// A transfer was started while another is in flight.
    Busy { cmd: u64 },
    /// The engine did not finish within [`DMA_TIMEOUT_MS`].
    Timeout {
        direction: Direction,
        ram: u64,
        len: usize,
        waited_ms: u64,
        cmd: u64,
    },
    /// The counter does not tick (CNTFRQ_EL0 = 0), so no timeout could be measured.
    NoCounter,
}

impl fmt::Display for EduError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::NotEdu { vendor, device } => write!(f, "{vendor:04x}:{device:04x} is not an edu"),
            Self::NoBar0 => write!(f, "edu BAR0 is not assigned"),
            Self::BadIdentification(v) => {
                write!(f, "edu identification reads {v:#x}, no 0xed magic")
            }
            Self::NotAlive { wrote, read } => {
                write!(
                    f,
                    "edu liveness: wrote {wrote:#x}, read {read:#x} (want {:#x})",
                    !wrote
                )
            }
            Self::OutOfBuffer { offset, len } => {
                write!(
                    f,
                    "edu transfer of {len:#x} bytes at buffer offset {offset:#x} leaves the 4 KiB buffer"
                )
            }
            Self::Busy { cmd } => write!(f, "edu DMA engine busy (cmd {cmd:#x})"),
            Self::Timeout {
                direction,
                ram,
                len,
                waited_ms,
                cmd,
            } => write!(
                f,
                "edu DMA {direction} of {len:#x} bytes at {ram:#x} still busy after {waited_ms} ms (cmd {cmd:#x})"
            ),
            Self::NoCounter => write!(f, "CNTFRQ_EL0 is 0: cannot bound the DMA wait"),
        }
    }
}

/// One edu device, enabled and checked alive.
#[derive(Debug)]
pub struct Edu {
    regs: u64,
    pub function: Function,
    /// The transfer in flight, for the timeout message.
    pending: Cell<Option<(Direction, u64, usize)>>,
}

impl Edu {
    /// Enables the function (memory decoding, bus mastering) and checks it answers like an edu.
    pub fn new(function: &Function) -> Result<Edu, EduError> {
        if (function.vendor, function.device) != (VENDOR_ID, DEVICE_ID) {
            return Err(EduError::NotEdu {
                vendor: function.vendor,
                device: function.device,
            });
        }
        let bar = function.bar(0).ok_or(EduError::NoBar0)?;
        function.enable();
        let edu = Edu {
            regs: bar.cpu_addr,
            function: *function,
            pending: Cell::new(None),
        };
        let id = edu.read32(REG_ID);
        if id & 0xff != ID_MAGIC {
            return Err(EduError::BadIdentification(id));
        }
        for wrote in [0x1234_5678u32, 0xa5a5_0ff0] {
            edu.write32(REG_LIVENESS, wrote);
            let read = edu.read32(REG_LIVENESS);
            if read != !wrote {
                return Err(EduError::NotAlive { wrote, read });
            }
        }
        Ok(edu)
    }

    /// The identification register: `0xMMmm00ed`.
    pub fn identification(&self) -> u32 {
        self.read32(REG_ID)
    }

    /// Copies `len` bytes from RAM (bus address `ram_addr`) to the start of the device's buffer.
    pub fn to_device(&self, ram_addr: u64, len: usize) -> Result<(), EduError> {
        self.to_device_at(ram_addr, 0, len)
    }

    /// Copies `len` bytes from the start of the device's buffer to RAM at `ram_addr`.
    pub fn from_device(&self, ram_addr: u64, len: usize) -> Result<(), EduError> {
        self.from_device_at(ram_addr, 0, len)
    }

    /// Copies `len` bytes from RAM at `ram_addr` to the device's buffer at `offset`.
    pub fn to_device_at(&self, ram_addr: u64, offset: usize, len: usize) -> Result<(), EduError> {
        self.start(Direction::ToDevice, ram_addr, offset, len)?;
        self.wait()
    }

    /// Copies `len` bytes from the device's buffer at `offset` to RAM at `ram_addr`.
    pub fn from_device_at(&self, ram_addr: u64, offset: usize, len: usize) -> Result<(), EduError> {
        self.start(Direction::FromDevice, ram_addr, offset, len)?;
        self.wait()
    }

    /// Starts a transfer without waiting for it (see [`Edu::wait`]).
    pub fn start(
        &self,
        direction: Direction,
        ram_addr: u64,
        offset: usize,
        len: usize,
    ) -> Result<(), EduError> {
        if len == 0 || offset >= BUFFER_SIZE || len > BUFFER_SIZE - offset {
            return Err(EduError::OutOfBuffer { offset, len });
        }
        let cmd = self.read64(REG_DMA_CMD);
        if cmd & CMD_START != 0 {
            return Err(EduError::Busy { cmd });
        }
        let buffer = BUFFER_ADDR + offset as u64;
        let (src, dst, cmd) = match direction {
            Direction::ToDevice => (ram_addr, buffer, CMD_START),
            Direction::FromDevice => (buffer, ram_addr, CMD_START | CMD_TO_RAM),
        };
        self.write64(REG_DMA_SRC, src);
        self.write64(REG_DMA_DST, dst);
        self.write64(REG_DMA_COUNT, len as u64);
        // The CPU's stores to the source buffer complete before the device may read it.
        barrier::dsb(barrier::SY);
        self.write64(REG_DMA_CMD, cmd);
        self.pending.set(Some((direction, ram_addr, len)));
        Ok(())
    }

    /// Waits, bounded by [`DMA_TIMEOUT_MS`], until the transfer in flight has finished.
    pub fn wait(&self) -> Result<(), EduError> {
        let (direction, ram, len) = self.pending.take().unwrap_or((Direction::ToDevice, 0, 0));
        let hz = tick_hz();
        if hz == 0 {
            return Err(EduError::NoCounter);
        }
        let start = ticks();
        let limit = DMA_TIMEOUT_MS * hz / 1000;
        loop {
            let cmd = self.read64(REG_DMA_CMD);
            if cmd & CMD_START == 0 {
                // What the device wrote is visible to the CPU's loads that follow.
                barrier::dsb(barrier::SY);
                return Ok(());
            }
            let waited = ticks().wrapping_sub(start);
            if waited > limit {
                return Err(EduError::Timeout {
                    direction,
                    ram,
                    len,
                    waited_ms: ticks_to_ms(waited),
                    cmd,
                });
            }
            core::hint::spin_loop();
        }
    }

    /// Adopts an edu another kernel enabled (a capture kernel taking over the dead kernel's
    /// device): nothing is written, the identification register is checked.
    pub fn adopt(function: &Function) -> Result<Edu, EduError> {
        if (function.vendor, function.device) != (VENDOR_ID, DEVICE_ID) {
            return Err(EduError::NotEdu {
                vendor: function.vendor,
                device: function.device,
            });
        }
        let bar = function.bar(0).ok_or(EduError::NoBar0)?;
        let edu = Edu {
            regs: bar.cpu_addr,
            function: *function,
            pending: Cell::new(None),
        };
        let id = edu.read32(REG_ID);
        if id & 0xff != ID_MAGIC {
            return Err(EduError::BadIdentification(id));
        }
        Ok(edu)
    }

    /// Whether a transfer is in flight (the command register's start/busy bit).
    pub fn busy(&self) -> bool {
        self.read64(REG_DMA_CMD) & CMD_START != 0
    }

    /// The DMA registers as they stand: (source, destination, count, command).
    pub fn dma_registers(&self) -> (u64, u64, u64, u64) {
        (
            self.read64(REG_DMA_SRC),
            self.read64(REG_DMA_DST),
            self.read64(REG_DMA_COUNT),
            self.read64(REG_DMA_CMD),
        )
    }

    /// The CPU address of BAR0, the register block.
    pub fn registers(&self) -> u64 {
        self.regs
    }

    fn read32(&self, off: u64) -> u32 {
        // SAFETY: `regs` is the edu's BAR0 as `pci::scan` placed it (1 MiB of registers), decoding
        // is enabled and `off` is one of its registers.
        unsafe { mmio_read32(self.regs + off) }
    }
    fn write32(&self, off: u64, v: u32) {
        // SAFETY: as in `read32`.
        unsafe { mmio_write32(self.regs + off, v) }
    }
    fn read64(&self, off: u64) -> u64 {
        // SAFETY: as in `read32`; the DMA registers take 64-bit accesses.
        unsafe { read64(self.regs + off) }
    }
    fn write64(&self, off: u64, v: u64) {
        // SAFETY: as in `read64`.
        unsafe { write64(self.regs + off, v) }
    }
}
