//! The crash fence: the portable policy of ARCHITECTURE.md "The kexec trap and the fence" and
//! "Fault forwarding". The arch layer does what this module decides:
//!
//! 1. **The kexec trap.** [`classify_instruction_abort`] tells whether a stage-2 instruction abort
//!    is the kexec event (a fetch from the execute-never crash region in normal mode) or the host's
//!    own fault.
//! 2. **The fence, in place.** The normal DMA stage 2 (sized by [`dma_ipa_bits`] so that few
//!    top-level entries cover host RAM) has its valid top-level entries made invalid
//!    ([`Stage2Table::invalidate_top`](crate::stage2::Stage2Table::invalidate_top)), then [`in_place_commands`] and one CMD_SYNC: no STE and no
//!    register changes. The window is measured in counter ticks and converted with
//!    [`ticks_to_ns`]. (The first version switched to a Stream table prepared at boot with SMMUEN
//!    off; it left an interval in which DMA was aborted without a record, and is gone.)
//! 3. **After the fence.** [`should_lift`] decides whether a stream may leave the fence when the
//!    capture kernel configures it, [`from_capture_table`] (with [`host_ste_location`]) whether the
//!    STE comes from a Stream table the capture kernel set up after the fence.
//! 4. **The fault report.** [`render_report`] writes the text the capture kernel and its user
//!    space read, in a fixed format other tools parse.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write};

use platform::addr::PhysRange;

use crate::smmu::cmd::Command;
use crate::smmu::event::EventId;
use crate::smmu::faults::{FaultBook, StreamFaultStats};
use crate::smmu::ste::{
    L1Std, STE_SIZE, Ste, SteLocation, StreamConfig, StreamTableFormat, StreamTableLayout,
};
use crate::smmu::{Ipa, Pa, StreamId};
use crate::trap::esr::FaultStatus;

pub use crate::stage2::Mode;

/// What a stage-2 instruction abort from the host means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KexecTrap {
    /// The capture kernel's entry path fetched its first instruction: raise the fence, then
    /// resume it where it trapped.
    Fence,
    /// Not the kexec event: the host's own fault, handled as any other stage-2 abort.
    NotOurs,
}

/// Classifies a stage-2 instruction abort at `ipa` with fault status `fault`.
///
/// In normal mode the crash region is the only host memory mapped execute-never, and nothing
/// runs there but the capture kernel's entry path (purgatory, relocation code, the kernel), so a
/// *permission* fault on a fetch from it is the kexec event. Anything else — another kind of fault
/// (a translation fault there is a broken stage 2, not a kexec), another address, or anything at
/// all in crash mode (where the region is executable and the fence already up) — is
/// [`KexecTrap::NotOurs`]. Host RAM is mapped identically (IPA = PA), so the IPA is compared with
/// the region as is.
pub fn classify_instruction_abort(
    ipa: Ipa,
    fault: FaultStatus,
    crash_region: Option<PhysRange>,
    mode: Mode,
) -> KexecTrap {
    match (mode, crash_region, fault) {
        (Mode::Normal, Some(crash), FaultStatus::Permission { .. })
            if crash.contains(Pa(ipa.0)) =>
        {
            KexecTrap::Fence
        }
        _ => KexecTrap::NotOurs,
    }
}

/// The fence as the fault report names it (`state:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReportState {
    /// Normal mode: the kexec trap is set, the fence not raised.
    Armed,
    /// Crash mode: the fence is up.
    Fenced,
}

impl ReportState {
    /// The report's spelling (`state: armed|fenced`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Armed => "armed",
            Self::Fenced => "fenced",
        }
    }
}

impl From<Mode> for ReportState {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Normal => Self::Armed,
            Mode::Crash => Self::Fenced,
        }
    }
}

impl fmt::Display for ReportState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The most top-level entries the in-place DMA fence may have to make invalid with a walk that
/// starts at level 1 (one entry per 1 GiB holding host RAM or an ITS doorbell): a fixed handful
/// of stores, well under the fence's other costs.
pub const DMA_FENCE_MAX_LEVEL1_STORES: usize = 16;

/// The IPA size of the normal DMA stage 2. Every IOTLB miss of a device walks the host's stage 1
/// and then this stage 2 for the output address, so each level it skips is one descriptor read
/// fewer per miss; and the fence makes its valid top-level entries invalid, one store each.
///
/// - A walk starting at level 1 (IPA size below 44 bits: the host's own, capped by what the
///   SMMU takes; 40..=43 bits with a concatenated root) when the DMA-mapped ranges (`mapped`: RAM
///   and doorbells, which is all the policy maps) touch at most [`DMA_FENCE_MAX_LEVEL1_STORES`]
///   1 GiB slots: one level fewer per walk than a level-0 start, for a few more fence stores.
/// - Otherwise 44 bits when the SMMU allows it (and the host's IPA space is no larger): the walk
///   starts at level 0 and each top-level entry covers 512 GiB, so host RAM below 512 GiB and the
///   doorbells take one store at the fence. Else the host's size, capped by what the SMMU takes.
///
/// A larger IPA space than the mapped ranges need makes nothing else reachable.
pub fn dma_ipa_bits(host_ipa_bits: u32, smmu_ias_bits: u32, mapped: &[PhysRange]) -> u32 {
    const LEVEL0_BITS: u32 = 44;
    let level1 = host_ipa_bits.min(smmu_ias_bits).min(48);
    if level1 < LEVEL0_BITS && gib_slots(mapped) <= DMA_FENCE_MAX_LEVEL1_STORES {
        return level1;
    }
    host_ipa_bits.max(LEVEL0_BITS).min(smmu_ias_bits).min(48)
}

/// How many distinct 1 GiB-aligned slots the non-empty `ranges` touch (what a level-1 root needs
/// valid entries for), saturating.
pub fn gib_slots(ranges: &[PhysRange]) -> usize {
    const GIB_SHIFT: u32 = 30;
    let mut slots: Vec<(u64, u64)> = ranges
        .iter()
        .filter(|r| r.end.0 > r.start.0)
        .map(|r| (r.start.0 >> GIB_SHIFT, (r.end.0 - 1) >> GIB_SHIFT))
        .collect();
    slots.sort_unstable();
    let mut count: u64 = 0;
    let mut next = 0; // the first slot not counted yet
    for (first, last) in slots {
        let first = first.max(next);
        if first <= last {
            count = count.saturating_add(last - first + 1);
            next = last + 1;
        }
    }
    usize::try_from(count).unwrap_or(usize::MAX)
}

/// The commands of the in-place DMA fence, issued once the normal DMA stage 2's valid top-level
/// entries have been made invalid ([`Stage2Table::invalidate_top`](crate::stage2::Stage2Table::invalidate_top)); the driver's CMD_SYNC closes
/// them. CMD_CFGI_ALL drops every cached STE and CD (a nested stream's CD is then fetched again,
/// through the fenced stage 2, and refused with a record); CMD_TLBI_S12_VMALL drops every TLB and
/// walk-cache entry of the normal DMA stage 2's VMID. No STE and no register changes: three
/// commands with the CMD_SYNC, whatever the number of streams. No CMD_ATC_INV: no physical STE
/// enables ATS (the emulated SMMU offers none, so every composed STE has EATS = 0), so no device
/// holds translations of its own.
pub fn in_place_commands(normal_vmid: u16) -> [Command; 2] {
    [
        Command::CfgiAll,
        Command::TlbiS12Vmall { vmid: normal_vmid },
    ]
}

/// Whether the physical STE `new_ste`, composed for the capture kernel's configuration of stream
/// `sid`, may replace the terminate stage 2 the fence gave it. `fenced` is whether the dead
/// kernel had the stream live when the fence went up. When this says no, the caller keeps
/// (writes) the terminate STE instead.
///
/// - An STE without Portcullis' stage 2 (bypass, stage 1 only) is never acceptable, fenced or
///   not: no composition produces one.
/// - An STE that lets nothing through (abort, invalid) is acceptable for a stream the dead kernel
///   did not have. For a fenced stream the terminate STE already lets nothing through *and*
///   records every late transaction (an abort STE records nothing, and a capture kernel resetting
///   its SMMU asks for abort on every stream), so it stays.
/// - A nested STE (the capture kernel's stage 1 over the crash-mode DMA policy) lifts the fence:
///   the capture kernel has taken the device over with its own page tables, so an address the
///   dead kernel gave the device means nothing any more unless the new tables map it.
/// - A stage-2-only STE (what a host *bypass* STE becomes) lifts it only for a stream the dead
///   kernel did not have. For a fenced stream it never does: the dead kernel's device may still
///   be DMAing (nothing stopped it but the fence), and in bypass its addresses would be taken
///   as IPAs of the crash-mode DMA policy, which maps the crash region read-write: a late write
///   of the dead kernel's device would land in the running capture kernel's memory.
pub fn should_lift(sid: StreamId, new_ste: &Ste, fenced: bool) -> bool {
    let lift = match new_ste.config() {
        StreamConfig::Invalid | StreamConfig::Abort => !fenced,
        StreamConfig::Nested => true,
        StreamConfig::Stage2 => !fenced,
        StreamConfig::Bypass | StreamConfig::Stage1 => false,
    };
    if !lift {
        log::debug!(
            "fence: sid {sid:#x} stays terminated ({:?} requested, fenced: {fenced})",
            new_ste.config()
        );
    }
    lift
}

/// Where the host's STE for one StreamID lies: its L1 descriptor (two-level tables) and the STE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostSteLocation {
    pub l1: Option<Ipa>,
    pub ste: Ipa,
}

/// Where the host's STE for `sid` is, for a host Stream table at `base` with `layout` (the
/// emulated SMMU's `STRTAB_BASE` and `STRTAB_BASE_CFG`), reading an L1 descriptor with `read_l1`.
/// `None` where the host's table has no STE for it (or `read_l1` cannot read).
pub fn host_ste_location(
    base: Ipa,
    layout: &StreamTableLayout,
    sid: StreamId,
    read_l1: impl FnOnce(Ipa) -> Option<u64>,
) -> Option<HostSteLocation> {
    match (layout.locate(sid).ok()?, layout.format) {
        (SteLocation::Linear { offset }, _) => Some(HostSteLocation {
            l1: None,
            ste: base.checked_add(offset)?,
        }),
        (
            SteLocation::TwoLevel {
                l1_offset,
                l2_index,
            },
            StreamTableFormat::TwoLevel { split },
        ) => {
            let l1 = base.checked_add(l1_offset)?;
            let desc = L1Std::<Ipa>::decode(read_l1(l1)?);
            let offset = desc.ste_offset(l2_index, split).ok()?;
            Some(HostSteLocation {
                l1: Some(l1),
                ste: desc.l2_table.checked_add(offset)?,
            })
        }
        (SteLocation::TwoLevel { .. }, StreamTableFormat::Linear) => None,
    }
}

/// Whether an STE that would lift a fenced stream ([`should_lift`]) comes from a Stream table the
/// capture kernel set up after the fence, whatever its base address: `STRTAB_BASE` was written
/// after the fence (`rewritten`), and the STE -- and, for a two-level table, its L1 descriptor --
/// lie wholly in memory only the capture kernel can write (`capture`: the crash region; after the
/// fence the dead kernel's CPUs write nothing and its devices are fenced). A capture kernel that
/// keeps the dead kernel's table, or points at any of it (an L1 descriptor onto the dead kernel's
/// level 2 tables), would otherwise re-enable the dead kernel's stage 1 -- its CDs and page
/// tables -- for the dead kernel's still-running DMA.
pub fn from_capture_table(
    rewritten: bool,
    at: Option<HostSteLocation>,
    capture: &[PhysRange],
) -> bool {
    let inside = |ipa: Ipa, len: u64| {
        PhysRange::new(ipa.0, len)
            .is_some_and(|r| capture.iter().any(|c| c.start <= r.start && r.end <= c.end))
    };
    match at {
        Some(at) if rewritten => {
            inside(at.ste, STE_SIZE as u64) && at.l1.is_none_or(|l1| inside(l1, 8))
        }
        _ => false,
    }
}

/// Nanoseconds for `ticks` of a counter running at `freq_hz` (e.g. `CNTPCT_EL0` at
/// `CNTFRQ_EL0`), rounded down, saturating at `u64::MAX`. A zero frequency (`CNTFRQ_EL0` not
/// programmed) gives `u64::MAX`: the time is unknown, and must not read as no time at all.
pub fn ticks_to_ns(ticks: u64, freq_hz: u64) -> u64 {
    if freq_hz == 0 {
        return u64::MAX;
    }
    let ns = u128::from(ticks) * 1_000_000_000 / u128::from(freq_hz);
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// The first line of every fault report.
pub const REPORT_HEADER: &str = "PORTCULLIS FAULT REPORT v1";

/// Largest fault report, in bytes.
pub const MAX_REPORT_BYTES: usize = 64 * 1024;

/// Most bytes of a `bdf=` value.
pub const MAX_BDF_TEXT: usize = 32;

/// Largest `live-streams:` line, newline included: about 4,600 StreamIDs. Longer lists end with
/// a `truncated=<N>` token counting the StreamIDs left out.
pub const MAX_LIVE_STREAMS_LINE: usize = 32 * 1024;

/// Where the report's fault numbers come from: a [`FaultBook`], or [`FaultTotals`] given
/// directly.
pub trait FaultSource: fmt::Debug {
    /// `faults-total`: every fault counted.
    fn total(&self) -> u64;
    /// `faults-overflowed`: faults that could not be kept.
    fn overflowed(&self) -> u64;
    /// The streams with faults (`count > 0`), in report order.
    fn streams(&self) -> Vec<(StreamId, StreamFaultStats)>;
}

/// `faults-total` is every fault the per-stream counters counted; `faults-overflowed` the
/// records the ring refused plus one per Event queue overflow the SMMU reported (each discarded
/// at least one record, and how many is unknowable). Fault lines by StreamID; faults of the
/// "other streams" bucket have no StreamID and no line, they are in the total.
impl FaultSource for FaultBook {
    fn total(&self) -> u64 {
        self.streams.total()
    }

    fn overflowed(&self) -> u64 {
        self.ring
            .overflowed()
            .saturating_add(self.ring.hardware_overflows())
    }

    fn streams(&self) -> Vec<(StreamId, StreamFaultStats)> {
        self.streams
            .iter()
            .filter(|(_, s)| s.count > 0)
            .map(|(sid, s)| (sid, *s))
            .collect()
    }
}

/// Fault numbers given directly; fault lines in the order of `streams`.
#[derive(Clone, Copy, Debug)]
pub struct FaultTotals<'a> {
    pub total: u64,
    pub overflowed: u64,
    pub streams: &'a [(StreamId, StreamFaultStats)],
}

impl FaultSource for FaultTotals<'_> {
    fn total(&self) -> u64 {
        self.total
    }

    fn overflowed(&self) -> u64 {
        self.overflowed
    }

    fn streams(&self) -> Vec<(StreamId, StreamFaultStats)> {
        self.streams
            .iter()
            .filter(|(_, s)| s.count > 0)
            .copied()
            .collect()
    }
}

/// Everything [`render_report`] needs.
pub struct ReportInput<'a> {
    /// How many times the report was written before, plus one (`generation:` at the top and
    /// `generation-end:` at the bottom): a reader that finds the two different read the text while
    /// Portcullis rewrote it, and reads it again.
    pub generation: u64,
    pub state: ReportState,
    /// The fence window ([`ticks_to_ns`] of the driver's `window_ticks`).
    pub window_ns: u64,
    /// SMMU commands the fence issued (CMD_SYNC included).
    pub commands: u64,
    /// Translation-table descriptor stores of the fence, DMA and CPU side (`fence-stores:`).
    pub stores: u64,
    /// From the trap to the completed CPU side (`fence-cpu-window-ns:`).
    pub cpu_window_ns: u64,
    /// Streams the fence cut off.
    pub streams_terminated: u64,
    /// StreamIDs for `live-streams:` (e.g. the emulation's `live_streams()`), in any order: the
    /// report sorts them.
    pub live_streams: &'a [StreamId],
    /// The dead kernel's GIC LPI tables the capture kernel keeps writing (crash mode), in any
    /// order: the report sorts them. Empty: no `lpi-tables:` line.
    pub lpi_tables: &'a [PhysRange],
    /// A `&FaultBook` (or [`FaultTotals`]).
    pub faults: &'a dyn FaultSource,
    /// The PCI function behind a StreamID as text (e.g. `PciHost::bdf_for_stream` formatted:
    /// `00:01.0`), `None` if unknown. The report keeps at most [`MAX_BDF_TEXT`] bytes of it and
    /// replaces any byte other than ASCII letters, digits, `:`, `.`, `_` and `-` by `_`, so the
    /// text cannot break the line format.
    pub bdf: &'a dyn Fn(StreamId) -> Option<String>,
}

impl fmt::Debug for ReportInput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReportInput")
            .field("generation", &self.generation)
            .field("state", &self.state)
            .field("window_ns", &self.window_ns)
            .field("commands", &self.commands)
            .field("stores", &self.stores)
            .field("cpu_window_ns", &self.cpu_window_ns)
            .field("streams_terminated", &self.streams_terminated)
            .field("live_streams", &self.live_streams.len())
            .field("lpi_tables", &self.lpi_tables.len())
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

/// Renders the fault report, at most [`MAX_REPORT_BYTES`] bytes of ASCII:
///
/// ```text
/// PORTCULLIS FAULT REPORT v1
/// generation: <N>
/// state: armed|fenced
/// fence-window-ns: <N>
/// fence-commands: <N>
/// streams-terminated: <N>
/// fence-stores: <N>
/// fence-cpu-window-ns: <N>
/// live-streams: <sid> <sid> ...
/// lpi-tables: 0x<start>-0x<end> ...
/// faults-total: <N>
/// faults-overflowed: <N>
/// fault: sid=0x0008 bdf=00:01.0 event=F_TRANSLATION addr=0x7e001000 dir=write count=<N> writes=<N>
/// ...
/// generation-end: <N>
/// end
/// ```
///
/// - `generation:` and `generation-end:` carry the same number, one more at every rewrite: the
///   writer stores the text front to back with a barrier after the first two lines and before the
///   closing ones, so a reader that finds them equal read one whole report.
/// - In state `armed` the fence numbers are 0, whatever the input says.
/// - `live-streams:` lists the StreamIDs sorted, without duplicates, as `0x%04x`, each after one
///   space (no StreamIDs: `live-streams:` alone). Beyond [`MAX_LIVE_STREAMS_LINE`] the list
///   stops at the highest StreamID that fits and ends with the token `truncated=<N>`.
/// - `lpi-tables:` only when the fence kept GIC LPI tables writable in the dump: each
///   `[start, end)` in hex, sorted, after one space; beyond [`MAX_LPI_TABLES`] the token
///   `truncated=<N>` counts the tables left out.
/// - One `fault:` line per stream with faults: the latest fault's address and direction, the
///   number of faults and, of those, the refused writes. `bdf=-` when the function is unknown (or its text empty); `event=` is the
///   event's name as `smmu::event` spells it (`0x%02x` for a Reserved number); `dir=-` for
///   events without an access (configuration errors, fetch aborts).
/// - When the fault lines would not fit, the last lines are dropped and `truncated: <N> more`
///   (N = the lines dropped) comes before `end`.
pub fn render_report(input: &ReportInput<'_>) -> String {
    let mut out = String::new();
    // Writing to a `String` cannot fail, nor can the `Display` implementations used here.
    let _ = render_into(&mut out, input);
    out
}

/// Where the writer of the first `len` bytes of a rendered report puts its barriers: `[first,
/// closing]`, byte offsets into `text` with `first <= closing <= len`. The writer stores
/// `[0, first)` (the header and `generation:`), then `[first, closing)` (the body), then the rest
/// (`generation-end:`, `end`, and the padding over a longer previous report), each visible before
/// the next starts: a reader that finds both generations equal read one whole report.
pub fn report_write_steps(text: &str, len: usize) -> [usize; 2] {
    let first = text.find("\nstate:").map_or(len, |i| i + 1).min(len);
    let closing = text
        .rfind("generation-end:")
        .unwrap_or(len)
        .clamp(first, len);
    [first, closing]
}

/// The closing lines: `generation-end: <u64>\n` and `end\n`.
const END_LINES: usize = "generation-end: ".len() + 20 + 1 + "end\n".len();
/// Room kept for `truncated: <u64> more\n` and the closing lines.
const TAIL_RESERVE: usize = "truncated: ".len() + 20 + " more\n".len() + END_LINES;
/// Room kept in the `live-streams:` line for ` truncated=<u64>` and the newline.
const LIVE_TAIL_RESERVE: usize = " truncated=".len() + 20 + 1;

fn render_into(out: &mut String, input: &ReportInput<'_>) -> fmt::Result {
    let fenced = input.state == ReportState::Fenced;
    let fence_value = |v: u64| if fenced { v } else { 0 };
    writeln!(out, "{REPORT_HEADER}")?;
    writeln!(out, "generation: {}", input.generation)?;
    writeln!(out, "state: {}", input.state)?;
    writeln!(out, "fence-window-ns: {}", fence_value(input.window_ns))?;
    writeln!(out, "fence-commands: {}", fence_value(input.commands))?;
    writeln!(
        out,
        "streams-terminated: {}",
        fence_value(input.streams_terminated)
    )?;
    // Added after v1's first readers: they read by key, or skip lines they do not know.
    writeln!(out, "fence-stores: {}", fence_value(input.stores))?;
    writeln!(
        out,
        "fence-cpu-window-ns: {}",
        fence_value(input.cpu_window_ns)
    )?;
    write_live_streams(out, input.live_streams)?;
    write_lpi_tables(out, input.lpi_tables)?;
    writeln!(out, "faults-total: {}", input.faults.total())?;
    writeln!(out, "faults-overflowed: {}", input.faults.overflowed())?;

    let streams = input.faults.streams();
    let bdfs: Vec<Option<String>> = streams.iter().map(|&(sid, _)| (input.bdf)(sid)).collect();
    let line_len = |i: usize| {
        let mut n = Counter(0);
        let _ = write_fault_line(&mut n, streams[i].0, &streams[i].1, bdfs[i].as_deref());
        n.0
    };
    let all: usize = (0..streams.len()).map(line_len).sum();
    let fits_all = out.len() + all + END_LINES <= MAX_REPORT_BYTES;
    let mut written = 0;
    for (i, (sid, stats)) in streams.iter().enumerate() {
        if !fits_all && out.len() + line_len(i) + TAIL_RESERVE > MAX_REPORT_BYTES {
            break;
        }
        write_fault_line(out, *sid, stats, bdfs[i].as_deref())?;
        written += 1;
    }
    if written < streams.len() {
        writeln!(out, "truncated: {} more", streams.len() - written)?;
    }
    writeln!(out, "generation-end: {}", input.generation)?;
    writeln!(out, "end")
}

fn write_live_streams(out: &mut String, live: &[StreamId]) -> fmt::Result {
    const PREFIX: &str = "live-streams:";
    let mut sids = live.to_vec();
    sids.sort_unstable();
    sids.dedup();
    let token_len = |sid: StreamId| {
        let mut n = Counter(0);
        let _ = write!(n, " {sid:#06x}");
        n.0
    };
    let all = PREFIX.len() + sids.iter().map(|&s| token_len(s)).sum::<usize>() + 1;
    out.push_str(PREFIX);
    let mut len = PREFIX.len();
    for (i, &sid) in sids.iter().enumerate() {
        let token = token_len(sid);
        if all > MAX_LIVE_STREAMS_LINE && len + token + LIVE_TAIL_RESERVE > MAX_LIVE_STREAMS_LINE {
            write!(out, " truncated={}", sids.len() - i)?;
            break;
        }
        write!(out, " {sid:#06x}")?;
        len += token;
    }
    out.push('\n');
    Ok(())
}

/// Most ranges on the `lpi-tables:` line (two per redistributor: 64 redistributors).
pub const MAX_LPI_TABLES: usize = 128;
/// The longest `lpi-tables:` line, newline included.
pub const MAX_LPI_TABLES_LINE: usize =
    "lpi-tables:".len() + MAX_LPI_TABLES * (2 * 18 + 2) + LIVE_TAIL_RESERVE;

fn write_lpi_tables(out: &mut String, tables: &[PhysRange]) -> fmt::Result {
    if tables.is_empty() {
        return Ok(());
    }
    let mut sorted = tables.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    out.push_str("lpi-tables:");
    for t in sorted.iter().take(MAX_LPI_TABLES) {
        write!(out, " {:#x}-{:#x}", t.start.raw(), t.end.raw())?;
    }
    if sorted.len() > MAX_LPI_TABLES {
        write!(out, " truncated={}", sorted.len() - MAX_LPI_TABLES)?;
    }
    out.push('\n');
    Ok(())
}

fn write_fault_line(
    out: &mut impl Write,
    sid: StreamId,
    stats: &StreamFaultStats,
    bdf: Option<&str>,
) -> fmt::Result {
    write!(out, "fault: sid={sid:#06x} bdf=")?;
    match bdf.filter(|b| !b.is_empty()) {
        Some(text) => {
            for c in text.chars().take(MAX_BDF_TEXT) {
                let safe = c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '_' | '-');
                out.write_char(if safe { c } else { '_' })?;
            }
        }
        None => out.write_char('-')?,
    }
    let event = stats.last_event;
    match event.name() {
        Some(_) => write!(out, " event={event}")?,
        None => write!(out, " event={:#04x}", event.0)?,
    }
    let dir = match (has_direction(event), stats.last_write) {
        (false, _) => "-",
        (true, true) => "write",
        (true, false) => "read",
    };
    writeln!(
        out,
        " addr={:#x} dir={dir} count={} writes={}",
        stats.last_addr, stats.count, stats.writes
    )
}

/// Whether records of `event` carry the direction of an access (the events
/// [`FaultRecord::from_event`](crate::smmu::faults::FaultRecord::from_event) takes it from).
fn has_direction(event: EventId) -> bool {
    matches!(
        event,
        EventId::F_UUT
            | EventId::F_TRANSL_FORBIDDEN
            | EventId::F_WALK_EABT
            | EventId::F_TRANSLATION
            | EventId::F_ADDR_SIZE
            | EventId::F_ACCESS
            | EventId::F_PERMISSION
            | EventId::F_TLB_CONFLICT
    )
}

/// Counts what would be written.
struct Counter(usize);

impl Write for Counter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

pub mod profile;

#[cfg(test)]
mod inplace_tests;
#[cfg(test)]
mod report_steps_tests;
#[cfg(test)]
mod tests;
