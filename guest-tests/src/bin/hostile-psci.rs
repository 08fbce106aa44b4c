//! Scenario *hostile-psci*: the host attacks Portcullis through PSCI and SMCCC: CPU_ON with an entry
//! point in Portcullis' memory or outside RAM, bad MPIDRs, CPU_ON twice for one CPU,
//! CPU_SUSPEND/SYSTEM_SUSPEND resuming in Portcullis' memory, unknown SMCCC and test-hook function
//! IDs, HVC with a non-zero immediate. Each attack is one `ATTACK` line (see `guest::hostile`).
//!
//! `scripts/run --kernel <hostile-psci> --features test-hooks --smp 2 --append "crashkernel=32M"`
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod scenario {
    use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use guest::hostile::{self, Attack, Env};
    use guest::psci::code::{ALREADY_ON, INVALID_ADDRESS, INVALID_PARAMETERS, ON_PENDING};
    use guest::psci::{CPU_SUSPEND, SYSTEM_SUSPEND};
    use guest::rt::{self, Context};
    use guest::{Failure, Outcome, check, println, psci};
    use spec::test_hook;

    guest::scenario!("hostile-psci", run);

    const AFF_OFF: i64 = 1;

    static ARRIVALS: AtomicU64 = AtomicU64::new(0);
    /// Holds an arrived CPU on until the boot CPU has made both of its CPU_ON calls (otherwise a
    /// CPU that started, ran and turned off in between would make a second success legitimate).
    static HOLD: AtomicBool = AtomicBool::new(false);

    fn secondary(_index: u64) {
        ARRIVALS.fetch_add(1, Ordering::SeqCst);
        while HOLD.load(Ordering::SeqCst) {
            core::hint::spin_loop();
        }
        // Returning powers the CPU off (CPU_OFF).
    }

    /// The second CPU's MPIDR.
    fn other_cpu(env: &Env) -> Result<u64, Failure> {
        let mut cpus = [0u64; rt::MAX_CPUS];
        let n = env.ctx.dtb.cpus(&mut cpus);
        let me = rt::mpidr();
        cpus[..n]
            .iter()
            .copied()
            .find(|&m| m != me)
            .ok_or_else(|| Failure::new(format_args!("run with --smp 2")))
    }

    fn wait_off(mpidr: u64) -> bool {
        for _ in 0..2000 {
            if psci::affinity_info(mpidr) == AFF_OFF {
                return true;
            }
            hostile::sleep_ms(1);
        }
        false
    }

    fn cpu_on_entry_portcullis(env: &Env) -> Outcome {
        let cpu = other_cpu(env)?;
        let last = env.canaries.count - 1;
        for entry in [env.hyp.base, env.canary(0), env.canary(1), env.canary(last)] {
            let r = psci::cpu_on(cpu, entry, 0);
            check!(
                r == INVALID_ADDRESS || r == INVALID_PARAMETERS,
                "CPU_ON with its entry point at {entry:#x} in Portcullis' memory returned {r}"
            );
        }
        check!(wait_off(cpu), "the CPU is not OFF after refused CPU_ONs");
        Ok(())
    }

    fn cpu_on_entry_outside_ram(env: &Env) -> Outcome {
        let cpu = other_cpu(env)?;
        for entry in [0, 0x0902_0000, !3u64, 1 << 52] {
            let r = psci::cpu_on(cpu, entry, 0);
            check!(
                r == INVALID_ADDRESS || r == INVALID_PARAMETERS,
                "CPU_ON with its entry point at {entry:#x} (not RAM) returned {r}"
            );
        }
        check!(wait_off(cpu), "the CPU is not OFF after refused CPU_ONs");
        Ok(())
    }

    fn cpu_on_bad_mpidr(_env: &Env) -> Outcome {
        for mpidr in [0xff_0000_ffff, u64::MAX, 0x100, 0x8000_0000_0000_0001, 7] {
            let r = psci::cpu_on(mpidr, rt::secondary_entry_address(), 0);
            check!(
                r == INVALID_PARAMETERS,
                "CPU_ON({mpidr:#x}) returned {r}, want INVALID_PARAMETERS"
            );
        }
        for (mpidr, level) in [(u64::MAX, 0), (0xff_0000_ffff, 0), (0x100, 0)] {
            let r = psci::call(psci::AFFINITY_INFO, mpidr, level, 0)[0] as i64;
            check!(
                r == INVALID_PARAMETERS,
                "AFFINITY_INFO({mpidr:#x}, level {level}) returned {r}, want INVALID_PARAMETERS"
            );
        }
        Ok(())
    }

    fn cpu_on_twice(env: &Env) -> Outcome {
        let cpu = other_cpu(env)?;
        rt::set_secondary_fn(secondary);
        for round in 0..50 {
            let before = ARRIVALS.load(Ordering::SeqCst);
            HOLD.store(true, Ordering::SeqCst);
            let a = psci::cpu_on(cpu, rt::secondary_entry_address(), 1);
            let b = psci::cpu_on(cpu, rt::secondary_entry_address(), 1);
            HOLD.store(false, Ordering::SeqCst);
            check!(a == 0, "round {round}: the first CPU_ON returned {a}");
            check!(
                b == ALREADY_ON || b == ON_PENDING,
                "round {round}: the second CPU_ON returned {b}, want ALREADY_ON or ON_PENDING"
            );
            let mut arrived = false;
            for _ in 0..2000 {
                if ARRIVALS.load(Ordering::SeqCst) > before {
                    arrived = true;
                    break;
                }
                hostile::sleep_ms(1);
            }
            check!(arrived, "round {round}: the CPU never arrived");
            check!(wait_off(cpu), "round {round}: the CPU did not go OFF");
            check!(
                ARRIVALS.load(Ordering::SeqCst) == before + 1,
                "round {round}: the CPU arrived more than once"
            );
        }
        Ok(())
    }

    fn suspend_entry_portcullis(env: &Env) -> Outcome {
        // A power-down state (StateType = 1) resuming in Portcullis' memory.
        let entry = env.canary(0);
        let r = psci::call(CPU_SUSPEND, 1 << 16, entry, 0)[0] as i64;
        println!("  CPU_SUSPEND(power-down, entry {entry:#x}) returned {r}");
        check!(r <= 0, "CPU_SUSPEND returned {r}");
        let r = psci::call(SYSTEM_SUSPEND, entry, 0, 0)[0] as i64;
        println!("  SYSTEM_SUSPEND(entry {entry:#x}) returned {r}");
        check!(
            r < 0,
            "SYSTEM_SUSPEND with its entry in Portcullis' memory returned {r}"
        );
        Ok(())
    }

    fn unknown_smccc(_env: &Env) -> Outcome {
        for id in [
            0xc200_1234u32,
            0x8600_0000,
            0xc600_0000,
            0x8400_00ff,
            0xc400_00ff,
            0xbf00_0000,
            0xf000_0000,
            0x0000_0000,
            0xffff_ffff,
            smccc::psci::PSCI_STAT_COUNT_32,
            smccc::psci::PSCI_SYSTEM_RESET2_32,
            smccc::psci::PSCI_SYSTEM_RESET2_64, // not offered
        ] {
            let r = psci::call(id, 0x4000_0000, 0x4000_0000, 0)[0] as i64;
            check!(
                r == psci::NOT_SUPPORTED || r == INVALID_PARAMETERS,
                "function {id:#x} returned {r}, want NOT_SUPPORTED"
            );
        }
        Ok(())
    }

    fn unknown_test_hooks(_env: &Env) -> Outcome {
        for id in [
            test_hook::END,
            0xc600_01ff,
            0xc600_0200,
            0x8600_0100,
            0x8600_0104,
        ] {
            let mut args = [0u64; 17];
            args[0] = 0xffff_ffff_ffff_ffff;
            let r = smccc::hvc64(id, args)[0] as i64;
            check!(
                r == psci::NOT_SUPPORTED,
                "unknown test-hook function {id:#x} returned {r}, want NOT_SUPPORTED"
            );
        }
        // Known hooks with hostile arguments.
        for index in [3u64, 255, u64::MAX] {
            let mut args = [0u64; 17];
            args[0] = index;
            let r = smccc::hvc64(test_hook::CANARIES, args)[0] as i64;
            check!(
                r == INVALID_PARAMETERS,
                "test_hook::CANARIES({index:#x}) returned {r}"
            );
        }
        let mut args = [0u64; 17];
        args[0] = u64::MAX;
        let _ = smccc::hvc64(test_hook::FAULTS, args);
        Ok(())
    }

    fn hvc_nonzero_immediate(env: &Env) -> Outcome {
        let x0: u64;
        // SAFETY: HVC #0x1234 with PSCI_VERSION's function ID: Portcullis traps every HVC.
        unsafe {
            core::arch::asm!("hvc #0x1234", inout("x0") u64::from(psci::VERSION) => x0,
                             out("x1") _, out("x2") _, out("x3") _, options(nostack))
        };
        println!("  HVC #0x1234 (PSCI_VERSION) answered {x0:#x}");
        let _ = env;
        Ok(())
    }

    const ATTACKS: &[Attack] = &[
        Attack {
            name: "psci-cpu-on-entry-portcullis",
            run: cpu_on_entry_portcullis,
        },
        Attack {
            name: "psci-cpu-on-entry-outside-ram",
            run: cpu_on_entry_outside_ram,
        },
        Attack {
            name: "psci-bad-mpidr",
            run: cpu_on_bad_mpidr,
        },
        Attack {
            name: "psci-suspend-entry-portcullis",
            run: suspend_entry_portcullis,
        },
        Attack {
            name: "smccc-unknown-function-ids",
            run: unknown_smccc,
        },
        Attack {
            name: "smccc-unknown-test-hook-ids",
            run: unknown_test_hooks,
        },
        Attack {
            name: "smccc-hvc-nonzero-immediate",
            run: hvc_nonzero_immediate,
        },
        // Last: at 91d8669 it panics Portcullis.
        Attack {
            name: "psci-cpu-on-twice",
            run: cpu_on_twice,
        },
    ];

    fn run(ctx: &Context) -> Outcome {
        let env = Env::new(ctx)?;
        hostile::run("hostile-psci", &env, ATTACKS)
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
