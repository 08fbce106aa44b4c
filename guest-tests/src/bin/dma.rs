//! Scenario *dma*: an edu device, found and configured by the payload's own PCI enumeration, does
//! DMA to and from ordinary host RAM under Portcullis: every byte arrives, in the right place, in
//! both directions, for several sizes and offsets.
//!
//! `scripts/run --kernel <dma> --smp 1 -- -device edu,dma_mask=0xffffffffffffffff`
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod scenario {
    use guest::dma::{
        DmaBuffer, READBACK_FILL, device_pattern, discover, dma_failed, stream_id_of,
    };
    use guest::edu::{self, BUFFER_SIZE, Direction, Edu, EduError};
    use guest::rt::Context;
    use guest::{Failure, Outcome, check, println};

    guest::scenario!("dma", run);

    static SOURCE: DmaBuffer<BUFFER_SIZE> = DmaBuffer::new();
    static DEST: DmaBuffer<BUFFER_SIZE> = DmaBuffer::new();

    /// The pattern the device's buffer holds around each case's range.
    const BACKGROUND_SEED: u8 = 0;

    /// Each case is one transfer pair, (ram_off, buf_off, dest_off, len): `len` bytes from
    /// SOURCE + `ram_off` to the device's buffer at `buf_off`, then from there to DEST + `dest_off`.
    const CASES: [(usize, usize, usize, usize); 6] = [
        (0, 0, 0, BUFFER_SIZE),
        (0, 0, 0, 1),
        (3, 0x11, 5, 61),
        (0x100, 0x800, 0x300, 0x400),
        (0xff8, 0xff8, 0xff8, 8),
        (7, 0xa01, 0x1ff, 0x5ff),
    ];

    fn run(ctx: &Context) -> Outcome {
        let (host, topology) = discover(&ctx.dtb)?;
        let function = topology.find(edu::VENDOR_ID, edu::DEVICE_ID).next().ok_or_else(|| {
            Failure::new(format_args!(
                "no edu (1234:11e8) on the PCI bus: run with -device edu,dma_mask=0xffffffffffffffff"
            ))
        })?;
        let edu =
            Edu::new(function).map_err(|e| dma_failed(format_args!("edu {}", function.bdf), e))?;
        let sid = stream_id_of(&edu, &host, &ctx.dtb)?;
        println!(
            "edu at {} (RID {:#06x}), StreamID {sid:#x}",
            function.bdf, function.rid
        );
        println!(
            "edu identification {:#x}, BAR0 {:#x}",
            edu.identification(),
            function.bars[0].map_or(0, |b| b.cpu_addr)
        );
        let cmd = function.command();
        check!(
            cmd & 0b110 == 0b110,
            "edu {} command register {cmd:#x}: memory/bus master not enabled",
            function.bdf
        );

        // The driver refuses what would overrun the device's 4 KiB buffer.
        let overrun = edu.start(Direction::ToDevice, SOURCE.addr(), 0xf00, 0x200);
        check!(
            matches!(overrun, Err(EduError::OutOfBuffer { .. })),
            "the edu driver accepted a transfer past the end of its buffer: {overrun:?}"
        );

        for (n, case) in CASES.iter().enumerate() {
            let seed = n as u8 + 1;
            let (ram_off, buf_off, dest_off, len) = *case;

            // The device's buffer first holds a background pattern...
            SOURCE.fill(|i| device_pattern(BACKGROUND_SEED, i));
            edu.to_device(SOURCE.addr(), BUFFER_SIZE)
                .map_err(|e| dma_failed(format_args!("case {n}: background"), e))?;
            // ...then RAM -> device: exactly `len` bytes land at `buf_off`.
            SOURCE.fill(|i| device_pattern(seed, i));
            let src = SOURCE.addr() + ram_off as u64;
            edu.to_device_at(src, buf_off, len).map_err(|e| {
                dma_failed(
                    format_args!("case {n}: {len:#x} bytes RAM {src:#x} -> buffer {buf_off:#x}"),
                    e,
                )
            })?;
            DEST.fill(|_| READBACK_FILL);
            edu.from_device(DEST.addr(), BUFFER_SIZE)
                .map_err(|e| dma_failed(format_args!("case {n}: readback"), e))?;
            let want_buffer = |i: usize| {
                if (buf_off..buf_off + len).contains(&i) {
                    device_pattern(seed, i - buf_off + ram_off)
                } else {
                    device_pattern(BACKGROUND_SEED, i)
                }
            };
            let bad = DEST.mismatch(0..BUFFER_SIZE, want_buffer);
            check!(
                bad.is_none(),
                "case {n}: RAM {src:#x} -> device buffer {buf_off:#x}, {len:#x} bytes: buffer byte {:#x} is {:#x}, want {:#x}",
                bad.map_or(0, |b| b.0),
                bad.map_or(0, |b| b.1),
                bad.map_or(0, |b| b.2)
            );

            // Device -> RAM: exactly `len` bytes land at DEST + `dest_off`, nothing around them.
            DEST.fill(|_| READBACK_FILL);
            let dst = DEST.addr() + dest_off as u64;
            edu.from_device_at(dst, buf_off, len).map_err(|e| {
                dma_failed(
                    format_args!("case {n}: {len:#x} bytes buffer {buf_off:#x} -> RAM {dst:#x}"),
                    e,
                )
            })?;
            let want_ram = |i: usize| {
                if (dest_off..dest_off + len).contains(&i) {
                    device_pattern(seed, i - dest_off + ram_off)
                } else {
                    READBACK_FILL
                }
            };
            let bad = DEST.mismatch(0..BUFFER_SIZE, want_ram);
            check!(
                bad.is_none(),
                "case {n}: device buffer {buf_off:#x} -> RAM {dst:#x}, {len:#x} bytes: RAM byte {:#x} is {:#x}, want {:#x}",
                DEST.addr() + bad.map_or(0, |b| b.0) as u64,
                bad.map_or(0, |b| b.1),
                bad.map_or(0, |b| b.2)
            );
            println!(
                "case {n}: {len:#x} bytes RAM {src:#x} -> buffer {buf_off:#x} -> RAM {dst:#x}: ok"
            );
        }
        Ok(())
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
