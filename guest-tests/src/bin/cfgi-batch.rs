//! Scenario *cfgi-batch* (issue 8, escape 7): the payload drives the emulated SMMU and puts a
//! batch of configuration invalidations over every StreamID on its Command queue, the way a hostile
//! host would to exhaust Portcullis' heap. Portcullis used to hold every composed STE of the batch
//! at once (eight CFGI_ALLs over 2^16 streams: `memory allocation of 18874368 bytes failed`, a
//! panic). Now:
//! 1. one CFGI_ALL + CMD_SYNC completes; the time its `CMDQ_PROD` write takes (one trap) is
//!    printed;
//! 2. eight CFGI_ALLs and a CMD_SYNC in one `CMDQ_PROD` write complete without error, in about
//!    the time of one (a batch recomposes each stream once), printed;
//! 3. a batch of range invalidations of every size, then a single CFGI_STE, complete; Portcullis
//!    still answers (ID registers read back).
//!
//! `scripts/run --kernel <cfgi-batch> --smp 1 --timeout 240`
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod scenario {
    use guest::rt::{self, Context};
    use guest::smmu::{Command, Smmu, SmmuError, SmmuMemory, SyncSignal, reg};
    use guest::{Failure, Outcome, check, println};

    guest::scenario!("cfgi-batch", run);

    static SMMU_MEMORY: SmmuMemory = SmmuMemory::new();

    const SYNC: Command = Command::Sync(SyncSignal::None);

    fn failed(what: &str, e: SmmuError) -> Failure {
        Failure::new(format_args!("{what}: {e}"))
    }

    /// Submits `cmds` with one `CMDQ_PROD` write, waits until consumed; returns the microseconds
    /// the write took (the trap in which Portcullis executes the whole batch).
    fn timed(smmu: &Smmu, what: &str, cmds: &[Command]) -> Result<u64, Failure> {
        let t0 = rt::ticks();
        let prod = smmu.submit(cmds).map_err(|e| failed(what, e))?;
        let t1 = rt::ticks();
        smmu.wait_consumed(prod).map_err(|e| failed(what, e))?;
        Ok((t1 - t0) * 1_000_000 / rt::tick_hz().max(1))
    }

    /// CMD_CFGI_STE_RANGE of 2^(`range` + 1) StreamIDs from `sid`.
    fn cfgi_range(sid: u32, range: u8) -> Command {
        const CFGI_STE_RANGE: u64 = 0x04;
        Command::Raw([CFGI_STE_RANGE | u64::from(sid) << 32, u64::from(range)])
    }

    fn run(ctx: &Context) -> Outcome {
        let frame = ctx
            .dtb
            .smmu()
            .ok_or_else(|| Failure::new(format_args!("no arm,smmu-v3 node in the host's tree")))?;
        let smmu = Smmu::probe(frame.base, &SMMU_MEMORY).map_err(|e| failed("probe", e))?;
        let idr0 = smmu.read32(reg::IDR0);
        smmu.reset(0).map_err(|e| failed("bring-up", e))?;
        println!(
            "SMMU up, Stream table of 2^{} StreamIDs",
            smmu.strtab_log2()
        );

        let one = timed(&smmu, "one CFGI_ALL", &[Command::CfgiAll, SYNC])?;
        println!("one CFGI_ALL + CMD_SYNC: {one} us in one trap");

        let mut eight = [Command::CfgiAll; 9];
        eight[8] = SYNC;
        let t = timed(&smmu, "eight CFGI_ALL", &eight)?;
        println!("eight CFGI_ALL + CMD_SYNC in one batch: {t} us in one trap");

        let mut ranges = [SYNC; 34];
        for (i, c) in ranges.iter_mut().take(32).enumerate() {
            // Every Range from 0 to 30 (31 is CFGI_ALL), at StreamIDs spread over the table.
            *c = cfgi_range((i as u32).wrapping_mul(0x9e37_79b9) >> 16, i.min(30) as u8);
        }
        ranges[32] = Command::CfgiSte { sid: 0 };
        let t = timed(&smmu, "ranges of every size", &ranges)?;
        println!("32 CFGI_STE_RANGE of every size + CFGI_STE + CMD_SYNC: {t} us in one trap");

        check!(
            smmu.read32(reg::IDR0) == idr0,
            "IDR0 reads {:#x} after the batches, {idr0:#x} before",
            smmu.read32(reg::IDR0)
        );
        let (active, ..) = smmu.active_gerrors();
        check!(
            active == 0,
            "GERROR ^ GERRORN = {active:#x} after the batches"
        );
        Ok(())
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
