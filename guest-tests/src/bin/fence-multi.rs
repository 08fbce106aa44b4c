//! Scenario *fence-multi*: the simulated kexec of *fence* with two devices, each with DMA in
//! flight at the jump: an edu on the root bus and one behind a PCIe root port (StreamIDs in two
//! level 2 ranges of the Stream table, e.g. 0x8 and 0x100). The dead kernel A gives each its own
//! stage 1 context and IOVA window ([`guest::fence`]). The capture kernel B checks:
//!
//! 1. crash mode; both DMAs were in flight at the jump, neither landed, each was refused and
//!    recorded under its own StreamID;
//! 2. kicked through A's old configuration (A's IOVA, A's buffer by PA, a crash-region page by
//!    PA), each device's DMA lands nowhere and is recorded under its own StreamID only;
//! 3. A's memory is read-only and intact; the fault report lists both StreamIDs in
//!    `live-streams:` with a `fault:` line each;
//! 4. after B's SMMU reset, both refusals of the in-flight DMAs are forwarded into B's Event
//!    queue, and kicks after the reset are too, each under its StreamID;
//! 5. B configures only the first edu (its own stage 1): its DMA into the crash region works, a
//!    mapping onto A's buffer is refused. The second stays fenced whatever B writes for it: with
//!    the invalid STE the reset left, with a *bypass* STE (which would give it the crash-mode DMA
//!    policy, crash region read-write) and with an *abort* STE, its DMA into a crash-region page by
//!    PA does not land and is recorded under its StreamID, never the other's;
//! 6. the report still names both streams and agrees with PORTCULLIS_TEST_FAULTS.
//!
//! `scripts/run --kernel <fence-multi> --features test-hooks --smp 1 --timeout 300
//!  --append "crashkernel=32M" -- -device edu,dma_mask=0xffffffffffffffff
//!  -device pcie-root-port,id=rp1,bus=pcie.0,chassis=1
//!  -device edu,bus=rp1,dma_mask=0xffffffffffffffff`
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod scenario {
    use guest::dt::Reg;
    use guest::fence::{self, DeadKernel, Findings, MAX_EDUS, Tally};
    use guest::rt::Context;
    use guest::smmu::Ste;
    use guest::{Failure, Outcome, check, println};

    guest::scenario!("fence-multi", run);

    fn run(ctx: &Context) -> Outcome {
        let crash = fence::crash_region(ctx)?;
        match fence::received(crash)? {
            None => fence::dead_kernel(ctx, crash, MAX_EDUS),
            Some(dead) => capture_kernel(ctx, crash, &dead),
        }
    }

    #[inline(never)]
    fn capture_kernel(ctx: &Context, crash: Reg, dead: &DeadKernel) -> Outcome {
        let tree = &ctx.dtb;
        let mut findings = Findings::default();
        let (Some(first), Some(second)) = (dead.edus[0], dead.edus[1]) else {
            return Err(Failure::new(format_args!(
                "the handoff names fewer than two edus"
            )));
        };
        check!(
            first.sid != second.sid,
            "both edus have StreamID {:#x}",
            first.sid
        );
        println!(
            "B: the dead kernel's edus: {} SID {:#x}, {} SID {:#x}",
            first.function.bdf, first.sid, second.function.bdf, second.sid
        );

        let mode = fence::check_mode(dead)?;
        findings.soft(
            "DMA in flight at the jump",
            fence::check_in_flight_at_jump(dead),
        );
        let edus = fence::adopt_edus(dead)?;
        let (Some(edu0), Some(edu1)) = (&edus[0], &edus[1]) else {
            return Err(Failure::new(format_args!("edus not adopted")));
        };
        fence::await_in_flight(dead, &edus)?;
        fence::check_dead_memory(dead, "over several DMA periods after the fence")?;
        fence::check_in_flight_recorded(dead)?;
        println!("1. both in-flight DMAs refused and recorded under their own StreamIDs: ok");

        fence::kick_dead_devices(dead, &edus, 0x800, "before B touches the SMMU")?;
        fence::kick_dead_reads(dead, &edus)?;
        fence::check_dead_memory(dead, "after the kicks")?;
        println!("2. kicks through A's old configuration refused, recorded per StreamID: ok");

        fence::check_dead_memory_read_only(dead)?;
        findings.soft(
            "the fault report after the fence",
            fence::check_report(tree, dead, &mode, "after the fence"),
        );
        println!("3. A's memory read-only; fault report checked");

        let smmu = fence::reset_smmu(tree, crash, &[first.sid, second.sid])?;
        let mut tally = Tally::default();
        fence::drain(&smmu, &mut tally, "once B enabled it")?;
        for e in [&first, &second] {
            findings.soft(
                "an in-flight DMA's record forwarded to B's Event queue",
                fence::expect_forwarded_in_flight(&tally, e),
            );
        }
        fence::kick_dead_devices(dead, &edus, 0x900, "after B's SMMU reset")?;
        fence::drain(&smmu, &mut tally, "after the kicks")?;
        for e in [&first, &second] {
            let kick = e.in_flight + 0x900;
            let found = tally.find(|r| fence::is_terminated_write(r, e.sid, kick..kick + 4));
            check!(
                found.is_some(),
                "no record of edu {}'s kick to A's IOVA {kick:#x} after B's reset in B's Event \
                 queue (F_TRANSLATION under SID {:#x}, S2 = 1, CLASS = IN)",
                e.function.bdf,
                e.sid
            );
            println!("B: forwarded: {}", found.unwrap_or_default());
        }
        findings.soft(
            "the fault report after B's SMMU reset",
            fence::check_report(tree, dead, &mode, "after B's SMMU reset"),
        );
        println!("4. B's SMMU reset, records forwarded per StreamID: checked");

        fence::configure_own_stage1(&smmu, 0, &first)?;
        fence::check_own_dma(&smmu, &mut tally, 0, &first, edu0, Some(second.sid))?;
        println!(
            "5a. edu {} configured by B: crash region reachable, A's memory not: ok",
            first.function.bdf
        );

        // The second edu: not configured by B (its STE is invalid since the reset).
        fence::kick_crash_page(
            edu1,
            second.sid,
            0xa00,
            Some(first.sid),
            "unconfigured by B (invalid STE)",
        )?;
        fence::kick_write(
            edu1,
            second.sid,
            second.in_flight + 0xa00,
            second.target,
            Some(first.sid),
            "A's IOVA, unconfigured by B",
        )?;
        // A bypass STE would give it the crash-mode DMA policy, crash region read-write: the
        // fence keeps it terminated instead.
        fence::configure_stream(&smmu, second.sid, &Ste::bypass())?;
        fence::kick_crash_page(
            edu1,
            second.sid,
            0xb00,
            Some(first.sid),
            "after B wrote a bypass STE for it",
        )?;
        fence::configure_stream(&smmu, second.sid, &Ste::abort())?;
        fence::kick_crash_page(
            edu1,
            second.sid,
            0xc00,
            Some(first.sid),
            "after B wrote an abort STE for it",
        )?;
        fence::drain(&smmu, &mut tally, "after the second edu's kicks")?;
        fence::check_dead_memory(dead, "at the end")?;
        println!(
            "5b. edu {} not configured by B stays fenced (invalid, bypass, abort STEs): ok",
            second.function.bdf
        );

        findings.soft(
            "the fault report at the end",
            fence::check_report(tree, dead, &mode, "at the end"),
        );
        println!("6. fault report at the end checked");
        findings.verdict()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
