//! Scenario *fence-keep*: the simulated kexec of *fence*, with a capture kernel that does NOT
//! reset the SMMU: like Linux's pending "adopt the stream table for kdump" work, it keeps SMMUEN = 1
//! and the dead kernel's Stream table (in the dump, read-only to it) and moves only its Command
//! queue into the crash region. The capture kernel B checks:
//!
//! 1. crash mode; A's DMA was in flight at the jump, did not land, and was recorded; kicked
//!    through A's configuration it still lands nowhere and is recorded;
//! 2. A's memory is intact and read-only; the fault report names the stream;
//! 3. a consistent register view of the SMMU A left: the ID registers A saw, CR0 = CR0ACK with
//!    SMMUEN, CMDQEN and EVENTQEN as A set them, CR1, CR2, GBPA, IRQ_CTRL, STRTAB_BASE(_CFG),
//!    CMDQ_BASE and EVENTQ_BASE as A wrote them, A's Command queue empty and without error, no
//!    global error active; A's STE for the edu, read with CPU loads from A's table, is the stage 1
//!    STE A wrote;
//! 4. the Command queue moved with SMMUEN kept at 1 (CMDQEN off, CMDQ_BASE/PROD/CONS, CMDQEN on:
//!    section 6.3.26 allows it), then CFGI_ALL + CMD_SYNC complete through it;
//! 5. after the CFGI_ALL (which makes the emulation recompose every stream from A's table), A's
//!    in-flight/kicked DMA still does not land anywhere (A's IOVA, A's buffer by PA, a crash-region
//!    page by PA), each refusal is recorded, and A's memory is unchanged; the report agrees.
//!
//! `scripts/run --kernel <fence-keep> --features test-hooks --smp 1 --timeout 240
//!  --append "crashkernel=32M" -- -device edu,dma_mask=0xffffffffffffffff`
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod scenario {
    use guest::dt::Reg;
    use guest::fence::{self, DeadKernel, DeadSmmu, Findings};
    use guest::rt::Context;
    use guest::smmu::{Command, Smmu, Ste, SyncSignal, cmdq_cons, cr0, gerror, reg};
    use guest::{Failure, Outcome, check, println};

    guest::scenario!("fence-keep", run);

    fn run(ctx: &Context) -> Outcome {
        let crash = fence::crash_region(ctx)?;
        match fence::received(crash)? {
            None => fence::dead_kernel(ctx, crash, 1),
            Some(dead) => capture_kernel(ctx, crash, &dead),
        }
    }

    /// The registers that must read as A left them: (name, now, A's).
    fn view(smmu: &Smmu, a: &DeadSmmu) -> [(&'static str, u64, u64); 13] {
        let r32 = |off| u64::from(smmu.read32(off));
        [
            ("IDR0", r32(reg::IDR0), a.idr0.into()),
            ("IDR1", r32(reg::IDR1), a.idr1.into()),
            ("IDR5", r32(reg::IDR5), a.idr5.into()),
            ("CR0", r32(reg::CR0), a.cr0.into()),
            ("CR0ACK", r32(reg::CR0ACK), a.cr0.into()),
            ("CR1", r32(reg::CR1), a.cr1.into()),
            ("CR2", r32(reg::CR2), a.cr2.into()),
            ("GBPA", r32(reg::GBPA), a.gbpa.into()),
            ("IRQ_CTRL", r32(reg::IRQ_CTRL), a.irq_ctrl.into()),
            ("STRTAB_BASE", smmu.read64(reg::STRTAB_BASE), a.strtab_base),
            (
                "STRTAB_BASE_CFG",
                r32(reg::STRTAB_BASE_CFG),
                a.strtab_base_cfg.into(),
            ),
            ("CMDQ_BASE", smmu.read64(reg::CMDQ_BASE), a.cmdq_base),
            ("EVENTQ_BASE", smmu.read64(reg::EVTQ_BASE), a.evtq_base),
        ]
    }

    fn check_register_view(smmu: &Smmu, dead: &DeadKernel, findings: &mut Findings) -> Outcome {
        let a = &dead.smmu;
        for (name, now, was) in view(smmu, a) {
            println!("B: {name:16} {now:#018x} (A left {was:#018x})");
            check!(
                now == was,
                "the SMMU's {name} reads {now:#x} in the capture kernel; the dead kernel left \
                 {was:#x}"
            );
        }
        let want = (cr0::SMMUEN.set() | cr0::CMDQEN.set() | cr0::EVENTQEN.set()) as u32;
        check!(
            a.cr0 & want == want,
            "A left CR0 {:#x}: SMMUEN, CMDQEN and EVENTQEN should all be set",
            a.cr0
        );
        let prod = smmu.read32(reg::CMDQ_PROD);
        let cons = u64::from(smmu.read32(reg::CMDQ_CONS));
        println!("B: CMDQ_PROD {prod:#x} CMDQ_CONS {cons:#x}");
        check!(
            prod == a.cmdq_prod
                && cmdq_cons::RD.get(cons) == u64::from(prod)
                && cmdq_cons::ERR.get(cons) == cmdq_cons::CERROR_NONE,
            "A's Command queue reads PROD {prod:#x} CONS {cons:#x}; A left PROD {:#x}, all \
             consumed, no error",
            a.cmdq_prod
        );
        let (active, g, n) = smmu.active_gerrors();
        println!("B: GERROR {g:#x} GERRORN {n:#x}");
        findings.soft(
            "no global error active in the adopted SMMU",
            if active == 0 {
                Ok(())
            } else {
                Err(Failure::new(format_args!(
                    "the SMMU the capture kernel adopts shows active global errors {active:#x} \
                     (GERROR {g:#x}, GERRORN {n:#x}){}: the dead kernel left none",
                    if u64::from(active) & gerror::EVENTQ_ABT_ERR.mask() != 0 {
                        "; EVENTQ_ABT_ERR: something was written to A's Event queue, which lies \
                         in the dump (read-only)"
                    } else {
                        ""
                    }
                )))
            },
        );
        for e in dead.edus() {
            let ste = fence::read_dead_ste(dead, e.sid)?;
            check!(
                ste == Ste::stage1(e.cd),
                "A's STE for SID {:#x} reads {:#x?}, want the stage 1 STE with CD {:#x} A wrote",
                e.sid,
                ste.0,
                e.cd
            );
            println!(
                "B: A's STE for SID {:#x} (A's table, CPU loads): stage 1, CD {:#x}",
                e.sid, e.cd
            );
        }
        Ok(())
    }

    #[inline(never)]
    fn capture_kernel(ctx: &Context, crash: Reg, dead: &DeadKernel) -> Outcome {
        let tree = &ctx.dtb;
        let mut findings = Findings::default();

        let mode = fence::check_mode(dead)?;
        findings.soft(
            "DMA in flight at the jump",
            fence::check_in_flight_at_jump(dead),
        );
        let edus = fence::adopt_edus(dead)?;
        fence::await_in_flight(dead, &edus)?;
        fence::check_dead_memory(dead, "over several DMA periods after the fence")?;
        fence::check_in_flight_recorded(dead)?;
        fence::kick_dead_devices(dead, &edus, 0x800, "before B touches the SMMU")?;
        fence::check_dead_memory(dead, "after the kicks")?;
        println!("1. in-flight DMA and kicks refused and recorded: ok");

        fence::check_dead_memory_read_only(dead)?;
        findings.soft(
            "the fault report after the fence",
            fence::check_report(tree, dead, &mode, "after the fence"),
        );
        println!("2. A's memory read-only; fault report checked");

        let smmu = fence::probe_smmu(tree)?;
        check_register_view(&smmu, dead, &mut findings)?;
        println!("3. the adopted SMMU's register view is A's: checked");

        smmu.move_command_queue()
            .map_err(|e| Failure::new(format_args!("B: moving the Command queue: {e}")))?;
        let (cr0_now, ack) = (smmu.read32(reg::CR0), smmu.read32(reg::CR0ACK));
        let base = smmu.read64(reg::CMDQ_BASE);
        println!("B: Command queue moved: CMDQ_BASE {base:#x}, CR0 {cr0_now:#x} CR0ACK {ack:#x}");
        check!(
            cr0_now == dead.smmu.cr0 && ack == cr0_now,
            "CR0 {cr0_now:#x} CR0ACK {ack:#x} after the Command queue moved; want A's {:#x} \
             (SMMUEN kept)",
            dead.smmu.cr0
        );
        check!(
            base == smmu.own_cmdq_base() && crash.base <= base && base < crash.end(),
            "CMDQ_BASE reads {base:#x}, want B's queue {:#x} in the crash region",
            smmu.own_cmdq_base()
        );
        for (name, now, was) in view(&smmu, &dead.smmu) {
            if name != "CMDQ_BASE" {
                check!(
                    now == was,
                    "{name} reads {now:#x} after the Command queue moved, A left {was:#x}"
                );
            }
        }
        smmu.issue(&[Command::CfgiAll, Command::Sync(SyncSignal::None)])
            .map_err(|e| {
                Failure::new(format_args!(
                    "B: CFGI_ALL + CMD_SYNC through the moved queue: {e}"
                ))
            })?;
        println!("4. Command queue moved with SMMUEN = 1; CFGI_ALL + CMD_SYNC completed: ok");

        // After the CFGI_ALL: the emulation recomposed the edu's stream from A's (stage 1) STE.
        // The device must still reach nothing; the record shows whether it is still on the
        // terminating stage 2 (a write at the address) or now walks A's stage 1 (a refused read
        // of A's CD, which the crash-mode DMA policy does not map).
        let mut lifted = None;
        for (i, e) in dead.edus.iter().enumerate() {
            let (Some(e), Some(edu)) = (e, &edus[i]) else {
                continue;
            };
            let page = fence::fresh_crash_page();
            let kicks = [
                (
                    e.in_flight + 0xa00,
                    e.target,
                    "A's IOVA into A's buffer, after CFGI_ALL",
                ),
                (
                    e.target + 0xa10,
                    e.target,
                    "A's buffer by PA, after CFGI_ALL",
                ),
                (
                    page + 0xa00,
                    page,
                    "a crash-region page by PA, after CFGI_ALL",
                ),
            ];
            for (target, watch, how) in kicks {
                let r = fence::kick_write_recorded(edu, e.sid, target, watch, how)?;
                if r == fence::Recorded::AsCdFetch {
                    lifted.get_or_insert((e.sid, target));
                }
            }
        }
        findings.soft(
            "the dead kernel's stream stays on the terminating stage 2 after CFGI_ALL",
            match lifted {
                None => Ok(()),
                Some((sid, target)) => Err(Failure::new(format_args!(
                    "after B's CFGI_ALL over A's Stream table, SID {sid:#x}'s refused write to \
                     {target:#x} is recorded as a read (a stage 2 fault on fetching A's CD): the \
                     fence was lifted and the dead kernel's device translates through A's own \
                     stage 1 again, although B never configured it"
                ))),
            },
        );
        fence::check_dead_memory(dead, "at the end")?;
        findings.soft(
            "the fault report at the end",
            fence::check_report(tree, dead, &mode, "at the end"),
        );
        println!("5. after CFGI_ALL, A's DMA still refused and recorded, A's memory unchanged: ok");
        findings.verdict()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
