//! Benchmark payload (not a test): what a trap into Portcullis costs the host, measured with the
//! virtual counter under QEMU. Prints ns per operation for a plain RAM load (baseline), a PSCI call
//! (trapped SMC, answered by firmware through Portcullis), and a read of the emulated SMMU's IDR0
//! (trapped data abort, decoded and emulated). Used by `scripts/bench`; exits 0.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod scenario {
    use guest::rt::{self, Context};
    use guest::{Outcome, check, println, psci};

    guest::scenario!("bench-traps", run);

    const N: u64 = 2000;

    fn per_op_ns(ticks: u64) -> u64 {
        let hz = rt::tick_hz().max(1);
        ticks.saturating_mul(1_000_000_000) / hz / N
    }

    fn run(ctx: &Context) -> Outcome {
        let smmu = ctx.dtb.smmu();
        check!(smmu.is_some(), "no SMMU in the tree");
        let smmu = smmu.map_or(0, |s| s.base);
        let word = [0u64; 1];
        let ram = word.as_ptr() as u64;

        let t0 = rt::ticks();
        for _ in 0..N {
            // SAFETY: a load of this payload's own stack word.
            unsafe { guest::mmio::read64(ram) };
        }
        let load = per_op_ns(rt::ticks() - t0);

        let t0 = rt::ticks();
        for _ in 0..N {
            psci::version();
        }
        let call = per_op_ns(rt::ticks() - t0);

        let t0 = rt::ticks();
        for _ in 0..N {
            // SAFETY: IDR0 of the (emulated) SMMU: a plain 32-bit load.
            unsafe { guest::mmio::mmio_read32(smmu) };
        }
        let emul = per_op_ns(rt::ticks() - t0);

        println!("BENCH ram-load-ns {load}");
        println!("BENCH psci-call-ns {call}");
        println!("BENCH smmu-idr0-read-ns {emul}");
        println!(
            "BENCH smmu-read-vs-psci-call {:.2}",
            emul as f64 / call.max(1) as f64
        );
        Ok(())
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
