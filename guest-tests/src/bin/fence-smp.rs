//! Scenario *fence-smp*: a CPU the dead kernel did not stop is bound by the fence from its instant,
//! without ever trapping again.
//!
//! A (the dead kernel, [`guest::fence`]) starts CPU 1 on a loop of its own: it stores an
//! ever-increasing counter to a word of A's memory (the dump-to-be) and to a word in the crash
//! region, as fast as it can, and never traps to Portcullis while the stores land (a refused store
//! comes back as an abort injected at EL1, which the loop's own vector skips after a pause of
//! half a second, so a refused loop does not become a trap storm, and seldom drains the SMMU's
//! records for the capture kernel: see the last check). A then crashes as in *fence*: CPU
//! 0 jumps into the crash region and the kexec trap raises the fence, while CPU 1 keeps storing.
//!
//! B (the capture kernel, on CPU 0) checks that CPU 1 was storing before the fence (both words
//! hold a non-zero count) and that, from the fence on, neither word changes over 300 ms: CPU 1's
//! stores no longer land anywhere, although it never took a trap until its first refused store.
//! (Before the fence acted in place on every CPU at once, CPU 1 kept writing the dump: issue 8,
//! escape 8.)
//!
//! Then B idles: it kicks the dead kernel's edu (a DMA through A's IOVA, refused by the fence) and
//! waits in WFI, with every interrupt masked and none armed, doing nothing that traps, until the
//! fault report records the refusal (its address as the edu's last). Portcullis traps the capture kernel's WFI in crash mode and
//! drains the SMMU's records at each, so the report changes within a bounded time; without that,
//! the first WFI would never return.
//!
//! Then B is busy: it kicks the edu again and spins without WFI, doing nothing that traps but
//! reprogramming its EL1 virtual timer every millisecond (masked: no interrupt), as a busy Linux
//! does at each tick, and the report must record the refusal within 50 ms of the edu's DMA
//! completing. Portcullis traps those timer accesses in crash mode (FEAT_ECV's
//! `CNTHCTL_EL2.EL1TVT`) and drains at each (at most every millisecond); without that, only CPU 1's
//! refused stores, half a second apart, would drain (measured: the check then fails).
//!
//! `scripts/run --kernel <fence-smp> --features test-hooks --smp 2 --timeout 240
//!  --append "crashkernel=32M" -- -device edu,dma_mask=0xffffffffffffffff`
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod scenario {
    use core::arch::global_asm;
    use guest::dma::DmaBuffer;
    use guest::dt::Reg;
    use guest::edu::Direction;
    use guest::fence::{self, DeadKernel, DeadSetup, PAGE};
    use guest::rt::{self, Context};
    use guest::{Failure, Outcome, check, println, psci};

    guest::scenario!("fence-smp", run);

    // CPU 1's loop (x0 = the address of [dump word, crash word]) and its EL1 vector table. The
    // loop touches no memory but the two words, and the vector no memory at all: after the fence
    // everything of A is read-only.
    global_asm!(
        ".section .text.fence_smp, \"ax\"",
        ".balign 2048",
        ".global fence_smp_vectors",
        "fence_smp_vectors:",
        ".rept 16",
        "b fence_smp_refused",
        ".balign 128",
        ".endr",
        "fence_smp_refused:",
        // Skip the refused store, pause about 1/64 s, go on storing.
        "mrs x5, elr_el1",
        "add x5, x5, #4",
        "msr elr_el1, x5",
        "add x9, x9, #1",
        "mrs x6, cntvct_el0",
        "mrs x7, cntfrq_el0",
        "lsr x7, x7, #1",
        "add x6, x6, x7",
        "2: mrs x8, cntvct_el0",
        "cmp x8, x6",
        "b.lo 2b",
        "eret",
        ".global fence_smp_storer",
        "fence_smp_storer:",
        "ldr x1, [x0]",
        "ldr x2, [x0, #8]",
        "adr x3, fence_smp_vectors",
        "msr vbar_el1, x3",
        "isb",
        "mov x4, #0",
        "mov x9, #0",
        "1: add x4, x4, #1",
        "str x4, [x1]",
        "str x4, [x2]",
        "b 1b",
    );

    unsafe extern "C" {
        fn fence_smp_storer();
    }

    /// CPU 1's two words: [0] its counter in A's memory, [1..3] the loop's arguments.
    static WORDS: DmaBuffer<4096> = DmaBuffer::new();

    /// The crash-region word CPU 1 stores to: the region's last page, which neither A's copy of
    /// the payload nor B's allocations reach.
    fn crash_word(crash: Reg) -> u64 {
        crash.end() - PAGE
    }

    fn run(ctx: &Context) -> Outcome {
        fence::run_scenario(ctx, 1, |setup| start_storer(ctx, setup), capture_kernel)
    }

    fn start_storer(ctx: &Context, setup: &DeadSetup) -> Outcome {
        let mut cpus = [0u64; rt::MAX_CPUS];
        let n = ctx.dtb.cpus(&mut cpus);
        let me = rt::mpidr();
        let Some(&other) = cpus[..n].iter().find(|&&m| m != me) else {
            return Err(Failure::new(format_args!(
                "the tree lists {n} CPU(s); run this scenario with --smp 2"
            )));
        };
        let dump = WORDS.addr();
        let args = WORDS.addr() + 8;
        // SAFETY: the payload's own page; CPU 1 only reads the arguments once started.
        unsafe {
            guest::mmio::write64(dump, 0);
            guest::mmio::write64(args, dump);
            guest::mmio::write64(args + 8, crash_word(setup.crash));
            guest::mmio::write64(crash_word(setup.crash), 0);
        }
        let r = psci::cpu_on(other, fence_smp_storer as *const () as u64, args);
        check!(
            r == 0,
            "A: CPU_ON({other:#x}) for the storing CPU returned {r}"
        );
        let start = rt::ticks();
        // SAFETY: the payload's own word and a crash-region word, both RAM.
        while unsafe { guest::mmio::read64(dump) } < 1000 {
            check!(
                rt::ticks_to_ms(rt::ticks().wrapping_sub(start)) < 2000,
                "A: CPU {other:#x} does not store (its counter stays below 1000 for 2 s)"
            );
        }
        println!(
            "A: CPU {other:#x} stores to {dump:#x} (A's memory) and {:#x} (crash region)",
            crash_word(setup.crash)
        );
        Ok(())
    }

    #[inline(never)]
    fn capture_kernel(ctx: &Context, crash: Reg, dead: &DeadKernel) -> Outcome {
        fence::check_mode(dead)?;
        // A's WORDS, where A had it (B is A's image copied to the crash region's base).
        let dump = WORDS.addr() - rt::image_layout().start + dead.image.start;
        let cword = crash_word(crash);
        // SAFETY: A's word (the dump: readable) and a crash-region word (B's: readable).
        let read = || unsafe { (guest::mmio::read64(dump), guest::mmio::read64(cword)) };
        let (d0, c0) = read();
        let since = rt::ticks_to_ms(rt::ticks().wrapping_sub(dead.jumped));
        println!(
            "B: {since} ms after the jump: CPU 1's counter {d0} in A's memory, {c0} in the crash region"
        );
        check!(
            d0 >= 1000 && c0 >= 1000,
            "CPU 1 was not storing before the fence: counters {d0} (A's memory) and {c0} (crash \
             region), want at least 1000"
        );
        let mut last = (d0, c0);
        for step in 1..=6 {
            fence::sleep_ms(50);
            let now = read();
            check!(
                now == last,
                "a store of CPU 1 landed after the fence: {} ms after B's first look its counter \
                 went {} -> {} in A's memory (the dump, {dump:#x}), {} -> {} in the crash region \
                 ({cword:#x})",
                step * 50,
                last.0,
                now.0,
                last.1,
                now.1
            );
            last = now;
        }
        println!(
            "B: over 300 ms after the fence no store of CPU 1 landed, in the dump or the crash region"
        );
        idle_drain(ctx, dead)
    }

    /// The fault report's `faults-total:` now, and the address of the last refusal it records for
    /// StreamID `sid` (plain loads: nothing traps).
    fn faults_total(ctx: &Context, sid: u32) -> Result<(u64, Option<u64>), Failure> {
        let mut total = (0, None);
        fence::with_report(&ctx.dtb, |r| {
            total = (r.faults_total, r.fault_for(sid).map(|f| f.addr));
            Ok(())
        })?;
        Ok(total)
    }

    /// A refused DMA while B idles in WFI reaches the report (see the module documentation).
    fn idle_drain(ctx: &Context, dead: &DeadKernel) -> Outcome {
        let e = dead.first_edu()?;
        let edus = fence::adopt_edus(dead)?;
        let Some(edu) = &edus[0] else {
            return Err(Failure::new(format_args!("edu not adopted")));
        };
        let (before, _) = faults_total(ctx, e.sid)?;
        let target = e.in_flight + 0xa00;
        edu.start(Direction::FromDevice, target, 0, 4)
            .map_err(|err| Failure::new(format_args!("B: kicking the edu: {err:?}")))?;
        let start = rt::ticks();
        let mut wfis = 0u32;
        loop {
            // WFI only waits; every interrupt is masked, none is armed.
            aarch64_cpu::asm::wfi();
            wfis += 1;
            let (now, last) = faults_total(ctx, e.sid)?;
            if last == Some(target) {
                println!(
                    "B: the refused DMA to A's IOVA {target:#x} reached the report while B idled: \
                     faults-total {before} -> {now} after {wfis} WFI(s), {} ms",
                    rt::ticks_to_ms(rt::ticks().wrapping_sub(start))
                );
                return busy_drain(ctx, edu, e.sid, target + 0x100);
            }
            check!(
                wfis < 2000,
                "the fault report does not record the refusal at {target:#x} (faults-total \
                 {before} before) after {wfis} WFIs over {} ms of B idling",
                rt::ticks_to_ms(rt::ticks().wrapping_sub(start))
            );
        }
    }

    /// A refused DMA while B spins, touching only its virtual timer, reaches the report (see the
    /// module documentation).
    fn busy_drain(ctx: &Context, edu: &guest::edu::Edu, sid: u32, target: u64) -> Outcome {
        let start = rt::ticks();
        let ms = (rt::tick_hz() / 1000).max(1);
        // The first DMA completes (refused) a little after the kick: the edu is then idle.
        while edu.busy() {
            check!(
                rt::ticks().wrapping_sub(start) < 1000 * ms,
                "B: the edu is still busy after 1 s"
            );
        }
        let (before, _) = faults_total(ctx, sid)?;
        edu.start(Direction::FromDevice, target, 0, 4)
            .map_err(|err| Failure::new(format_args!("B: kicking the edu again: {err:?}")))?;
        let start = rt::ticks();
        let mut tick_count = 0u32;
        let mut completed = None;
        loop {
            let deadline = rt::ticks().wrapping_add(ms);
            while rt::ticks() < deadline {
                core::hint::spin_loop();
            }
            // SAFETY: B's own EL1 virtual timer, enabled and masked: it raises no interrupt.
            unsafe {
                core::arch::asm!(
                    "msr cntv_cval_el0, {}",
                    "msr cntv_ctl_el0, {}",
                    in(reg) deadline.wrapping_add(ms),
                    in(reg) 3u64,
                    options(nomem, nostack)
                )
            };
            tick_count += 1;
            // The edu's registers are B's (no trap): when it is idle again, its DMA was refused.
            if completed.is_none() && !edu.busy() {
                completed = Some(rt::ticks());
            }
            let (now, last) = faults_total(ctx, sid)?;
            if last == Some(target) {
                let after = completed.map_or(0, |c| rt::ticks_to_ms(rt::ticks().wrapping_sub(c)));
                println!(
                    "B: the refused DMA to A's IOVA {target:#x} reached the report while B spun: \
                     faults-total {before} -> {now} after {tick_count} timer tick(s), {} ms, {after} \
                     ms after the DMA completed",
                    rt::ticks_to_ms(rt::ticks().wrapping_sub(start))
                );
                check!(
                    after <= 50,
                    "the refusal reached the report {after} ms after the DMA completed (> 50 ms): \
                     B's timer accesses do not drain"
                );
                return Ok(());
            }
            check!(
                tick_count < 2000,
                "the fault report does not record the refusal at {target:#x} (faults-total \
                 {before} before) after {tick_count} timer ticks over {} ms of B spinning",
                rt::ticks_to_ms(rt::ticks().wrapping_sub(start))
            );
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
