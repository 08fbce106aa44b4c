//! Scenario *fence*: a simulated kexec with DMA in flight, and what the capture kernel finds.
//!
//! The payload boots as the dead kernel A ([`guest::fence`]): its own SMMU driver gives the edu a
//! stage 1 (IOVA 0x1_0000_0000 -> A's pages), a DMA through it works, A fills its buffer with a
//! known pattern, starts a device -> RAM DMA into that buffer through the IOVA without waiting
//! (100 ms of virtual time: it is in flight at the jump), writes its canary page, copies its own
//! image into the crash region and jumps there. The first fetch traps: Portcullis raises the fence.
//! The copy, B, runs at the crash region's base and checks:
//!
//! 1. PORTCULLIS_TEST_MODE: crash mode, a plausible fence window, streams terminated; A's DMA was
//!    in flight at the jump;
//! 2. A's buffer, staging page and canary stay as A left them over several DMA periods; the
//!    in-flight DMA was refused and recorded for the edu's StreamID;
//! 3. kicked again through A's old configuration (B writes the edu's registers: A's IOVA, A's
//!    buffer by PA, a crash-region page by PA; and a read of A's staging page), the edu's DMA lands
//!    nowhere and each refusal is recorded with its exact address;
//! 4. A's memory is the dump: loads see A's bytes, stores come back as the synchronous external
//!    abort Portcullis injects (EC 0x25, DFSC 0x10, WnR, FAR = the address);
//! 5. the fault report (CPU loads, read-only): `PORTCULLIS FAULT REPORT v1`, `state: fenced`, the
//!    window and streams as TEST_MODE says, the edu's StreamID in `live-streams:`, a `fault:` line
//!    for it that agrees with PORTCULLIS_TEST_FAULTS;
//! 6. B resets the SMMU like a capture kernel (GBPA abort with UPDATE, CR0 = 0, its own Stream
//!    table and queues in the crash region, enable) and enables its Event queue: the in-flight
//!    DMA's refusal is forwarded there (F_TRANSLATION, S2 = 1, CLASS = IN, InputAddr = A's IOVA,
//!    IPA = its page: the terminating STE has no stage 1, so the device's address is the IPA), and
//!    so is the refusal of a kick after the reset (the stream stays fenced: B's STE is invalid);
//!    the report still names the dead kernel's stream;
//! 7. B gives the edu its own stage 1 (IOVA 0x2_0000_0000): DMA into the crash region works; the
//!    read kick of step 3 brought the edu none of A's bytes; a mapping onto A's buffer is refused
//!    by the crash-mode DMA policy and recorded (InputAddr = B's IOVA, IPA = A's page).
//!
//! `scripts/run --kernel <fence> --features test-hooks --smp 1 --timeout 240
//!  --append "crashkernel=32M" -- -device edu,dma_mask=0xffffffffffffffff`
//!
//! With `fence.all-streams` on the command line (`--append "crashkernel=32M fence.all-streams"`),
//! A first configures every StreamID the SMMU offers ([`guest::fence::ALL_STREAMS`]): the same
//! checks, with thousands of live streams at the fence (`scripts/bench` compares the windows).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod scenario {
    use guest::dt::Reg;
    use guest::fence::{self, DeadKernel, Findings, Tally};
    use guest::rt::Context;
    use guest::{Failure, Outcome, check, println};

    guest::scenario!("fence", run);

    fn run(ctx: &Context) -> Outcome {
        fence::run_scenario(ctx, 1, |_| Ok(()), capture_kernel)
    }

    #[inline(never)]
    fn capture_kernel(ctx: &Context, crash: Reg, dead: &DeadKernel) -> Outcome {
        let tree = &ctx.dtb;
        let mut findings = Findings::default();
        let e = dead.first_edu()?;

        let mode = fence::check_mode(dead)?;
        findings.soft(
            "DMA in flight at the jump",
            fence::check_in_flight_at_jump(dead),
        );
        let edus = fence::adopt_edus(dead)?;
        let Some(edu) = &edus[0] else {
            return Err(Failure::new(format_args!("edu not adopted")));
        };
        fence::await_in_flight(dead, &edus)?;
        fence::check_dead_memory(dead, "over several DMA periods after the fence")?;
        fence::check_in_flight_recorded(dead)?;
        println!("1-2. fence raised; the in-flight DMA did not land and was recorded: ok");

        fence::kick_dead_devices(dead, &edus, 0x800, "before B touches the SMMU")?;
        fence::kick_dead_reads(dead, &edus)?;
        fence::check_dead_memory(dead, "after the kicks")?;
        println!("3. kicks through A's old configuration refused and recorded: ok");

        fence::check_dead_memory_read_only(dead)?;
        println!("4. A's memory readable, read-only: ok");

        findings.soft(
            "the fault report after the fence",
            fence::check_report(tree, dead, &mode, "after the fence"),
        );
        println!("5. fault report checked");

        let smmu = fence::reset_smmu(tree, crash, &[e.sid])?;
        let mut tally = Tally::default();
        fence::drain(&smmu, &mut tally, "once B enabled it")?;
        findings.soft(
            "the in-flight DMA's record forwarded to B's Event queue",
            fence::expect_forwarded_in_flight(&tally, &e),
        );
        fence::kick_dead_devices(dead, &edus, 0x900, "after B's SMMU reset")?;
        fence::drain(&smmu, &mut tally, "after the kicks")?;
        let kick = e.in_flight + 0x900;
        let found = tally.find(|r| fence::is_terminated_write(r, e.sid, kick..kick + 4));
        check!(
            found.is_some(),
            "no record of the kick to A's IOVA {kick:#x} after B's reset in B's Event queue \
             (F_TRANSLATION, S2 = 1, CLASS = IN, InputAddr = IPA = the IOVA)"
        );
        println!(
            "B: forwarded after B enabled its queue: {}",
            found.unwrap_or_default()
        );
        findings.soft(
            "the fault report after B's SMMU reset",
            fence::check_report(tree, dead, &mode, "after B's SMMU reset"),
        );
        println!("6. B's SMMU reset, records forwarded to B's Event queue: checked");

        fence::configure_own_stage1(&smmu, 0, &e)?;
        fence::check_own_dma(&smmu, &mut tally, 0, &e, edu, None)?;
        fence::check_dead_memory(dead, "at the end")?;
        findings.soft(
            "the fault report at the end",
            fence::check_report(tree, dead, &mode, "at the end"),
        );
        println!("7. B's own stage 1: crash region reachable, A's memory not: ok");
        findings.verdict()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
