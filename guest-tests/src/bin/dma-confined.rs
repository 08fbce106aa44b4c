//! Scenario *dma-confined*: the host's devices cannot reach Portcullis' memory or the crash region
//! by DMA, while they still reach ordinary host RAM.
//!
//! With one edu device (positive control first: its DMA with ordinary RAM works both ways):
//! - **crash region** (`crashkernel=SIZE@BASE`, as Portcullis placed it): the payload fills parts
//!   of it with a known pattern through the CPU; device -> RAM transfers aimed there must leave the
//!   pattern intact, and RAM -> device transfers from there must bring the device none of it;
//! - **Portcullis' memory**: the canary area of `PORTCULLIS_TEST_CANARY` (which the payload cannot
//!   read) is the target; its checksum must not change, and reads from it must bring no data;
//! - every refused transfer is recorded: `PORTCULLIS_TEST_FAULTS` for the edu's StreamID counts new
//!   F_TRANSLATION events naming the target, in the right direction.
//!
//! What "no data" means for a refused read: QEMU's edu completes the transfer anyway, and its buffer
//! then holds either its old contents or zeros (QEMU 10: the refused range reads as 0); anything
//! else is a leak. Needs a `test-hooks` build of Portcullis:
//!
//! `scripts/run --features test-hooks --kernel <dma-confined> --smp 1 --append "crashkernel=32M"
//!  --hyp-args "log=info" -- -device edu,dma_mask=0xffffffffffffffff`
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod scenario {
    use guest::dma::{self, DmaBuffer, PROBE, Staging, Subject, discover};
    use guest::edu::BUFFER_SIZE;
    use guest::rt::Context;
    use guest::{Outcome, println};

    guest::scenario!("dma-confined", run);

    static SOURCE: DmaBuffer<BUFFER_SIZE> = DmaBuffer::new();
    static READBACK: DmaBuffer<BUFFER_SIZE> = DmaBuffer::new();

    /// At most this many 4 KiB pieces of the canary are aimed at.
    const MAX_CANARY_PIECES: u64 = 16;

    fn run(ctx: &Context) -> Outcome {
        let tree = &ctx.dtb;
        let hyp = dma::hypervisor_region(tree)?;
        println!("Portcullis' memory: {:#x}..{:#x}", hyp.base, hyp.end());
        let crash = dma::crash_region(ctx, hyp)?;
        println!("crash region: {:#x}..{:#x}", crash.base, crash.end());

        let (host, topology) = discover(tree)?;
        let (edu, sid) = &dma::one_edu(&host, &topology, tree)?;
        let staging = Staging {
            source: &SOURCE,
            readback: &READBACK,
        };
        let dev = Subject {
            edu,
            sid: *sid,
            staging: &staging,
            bystander: None,
        };

        // Positive control: the device's DMA with ordinary host RAM works both ways.
        staging.load(edu, 1)?;
        println!("edu {} does DMA to and from ordinary RAM", edu.function.bdf);

        // The crash region: what the CPU wrote there stays, and none of it reaches the device.
        let mid = crash.base + crash.size / 2 + 0x40;
        let last = crash.end() - BUFFER_SIZE as u64;
        let writes = [
            (crash.base, BUFFER_SIZE),
            (crash.base + 0x2000, PROBE),
            (mid, 0x200),
            (last, BUFFER_SIZE),
        ];
        for (n, (target, len)) in writes.into_iter().enumerate() {
            dev.refused_write_to_crash(crash, target, len, 10 + n as u8)?;
        }
        let reads = [
            (crash.base + 0x3000, PROBE),
            (mid, 0x200),
            (last, BUFFER_SIZE),
        ];
        for (n, (target, len)) in reads.into_iter().enumerate() {
            dev.refused_read_from_crash(crash, target, len, 20 + n as u8)?;
        }
        println!("crash region: refused and recorded both ways");

        // Portcullis' memory: the canary's checksum does not move, none of it reaches the device.
        let canary = dma::canary(hyp)?;
        println!(
            "canary: {:#x}+{:#x}, checksum {:#x}",
            canary.base, canary.size, canary.checksum
        );
        dev.refused_write_to_canary(&canary, canary.base, PROBE, 30)?;
        let pieces = canary
            .size
            .div_ceil(BUFFER_SIZE as u64)
            .min(MAX_CANARY_PIECES);
        for piece in 0..pieces {
            let target = canary.base + piece * BUFFER_SIZE as u64;
            let len = (canary.end() - target).min(BUFFER_SIZE as u64) as usize;
            dev.refused_write_to_canary(&canary, target, len, 31 + piece as u8)?;
        }
        let len = canary.size.min(BUFFER_SIZE as u64) as usize;
        dev.refused_read_from_canary(&canary, canary.base, len, 60)?;
        println!("Portcullis' memory: refused and recorded both ways");

        // And the device still works with ordinary RAM.
        staging.load(edu, 2)?;
        Ok(())
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
