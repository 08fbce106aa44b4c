//! The emulated SMMUv3 (`portcullis::emul`) driven by a hostile host: register writes and reads,
//! host memory (Command queue entries, STEs, level 1 descriptors, anything), records from the
//! physical Event queue, Portcullis switching its DMA policy (the fence), and failures of the
//! physical SMMU. Host memory and the physical SMMU are the fakes of `portcullis::emul::testing`.
//!
//! Invariants checked after every step (a violation panics, which libFuzzer reports):
//! 1. The physical SMMU is never handed an STE whose stage 2 is not the live DMA policy's, nor a
//!    command the host may not cause (the fake's `violations`).
//! 2. After Portcullis switches its policy, and as long as no physical STE write failed since,
//!    every non-abort physical STE carries the *new* policy's stage 2.
//! 3. The stream state the fence relies on is right: a stream whose last physical STE lets DMA
//!    through is reported live (`is_live`), and a stream reported not live has an abort STE.
//! 4. Host memory is only ever *written* inside the host's Event queue (at `EVENTQ_BASE`, within
//!    its size), and only inside the host's policy (the fake refuses everything else).
//! 5. One host action (a register write) keeps at most `ALLOC_BASE + ALLOC_PER_STREAM × streams`
//!    bytes of heap live at once, whatever the host queued: Portcullis' heap is small and fixed.
//!    The fake physical SMMU also counts the bytes of each request: at most a chunk (1024 entries)
//!    or one entry per stream.
//! 6. Register reads have no side effect, return no bits beyond the access size, and every
//!    acknowledgement register equals its register.
//! 7. A stage 2 fault from the physical Event queue (Portcullis' firewall) never reaches the host.

use std::collections::BTreeMap;
use std::ops::Range;

use crate::access::Size;
use arbitrary::Arbitrary;
use portcullis::emul::testing::{
    CD_TABLE, CMDQ, EVTQ, FakeMemory, FakePhys, HOST_RAM, HYP_MEM, L2_GROUP0, PhysOp, STRTAB,
    crash_policy, policy, qemu_like,
};
use portcullis::emul::{
    AccessDenied, EmulConfig, EmulatedSmmu, EventRoute, HostMemory, PhysicalSmmu,
};
use portcullis::smmu::cmd::Command;
use portcullis::smmu::event::Event;
use portcullis::smmu::queue::{QueueIndex, clamp_log2_size};
use portcullis::smmu::regs::{SmmuFeatures, offset as o};
use portcullis::smmu::ste::{AttrOverrides, Stage2Config, Ste, StreamConfig};
use portcullis::smmu::{Ipa, StreamId};

use crate::alloc_meter::{peak_during, unmetered};

/// Host memory as Portcullis reaches it, the fake's own bookkeeping left out of the heap meter.
struct Mem<'a>(&'a mut FakeMemory);

impl HostMemory for Mem<'_> {
    fn read(&self, ipa: Ipa, buf: &mut [u8]) -> Result<(), AccessDenied> {
        unmetered(|| self.0.read(ipa, buf))
    }

    fn write(&mut self, ipa: Ipa, bytes: &[u8]) -> Result<(), AccessDenied> {
        unmetered(|| self.0.write(ipa, bytes))
    }
}

/// The physical SMMU, likewise.
struct Phys<'a>(&'a mut FakePhys);

impl PhysicalSmmu for Phys<'_> {
    type Error = &'static str;

    fn stage2(&self) -> Stage2Config {
        self.0.stage2()
    }

    fn write_ste(&mut self, sid: StreamId, ste: &Ste) -> Result<(), Self::Error> {
        unmetered(|| self.0.write_ste(sid, ste))
    }

    fn write_stes(&mut self, stes: &[(StreamId, Ste)]) -> Result<(), Self::Error> {
        unmetered(|| self.0.write_stes(stes))
    }

    fn submit(&mut self, cmds: &[Command]) -> Result<(), Self::Error> {
        unmetered(|| self.0.submit(cmds))
    }

    fn sync(&mut self) -> Result<(), Self::Error> {
        unmetered(|| self.0.sync())
    }
}

/// Heap one host action may keep live at once, beyond the per-stream share.
pub const ALLOC_BASE: usize = 128 << 10;
/// Heap per physical stream one host action may keep live at once.
pub const ALLOC_PER_STREAM: usize = 1 << 10;

/// What the host may reach in crash mode in this harness (the crash region).
const CRASH_REGION: Range<u64> = 0x4400_0000..0x4800_0000;

/// At most this many physical streams (each recomposition costs per stream).
const MAX_STREAMS: usize = 24;
/// At most this many steps per input.
const MAX_OPS: usize = 64;

#[derive(Arbitrary, Debug)]
pub struct Input {
    setup: Setup,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
struct Setup {
    /// The physical SMMU's SIDSIZE (clamped to 1..=24).
    sid_bits: u8,
    /// Whether the physical SMMU has two-level Stream tables.
    two_level: bool,
    /// Physical StreamIDs (masked to `sid_bits`).
    streams: Vec<u32>,
    /// The host's IPA size (32..=52).
    ipa_bits: u8,
    /// Largest queues the host may configure (clamped to 0..=10).
    cmdq_log2: u8,
    evtq_log2: u8,
    gbpa_abort: bool,
}

/// An address the host might program or write to.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Addr {
    Strtab,
    L2,
    Cmdq,
    Evtq,
    CdTable,
    /// Somewhere in host RAM.
    Ram(u32),
    /// Around the end of host RAM, where Portcullis' memory starts.
    HypEdge(i16),
    Raw(u64),
}

impl Addr {
    fn resolve(self) -> u64 {
        match self {
            Self::Strtab => STRTAB,
            Self::L2 => L2_GROUP0,
            Self::Cmdq => CMDQ,
            Self::Evtq => EVTQ,
            Self::CdTable => CD_TABLE,
            Self::Ram(x) => HOST_RAM.start + u64::from(x) % (HOST_RAM.end - HOST_RAM.start),
            Self::HypEdge(d) => HYP_MEM.wrapping_add_signed(i64::from(d)),
            Self::Raw(a) => a,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Value {
    Raw(u64),
    Small(u8),
    /// A `*_BASE` value: address, low bits (LOG2SIZE / alignment slack), RA / WA bits.
    Base {
        addr: Addr,
        low: u8,
        attrs: u8,
    },
}

impl Value {
    fn resolve(self) -> u64 {
        match self {
            Self::Raw(v) => v,
            Self::Small(v) => v.into(),
            Self::Base { addr, low, attrs } => {
                (addr.resolve() & !0x3f) | u64::from(low & 0x3f) | (u64::from(attrs & 3) << 62)
            }
        }
    }
}

/// The registers (and halves, and page 0 aliases) a driver writes, or any offset.
const KNOWN: [usize; 24] = [
    o::CR0,
    o::CR1,
    o::CR2,
    o::GBPA,
    o::IRQ_CTRL,
    o::GERRORN,
    o::STRTAB_BASE,
    o::STRTAB_BASE + 4,
    o::STRTAB_BASE_CFG,
    o::CMDQ_BASE,
    o::CMDQ_BASE + 4,
    o::CMDQ_PROD,
    o::CMDQ_CONS,
    o::EVTQ_BASE,
    o::EVTQ_BASE + 4,
    o::EVTQ_PROD,
    o::EVTQ_CONS,
    o::EVTQ_PROD - o::PAGE1,
    o::EVTQ_CONS - o::PAGE1,
    o::IDR0,
    o::GERROR,
    o::CR0ACK,
    o::IRQ_CTRLACK,
    o::STATUSR,
];

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Register {
    Known(u8),
    Raw(u32),
}

impl Register {
    fn offset(self) -> usize {
        match self {
            Self::Known(i) => KNOWN[usize::from(i) % KNOWN.len()],
            Self::Raw(x) => (x % 0x2_0000) as usize,
        }
    }
}

/// A command as the host writes it.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Cmd {
    Raw([u64; 2]),
    CfgiSte { sid: u32, leaf: bool },
    CfgiRange { sid: u32, range: u8 },
    CfgiAll,
    Sync { cs: u8 },
    TlbiNhAll,
    TlbiNhVa { w0: u64, w1: u64 },
    CfgiCd { w0: u64, w1: u64 },
}

impl Cmd {
    fn words(self, streams: &[StreamId]) -> [u64; 2] {
        let pick = |sid: u32| stream(streams, sid);
        match self {
            Self::Raw(w) => w,
            Self::CfgiSte { sid, leaf } => [0x03 | u64::from(pick(sid)) << 32, u64::from(leaf)],
            Self::CfgiRange { sid, range } => {
                [0x04 | u64::from(pick(sid)) << 32, u64::from(range & 0x1f)]
            }
            Self::CfgiAll => [0x04, 31],
            Self::Sync { cs } => [0x46 | u64::from(cs & 3) << 12, 0],
            Self::TlbiNhAll => [0x10, 0],
            Self::TlbiNhVa { w0, w1 } => [0x12 | (w0 & !0xff), w1],
            Self::CfgiCd { w0, w1 } => [0x05 | (w0 & !0xff), w1],
        }
    }
}

/// A StreamID: one of the physical streams most of the time.
fn stream(streams: &[StreamId], sel: u32) -> StreamId {
    match streams.len() {
        0 => sel,
        n if sel & 0x8000_0000 == 0 => streams[sel as usize % n],
        _ => sel & 0x7fff_ffff,
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
    /// A driver's bring-up in one step: queues and Stream table programmed, queues then the SMMU
    /// enabled.
    Bringup {
        strtab: Addr,
        strtab_cfg: u32,
        cmdq: Addr,
        cmdq_log2: u8,
        evtq: Addr,
        evtq_log2: u8,
        cr2: u8,
    },
    /// `count` copies of a command written at the host's `CMDQ_PROD` and published with one write.
    Issue {
        cmd: Cmd,
        count: u8,
    },
    /// A command written into any slot of the queue, unpublished.
    CommandAt {
        slot: u16,
        cmd: Cmd,
    },
    /// The STE of a stream in a linear table at `STRTAB_BASE` (or a level 2 table at `L2`).
    Ste {
        sid: u32,
        level2: bool,
        valid_config: Option<u8>,
        words: [u64; 8],
    },
    /// A level 1 descriptor.
    L1 {
        index: u16,
        l2: Addr,
        span: u8,
        raw_high: u8,
    },
    /// The host's CPU writes anything anywhere in its RAM.
    Poke {
        addr: Addr,
        words: Vec<u64>,
    },
    /// A record from the physical Event queue, routed and (if the host's) delivered.
    PhysicalRecord {
        record: [u64; 4],
    },
    /// Portcullis switches the live DMA policy (the fence) and recomposes every stream.
    SwitchPolicy,
    /// The physical SMMU starts or stops failing STE writes / syncs.
    PhysicalFailures {
        ste: bool,
        sync: bool,
    },
}

struct Harness {
    smmu: EmulatedSmmu,
    mem: FakeMemory,
    phys: FakePhys,
    streams: Vec<StreamId>,
    /// The last STE written to each physical stream.
    shadow: BTreeMap<StreamId, Ste>,
    /// A physical STE write failed since the last policy switch.
    ste_failed: bool,
    alloc_bound: usize,
}

fn physical_features(setup: &Setup) -> SmmuFeatures {
    let mut f = qemu_like();
    f.sid_bits = setup.sid_bits.clamp(1, 24);
    f.two_level_strtab = setup.two_level;
    f
}

impl Harness {
    fn new(setup: &Setup) -> Option<Self> {
        let physical = physical_features(setup);
        let mask = (1u64 << physical.sid_bits) - 1;
        let mut streams: Vec<StreamId> = setup
            .streams
            .iter()
            .take(MAX_STREAMS)
            .map(|s| (u64::from(*s) & mask) as StreamId)
            .collect();
        streams.sort_unstable();
        streams.dedup();
        let config = EmulConfig {
            cmdq_log2: setup.cmdq_log2.min(10),
            evtq_log2: setup.evtq_log2.min(10),
            gbpa_abort: setup.gbpa_abort,
            ..EmulConfig::new(physical, setup.ipa_bits.clamp(32, 52))
        };
        let smmu = EmulatedSmmu::new(&config, streams.iter().copied()).ok()?;
        let mut h = Self {
            smmu,
            mem: FakeMemory::new(vec![HOST_RAM]),
            phys: FakePhys::new(policy()),
            alloc_bound: ALLOC_BASE + ALLOC_PER_STREAM * streams.len(),
            streams,
            shadow: BTreeMap::new(),
            ste_failed: false,
        };
        // The boot state: every physical stream as the reset state says.
        let (smmu, mem, phys) = (&mut h.smmu, &mut h.mem, &mut h.phys);
        smmu.recompose_all(mem, phys);
        h.absorb_physical_log();
        assert_eq!(
            h.shadow.len(),
            h.streams.len(),
            "boot recomposition left a stream unwritten"
        );
        Some(h)
    }

    fn write(&mut self, offset: usize, size: u8, value: u64) {
        let (smmu, mut mem, mut phys) = (&mut self.smmu, Mem(&mut self.mem), Phys(&mut self.phys));
        let (_, peak) = peak_during(|| smmu.write(offset, size, value, &mut mem, &mut phys));
        assert!(
            peak <= self.alloc_bound,
            "a {size}-byte write of {value:#x} at {offset:#x} kept {peak} bytes of heap live at once \
             ({} streams, bound {})",
            self.streams.len(),
            self.alloc_bound
        );
    }

    fn read(&self, offset: usize, size: u8) -> u64 {
        let first = self.smmu.read(offset, size);
        let again = self.smmu.read(offset, size);
        assert_eq!(first, again, "read of {offset:#x} has a side effect");
        if size < 8 {
            assert_eq!(
                first.value >> (u32::from(size.max(1)) * 8),
                0,
                "{size}-byte read of {offset:#x} returned {:#x}",
                first.value
            );
        }
        first.value
    }

    fn cmdq_log2(&self) -> u8 {
        let base = self.smmu.read(o::CMDQ_BASE, 8).value;
        clamp_log2_size((base & 0x1f) as u8, self.smmu.host_features().cmdq_log2)
    }

    fn queue_base(reg: u64) -> u64 {
        reg & 0x000f_ffff_ffff_ffe0
    }

    fn run(&mut self, op: &Op) {
        match *op {
            Op::Write { reg, size, value } => {
                self.write(reg.offset(), size.bytes(), value.resolve());
            }
            Op::Read { reg, size } => {
                self.read(reg.offset(), size.bytes());
            }
            Op::Bringup {
                strtab,
                strtab_cfg,
                cmdq,
                cmdq_log2,
                evtq,
                evtq_log2,
                cr2,
            } => {
                self.write(o::CR0, 4, 0);
                self.write(o::STRTAB_BASE, 8, strtab.resolve() & !0x3f);
                self.write(o::STRTAB_BASE_CFG, 4, strtab_cfg.into());
                let q = |a: Addr, l: u8| (a.resolve() & !0x1f) | u64::from(l & 0x1f);
                self.write(o::CMDQ_BASE, 8, q(cmdq, cmdq_log2));
                self.write(o::CMDQ_PROD, 4, 0);
                self.write(o::CMDQ_CONS, 4, 0);
                self.write(o::EVTQ_BASE, 8, q(evtq, evtq_log2));
                self.write(o::EVTQ_PROD, 4, 0);
                self.write(o::EVTQ_CONS, 4, 0);
                self.write(o::CR2, 4, u64::from(cr2 & 7));
                self.write(o::CR0, 4, 0b1100);
                self.write(o::CR0, 4, 0b1101);
            }
            Op::Issue { cmd, count } => {
                let log2 = self.cmdq_log2();
                let base = Self::queue_base(self.smmu.read(o::CMDQ_BASE, 8).value);
                let mut prod =
                    QueueIndex::from_field(log2, self.smmu.read(o::CMDQ_PROD, 4).value as u32);
                let words = cmd.words(&self.streams);
                for _ in 0..u32::from(count).min(1 << log2) {
                    self.mem
                        .poke_words(base.wrapping_add(prod.byte_offset(16) as u64), &words);
                    prod = prod.advance(1);
                }
                self.write(o::CMDQ_PROD, 4, prod.field().into());
            }
            Op::CommandAt { slot, cmd } => {
                let log2 = self.cmdq_log2();
                let base = Self::queue_base(self.smmu.read(o::CMDQ_BASE, 8).value);
                let at = base + (u64::from(slot) % (1 << log2)) * 16;
                self.mem.poke_words(at, &cmd.words(&self.streams));
            }
            Op::Ste {
                sid,
                level2,
                valid_config,
                mut words,
            } => {
                let sid = stream(&self.streams, sid);
                if let Some(config) = valid_config {
                    words[0] = (words[0] & !0xf) | 1 | (u64::from(config & 7) << 1);
                }
                let base = if level2 {
                    L2_GROUP0
                } else {
                    self.smmu.read(o::STRTAB_BASE, 8).value & 0x000f_ffff_ffff_ffc0
                };
                let index = if level2 { sid & 0xff } else { sid };
                self.mem
                    .poke_words(base.wrapping_add(u64::from(index) * 64), &words);
            }
            Op::L1 {
                index,
                l2,
                span,
                raw_high,
            } => {
                let base = self.smmu.read(o::STRTAB_BASE, 8).value & 0x000f_ffff_ffff_ffc0;
                let word = (l2.resolve() & 0x000f_ffff_ffff_ffc0)
                    | u64::from(span & 0x1f)
                    | u64::from(raw_high) << 56;
                self.mem
                    .poke_words(base.wrapping_add(u64::from(index) * 8), &[word]);
            }
            Op::Poke { addr, ref words } => {
                let at = addr.resolve();
                let words = &words[..words.len().min(16)];
                let in_ram = |a: u64| HOST_RAM.contains(&a);
                if in_ram(at) && in_ram(at.saturating_add(8 * words.len() as u64)) {
                    self.mem.poke_words(at, words);
                }
            }
            Op::PhysicalRecord { record } => {
                if let Ok(event) = Event::decode(record) {
                    let route = self.smmu.route(&event);
                    if stage2_fault(&event) {
                        assert_eq!(
                            route,
                            EventRoute::Portcullis,
                            "stage 2 fault routed to the host: {event:?}"
                        );
                    }
                    if route == EventRoute::Host {
                        let (smmu, mut mem) = (&mut self.smmu, Mem(&mut self.mem));
                        let (_, peak) = peak_during(|| smmu.deliver_record(record, &mut mem));
                        assert!(
                            peak <= self.alloc_bound,
                            "delivering a record allocated {peak}"
                        );
                    }
                }
            }
            Op::SwitchPolicy => {
                // The fence and back (the capture kernel's lifting): the DMA policy and the
                // host's CPU policy change together; in crash mode the host reaches only the
                // crash region.
                let crash = self.phys.policy == policy();
                self.phys.policy = if crash { crash_policy() } else { policy() };
                self.mem.allowed = vec![if crash { CRASH_REGION } else { HOST_RAM }];
                self.ste_failed = false;
                let (smmu, mut mem, mut phys) =
                    (&mut self.smmu, Mem(&mut self.mem), Phys(&mut self.phys));
                let (_, peak) = peak_during(|| smmu.recompose_all(&mut mem, &mut phys));
                assert!(peak <= self.alloc_bound, "a policy switch allocated {peak}");
            }
            Op::PhysicalFailures { ste, sync } => {
                self.phys.fail_ste = ste;
                self.phys.fail_sync = sync;
            }
        }
        self.check();
    }

    /// Folds the physical SMMU's log into the shadow table.
    fn absorb_physical_log(&mut self) {
        for op in self.phys.take() {
            if let PhysOp::Ste(sid, ste) = op {
                assert!(
                    self.streams.contains(&sid),
                    "STE written for {sid:#x}, not a physical stream"
                );
                self.shadow.insert(sid, ste);
            }
        }
    }

    fn check(&mut self) {
        if self.phys.fail_ste {
            self.ste_failed = true;
        }
        self.absorb_physical_log();
        // 1.
        assert!(
            self.phys.violations.is_empty(),
            "physical SMMU handed something outside the policy: {:?}",
            self.phys.violations
        );
        // 5., counted in bytes through the fake: one request holds at most a chunk of entries
        // (`emul::commands::STE_CHUNK`, 1024) or one per physical stream, whatever the host's batch.
        let entry = size_of::<(StreamId, Ste)>().max(size_of::<Command>());
        let largest = self.streams.len().max(1024) * entry;
        assert!(
            self.phys.largest_request <= largest,
            "{} bytes handed to the physical SMMU in one request ({} streams)",
            self.phys.largest_request,
            self.streams.len()
        );
        // 2. and 3.
        let s2 = stage2_words(&self.phys.policy);
        for (&sid, ste) in &self.shadow {
            let passes = ste.config() != StreamConfig::Abort;
            let state = self.smmu.stream_state(sid);
            let live = state.is_some_and(|s| s.is_live());
            assert!(
                live || !passes,
                "stream {sid:#x} is {state:?} (not live) but its physical STE lets DMA through: {ste:?}"
            );
            if passes && !self.ste_failed {
                assert_eq!(
                    &ste.0[2..4],
                    &s2[..],
                    "stream {sid:#x} keeps another stage 2 than the live policy's"
                );
            }
        }
        // 4.
        let evtq = self.smmu.read(o::EVTQ_BASE, 8).value;
        let log2 = clamp_log2_size((evtq & 0x1f) as u8, self.smmu.host_features().evtq_log2);
        let start = Self::queue_base(evtq);
        let queue: Range<u64> = start..start.saturating_add(32 << log2);
        for access in self.mem.accesses() {
            if access.write && access.allowed {
                let end = access.ipa + access.len as u64;
                assert!(
                    queue.start <= access.ipa && end <= queue.end,
                    "host memory written outside its Event queue {queue:x?}: {access:x?}"
                );
                assert!(
                    self.mem
                        .allowed
                        .iter()
                        .any(|r| r.start <= access.ipa && end <= r.end),
                    "host memory written outside the policy: {access:x?}"
                );
            }
        }
        self.mem.clear_log();
        // 6.
        for (reg, ack) in [(o::CR0, o::CR0ACK), (o::IRQ_CTRL, o::IRQ_CTRLACK)] {
            assert_eq!(
                self.read(reg, 4),
                self.read(ack, 4),
                "{ack:#x} does not acknowledge {reg:#x}"
            );
        }
    }
}

fn stage2_words(policy: &Stage2Config) -> [u64; 2] {
    let ste = Ste::stage2(policy, &AttrOverrides::default());
    [ste.0[2], ste.0[3]]
}

fn stage2_fault(event: &Event) -> bool {
    match event {
        Event::Translation(t) | Event::AddrSize(t) | Event::Access(t) | Event::Permission(t) => {
            t.stage2
        }
        Event::WalkEabt { stage2, .. } | Event::TlbConflict { stage2, .. } => *stage2,
        _ => false,
    }
}

pub fn run(input: &Input) {
    let Some(mut h) = Harness::new(&input.setup) else {
        return;
    };
    for op in input.ops.iter().take(MAX_OPS) {
        h.run(op);
    }
}
