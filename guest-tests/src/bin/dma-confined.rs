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
    use guest::dma::{
        self, DmaBuffer, Staging, discover, dma_failed, expect_fault, faults_now, fill_memory,
        memory_changed, memory_pattern,
    };
    use guest::dt::Reg;
    use guest::edu::{BUFFER_SIZE, Direction, Edu};
    use guest::hooks::{self, Canary};
    use guest::rt::{Context, image_extent};
    use guest::{Failure, Outcome, check, println};

    guest::scenario!("dma-confined", run);

    static SOURCE: DmaBuffer<BUFFER_SIZE> = DmaBuffer::new();
    static READBACK: DmaBuffer<BUFFER_SIZE> = DmaBuffer::new();

    /// Bytes filled with the pattern on each side of a crash-region target.
    const GUARD: u64 = 64;
    /// A transfer this small is a single transaction: its fault must name the target exactly.
    const PROBE: usize = 4;
    /// At most this many 4 KiB pieces of the canary are aimed at.
    const MAX_CANARY_PIECES: u64 = 16;

    struct Device<'a> {
        edu: &'a Edu,
        sid: u32,
        staging: Staging<'a>,
    }

    fn run(ctx: &Context) -> Outcome {
        let tree = &ctx.dtb;
        let hyp = dma::hypervisor_region(tree)?;
        println!("Portcullis' memory: {:#x}..{:#x}", hyp.base, hyp.end());
        let crash = match tree.crash_region() {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Err(Failure::new(format_args!(
                    "no crashkernel= in bootargs: run with --append crashkernel=32M"
                )));
            }
            Err(ck) => {
                return Err(Failure::new(format_args!(
                    "crashkernel={ck} is not SIZE@BASE (Portcullis places it)"
                )));
            }
        };
        println!("crash region: {:#x}..{:#x}", crash.base, crash.end());
        check_crash_region_is_free(ctx, crash, hyp)?;

        let (host, topology) = discover(tree)?;
        let (edus, n) = dma::edus::<1>(&host, &topology, tree)?;
        check!(
            n == 1,
            "no edu (1234:11e8) on the PCI bus: run with -device edu,dma_mask=0xffffffffffffffff"
        );
        let Some((edu, sid)) = &edus[0] else {
            return Err(Failure::new(format_args!("edu vanished")));
        };
        let dev = Device {
            edu,
            sid: *sid,
            staging: Staging {
                source: &SOURCE,
                readback: &READBACK,
            },
        };

        // Positive control: the device's DMA with ordinary host RAM works both ways.
        dev.staging.load(edu, 1)?;
        println!("edu {} does DMA to and from ordinary RAM", edu.function.bdf);

        // The crash region: what the CPU wrote there stays, and none of it reaches the device.
        let mid = crash.base + crash.size / 2 + 0x40;
        let last = crash.end() - BUFFER_SIZE as u64;
        for (n, (target, len)) in [
            (crash.base, BUFFER_SIZE),
            (crash.base + 0x2000, PROBE),
            (mid, 0x200),
            (last, BUFFER_SIZE),
        ]
        .into_iter()
        .enumerate()
        {
            refused_write_to_crash(&dev, crash, target, len, 10 + n as u8)?;
        }
        for (n, (target, len)) in [
            (crash.base + 0x3000, PROBE),
            (mid, 0x200),
            (last, BUFFER_SIZE),
        ]
        .into_iter()
        .enumerate()
        {
            refused_read_from_crash(&dev, crash, target, len, 20 + n as u8)?;
        }
        println!("crash region: refused and recorded both ways");

        // Portcullis' memory: the canary's checksum does not move, and none of it reaches the device.
        let canary = dma::canary(hyp)?;
        println!(
            "canary: {:#x}+{:#x}, checksum {:#x}",
            canary.base, canary.size, canary.checksum
        );
        refused_write_to_canary(&dev, &canary, canary.base, PROBE, 30)?;
        let pieces = canary
            .size
            .div_ceil(BUFFER_SIZE as u64)
            .min(MAX_CANARY_PIECES);
        for piece in 0..pieces {
            let target = canary.base + piece * BUFFER_SIZE as u64;
            let len = (canary.end() - target).min(BUFFER_SIZE as u64) as usize;
            refused_write_to_canary(&dev, &canary, target, len, 31 + piece as u8)?;
        }
        let len = canary.size.min(BUFFER_SIZE as u64) as usize;
        refused_read_from_canary(&dev, &canary, canary.base, len, 60)?;
        println!("Portcullis' memory: refused and recorded both ways");

        // And the device still works with ordinary RAM.
        dev.staging.load(edu, 2)?;
        Ok(())
    }

    /// The payload is about to write the crash region with the CPU: it must be host RAM that holds
    /// neither Portcullis, nor the payload, nor its device tree.
    fn check_crash_region_is_free(ctx: &Context, crash: Reg, hyp: Reg) -> Outcome {
        check!(
            crash.size >= 4 * BUFFER_SIZE as u64,
            "the crash region {:#x}+{:#x} is too small to test (run with crashkernel=32M)",
            crash.base,
            crash.size
        );
        check!(
            ctx.dtb
                .memory()
                .any(|m| m.base <= crash.base && crash.end() <= m.end()),
            "the crash region {:#x}..{:#x} is not inside a memory node",
            crash.base,
            crash.end()
        );
        check!(
            !crash.overlaps(&hyp),
            "the crash region overlaps Portcullis' memory"
        );
        let (start, end) = image_extent();
        let image = Reg {
            base: start,
            size: end - start,
        };
        check!(
            !crash.overlaps(&image),
            "the crash region overlaps the payload at {start:#x}..{end:#x}"
        );
        let dtb = Reg {
            base: ctx.dtb_addr,
            size: ctx.dtb.total_size(),
        };
        check!(
            !crash.overlaps(&dtb),
            "the crash region overlaps the device tree at {:#x}",
            ctx.dtb_addr
        );
        Ok(())
    }

    /// `[target - GUARD, target + len + GUARD)`, clipped to the crash region.
    fn guarded(crash: Reg, target: u64, len: usize) -> (u64, u64) {
        let start = target.saturating_sub(GUARD).max(crash.base);
        let end = (target + len as u64 + GUARD).min(crash.end());
        (start, end - start)
    }

    fn refused_write_to_crash(
        dev: &Device,
        crash: Reg,
        target: u64,
        len: usize,
        seed: u8,
    ) -> Outcome {
        let (start, size) = guarded(crash, target, len);
        // SAFETY: inside the crash region, which is host RAM that nothing else uses here and that
        // holds neither the payload nor its tree (`check_crash_region_is_free`).
        unsafe { fill_memory(start, size) };
        dev.staging.load(dev.edu, seed)?;
        let before = faults_now(dev.sid);
        dev.edu.from_device(target, len).map_err(|e| {
            dma_failed(
                format_args!("device->RAM DMA to the crash region at {target:#x}"),
                e,
            )
        })?;
        // SAFETY: as above.
        let landed = unsafe { memory_changed(start, size) };
        if let Some((addr, got)) = landed {
            return Err(Failure::new(format_args!(
                "a device->RAM DMA of {len:#x} bytes by edu {} (SID {:#x}) to the crash region at {target:#x} landed: byte {addr:#x} is now {got:#x}, was {:#x}",
                dev.edu.function.bdf,
                dev.sid,
                memory_pattern(addr)
            )));
        }
        expect_fault(
            dev.sid,
            before,
            target,
            len,
            Direction::FromDevice,
            len == PROBE,
            format_args!("crash region"),
        )?;
        Ok(())
    }

    fn refused_read_from_crash(
        dev: &Device,
        crash: Reg,
        target: u64,
        len: usize,
        seed: u8,
    ) -> Outcome {
        let (start, size) = guarded(crash, target, len);
        // SAFETY: as in `refused_write_to_crash`.
        unsafe { fill_memory(start, size) };
        dev.staging.load(dev.edu, seed)?;
        let before = faults_now(dev.sid);
        dev.edu.to_device(target, len).map_err(|e| {
            dma_failed(
                format_args!("RAM->device DMA from the crash region at {target:#x}"),
                e,
            )
        })?;
        let leaked = |i: usize| memory_pattern(target + i as u64);
        let how = dev.staging.expect_no_data(
            dev.edu,
            seed,
            len,
            format_args!("the crash region at {target:#x}"),
            Some(&leaked),
        )?;
        // SAFETY: as above.
        let changed = unsafe { memory_changed(start, size) };
        check!(
            changed.is_none(),
            "a refused DMA read from the crash region changed it at {:#x}",
            changed.map_or(0, |c| c.0)
        );
        expect_fault(
            dev.sid,
            before,
            target,
            len,
            Direction::ToDevice,
            len == PROBE,
            format_args!("crash region"),
        )?;
        println!("  read of {len:#x} bytes from {target:#x}: device buffer {how}");
        Ok(())
    }

    fn canary_checksum() -> Result<u64, Failure> {
        hooks::canary()
            .map(|c| c.checksum)
            .map_err(|e| Failure::new(format_args!("PORTCULLIS_TEST_CANARY: {e}")))
    }

    fn refused_write_to_canary(
        dev: &Device,
        canary: &Canary,
        target: u64,
        len: usize,
        seed: u8,
    ) -> Outcome {
        dev.staging.load(dev.edu, seed)?;
        let before = faults_now(dev.sid);
        dev.edu.from_device(target, len).map_err(|e| {
            dma_failed(
                format_args!("device->RAM DMA to Portcullis' canary at {target:#x}"),
                e,
            )
        })?;
        let now = canary_checksum()?;
        check!(
            now == canary.checksum,
            "a device->RAM DMA of {len:#x} bytes by edu {} (SID {:#x}) to Portcullis' memory at {target:#x} landed: the canary's checksum went from {:#x} to {now:#x}",
            dev.edu.function.bdf,
            dev.sid,
            canary.checksum
        );
        expect_fault(
            dev.sid,
            before,
            target,
            len,
            Direction::FromDevice,
            len == PROBE,
            format_args!("Portcullis' canary"),
        )?;
        Ok(())
    }

    fn refused_read_from_canary(
        dev: &Device,
        canary: &Canary,
        target: u64,
        len: usize,
        seed: u8,
    ) -> Outcome {
        dev.staging.load(dev.edu, seed)?;
        let before = faults_now(dev.sid);
        dev.edu.to_device(target, len).map_err(|e| {
            dma_failed(
                format_args!("RAM->device DMA from Portcullis' canary at {target:#x}"),
                e,
            )
        })?;
        // The canary's bytes are unknown to the payload: the buffer must be unchanged or zeroed.
        let how = dev.staging.expect_no_data(
            dev.edu,
            seed,
            len,
            format_args!("Portcullis' memory at {target:#x}"),
            None,
        )?;
        let now = canary_checksum()?;
        check!(
            now == canary.checksum,
            "the canary's checksum changed after a DMA read: {:#x} -> {now:#x}",
            canary.checksum
        );
        expect_fault(
            dev.sid,
            before,
            target,
            len,
            Direction::ToDevice,
            len == PROBE,
            format_args!("Portcullis' canary"),
        )?;
        println!("  read of {len:#x} bytes from the canary: device buffer {how}");
        Ok(())
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
