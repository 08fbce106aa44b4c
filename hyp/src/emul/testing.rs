//! Fakes of what the arch layer provides: host memory under a policy that is a set of ranges, and a
//! physical SMMU that records what it is asked and checks it against Portcullis' policy.
//!
//! Used by the unit tests and, with the `testing` feature, by the fuzz targets in `fuzz/`.

use std::boxed::Box;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::format;
use std::ops::Range;
use std::string::String;
use std::vec::Vec;

use crate::emul::{AccessDenied, EmulConfig, EmulatedSmmu, HostMemory, Note, PhysicalSmmu};
use crate::smmu::cmd::Command;
use crate::smmu::queue::QueueIndex;
use crate::smmu::regs::SmmuFeatures;
use crate::smmu::ste::{AttrOverrides, Granule, Stage2Config, Ste, StreamConfig, WalkAttrs};
use crate::smmu::{Ipa, Pa, StreamId};

/// One request to host memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemAccess {
    pub ipa: u64,
    pub len: usize,
    pub write: bool,
    /// Whether the policy allowed it (and so whether memory was touched).
    pub allowed: bool,
}

/// Host memory: sparse 4 KiB pages, and the host's CPU policy as a list of RW ranges.
#[derive(Debug, Default)]
pub struct FakeMemory {
    pub allowed: Vec<Range<u64>>,
    pages: BTreeMap<u64, Box<[u8; 4096]>>,
    pub log: RefCell<Vec<MemAccess>>,
    /// Keep no log (for tests that count the heap the emulation takes).
    pub quiet: bool,
}

impl FakeMemory {
    pub fn new(allowed: Vec<Range<u64>>) -> Self {
        Self {
            allowed,
            ..Self::default()
        }
    }

    fn permits(&self, ipa: u64, len: usize) -> bool {
        let Some(end) = ipa.checked_add(len as u64) else {
            return false;
        };
        self.allowed.iter().any(|r| r.start <= ipa && end <= r.end)
    }

    /// Writes as the host's CPU would (no policy, no log).
    pub fn poke(&mut self, addr: u64, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            let a = addr + i as u64;
            self.pages
                .entry(a >> 12)
                .or_insert_with(|| Box::new([0; 4096]))[(a & 0xfff) as usize] = *b;
        }
    }

    pub fn poke_words(&mut self, addr: u64, words: &[u64]) {
        for (i, w) in words.iter().enumerate() {
            self.poke(addr + 8 * i as u64, &w.to_le_bytes());
        }
    }

    /// Reads as the host's CPU would.
    pub fn peek(&self, addr: u64, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            let a = addr + i as u64;
            *b = self
                .pages
                .get(&(a >> 12))
                .map_or(0, |p| p[(a & 0xfff) as usize]);
        }
    }

    pub fn peek_words<const N: usize>(&self, addr: u64) -> [u64; N] {
        let mut out = [0u64; N];
        for (i, w) in out.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            self.peek(addr + 8 * i as u64, &mut b);
            *w = u64::from_le_bytes(b);
        }
        out
    }

    pub fn accesses(&self) -> Vec<MemAccess> {
        self.log.borrow().clone()
    }

    pub fn clear_log(&self) {
        self.log.borrow_mut().clear();
    }
}

impl HostMemory for FakeMemory {
    fn read(&self, ipa: Ipa, buf: &mut [u8]) -> Result<(), AccessDenied> {
        let allowed = self.permits(ipa.0, buf.len());
        if !self.quiet {
            self.log.borrow_mut().push(MemAccess {
                ipa: ipa.0,
                len: buf.len(),
                write: false,
                allowed,
            });
        }
        if !allowed {
            return Err(AccessDenied { ipa });
        }
        self.peek(ipa.0, buf);
        Ok(())
    }

    fn write(&mut self, ipa: Ipa, bytes: &[u8]) -> Result<(), AccessDenied> {
        let allowed = self.permits(ipa.0, bytes.len());
        if !self.quiet {
            self.log.borrow_mut().push(MemAccess {
                ipa: ipa.0,
                len: bytes.len(),
                write: true,
                allowed,
            });
        }
        if !allowed {
            return Err(AccessDenied { ipa });
        }
        self.poke(ipa.0, bytes);
        Ok(())
    }
}

/// What the physical SMMU was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PhysOp {
    Ste(StreamId, Ste),
    Submit(Vec<Command>),
    Sync,
}

/// A physical SMMU that records every request and checks each STE and command against the live
/// policy.
#[derive(Debug)]
pub struct FakePhys {
    pub policy: Stage2Config,
    pub log: Vec<PhysOp>,
    pub fail_sync: bool,
    pub fail_ste: bool,
    /// Anything Portcullis must never hand the physical SMMU.
    pub violations: Vec<String>,
    /// The most bytes of STEs or commands handed over in one call (what one host batch made
    /// Portcullis materialise at once).
    pub largest_request: usize,
    /// Count STE writes instead of logging them (for tests that count the heap the emulation
    /// takes).
    pub quiet: bool,
    pub stes_written: u64,
    /// What the live DMA policy lets the host's devices write ([`PhysicalSmmu::device_may_write`]):
    /// host RAM minus [`CRASH_REGION`] by default.
    pub dma_writable: Vec<Range<u64>>,
    /// StreamIDs given a slot by [`PhysicalSmmu::cover`], in order.
    pub covered: Vec<StreamId>,
    /// `Some(n)`: `cover` fails once `n` StreamIDs were covered (the physical table's budget).
    pub cover_budget: Option<usize>,
    /// Every [`PhysicalSmmu::set_default`], in order.
    pub defaults: Vec<Option<Ste>>,
    /// [`PhysicalSmmu::submit_synced`] calls: host batches that took the short path
    /// (`emul::fast`). Logged like a `submit` and a `sync`.
    pub short_batches: u64,
}

impl FakePhys {
    pub fn new(policy: Stage2Config) -> Self {
        Self {
            policy,
            log: Vec::new(),
            fail_sync: false,
            fail_ste: false,
            violations: Vec::new(),
            largest_request: 0,
            quiet: false,
            stes_written: 0,
            dma_writable: std::vec![
                HOST_RAM.start..CRASH_REGION.start,
                CRASH_REGION.end..HOST_RAM.end
            ],
            covered: Vec::new(),
            short_batches: 0,
            cover_budget: None,
            defaults: Vec::new(),
        }
    }

    /// The log since the last call.
    pub fn take(&mut self) -> Vec<PhysOp> {
        std::mem::take(&mut self.log)
    }

    fn check_ste(&mut self, sid: StreamId, ste: &Ste) {
        let s2_words = &Ste::stage2(&self.policy, &AttrOverrides::default()).0[2..4];
        let ok = match ste.config() {
            StreamConfig::Abort => *ste == Ste::abort(),
            StreamConfig::Stage2 | StreamConfig::Nested => {
                &ste.0[2..4] == s2_words && ste.0[4..].iter().all(|w| *w == 0)
            }
            StreamConfig::Invalid | StreamConfig::Bypass | StreamConfig::Stage1 => false,
        };
        if !ok {
            self.violations
                .push(format!("STE for {sid:#x} escapes the policy: {ste:?}"));
        }
    }

    fn check_command(&mut self, cmd: &Command) {
        let vmid = self.policy.vmid;
        let ok = match cmd {
            Command::TlbiNhAll { vmid: v }
            | Command::TlbiNhAsid { vmid: v, .. }
            | Command::TlbiNhVa { vmid: v, .. }
            | Command::TlbiNhVaa { vmid: v, .. } => *v == vmid,
            Command::CfgiCd { .. } | Command::CfgiCdAll { .. } => true,
            _ => false,
        };
        if !ok {
            self.violations
                .push(format!("command not for the host to cause: {cmd:?}"));
        }
    }
}

impl PhysicalSmmu for FakePhys {
    type Error = &'static str;

    fn stage2(&self) -> Stage2Config {
        self.policy
    }

    fn write_ste(&mut self, sid: StreamId, ste: &Ste) -> Result<(), Self::Error> {
        self.check_ste(sid, ste);
        if self.fail_ste {
            return Err("STE write refused");
        }
        self.stes_written += 1;
        if self.quiet {
            return Ok(());
        }
        self.log.push(PhysOp::Ste(sid, *ste));
        Ok(())
    }

    fn write_stes(&mut self, stes: &[(StreamId, Ste)]) -> Result<(), Self::Error> {
        self.largest_request = self.largest_request.max(core::mem::size_of_val(stes));
        for (sid, ste) in stes {
            self.write_ste(*sid, ste)?;
        }
        Ok(())
    }

    fn submit(&mut self, cmds: &[Command]) -> Result<(), Self::Error> {
        self.largest_request = self.largest_request.max(core::mem::size_of_val(cmds));
        for cmd in cmds {
            self.check_command(cmd);
        }
        self.log.push(PhysOp::Submit(cmds.to_vec()));
        Ok(())
    }

    fn cover(&mut self, sid: StreamId) -> Result<(), Self::Error> {
        if self.cover_budget.is_some_and(|n| self.covered.len() >= n) {
            return Err("no level 2 table left in the budget");
        }
        self.covered.push(sid);
        Ok(())
    }

    fn set_default(&mut self, ste: Option<&Ste>) -> Result<(), Self::Error> {
        if let Some(ste) = ste {
            self.check_ste(0, ste);
        }
        self.defaults.push(ste.copied());
        Ok(())
    }

    fn sync(&mut self) -> Result<(), Self::Error> {
        if self.fail_sync {
            return Err("CMD_SYNC timed out");
        }
        self.log.push(PhysOp::Sync);
        Ok(())
    }
    fn submit_synced(&mut self, cmds: &[Command]) -> Result<(), Self::Error> {
        self.short_batches += 1;
        self.submit(cmds)?;
        self.sync()
    }

    fn device_may_write(&self, ipa: Ipa, len: usize) -> bool {
        let Some(end) = ipa.0.checked_add(len as u64) else {
            return false;
        };
        self.dma_writable
            .iter()
            .any(|r| r.start <= ipa.0 && end <= r.end)
    }
}

/// A physical SMMU like QEMU's `smmuv3`: stage 1 and 2, 16-bit SIDs and SSIDs, two-level tables,
/// HYP, ATS, PRI, MSI and SEV (all of which the host must not see), range invalidation,
/// terminate-only, 44-bit OAS.
pub fn qemu_like() -> SmmuFeatures {
    let idr0 = 1 // S2P
        | 1 << 1 // S1P
        | 0b10 << 2 // TTF AArch64
        | 1 << 4 // COHACC
        | 1 << 5 // BTM
        | 1 << 9 // HYP
        | 1 << 10 // ATS
        | 1 << 12 // ASID16
        | 1 << 13 // MSI
        | 1 << 14 // SEV
        | 1 << 16 // PRI
        | 1 << 18 // VMID16
        | 1 << 19 // CD2L
        | 0b10 << 21 // TTENDIAN little
        | 0b01 << 24 // terminate only
        | 0b01 << 27; // two-level Stream table
    let idr1 = 16 | 16 << 6 | 8 << 11 | 19 << 16 | 19 << 21;
    let idr3 = 1 << 10; // RIL
    let idr5 = 0b100 | 0b111 << 4; // OAS 44, 4K 16K 64K
    SmmuFeatures::from_idr(idr0, idr1, idr3, idr5)
}

/// The normal-mode DMA policy of the tests.
pub fn policy() -> Stage2Config {
    Stage2Config {
        vmid: 7,
        ttb: Pa(0x4900_0000),
        t0sz: 24,
        sl0: 0b01,
        granule: Granule::K4,
        ps_bits: 44,
        walk: WalkAttrs::WB_INNER_SHAREABLE,
        record_faults: true,
        stall: false,
        affd: false,
        ptw: true,
    }
}

/// The crash-mode DMA policy of the tests.
pub fn crash_policy() -> Stage2Config {
    Stage2Config {
        vmid: 8,
        ttb: Pa(0x4901_0000),
        ..policy()
    }
}

/// Host RAM the host's CPU policy allows.
pub const HOST_RAM: Range<u64> = 0x4000_0000..0x4800_0000;
/// Portcullis' own memory: never accessible to the host.
pub const HYP_MEM: u64 = 0x4800_0000;
/// The crash region: host RAM the host's CPU may write in normal mode, but none of its devices.
pub const CRASH_REGION: Range<u64> = 0x4700_0000..0x4780_0000;

/// Where the test host puts its structures (all in host RAM).
pub const STRTAB: u64 = 0x4010_0000;
pub const L2_GROUP0: u64 = 0x4011_0000;
pub const CMDQ: u64 = 0x4020_0000;
pub const EVTQ: u64 = 0x4021_0000;
pub const CD_TABLE: u64 = 0x4030_0000;

/// The physical streams of the tests.
pub const STREAMS: [StreamId; 4] = [0x08, 0x10, 0x11, 0x300];

/// An emulated SMMU, host memory and a physical SMMU, driven the way a host driver would.
#[derive(Debug)]
pub struct Rig {
    pub smmu: EmulatedSmmu,
    pub mem: FakeMemory,
    pub phys: FakePhys,
    pub notes: Vec<Note>,
}

impl Default for Rig {
    fn default() -> Self {
        Self::new()
    }
}

impl Rig {
    pub fn new() -> Self {
        Self::with(qemu_like(), &STREAMS)
    }

    pub fn with(physical: SmmuFeatures, streams: &[StreamId]) -> Self {
        let config = EmulConfig::new(physical, 40);
        Self {
            smmu: EmulatedSmmu::new(&config, streams.iter().copied()).expect("valid config"),
            mem: FakeMemory::new(std::vec![HOST_RAM]),
            phys: FakePhys::new(policy()),
            notes: Vec::new(),
        }
    }

    pub fn write(&mut self, offset: usize, size: u8, value: u64) {
        let notes = self
            .smmu
            .write(offset, size, value, &mut self.mem, &mut self.phys);
        self.notes.extend(notes);
    }

    pub fn w32(&mut self, offset: usize, value: u32) {
        self.write(offset, 4, value.into());
    }

    pub fn w64(&mut self, offset: usize, value: u64) {
        self.write(offset, 8, value);
    }

    pub fn r32(&self, offset: usize) -> u32 {
        self.smmu.read(offset, 4).value as u32
    }

    pub fn r64(&self, offset: usize) -> u64 {
        self.smmu.read(offset, 8).value
    }

    pub fn take_notes(&mut self) -> Vec<Note> {
        std::mem::take(&mut self.notes)
    }

    /// Appends commands to the host's Command queue (at the PROD the host last wrote) and
    /// publishes them with one `CMDQ_PROD` write.
    pub fn issue(&mut self, cmds: &[[u64; 2]]) {
        use crate::smmu::regs::offset as o;
        let log2 = self.smmu.cmdq_log2();
        let mut prod = QueueIndex::from_field(log2, self.r32(o::CMDQ_PROD));
        for cmd in cmds {
            self.mem.poke_words(CMDQ + prod.byte_offset(16) as u64, cmd);
            prod = prod.advance(1);
        }
        self.w32(o::CMDQ_PROD, prod.field());
    }

    /// The records the host has not consumed yet; consumes them.
    pub fn events(&mut self) -> Vec<[u64; 4]> {
        use crate::smmu::regs::offset as o;
        let (prod, cons) = self.smmu.event_queue_indexes();
        let mut rd = cons.rd;
        let mut out = Vec::new();
        while rd != prod.wr {
            out.push(self.mem.peek_words::<4>(EVTQ + rd.byte_offset(32) as u64));
            rd = rd.advance(1);
        }
        let cons = crate::smmu::queue::OutputQueueCons {
            rd,
            ovackflg: prod.ovflg,
        };
        self.w32(o::EVTQ_CONS, cons.encode());
        out
    }
}
