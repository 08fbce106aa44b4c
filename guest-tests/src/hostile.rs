//! The hostile-host suite's harness: each `hostile-*` payload is a host kernel that attacks
//! Portcullis through one interface, one named attack after another, and after each attack checks
//! that nothing it may not touch changed.
//!
//! A payload first prints the names of all its attacks (`ATTACKS: a b c ...`), then one
//! line per attack, `ATTACK <name>: PASS` or `ATTACK <name>: FAIL: <why>`; scripts/test counts each
//! name as a test, and a name that never got its line (Portcullis died, the payload hung) as failed.
//!
//! Every attack ends with these checks, against what the test hooks said just before it:
//! - Portcullis is alive: PSCI_VERSION answers as at the start, and so do the test hooks;
//! - Portcullis' memory is unchanged: the checksum of its text + rodata and of every canary page
//!   (`PORTCULLIS_TEST_INTEGRITY`: the image's `.data`, the heap, the last page of its region);
//! - the fault report region holds what Portcullis last wrote there (`PORTCULLIS_TEST_REPORT`);
//! - in crash mode, the dump's canary pages (the dead kernel's pages filled with
//!   [`memory_pattern`]) are unchanged.
//!
//! Each attack is judged on its own: an earlier attack's damage does not fail the later ones.

use crate::dma::{self, memory_changed, memory_pattern};
use crate::dt::Reg;
use crate::hooks::{self, CanaryPages, Integrity, ReportSums};
use crate::rt::{Caught, Context, expect_exception, tick_hz, ticks};
use crate::{Failure, Outcome, check, println, psci};

pub const PAGE: u64 = 0x1000;
/// Most dump pages an [`Env`] watches.
pub const MAX_DUMP_PAGES: usize = 8;

/// One named attack.
#[derive(Clone, Copy, Debug)]
pub struct Attack {
    pub name: &'static str,
    pub run: fn(&Env) -> Outcome,
}

/// What every attack may aim at.
#[derive(Debug)]
pub struct Env<'a> {
    pub ctx: &'a Context,
    /// Portcullis' reserved region.
    pub hyp: Reg,
    /// The fault report region (with a crash region only).
    pub report: Option<Reg>,
    /// The crash region (`crashkernel=`).
    pub crash: Option<Reg>,
    /// Portcullis' canary pages (`PORTCULLIS_TEST_CANARIES`).
    pub canaries: CanaryPages,
    /// Dead-kernel pages (crash mode) that must keep [`memory_pattern`].
    pub dump: [u64; MAX_DUMP_PAGES],
    pub dump_count: usize,
    psci_version: u64,
}

fn hook_failed(what: &str, e: hooks::HookError) -> Failure {
    Failure::new(format_args!("{what}: {e}"))
}

impl<'a> Env<'a> {
    /// Reads the regions from the tree and the canaries from Portcullis.
    pub fn new(ctx: &'a Context) -> Result<Env<'a>, Failure> {
        let hyp = dma::hypervisor_region(&ctx.dtb)?;
        let canaries =
            hooks::canary_pages().map_err(|e| hook_failed("PORTCULLIS_TEST_CANARIES", e))?;
        check!(
            canaries.count >= 2,
            "Portcullis names {} canary pages, want at least 2 (image, heap)",
            canaries.count
        );
        for page in canaries.iter() {
            check!(
                hyp.base <= page && page + canaries.size <= hyp.end(),
                "canary page {page:#x} is not inside Portcullis' region {:#x}..{:#x}",
                hyp.base,
                hyp.end()
            );
        }
        let report = ctx
            .dtb
            .reserved_with_compatible("portcullis,fault-report")
            .filter(|r| r.size > 0);
        let crash = dma::placed_crash_region(ctx, hyp, dma::CrashUse::PayloadHome).ok();
        let env = Env {
            ctx,
            hyp,
            report,
            crash,
            canaries,
            dump: [0; MAX_DUMP_PAGES],
            dump_count: 0,
            psci_version: psci::version(),
        };
        println!(
            "hostile: Portcullis {:#x}..{:#x}, canaries {:?}, report {:?}, crash region {:?}, \
             PSCI version {:#x}",
            hyp.base,
            hyp.end(),
            &canaries.pages[..canaries.count],
            report.map(|r| (r.base, r.size)),
            crash.map(|r| (r.base, r.size)),
            env.psci_version
        );
        Ok(env)
    }

    /// Also watch these dead-kernel pages (crash mode).
    pub fn watch_dump(&mut self, pages: &[u64]) {
        for &p in pages {
            if self.dump_count < MAX_DUMP_PAGES {
                self.dump[self.dump_count] = p;
                self.dump_count += 1;
            }
        }
    }

    /// Canary page `i` (0 = image `.data`, 1 = heap, 2 = the region's last page, if present).
    pub fn canary(&self, i: usize) -> u64 {
        self.canaries.pages[i.min(self.canaries.count - 1)]
    }

    /// The report region, or a failure naming what needs it.
    pub fn report(&self) -> Result<Reg, Failure> {
        self.report.ok_or_else(|| {
            Failure::new(format_args!(
                "no fault report region (boot with crashkernel=)"
            ))
        })
    }

    /// The crash region, or a failure.
    pub fn crash(&self) -> Result<Reg, Failure> {
        self.crash
            .ok_or_else(|| Failure::new(format_args!("no crash region (boot with crashkernel=)")))
    }

    /// A page of free host RAM `offset` bytes past the payload's image, 2 MiB-aligned start, that
    /// lies outside Portcullis, the crash and report regions (for tables an attack needs).
    pub fn scratch(&self, offset: u64) -> u64 {
        let (_, end) = crate::rt::image_extent();
        let mut at = ((end + (2 << 20) - 1) & !((2 << 20) - 1)) + (4 << 20) + offset;
        for r in [Some(self.hyp), self.crash, self.report]
            .into_iter()
            .flatten()
        {
            if at < r.end() && r.base < at + (1 << 20) {
                at = ((r.end() + (2 << 20) - 1) & !((2 << 20) - 1)) + offset;
            }
        }
        at
    }
}

/// What the hooks said before an attack.
#[derive(Clone, Copy, Debug)]
struct Snapshot {
    integrity: Integrity,
    report: ReportSums,
    /// The dump pages' checksum (an earlier attack may have changed them: each is judged alone).
    dump: u64,
}

fn snapshot(env: &Env) -> Result<Snapshot, Failure> {
    Ok(Snapshot {
        integrity: hooks::integrity().map_err(|e| hook_failed("PORTCULLIS_TEST_INTEGRITY", e))?,
        report: hooks::report_sums().map_err(|e| hook_failed("PORTCULLIS_TEST_REPORT", e))?,
        dump: dump_checksum(env),
    })
}

/// FNV-1a over the dump pages an [`Env`] watches.
fn dump_checksum(env: &Env) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &page in &env.dump[..env.dump_count] {
        for a in (page..page + PAGE).step_by(8) {
            // SAFETY: dead-kernel RAM, readable in crash mode; loads only.
            let w = unsafe { (a as *const u64).read_volatile() };
            h = (h ^ w).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Waits `ms` milliseconds of the virtual counter.
pub fn sleep_ms(ms: u64) {
    let start = ticks();
    let want = ms * tick_hz() / 1000;
    while ticks().wrapping_sub(start) < want {
        core::hint::spin_loop();
    }
}

/// The checks every attack ends with (see the module comment).
fn verify(env: &Env, before: &Snapshot) -> Outcome {
    let v = psci::version();
    check!(
        v == env.psci_version,
        "Portcullis no longer answers: PSCI_VERSION gave {v:#x}, was {:#x}",
        env.psci_version
    );
    hooks::fence_mode().map_err(|e| hook_failed("PORTCULLIS_TEST_MODE", e))?;
    let now = hooks::integrity().map_err(|e| hook_failed("PORTCULLIS_TEST_INTEGRITY", e))?;
    check!(
        now.code == before.integrity.code,
        "Portcullis' text/rodata changed (checksum {:#x}, was {:#x})",
        now.code,
        before.integrity.code
    );
    check!(
        now.canaries == before.integrity.canaries,
        "a canary page in Portcullis' memory changed (damaged mask {:#x}, was {:#x})",
        now.damaged,
        before.integrity.damaged
    );
    let mut r = hooks::report_sums().map_err(|e| hook_failed("PORTCULLIS_TEST_REPORT", e))?;
    let touched = |r: &ReportSums| {
        !r.untouched() && (r.now != before.report.now || r.writes != before.report.writes)
    };
    if touched(&r) {
        // Portcullis may be rewriting it right now (crash mode, on another CPU): look again.
        sleep_ms(20);
        r = hooks::report_sums().map_err(|e| hook_failed("PORTCULLIS_TEST_REPORT", e))?;
    }
    check!(
        !touched(&r),
        "the fault report region was written by someone else (checksum {:#x}, Portcullis wrote \
         {:#x}; {} writes by Portcullis)",
        r.now,
        r.written,
        r.writes
    );
    if dump_checksum(env) != before.dump {
        // SAFETY: dead-kernel RAM, readable in crash mode; loads only.
        let changed = env.dump[..env.dump_count]
            .iter()
            .find_map(|&page| unsafe { memory_changed(page, PAGE) });
        return Err(Failure::new(format_args!(
            "a dump canary page changed (first byte off the dead kernel's pattern: {:#x} is \
             {:#x}, want {:#x})",
            changed.map_or(0, |c| c.0),
            changed.map_or(0, |c| c.1),
            changed.map_or(0, |c| memory_pattern(c.0))
        )));
    }
    Ok(())
}

/// Runs `attacks` in order, printing the list first and one line per attack. Fails if any did.
pub fn run(payload: &str, env: &Env, attacks: &[Attack]) -> Outcome {
    crate::console::print(format_args!("ATTACKS:"));
    for a in attacks {
        crate::console::print(format_args!(" {}", a.name));
    }
    println!("");
    let mut failed = 0;
    let mut first: Option<&'static str> = None;
    for a in attacks {
        println!("attack {}: start", a.name);
        let line = match snapshot(env) {
            Err(f) => Err(f),
            Ok(before) => {
                let r = (a.run)(env);
                let v = verify(env, &before);
                match (r, v) {
                    (Ok(()), Ok(())) => Ok(()),
                    (Err(f), Ok(())) => Err(f),
                    (Ok(()), Err(v)) => Err(v),
                    (Err(f), Err(v)) => Err(Failure::new(format_args!(
                        "{}; and {}",
                        f.message(),
                        v.message()
                    ))),
                }
            }
        };
        match line {
            Ok(()) => println!("ATTACK {}: PASS", a.name),
            Err(f) => {
                println!("ATTACK {}: FAIL: {}", a.name, f.message());
                failed += 1;
                first.get_or_insert(a.name);
            }
        }
    }
    check!(
        failed == 0,
        "{payload}: {failed} of {} attacks failed (first: {})",
        attacks.len(),
        first.unwrap_or("")
    );
    Ok(())
}

/// ESR_EL1.EC of a data abort from the current EL, and DFSC of a synchronous external abort.
pub const EC_DABT_CUR: u64 = 0x25;
pub const DFSC_SEA: u64 = 0x10;

/// `f` either completes or takes one synchronous exception (caught and skipped); the caller's
/// checks decide. Returns what was caught.
pub fn attempt(f: impl FnOnce()) -> Option<Caught> {
    expect_exception(f)
}

/// The access `f` (one load or store at `addr`) must be refused with the abort Portcullis injects.
pub fn expect_refused(addr: u64, what: &str, f: impl FnOnce()) -> Outcome {
    let c = expect_exception(f);
    let Some(c) = c else {
        return Err(Failure::new(format_args!(
            "{what} at {addr:#x} completed: the host reached it"
        )));
    };
    check!(
        c.ec() == EC_DABT_CUR,
        "{what} at {addr:#x}: ESR {:#x} (EC {:#x}), want a data abort",
        c.esr,
        c.ec()
    );
    Ok(())
}

/// Whether a 32-bit load from the device register `addr` works (a withheld device aborts).
pub fn device_reachable(addr: u64) -> bool {
    // SAFETY: a device register, or an address whose abort is caught.
    expect_exception(|| unsafe {
        let _ = crate::mmio::mmio_read32(addr);
    })
    .is_none()
}

// ---------------------------------------------------------------------------------------------
// Instruments the attacks share.

/// QEMU virt's fw_cfg: its DMA address register (64-bit, big-endian) at +0x10.
pub const FW_CFG: u64 = 0x0902_0000;
const FW_CFG_DMA: u64 = FW_CFG + 0x10;
/// fw_cfg DMA control: select the key in bits 31:16, then read.
const FW_CFG_DMA_SELECT: u32 = 0x08;
const FW_CFG_DMA_READ: u32 = 0x02;
/// The signature key: "QEMU".
const FW_CFG_SIGNATURE: u32 = 0x0000;

/// A fw_cfg DMA descriptor in the payload's memory.
#[repr(C, align(64))]
struct FwCfgDescriptor(core::cell::UnsafeCell<[u64; 2]>);
// SAFETY: only the boot CPU and the device touch it, with volatile accesses.
unsafe impl Sync for FwCfgDescriptor {}
static FW_CFG_DESCRIPTOR: FwCfgDescriptor = FwCfgDescriptor(core::cell::UnsafeCell::new([0; 2]));

/// Has fw_cfg DMA the 4-byte signature to `target`, with the descriptor at `descriptor` (the
/// payload's own one if `None`). Returns false if fw_cfg is withheld from the host (the register
/// access aborted).
pub fn fw_cfg_dma(target: u64, descriptor: Option<u64>) -> bool {
    if !device_reachable(FW_CFG_DMA) {
        println!("  fw_cfg at {FW_CFG:#x} is withheld from the host");
        return false;
    }
    let own = FW_CFG_DESCRIPTOR.0.get() as u64;
    let at = descriptor.unwrap_or(own);
    if at == own {
        let control = (FW_CFG_SIGNATURE << 16) | FW_CFG_DMA_SELECT | FW_CFG_DMA_READ;
        // Big-endian fields: control, length (4 bytes), address.
        let w0 = u64::from(control.to_be()) | u64::from(4u32.to_be()) << 32;
        // SAFETY: the payload's own descriptor.
        unsafe {
            crate::mmio::write64(own, w0);
            crate::mmio::write64(own + 8, target.to_be());
        }
    }
    // SAFETY: fw_cfg's DMA register (reachable, checked above): high word, then the low word
    // that starts the transfer.
    let caught = expect_exception(|| unsafe {
        crate::mmio::mmio_write32(FW_CFG_DMA, ((at >> 32) as u32).to_be());
        crate::mmio::mmio_write32(FW_CFG_DMA + 4, (at as u32).to_be());
    });
    caught.is_none()
}

/// `DC ZVA` at `addr` (zeroes its block if it completes).
///
/// # Safety
/// `addr` is an address the attack aims at; an abort is caught by the caller.
pub unsafe fn dc_zva(addr: u64) {
    // SAFETY: per the caller's contract.
    unsafe { core::arch::asm!("dc zva, {}", in(reg) addr, options(nostack)) };
}

/// `DC IVAC` at `addr` (invalidates its line without cleaning it, if it completes).
///
/// # Safety
/// As for [`dc_zva`].
pub unsafe fn dc_ivac(addr: u64) {
    // SAFETY: per the caller's contract.
    unsafe { core::arch::asm!("dc ivac, {}", in(reg) addr, options(nostack)) };
}

/// `STP` of two words at `addr` (no valid syndrome: ISV = 0).
///
/// # Safety
/// As for [`dc_zva`].
pub unsafe fn stp(addr: u64, a: u64, b: u64) {
    // SAFETY: per the caller's contract.
    unsafe {
        core::arch::asm!("stp {a}, {b}, [{p}]", p = in(reg) addr, a = in(reg) a, b = in(reg) b,
                         options(nostack))
    };
}

/// `LDP` of two words at `addr` (ISV = 0).
///
/// # Safety
/// As for [`dc_zva`].
pub unsafe fn ldp(addr: u64) -> (u64, u64) {
    let (a, b): (u64, u64);
    // SAFETY: per the caller's contract.
    unsafe {
        core::arch::asm!("ldp {a}, {b}, [{p}]", p = in(reg) addr, a = out(reg) a, b = out(reg) b,
                         options(nostack))
    };
    (a, b)
}

/// A store with post-index writeback (ISV = 0): `str value, [addr], #8`.
///
/// # Safety
/// As for [`dc_zva`].
pub unsafe fn str_post(addr: u64, value: u64) {
    // SAFETY: per the caller's contract.
    unsafe {
        core::arch::asm!("str {v}, [{p}], #8", p = inout(reg) addr => _, v = in(reg) value,
                         options(nostack))
    };
}

/// Fills `[base, base + PAGE)` of host RAM the attack may write with [`memory_pattern`] and
/// returns a checker that says whether it still holds it.
///
/// # Safety
/// The page must be host RAM the payload may write.
pub unsafe fn watch_page(base: u64) -> impl Fn() -> Outcome {
    // SAFETY: per the caller's contract.
    unsafe { dma::fill_memory(base, PAGE) };
    move || {
        // SAFETY: as above; loads only.
        let changed = unsafe { memory_changed(base, PAGE) };
        check!(
            changed.is_none(),
            "page {base:#x} changed: byte {:#x} is {:#x}, want {:#x}",
            changed.map_or(0, |c| c.0),
            changed.map_or(0, |c| c.1),
            changed.map_or(0, |c| memory_pattern(c.0))
        );
        Ok(())
    }
}
