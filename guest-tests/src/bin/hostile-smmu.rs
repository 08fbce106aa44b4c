//! Scenario *hostile-smmu*: the host attacks the SMMU Portcullis emulates: Stream table, Command and
//! Event queue bases in Portcullis' memory and the fault report, level 1 descriptors pointing
//! there, huge queue and table sizes, CMDQ_PROD beyond the queue, illegal, stage 2 and EL2
//! commands (CERROR_ILL), CMD_SYNC with an MSI into Portcullis, accesses without a valid syndrome
//! or of the wrong size, writes to read-only registers, GBPA bypass with SMMUEN = 0 then edu DMA
//! into Portcullis, commands from two CPUs while a third re-points STRTAB_BASE, and last (it took Portcullis down at
//! 91d8669) a batch of CFGI_STE_RANGE(31) over a 2^16-entry linear table in one CMDQ_PROD write.
//! Each attack is one `ATTACK` line (see `guest::hostile`).
//!
//! `scripts/run --kernel <hostile-smmu> --features test-hooks --smp 3 --append "crashkernel=32M"
//!  -- -device edu,dma_mask=0xffffffffffffffff` (two CPUs race the boot CPU in one attack)
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod scenario {
    use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use guest::hostile::{self, Attack, Env, attempt, ldp, str_post};
    use guest::mmio::{mmio_read16, mmio_read32, mmio_write8, mmio_write32, read64, write64};
    use guest::rt::{self, Context};
    use guest::smmu::{
        Command, Smmu, SmmuError, SmmuMemory, SyncSignal, cmd, cmdq_cons, cr0, queue_base, reg,
        strtab,
    };
    use guest::{Failure, Outcome, check, println, psci};

    guest::scenario!("hostile-smmu", run);

    static MEMORY: SmmuMemory = SmmuMemory::new();
    const SID: u32 = 8;

    fn smmu(env: &Env) -> Result<Smmu, Failure> {
        let frame = env
            .ctx
            .dtb
            .smmu()
            .ok_or_else(|| Failure::new(format_args!("no arm,smmu-v3 node")))?;
        let s = Smmu::probe(frame.base, &MEMORY)
            .map_err(|e| Failure::new(format_args!("probing the SMMU: {e}")))?;
        // A previous attack may have left a command error active: acknowledge and retry.
        let mut last = None;
        for _ in 0..3 {
            let _ = s.set_cr0(0);
            s.acknowledge_gerrors();
            match s.reset(SID) {
                Ok(()) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(Failure::new(format_args!(
            "resetting the SMMU: {}",
            last.map_or(SmmuError::Missing("?"), |e| e)
        )))
    }

    /// The command error `cmds` end with (CMDQ_CONS.ERR), if any.
    fn issue_error(s: &Smmu, cmds: &[Command]) -> Result<Option<u64>, Failure> {
        match s.issue(cmds) {
            Ok(()) => Ok(None),
            Err(SmmuError::CommandError { err, .. }) => Ok(Some(err)),
            Err(e) => Err(Failure::new(format_args!("issuing {cmds:?}: {e}"))),
        }
    }

    fn expect_ill(env: &Env, command: Command) -> Outcome {
        let s = smmu(env)?;
        let err = issue_error(&s, &[command, Command::Sync(SyncSignal::None)])?;
        check!(
            err == Some(cmdq_cons::CERROR_ILL),
            "{command:?} gave command error {err:?}, want CERROR_ILL"
        );
        Ok(())
    }

    fn illegal_opcode(env: &Env) -> Outcome {
        expect_ill(env, Command::Raw([0xff, 0]))
    }

    fn stage2_command(env: &Env) -> Outcome {
        expect_ill(
            env,
            Command::TlbiS2Ipa {
                vmid: 2,
                ipa: env.hyp.base,
            },
        )
    }

    fn el2_command(env: &Env) -> Outcome {
        expect_ill(env, Command::TlbiEl2All)
    }

    /// GERROR.MSI_CMDQ_ABT_ERR: a CMD_SYNC's completion MSI aborted (section 7.5).
    const MSI_CMDQ_ABT_ERR: u32 = 1 << 4;

    /// CMD_SYNC, CS = SIG_IRQ, MSIData `data`, MSIADDR `addr`; the command error, if any, and the
    /// active global errors after it.
    fn sync_msi(s: &Smmu, addr: u64, data: u32) -> Result<(Option<u64>, u32), Failure> {
        s.acknowledge_gerrors();
        let w0 = cmd::OPCODE.val(cmd::SYNC) | cmd::SYNC_CS.val(0b01) | u64::from(data) << 32;
        let w1 = addr & 0x000f_ffff_ffff_fffc;
        let err = issue_error(s, &[Command::Raw([w0, w1])])?;
        let (active, _, _) = s.active_gerrors();
        Ok((err, active))
    }

    /// An MSI aimed where no device of the host may write: the sync completes, the MSI aborts
    /// (GERROR.MSI_CMDQ_ABT_ERR) and nothing lands (the common checks cover Portcullis' memory
    /// and the report; `visible` is an address this CPU can read to see for itself).
    fn sync_msi_refused(env: &Env, addr: u64, visible: Option<u64>) -> Outcome {
        let s = smmu(env)?;
        // SAFETY: `visible` is host RAM this CPU may read (the crash region in normal mode).
        let before = visible.map(|v| unsafe { read64(v) });
        let counted = counters()?;
        let (err, active) = sync_msi(&s, addr, 0xdead)?;
        println!("  CMD_SYNC with an MSI to {addr:#x}: error {err:?}, GERROR active {active:#x}");
        check!(
            err.is_none(),
            "the CMD_SYNC stopped the queue ({err:?}); it should complete with its MSI aborted"
        );
        check!(
            active & MSI_CMDQ_ABT_ERR != 0,
            "GERROR active {active:#x}: no MSI_CMDQ_ABT_ERR for the refused MSI"
        );
        // SAFETY: as above.
        let after = visible.map(|v| unsafe { read64(v) });
        check!(
            before == after,
            "the MSI landed at {addr:#x}: {before:x?} -> {after:x?}"
        );
        let now = counters()?;
        check!(
            now.msi_aborted == counted.msi_aborted + 1 && now.msi_written == counted.msi_written,
            "Portcullis counted MSIs {counted:?} -> {now:?}: want exactly one more aborted"
        );
        s.acknowledge_gerrors();
        Ok(())
    }

    /// Portcullis' counters (test hook), as a failure if the hook does not answer.
    fn counters() -> Result<guest::hooks::Counters, Failure> {
        guest::hooks::counters()
            .map_err(|e| Failure::new(format_args!("PORTCULLIS_TEST_COUNTERS: {e}")))
    }

    fn sync_msi_portcullis(env: &Env) -> Outcome {
        sync_msi_refused(env, env.canary(0), None)?;
        sync_msi_refused(env, env.canary(1), None)
    }

    fn sync_msi_crash_region(env: &Env) -> Outcome {
        let crash = env.crash()?;
        sync_msi_refused(env, crash.base, Some(crash.base))?;
        let last = crash.base + crash.size - 8;
        sync_msi_refused(env, last, Some(last))
    }

    fn sync_msi_report(env: &Env) -> Outcome {
        sync_msi_refused(env, env.report()?.base, None)
    }

    /// The control: an MSI to the payload's own memory lands (as Linux's MSI polling needs), with
    /// no global error.
    fn sync_msi_own_memory(env: &Env) -> Outcome {
        let s = smmu(env)?;
        let target = env.scratch(0x60_0000);
        // SAFETY: scratch host RAM of the payload.
        unsafe { write64(target, u64::MAX) };
        let counted = counters()?;
        let (err, active) = sync_msi(&s, target, 0x1234_5678)?;
        let now = counters()?;
        check!(
            now.msi_written == counted.msi_written + 1,
            "Portcullis counted MSIs {counted:?} -> {now:?}: want one more written"
        );
        // SAFETY: as above.
        let now = unsafe { read64(target) };
        check!(err.is_none(), "the CMD_SYNC gave command error {err:?}");
        check!(active == 0, "GERROR active {active:#x} after a good MSI");
        check!(
            now == 0xffff_ffff_1234_5678,
            "MSI to {target:#x}: the word reads {now:#x}, want MSIData 0x12345678 in its low half"
        );
        Ok(())
    }

    /// Stream table at `base` with `cfg`, SMMUEN, then CFGI_ALL + SYNC (any error is fine).
    fn strtab_at(env: &Env, base: u64, cfg: u32) -> Outcome {
        let s = smmu(env)?;
        let queues = (cr0::CMDQEN.set() | cr0::EVENTQEN.set()) as u32;
        let _ = s.set_cr0(queues);
        s.write64(reg::STRTAB_BASE, strtab::BASE_ADDR.addr(base));
        s.write32(reg::STRTAB_BASE_CFG, cfg);
        let _ = s.set_cr0(queues | cr0::SMMUEN.set() as u32);
        let err = issue_error(&s, &[Command::CfgiAll, Command::Sync(SyncSignal::None)])?;
        println!("  Stream table at {base:#x} (cfg {cfg:#x}): CFGI_ALL error {err:?}");
        let mut n = 0;
        s.drain_events(|e| {
            if n < 3 {
                println!("  event {e}");
            }
            n += 1;
        });
        Ok(())
    }

    fn strtab_portcullis(env: &Env) -> Outcome {
        strtab_at(env, env.canary(0), 8) // linear, 2^8 STEs
    }

    fn strtab_report(env: &Env) -> Outcome {
        strtab_at(env, env.report()?.base, 8)
    }

    fn strtab_l1_portcullis(env: &Env) -> Outcome {
        // A level 1 table of the payload's whose descriptors point into Portcullis.
        let l1 = env.scratch(0x20_0000);
        for i in 0..256u64 {
            let l2 = env.canary(1) + (i % 2) * 0x40;
            // SAFETY: scratch host RAM.
            unsafe { write64(l1 + 8 * i, 9 | (l2 & 0x000f_ffff_ffff_ffc0)) };
        }
        strtab_at(env, l1, Smmu::strtab_base_cfg_for(16))
    }

    fn strtab_huge(env: &Env) -> Outcome {
        // Linear, log2size 63 (the field's maximum): far beyond SIDSIZE.
        strtab_at(env, env.scratch(0x40_0000), 63)
    }

    fn queue_at(env: &Env, cmdq: u64, log2: u64) -> Outcome {
        let s = smmu(env)?;
        let _ = s.set_cr0(cr0::EVENTQEN.set() as u32);
        s.write64(
            reg::CMDQ_BASE,
            queue_base::ADDR.addr(cmdq) | queue_base::LOG2SIZE.val(log2),
        );
        s.write32(reg::CMDQ_PROD, 0);
        s.write32(reg::CMDQ_CONS, 0);
        let _ = s.set_cr0((cr0::CMDQEN.set() | cr0::EVENTQEN.set()) as u32);
        s.write32(reg::CMDQ_PROD, 8);
        hostile::sleep_ms(5);
        let cons = s.cmdq_cons();
        let (active, _, _) = s.active_gerrors();
        println!(
            "  Command queue at {cmdq:#x} (log2 {log2}): CONS {cons:#x}, GERROR active {active:#x}"
        );
        Ok(())
    }

    fn cmdq_portcullis(env: &Env) -> Outcome {
        queue_at(env, env.canary(0), 8)
    }

    fn cmdq_report(env: &Env) -> Outcome {
        queue_at(env, env.report()?.base, 8)
    }

    fn cmdq_huge_log2(env: &Env) -> Outcome {
        queue_at(env, env.scratch(0x40_0000), 31)
    }

    fn evtq_at(env: &Env, evtq: u64) -> Outcome {
        let s = smmu(env)?;
        let _ = s.set_cr0(cr0::CMDQEN.set() as u32);
        s.write64(
            reg::EVTQ_BASE,
            queue_base::ADDR.addr(evtq) | queue_base::LOG2SIZE.val(8),
        );
        s.write32(reg::EVTQ_PROD, 0);
        s.write32(reg::EVTQ_CONS, 0);
        let _ = s.set_cr0((cr0::CMDQEN.set() | cr0::EVENTQEN.set() | cr0::SMMUEN.set()) as u32);
        // An STE with a reserved Config: Portcullis makes up C_BAD_STE for it.
        let bad = guest::smmu::Ste([1 | 0b110 << 1, 0, 0, 0, 0, 0, 0, 0]);
        let _ = s.write_ste(SID, &bad);
        let err = issue_error(
            &s,
            &[
                Command::CfgiSte { sid: SID },
                Command::Sync(SyncSignal::None),
            ],
        )?;
        let _ = s.read32(reg::EVTQ_PROD);
        hostile::sleep_ms(5);
        println!(
            "  Event queue at {evtq:#x}: CFGI_STE error {err:?}, EVTQ_PROD {:#x}",
            s.read32(reg::EVTQ_PROD)
        );
        Ok(())
    }

    fn evtq_portcullis(env: &Env) -> Outcome {
        evtq_at(env, env.canary(1))
    }

    fn evtq_report(env: &Env) -> Outcome {
        evtq_at(env, env.report()?.base)
    }

    fn prod_beyond(env: &Env) -> Outcome {
        let s = smmu(env)?;
        for prod in [0xf_ffff, 0x8000_0000 | 0x7_ffff, 0xffff_ffff, 1 << 9] {
            s.write32(reg::CMDQ_PROD, prod);
            hostile::sleep_ms(2);
            println!("  CMDQ_PROD {prod:#x}: CONS {:#x}", s.cmdq_cons());
        }
        Ok(())
    }

    fn isv0_access(env: &Env) -> Outcome {
        let frame = env.ctx.dtb.smmu().map_or(0, |r| r.base);
        // SAFETY: the SMMU frame; whatever Portcullis does (emulate or abort), it is caught.
        let a = attempt(|| unsafe {
            let _ = ldp(frame + reg::CR0);
        });
        // SAFETY: as above.
        let b = attempt(|| unsafe { str_post(frame + reg::GERRORN, 0) });
        println!("  LDP from CR0: {a:?}; post-indexed STR to GERRORN: {b:?}");
        Ok(())
    }

    fn wrong_size(env: &Env) -> Outcome {
        let frame = env.ctx.dtb.smmu().map_or(0, |r| r.base);
        // SAFETY: the SMMU frame; any abort is caught.
        let a = attempt(|| unsafe { mmio_write8(frame + reg::CR0, 0xff) });
        // SAFETY: as above.
        let b = attempt(|| unsafe {
            let _ = mmio_read16(frame + reg::IDR0 + 1);
        });
        // SAFETY: as above.
        let c = attempt(|| unsafe { write64(frame + reg::CR0, u64::MAX) });
        // SAFETY: as above (an unaligned 64-bit access).
        let d = attempt(|| unsafe { write64(frame + reg::STRTAB_BASE + 4, u64::MAX) });
        println!(
            "  8-bit CR0 write {a:?}; 16-bit IDR0 read {b:?}; 64-bit CR0 write {c:?}; unaligned {d:?}"
        );
        Ok(())
    }

    fn readonly_registers(env: &Env) -> Outcome {
        let s = smmu(env)?;
        for off in [reg::IDR0, reg::IDR1, reg::IDR5, reg::CR0ACK, reg::GERROR] {
            let before = s.read32(off);
            s.write32(off, !before);
            let after = s.read32(off);
            check!(
                after == before,
                "read-only SMMU register {off:#x} changed from {before:#x} to {after:#x}"
            );
        }
        Ok(())
    }

    fn gbpa_bypass_edu(env: &Env) -> Outcome {
        let (host, topology) = guest::dma::discover(&env.ctx.dtb)?;
        let (edus, n) = guest::dma::edus::<1>(&host, &topology, &env.ctx.dtb)?;
        check!(n == 1, "no edu: run with -device edu");
        let Some((edu, _)) = &edus[0] else {
            return Ok(());
        };
        let s = smmu(env)?;
        let _ = s.set_cr0(0);
        s.write32(reg::GBPA, 1 << 31); // UPDATE, ABORT = 0: bypass
        hostile::sleep_ms(2);
        for target in [env.canary(0), env.canary(1), env.report()?.base + 0x40] {
            let r = edu.from_device(target, 64);
            println!("  edu -> {target:#x} with GBPA bypass, SMMUEN = 0: {r:?}");
        }
        s.write32(reg::GBPA, (1 << 31) | (1 << 20));
        Ok(())
    }

    static RACE_SMMU: AtomicU64 = AtomicU64::new(0);
    static RACE_STOP: AtomicBool = AtomicBool::new(false);
    static RACE_WRITES: AtomicU64 = AtomicU64::new(0);
    static RACE_DONE: AtomicU64 = AtomicU64::new(0);
    const RACE_MAX_WRITES: u32 = 200;

    /// A secondary CPU: moves CMDQ_PROD two commands past CMDQ_CONS, acknowledges command errors,
    /// until told to stop.
    fn racer(_index: u64) {
        let base = RACE_SMMU.load(Ordering::SeqCst);
        let wrap_mask = (1u32 << 9) - 1; // index + wrap bit of a 2^8 queue
        // Bounded: each CMDQ_PROD write makes Portcullis run commands (and, at 91d8669, log a
        // line per lost event without a rate limit, which would drown the console).
        let mut writes = 0;
        while !RACE_STOP.load(Ordering::SeqCst) && writes < RACE_MAX_WRITES {
            writes += 1;
            // SAFETY: the SMMU frame's registers; single 32-bit accesses.
            unsafe {
                let cons = mmio_read32(base + reg::CMDQ_CONS) & wrap_mask;
                mmio_write32(base + reg::CMDQ_PROD, (cons + 2) & wrap_mask);
                let g = mmio_read32(base + reg::GERROR);
                mmio_write32(base + reg::GERRORN, g);
            }
            RACE_WRITES.fetch_add(1, Ordering::SeqCst);
        }
        RACE_DONE.fetch_add(1, Ordering::SeqCst);
    }

    fn race_strtab(env: &Env) -> Outcome {
        let s = smmu(env)?;
        let frame = env.ctx.dtb.smmu().map_or(0, |r| r.base);
        // Every queue slot a CFGI_STE or a CMD_SYNC, so the racers always find commands.
        let size = 1u32 << s.cmdq_ring().log2;
        for i in 0..size {
            let c = if i % 2 == 0 {
                Command::CfgiSte { sid: SID }
            } else {
                Command::Sync(SyncSignal::None)
            };
            s.replace_command(i, &c);
        }
        let mut cpus = [0u64; rt::MAX_CPUS];
        let n = env.ctx.dtb.cpus(&mut cpus);
        let me = rt::mpidr();
        RACE_SMMU.store(frame, Ordering::SeqCst);
        RACE_STOP.store(false, Ordering::SeqCst);
        rt::set_secondary_fn(racer);
        let mut started = 0;
        for (i, &m) in cpus[..n].iter().enumerate() {
            if m != me && psci::cpu_on(m, rt::secondary_entry_address(), i as u64) == 0 {
                started += 1;
            }
        }
        check!(
            started >= 2,
            "{started} racing CPUs started: run with --smp 3"
        );
        let queues = (cr0::CMDQEN.set() | cr0::EVENTQEN.set()) as u32;
        let bases = [
            s.own_strtab_base(),
            strtab::BASE_ADDR.addr(env.canary(0)),
            strtab::BASE_ADDR.addr(env.report()?.base),
            strtab::BASE_ADDR.addr(env.hyp.base),
        ];
        for round in 0..50 {
            s.write32(reg::CR0, queues);
            s.write64(reg::STRTAB_BASE, bases[round % bases.len()]);
            s.write32(reg::STRTAB_BASE_CFG, s.strtab_base_cfg());
            s.write32(reg::CR0, queues | cr0::SMMUEN.set() as u32);
        }
        RACE_STOP.store(true, Ordering::SeqCst);
        let start = rt::ticks();
        while RACE_DONE.load(Ordering::SeqCst) < started
            && rt::ticks().wrapping_sub(start) < rt::tick_hz() * 20
        {
            core::hint::spin_loop();
        }
        println!(
            "  {started} CPUs wrote CMDQ_PROD {} times while CPU 0 re-pointed STRTAB_BASE 50 times",
            RACE_WRITES.load(Ordering::SeqCst)
        );
        check!(
            RACE_DONE.load(Ordering::SeqCst) == started,
            "the racing CPUs did not stop within 20 s"
        );
        smmu(env).map(|_| ())
    }

    fn cfgi_batch(env: &Env) -> Outcome {
        let s = smmu(env)?;
        let queues = (cr0::CMDQEN.set() | cr0::EVENTQEN.set()) as u32;
        let _ = s.set_cr0(queues);
        // A linear table of 2^16 STEs (4 MiB of zeros: every STE invalid).
        s.write64(
            reg::STRTAB_BASE,
            strtab::BASE_ADDR.addr(env.scratch(0x80_0000)),
        );
        s.write32(reg::STRTAB_BASE_CFG, 16);
        let _ = s.set_cr0(queues | cr0::SMMUEN.set() as u32);
        let mut batch = [Command::CfgiAll; 9];
        batch[8] = Command::Sync(SyncSignal::None);
        let err = issue_error(&s, &batch);
        println!(
            "  8 x CFGI_STE_RANGE(31) in one CMDQ_PROD write: {:?}",
            err.as_ref().map(|e| *e)
        );
        err.map(|_| ())
    }

    const ATTACKS: &[Attack] = &[
        Attack {
            name: "smmu-illegal-opcode",
            run: illegal_opcode,
        },
        Attack {
            name: "smmu-stage2-command",
            run: stage2_command,
        },
        Attack {
            name: "smmu-el2-command",
            run: el2_command,
        },
        Attack {
            name: "smmu-sync-msi-into-portcullis",
            run: sync_msi_portcullis,
        },
        Attack {
            name: "smmu-sync-msi-into-crash-region",
            run: sync_msi_crash_region,
        },
        Attack {
            name: "smmu-sync-msi-into-report",
            run: sync_msi_report,
        },
        Attack {
            name: "smmu-sync-msi-own-memory",
            run: sync_msi_own_memory,
        },
        Attack {
            name: "smmu-strtab-portcullis",
            run: strtab_portcullis,
        },
        Attack {
            name: "smmu-strtab-report",
            run: strtab_report,
        },
        Attack {
            name: "smmu-strtab-l1-into-portcullis",
            run: strtab_l1_portcullis,
        },
        Attack {
            name: "smmu-strtab-huge-log2",
            run: strtab_huge,
        },
        Attack {
            name: "smmu-cmdq-portcullis",
            run: cmdq_portcullis,
        },
        Attack {
            name: "smmu-cmdq-report",
            run: cmdq_report,
        },
        Attack {
            name: "smmu-cmdq-huge-log2",
            run: cmdq_huge_log2,
        },
        Attack {
            name: "smmu-evtq-portcullis",
            run: evtq_portcullis,
        },
        Attack {
            name: "smmu-evtq-report",
            run: evtq_report,
        },
        Attack {
            name: "smmu-cmdq-prod-beyond-queue",
            run: prod_beyond,
        },
        Attack {
            name: "smmu-isv0-access",
            run: isv0_access,
        },
        Attack {
            name: "smmu-wrong-size-access",
            run: wrong_size,
        },
        Attack {
            name: "smmu-readonly-registers",
            run: readonly_registers,
        },
        Attack {
            name: "smmu-gbpa-bypass-edu-dma",
            run: gbpa_bypass_edu,
        },
        Attack {
            name: "smmu-multi-cpu-commands-while-strtab-rewritten",
            run: race_strtab,
        },
        // Last: at 91d8669 it exhausts Portcullis' heap and powers the machine off.
        Attack {
            name: "smmu-cfgi-range-batch",
            run: cfgi_batch,
        },
    ];

    fn run(ctx: &Context) -> Outcome {
        let env = Env::new(ctx)?;
        hostile::run("hostile-smmu", &env, ATTACKS)
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
