//! Scenario *hostile-gic*: the host points the GIC's memory tables, which the GIC reads and writes
//! by DMA behind the SMMU's back, at Portcullis' memory, the fault report and the crash region: the
//! ITS device, collection and interrupt translation tables (`GITS_BASERn`, `MAPD`'s ITT), the ITS
//! command queue (`GITS_CBASER`, also straddling into Portcullis), and each redistributor's LPI
//! tables (`GICR_PROPBASER`, `GICR_PENDBASER`, with an LPI made pending through the ITS). Each
//! attack is one `ATTACK` line (see `guest::hostile`). Every `PENDBASER`/`PROPBASER` attack uses a
//! redistributor of its own (LPIs, once enabled, may stay enabled): run with `--smp 6`.
//! Redistributor 0 (the payload's CPU, interrupts masked) takes the last one.
//!
//! `scripts/run --kernel <hostile-gic> --features test-hooks --smp 6 --append "crashkernel=32M"`
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod scenario {
    use guest::gic::{self, Its, LPI_BASE, Redist};
    use guest::hostile::{self, Attack, Env, PAGE, device_reachable, watch_page};
    use guest::rt::Context;
    use guest::{Failure, Outcome, check, println};

    guest::scenario!("hostile-gic", run);

    /// The payload's own GIC tables in scratch RAM (offsets from `Env::scratch(0)`).
    const QUEUE: u64 = 0x0_0000;
    const DEVICES: u64 = 0x1_0000;
    const COLLECTIONS: u64 = 0x2_0000;
    const ITT: u64 = 0x3_0000;
    const PROP: u64 = 0x4_0000;
    /// Pending tables, one 64 KiB slot per redistributor.
    const PEND: u64 = 0x10_0000;

    fn its(env: &Env) -> Result<Option<Its>, Failure> {
        let (_, base) = gic::frames(&env.ctx.dtb);
        if !device_reachable(base + gic::GITS_TYPER) {
            println!("  the ITS at {base:#x} is withheld from the host");
            return Ok(None);
        }
        Ok(Some(Its { base }))
    }

    /// The ITS set up on the payload's own tables.
    fn its_own(env: &Env) -> Result<Option<Its>, Failure> {
        let Some(its) = its(env)? else {
            return Ok(None);
        };
        let s = env.scratch(0);
        its.setup(s + QUEUE, 1, s + DEVICES, s + COLLECTIONS);
        Ok(Some(its))
    }

    fn redist(env: &Env, i: u64) -> Result<Option<Redist>, Failure> {
        let (gicr, _) = gic::frames(&env.ctx.dtb);
        let r = Redist::nth(gicr, i);
        if !device_reachable(r.0 + gic::GICR_TYPER) {
            println!(
                "  redistributor {i} at {:#x} is withheld from the host",
                r.0
            );
            return Ok(None);
        }
        check!(
            r.processor() == i,
            "redistributor frame {i} is processor {}: run with --smp 6",
            r.processor()
        );
        Ok(Some(r))
    }

    fn its_device_table(env: &Env, table: u64) -> Outcome {
        let Some(its) = its(env)? else { return Ok(()) };
        let s = env.scratch(0);
        its.setup(s + QUEUE, 1, table, s + COLLECTIONS);
        let read = its.run(s + QUEUE, 0, &[gic::mapd(0, s + ITT, true), gic::sync(0)]);
        println!("  MAPD with the device table at {table:#x}: CREADR {read:#x}");
        hostile::sleep_ms(5);
        Ok(())
    }

    fn its_device_table_portcullis(env: &Env) -> Outcome {
        its_device_table(env, env.canary(0))
    }

    fn its_device_table_report(env: &Env) -> Outcome {
        its_device_table(env, env.report()?.base)
    }

    fn its_collection_table_portcullis(env: &Env) -> Outcome {
        let Some(its) = its(env)? else { return Ok(()) };
        let s = env.scratch(0);
        its.setup(s + QUEUE, 1, s + DEVICES, env.canary(1));
        let read = its.run(s + QUEUE, 0, &[gic::mapc(0, 0), gic::sync(0)]);
        println!("  MAPC with the collection table in Portcullis: CREADR {read:#x}");
        hostile::sleep_ms(5);
        Ok(())
    }

    fn its_itt(env: &Env, itt: u64, device: u32) -> Outcome {
        let Some(its) = its_own(env)? else {
            return Ok(());
        };
        let s = env.scratch(0);
        let read = its.run(
            s + QUEUE,
            0,
            &[
                gic::mapd(device, itt, true),
                gic::mapc(0, 0),
                gic::mapti(device, 0, LPI_BASE, 0),
                gic::mapti(device, 1, LPI_BASE + 1, 0),
                gic::sync(0),
            ],
        );
        println!("  MAPD + MAPTI with the ITT at {itt:#x}: CREADR {read:#x}");
        hostile::sleep_ms(5);
        Ok(())
    }

    fn its_itt_portcullis(env: &Env) -> Outcome {
        its_itt(env, env.canary(1), 1)
    }

    fn its_itt_report(env: &Env) -> Outcome {
        its_itt(env, env.report()?.base + 0x100, 2)
    }

    /// The ITS must not consume commands from `queue`: CREADR stays short of `limit`.
    fn its_cmdq(env: &Env, queue: u64, pages: u64, limit: u64, write: u64) -> Outcome {
        let Some(its) = its(env)? else { return Ok(()) };
        let s = env.scratch(0);
        its.setup(queue, pages, s + DEVICES, s + COLLECTIONS);
        its.write64(gic::GITS_CWRITER, write);
        let read = its.wait_read(write);
        println!(
            "  command queue at {queue:#x} ({pages} pages), CWRITER {write:#x}: CREADR {read:#x}"
        );
        // Leave the ITS on the payload's own queue.
        its.setup(s + QUEUE, 1, s + DEVICES, s + COLLECTIONS);
        check!(
            read <= limit,
            "the ITS consumed commands from {:#x}: CREADR reached {read:#x}",
            queue + limit
        );
        Ok(())
    }

    fn its_cmdq_portcullis(env: &Env) -> Outcome {
        let q = env.canary(env.canaries.count - 1);
        its_cmdq(env, q, 1, 0, 4 * gic::CMD_BYTES)
    }

    fn its_cmdq_report(env: &Env) -> Outcome {
        its_cmdq(env, env.report()?.base, 1, 0, 4 * gic::CMD_BYTES)
    }

    fn its_cmdq_straddle_portcullis(env: &Env) -> Outcome {
        // One page of host RAM right below Portcullis, the second page Portcullis' own.
        let q = env.hyp.base - PAGE;
        its_cmdq(env, q, 2, PAGE, PAGE + 4 * gic::CMD_BYTES)
    }

    /// Redistributor `rd`'s pending table at `pend` (64 KiB-aligned), LPI 8192 + `lpi` made
    /// pending through the ITS (device `device`): its bit is at `pend + 1024 + lpi / 8`.
    fn lpi_pending(env: &Env, rd: u64, pend: u64, device: u32, lpi: u32) -> Outcome {
        let Some(r) = redist(env, rd)? else {
            return Ok(());
        };
        let s = env.scratch(0);
        gic::enable_lpi(s + PROP, LPI_BASE + lpi);
        r.enable_lpis(s + PROP, pend);
        println!(
            "  redistributor {rd}: PROPBASER {:#x} PENDBASER {:#x} CTLR {:#x}",
            r.propbaser(),
            r.pendbaser(),
            r.ctlr()
        );
        let Some(its) = its_own(env)? else {
            return Ok(());
        };
        let icid = rd as u16;
        let read = its.run(
            s + QUEUE,
            0,
            &[
                gic::mapd(device, s + ITT + 0x100 * u64::from(device), true),
                gic::mapc(icid, r.processor()),
                gic::mapti(device, 0, LPI_BASE + lpi, icid),
                gic::int(device, 0),
                gic::sync(r.processor()),
            ],
        );
        println!(
            "  LPI {} made pending on redistributor {rd}: CREADR {read:#x}",
            LPI_BASE + lpi
        );
        hostile::sleep_ms(5);
        Ok(())
    }

    fn pendbaser_portcullis(env: &Env) -> Outcome {
        // Portcullis' text, 64 KiB in: the pending bit lands 1 KiB further.
        lpi_pending(env, 1, env.hyp.base + 0x1_0000, 8, 3)
    }

    fn pendbaser_report(env: &Env) -> Outcome {
        // Bit 7 of byte 1024: clear in ASCII text and in the NUL padding.
        lpi_pending(env, 2, env.report()?.base, 9, 7)
    }

    fn pendbaser_crash_region(env: &Env) -> Outcome {
        // Normal mode: the crash region holds the loaded capture kernel.
        let pend = env.crash()?.base + 0x10_0000;
        // SAFETY: the crash region is host RAM the host may write in normal mode.
        let intact = unsafe { watch_page(pend) };
        // A bit that is clear in the pattern now at byte 1024.
        let byte = guest::dma::memory_pattern(pend + 1024);
        let bit = (0..8).find(|b| byte & (1 << b) == 0).unwrap_or(0);
        lpi_pending(env, 3, pend, 10, bit)?;
        intact()
    }

    fn propbaser(env: &Env, rd: u64, prop: u64) -> Outcome {
        let Some(r) = redist(env, rd)? else {
            return Ok(());
        };
        let pend = env.scratch(0) + PEND + rd * 0x1_0000;
        r.enable_lpis(prop, pend);
        println!(
            "  redistributor {rd}: PROPBASER {:#x} PENDBASER {:#x} CTLR {:#x}",
            r.propbaser(),
            r.pendbaser(),
            r.ctlr()
        );
        check!(
            !r.uses(prop, pend),
            "redistributor {rd} reads its LPI configuration from {prop:#x} with LPIs enabled"
        );
        Ok(())
    }

    fn propbaser_portcullis(env: &Env) -> Outcome {
        propbaser(env, 4, env.canary(1))
    }

    fn propbaser_report(env: &Env) -> Outcome {
        propbaser(env, 5, env.report()?.base)
    }

    fn propbaser_crash_region(env: &Env) -> Outcome {
        // Normal mode: the crash region holds the loaded capture kernel. Redistributor 0 is the
        // payload's own CPU's (its interrupts stay masked).
        propbaser(env, 0, env.crash()?.base + 0x20_0000)
    }

    const ATTACKS: &[Attack] = &[
        Attack {
            name: "its-device-table-portcullis",
            run: its_device_table_portcullis,
        },
        Attack {
            name: "its-device-table-report",
            run: its_device_table_report,
        },
        Attack {
            name: "its-collection-table-portcullis",
            run: its_collection_table_portcullis,
        },
        Attack {
            name: "its-itt-portcullis",
            run: its_itt_portcullis,
        },
        Attack {
            name: "its-itt-report",
            run: its_itt_report,
        },
        Attack {
            name: "its-cmdq-portcullis",
            run: its_cmdq_portcullis,
        },
        Attack {
            name: "its-cmdq-report",
            run: its_cmdq_report,
        },
        Attack {
            name: "its-cmdq-straddle-portcullis",
            run: its_cmdq_straddle_portcullis,
        },
        Attack {
            name: "gicr-pendbaser-portcullis-lpi",
            run: pendbaser_portcullis,
        },
        Attack {
            name: "gicr-pendbaser-report-lpi",
            run: pendbaser_report,
        },
        Attack {
            name: "gicr-pendbaser-crash-region-lpi",
            run: pendbaser_crash_region,
        },
        Attack {
            name: "gicr-propbaser-portcullis",
            run: propbaser_portcullis,
        },
        Attack {
            name: "gicr-propbaser-report",
            run: propbaser_report,
        },
        Attack {
            name: "gicr-propbaser-crash-region",
            run: propbaser_crash_region,
        },
    ];

    fn run(ctx: &Context) -> Outcome {
        let env = Env::new(ctx)?;
        hostile::run("hostile-gic", &env, ATTACKS)
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
