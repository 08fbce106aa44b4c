//! Benchmark payload (not a test of behaviour; no figure is judged): the map + unmap round trip of
//! one 4 KiB IOVA page through the SMMU the payload is given, the way Linux's arm-smmu-v3 driver
//! does it for a strict unmap. Runs the same under Portcullis (the emulated SMMU) and on QEMU's
//! SMMU directly (`scripts/run --native`), so `scripts/bench` can print the ratio.
//!
//! Setup: the SMMU brought up by the payload's driver ([`guest::smmu`]), a CD and stage 1 tables
//! for the edu's StreamID, one page mapped and a DMA through it (the translation is live, and
//! cached). Then N times, each step timed with the virtual counter:
//! - map: write the leaf PTE, TLBI_NH_VA + CMD_SYNC;
//! - unmap: clear the PTE, TLBI_NH_VA + CMD_SYNC (Linux's strict unmap: its map writes the PTE only,
//!   so `unmap-ns` is the figure to compare with Linux's dma_unmap).
//!
//! Each batch goes in as Linux's driver puts it: the commands in queue memory, one CMDQ_PROD write,
//! then completion polled on CMDQ_CONS (`sync=cons`) or, with `bench.sync=msi` on the command line
//! and an SMMU that offers MSIs (IDR0.MSI), by a CMD_SYNC with CS = SIG_IRQ whose MSI writes into
//! the CMD_SYNC's own queue slot, polled in memory (`sync=msi`; `bench.sync=all`: both).
//! `bench.iters=N` (default 256, at most 512) sets N.
//!
//! Prints `BENCH <variant>-<figure>-ns <median>` lines (map, unmap, map-unmap; min and max of the
//! round trip too) and the SMMU accesses per round trip, then PASS once every batch completed.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod scenario {
    use guest::dma::{self, DmaBuffer, device_pattern, discover, dma_failed};
    use guest::edu::BUFFER_SIZE;
    use guest::rt::{self, Context};
    use guest::smmu::{Command, Smmu, SmmuError, SmmuMemory, Stage1Tables, Ste};
    use guest::{Failure, Outcome, check, println};

    guest::scenario!("bench-map", run);

    static SMMU_MEMORY: SmmuMemory = SmmuMemory::new();
    static TABLES: Stage1Tables = Stage1Tables::new();
    static PAGE: DmaBuffer<BUFFER_SIZE> = DmaBuffer::new();

    /// Outside QEMU's RAM (below 4 GiB with `-m 1G`): only the translation puts memory here.
    const IOVA: u64 = 0x1_0000_0000;
    const ASID: u16 = 1;
    const DEFAULT_ITERS: usize = 256;
    /// The samples live on the stack (64 KiB, shared with the PCI topology): 3 x 512 x 4 bytes.
    const MAX_ITERS: usize = 512;
    const WARMUP: usize = 8;

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Sync {
        /// Poll CMDQ_CONS (CMD_SYNC with CS = SIG_NONE).
        Cons,
        /// CS = SIG_IRQ with an MSI into the payload's own memory, polled there.
        Msi,
    }

    impl Sync {
        fn name(self) -> &'static str {
            match self {
                Sync::Cons => "cons",
                Sync::Msi => "msi",
            }
        }
    }

    fn option(ctx: &Context, key: &str) -> Option<&'static str> {
        ctx.dtb
            .bootargs()
            .unwrap_or("")
            .split_whitespace()
            .find_map(|a| a.strip_prefix(key)?.strip_prefix('='))
    }

    fn ns(ticks: u64) -> u64 {
        (u128::from(ticks) * 1_000_000_000 / u128::from(rt::tick_hz().max(1))) as u64
    }

    fn median(xs: &mut [u32]) -> u64 {
        xs.sort_unstable();
        xs.get(xs.len() / 2).copied().map_or(0, u64::from)
    }

    fn smmu_failed(what: core::fmt::Arguments, e: SmmuError) -> Failure {
        Failure::new(format_args!("{what}: {e}"))
    }

    fn run(ctx: &Context) -> Outcome {
        let tree = &ctx.dtb;
        let iters = option(ctx, "bench.iters")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(DEFAULT_ITERS)
            .clamp(1, MAX_ITERS);
        let wanted = option(ctx, "bench.sync").unwrap_or("cons");
        let (el, _) = rt::current_el();
        let frame = tree.smmu();
        check!(frame.is_some(), "no arm,smmu-v3 node in the tree");
        let frame = frame.map_or(0, |f| f.base);
        let (host, topology) = discover(tree)?;
        let (edu, sid) = &dma::one_edu(&host, &topology, tree)?;
        let smmu = Smmu::probe(frame, &SMMU_MEMORY)
            .map_err(|e| smmu_failed(format_args!("probing the SMMU"), e))?;
        let f = smmu.features;
        println!("SMMU at {frame:#x} (payload at EL{el}): {f}");
        smmu.reset(*sid)
            .map_err(|e| smmu_failed(format_args!("bringing the SMMU up"), e))?;
        TABLES.init(IOVA, ASID, f.oas);
        TABLES.map(IOVA, PAGE.addr());
        smmu.install_ste(*sid, &Ste::stage1(TABLES.cd_addr()), ASID)
            .map_err(|e| smmu_failed(format_args!("installing the edu's stage 1 STE"), e))?;
        // The translation works (and is now in the SMMU's TLB).
        PAGE.fill(|i| device_pattern(7, i));
        edu.to_device(IOVA, BUFFER_SIZE)
            .map_err(|e| dma_failed(format_args!("DMA through IOVA {IOVA:#x}"), e))?;
        println!(
            "edu SID {sid:#x}: stage 1, IOVA {IOVA:#x} -> {:#x}; {iters} round trips per variant",
            PAGE.addr()
        );

        let mut variants = [None; 2];
        match wanted {
            "msi" => variants[0] = Some(Sync::Msi),
            "all" => variants = [Some(Sync::Cons), Some(Sync::Msi)],
            _ => variants[0] = Some(Sync::Cons),
        }
        for v in variants.into_iter().flatten() {
            if v == Sync::Msi && !f.msi {
                println!("BENCH msi-map-unmap-ns not-offered (IDR0.MSI = 0)");
                continue;
            }
            round_trips(&smmu, v, iters)?;
        }
        // Still translating after it all: map, DMA, compare.
        TABLES.map(IOVA, PAGE.addr());
        smmu.issue_polling_cons(&[
            Command::TlbiNhVa {
                asid: ASID,
                va: IOVA,
            },
            sync_cmd(),
        ])
        .map_err(|e| smmu_failed(format_args!("the final map"), e))?;
        PAGE.fill(|_| 0);
        edu.from_device(IOVA, BUFFER_SIZE)
            .map_err(|e| dma_failed(format_args!("DMA back through IOVA {IOVA:#x}"), e))?;
        let bad = PAGE.mismatch(0..BUFFER_SIZE, |i| device_pattern(7, i));
        check!(
            bad.is_none(),
            "after the round trips, DMA through IOVA {IOVA:#x} read back byte {:#x} as {:#x}, \
             want {:#x}",
            bad.map_or(0, |b| b.0),
            bad.map_or(0, |b| b.1),
            bad.map_or(0, |b| b.2)
        );
        Ok(())
    }

    fn sync_cmd() -> Command {
        Command::Sync(guest::smmu::SyncSignal::None)
    }

    /// One map or unmap batch: TLBI_NH_VA + CMD_SYNC, completed as `v` says.
    fn invalidate(smmu: &Smmu, v: Sync) -> Result<(), SmmuError> {
        let tlbi = Command::TlbiNhVa {
            asid: ASID,
            va: IOVA,
        };
        match v {
            Sync::Cons => smmu.issue_polling_cons(&[tlbi, sync_cmd()]),
            Sync::Msi => smmu.issue_msi_sync(&[tlbi]),
        }
    }

    fn round_trips(smmu: &Smmu, v: Sync, iters: usize) -> Outcome {
        // Tick deltas (a u32 holds over a minute of QEMU's 62.5 MHz counter).
        let mut map = [0u32; MAX_ITERS];
        let mut unmap = [0u32; MAX_ITERS];
        let mut both = [0u32; MAX_ITERS];
        let name = v.name();
        for i in 0..WARMUP + iters {
            let t0 = rt::ticks();
            TABLES.map(IOVA, PAGE.addr());
            invalidate(smmu, v).map_err(|e| {
                smmu_failed(format_args!("{name}: map {i}: TLBI_NH_VA + CMD_SYNC"), e)
            })?;
            let t1 = rt::ticks();
            TABLES.unmap(IOVA);
            invalidate(smmu, v).map_err(|e| {
                smmu_failed(format_args!("{name}: unmap {i}: TLBI_NH_VA + CMD_SYNC"), e)
            })?;
            let t2 = rt::ticks();
            if i >= WARMUP {
                let k = i - WARMUP;
                let delta = |a: u64, b: u64| u32::try_from(b - a).unwrap_or(u32::MAX);
                map[k] = delta(t0, t1);
                unmap[k] = delta(t1, t2);
                both[k] = delta(t0, t2);
            }
        }
        let min = both[..iters].iter().copied().min().map_or(0, u64::from);
        let max = both[..iters].iter().copied().max().map_or(0, u64::from);
        println!("BENCH {name}-map-ns {}", ns(median(&mut map[..iters])));
        println!("BENCH {name}-unmap-ns {}", ns(median(&mut unmap[..iters])));
        println!(
            "BENCH {name}-map-unmap-ns {}",
            ns(median(&mut both[..iters]))
        );
        println!("BENCH {name}-map-unmap-min-ns {}", ns(min));
        println!("BENCH {name}-map-unmap-max-ns {}", ns(max));
        Ok(())
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
