//! Scenario *devmap*: a hostile host tries the bus masters that bypass the SMMU (issue 8, escape 3).
//!
//! 1. Its device tree must not offer them: every `qemu,fw-cfg-mmio` and `virtio,mmio` node is gone
//!    or `status = "disabled"`.
//! 2. fw_cfg DMA: a descriptor asking fw_cfg to copy its 4-byte signature ("QEMU") to Portcullis'
//!    canary page, handed to fw_cfg's DMA address register. The store must come back as an injected
//!    synchronous external abort, fw_cfg must not have touched the descriptor, and the canary's
//!    checksum must be unchanged.
//! 3. A load and a store to a virtio-mmio transport abort the same way.
//!
//! The addresses are QEMU virt's (`hw/arm/virt.c`, `VIRT_FW_CFG` and `VIRT_MMIO`), not taken from
//! the tree: a host that Portcullis no longer shows these devices still knows the board, and that
//! is exactly the attacker this test plays. Every part runs even after another failed, so a run
//! against a Portcullis without the device map shows every way in.
//!
//! `scripts/run --kernel <devmap> --smp 1 --features test-hooks`
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod scenario {
    use core::cell::UnsafeCell;

    use dtoolkit::{Node, Property};
    use guest::dma::{canary, hypervisor_region};
    use guest::hooks;
    use guest::mmio::{mmio_read32, mmio_write32, write64};
    use guest::rt::{Caught, Context, expect_exception};
    use guest::{Failure, Outcome, println};

    guest::scenario!("devmap", run);

    /// QEMU virt's fw_cfg (`VIRT_FW_CFG`): data at +0, selector at +8, DMA address at +0x10
    /// (big-endian; a 64-bit store there, or the low half at +0x14, starts the transfer).
    const FW_CFG_BASE: u64 = 0x0902_0000;
    const FW_CFG_DMA: u64 = FW_CFG_BASE + 0x10;
    /// QEMU virt's first virtio-mmio transport (`VIRT_MMIO`); 32 of them, 0x200 apart.
    const VIRTIO_MMIO_BASE: u64 = 0x0a00_0000;
    /// The virtio-mmio `Status` register.
    const VIRTIO_MMIO_STATUS: u64 = 0x70;

    /// fw_cfg DMA control bits (QEMU `docs/specs/fw_cfg.rst`).
    const FW_CFG_DMA_CTL_READ: u32 = 0x02;
    const FW_CFG_DMA_CTL_SELECT: u32 = 0x08;
    /// The signature item: the four bytes "QEMU".
    const FW_CFG_SIGNATURE: u32 = 0x0000;

    /// EC for a data abort taken from the current EL (EL1).
    const EC_DABT_CUR: u64 = 0x25;
    /// DFSC for a synchronous external abort (not on a table walk).
    const DFSC_SEA: u64 = 0x10;

    /// The fw_cfg DMA descriptor, `FWCfgDmaAccess`: big-endian control, length, address.
    #[repr(C, align(16))]
    struct Descriptor(UnsafeCell<[u8; 16]>);

    // SAFETY: one CPU; the descriptor is written once before the attack and read after it.
    unsafe impl Sync for Descriptor {}

    static DESCRIPTOR: Descriptor = Descriptor(UnsafeCell::new([0; 16]));

    impl Descriptor {
        fn addr(&self) -> u64 {
            self.0.get() as u64
        }
        fn write(&self, bytes: [u8; 16]) {
            // SAFETY: our own static; volatile so the device (if it runs) sees it.
            unsafe { self.0.get().write_volatile(bytes) }
        }
        fn read(&self) -> [u8; 16] {
            // SAFETY: our own static; volatile because a device may have written it.
            unsafe { self.0.get().read_volatile() }
        }
    }

    fn descriptor(target: u64, len: u32) -> [u8; 16] {
        let control = (FW_CFG_SIGNATURE << 16) | FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ;
        let mut d = [0u8; 16];
        d[0..4].copy_from_slice(&control.to_be_bytes());
        d[4..8].copy_from_slice(&len.to_be_bytes());
        d[8..16].copy_from_slice(&target.to_be_bytes());
        d
    }

    /// Whether `caught` is the abort Portcullis injects for an access to an unmapped address.
    fn injected_abort(
        what: &str,
        addr: u64,
        write: bool,
        caught: Option<Caught>,
    ) -> Result<(), Failure> {
        let Some(c) = caught else {
            return Err(Failure::new(format_args!(
                "{what} at {addr:#x} did not abort: the host reaches the device"
            )));
        };
        println!(
            "{what} at {addr:#x}: aborted, esr={:#x} far={:#x}",
            c.esr, c.far
        );
        let wnr = c.esr & (1 << 6) != 0;
        if c.ec() != EC_DABT_CUR || c.fsc() != DFSC_SEA || c.far != addr || wnr != write {
            return Err(Failure::new(format_args!(
                "{what} at {addr:#x}: esr={:#x} far={:#x}, want EC {EC_DABT_CUR:#x} DFSC \
                 {DFSC_SEA:#x} WnR {write} FAR {addr:#x}",
                c.esr, c.far
            )));
        }
        Ok(())
    }

    /// Part 1: no fw_cfg or virtio-mmio node the host could use.
    fn tree_hides_masters(ctx: &Context) -> Outcome {
        let mut offered = 0;
        for node in ctx.dtb.fdt().root().children() {
            let Some(compatible) = node.property("compatible") else {
                continue;
            };
            let master = compatible
                .value()
                .split(|&b| b == 0)
                .any(|s| s == b"qemu,fw-cfg-mmio" || s == b"virtio,mmio");
            if !master {
                continue;
            }
            let disabled = node
                .property("status")
                .is_some_and(|s| s.value().starts_with(b"disabled"));
            if !disabled {
                println!("tree offers {} to the host", node.name());
                offered += 1;
            }
        }
        if offered > 0 {
            return Err(Failure::new(format_args!(
                "the host's tree offers {offered} fw_cfg / virtio-mmio node(s)"
            )));
        }
        println!("tree: no fw_cfg or virtio-mmio node enabled");
        Ok(())
    }

    /// Part 2: fw_cfg DMA aimed at Portcullis' canary page.
    fn fw_cfg_dma(ctx: &Context) -> Outcome {
        let hyp = hypervisor_region(&ctx.dtb)?;
        let before = canary(hyp)?;
        println!(
            "canary {:#x}+{:#x} checksum {:#018x}",
            before.base, before.size, before.checksum
        );
        let request = descriptor(before.base, 4);
        DESCRIPTOR.write(request);
        // SAFETY: the store is expected to abort; if fw_cfg is reachable it starts a DMA, which
        // the checks below detect.
        let caught = expect_exception(|| unsafe { write64(FW_CFG_DMA, DESCRIPTOR.addr().to_be()) });
        let aborted = injected_abort("fw_cfg DMA address store", FW_CFG_DMA, true, caught);

        let after = hooks::canary()
            .map_err(|e| Failure::new(format_args!("PORTCULLIS_TEST_CANARY after: {e}")))?;
        let untouched = DESCRIPTOR.read() == request;
        if after.checksum != before.checksum {
            return Err(Failure::new(format_args!(
                "fw_cfg DMA landed in Portcullis' canary: checksum {:#x} -> {:#x} (descriptor {})",
                before.checksum,
                after.checksum,
                if untouched { "untouched" } else { "completed" }
            )));
        }
        aborted?;
        if !untouched {
            return Err(Failure::new(format_args!(
                "fw_cfg processed the descriptor at {:#x}: {:02x?}",
                DESCRIPTOR.addr(),
                DESCRIPTOR.read()
            )));
        }
        println!("fw_cfg DMA refused; canary unchanged");
        Ok(())
    }

    /// Part 3: a virtio-mmio transport is not reachable either.
    fn virtio_mmio() -> Outcome {
        let status = VIRTIO_MMIO_BASE + VIRTIO_MMIO_STATUS;
        // SAFETY: expected to abort (or to read the transport's magic on a broken map).
        let caught = expect_exception(|| unsafe {
            let _ = mmio_read32(VIRTIO_MMIO_BASE);
        });
        let load = injected_abort("virtio-mmio load", VIRTIO_MMIO_BASE, false, caught);
        // SAFETY: expected to abort; on a broken map it resets an unused transport (status 0).
        let caught = expect_exception(|| unsafe { mmio_write32(status, 0) });
        let store = injected_abort("virtio-mmio store", status, true, caught);
        load.and(store)
    }

    fn run(ctx: &Context) -> Outcome {
        let parts: [(&str, Outcome); 3] = [
            ("tree", tree_hides_masters(ctx)),
            ("fw_cfg DMA", fw_cfg_dma(ctx)),
            ("virtio-mmio", virtio_mmio()),
        ];
        let mut first: Option<Failure> = None;
        for (name, outcome) in parts {
            if let Err(f) = outcome {
                println!("part {name}: FAIL: {}", f.message());
                first.get_or_insert(f);
            }
        }
        // Portcullis is alive and answering after all of it.
        hooks::canary()
            .map_err(|e| Failure::new(format_args!("Portcullis stopped answering: {e}")))?;
        match first {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
