//! Scenario *smp*: every CPU in the tree comes up through PSCI CPU_ON (proxied by Portcullis, which
//! starts each at its own EL2 entry first) and reports its MPIDR; AFFINITY_INFO and CPU_OFF behave;
//! bad requests get PSCI's error codes; unknown SMCCC calls answer NOT_SUPPORTED.
//!
//! Hostile requests (issue 8): CPU_ON with an entry point inside Portcullis' memory or outside RAM
//! answers INVALID_ADDRESS and leaves the CPU off; a second CPU_ON for a CPU still starting answers
//! ON_PENDING or ALREADY_ON, and the CPU still enters where the first one asked (Portcullis used to
//! drop the pending entry and panic when the CPU arrived).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod scenario {
    use core::sync::atomic::{AtomicU64, Ordering};
    use guest::rt::{self, Context};
    use guest::{Outcome, check, println, psci};

    guest::scenario!("smp", run);

    const MAX: usize = guest::rt::MAX_CPUS;
    static REPORTED: [AtomicU64; MAX] = [const { AtomicU64::new(u64::MAX) }; MAX];
    static ARRIVED: [AtomicU64; MAX] = [const { AtomicU64::new(0) }; MAX];
    static CONTEXT_SEEN: [AtomicU64; MAX] = [const { AtomicU64::new(0) }; MAX];
    static RELEASE: AtomicU64 = AtomicU64::new(0);

    const AFF_ON: i64 = 0;
    const AFF_OFF: i64 = 1;

    fn secondary(index: u64) {
        let i = index as usize;
        if i < MAX {
            REPORTED[i].store(rt::mpidr(), Ordering::SeqCst);
            CONTEXT_SEEN[i].store(1, Ordering::SeqCst);
            ARRIVED[i].store(1, Ordering::SeqCst);
            // Stay on until the boot CPU has seen AFFINITY_INFO report us ON.
            while RELEASE.load(Ordering::SeqCst) == 0 {
                core::hint::spin_loop();
            }
        }
        // Returning powers the CPU off through PSCI CPU_OFF.
    }

    fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
        for _ in 0..200_000_000u64 {
            if cond() {
                return true;
            }
            core::hint::spin_loop();
        }
        false
    }

    fn run(ctx: &Context) -> Outcome {
        let mut cpus = [0u64; MAX];
        let n = ctx.dtb.cpus(&mut cpus);
        let me = rt::mpidr();
        println!("{n} CPUs in the tree; boot CPU mpidr {me:#x}");
        check!(
            n >= 2,
            "the tree lists {n} CPUs; run this scenario with --smp 2 or more"
        );
        rt::set_secondary_fn(secondary);

        if let Some(&victim) = cpus[..n].iter().find(|&&m| m != me) {
            let hyp = ctx.dtb.reserved_with_compatible("portcullis,hypervisor");
            check!(
                hyp.is_some(),
                "no portcullis,hypervisor node in /reserved-memory"
            );
            let hyp = hyp.unwrap_or(guest::dt::Reg { base: 0, size: 0 });
            for entry in [
                hyp.base,
                hyp.base + hyp.size / 2,
                hyp.end() - 4,
                0x0900_0000,
            ] {
                let r = psci::cpu_on(victim, entry, 0);
                check!(
                    r == psci::code::INVALID_ADDRESS,
                    "CPU_ON({victim:#x}) at {entry:#x} returned {r}, want INVALID_ADDRESS (-9)"
                );
            }
            let aff = psci::affinity_info(victim);
            check!(
                aff == AFF_OFF,
                "AFFINITY_INFO({victim:#x}) = {aff} after refused CPU_ONs, want OFF (1)"
            );
            println!(
                "CPU_ON into Portcullis' memory or outside RAM: INVALID_ADDRESS, CPU stays off"
            );
        }

        for (i, &mpidr) in cpus[..n].iter().enumerate() {
            if mpidr == me {
                continue;
            }
            let r = psci::cpu_on(mpidr, rt::secondary_entry_address(), i as u64);
            check!(r == 0, "CPU_ON({mpidr:#x}) returned {r}");
            // At once again, while it starts: the pending entry must survive. (The context of this
            // one would make the CPU report under another index.)
            let racing = psci::cpu_on(mpidr, rt::secondary_entry_address(), (i + 1) as u64);
            check!(
                racing == psci::code::ON_PENDING || racing == psci::code::ALREADY_ON,
                "a second CPU_ON({mpidr:#x}) returned {racing}, want ON_PENDING (-5) or ALREADY_ON (-4)"
            );
            check!(
                wait_for(|| ARRIVED[i].load(Ordering::SeqCst) == 1),
                "CPU {mpidr:#x} never arrived"
            );
            println!("racing CPU_ON({mpidr:#x}) answered {racing}");
            let got = REPORTED[i].load(Ordering::SeqCst);
            println!("CPU {i} up, reports MPIDR {got:#x}");
            check!(
                got == mpidr,
                "CPU {i} reports MPIDR {got:#x}, the tree says {mpidr:#x}"
            );
            let aff = psci::affinity_info(mpidr);
            check!(
                aff == AFF_ON,
                "AFFINITY_INFO({mpidr:#x}) = {aff} while it runs, want ON (0)"
            );
            let again = psci::cpu_on(mpidr, rt::secondary_entry_address(), i as u64);
            check!(
                again == psci::code::ALREADY_ON,
                "CPU_ON of a running CPU returned {again}, want ALREADY_ON (-4)"
            );
        }

        RELEASE.store(1, Ordering::SeqCst);
        for &mpidr in cpus[..n].iter().filter(|&&m| m != me) {
            let off = wait_for(|| psci::affinity_info(mpidr) == AFF_OFF);
            check!(off, "CPU {mpidr:#x} never reached OFF after CPU_OFF");
        }
        println!("all secondaries off again");

        // A second round: CPU_ON works again after CPU_OFF.
        RELEASE.store(1, Ordering::SeqCst);
        for (i, &mpidr) in cpus[..n].iter().enumerate() {
            if mpidr == me {
                continue;
            }
            ARRIVED[i].store(0, Ordering::SeqCst);
            let r = psci::cpu_on(mpidr, rt::secondary_entry_address(), i as u64);
            check!(r == 0, "second CPU_ON({mpidr:#x}) returned {r}");
            check!(
                wait_for(|| ARRIVED[i].load(Ordering::SeqCst) == 1),
                "CPU {mpidr:#x} did not come back"
            );
            check!(
                wait_for(|| psci::affinity_info(mpidr) == AFF_OFF),
                "CPU {mpidr:#x} did not go off again"
            );
        }

        let bad = psci::cpu_on(0xff_0000_ffff, rt::secondary_entry_address(), 0);
        check!(
            bad == psci::code::INVALID_PARAMETERS,
            "CPU_ON of a CPU not in the tree returned {bad}, want INVALID_PARAMETERS (-2)"
        );
        let unknown = psci::call(0xc200_1234, 0, 0, 0)[0] as i64;
        check!(
            unknown == psci::NOT_SUPPORTED,
            "an unknown SMCCC call returned {unknown}"
        );
        let mit = psci::call(psci::MIGRATE_INFO_TYPE, 0, 0, 0)[0] as i64;
        check!((0..=2).contains(&mit), "MIGRATE_INFO_TYPE returned {mit}");
        let feat = psci::call(psci::FEATURES, u64::from(psci::CPU_ON), 0, 0)[0] as i64;
        check!(feat >= 0, "PSCI_FEATURES(CPU_ON) returned {feat}");
        Ok(())
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
