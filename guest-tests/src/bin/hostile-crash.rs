//! Scenario *hostile-crash*: attacks across the crash fence and on the frozen dump. The payload
//! plays both kernels of a kdump ([`guest::fence`]): the dead kernel A, before its simulated kexec,
//! points redistributor 1's LPI configuration table at the fault report (so that Portcullis might
//! keep the report writable "for the LPI tables"), disables the UART's transmitter (UARTCR.TXE = 0:
//! the fence must still happen; QEMU's PL011 keeps transmitting, so only that is checked), and
//! starts CPU 1 storing a counter to a page of A's memory (the dump) and to a crash-region page in
//! a loop, across the fence. The capture kernel B then runs the attacks, one `ATTACK` line each
//! (see `guest::hostile`; the dump's canary pages are A's watched pages): no store of CPU 1 lands
//! after the fence, the report and dump stay read-only to CPU stores, DC ZVA and fw_cfg DMA, an LPI
//! pending table in the dump is refused, a second instruction fetch in the crash region does not
//! fence again, and re-pointing STRTAB_BASE at the dead kernel's Stream table does not lift the
//! fence.
//!
//! `scripts/run --kernel <hostile-crash> --features test-hooks --smp 2 --append "crashkernel=32M"
//!  -- -device edu,dma_mask=0xffffffffffffffff`
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod scenario {
    use core::arch::global_asm;
    use core::sync::atomic::{AtomicU64, Ordering};
    use guest::dma::DmaBuffer;
    use guest::dt::Reg;
    use guest::fence::{self, DeadKernel, DeadSetup};
    use guest::gic::{self, Its, LPI_BASE, Redist};
    use guest::hostile::{
        self, Attack, Env, PAGE, attempt, dc_zva, device_reachable, expect_refused, fw_cfg_dma,
    };
    use guest::mmio::{read64, write64};
    use guest::rt::{self, Context, image_layout};
    use guest::smmu::{Command, SyncSignal, cr0, reg};
    use guest::{Failure, Outcome, check, println, psci};

    guest::scenario!("hostile-crash", run);

    /// Where CPU 1 stores its counter: [A's page, a crash-region page]. Read by the storer at its
    /// entry (A's copy).
    #[unsafe(no_mangle)]
    static HOSTILE_STORER_TARGETS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
    /// The page of A's memory CPU 1 stores to.
    static STORE_PAGE: DmaBuffer<4096> = DmaBuffer::new();
    /// B's instruction page in the crash region (a second, fresh fetch there).
    static EXEC_PAGE: DmaBuffer<4096> = DmaBuffer::new();

    global_asm!(
        r#"
.text
.balign 4
.global hostile_storer_entry
hostile_storer_entry:
    adrp    x9, hostile_storer_vectors
    add     x9, x9, :lo12:hostile_storer_vectors
    msr     vbar_el1, x9
    isb
    adrp    x9, HOSTILE_STORER_TARGETS
    add     x9, x9, :lo12:HOSTILE_STORER_TARGETS
    ldr     x0, [x9]
    ldr     x1, [x9, #8]
    mov     x2, #0
1:  add     x2, x2, #1
    str     x2, [x0]
    str     x2, [x1]
    b       1b

/* Any exception (a refused store after the fence): park the CPU. */
.balign 0x800
hostile_storer_vectors:
    .rept 16
    .balign 0x80
    wfe
    b       . - 4
    .endr
"#
    );

    unsafe extern "C" {
        fn hostile_storer_entry();
    }

    /// The offset of CPU 1's crash-region page from the region's end (clear of B's image).
    const CRASH_STORE_FROM_END: u64 = 16 * PAGE;
    /// B's GIC tables: this far into the crash region (clear of B's image).
    const B_TABLES: u64 = 16 << 20;
    const UARTCR: u64 = 0x30;

    static DEAD: spin::Once<DeadKernel> = spin::Once::new();

    fn dead() -> Result<&'static DeadKernel, Failure> {
        DEAD.get()
            .ok_or_else(|| Failure::new(format_args!("no handoff from the dead kernel")))
    }

    /// A's address of one of B's statics (B is A's copy: same offsets).
    fn in_a(b_addr: u64, dead: &DeadKernel) -> u64 {
        dead.image.start + (b_addr - image_layout().start)
    }

    // -----------------------------------------------------------------------------------------
    // A, before the crash.

    fn before_crash(ctx: &Context, setup: &DeadSetup) -> Outcome {
        let report = fence::report_region(&ctx.dtb)?;
        // Redistributor 1's LPI configuration table in the report region, LPIs enabled.
        let (gicr, _) = gic::frames(&ctx.dtb);
        let rd = Redist::nth(gicr, 1);
        if device_reachable(rd.0 + gic::GICR_TYPER) {
            let pend = setup.crash.base - (1 << 20);
            rd.enable_lpis(report.base, pend & !0xffff);
            println!(
                "A: redistributor 1: PROPBASER {:#x} PENDBASER {:#x} CTLR {:#x}",
                rd.propbaser(),
                rd.pendbaser(),
                rd.ctlr()
            );
        }
        // CPU 1 storing across the fence.
        let mut cpus = [0u64; rt::MAX_CPUS];
        let n = ctx.dtb.cpus(&mut cpus);
        let me = rt::mpidr();
        let other = cpus[..n].iter().copied().find(|&m| m != me);
        let Some(other) = other else {
            return Err(Failure::new(format_args!("run with --smp 2")));
        };
        // SAFETY: the payload's own page.
        unsafe { write64(STORE_PAGE.addr(), 0) };
        HOSTILE_STORER_TARGETS[0].store(STORE_PAGE.addr(), Ordering::SeqCst);
        HOSTILE_STORER_TARGETS[1].store(setup.crash.end() - CRASH_STORE_FROM_END, Ordering::SeqCst);
        let r = psci::cpu_on(other, hostile_storer_entry as *const () as u64, 0);
        check!(r == 0, "A: CPU_ON for the storer returned {r}");
        // Up to 2 s for CPU 1 to come up (TCG under load is slow).
        let mut count = 0;
        for _ in 0..200 {
            hostile::sleep_ms(10);
            // SAFETY: the payload's own page.
            count = unsafe { read64(STORE_PAGE.addr()) };
            if count > 0 {
                break;
            }
        }
        check!(count > 0, "A: CPU 1 is not storing 2 s after CPU_ON");
        println!(
            "A: CPU 1 stores to {:#x} and the crash region ({count} so far)",
            STORE_PAGE.addr()
        );
        // The UART's transmitter off: Portcullis must not wait for it before the fence.
        if let Some(uart) = ctx.dtb.stdout_base() {
            // SAFETY: the PL011's control register; the host owns the UART.
            unsafe { guest::mmio::mmio_write32(uart + UARTCR, 0) };
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // B's attacks.

    fn uart_tx_disabled_fence(_env: &Env) -> Outcome {
        let d = dead()?;
        fence::check_mode(d)?;
        Ok(())
    }

    fn counter_stopped(addr: u64, what: &str) -> Outcome {
        // SAFETY: readable RAM (A's dump or B's crash region).
        let a = unsafe { read64(addr) };
        hostile::sleep_ms(200);
        // SAFETY: as above.
        let b = unsafe { read64(addr) };
        check!(
            a == b,
            "CPU 1's stores to {what} at {addr:#x} still land after the fence: {a} -> {b} in 200 ms"
        );
        Ok(())
    }

    fn second_cpu_dump(_env: &Env) -> Outcome {
        let d = dead()?;
        counter_stopped(in_a(STORE_PAGE.addr(), d), "the dump")
    }

    fn second_cpu_crash_region(env: &Env) -> Outcome {
        counter_stopped(
            env.crash()?.end() - CRASH_STORE_FROM_END,
            "the crash region",
        )
    }

    fn propbaser_report_store(env: &Env) -> Outcome {
        let r = env.report()?;
        let a = r.base + 0x800;
        // SAFETY: expected to abort.
        expect_refused(a, "a store to the fault report in crash mode", || unsafe {
            write64(a, 0xbad)
        })
    }

    fn store_dump(_env: &Env) -> Outcome {
        let d = dead()?;
        let a = d.canary + 0x80;
        // SAFETY: expected to abort.
        expect_refused(a, "a store to the dump", || unsafe { write64(a, 0xbad) })
    }

    fn dc_zva_dump(env: &Env) -> Outcome {
        let d = dead()?;
        for a in [d.canary, env.report()?.base] {
            // SAFETY: aborts or zeroes a block; the dump and report checks decide.
            let c = attempt(|| unsafe { dc_zva(a) });
            println!("  DC ZVA {a:#x}: {c:?}");
        }
        Ok(())
    }

    fn store_portcullis(env: &Env) -> Outcome {
        let a = env.canary(1);
        // SAFETY: expected to abort.
        expect_refused(a, "a store to Portcullis in crash mode", || unsafe {
            write64(a, 0xbad)
        })
    }

    fn fwcfg_dump(_env: &Env) -> Outcome {
        let d = dead()?;
        let started = fw_cfg_dma(d.canary + 0x100, None);
        println!("  fw_cfg DMA into the dump: started {started}");
        hostile::sleep_ms(10);
        Ok(())
    }

    fn fwcfg_report(env: &Env) -> Outcome {
        let started = fw_cfg_dma(env.report()?.base + 0x20, None);
        println!("  fw_cfg DMA into the report: started {started}");
        hostile::sleep_ms(10);
        Ok(())
    }

    fn exec_traps_once(_env: &Env) -> Outcome {
        let before = guest::hooks::fence_mode()
            .map_err(|e| Failure::new(format_args!("PORTCULLIS_TEST_MODE: {e}")))?;
        let page = EXEC_PAGE.addr();
        // SAFETY: B's own page: `ret`.
        unsafe { guest::mmio::mmio_write32(page, 0xd65f_03c0) };
        // SAFETY: the page holds a single `ret`.
        let f: extern "C" fn() = unsafe { core::mem::transmute(page as usize) };
        core::sync::atomic::fence(Ordering::SeqCst);
        // SAFETY: an instruction fetch from B's own memory; any abort is caught.
        let c = attempt(|| {
            // SAFETY: as above.
            unsafe { core::arch::asm!("ic iallu", "dsb ish", "isb", options(nostack)) };
            f()
        });
        let after = guest::hooks::fence_mode()
            .map_err(|e| Failure::new(format_args!("PORTCULLIS_TEST_MODE: {e}")))?;
        check!(
            c.is_none(),
            "executing B's own page {page:#x} aborted: {c:?}"
        );
        check!(
            after == before,
            "a second fetch in the crash region changed the fence: {before:?} -> {after:?}"
        );
        Ok(())
    }

    fn pendbaser_dump(env: &Env) -> Outcome {
        let d = dead()?;
        let crash = env.crash()?;
        let (gicr, its_base) = gic::frames(&env.ctx.dtb);
        if !device_reachable(its_base + gic::GITS_TYPER) {
            return Ok(());
        }
        // Redistributor 0 (B's CPU): its pending table is A's image (the dump).
        let rd = Redist::nth(gicr, 0);
        let pend = d.image.start & !0xffff;
        let bit_at = pend + 1024;
        // SAFETY: A's image, readable (the dump).
        let before = unsafe { read64(bit_at) };
        let t = crash.base + B_TABLES;
        gic::enable_lpi(t + 0x4_0000, LPI_BASE + 1);
        rd.enable_lpis(t + 0x4_0000, pend);
        let its = Its { base: its_base };
        its.setup(t, 1, t + 0x1_0000, t + 0x2_0000);
        let read = its.run(
            t,
            0,
            &[
                gic::mapd(1, t + 0x3_0000, true),
                gic::mapc(0, rd.processor()),
                gic::mapti(1, 0, LPI_BASE + 1, 0),
                gic::int(1, 0),
                gic::sync(rd.processor()),
            ],
        );
        hostile::sleep_ms(5);
        // SAFETY: as above.
        let after = unsafe { read64(bit_at) };
        println!("  LPI pending with PENDBASER {pend:#x} in the dump: CREADR {read:#x}");
        check!(
            after == before,
            "the redistributor set a pending bit in the dump at {bit_at:#x}: {before:#x} -> {after:#x}"
        );
        Ok(())
    }

    fn relift_fence(env: &Env) -> Outcome {
        let d = dead()?;
        let crash = env.crash()?;
        let edus = fence::adopt_edus(d)?;
        fence::await_in_flight(d, &edus)?;
        let e = d.first_edu()?;
        let smmu = fence::reset_smmu(&env.ctx.dtb, crash, &[e.sid])?;
        let queues = (cr0::CMDQEN.set() | cr0::EVENTQEN.set()) as u32;
        smmu.set_cr0(queues)
            .map_err(|e| Failure::new(format_args!("CR0: {e}")))?;
        smmu.write64(reg::STRTAB_BASE, d.smmu.strtab_base);
        smmu.write32(reg::STRTAB_BASE_CFG, d.smmu.strtab_base_cfg);
        smmu.set_cr0(queues | cr0::SMMUEN.set() as u32)
            .map_err(|e| Failure::new(format_args!("CR0: {e}")))?;
        let r = smmu.issue(&[
            Command::CfgiAll,
            Command::TlbiNhAll,
            Command::Sync(SyncSignal::None),
        ]);
        println!(
            "  STRTAB_BASE re-pointed at the dead kernel's table {:#x}: {r:?}",
            d.smmu.strtab_base
        );
        fence::kick_dead_devices(d, &edus, 0x900, "after STRTAB_BASE was re-pointed")?;
        fence::check_dead_memory(d, "after STRTAB_BASE was re-pointed")
    }

    const ATTACKS: &[Attack] = &[
        Attack {
            name: "crash-uart-tx-disabled-fence",
            run: uart_tx_disabled_fence,
        },
        Attack {
            name: "crash-second-cpu-stores-dump",
            run: second_cpu_dump,
        },
        Attack {
            name: "crash-second-cpu-stores-crash-region",
            run: second_cpu_crash_region,
        },
        Attack {
            name: "crash-propbaser-report-then-store",
            run: propbaser_report_store,
        },
        Attack {
            name: "crash-store-dump",
            run: store_dump,
        },
        Attack {
            name: "crash-dc-zva-dump-report",
            run: dc_zva_dump,
        },
        Attack {
            name: "crash-store-portcullis",
            run: store_portcullis,
        },
        Attack {
            name: "crash-exec-crash-region-traps-once",
            run: exec_traps_once,
        },
        Attack {
            name: "crash-pendbaser-dump-lpi",
            run: pendbaser_dump,
        },
        Attack {
            name: "crash-relift-fence-strtab",
            run: relift_fence,
        },
        Attack {
            name: "crash-fwcfg-dma-report",
            run: fwcfg_report,
        },
        Attack {
            name: "crash-fwcfg-dma-dump",
            run: fwcfg_dump,
        },
    ];

    fn capture_kernel(ctx: &Context, _crash: Reg, dead: &DeadKernel) -> Outcome {
        if let Some(uart) = ctx.dtb.stdout_base() {
            // SAFETY: the PL011's control register: UARTEN, TXE, RXE.
            unsafe { guest::mmio::mmio_write32(uart + UARTCR, 0x301) };
        }
        DEAD.call_once(|| *dead);
        let mut env = Env::new(ctx)?;
        let mut pages = [dead.canary; 3];
        if let Some(e) = dead.edus().next() {
            pages[1] = e.staging;
            pages[2] = e.target;
        }
        env.watch_dump(&pages);
        hostile::run("hostile-crash", &env, ATTACKS)
    }

    fn run(ctx: &Context) -> Outcome {
        fence::run_scenario(ctx, 1, |setup| before_crash(ctx, setup), capture_kernel)
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
