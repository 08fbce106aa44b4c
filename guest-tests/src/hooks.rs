//! Hypervisor calls that only a test build of Portcullis (cargo feature `test-hooks`) answers. They
//! let a payload prove what it cannot see: that nothing landed in Portcullis' own memory, and that
//! the SMMU recorded the transfers it refused.
//!
//! SMCCC fast calls over HVC; their IDs and what each returns: `spec::test_hook` (one table,
//! shared with the hypervisor). The functions below are named after them.
//!
//! x0 = -1 (NOT_SUPPORTED) from a Portcullis built without the feature.

use crate::psci::NOT_SUPPORTED;
use crate::rt::expect_exception;
use core::fmt;
use spec::test_hook;

/// SMMUv3 event type codes (IHI 0070, event record `EVENT_TYPE`) the tests look for.
pub use spec::smmu_event::{F_ACCESS, F_ADDR_SIZE, F_PERMISSION, F_TRANSLATION};

/// A readable name for an SMMUv3 event type (the hypervisor's table, `spec::smmu_event`).
pub fn event_name(code: u8) -> &'static str {
    spec::smmu_event::name(code).unwrap_or("unknown")
}

/// The canary area and the checksum of its contents at the time of the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Canary {
    pub base: u64,
    pub size: u64,
    pub checksum: u64,
}

impl Canary {
    pub fn end(&self) -> u64 {
        self.base + self.size
    }
}

/// What Portcullis has recorded for one StreamID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Faults {
    pub count: u64,
    /// The input address of the latest event (meaningless while `count` is 0).
    pub last_addr: u64,
    /// Its SMMUv3 event type.
    pub last_type: u8,
    /// Whether the access it records was a write (RnW = 0).
    pub last_was_write: bool,
}

/// Why a test hook gave no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookError {
    /// HVC is undefined: nothing runs at EL2 (the payload was booted without Portcullis).
    NoHypervisor,
    /// Portcullis answered NOT_SUPPORTED: it was built without the `test-hooks` feature.
    NotSupported,
    /// Any other status in x0.
    Failed(i64),
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::NoHypervisor => write!(f, "HVC is undefined: not running under Portcullis"),
            Self::NotSupported => write!(
                f,
                "NOT_SUPPORTED: not a test build of Portcullis (scripts/run --features test-hooks)"
            ),
            Self::Failed(x0) => write!(f, "the hook returned status {x0}"),
        }
    }
}

fn call(function: u32, x1: u64) -> Result<[u64; 4], HookError> {
    let mut args = [0u64; 17];
    args[0] = x1;
    let mut ret = [0u64; 18];
    // Without EL2 the HVC is an undefined instruction: catch it rather than die.
    let caught = expect_exception(|| ret = smccc::hvc64(function, args));
    if caught.is_some() {
        return Err(HookError::NoHypervisor);
    }
    match ret[0] as i64 {
        0 => Ok([ret[0], ret[1], ret[2], ret[3]]),
        NOT_SUPPORTED => Err(HookError::NotSupported),
        other => Err(HookError::Failed(other)),
    }
}

/// `test_hook::CANARY`.
pub fn canary() -> Result<Canary, HookError> {
    let r = call(test_hook::CANARY, 0)?;
    Ok(Canary {
        base: r[1],
        size: r[2],
        checksum: r[3],
    })
}

/// `test_hook::FAULTS` for `stream_id`.
pub fn faults(stream_id: u32) -> Result<Faults, HookError> {
    let r = call(test_hook::FAULTS, u64::from(stream_id))?;
    Ok(Faults {
        count: r[1],
        last_addr: r[2],
        last_type: (r[3] >> 8) as u8,
        last_was_write: r[3] & 1 != 0,
    })
}

/// What `test_hook::MODE` says about the crash fence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FenceMode {
    /// Portcullis is in crash mode: the fence has been raised.
    pub crash: bool,
    /// From the kexec trap to the completed CMD_SYNC of the fence, in ns (0 before the fence).
    pub window_ns: u64,
    /// StreamIDs given the terminating stage 2 by the fence (0 before it).
    pub streams_terminated: u64,
}

/// `test_hook::MODE`.
pub fn fence_mode() -> Result<FenceMode, HookError> {
    let r = call(test_hook::MODE, 0)?;
    Ok(FenceMode {
        crash: r[1] == 1,
        window_ns: r[2],
        streams_terminated: r[3],
    })
}

/// Most canary pages `test_hook::CANARIES` names.
pub const MAX_CANARIES: usize = 4;

/// Portcullis' canary pages: addresses (the first `count`) and the size of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CanaryPages {
    pub pages: [u64; MAX_CANARIES],
    pub count: usize,
    pub size: u64,
}

impl CanaryPages {
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.pages[..self.count].iter().copied()
    }
}

/// `test_hook::CANARIES` for every index.
pub fn canary_pages() -> Result<CanaryPages, HookError> {
    let first = call(test_hook::CANARIES, 0)?;
    let count = (first[3] as usize).min(MAX_CANARIES);
    let mut pages = [0u64; MAX_CANARIES];
    pages[0] = first[1];
    for (i, page) in pages.iter_mut().enumerate().take(count).skip(1) {
        *page = call(test_hook::CANARIES, i as u64)?[1];
    }
    Ok(CanaryPages {
        pages,
        count,
        size: first[2],
    })
}

/// What `test_hook::INTEGRITY` says about Portcullis' memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Integrity {
    /// Checksum of Portcullis' text and read-only data.
    pub code: u64,
    /// Checksum of every canary page.
    pub canaries: u64,
    /// Bit *i* set: canary page *i* no longer holds its pattern.
    pub damaged: u64,
}

/// `test_hook::INTEGRITY`.
pub fn integrity() -> Result<Integrity, HookError> {
    let r = call(test_hook::INTEGRITY, 0)?;
    Ok(Integrity {
        code: r[1],
        canaries: r[2],
        damaged: r[3],
    })
}

/// What `test_hook::REPORT` says about the fault report region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportSums {
    /// Checksum of the region now.
    pub now: u64,
    /// Checksum right after Portcullis last wrote it.
    pub written: u64,
    /// How many times Portcullis wrote it.
    pub writes: u64,
}

impl ReportSums {
    /// Nothing but Portcullis has written the region since Portcullis last did.
    pub fn untouched(&self) -> bool {
        self.now == self.written
    }
}

/// What `test_hook::COUNTERS` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counters {
    pub traps: u64,
    pub physical_accesses: u64,
    pub msi_written: u32,
    pub msi_aborted: u32,
}

/// `test_hook::COUNTERS` (also logs Portcullis' counters line).
pub fn counters() -> Result<Counters, HookError> {
    let r = call(test_hook::COUNTERS, 0)?;
    Ok(Counters {
        traps: r[1],
        physical_accesses: r[2],
        msi_written: r[3] as u32,
        msi_aborted: (r[3] >> 32) as u32,
    })
}

/// `test_hook::REPORT`.
pub fn report_sums() -> Result<ReportSums, HookError> {
    let r = call(test_hook::REPORT, 0)?;
    Ok(ReportSums {
        now: r[1],
        written: r[2],
        writes: r[3],
    })
}

/// `test_hook::PROFILE`: zeroes Portcullis' trap-path profile (`ops` = 0) or has Portcullis log
/// it, in ns per `ops` operations.
pub fn profile(ops: u64) -> Result<(), HookError> {
    call(test_hook::PROFILE, ops).map(|_| ())
}
