//! Scenario *syndrome*: an access Portcullis cannot emulate — a write-back-addressed store or a load
//! pair to the SMMU's registers, which trap without a valid syndrome (ISV = 0) — is refused with an
//! injected abort; no hang, no hypervisor panic. A plain load there is answered.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod scenario {
    use core::arch::asm;
    use guest::mmio::mmio_read32;
    use guest::rt::{Context, expect_exception};
    use guest::{Outcome, check, println, psci};

    guest::scenario!("syndrome", run);

    const EC_DABT_CUR: u64 = 0x25;

    fn run(ctx: &Context) -> Outcome {
        let smmu = ctx.dtb.smmu();
        check!(smmu.is_some(), "no arm,smmu-v3 node in the tree");
        let smmu = smmu.unwrap_or(guest::dt::Reg { base: 0, size: 0 });

        // A plain 32-bit load of IDR0 has a valid syndrome: Portcullis answers it.
        // SAFETY: a single-register load from a device register frame.
        let plain = expect_exception(|| unsafe {
            let v = mmio_read32(smmu.base);
            println!("IDR0 read as {v:#x}");
        });
        check!(
            plain.is_none(),
            "a plain load of the SMMU's IDR0 aborted: {plain:?}"
        );

        // Post-indexed store: the base register is written back, so ESR_EL2.ISV = 0.
        let mut base = smmu.base + 0x20;
        // SAFETY: the store is expected to abort and be skipped.
        let post = expect_exception(|| unsafe {
            asm!("str {v}, [{b}], #8", b = inout(reg) base, v = in(reg) 1u64, options(nostack));
        });
        check!(
            post.is_some(),
            "a post-indexed store to the SMMU did not abort"
        );
        let c = post.unwrap_or(guest::rt::Caught {
            esr: 0,
            far: 0,
            elr: 0,
        });
        println!("post-indexed store: esr={:#x} far={:#x}", c.esr, c.far);
        check!(
            c.ec() == EC_DABT_CUR,
            "post-indexed store: EC {:#x}, want {EC_DABT_CUR:#x}",
            c.ec()
        );
        check!(
            c.fsc() == 0x10,
            "post-indexed store: DFSC {:#x}, want 0x10",
            c.fsc()
        );

        // Load pair: never has a syndrome either.
        // SAFETY: expected to abort and be skipped.
        let pair = expect_exception(|| unsafe {
            asm!("ldp {a}, {b}, [{p}]", p = in(reg) smmu.base, a = out(reg) _, b = out(reg) _,
                 options(nostack));
        });
        check!(pair.is_some(), "a load pair from the SMMU did not abort");
        let c = pair.unwrap_or(guest::rt::Caught {
            esr: 0,
            far: 0,
            elr: 0,
        });
        check!(c.ec() == EC_DABT_CUR, "load pair: EC {:#x}", c.ec());
        let _ = base;

        // And Portcullis is still alive.
        let v = psci::version();
        check!(
            v != 0 && v != u64::MAX,
            "PSCI_VERSION after the aborts gave {v:#x}"
        );
        Ok(())
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
