//! Scenario *dma-multi*: two edu devices, one on the root bus and one behind a PCIe root port (so
//! the payload's enumeration has to number a bus and open a bridge window for it), have distinct
//! StreamIDs; both do DMA with ordinary host RAM, also at the same time; both are confined: their
//! refused transfers into and out of the crash region and Portcullis' memory land nowhere, bring
//! no data, and are recorded against each one's own StreamID and not the other's. Needs a
//! `test-hooks` build of Portcullis:
//!
//! `scripts/run --features test-hooks --kernel <dma-multi> --smp 1 --append "crashkernel=32M"
//!  --hyp-args "log=info" -- -device edu,dma_mask=0xffffffffffffffff
//!  -device pcie-root-port,id=rp1,bus=pcie.0,chassis=1 -device edu,bus=rp1,dma_mask=0xffffffffffffffff`
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod scenario {
    use guest::dma::{
        self, DmaBuffer, READBACK_FILL, Staging, Subject, device_pattern, discover, dma_failed,
    };
    use guest::edu::{BUFFER_SIZE, Direction, Edu};
    use guest::rt::Context;
    use guest::{Failure, Outcome, check, println};

    guest::scenario!("dma-multi", run);

    static SOURCE_A: DmaBuffer<BUFFER_SIZE> = DmaBuffer::new();
    static SOURCE_B: DmaBuffer<BUFFER_SIZE> = DmaBuffer::new();
    static DEST_A: DmaBuffer<BUFFER_SIZE> = DmaBuffer::new();
    static DEST_B: DmaBuffer<BUFFER_SIZE> = DmaBuffer::new();

    const SEED_A: u8 = 0x41;
    const SEED_B: u8 = 0x42;

    fn run(ctx: &Context) -> Outcome {
        let tree = &ctx.dtb;
        let hyp = dma::hypervisor_region(tree)?;
        let crash = dma::crash_region(ctx, hyp)?;
        println!("Portcullis' memory: {:#x}..{:#x}", hyp.base, hyp.end());
        println!("crash region: {:#x}..{:#x}", crash.base, crash.end());
        let (host, topology) = discover(tree)?;
        let (edus, n) = dma::edus::<4>(&host, &topology, tree)?;
        check!(
            n == 2,
            "found {n} edu devices, want 2 (one on the root bus, one behind a pcie-root-port)"
        );
        let (Some((a, sid_a)), Some((b, sid_b))) = (&edus[0], &edus[1]) else {
            return Err(Failure::new(format_args!("edu list is inconsistent")));
        };
        // Scan order is depth first: the root-bus edu may come after the bridge's subtree.
        let (root, bridged) = if a.function.parent.is_none() {
            ((a, *sid_a), (b, *sid_b))
        } else {
            ((b, *sid_b), (a, *sid_a))
        };
        let (fr, fb) = (&root.0.function, &bridged.0.function);
        check!(
            fr.parent.is_none() && fr.bdf.bus == host.bus_start,
            "no edu on the root bus ({} is behind {:?})",
            fr.bdf,
            fr.parent
        );
        check!(
            fb.parent.is_some() && fb.bdf.bus > host.bus_start,
            "no edu behind a bridge (both on bus {:#x})",
            fb.bdf.bus
        );
        let bridge = fb
            .parent
            .and_then(|p| topology.functions().iter().find(|f| f.bdf == p));
        check!(
            bridge.is_some_and(|f| f.is_bridge()),
            "edu {}'s parent {:?} is not a PCI-PCI bridge",
            fb.bdf,
            fb.parent
        );
        println!(
            "edu {} on the root bus, edu {} behind bridge {}",
            fr.bdf,
            fb.bdf,
            fb.parent.unwrap_or_default()
        );
        check!(fr.rid != fb.rid, "both edus have RID {:#06x}", fr.rid);
        check!(
            root.1 != bridged.1,
            "edu {} and edu {} share StreamID {:#x}: the SMMU could not tell their DMA apart",
            fr.bdf,
            fb.bdf,
            root.1
        );

        good_dma_both(root.0, bridged.0)?;
        println!("both edus do DMA with ordinary RAM, also concurrently");

        let staging = Staging {
            source: &SOURCE_A,
            readback: &DEST_A,
        };
        let subjects = [
            Subject {
                edu: root.0,
                sid: root.1,
                staging: &staging,
                bystander: Some(bridged),
            },
            Subject {
                edu: bridged.0,
                sid: bridged.1,
                staging: &staging,
                bystander: Some(root),
            },
        ];

        // The crash region, for each device: a write that must not land, a read that must bring
        // nothing, each recorded against its own StreamID only.
        let targets = [crash.base + 0x4000, crash.base + crash.size / 2];
        for (n, (dev, target)) in subjects.iter().zip(targets).enumerate() {
            let seed = 0x50 + 2 * n as u8;
            dev.refused_write_to_crash(crash, target, BUFFER_SIZE, seed)?;
            dev.refused_read_from_crash(crash, target, BUFFER_SIZE, seed + 1)?;
        }

        // Portcullis' memory, for each device.
        let canary = dma::canary(hyp)?;
        println!(
            "canary: {:#x}+{:#x}, checksum {:#x}",
            canary.base, canary.size, canary.checksum
        );
        let len = canary.size.min(BUFFER_SIZE as u64) as usize;
        for (n, dev) in subjects.iter().enumerate() {
            let seed = 0x60 + 2 * n as u8;
            dev.refused_write_to_canary(&canary, canary.base, len, seed)?;
            dev.refused_read_from_canary(&canary, canary.base, len, seed + 1)?;
            println!(
                "edu {} (SID {:#x}): confined, faults recorded against its own StreamID only",
                dev.edu.function.bdf, dev.sid
            );
        }

        // Both still work afterwards.
        good_dma_both(root.0, bridged.0)?;
        Ok(())
    }

    /// Both devices take a pattern from RAM and give it back, their transfers in flight together.
    fn good_dma_both(a: &Edu, b: &Edu) -> Outcome {
        let fail = |what: &str, edu: &Edu, e| {
            dma_failed(format_args!("edu {}: {what}", edu.function.bdf), e)
        };
        SOURCE_A.fill(|i| device_pattern(SEED_A, i));
        SOURCE_B.fill(|i| device_pattern(SEED_B, i));
        a.start(Direction::ToDevice, SOURCE_A.addr(), 0, BUFFER_SIZE)
            .map_err(|e| fail("start RAM->device", a, e))?;
        b.start(Direction::ToDevice, SOURCE_B.addr(), 0, BUFFER_SIZE)
            .map_err(|e| fail("start RAM->device", b, e))?;
        a.wait().map_err(|e| fail("RAM->device", a, e))?;
        b.wait().map_err(|e| fail("RAM->device", b, e))?;
        DEST_A.fill(|_| READBACK_FILL);
        DEST_B.fill(|_| READBACK_FILL);
        a.start(Direction::FromDevice, DEST_A.addr(), 0, BUFFER_SIZE)
            .map_err(|e| fail("start device->RAM", a, e))?;
        b.start(Direction::FromDevice, DEST_B.addr(), 0, BUFFER_SIZE)
            .map_err(|e| fail("start device->RAM", b, e))?;
        a.wait().map_err(|e| fail("device->RAM", a, e))?;
        b.wait().map_err(|e| fail("device->RAM", b, e))?;
        for (edu, dest, seed) in [(a, &DEST_A, SEED_A), (b, &DEST_B, SEED_B)] {
            let bad = dest.mismatch(0..BUFFER_SIZE, |i| device_pattern(seed, i));
            check!(
                bad.is_none(),
                "edu {}: DMA round trip through RAM {:#x}: byte {:#x} is {:#x}, want {:#x}",
                edu.function.bdf,
                dest.addr(),
                bad.map_or(0, |x| x.0),
                bad.map_or(0, |x| x.1),
                bad.map_or(0, |x| x.2)
            );
        }
        Ok(())
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
