//! Scenario *hostile-mem*: the host attacks Portcullis' memory and the fault report with its CPU
//! (loads, stores, pairs, exclusives, cache maintenance) and with a bus master the SMMU does not
//! see (QEMU virt's fw_cfg DMA). Each attack is one `ATTACK` line (see `guest::hostile`).
//!
//! `scripts/run --kernel <hostile-mem> --features test-hooks --smp 1 --append "crashkernel=32M"`
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod scenario {
    use guest::hostile::{
        self, Attack, Env, attempt, dc_ivac, dc_zva, expect_refused, fw_cfg_dma, ldp, stp,
        str_post, watch_page,
    };
    use guest::mmio::{read64, write64};
    use guest::rt::Context;
    use guest::{Outcome, check, println};

    guest::scenario!("hostile-mem", run);

    /// Portcullis' addresses a CPU attack aims at: every canary, the region's first and last word.
    fn targets(env: &Env) -> [u64; 6] {
        let last = env.canaries.count - 1;
        [
            env.canary(0) + 0x40,
            env.canary(1) + 0x40,
            env.canary(last) + 0x40,
            env.hyp.base,
            env.hyp.base + 0x8000,
            env.hyp.end() - 16,
        ]
    }

    fn cpu_load_portcullis(env: &Env) -> Outcome {
        for a in targets(env) {
            // SAFETY: expected to abort; the handler skips it.
            expect_refused(a, "a load from Portcullis", || unsafe {
                let _ = read64(a);
            })?;
        }
        Ok(())
    }

    fn cpu_store_portcullis(env: &Env) -> Outcome {
        for a in targets(env) {
            // SAFETY: as above.
            expect_refused(a, "a store to Portcullis", || unsafe { write64(a, 0xbad) })?;
        }
        Ok(())
    }

    fn cpu_pair_portcullis(env: &Env) -> Outcome {
        for a in targets(env) {
            // SAFETY: as above.
            expect_refused(a, "an STP (ISV = 0) to Portcullis", || unsafe {
                stp(a, 0xbad, 0xbad)
            })?;
            // SAFETY: as above.
            expect_refused(a, "an LDP (ISV = 0) from Portcullis", || unsafe {
                let _ = ldp(a);
            })?;
            // SAFETY: as above.
            expect_refused(a, "a post-indexed STR (ISV = 0) to Portcullis", || unsafe {
                str_post(a, 0xbad)
            })?;
        }
        Ok(())
    }

    fn cpu_dc_zva_portcullis(env: &Env) -> Outcome {
        for a in targets(env) {
            // SAFETY: aborts or zeroes a block; the integrity checks decide.
            let c = attempt(|| unsafe { dc_zva(a) });
            println!("  DC ZVA {a:#x}: {c:?}");
        }
        Ok(())
    }

    fn cpu_dc_ivac_portcullis(env: &Env) -> Outcome {
        for a in targets(env) {
            // SAFETY: as above.
            let c = attempt(|| unsafe { dc_ivac(a) });
            println!("  DC IVAC {a:#x}: {c:?}");
        }
        Ok(())
    }

    fn cpu_store_report(env: &Env) -> Outcome {
        let r = env.report()?;
        for a in [r.base, r.base + r.size / 2, r.end() - 8] {
            // SAFETY: expected to abort.
            expect_refused(a, "a store to the fault report", || unsafe {
                write64(a, 0xbad)
            })?;
            // SAFETY: as above.
            expect_refused(a, "an STP to the fault report", || unsafe {
                stp(a - 8, 1, 2)
            })?;
        }
        Ok(())
    }

    fn cpu_dc_zva_report(env: &Env) -> Outcome {
        let r = env.report()?;
        // SAFETY: aborts or zeroes a block; the report checks decide.
        let c = attempt(|| unsafe { dc_zva(r.base) });
        println!("  DC ZVA {:#x}: {c:?}", r.base);
        // SAFETY: as above.
        let c = attempt(|| unsafe { dc_ivac(r.base) });
        println!("  DC IVAC {:#x}: {c:?}", r.base);
        Ok(())
    }

    fn cpu_exclusive_portcullis(env: &Env) -> Outcome {
        let a = env.canary(1);
        // SAFETY: expected to abort (LDXR has no valid syndrome).
        expect_refused(a, "an LDXR from Portcullis", || unsafe {
            let _v: u64;
            core::arch::asm!("ldxr {v}, [{a}]", a = in(reg) a, v = out(reg) _v, options(nostack));
        })?;
        // SAFETY: as above (LDADD, an atomic, if FEAT_LSE; QEMU's max CPU has it).
        let c = attempt(|| unsafe {
            core::arch::asm!(".arch_extension lse", "ldadd {v}, {o}, [{a}]", a = in(reg) a, v = in(reg) 1u64,
                             o = out(reg) _, options(nostack));
        });
        check!(c.is_some(), "an LDADD to Portcullis at {a:#x} completed");
        Ok(())
    }

    fn fwcfg_dma(env: &Env, target: u64) -> Outcome {
        let started = fw_cfg_dma(target, None);
        println!("  fw_cfg DMA to {target:#x}: started {started}");
        hostile::sleep_ms(10);
        let _ = env;
        Ok(())
    }

    fn fwcfg_dma_portcullis(env: &Env) -> Outcome {
        fwcfg_dma(env, env.canary(0))
    }

    fn fwcfg_dma_heap(env: &Env) -> Outcome {
        fwcfg_dma(env, env.canary(1))
    }

    fn fwcfg_dma_rodata(env: &Env) -> Outcome {
        // Into Portcullis' code (as the issue saw: "QEMU" over its read-only data).
        fwcfg_dma(env, env.hyp.base + 0x8000)
    }

    fn fwcfg_dma_report(env: &Env) -> Outcome {
        fwcfg_dma(env, env.report()?.base + 0x10)
    }

    fn fwcfg_dma_crash_region(env: &Env) -> Outcome {
        // Normal mode: the crash region holds the loaded capture kernel; no DMA may reach it.
        let page = env.crash()?.end() - 4 * hostile::PAGE;
        // SAFETY: the crash region is host RAM the host may write in normal mode.
        let intact = unsafe { watch_page(page) };
        fwcfg_dma(env, page + 0x20)?;
        intact()
    }

    fn fwcfg_dma_descriptor_in_portcullis(env: &Env) -> Outcome {
        // fw_cfg reads the descriptor there and writes its control word back.
        let at = env.canary(env.canaries.count - 1);
        let started = fw_cfg_dma(0, Some(at));
        println!("  fw_cfg DMA with its descriptor at {at:#x}: started {started}");
        hostile::sleep_ms(10);
        Ok(())
    }

    fn fwcfg_dma_descriptor_in_report(env: &Env) -> Outcome {
        let at = env.report()?.base + 0x100;
        let started = fw_cfg_dma(0, Some(at));
        println!("  fw_cfg DMA with its descriptor at {at:#x}: started {started}");
        hostile::sleep_ms(10);
        Ok(())
    }

    const ATTACKS: &[Attack] = &[
        Attack {
            name: "cpu-load-portcullis",
            run: cpu_load_portcullis,
        },
        Attack {
            name: "cpu-store-portcullis",
            run: cpu_store_portcullis,
        },
        Attack {
            name: "cpu-pair-postindex-portcullis",
            run: cpu_pair_portcullis,
        },
        Attack {
            name: "cpu-exclusive-atomic-portcullis",
            run: cpu_exclusive_portcullis,
        },
        Attack {
            name: "cpu-dc-zva-portcullis",
            run: cpu_dc_zva_portcullis,
        },
        Attack {
            name: "cpu-dc-ivac-portcullis",
            run: cpu_dc_ivac_portcullis,
        },
        Attack {
            name: "cpu-store-report",
            run: cpu_store_report,
        },
        Attack {
            name: "cpu-dc-zva-ivac-report",
            run: cpu_dc_zva_report,
        },
        Attack {
            name: "fwcfg-dma-portcullis-data",
            run: fwcfg_dma_portcullis,
        },
        Attack {
            name: "fwcfg-dma-portcullis-heap",
            run: fwcfg_dma_heap,
        },
        Attack {
            name: "fwcfg-dma-portcullis-text",
            run: fwcfg_dma_rodata,
        },
        Attack {
            name: "fwcfg-dma-report",
            run: fwcfg_dma_report,
        },
        Attack {
            name: "fwcfg-dma-crash-region",
            run: fwcfg_dma_crash_region,
        },
        Attack {
            name: "fwcfg-dma-descriptor-in-portcullis",
            run: fwcfg_dma_descriptor_in_portcullis,
        },
        Attack {
            name: "fwcfg-dma-descriptor-in-report",
            run: fwcfg_dma_descriptor_in_report,
        },
    ];

    fn run(ctx: &Context) -> Outcome {
        let env = Env::new(ctx)?;
        hostile::run("hostile-mem", &env, ATTACKS)
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
