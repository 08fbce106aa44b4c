//! Benchmark payload (not a test): what one strict unmap's command batch costs the host under
//! Portcullis, against a bare trap, in the same run.
//!
//! Linux's SMMUv3 driver, in strict mode, ends every unmap with a CMD_TLBI_NH_VA + CMD_SYNC batch:
//! it writes both commands into its queue, moves `CMDQ_PROD` (one trap: Portcullis consumes the
//! batch, submits the physical commands and waits for the physical CMD_SYNC), then polls
//! `CMDQ_CONS` until it passes the sync (one more trap). This payload does exactly that N times and
//! prints, in ns per operation (virtual counter, medians of 2000):
//! - `idr0-read-ns`: a read of the emulated IDR0 (a bare trap: decoded and emulated, nothing else);
//! - `cons-read-ns`: a read of `CMDQ_CONS` on its own;
//! - `prod-write-ns`: the `CMDQ_PROD` write carrying TLBI_NH_VA + CMD_SYNC;
//! - `cons-poll-ns`: the `CMDQ_CONS` poll after it, which sees the batch done;
//! - `unmap-batch-ns`: the write and the poll (and `unmap-batch-mean-ns`, their mean);
//! - `prod-write-vs-idr0`, `unmap-batch-vs-idr0`: the ratios.
//!
//! With a Portcullis built with `--features test-hooks,profile` it also has Portcullis log where the
//! time of the batches goes, stage by stage (`PROFILE` lines, ns per batch). Exits 0 unless a batch
//! fails.
//!
//! `scripts/run --kernel <bench-cmdq> --smp 1 --timeout 240 --features test-hooks,profile`
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod scenario {
    use core::cell::UnsafeCell;
    use guest::rt::{self, Context};
    use guest::smmu::{Command, Smmu, SmmuError, SmmuMemory, SyncSignal, cmdq_cons, reg};
    use guest::{Failure, Outcome, check, hooks, println};

    guest::scenario!("bench-cmdq", run);

    static SMMU_MEMORY: SmmuMemory = SmmuMemory::new();

    const N: usize = 2000;
    const WARMUP: usize = 200;

    /// One sample per operation, in counter ticks: medians, not means, because the machine is
    /// shared and a preempted QEMU makes a few samples huge.
    struct Samples(UnsafeCell<[u32; N]>);

    // SAFETY: the payload runs on one CPU.
    unsafe impl Sync for Samples {}

    static IDR0: Samples = Samples(UnsafeCell::new([0; N]));
    static CONS: Samples = Samples(UnsafeCell::new([0; N]));
    static WRITE: Samples = Samples(UnsafeCell::new([0; N]));
    static POLL: Samples = Samples(UnsafeCell::new([0; N]));
    static BATCH: Samples = Samples(UnsafeCell::new([0; N]));

    impl Samples {
        #[allow(clippy::mut_from_ref)]
        fn get(&self) -> &mut [u32; N] {
            // SAFETY: one CPU, and each array is used by one caller at a time.
            unsafe { &mut *self.0.get() }
        }

        /// The median, in ns.
        fn median_ns(&self) -> u64 {
            self.percentile_ns(50)
        }

        /// The `p`th percentile (0..=100), in ns.
        fn percentile_ns(&self, p: usize) -> u64 {
            let s = self.get();
            s.sort_unstable();
            let hz = rt::tick_hz().max(1);
            u64::from(s[(N * p / 100).min(N - 1)]) * 1_000_000_000 / hz
        }
    }

    fn failed(what: &str, e: SmmuError) -> Failure {
        Failure::new(format_args!("{what}: {e}"))
    }

    /// Times `op` N times into `into`.
    fn sample(into: &Samples, mut op: impl FnMut()) {
        for s in into.get().iter_mut() {
            let t0 = rt::ticks();
            op();
            *s = (rt::ticks() - t0) as u32;
        }
    }

    /// Runs strict-unmap batches: each `CMDQ_PROD` write and `CMDQ_CONS` poll timed into
    /// `samples` (as many as it holds; `None` for a warm-up of `WARMUP`).
    fn unmap_batches(smmu: &Smmu, timed: bool, prod: &mut u32) -> Result<(), Failure> {
        let ring = smmu.cmdq_ring();
        let n = if timed { N } else { WARMUP };
        for i in 0..n {
            let tlbi = Command::TlbiNhVa {
                asid: 1,
                va: 0x4000_0000 + (i as u64 % 512) * 0x1000,
            };
            smmu.replace_command(*prod, &tlbi);
            let sync_at = ring.next(*prod);
            smmu.replace_command(sync_at, &Command::Sync(SyncSignal::None));
            *prod = ring.next(sync_at);
            let t0 = rt::ticks();
            smmu.write32(reg::CMDQ_PROD, *prod);
            let t1 = rt::ticks();
            let cons = smmu.cmdq_cons();
            let t2 = rt::ticks();
            if timed {
                WRITE.get()[i] = (t1 - t0) as u32;
                POLL.get()[i] = (t2 - t1) as u32;
                BATCH.get()[i] = (t2 - t0) as u32;
            }
            let rd = cmdq_cons::RD.get(cons.into()) as u32;
            check!(
                rd == *prod,
                "batch {i}: CMDQ_CONS {cons:#x} after CMDQ_PROD {:#x} (not consumed in the write)",
                *prod
            );
        }
        Ok(())
    }

    fn run(ctx: &Context) -> Outcome {
        let frame = ctx
            .dtb
            .smmu()
            .ok_or_else(|| Failure::new(format_args!("no arm,smmu-v3 node in the host's tree")))?;
        let smmu = Smmu::probe(frame.base, &SMMU_MEMORY).map_err(|e| failed("probe", e))?;
        smmu.reset(0).map_err(|e| failed("bring-up", e))?;
        let mut prod = smmu.cmdq_prod();

        sample(&IDR0, || {
            smmu.read32(reg::IDR0);
        });
        let idr0 = IDR0.median_ns();
        sample(&CONS, || {
            smmu.cmdq_cons();
        });
        let cons = CONS.median_ns();

        unmap_batches(&smmu, false, &mut prod)?;
        let profiled = hooks::profile(0).is_ok();
        let t0 = rt::ticks();
        unmap_batches(&smmu, true, &mut prod)?;
        let mean = (rt::ticks() - t0) * 1_000_000_000 / rt::tick_hz().max(1) / N as u64;
        if profiled {
            let _ = hooks::profile(N as u64);
        }
        let (write, poll, batch) = (WRITE.median_ns(), POLL.median_ns(), BATCH.median_ns());
        let spread = [10, 90, 99, 100].map(|p| WRITE.percentile_ns(p));

        // The bare trap once more, after the batches (the machine is shared: a drift shows here).
        sample(&IDR0, || {
            smmu.read32(reg::IDR0);
        });
        let idr0_after = IDR0.median_ns();

        let (active, ..) = smmu.active_gerrors();
        check!(
            active == 0,
            "GERROR ^ GERRORN = {active:#x} after the batches"
        );
        let ratio = |a: u64| a as f64 / idr0.max(1) as f64;
        println!("BENCH idr0-read-ns {idr0}");
        println!("BENCH idr0-read-after-ns {idr0_after}");
        println!("BENCH cons-read-ns {cons}");
        println!("BENCH prod-write-ns {write}");
        println!(
            "BENCH prod-write-p10-p90-p99-max-ns {} {} {} {}",
            spread[0], spread[1], spread[2], spread[3]
        );
        println!("BENCH cons-poll-ns {poll}");
        println!("BENCH unmap-batch-ns {batch}");
        println!("BENCH unmap-batch-mean-ns {mean}");
        println!("BENCH prod-write-vs-idr0 {:.2}", ratio(write));
        println!("BENCH unmap-batch-vs-idr0 {:.2}", ratio(batch));
        Ok(())
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
