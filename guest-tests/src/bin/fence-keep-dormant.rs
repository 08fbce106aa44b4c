//! Scenario *fence-keep-dormant*: *fence-keep*'s capture kernel (it keeps SMMUEN = 1 and the dead
//! kernel's Stream table, moves its Command queue, issues CFGI_ALL), against a dead kernel whose
//! stage 1 for the edu lies in the crash region.
//!
//! In normal mode the host may write the crash region (read-write, execute-never), and its
//! devices may not reach it (the normal DMA policy leaves it unmapped). A dead kernel A points the
//! edu's STE at a CD and page tables it wrote at the crash region's base + 16 MiB, mapping A's
//! IOVA page 1 onto a crash-region page: a configuration the SMMU cannot walk in normal mode (the
//! CD fetch is refused by the normal DMA policy: checked), so it is dormant. A then starts its DMA
//! to that IOVA and kexecs, as in *fence*. The capture kernel B checks that the dead kernel's
//! device never reaches the capture kernel's memory:
//!
//! 1. after the fence, the in-flight DMA and kicks through A's IOVA are refused, the crash-region
//!    page A's tables name is untouched;
//! 2. after B adopts the SMMU (Command queue moved, CFGI_ALL + CMD_SYNC), a kick through A's IOVA
//!    still does not land in that crash-region page (the fence must not hand the stream back to
//!    the dead kernel's stage 1, which the crash-mode DMA policy, crash region read-write, would
//!    now let the SMMU walk).
//!
//! `scripts/run --kernel <fence-keep-dormant> --features test-hooks --smp 1 --timeout 240
//!  --append "crashkernel=32M" -- -device edu,dma_mask=0xffffffffffffffff`
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod scenario {
    use guest::dma::{PROBE, fill_memory, memory_changed};
    use guest::dt::Reg;
    use guest::fence::{self, DeadKernel, DeadSetup, Findings, PAGE};
    use guest::mmio::write64;
    use guest::rt::Context;
    use guest::smmu::{Command, Ste, SyncSignal, attr, cd, desc};
    use guest::{Failure, Outcome, check, println};

    guest::scenario!("fence-keep-dormant", run);

    /// Where A writes its dormant context: CD, level 0..3 tables, then the page it maps.
    const DORMANT_OFFSET: u64 = 16 << 20;
    const DORMANT_ASID: u16 = 3;
    const MAIR_NORMAL_NC: u64 = 0x44;

    fn dormant_base(crash: Reg) -> u64 {
        crash.base + DORMANT_OFFSET
    }

    /// The crash-region page A's dormant tables map A's IOVA page 1 onto.
    fn dormant_target(crash: Reg) -> u64 {
        dormant_base(crash) + 5 * PAGE
    }

    fn table_index(va: u64, level: u32) -> u64 {
        (va >> (12 + 9 * (3 - level))) & 511
    }

    /// A CD and 4 KiB-granule tables at `base` (as `Stage1Tables` builds them) mapping
    /// `window + PAGE` onto `dormant_target`.
    fn write_dormant_context(crash: Reg, window: u64, oas: u64) {
        let base = dormant_base(crash);
        // SAFETY: pages of the crash region the payload may write in normal mode, clear of the
        // loaded capture kernel (the first 2 MiB).
        unsafe {
            for a in (base..base + 5 * PAGE).step_by(8) {
                write64(a, 0);
            }
            fill_memory(dormant_target(crash), PAGE);
            for level in 0..3u32 {
                let table = base + PAGE * u64::from(level + 1);
                let next = table + PAGE;
                let d =
                    desc::VALID.set() | desc::TABLE_OR_PAGE.set() | desc::OUTPUT_ADDR.addr(next);
                write64(table + 8 * table_index(window, level), d);
            }
            let page = desc::VALID.set()
                | desc::TABLE_OR_PAGE.set()
                | desc::ATTR_INDX.val(0)
                | desc::AP.val(desc::AP_RW_ANY)
                | desc::SH.val(attr::OUTER_SHAREABLE)
                | desc::AF.set()
                | desc::OUTPUT_ADDR.addr(dormant_target(crash))
                | desc::PXN.set()
                | desc::UXN.set();
            write64(base + 4 * PAGE + 8 * table_index(window + PAGE, 3), page);
            let word0 = cd::T0SZ.val(16)
                | cd::TG0.val(0)
                | cd::IR0.val(attr::NON_CACHEABLE)
                | cd::OR0.val(attr::NON_CACHEABLE)
                | cd::SH0.val(attr::OUTER_SHAREABLE)
                | cd::TG1.val(cd::TG1_4K)
                | cd::EPD1.set()
                | cd::V.set()
                | cd::IPS.val(oas)
                | cd::AA64.set()
                | cd::R.set()
                | cd::A.set()
                | cd::ASID.val(DORMANT_ASID.into());
            write64(base + 8, cd::TTB0.addr(base + PAGE));
            write64(base + 24, MAIR_NORMAL_NC);
            write64(base, word0);
        }
    }

    /// A's preparation: the edu's STE re-pointed at the dormant context, which the SMMU cannot
    /// walk in normal mode.
    fn make_dormant(setup: &DeadSetup) -> Outcome {
        let (edu, sid) = setup.first_edu()?;
        let window = fence::window_of(0);
        write_dormant_context(setup.crash, window, setup.smmu.features.oas);
        setup.configure(sid, &Ste::stage1(dormant_base(setup.crash)))?;
        println!(
            "A: edu SID {sid:#x} now on a CD at {:#x} in the crash region: IOVA {:#x} -> {:#x}",
            dormant_base(setup.crash),
            window + PAGE,
            dormant_target(setup.crash)
        );
        edu.from_device(window + PAGE + 0x400, PROBE)
            .map_err(|e| Failure::new(format_args!("A: DMA through the dormant context: {e}")))?;
        // SAFETY: the crash-region page A filled.
        let landed = unsafe { memory_changed(dormant_target(setup.crash), PAGE) };
        check!(
            landed.is_none(),
            "A: a DMA through a CD in the crash region landed in normal mode at {:#x}: the \
             normal DMA policy should not let the SMMU fetch it",
            landed.map_or(0, |l| l.0)
        );
        println!("A: the dormant context cannot be walked in normal mode: ok");
        Ok(())
    }

    fn run(ctx: &Context) -> Outcome {
        fence::run_scenario(ctx, 1, make_dormant, capture_kernel)
    }

    #[inline(never)]
    fn capture_kernel(ctx: &Context, crash: Reg, dead: &DeadKernel) -> Outcome {
        let tree = &ctx.dtb;
        let mut findings = Findings::default();
        let e = dead.first_edu()?;
        let target = dormant_target(crash);
        fence::check_mode(dead)?;
        let edus = fence::adopt_edus(dead)?;
        let Some(edu) = &edus[0] else {
            return Err(Failure::new(format_args!("edu not adopted")));
        };
        fence::await_in_flight(dead, &edus)?;
        fence::check_dead_memory(dead, "after the fence")?;
        // SAFETY: the crash-region page A's dormant tables map.
        let landed = unsafe { memory_changed(target, PAGE) };
        check!(
            landed.is_none(),
            "the dead kernel's in-flight DMA landed in the crash region at {:#x}",
            landed.map_or(0, |l| l.0)
        );
        fence::check_in_flight_recorded(dead)?;
        fence::kick_write_recorded(
            edu,
            e.sid,
            e.in_flight + 0x800,
            target,
            "A's IOVA (dormant tables in the crash region), before B touches the SMMU",
        )?;
        println!("1. fenced: the dead kernel's device does not reach the crash region: ok");

        let smmu = fence::probe_smmu(tree)?;
        smmu.move_command_queue()
            .map_err(|err| Failure::new(format_args!("B: moving the Command queue: {err}")))?;
        smmu.issue(&[Command::CfgiAll, Command::Sync(SyncSignal::None)])
            .map_err(|err| Failure::new(format_args!("B: CFGI_ALL + CMD_SYNC: {err}")))?;
        println!("B: SMMU adopted: Command queue moved, CFGI_ALL + CMD_SYNC done");
        findings.soft(
            "the dead kernel's device kept out of the crash region after CFGI_ALL",
            fence::kick_write_recorded(
                edu,
                e.sid,
                e.in_flight + 0x900,
                target,
                "A's IOVA (dormant tables in the crash region), after B's CFGI_ALL",
            )
            .map(|_| ()),
        );
        fence::check_dead_memory(dead, "at the end")?;
        println!("2. after B adopted the SMMU: checked");
        findings.verdict()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
