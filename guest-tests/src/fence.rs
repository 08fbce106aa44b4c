//! What the crash-fence scenarios share: *fence*, *fence-multi*, *fence-keep*, and the variants
//! *fence-keep-dormant* and *fence-noisy*.
//!
//! One payload plays both kernels of a kdump:
//! - **A, the dead kernel**, boots normally: it drives the emulated SMMU with its own driver, gives
//!   each edu a stage 1 (IOVA != PA) onto pages of its own RAM, checks that DMA works, fills its
//!   buffers with [`memory_pattern`], starts a device -> RAM DMA on every edu *without waiting*
//!   (a transfer takes 100 ms of virtual time, so it is in flight at the jump), writes its canary
//!   page, copies itself into the crash region and jumps there ([`crate::kexec`]). That first
//!   instruction fetch from the (execute-never) crash region is the kexec event: Portcullis raises
//!   the fence and resumes the copy.
//! - **B, the capture kernel**, is the copy, running at the crash region's base with its own
//!   .bss, stacks and statics (all in the crash region). It learns A's addresses from a
//!   [`Handoff`], and checks what the fence promises: the dead kernel's DMA never lands, it is
//!   recorded, A's memory is frozen (readable, not writable), and the capture kernel gets a clean
//!   SMMU and the fault report.
//!
//! A's addresses after the fence: the fence gives every stream a stage-2-only STE (the terminating
//! stage 2) in place of A's nested one, so A's stage 1 is no longer walked. A late transaction's
//! address (A's IOVA) goes straight into that stage 2 as the IPA: its F_TRANSLATION names the IOVA
//! both as InputAddr and (its page) as IPA, with S2 = 1 and CLASS = IN. A transfer B maps through
//! its own stage 1 onto A's memory names B's IOVA as InputAddr and A's physical page as IPA.

use crate::dma::{
    self, DmaBuffer, PROBE, READBACK_FILL, device_pattern, discover, dma_failed, faults_now,
    fill_memory, memory_changed, memory_pattern,
};
use crate::dt::{Reg, Tree};
use crate::edu::{BUFFER_SIZE, Direction, Edu};
use crate::hooks::{self, F_TRANSLATION, FenceMode};
use crate::kexec::{self, Handoff};
use crate::mmio::{read64, write64};
use crate::pci::Function;
use crate::report::{self, Report};
use crate::rt::{
    Caught, Context, ImageLayout, expect_exception, image_layout, tick_hz, ticks, ticks_to_ms,
};
use crate::smmu::{
    Command, Deadline, Event, MAX_SID_BITS, SPLIT, Smmu, SmmuError, SmmuMemory, Stage1Tables, Ste,
    SyncSignal, WINDOW_SIZE, Words, cr0, evt, reg, ste, strtab,
};
use crate::{Failure, Outcome, check, println};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Most edus a scenario uses.
pub const MAX_EDUS: usize = 2;
pub const PAGE: u64 = 0x1000;
/// A's IOVA windows: edu `i` at `IOVA_A + i * WINDOW_SIZE`; page 0 maps A's staging page, page 1
/// A's buffer. Nothing but a translation puts RAM there (RAM is below 4 GiB with `-m 1G`).
pub const IOVA_A: u64 = 0x1_0000_0000;
/// B's IOVA window (the capture kernel's own stage 1).
pub const IOVA_B: u64 = 0x2_0000_0000;
/// The ASID B's context uses.
pub const ASID_B: u16 = 9;
/// The in-flight DMA: `IN_FLIGHT_LEN` bytes at the start of A's buffer (IOVA page 1).
pub const IN_FLIGHT_LEN: usize = 0x40;
/// How long after the jump B watches A's memory before it touches the SMMU: several DMA periods.
pub const SETTLE_MS: u64 = 600;
/// The fence window Portcullis may plausibly take: a fixed batch of commands, well under a DMA
/// period.
pub const MAX_WINDOW_NS: u64 = 50_000_000;
/// A DMA's duration in the edu model.
const DMA_PERIOD_MS: u64 = 100;

const GBPA_ABORT: u32 = 1 << 20;
const GBPA_UPDATE: u32 = 1 << 31;

/// ESR_EL1 of the abort Portcullis injects for a refused access: EC 0x25 (data abort, same EL),
/// DFSC 0x10 (synchronous external abort), WnR.
const EC_DABT_CUR: u64 = 0x25;
const DFSC_SEA: u64 = 0x10;
const ESR_WNR: u64 = 1 << 6;

/// The device pattern the edu of index `i` carries in its buffer.
pub fn seed_of(i: usize) -> u8 {
    0x30 + i as u8
}

/// A's edu `i`'s IOVA window.
pub fn window_of(i: usize) -> u64 {
    IOVA_A + i as u64 * WINDOW_SIZE
}

/// The ASID of A's context for edu `i`.
fn asid_of(i: usize) -> u16 {
    1 + i as u16
}

// ---------------------------------------------------------------------------------------------
// Memory of the payload (A's in A, B's own copies in B: the statics of the running image).

static SMMU_MEMORY: SmmuMemory = SmmuMemory::new();
static STREAMS: StreamTable = StreamTable::new();
static TABLES: [Stage1Tables; MAX_EDUS] = [Stage1Tables::new(), Stage1Tables::new()];
/// IOVA page 0 of each edu.
static STAGING: [DmaBuffer<BUFFER_SIZE>; MAX_EDUS] = [DmaBuffer::new(), DmaBuffer::new()];
/// IOVA page 1 of each edu: "A's buffer", where the in-flight DMA is aimed.
static TARGETS: [DmaBuffer<BUFFER_SIZE>; MAX_EDUS] = [DmaBuffer::new(), DmaBuffer::new()];
/// A page of A's RAM written after the DMA started: nothing may change it.
static CANARY: DmaBuffer<BUFFER_SIZE> = DmaBuffer::new();
/// In B: a crash-region page that no DMA of the dead kernel's devices may reach.
static PROBE_PAGE: DmaBuffer<BUFFER_SIZE> = DmaBuffer::new();
/// In B: where B's own DMA lands (IOVA_B page 2).
static READBACK: DmaBuffer<BUFFER_SIZE> = DmaBuffer::new();

#[unsafe(link_section = ".data.kexec_handoff")]
static HANDOFF: Handoff<DeadKernel> = Handoff::new(DeadKernel::EMPTY);

// ---------------------------------------------------------------------------------------------
// What A hands to B.

/// One of A's edus and what it was doing at the jump.
#[derive(Clone, Copy, Debug)]
pub struct DeadEdu {
    pub function: Function,
    pub sid: u32,
    /// A's IOVA window (page 0: `staging`, page 1: `target`).
    pub window: u64,
    pub asid: u16,
    /// A's CD (in A's memory).
    pub cd: u64,
    pub staging: u64,
    /// A's buffer: what the in-flight DMA was aimed at.
    pub target: u64,
    /// The in-flight DMA's IOVA (`window + PAGE`) and length.
    pub in_flight: u64,
    pub in_flight_len: u64,
    /// When it was started, in counter ticks.
    pub started: u64,
    /// The edu still said "busy" just before the jump.
    pub busy_at_jump: bool,
    /// Faults Portcullis had recorded for the StreamID before the DMA was started.
    pub faults_before: u64,
    /// `device_pattern(seed)` fills the edu's buffer.
    pub seed: u8,
}

/// A's SMMU registers as A left them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeadSmmu {
    pub base: u64,
    pub idr0: u32,
    pub idr1: u32,
    pub idr5: u32,
    pub cr0: u32,
    pub cr1: u32,
    pub cr2: u32,
    pub gbpa: u32,
    pub irq_ctrl: u32,
    pub strtab_base: u64,
    pub strtab_base_cfg: u32,
    pub cmdq_base: u64,
    pub cmdq_prod: u32,
    pub evtq_base: u64,
}

impl DeadSmmu {
    const EMPTY: DeadSmmu = DeadSmmu {
        base: 0,
        idr0: 0,
        idr1: 0,
        idr5: 0,
        cr0: 0,
        cr1: 0,
        cr2: 0,
        gbpa: 0,
        irq_ctrl: 0,
        strtab_base: 0,
        strtab_base_cfg: 0,
        cmdq_base: 0,
        cmdq_prod: 0,
        evtq_base: 0,
    };

    fn snapshot(smmu: &Smmu, base: u64) -> DeadSmmu {
        DeadSmmu {
            base,
            idr0: smmu.read32(reg::IDR0),
            idr1: smmu.read32(reg::IDR1),
            idr5: smmu.read32(reg::IDR5),
            cr0: smmu.read32(reg::CR0),
            cr1: smmu.read32(reg::CR1),
            cr2: smmu.read32(reg::CR2),
            gbpa: smmu.read32(reg::GBPA),
            irq_ctrl: smmu.read32(reg::IRQ_CTRL),
            strtab_base: smmu.read64(reg::STRTAB_BASE),
            strtab_base_cfg: smmu.read32(reg::STRTAB_BASE_CFG),
            cmdq_base: smmu.read64(reg::CMDQ_BASE),
            cmdq_prod: smmu.read32(reg::CMDQ_PROD),
            evtq_base: smmu.read64(reg::EVTQ_BASE),
        }
    }
}

/// Everything A hands to B.
#[derive(Clone, Copy, Debug)]
pub struct DeadKernel {
    pub image: ImageLayout,
    pub edus: [Option<DeadEdu>; MAX_EDUS],
    /// A's canary page.
    pub canary: u64,
    pub smmu: DeadSmmu,
    /// When A jumped, in counter ticks.
    pub jumped: u64,
}

impl DeadKernel {
    const EMPTY: DeadKernel = DeadKernel {
        image: ImageLayout {
            start: 0,
            end: 0,
            file_size: 0,
        },
        edus: [None; MAX_EDUS],
        canary: 0,
        smmu: DeadSmmu::EMPTY,
        jumped: 0,
    };

    pub fn edus(&self) -> impl Iterator<Item = &DeadEdu> + '_ {
        self.edus.iter().flatten()
    }

    /// The first edu the handoff names (the one a single-edu scenario's checks are about).
    pub fn first_edu(&self) -> Result<DeadEdu, Failure> {
        self.edus()
            .next()
            .copied()
            .ok_or_else(|| Failure::new(format_args!("the handoff names no edu")))
    }

    /// A's pages B watches: (address, what).
    fn watched(&self) -> impl Iterator<Item = (u64, &'static str)> + '_ {
        self.edus()
            .flat_map(|e| [(e.target, "A's buffer"), (e.staging, "A's staging page")])
            .chain([(self.canary, "A's canary page")])
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

fn smmu_failed(what: fmt::Arguments, e: SmmuError) -> Failure {
    Failure::new(format_args!("{what}: {e}"))
}

fn hook_failed(what: &str, e: hooks::HookError) -> Failure {
    Failure::new(format_args!("{what}: {e}"))
}

/// A short text in a fixed buffer.
struct Text<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Text<N> {
    fn of(args: fmt::Arguments) -> Self {
        let mut t = Text {
            buf: [0; N],
            len: 0,
        };
        let _ = t.write_fmt(args);
        t
    }
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> Write for Text<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(N - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Failures a scenario keeps going after: each is printed when found, the first decides the
/// verdict. For checks whose failure leaves the rest of the scenario meaningful.
#[derive(Debug, Default)]
pub struct Findings {
    first: Option<Failure>,
    count: usize,
}

impl Findings {
    pub fn soft(&mut self, step: &str, r: Outcome) {
        if let Err(f) = r {
            println!("  FAILED (continuing): {step}: {}", f.message());
            self.count += 1;
            self.first.get_or_insert(f);
        }
    }

    pub fn verdict(self) -> Outcome {
        match self.first {
            None => Ok(()),
            Some(f) if self.count == 1 => Err(f),
            Some(f) => Err(Failure::new(format_args!(
                "{} (and {} more failed checks above)",
                f.message(),
                self.count - 1
            ))),
        }
    }
}

/// Waits `ms` milliseconds of the virtual counter.
pub fn sleep_ms(ms: u64) {
    let hz = tick_hz();
    let start = ticks();
    while ticks().wrapping_sub(start) < ms * hz / 1000 {
        core::hint::spin_loop();
    }
}

// ---------------------------------------------------------------------------------------------
// The device tree: the crash region, the report region, the SMMU.

/// The crash region `crashkernel=SIZE@BASE` names, inside a memory node, clear of Portcullis and
/// the device tree. (Unlike `dma::crash_region`, the payload itself may run there: B does.)
pub fn crash_region(ctx: &Context) -> Result<Reg, Failure> {
    let hyp = dma::hypervisor_region(&ctx.dtb)?;
    dma::placed_crash_region(ctx, hyp, dma::CrashUse::PayloadHome)
}

/// The fault report region (`/reserved-memory`, compatible "portcullis,fault-report").
pub fn report_region(tree: &Tree) -> Result<Reg, Failure> {
    tree.reserved_with_compatible("portcullis,fault-report")
        .filter(|r| r.size > 0)
        .ok_or_else(|| {
            Failure::new(format_args!(
                "no /reserved-memory node with compatible portcullis,fault-report"
            ))
        })
}

fn smmu_frame(tree: &Tree) -> Result<Reg, Failure> {
    let frame = tree.smmu().ok_or_else(|| {
        Failure::new(format_args!(
            "no arm,smmu-v3 node in the host's tree: Portcullis should show its emulated SMMU"
        ))
    })?;
    check!(
        frame.size >= 0x2_0000,
        "the SMMU's reg is {:#x} bytes: too small for register pages 0 and 1",
        frame.size
    );
    Ok(frame)
}

/// What the kernel that kexec'd into this payload handed over: `Some` in B (which must then be
/// running at the crash region's base), `None` in A (booted normally, elsewhere).
pub fn received(crash: Reg) -> Result<Option<DeadKernel>, Failure> {
    let me = image_layout();
    match HANDOFF.received() {
        Some(dead) => {
            check!(
                me.start == crash.base,
                "a handoff from the dead kernel, but this image runs at {:#x}, not at the crash \
                 region's base {:#x}",
                me.start,
                crash.base
            );
            println!(
                "capture kernel (B): running at {:#x}..{:#x} in the crash region {:#x}..{:#x}; \
                 the dead kernel (A) ran at {:#x}..{:#x}",
                me.start,
                me.end,
                crash.base,
                crash.end(),
                dead.image.start,
                dead.image.end
            );
            Ok(Some(dead))
        }
        None => {
            check!(
                me.start != crash.base,
                "this image runs at the crash region's base {:#x} without a handoff",
                crash.base
            );
            Ok(None)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A Stream table of the scenario's own: two level 2 arrays, so that edus on different buses
// (StreamIDs 0x8 and 0x100 with a root port) are both covered. The driver's own table has one.

const L1_ENTRIES: usize = 1 << (MAX_SID_BITS - SPLIT);
const STE_WORDS: usize = 8;
/// `first` of an unused level 2 array. (Zero, so that the table is .bss, not file data.)
const NO_RANGE: u32 = 0;

/// A level 2 array: the STEs of `1 << SPLIT` StreamIDs.
type Level2 = Words<{ STE_WORDS << SPLIT }>;

/// A two-level Stream table (SPLIT 8) with up to two level 2 arrays, and a level 2 array of
/// bypass STEs that [`StreamTable::bypass_the_rest`] puts behind every other level 1 descriptor.
#[derive(Debug)]
pub struct StreamTable {
    l1: Words<L1_ENTRIES>,
    l2: [Level2; 2],
    bypass: Level2,
    /// One more than the first StreamID each level 2 array covers, or `NO_RANGE`.
    first: [AtomicU32; 2],
}

impl StreamTable {
    pub const fn new() -> Self {
        StreamTable {
            l1: Words::new(),
            l2: [Words::new(), Words::new()],
            bypass: Words::new(),
            first: [AtomicU32::new(NO_RANGE), AtomicU32::new(NO_RANGE)],
        }
    }

    /// STRTAB_BASE for this table.
    pub fn base(&self) -> u64 {
        strtab::BASE_ADDR.addr(self.l1.addr())
    }

    /// Empties the table and gives level 2 arrays to the ranges of `sids` (at most two ranges).
    pub fn build(&self, sids: &[u32]) -> Result<(), Failure> {
        self.l1.clear();
        for (l2, first) in self.l2.iter().zip(&self.first) {
            l2.clear();
            first.store(NO_RANGE, Ordering::Relaxed);
        }
        for &sid in sids {
            check!(
                sid >> MAX_SID_BITS == 0,
                "StreamID {sid:#x} beyond the table"
            );
            let first = sid & !((1 << SPLIT) - 1);
            if self.slot(sid).is_some() {
                continue;
            }
            let Some(i) = self
                .first
                .iter()
                .position(|f| f.load(Ordering::Relaxed) == NO_RANGE)
            else {
                return Err(Failure::new(format_args!(
                    "StreamIDs in more than two level 2 ranges"
                )));
            };
            self.first[i].store(first + 1, Ordering::Relaxed);
            let l1std =
                ste::L1_SPAN.val((SPLIT + 1).into()) | ste::L1_L2PTR.addr(self.l2[i].addr());
            self.l1.set((sid >> SPLIT) as usize, l1std);
        }
        Ok(())
    }

    fn slot(&self, sid: u32) -> Option<(usize, usize)> {
        self.first.iter().enumerate().find_map(|(i, f)| {
            let first = f.load(Ordering::Relaxed).checked_sub(1)?;
            (sid >= first && sid - first < 1 << SPLIT)
                .then(|| (i, (sid - first) as usize * STE_WORDS))
        })
    }

    /// Writes the STE of `sid`: words 1..7, then word 0.
    pub fn write_ste(&self, sid: u32, new: &Ste) -> Result<(), Failure> {
        let (i, at) = self
            .slot(sid)
            .ok_or_else(|| Failure::new(format_args!("StreamID {sid:#x} has no level 2 array")))?;
        put_ste(&self.l2[i], at, new);
        Ok(())
    }

    /// Gives every StreamID below `1 << log2` that has no valid STE a bypass STE: the invalid
    /// slots of the level 2 arrays, and every level 1 descriptor without one points to a level 2
    /// array of bypass STEs they all share. The SMMU only reads the table, and nothing in IHI
    /// 0070 (3.3.2, 5.1) keeps two level 1 descriptors from naming the same level 2 array: every
    /// StreamID the SMMU offers is configured with 16 KiB instead of 4 MiB. Returns the number of
    /// StreamIDs covered. Make it take effect with CMD_CFGI_ALL.
    pub fn bypass_the_rest(&self, log2: u32) -> usize {
        let bypass = Ste::bypass();
        for l2 in self.l2.iter().chain([&self.bypass]) {
            for at in (0..STE_WORDS << SPLIT).step_by(STE_WORDS) {
                if !ste::V.is_set(l2.get(at)) {
                    put_ste(l2, at, &bypass);
                }
            }
        }
        let shared = ste::L1_SPAN.val((SPLIT + 1).into()) | ste::L1_L2PTR.addr(self.bypass.addr());
        let entries = 1usize << log2.min(MAX_SID_BITS).saturating_sub(SPLIT);
        for k in 0..entries {
            if self.l1.get(k) == 0 {
                self.l1.set(k, shared);
            }
        }
        entries << SPLIT
    }

    /// Makes the SMMU use this table: SMMUEN off, STRTAB_BASE and _CFG, SMMUEN back on,
    /// CFGI_ALL + TLBI_NSNH_ALL + CMD_SYNC.
    pub fn install(&self, smmu: &Smmu) -> Result<(), Failure> {
        let on = smmu.cr0();
        let off = on & !(cr0::SMMUEN.set() as u32);
        smmu.set_cr0(off)
            .map_err(|e| smmu_failed(format_args!("clearing SMMUEN"), e))?;
        smmu.write64(reg::STRTAB_BASE, self.base());
        smmu.write32(
            reg::STRTAB_BASE_CFG,
            Smmu::strtab_base_cfg_for(smmu.strtab_log2()),
        );
        smmu.set_cr0(on | cr0::SMMUEN.set() as u32)
            .map_err(|e| smmu_failed(format_args!("setting SMMUEN"), e))?;
        smmu.issue(&[
            Command::CfgiAll,
            Command::TlbiNsnhAll,
            Command::Sync(SyncSignal::None),
        ])
        .map_err(|e| smmu_failed(format_args!("CFGI_ALL + TLBI_NSNH_ALL + CMD_SYNC"), e))
    }

    /// Writes the STE of `sid` and makes it take effect: CFGI_STE, TLBI_NH_ASID, CMD_SYNC.
    pub fn configure(&self, smmu: &Smmu, sid: u32, new: &Ste, asid: u16) -> Outcome {
        self.write_ste(sid, new)?;
        smmu.issue(&[
            Command::CfgiSte { sid },
            Command::TlbiNhAsid { asid },
            Command::Sync(SyncSignal::None),
        ])
        .map_err(|e| smmu_failed(format_args!("CFGI_STE {sid:#x} + TLBI + CMD_SYNC"), e))
    }
}

/// Writes `new` at word `at` of `l2`: words 1..7, then word 0.
fn put_ste(l2: &Level2, at: usize, new: &Ste) {
    for (w, v) in new.0.iter().enumerate().skip(1) {
        l2.set(at + w, *v);
    }
    l2.set(at, new.0[0]);
}

impl Default for StreamTable {
    fn default() -> Self {
        Self::new()
    }
}

// ---------------------------------------------------------------------------------------------
// A: the dead kernel.

/// A fence scenario's run: with no handoff yet the payload is A, [`dead_kernel_with`] `want` edus
/// and `before_crash`; once the copy in the crash region finds A's handoff, it is B and runs
/// `capture_kernel`.
pub fn run_scenario(
    ctx: &Context,
    want: usize,
    before_crash: impl FnOnce(&DeadSetup) -> Outcome,
    capture_kernel: impl FnOnce(&Context, Reg, &DeadKernel) -> Outcome,
) -> Outcome {
    let crash = crash_region(ctx)?;
    match received(crash)? {
        None => dead_kernel_with(ctx, crash, want, before_crash),
        Some(dead) => capture_kernel(ctx, crash, &dead),
    }
}

/// A's part: brings `want` edus up behind its own stage 1, checks DMA, starts a DMA on each and
/// kexecs into the crash region. Returns only if something failed before the jump.
pub fn dead_kernel(ctx: &Context, crash: Reg, want: usize) -> Outcome {
    dead_kernel_with(ctx, crash, want, |_| Ok(()))
}

/// What A has set up when a scenario's own preparation for the crash runs.
#[derive(Debug)]
pub struct DeadSetup<'a> {
    pub smmu: &'a Smmu,
    pub edus: &'a [Option<(Edu, u32)>],
    pub crash: Reg,
}

impl DeadSetup<'_> {
    /// A's first edu and its StreamID.
    pub fn first_edu(&self) -> Result<(&Edu, u32), Failure> {
        match &self.edus[0] {
            Some((edu, sid)) => Ok((edu, *sid)),
            None => Err(Failure::new(format_args!("no edu"))),
        }
    }

    /// The stage 1 STE A gave edu `i`.
    pub fn stage1_ste(&self, i: usize) -> Ste {
        Ste::stage1(TABLES[i].cd_addr())
    }

    /// Writes the STE of `sid` in A's Stream table and makes it take effect, invalidating every
    /// cached stage 1 translation.
    pub fn configure(&self, sid: u32, new: &Ste) -> Outcome {
        STREAMS.write_ste(sid, new)?;
        self.smmu
            .issue(&[
                Command::CfgiSte { sid },
                Command::TlbiNhAll,
                Command::Sync(SyncSignal::None),
            ])
            .map_err(|e| smmu_failed(format_args!("A: CFGI_STE {sid:#x} + TLBI_NH_ALL"), e))
    }
}

/// [`dead_kernel`], with `before_crash` run after A's DMA checks and before its memory is filled
/// and the DMA started.
///
/// The phases are functions of their own that are not inlined: the payload's stack is 64 KiB, and
/// PCI enumeration alone takes a quarter of it.
pub fn dead_kernel_with(
    ctx: &Context,
    crash: Reg,
    want: usize,
    before_crash: impl FnOnce(&DeadSetup) -> Outcome,
) -> Outcome {
    println!(
        "dead kernel (A): image at {:#x}, crash region {:#x}..{:#x}",
        image_layout().start,
        crash.base,
        crash.end()
    );
    let (smmu, edus) = bring_up(&ctx.dtb, want)?;
    before_crash(&DeadSetup {
        smmu: &smmu,
        edus: &edus[..want],
        crash,
    })?;
    crash_into_capture_kernel(ctx, crash, want, &smmu, &edus)
}

/// The command-line option (`/chosen/bootargs`) with which A configures every StreamID the SMMU
/// offers before the crash (bypass, but for its edus' stage 1): the fence then meets every live
/// stream Portcullis' physical Stream table takes (the root bus's and 32 more buses', 8 448; the
/// other StreamIDs stay refused) instead of one (`scripts/bench` compares the two windows).
pub const ALL_STREAMS: &str = "fence.all-streams";

/// Whether the command line asks for [`ALL_STREAMS`].
pub fn all_streams(tree: &Tree) -> bool {
    tree.bootargs()
        .is_some_and(|b| b.split_whitespace().any(|w| w == ALL_STREAMS))
}

/// A's edus with their StreamIDs.
type DeadEdus = [Option<(Edu, u32)>; MAX_EDUS];

/// The first `want` edus on the PCI bus.
#[inline(never)]
fn find_edus(tree: &Tree, want: usize) -> Result<DeadEdus, Failure> {
    let (host, topology) = discover(tree)?;
    let (edus, n) = dma::edus::<MAX_EDUS>(&host, &topology, tree)?;
    check!(
        n >= want,
        "{n} edu(s) on the PCI bus, the scenario needs {want} (see the scenario's scripts/run line)"
    );
    Ok(edus)
}

/// A's SMMU up, each edu behind its own stage 1, DMA through the IOVAs checked.
#[inline(never)]
fn bring_up(tree: &Tree, want: usize) -> Result<(Smmu, DeadEdus), Failure> {
    let mode = hooks::fence_mode().map_err(|e| hook_failed("PORTCULLIS_TEST_MODE", e))?;
    check!(
        !mode.crash && mode.window_ns == 0 && mode.streams_terminated == 0,
        "Portcullis is not in normal mode before the kexec: {mode:?}"
    );
    let frame = smmu_frame(tree)?;
    let edus = find_edus(tree, want)?;
    let mut sids = [0u32; MAX_EDUS];
    for (i, e) in edus.iter().take(want).enumerate() {
        sids[i] = e.as_ref().map_or(0, |(_, sid)| *sid);
    }
    let sids = &sids[..want];

    let smmu = Smmu::probe(frame.base, &SMMU_MEMORY)
        .map_err(|e| smmu_failed(format_args!("probing the SMMU"), e))?;
    let oas = smmu.features.oas;
    smmu.reset(sids[0])
        .map_err(|e| smmu_failed(format_args!("bringing the SMMU up"), e))?;
    STREAMS.build(sids)?;
    STREAMS.install(&smmu)?;
    for (i, &sid) in sids.iter().enumerate() {
        let (window, asid) = (window_of(i), asid_of(i));
        TABLES[i].init(window, asid, oas);
        TABLES[i].map(window, STAGING[i].addr());
        TABLES[i].map(window + PAGE, TARGETS[i].addr());
        STREAMS.configure(&smmu, sid, &Ste::stage1(TABLES[i].cd_addr()), asid)?;
        println!(
            "A: edu SID {sid:#x}: stage 1, CD {:#x}, ASID {asid}: IOVA {window:#x} -> {:#x}, \
             {:#x} -> {:#x} (A's buffer)",
            TABLES[i].cd_addr(),
            STAGING[i].addr(),
            window + PAGE,
            TARGETS[i].addr()
        );
    }
    if all_streams(tree) {
        let n = STREAMS.bypass_the_rest(smmu.strtab_log2());
        smmu.issue(&[Command::CfgiAll, Command::Sync(SyncSignal::None)])
            .map_err(|e| smmu_failed(format_args!("A: CFGI_ALL + CMD_SYNC"), e))?;
        println!(
            "A: {ALL_STREAMS}: {n} StreamIDs configured (the edus' stage 1, bypass for every \
             other), CFGI_ALL"
        );
    }

    // Sanity: DMA through A's IOVAs works both ways.
    for (i, (edu, _)) in edus.iter().take(want).flatten().enumerate() {
        let window = window_of(i);
        STAGING[i].fill(|b| device_pattern(seed_of(i), b));
        edu.to_device(window, BUFFER_SIZE)
            .map_err(|e| dma_failed(format_args!("A: RAM->device from IOVA {window:#x}"), e))?;
        TARGETS[i].fill(|_| READBACK_FILL);
        edu.from_device(window + PAGE, BUFFER_SIZE).map_err(|e| {
            dma_failed(
                format_args!("A: device->RAM to IOVA {:#x}", window + PAGE),
                e,
            )
        })?;
        let bad = TARGETS[i].mismatch(0..BUFFER_SIZE, |b| device_pattern(seed_of(i), b));
        check!(
            bad.is_none(),
            "A: DMA through IOVA {window:#x} -> device -> IOVA {:#x} (PA {:#x}) does not work: \
             byte {:#x} is {:#x}, want {:#x}",
            window + PAGE,
            TARGETS[i].addr(),
            bad.map_or(0, |b| b.0),
            bad.map_or(0, |b| b.1),
            bad.map_or(0, |b| b.2)
        );
        println!(
            "A: edu {}: DMA through IOVAs {window:#x}/{:#x} works",
            edu.function.bdf,
            window + PAGE
        );
    }
    let mut quiet = 0;
    smmu.drain_until_quiet(|e| {
        println!("  A: event {e}");
        quiet += 1;
    })
    .map_err(|e| smmu_failed(format_args!("draining A's Event queue"), e))?;
    check!(
        quiet == 0,
        "A's Event queue holds {quiet} record(s) after DMA that worked"
    );

    Ok((smmu, edus))
}

/// A's memory filled, the DMA started, the canary written, the image copied, the jump.
#[inline(never)]
fn crash_into_capture_kernel(
    ctx: &Context,
    crash: Reg,
    want: usize,
    smmu: &Smmu,
    edus: &DeadEdus,
) -> Outcome {
    let tree = &ctx.dtb;
    let frame = smmu_frame(tree)?;
    let mut sids = [0u32; MAX_EDUS];
    for (i, e) in edus.iter().take(want).enumerate() {
        sids[i] = e.as_ref().map_or(0, |(_, sid)| *sid);
    }
    let sids = &sids[..want];
    // The report region is Portcullis' until the fence: unmapped for the host.
    let region = report_region(tree)?;
    // SAFETY: the load is expected to abort; the handler skips it.
    let caught = expect_exception(|| unsafe {
        let _ = read64(region.base);
    });
    check!(
        caught.is_some_and(|c| c.ec() == EC_DABT_CUR && c.fsc() == DFSC_SEA),
        "A: a load from the fault report region {:#x} in normal mode gave {caught:?}, want an \
         injected external abort (the region is unmapped until the fence)",
        region.base
    );

    // A's memory as the dump will hold it: every watched page a known pattern.
    for i in 0..want {
        // SAFETY: the payload's own buffers; no DMA is in flight.
        unsafe {
            fill_memory(STAGING[i].addr(), PAGE);
            fill_memory(TARGETS[i].addr(), PAGE);
        }
    }
    let mut faults_before = [0u64; MAX_EDUS];
    for (i, &sid) in sids.iter().enumerate() {
        faults_before[i] = faults_now(sid)?.count;
    }
    let dead_smmu = DeadSmmu::snapshot(smmu, frame.base);

    // kexec_load: the capture kernel is placed in the crash region (RW, execute-never now).
    // SAFETY: the crash region is host RAM nothing uses (checked by `crash_region`); the loader
    // checks the copy fits and does not overlap the running image.
    let loaded = unsafe { kexec::load(crash.base, crash.end()) }
        .map_err(|e| Failure::new(format_args!("A: kexec load: {e}")))?;
    println!(
        "A: image copied to {:#x} ({:#x} bytes of file data, footprint {:#x})",
        loaded.dest,
        loaded.image.file_size,
        loaded.image.end - loaded.image.start
    );

    // The crash: DMA in flight on every edu, the canary written, the jump.
    let mut started = [0u64; MAX_EDUS];
    for (i, (edu, _)) in edus.iter().take(want).flatten().enumerate() {
        let target = window_of(i) + PAGE;
        edu.start(Direction::FromDevice, target, 0, IN_FLIGHT_LEN)
            .map_err(|e| dma_failed(format_args!("A: starting the in-flight DMA"), e))?;
        started[i] = ticks();
    }
    // SAFETY: the payload's own page.
    unsafe { fill_memory(CANARY.addr(), PAGE) };
    println!(
        "A: DMA in flight, canary written at {:#x}; kexec",
        CANARY.addr()
    );
    let mut dead = DeadKernel {
        image: loaded.image,
        edus: [None; MAX_EDUS],
        canary: CANARY.addr(),
        smmu: dead_smmu,
        jumped: 0,
    };
    for (i, (edu, sid)) in edus.iter().take(want).flatten().enumerate() {
        dead.edus[i] = Some(DeadEdu {
            function: edu.function,
            sid: *sid,
            window: window_of(i),
            asid: asid_of(i),
            cd: TABLES[i].cd_addr(),
            staging: STAGING[i].addr(),
            target: TARGETS[i].addr(),
            in_flight: window_of(i) + PAGE,
            in_flight_len: IN_FLIGHT_LEN as u64,
            started: started[i],
            busy_at_jump: edu.busy(),
            faults_before: faults_before[i],
            seed: seed_of(i),
        });
    }
    dead.jumped = ticks();
    loaded.hand_over(&HANDOFF, dead);
    loaded.exec(ctx.dtb_addr)
}

// ---------------------------------------------------------------------------------------------
// B: the capture kernel's checks.

/// TEST_MODE: crash mode, a plausible window, at least the dead kernel's streams terminated.
pub fn check_mode(dead: &DeadKernel) -> Result<FenceMode, Failure> {
    let mode = hooks::fence_mode().map_err(|e| hook_failed("PORTCULLIS_TEST_MODE", e))?;
    println!(
        "B: PORTCULLIS_TEST_MODE: crash mode {}, fence window {} ns, {} streams terminated",
        mode.crash, mode.window_ns, mode.streams_terminated
    );
    check!(
        mode.crash,
        "Portcullis is not in crash mode after the jump into the crash region: {mode:?}"
    );
    check!(
        mode.window_ns > 0 && mode.window_ns < MAX_WINDOW_NS,
        "the fence window is {} ns: not plausible (want 0 < window < {MAX_WINDOW_NS} ns)",
        mode.window_ns
    );
    let n = dead.edus().count() as u64;
    check!(
        mode.streams_terminated >= n,
        "{} streams terminated, but the dead kernel had {n} edu(s) doing DMA",
        mode.streams_terminated
    );
    Ok(mode)
}

/// Every edu was still busy at the jump, which came well within a DMA period of its start.
pub fn check_in_flight_at_jump(dead: &DeadKernel) -> Outcome {
    for e in dead.edus() {
        let ms = ticks_to_ms(dead.jumped.wrapping_sub(e.started));
        println!(
            "B: edu {} (SID {:#x}): DMA of {:#x} bytes to IOVA {:#x} started {ms} ms before the \
             jump, busy at the jump: {}",
            e.function.bdf, e.sid, e.in_flight_len, e.in_flight, e.busy_at_jump
        );
        check!(
            e.busy_at_jump && ms < DMA_PERIOD_MS,
            "edu {}'s DMA was not in flight at the jump (busy {}, started {ms} ms before)",
            e.function.bdf,
            e.busy_at_jump
        );
    }
    Ok(())
}

/// The in-flight DMA was refused and recorded: PORTCULLIS_TEST_FAULTS for the StreamID grew,
/// and its latest record is an F_TRANSLATION write inside the DMA's target range.
pub fn check_in_flight_recorded(dead: &DeadKernel) -> Outcome {
    for e in dead.edus() {
        let f = faults_now(e.sid)?;
        let end = e.in_flight + e.in_flight_len;
        check!(
            f.count > e.faults_before,
            "edu {}'s in-flight DMA (a write to IOVA {:#x}..{end:#x}) was not recorded after \
             the fence: PORTCULLIS_TEST_FAULTS({:#x}) stays {}",
            e.function.bdf,
            e.in_flight,
            e.sid,
            f.count
        );
        check!(
            f.last_type == F_TRANSLATION
                && f.last_was_write
                && (e.in_flight..end).contains(&f.last_addr),
            "the latest record for SID {:#x} after the fence is type {:#x} write {} at {:#x}, \
             want an F_TRANSLATION write inside the in-flight DMA's IOVA {:#x}..{end:#x}",
            e.sid,
            f.last_type,
            f.last_was_write,
            f.last_addr,
            e.in_flight
        );
        println!(
            "B: edu {} SID {:#x}: the in-flight DMA was refused and recorded: {} fault(s) \
             since the crash, the latest at IOVA {:#x}",
            e.function.bdf,
            e.sid,
            f.count - e.faults_before,
            f.last_addr
        );
    }
    Ok(())
}

/// The dead kernel's edus, adopted as they are (nothing written to them).
pub fn adopt_edus(dead: &DeadKernel) -> Result<[Option<Edu>; MAX_EDUS], Failure> {
    let mut out = [const { None }; MAX_EDUS];
    for (i, e) in dead.edus.iter().enumerate() {
        if let Some(e) = e {
            out[i] = Some(Edu::adopt(&e.function).map_err(|err| {
                dma_failed(format_args!("B: adopting edu {}", e.function.bdf), err)
            })?);
        }
    }
    Ok(out)
}

/// Waits until every in-flight DMA has finished, then until `SETTLE_MS` after the jump.
pub fn await_in_flight(dead: &DeadKernel, edus: &[Option<Edu>]) -> Outcome {
    let deadline = Deadline::after_ms(5_000).map_err(|e| smmu_failed(format_args!("timing"), e))?;
    for edu in edus.iter().flatten() {
        while edu.busy() {
            check!(
                !deadline.expired(),
                "edu {}'s in-flight DMA still busy 5 s after the jump",
                edu.function.bdf
            );
            core::hint::spin_loop();
        }
        let (src, dst, count, cmd) = edu.dma_registers();
        println!(
            "B: edu {}: the dead kernel's DMA has completed (src {src:#x} dst {dst:#x} count \
             {count:#x} cmd {cmd:#x}), {} ms after the jump",
            edu.function.bdf,
            ticks_to_ms(ticks().wrapping_sub(dead.jumped))
        );
    }
    let waited = ticks_to_ms(ticks().wrapping_sub(dead.jumped));
    if waited < SETTLE_MS {
        sleep_ms(SETTLE_MS - waited);
    }
    Ok(())
}

/// A's buffers, staging pages and canary still hold exactly what A left there.
pub fn check_dead_memory(dead: &DeadKernel, when: &str) -> Outcome {
    for (page, what) in dead.watched() {
        // SAFETY: A's RAM, readable in crash mode (the dump); loads only.
        let changed = unsafe { memory_changed(page, PAGE) };
        check!(
            changed.is_none(),
            "{what} at {page:#x} changed {when}: byte {:#x} is {:#x}, A left {:#x}",
            changed.map_or(0, |c| c.0),
            changed.map_or(0, |c| c.1),
            changed.map_or(0, |c| memory_pattern(c.0))
        );
    }
    println!(
        "B: A's buffers, staging pages and canary unchanged {when} ({} ms after the jump)",
        ticks_to_ms(ticks().wrapping_sub(dead.jumped))
    );
    Ok(())
}

fn expect_injected_store_abort(addr: u64, c: Option<Caught>, what: &str) -> Outcome {
    let Some(c) = c else {
        return Err(Failure::new(format_args!(
            "a store to {what} at {addr:#x} did not abort: it is writable in crash mode"
        )));
    };
    println!(
        "B: store to {what} at {addr:#x}: esr {:#x} far {:#x}",
        c.esr, c.far
    );
    check!(
        c.ec() == EC_DABT_CUR && c.fsc() == DFSC_SEA && c.esr & ESR_WNR != 0,
        "a store to {what} at {addr:#x} took ESR {:#x} (EC {:#x}, DFSC {:#x}), want the injected \
         synchronous external abort EC {EC_DABT_CUR:#x} DFSC {DFSC_SEA:#x} with WnR",
        c.esr,
        c.ec(),
        c.fsc()
    );
    check!(
        c.far == addr,
        "a store to {what} at {addr:#x} aborted with FAR {:#x}",
        c.far
    );
    Ok(())
}

/// A load from `addr` works and gives `want`; a store aborts (injected by Portcullis) and leaves
/// the word as it was.
fn expect_read_only(addr: u64, want: u64, what: &str) -> Outcome {
    let mut got = 0;
    // SAFETY: A's RAM or the report region: readable in crash mode; a fault would be caught.
    let caught = expect_exception(|| got = unsafe { read64(addr) });
    check!(
        caught.is_none(),
        "a load from {what} at {addr:#x} aborted in crash mode ({caught:?}): the dump must stay \
         readable"
    );
    check!(
        got == want,
        "a load from {what} at {addr:#x} gave {got:#x}, want {want:#x}"
    );
    // SAFETY: the store is expected to abort; the handler skips it.
    let caught = expect_exception(|| unsafe { write64(addr, !want) });
    expect_injected_store_abort(addr, caught, what)?;
    // SAFETY: as for the load above.
    let after = unsafe { read64(addr) };
    check!(
        after == want,
        "{what} at {addr:#x} holds {after:#x} after a refused store, was {want:#x}"
    );
    Ok(())
}

/// The 64-bit word of [`memory_pattern`] bytes at `addr`.
fn pattern_word(addr: u64) -> u64 {
    (0..8).fold(0u64, |w, i| {
        w | u64::from(memory_pattern(addr + i)) << (8 * i)
    })
}

/// A's memory is the dump: readable (A's patterns, A's code) and read-only for B.
pub fn check_dead_memory_read_only(dead: &DeadKernel) -> Outcome {
    for (page, what) in dead.watched() {
        for addr in [page, page + PAGE / 2 + 8, page + PAGE - 8] {
            expect_read_only(addr, pattern_word(addr), what)?;
        }
    }
    // A's code: the same bytes as B's own, which were copied from it.
    let mine = image_layout().start;
    for off in [0, 0x40, 0x1000] {
        // SAFETY: B's own image.
        let want = unsafe { read64(mine + off) };
        expect_read_only(dead.image.start + off, want, "A's image")?;
    }
    // B's own memory stays writable.
    let probe = PROBE_PAGE.addr();
    // SAFETY: B's own page.
    let caught = expect_exception(|| unsafe { write64(probe, 0x5a5a_5a5a_5a5a_5a5a) });
    check!(
        caught.is_none(),
        "a store to B's own page {probe:#x} in the crash region aborted: {caught:?}"
    );
    println!("B: A's memory reads back A's bytes and refuses stores; B's own memory is writable");
    Ok(())
}

/// Kicks `edu` (StreamID `sid`) to write `PROBE` bytes to `target`; the page `watch` (filled with
/// [`memory_pattern`]) must keep its bytes.
fn kick_write_not_landed(edu: &Edu, sid: u32, target: u64, watch: u64, what: &str) -> Outcome {
    edu.from_device(target, PROBE).map_err(|e| {
        dma_failed(
            format_args!("B: kicking edu {} ({what})", edu.function.bdf),
            e,
        )
    })?;
    // SAFETY: RAM readable in crash mode (A's, or B's own).
    let landed = unsafe { memory_changed(watch, PAGE) };
    check!(
        landed.is_none(),
        "edu {} (SID {sid:#x}) kicked to write {target:#x} ({what}): it landed at {:#x} ({:#x}, \
         was {:#x})",
        edu.function.bdf,
        landed.map_or(0, |l| l.0),
        landed.map_or(0, |l| l.1),
        landed.map_or(0, |l| memory_pattern(l.0))
    );
    Ok(())
}

/// A device -> RAM transfer of `PROBE` bytes by `edu` to `target` that must not land: the page
/// `watch` (filled with [`memory_pattern`]) keeps its bytes, and the refusal is recorded for `sid`
/// with `target` exactly (and not for `bystander`).
pub fn kick_write(
    edu: &Edu,
    sid: u32,
    target: u64,
    watch: u64,
    bystander: Option<u32>,
    what: &str,
) -> Outcome {
    let before = faults_now(sid);
    let other_before = bystander.map(|s| faults_now(s).map(|f| f.count));
    kick_write_not_landed(edu, sid, target, watch, what)?;
    let after = dma::expect_fault(
        sid,
        before,
        target,
        PROBE,
        Direction::FromDevice,
        true,
        format_args!("{what}"),
    )?;
    if let (Some(other), Some(was)) = (bystander, other_before) {
        let (was, now) = (was?, faults_now(other)?.count);
        check!(
            was == now,
            "edu {}'s refused DMA ({what}) was also recorded against SID {other:#x} ({was} -> \
             {now})",
            edu.function.bdf
        );
    }
    println!(
        "B: edu {} SID {sid:#x}: write to {target:#x} ({what}) refused and recorded \
         ({} faults)",
        edu.function.bdf, after.count
    );
    Ok(())
}

/// How a refused write was recorded, when the record need not be the terminating stage 2's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// As a write at its address: the transaction met a stage 2 that refused it.
    AsWrite,
    /// As a read at its address: QEMU's record of a nested walk whose CD fetch (a read) the stage
    /// 2 refused (F_TRANSLATION, S2 = 1, CLASS = CD): the stream translated through a stage 1.
    AsCdFetch,
}

/// A device -> RAM transfer of `PROBE` bytes by `edu` to `target` that must not land (the page
/// `watch` keeps its bytes) and must be recorded for `sid` as an F_TRANSLATION naming `target`
/// exactly, in either direction; says which.
pub fn kick_write_recorded(
    edu: &Edu,
    sid: u32,
    target: u64,
    watch: u64,
    what: &str,
) -> Result<Recorded, Failure> {
    let before = faults_now(sid)?;
    kick_write_not_landed(edu, sid, target, watch, what)?;
    let after = faults_now(sid)?;
    check!(
        after.count > before.count && after.last_addr == target && after.last_type == F_TRANSLATION,
        "edu {}'s refused write to {target:#x} ({what}) was not recorded: SID {sid:#x} count \
         {} -> {}, latest type {:#x} at {:#x}",
        edu.function.bdf,
        before.count,
        after.count,
        after.last_type,
        after.last_addr
    );
    let how = if after.last_was_write {
        Recorded::AsWrite
    } else {
        Recorded::AsCdFetch
    };
    println!(
        "B: edu {} SID {sid:#x}: write to {target:#x} ({what}) did not land; recorded {how:?} \
         ({} faults)",
        edu.function.bdf, after.count
    );
    Ok(how)
}

/// A RAM -> device transfer of `PROBE` bytes by `edu` from `source` into its buffer at `offset`,
/// recorded as refused. (Whether data arrived is checked when B can read the buffer back.)
pub fn kick_read(edu: &Edu, sid: u32, source: u64, offset: usize, what: &str) -> Outcome {
    let before = faults_now(sid);
    edu.to_device_at(source, offset, PROBE).map_err(|e| {
        dma_failed(
            format_args!("B: kicking edu {} ({what})", edu.function.bdf),
            e,
        )
    })?;
    dma::expect_fault(
        sid,
        before,
        source,
        PROBE,
        Direction::ToDevice,
        true,
        format_args!("{what}"),
    )?;
    println!(
        "B: edu {} SID {sid:#x}: read from {source:#x} ({what}) refused and recorded",
        edu.function.bdf
    );
    Ok(())
}

/// Where the read kick of edu `i` puts its bytes in the edu's buffer, and reads them from (A's
/// staging page through A's IOVA).
pub fn read_kick(e: &DeadEdu) -> (u64, usize) {
    (e.window + 0x100, 0x100)
}

/// The dead kernel's devices, kicked through A's old configuration after the fence (the device
/// is the dead kernel's: B may write its registers): nothing lands, each refusal is recorded.
/// `crash_probe` is a crash-region page of B's that the dead kernel's devices must not reach.
pub fn kick_dead_devices(
    dead: &DeadKernel,
    edus: &[Option<Edu>],
    offset: u64,
    when: &str,
) -> Outcome {
    // SAFETY: B's own page in the crash region.
    unsafe { fill_memory(PROBE_PAGE.addr(), PAGE) };
    for (i, e) in dead.edus.iter().enumerate() {
        let (Some(e), Some(edu)) = (e, &edus[i]) else {
            continue;
        };
        let other = dead.edus().map(|o| o.sid).find(|&s| s != e.sid);
        let t = Text::<96>::of(format_args!("A's IOVA into A's buffer, {when}"));
        kick_write(
            edu,
            e.sid,
            e.in_flight + offset,
            e.target,
            other,
            t.as_str(),
        )?;
        let t = Text::<96>::of(format_args!("A's buffer by PA, {when}"));
        kick_write(
            edu,
            e.sid,
            e.target + offset + 0x10,
            e.target,
            other,
            t.as_str(),
        )?;
        let t = Text::<96>::of(format_args!("a crash-region page by PA, {when}"));
        kick_write(
            edu,
            e.sid,
            PROBE_PAGE.addr() + offset,
            PROBE_PAGE.addr(),
            other,
            t.as_str(),
        )?;
    }
    Ok(())
}

/// The read kick: before B can read the edu's buffer.
pub fn kick_dead_reads(dead: &DeadKernel, edus: &[Option<Edu>]) -> Outcome {
    for (i, e) in dead.edus.iter().enumerate() {
        let (Some(e), Some(edu)) = (e, &edus[i]) else {
            continue;
        };
        let (source, offset) = read_kick(e);
        kick_read(edu, e.sid, source, offset, "A's IOVA onto A's staging page")?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The fault report.

/// A copy of the report region (64 KiB at most), in the payload's memory.
static REPORT_COPY: DmaBuffer<{ 64 * 1024 }> = DmaBuffer::new();
static REPORT_BUSY: AtomicBool = AtomicBool::new(false);

/// Reads the fault report region with CPU loads and hands the parsed report to `check`.
pub fn with_report(tree: &Tree, check: impl FnOnce(&Report) -> Outcome) -> Outcome {
    let region = report_region(tree)?;
    assert!(
        !REPORT_BUSY.swap(true, Ordering::SeqCst),
        "with_report is not reentrant"
    );
    let len = (region.size as usize).min(64 * 1024);
    for i in 0..len {
        // SAFETY: the report region is host RAM the crash-mode stage 2 maps read-only; byte loads.
        let b = unsafe { ((region.base + i as u64) as *const u8).read_volatile() };
        REPORT_COPY.set(i, b);
    }
    // SAFETY: REPORT_COPY is a static only this function writes, guarded by REPORT_BUSY for the
    // borrow's lifetime (the closure's run).
    let bytes = unsafe { core::slice::from_raw_parts(REPORT_COPY.addr() as *const u8, len) };
    let result = match report::text_of(bytes) {
        Err(e) => Err(Failure::new(format_args!(
            "the fault report at {:#x}: {e}",
            region.base
        ))),
        Ok(text) => match Report::parse(text) {
            Err(e) => {
                println!("B: the fault report as read:\n{text}");
                Err(Failure::new(format_args!(
                    "the fault report at {:#x} does not parse: {e}",
                    region.base
                )))
            }
            Ok(r) => check(&r),
        },
    };
    REPORT_BUSY.store(false, Ordering::SeqCst);
    result
}

/// Prints the report region as text.
pub fn print_report(tree: &Tree) -> Outcome {
    let region = report_region(tree)?;
    println!("B: the fault report at {:#x}:", region.base);
    let mut line = [0u8; 160];
    let mut n = 0;
    for i in 0..region.size.min(64 * 1024) {
        // SAFETY: as in `with_report`.
        let b = unsafe { ((region.base + i) as *const u8).read_volatile() };
        if b == 0 {
            break;
        }
        if b == b'\n' || n == line.len() {
            println!(
                "  | {}",
                core::str::from_utf8(&line[..n]).unwrap_or("<not ASCII>")
            );
            n = 0;
            if b == b'\n' {
                continue;
            }
        }
        line[n] = b;
        n += 1;
    }
    Ok(())
}

/// The report as the fence left it: header, `state: fenced`, the window and stream count as
/// TEST_MODE says, each of the dead kernel's StreamIDs in `live-streams:`, and a `fault:` line per
/// StreamID that agrees with what PORTCULLIS_TEST_FAULTS says. Also read-only for B.
pub fn check_report(tree: &Tree, dead: &DeadKernel, mode: &FenceMode, when: &str) -> Outcome {
    print_report(tree)?;
    // The hook first: it drains Portcullis' queue and refreshes the report.
    let mut hooks_say = [None; MAX_EDUS];
    for (i, e) in dead.edus.iter().enumerate() {
        if let Some(e) = e {
            hooks_say[i] = Some(faults_now(e.sid)?);
        }
    }
    with_report(tree, |r| {
        check!(
            r.state == "fenced",
            "the fault report says state: {} {when}, want fenced",
            r.state
        );
        check!(
            r.fence_window_ns == mode.window_ns && r.streams_terminated == mode.streams_terminated,
            "the fault report says fence-window-ns {} streams-terminated {} {when}; \
             PORTCULLIS_TEST_MODE says {} and {}",
            r.fence_window_ns,
            r.streams_terminated,
            mode.window_ns,
            mode.streams_terminated
        );
        check!(
            r.streams_terminated > 0 && r.fence_commands > 0,
            "the fault report says streams-terminated {} fence-commands {} {when}",
            r.streams_terminated,
            r.fence_commands
        );
        let mut sum = 0;
        for (i, e) in dead.edus.iter().enumerate() {
            let Some(e) = e else { continue };
            check!(
                r.lists_live(e.sid),
                "the fault report's live-streams: lacks SID {:#06x} (edu {}, live in the dead \
                 kernel with DMA in flight) {when}",
                e.sid,
                e.function.bdf
            );
            let Some(f) = r.fault_for(e.sid) else {
                return Err(Failure::new(format_args!(
                    "the fault report has no fault: line for sid={:#06x} (edu {}) {when}",
                    e.sid, e.function.bdf
                )));
            };
            let hook = hooks_say[i].unwrap_or(hooks::Faults {
                count: 0,
                last_addr: 0,
                last_type: 0,
                last_was_write: false,
            });
            let bdf = Text::<16>::of(format_args!("{}", e.function.bdf));
            check!(
                f.bdf == Some(bdf.as_str()),
                "the fault report names sid={:#06x} bdf={:?}, want {} {when}",
                e.sid,
                f.bdf,
                bdf.as_str()
            );
            check!(
                f.event == "F_TRANSLATION",
                "the fault report's latest fault for sid={:#06x} is event={} {when}, want \
                 F_TRANSLATION",
                e.sid,
                f.event
            );
            let dir = if hook.last_was_write { "write" } else { "read" };
            check!(
                f.count == hook.count && f.addr == hook.last_addr && f.dir == dir,
                "the fault report says sid={:#06x} addr={:#x} dir={} count={} {when}; \
                 PORTCULLIS_TEST_FAULTS says {:#x} {dir} count {}",
                e.sid,
                f.addr,
                f.dir,
                f.count,
                hook.last_addr,
                hook.count
            );
            check!(
                f.count > e.faults_before,
                "the fault report counts {} faults for sid={:#06x} {when}, no more than before \
                 the crash ({})",
                f.count,
                e.sid,
                e.faults_before
            );
            sum += f.count;
            println!(
                "B: report {when}: sid={:#06x} bdf={} event={} addr={:#x} dir={} count={}",
                f.sid,
                bdf.as_str(),
                f.event,
                f.addr,
                f.dir,
                f.count
            );
        }
        check!(
            r.faults_total >= sum,
            "the fault report's faults-total {} is below the sum of its fault: lines' counts \
             {sum} {when}",
            r.faults_total
        );
        Ok(())
    })?;
    let region = report_region(tree)?;
    // SAFETY: the report region, read-only in crash mode.
    let first = unsafe { read64(region.base) };
    expect_read_only(region.base, first, "the fault report region")
}

// ---------------------------------------------------------------------------------------------
// B's own SMMU.

/// Brings up the emulated SMMU the way a capture kernel does: GBPA = abort (with UPDATE, waited
/// for), CR0 = 0, a new Stream table (level 2 arrays for `sids`, every STE invalid), queues in
/// B's memory (the crash region), queues then SMMUEN enabled, CFGI_ALL + TLBI + CMD_SYNC.
pub fn reset_smmu(tree: &Tree, crash: Reg, sids: &[u32]) -> Result<Smmu, Failure> {
    let frame = smmu_frame(tree)?;
    let smmu = Smmu::probe(frame.base, &SMMU_MEMORY)
        .map_err(|e| smmu_failed(format_args!("B: probing the SMMU"), e))?;
    let gbpa = smmu.read32(reg::GBPA);
    smmu.write32(reg::GBPA, (gbpa & !GBPA_UPDATE) | GBPA_ABORT | GBPA_UPDATE);
    let deadline = Deadline::after_ms(1000).map_err(|e| smmu_failed(format_args!("timing"), e))?;
    loop {
        let g = smmu.read32(reg::GBPA);
        if g & GBPA_UPDATE == 0 {
            check!(
                g & GBPA_ABORT != 0,
                "GBPA reads {g:#x} after ABORT was written with UPDATE"
            );
            break;
        }
        check!(
            !deadline.expired(),
            "GBPA.UPDATE still set 1 s after the write ({g:#x})"
        );
        core::hint::spin_loop();
    }
    smmu.reset(sids[0])
        .map_err(|e| smmu_failed(format_args!("B: resetting the SMMU"), e))?;
    STREAMS.build(sids)?;
    STREAMS.install(&smmu)?;
    for (what, at) in [
        ("Command queue", smmu.own_cmdq_base()),
        ("Event queue", smmu.own_evtq_base()),
        ("Stream table", STREAMS.base()),
    ] {
        let addr = at & !0x1f;
        check!(
            crash.base <= addr && addr < crash.end(),
            "B's {what} at {addr:#x} is not in the crash region"
        );
    }
    println!(
        "B: SMMU reset: GBPA abort, CR0 0 -> {:#x}; Stream table {:#x}, CMDQ {:#x}, EVTQ {:#x} \
         (crash region)",
        smmu.cr0(),
        STREAMS.base(),
        smmu.own_cmdq_base(),
        smmu.own_evtq_base()
    );
    Ok(smmu)
}

/// Most records a [`Tally`] keeps (more are counted).
const TALLY_CAPACITY: usize = 256;
/// Where the [`Tally`] keeps them: a static, not the stack (the payload's stack is 64 KiB).
static TALLY_STORE: Words<{ 4 * TALLY_CAPACITY }> = Words::new();

/// Records from B's Event queue. There is one at a time: a new one starts empty.
#[derive(Debug, Default)]
pub struct Tally {
    len: usize,
    pub total: usize,
    pub overflowed: bool,
}

impl Tally {
    fn push(&mut self, e: &Event) {
        if self.len < TALLY_CAPACITY {
            for (w, v) in e.0.iter().enumerate() {
                TALLY_STORE.set(4 * self.len + w, *v);
            }
            self.len += 1;
        }
        self.total += 1;
    }

    /// The records kept, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        (0..self.len).map(|i| {
            Event([
                TALLY_STORE.get(4 * i),
                TALLY_STORE.get(4 * i + 1),
                TALLY_STORE.get(4 * i + 2),
                TALLY_STORE.get(4 * i + 3),
            ])
        })
    }

    pub fn find(&self, want: impl Fn(&Event) -> bool) -> Option<Event> {
        self.iter().find(|e| want(e))
    }

    pub fn count(&self, want: impl Fn(&Event) -> bool) -> usize {
        self.iter().filter(|e| want(e)).count()
    }
}

/// Drains B's Event queue until quiet, printing (the first few) and keeping every record.
pub fn drain(smmu: &Smmu, tally: &mut Tally, when: &str) -> Outcome {
    let mut printed = 0;
    let d = smmu
        .drain_until_quiet(|e| {
            if printed < 24 {
                println!("  B event ({when}): {e}");
            }
            printed += 1;
            tally.push(e);
        })
        .map_err(|e| smmu_failed(format_args!("draining B's Event queue {when}"), e))?;
    if printed > 24 {
        println!("  ... {} more ({when})", printed - 24);
    }
    tally.overflowed |= d.overflowed;
    println!(
        "B: {} record(s) in B's Event queue {when}{}",
        d.records,
        if d.overflowed { " (overflowed)" } else { "" }
    );
    Ok(())
}

/// A terminated stream's record of a write to `addr`: F_TRANSLATION, stage 2, CLASS IN,
/// InputAddr `addr` (A's IOVA, untranslated since the terminating STE has no stage 1) and IPA
/// its page.
pub fn is_terminated_write(e: &Event, sid: u32, addr: core::ops::Range<u64>) -> bool {
    e.kind() == evt::F_TRANSLATION
        && e.sid() == sid
        && e.stage2()
        && e.class() == evt::CLASS_IN
        && !e.is_read()
        && addr.contains(&e.input_addr())
        && e.ipa() == e.input_addr() & !(PAGE - 1)
}

/// The in-flight DMA's refusal, forwarded into B's Event queue.
pub fn expect_forwarded_in_flight(tally: &Tally, e: &DeadEdu) -> Outcome {
    let range = e.in_flight..e.in_flight + e.in_flight_len;
    let found = tally.find(|r| is_terminated_write(r, e.sid, range.clone()));
    let any = tally.count(|r| r.sid() == e.sid);
    check!(
        found.is_some(),
        "B's Event queue, once enabled, lacks the refusal of edu {}'s in-flight DMA (SID {:#x}, \
         write to IOVA {:#x}+{:#x}; want F_TRANSLATION S2 CLASS=IN, InputAddr = IPA = the IOVA): \
         {any} record(s) for the SID, {} in all",
        e.function.bdf,
        e.sid,
        e.in_flight,
        e.in_flight_len,
        tally.total
    );
    println!(
        "B: forwarded: {} (A's IOVA as InputAddr and, untranslated, as IPA)",
        found.unwrap_or_default()
    );
    Ok(())
}

/// Gives edu `e` B's own stage 1: IOVA_B page 0 -> B's staging page, page 1 -> A's buffer (in
/// A's memory: the crash-mode DMA policy maps only the crash region), page 2 -> B's readback page.
pub fn configure_own_stage1(smmu: &Smmu, i: usize, e: &DeadEdu) -> Outcome {
    let t = &TABLES[i];
    t.init(IOVA_B, ASID_B, smmu.features.oas);
    t.map(IOVA_B, STAGING[i].addr());
    t.map(IOVA_B + PAGE, e.target);
    t.map(IOVA_B + 2 * PAGE, READBACK.addr());
    STREAMS.configure(smmu, e.sid, &Ste::stage1(t.cd_addr()), ASID_B)?;
    println!(
        "B: edu {} SID {:#x}: B's stage 1, CD {:#x}: IOVA {IOVA_B:#x} -> {:#x}, {:#x} -> {:#x} \
         (A's buffer), {:#x} -> {:#x}",
        e.function.bdf,
        e.sid,
        t.cd_addr(),
        STAGING[i].addr(),
        IOVA_B + PAGE,
        e.target,
        IOVA_B + 2 * PAGE,
        READBACK.addr()
    );
    Ok(())
}

/// With B's stage 1 in place: the edu's buffer got nothing from the read kick, B's own DMA works,
/// and the mapping onto A's buffer is refused and recorded (also in B's Event queue: S2 = 1,
/// InputAddr B's IOVA, IPA A's page).
pub fn check_own_dma(
    smmu: &Smmu,
    tally: &mut Tally,
    i: usize,
    e: &DeadEdu,
    edu: &Edu,
    bystander: Option<u32>,
) -> Outcome {
    // What the read kick left in the edu's buffer: A's old pattern or zeros, never A's bytes.
    READBACK.fill(|_| READBACK_FILL);
    edu.from_device(IOVA_B + 2 * PAGE, BUFFER_SIZE)
        .map_err(|err| {
            dma_failed(
                format_args!("B: reading edu {}'s buffer", e.function.bdf),
                err,
            )
        })?;
    let (_, offset) = read_kick(e);
    let a_bytes = |k: usize| memory_pattern(e.staging + 0x100 + k as u64);
    let leaked = (0..PROBE).all(|k| READBACK.get(offset + k) == a_bytes(k));
    check!(
        !leaked,
        "edu {}'s read of A's staging page through A's IOVA after the fence got A's bytes",
        e.function.bdf
    );
    let kept = (0..PROBE).all(|k| {
        let b = READBACK.get(offset + k);
        b == device_pattern(e.seed, offset + k) || b == 0
    });
    check!(
        kept,
        "edu {}'s buffer at {offset:#x} holds {:#x?} after the refused read: neither its old \
         pattern nor zeros",
        e.function.bdf,
        [
            READBACK.get(offset),
            READBACK.get(offset + 1),
            READBACK.get(offset + 2),
            READBACK.get(offset + 3)
        ]
    );
    let untouched = READBACK.mismatch(0..offset, |k| device_pattern(e.seed, k));
    check!(
        untouched.is_none(),
        "edu {}'s buffer byte {:#x} is {:#x}, not what A loaded ({:#x})",
        e.function.bdf,
        untouched.map_or(0, |u| u.0),
        untouched.map_or(0, |u| u.1),
        untouched.map_or(0, |u| u.2)
    );

    // B's own DMA, through B's IOVAs into the crash region.
    STAGING[i].fill(|k| device_pattern(0x50, k));
    edu.to_device(IOVA_B, BUFFER_SIZE)
        .map_err(|err| dma_failed(format_args!("B: RAM->device from {IOVA_B:#x}"), err))?;
    READBACK.fill(|_| READBACK_FILL);
    edu.from_device(IOVA_B + 2 * PAGE, BUFFER_SIZE)
        .map_err(|err| {
            dma_failed(
                format_args!("B: device->RAM to {:#x}", IOVA_B + 2 * PAGE),
                err,
            )
        })?;
    let bad = READBACK.mismatch(0..BUFFER_SIZE, |k| device_pattern(0x50, k));
    check!(
        bad.is_none(),
        "B's DMA through its own stage 1 into the crash region does not work: byte {:#x} is \
         {:#x}, want {:#x}",
        bad.map_or(0, |b| b.0),
        bad.map_or(0, |b| b.1),
        bad.map_or(0, |b| b.2)
    );
    println!(
        "B: edu {}: DMA through B's IOVAs into the crash region works",
        e.function.bdf
    );

    // A mapping onto A's memory: refused by the crash-mode DMA policy, and recorded.
    let iova = IOVA_B + PAGE + 0x10;
    kick_write(
        edu,
        e.sid,
        iova,
        e.target,
        bystander,
        "B's IOVA mapped onto A's buffer",
    )?;
    let iova_read = IOVA_B + PAGE + 0x20;
    kick_read(
        edu,
        e.sid,
        iova_read,
        0x200,
        "B's IOVA mapped onto A's buffer",
    )?;
    READBACK.fill(|_| READBACK_FILL);
    edu.from_device_at(IOVA_B + 2 * PAGE + 0x200, 0x200, PROBE)
        .map_err(|err| {
            dma_failed(
                format_args!("B: reading edu {}'s buffer", e.function.bdf),
                err,
            )
        })?;
    let leaked =
        (0..PROBE).all(|k| READBACK.get(0x200 + k) == memory_pattern(e.target + 0x20 + k as u64));
    check!(
        !leaked,
        "edu {}'s read through B's IOVA {iova_read:#x} (mapped onto A's buffer) got A's bytes",
        e.function.bdf
    );
    drain(smmu, tally, "after B's DMA onto A's buffer")?;
    let want = |r: &Event| {
        r.kind() == evt::F_TRANSLATION
            && r.sid() == e.sid
            && r.stage2()
            && r.class() == evt::CLASS_IN
            && !r.is_read()
            && r.input_addr() == iova
            && r.ipa() == e.target
    };
    // Portcullis' stage 2 refused it: its record, not the host's. Portcullis forwards it to the
    // capture kernel along with the fence's records, or keeps it; either is allowed.
    match tally.find(want) {
        Some(r) => println!("B: in B's Event queue: {r} (B's IOVA as InputAddr, A's page as IPA)"),
        None => println!(
            "B: the refusal of B's IOVA {iova:#x} (stage 2, IPA {:#x}) is not in B's Event queue \
             (kept by Portcullis)",
            e.target
        ),
    }
    Ok(())
}

/// A device -> RAM transfer by `edu` into B's crash-region probe page (by physical address, at
/// `offset`): a stream the fence keeps terminated must not reach it (the crash-mode DMA policy
/// would map it), and the refusal is recorded for `sid` (not for `bystander`).
pub fn kick_crash_page(
    edu: &Edu,
    sid: u32,
    offset: u64,
    bystander: Option<u32>,
    what: &str,
) -> Outcome {
    let page = fresh_crash_page();
    kick_write(edu, sid, page + offset, page, bystander, what)
}

/// B's crash-region probe page, refilled with [`memory_pattern`]: its address.
pub fn fresh_crash_page() -> u64 {
    // SAFETY: B's own page in the crash region.
    unsafe { fill_memory(PROBE_PAGE.addr(), PAGE) };
    PROBE_PAGE.addr()
}

/// Writes the STE of `sid` in B's Stream table and makes it take effect.
pub fn configure_stream(smmu: &Smmu, sid: u32, new: &Ste) -> Outcome {
    STREAMS.configure(smmu, sid, new, 0)
}

/// B's driver for the emulated SMMU, with its memory in B's image (the crash region), without
/// touching the SMMU.
pub fn probe_smmu(tree: &Tree) -> Result<Smmu, Failure> {
    let frame = smmu_frame(tree)?;
    Smmu::probe(frame.base, &SMMU_MEMORY)
        .map_err(|e| smmu_failed(format_args!("B: probing the SMMU"), e))
}

/// Reads the STE A wrote for `sid` in A's Stream table (A's memory: CPU loads).
pub fn read_dead_ste(dead: &DeadKernel, sid: u32) -> Result<Ste, Failure> {
    let base = strtab::BASE_ADDR.addr(dead.smmu.strtab_base);
    // SAFETY: A's Stream table, in A's memory: readable in crash mode.
    let l1 = unsafe { read64(base + u64::from(sid >> SPLIT) * 8) };
    let span = ste::L1_SPAN.get(l1);
    let l2 = ste::L1_L2PTR.addr(l1);
    check!(
        span == u64::from(SPLIT) + 1 && l2 != 0,
        "A's level 1 descriptor for SID {sid:#x} reads {l1:#x}"
    );
    let at = l2 + u64::from(sid & ((1 << SPLIT) - 1)) * STE_WORDS as u64 * 8;
    let mut words = [0u64; STE_WORDS];
    for (k, w) in words.iter_mut().enumerate() {
        // SAFETY: as above.
        *w = unsafe { read64(at + 8 * k as u64) };
    }
    Ok(Ste(words))
}
