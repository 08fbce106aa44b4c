//! Scenario *fence-noisy*: the simulated kexec of *fence*, after a host whose device misbehaved
//! long before the crash, and which runs without an Event queue at the crash.
//!
//! Before the crash, A puts its edu in bypass for a moment and lets it write 0x300 bytes into the
//! crash region by physical address in three transfers: the normal DMA policy refuses them, and
//! Portcullis records each 4-byte step (QEMU retries a refused access in 4-byte steps), 384
//! records in all, more than the fence's ring of 256 keeps. A restores its stage 1, turns its
//! Event queue off (CR0.EVENTQEN = 0, SMMUEN kept), starts the in-flight DMA and kexecs.
//!
//! Fault forwarding (ARCHITECTURE.md) promises that the records *caused by the fence* are kept in
//! a bounded ring and delivered into the capture kernel's Event queue once it enables one. The
//! capture kernel B checks, after its SMMU reset:
//! 1. the in-flight DMA's refusal (after the fence) is in B's Event queue;
//! 2. records of refusals from before the crash are not presented as the fence's (they are
//!    Portcullis' normal-mode firewall records, reported on the console and counted).
//!
//! `scripts/run --kernel <fence-noisy> --features test-hooks --smp 1 --timeout 240
//!  --append "crashkernel=32M" -- -device edu,dma_mask=0xffffffffffffffff`
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod scenario {
    use guest::dma::{fill_memory, memory_changed};
    use guest::dt::Reg;
    use guest::fence::{self, DeadKernel, DeadSetup, Findings, PAGE, Tally};
    use guest::rt::Context;
    use guest::smmu::{Ste, cr0, evt};
    use guest::{Failure, Outcome, check, println};

    guest::scenario!("fence-noisy", run);

    /// The crash-region page A's edu writes (refused) before the crash.
    const NOISE_OFFSET: u64 = 20 << 20;
    /// Bytes per noisy transfer: 0x100 bytes, 64 records, within the physical Event queue.
    const NOISE_LEN: usize = 0x100;
    const NOISE_TRANSFERS: u64 = 6;

    fn noise_page(crash: Reg) -> u64 {
        crash.base + NOISE_OFFSET
    }

    fn make_noise(setup: &DeadSetup) -> Outcome {
        let (edu, sid) = setup.first_edu()?;
        let page = noise_page(setup.crash);
        // SAFETY: a crash-region page clear of the loaded capture kernel (the first 2 MiB).
        unsafe { fill_memory(page, PAGE) };
        setup.configure(sid, &Ste::bypass())?;
        let mut recorded = 0;
        for k in 0..NOISE_TRANSFERS {
            let before = guest::dma::faults_now(sid)?.count;
            let target = page + (k % 4) * 0x400;
            edu.from_device(target, NOISE_LEN)
                .map_err(|e| Failure::new(format_args!("A: a noisy DMA: {e}")))?;
            // The hook is a trap: Portcullis drains its Event queue before it overflows.
            recorded += guest::dma::faults_now(sid)?.count - before;
        }
        // SAFETY: as above.
        let landed = unsafe { memory_changed(page, PAGE) };
        check!(
            landed.is_none(),
            "A: a bypass DMA into the crash region landed in normal mode at {:#x}",
            landed.map_or(0, |l| l.0)
        );
        println!(
            "A: {NOISE_TRANSFERS} refused DMAs into the crash region at {page:#x} before the \
             crash: {recorded} records by Portcullis"
        );
        setup.configure(sid, &setup.stage1_ste(0))?;
        let on = setup.smmu.cr0();
        setup
            .smmu
            .set_cr0(on & !(cr0::EVENTQEN.set() as u32))
            .map_err(|e| Failure::new(format_args!("A: turning the Event queue off: {e}")))?;
        println!("A: Event queue off (CR0 {:#x})", setup.smmu.cr0());
        Ok(())
    }

    fn run(ctx: &Context) -> Outcome {
        fence::run_scenario(ctx, 1, make_noise, capture_kernel)
    }

    #[inline(never)]
    fn capture_kernel(ctx: &Context, crash: Reg, dead: &DeadKernel) -> Outcome {
        let tree = &ctx.dtb;
        let mut findings = Findings::default();
        let e = dead.first_edu()?;
        let mode = fence::check_mode(dead)?;
        let edus = fence::adopt_edus(dead)?;
        fence::await_in_flight(dead, &edus)?;
        fence::check_dead_memory(dead, "after the fence")?;
        fence::check_in_flight_recorded(dead)?;
        findings.soft(
            "the fault report after the fence",
            fence::check_report(tree, dead, &mode, "after the fence"),
        );

        let smmu = fence::reset_smmu(tree, crash, &[e.sid])?;
        let mut tally = Tally::default();
        fence::drain(&smmu, &mut tally, "once B enabled it")?;
        let noise = noise_page(crash)..noise_page(crash) + PAGE;
        let stale =
            tally.count(|r| r.kind() == evt::F_TRANSLATION && noise.contains(&r.input_addr()));
        println!(
            "B: {} record(s) in B's Event queue: {stale} of refusals from before the crash",
            tally.total
        );
        findings.soft(
            "the in-flight DMA's record forwarded to B's Event queue",
            fence::expect_forwarded_in_flight(&tally, &e),
        );
        findings.soft(
            "no record from before the crash forwarded as the fence's",
            if stale == 0 {
                Ok(())
            } else {
                Err(Failure::new(format_args!(
                    "{stale} record(s) in B's Event queue are refusals of A's DMA into the crash \
                     region at {:#x} from before the crash (normal mode), forwarded as fence \
                     records",
                    noise.start
                )))
            },
        );
        fence::with_report(tree, |r| {
            println!(
                "B: report: faults-total {} faults-overflowed {}",
                r.faults_total, r.faults_overflowed
            );
            Ok(())
        })?;
        findings.verdict()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
