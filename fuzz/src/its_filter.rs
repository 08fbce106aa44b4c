//! The emulated ITS and its command filter (`portcullis::gic::its`, `gic::its_cmd`) driven by a
//! hostile host: register writes and reads, commands in its queue (any words, or MAPD / MAPC /
//! MAPTI / SYNC / MOVALL forms aimed at the edges of the DMA window), the fence (crash mode), and a
//! physical ITS that stalls or stops consuming. The physical ITS is the fake of
//! `portcullis::gic::testing`, host memory the fake of `portcullis::emul::testing`.
//!
//! Invariants, checked on every command the *physical* ITS executed (decoded here from the raw
//! words, IHI 0069 5.3, independently of `its_cmd`):
//! 1. no GICv4 or unknown command; every reserved bit zero (the command is re-encoded);
//! 2. DeviceIDs and CollectionIDs inside Portcullis' tables; every target a real redistributor;
//! 3. a valid MAPD's whole ITT (`2^(Size+1)` entries of `ITT_entry_size` bytes, Size within the
//!    implemented EventID bits) inside the current mode's DMA window;
//! 4. in crash mode, MAPTI / MAPI / MOVI / DISCARD only for a device mapped again since the fence.
//!
//! And on the emulation itself:
//! 5. host memory is never written, and read only inside the host's command queue;
//! 6. the physical ITS's registers written are only GITS_CTLR, GITS_CWRITER and GITS_CBASER, the
//!    last only with Portcullis' own queue;
//! 7. the host's GITS_BASER<n> never show Indirect, nor another Type / Entry_Size than the
//!    hardware's; GITS_CREADR stays inside the host's queue;
//! 8. one register write keeps at most 64 KiB of heap live at once.

use std::ops::Range;

use crate::access::Size;
use arbitrary::Arbitrary;
use portcullis::emul::testing::FakeMemory;
use portcullis::emul::{AccessDenied, HostMemory};
use portcullis::gic::DmaWindow;
use portcullis::gic::its::{EmulatedIts, ItsConfig, PhysIts, TableKind, cbaser_value, plan_tables};
use portcullis::gic::its_cmd::{self, opcode};
use portcullis::gic::regs::{COMMAND_BYTES, gits};
use portcullis::gic::testing::FakeIts;
use portcullis::platform::addr::{Ipa, PhysRange};

use crate::alloc_meter::{peak_during, unmetered};

/// QEMU's ITS: Devbits 15, ID_bits 15, ITT entries of 12 bytes, CIL with 16 CIDbits, PTA = 0.
const QEMU_TYPER: u64 = 1 | (11 << 4) | (15 << 8) | (15 << 13) | (15 << 32) | (1 << 36);
const DEVICE_BASER: u64 = (1 << 56) | (7 << 48) | (2 << 8);
const COLLECTION_BASER: u64 = (4 << 56) | (7 << 48) | (2 << 8);

/// Host RAM, with Portcullis' memory (not device-writable) inside it.
const RAM: Range<u64> = 0x4000_0000..0x8000_0000;
const HYP: Range<u64> = 0x4020_0000..0x4080_0000;
/// The crash region: the only device-writable memory in crash mode.
const CRASH: Range<u64> = 0x7000_0000..0x7800_0000;
/// Where the host usually puts its queue and ITTs.
const QUEUE: u64 = 0x5000_0000;
const ITTS: u64 = 0x5100_0000;

const ALLOC_BOUND: usize = 64 << 10;
const MAX_OPS: usize = 64;

#[derive(Arbitrary, Debug)]
pub struct Input {
    setup: Setup,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
struct Setup {
    /// Slots of Portcullis' queue (2..=64).
    slots: u8,
    /// Redistributors (1..=4), named by processor number.
    redistributors: u8,
    /// Physical GITS_TYPER variations: ID_bits and ITT_entry_size.
    id_bits: u8,
    itt_entry: u8,
}

/// An address the host might name.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Addr {
    Queue,
    Itts(u32),
    Crash(u32),
    /// Around an edge of the window: Portcullis' memory, the crash region, the end of RAM.
    Edge {
        which: u8,
        delta: i32,
    },
    Raw(u64),
}

impl Addr {
    fn resolve(self) -> u64 {
        match self {
            Self::Queue => QUEUE,
            Self::Itts(o) => ITTS + u64::from(o % (1 << 24)),
            Self::Crash(o) => CRASH.start + u64::from(o) % (CRASH.end - CRASH.start),
            Self::Edge { which, delta } => {
                let edges = [
                    HYP.start,
                    HYP.end,
                    CRASH.start,
                    CRASH.end,
                    RAM.start,
                    RAM.end,
                ];
                edges[usize::from(which) % edges.len()].wrapping_add_signed(i64::from(delta))
            }
            Self::Raw(a) => a,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Value {
    Raw(u64),
    /// A GITS_CBASER: Valid, the address, Size (pages - 1), cacheability bits.
    Cbaser {
        addr: Addr,
        pages: u8,
        attrs: u16,
        valid: bool,
    },
    /// A GITS_CWRITER: a command offset, maybe Retry.
    Cwriter {
        slot: u16,
        retry: bool,
    },
    Small(u8),
}

impl Value {
    fn resolve(self) -> u64 {
        match self {
            Self::Raw(v) => v,
            Self::Cbaser {
                addr,
                pages,
                attrs,
                valid,
            } => {
                (u64::from(valid) << 63)
                    | (addr.resolve() & 0x000f_ffff_ffff_f000)
                    | u64::from(pages)
                    | (u64::from(attrs & 0x3ff) << 53)
            }
            Self::Cwriter { slot, retry } => (u64::from(slot) * COMMAND_BYTES) | u64::from(retry),
            Self::Small(v) => v.into(),
        }
    }
}

const KNOWN: [usize; 14] = [
    gits::CTLR,
    gits::CTLR + 4,
    gits::TYPER,
    gits::TYPER + 4,
    gits::CBASER,
    gits::CBASER + 4,
    gits::CWRITER,
    gits::CWRITER + 4,
    gits::CREADR,
    gits::BASER,
    gits::BASER + 4,
    gits::BASER + 8,
    gits::BASER + 16,
    gits::BASER + 56,
];

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Register {
    Known(u8),
    Raw(u16),
}

impl Register {
    fn offset(self) -> usize {
        match self {
            Self::Known(i) => KNOWN[usize::from(i) % KNOWN.len()],
            Self::Raw(o) => usize::from(o),
        }
    }
}

/// A command as the host writes it.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Cmd {
    Raw([u64; 4]),
    Mapd {
        device: u32,
        size: u8,
        itt: Addr,
        valid: bool,
    },
    Mapc {
        icid: u16,
        target: u64,
        valid: bool,
    },
    Mapti {
        device: u32,
        event: u32,
        intid: u32,
        icid: u16,
    },
    /// Any opcode with a DeviceID and raw doublewords 1..3.
    Device {
        op: u8,
        device: u32,
        dw: [u64; 3],
    },
    Sync {
        target: u64,
    },
    Movall {
        from: u64,
        to: u64,
    },
}

impl Cmd {
    fn words(self) -> [u64; 4] {
        let dev = |op: u8, device: u32| u64::from(op) | u64::from(device) << 32;
        let rd = |t: u64| (t & ((1 << 36) - 1)) << 16;
        match self {
            Self::Raw(w) => w,
            Self::Mapd {
                device,
                size,
                itt,
                valid,
            } => [
                dev(opcode::MAPD, device),
                u64::from(size & 0x1f),
                (itt.resolve() & 0x000f_ffff_ffff_ff00) | u64::from(valid) << 63,
                0,
            ],
            Self::Mapc {
                icid,
                target,
                valid,
            } => [
                u64::from(opcode::MAPC),
                0,
                u64::from(icid) | rd(target) | u64::from(valid) << 63,
                0,
            ],
            Self::Mapti {
                device,
                event,
                intid,
                icid,
            } => [
                dev(opcode::MAPTI, device),
                u64::from(event) | u64::from(intid) << 32,
                u64::from(icid),
                0,
            ],
            Self::Device { op, device, dw } => [dev(op, device), dw[0], dw[1], dw[2]],
            Self::Sync { target } => [u64::from(opcode::SYNC), 0, rd(target), 0],
            Self::Movall { from, to } => [u64::from(opcode::MOVALL), 0, rd(from), rd(to)],
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Write {
        reg: Register,
        size: Size,
        value: Value,
    },
    Read {
        reg: Register,
        size: Size,
    },
    /// A driver's bring-up: queue at `addr`, enabled.
    Bringup {
        addr: Addr,
        pages: u8,
    },
    /// `count` copies of a command written at the host's GITS_CWRITER, published with one write.
    Issue {
        cmd: Cmd,
        count: u8,
    },
    /// A command written into any slot of the host's queue, unpublished.
    CommandAt {
        slot: u16,
        cmd: Cmd,
    },
    /// The fence: crash mode from now on.
    Crash,
    /// The physical ITS stalls once on this opcode / stops consuming.
    PhysicalStall(u8),
    PhysicalFrozen(bool),
}

/// The physical ITS as the emulation drives it: every register write checked (invariant 6), the
/// fake's own bookkeeping left out of the heap meter.
struct Phys<'a> {
    its: &'a mut FakeIts,
    cbaser: u64,
}

impl PhysIts for Phys<'_> {
    fn read32(&mut self, offset: usize) -> u32 {
        unmetered(|| self.its.read32(offset))
    }

    fn write32(&mut self, offset: usize, value: u32) {
        assert_eq!(
            offset,
            gits::CTLR,
            "physical ITS register {offset:#x} written"
        );
        unmetered(|| self.its.write32(offset, value));
    }

    fn read64(&mut self, offset: usize) -> u64 {
        unmetered(|| self.its.read64(offset))
    }

    fn write64(&mut self, offset: usize, value: u64) {
        match offset {
            gits::CWRITER => {}
            gits::CBASER => assert_eq!(value, self.cbaser, "physical GITS_CBASER not Portcullis'"),
            _ => panic!("physical ITS register {offset:#x} written with {value:#x}"),
        }
        unmetered(|| self.its.write64(offset, value));
    }

    fn put_command(&mut self, slot: usize, cmd: [u64; 4]) {
        unmetered(|| self.its.put_command(slot, cmd));
    }
}

struct Mem<'a>(&'a FakeMemory);

impl HostMemory for Mem<'_> {
    fn read(&self, ipa: Ipa, buf: &mut [u8]) -> Result<(), AccessDenied> {
        unmetered(|| self.0.read(ipa, buf))
    }

    fn write(&mut self, ipa: Ipa, _: &[u8]) -> Result<(), AccessDenied> {
        panic!("the emulated ITS wrote host memory at {ipa}")
    }
}

struct Harness {
    its: EmulatedIts,
    phys: FakeIts,
    mem: FakeMemory,
    cfg: ItsConfig,
    crash: bool,
    /// Devices a valid MAPD mapped (on the physical ITS) since the fence.
    remapped: Vec<u32>,
    /// Commands of `phys.executed` already checked.
    checked: usize,
}

fn range(r: &Range<u64>) -> PhysRange {
    PhysRange::from_bounds(r.start, r.end)
}

impl Harness {
    fn new(setup: &Setup) -> Self {
        let slots = usize::from(setup.slots).clamp(2, 64);
        let typer = (QEMU_TYPER & !(0x1f << 8 | 0xf << 4))
            | u64::from(setup.id_bits % 32) << 8
            | u64::from(setup.itt_entry % 16) << 4;
        let mut basers = [0; gits::BASER_COUNT];
        basers[0] = DEVICE_BASER;
        basers[1] = COLLECTION_BASER;
        basers[2] = (2 << 56) | (31 << 48);
        let plans = plan_tables(typer, &basers);
        let entries = |k| plans.iter().find(|p| p.kind == k).map_or(0, |p| p.entries);
        let cfg = ItsConfig {
            typer,
            basers,
            devices: entries(TableKind::Devices),
            collections: entries(TableKind::Collections),
            targets: (0..u64::from(setup.redistributors % 4 + 1)).collect(),
            queue_slots: slots,
            queue_cbaser: cbaser_value(0x4040_0000, slots as u64 * COMMAND_BYTES),
            max_polls: 8,
        };
        Self {
            its: EmulatedIts::new(cfg.clone()),
            phys: FakeIts::new(slots),
            mem: FakeMemory::new(vec![RAM]),
            cfg,
            crash: false,
            remapped: Vec::new(),
            checked: 0,
        }
    }

    fn window(&self) -> DmaWindow {
        if self.crash {
            DmaWindow::from_ranges(vec![range(&CRASH)])
        } else {
            DmaWindow::from_ranges(vec![
                PhysRange::from_bounds(RAM.start, HYP.start),
                PhysRange::from_bounds(HYP.end, RAM.end),
            ])
        }
    }

    fn write(&mut self, offset: usize, size: u8, value: u64) {
        let window = self.window();
        let mut phys = Phys {
            its: &mut self.phys,
            cbaser: self.cfg.queue_cbaser,
        };
        let (its, mem) = (&mut self.its, Mem(&self.mem));
        let (_, peak) = peak_during(|| its.write(offset, size, value, &mem, &window, &mut phys));
        assert!(
            peak <= ALLOC_BOUND,
            "a write of {value:#x} at {offset:#x} kept {peak} bytes live"
        );
    }

    fn read(&mut self, offset: usize, size: u8) -> u64 {
        let mut phys = Phys {
            its: &mut self.phys,
            cbaser: self.cfg.queue_cbaser,
        };
        self.its.read(offset, size, &mut phys)
    }

    /// The host's queue as the emulated GITS_CBASER says: (base, bytes).
    fn host_queue(&mut self) -> (u64, u64) {
        let c = self.read(gits::CBASER, 8);
        (c & 0x000f_ffff_ffff_f000, ((c & 0xff) + 1) * 4096)
    }

    fn run(&mut self, op: &Op) {
        match *op {
            Op::Write { reg, size, value } => {
                self.write(reg.offset(), size.bytes(), value.resolve())
            }
            Op::Read { reg, size } => {
                self.read(reg.offset(), size.bytes());
            }
            Op::Bringup { addr, pages } => {
                self.write(gits::CTLR, 4, 0);
                let cbaser =
                    (1 << 63) | (addr.resolve() & 0x000f_ffff_ffff_f000) | u64::from(pages);
                self.write(gits::CBASER, 8, cbaser);
                self.write(gits::CWRITER, 8, 0);
                self.write(gits::CTLR, 4, 1);
            }
            Op::Issue { cmd, count } => {
                let (base, bytes) = self.host_queue();
                let mut at = self.read(gits::CWRITER, 8) & 0xf_ffe0;
                let words = cmd.words();
                for _ in 0..u64::from(count).min(bytes / COMMAND_BYTES) {
                    if at >= bytes {
                        at = 0;
                    }
                    self.mem.poke_words(base.wrapping_add(at), &words);
                    at = (at + COMMAND_BYTES) % bytes;
                }
                self.write(gits::CWRITER, 8, at);
            }
            Op::CommandAt { slot, cmd } => {
                let (base, bytes) = self.host_queue();
                let at = base + (u64::from(slot) * COMMAND_BYTES) % bytes;
                self.mem.poke_words(at, &cmd.words());
            }
            Op::Crash => {
                if !self.crash {
                    self.crash = true;
                    self.remapped.clear();
                    self.its.enter_crash();
                }
            }
            Op::PhysicalStall(op) => self.phys.stall_on = Some(op),
            Op::PhysicalFrozen(frozen) => self.phys.frozen = frozen,
        }
        self.check();
    }

    fn check(&mut self) {
        // 1. to 4.
        let executed: Vec<[u64; 4]> = self.phys.executed[self.checked..].to_vec();
        self.checked = self.phys.executed.len();
        for raw in executed {
            self.check_command(raw);
        }
        // 5.
        let (base, bytes) = self.host_queue();
        for a in self.mem.accesses() {
            assert!(!a.write, "host memory written: {a:x?}");
            if a.allowed {
                assert!(
                    base <= a.ipa && a.ipa + a.len as u64 <= base + bytes,
                    "host memory read outside its command queue [{base:#x}, +{bytes:#x}): {a:x?}"
                );
            }
        }
        self.mem.clear_log();
        // 7.
        for n in 0..gits::BASER_COUNT {
            let b = self.read(gits::BASER + 8 * n, 8);
            assert_eq!(b & (1 << 62), 0, "GITS_BASER{n} shows Indirect");
            let ro = (0x1f << 48) | (0x7 << 56);
            let hw = self.cfg.basers[n];
            let hw_type = (hw >> 56) & 7;
            if b != 0 || hw_type == 1 || hw_type == 4 {
                assert_eq!(
                    b & ro,
                    hw & ro,
                    "GITS_BASER{n} Type / Entry_Size not the hardware's"
                );
            }
        }
        let creadr = self.read(gits::CREADR, 8) & 0xf_ffe0;
        if self.read(gits::CBASER, 8) >> 63 != 0 {
            assert!(
                creadr < bytes,
                "GITS_CREADR {creadr:#x} beyond the queue of {bytes:#x}"
            );
        }
    }

    fn check_command(&mut self, raw: [u64; 4]) {
        let op = raw[0] as u8;
        let device = (raw[0] >> 32) as u32;
        let rd = |dw: u64| (dw >> 16) & ((1 << 36) - 1);
        let cmd = match its_cmd::decode(raw) {
            Ok(cmd) => cmd,
            Err(e) => panic!("the physical ITS executed {raw:x?}, which does not decode: {e}"),
        };
        assert_eq!(cmd.encode(), raw, "a reserved bit reached the physical ITS");
        let typer = self.cfg.typer;
        let itt_entry = ((typer >> 4) & 0xf) + 1;
        let id_bits = ((typer >> 8) & 0x1f) as u32 + 1;
        let has_device = matches!(
            op,
            opcode::MOVI
                | opcode::INT
                | opcode::CLEAR
                | opcode::MAPD
                | opcode::MAPTI
                | opcode::MAPI
                | opcode::INV
                | opcode::DISCARD
        );
        if has_device {
            assert!(
                device < self.cfg.devices,
                "DeviceID {device:#x} beyond the table: {raw:x?}"
            );
        }
        if matches!(
            op,
            opcode::MOVI | opcode::MAPC | opcode::MAPTI | opcode::MAPI | opcode::INVALL
        ) {
            let icid = (raw[2] & 0xffff) as u32;
            assert!(
                icid < self.cfg.collections,
                "CollectionID {icid:#x} beyond the table"
            );
        }
        let targets: &[u64] = match op {
            opcode::SYNC | opcode::MAPC => &[rd(raw[2])],
            opcode::MOVALL => &[rd(raw[2]), rd(raw[3])],
            _ => &[],
        };
        for t in targets {
            assert!(
                self.cfg.targets.contains(t),
                "target {t:#x} is no redistributor: {raw:x?}"
            );
        }
        match op {
            opcode::MAPD if raw[2] >> 63 != 0 => {
                let bits = (raw[1] & 0x1f) as u32 + 1;
                assert!(bits <= id_bits, "MAPD Size {bits} bits > {id_bits}");
                let itt = raw[2] & 0x000f_ffff_ffff_ff00;
                let len = (1u64 << bits) * itt_entry;
                let end = itt.checked_add(len).expect("ITT wraps");
                let window = self.window();
                assert!(
                    window
                        .ranges()
                        .iter()
                        .any(|w| w.start.raw() <= itt && end <= w.end.raw()),
                    "ITT [{itt:#x}, {end:#x}) outside the window {:x?} (crash mode: {})",
                    window.ranges(),
                    self.crash
                );
                if self.crash {
                    self.remapped.push(device);
                }
            }
            opcode::MAPTI | opcode::MAPI | opcode::MOVI | opcode::DISCARD if self.crash => {
                assert!(
                    self.remapped.contains(&device),
                    "crash mode: {raw:x?} writes the ITT of device {device:#x}, not mapped since the fence"
                );
            }
            _ => {}
        }
    }
}

pub fn run(input: &Input) {
    let mut h = Harness::new(&input.setup);
    for op in input.ops.iter().take(MAX_OPS) {
        h.run(op);
    }
}
