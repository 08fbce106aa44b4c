//! Scenario *isolation*: Portcullis' own memory is not the host's. A load and a store into it each
//! come back to the payload as a synchronous external abort, and Portcullis still answers afterwards.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod scenario {
    use guest::mmio::{read64, write64};
    use guest::rt::{Context, expect_exception};
    use guest::{Outcome, check, println, psci};

    guest::scenario!("isolation", run);

    /// EC for a data abort taken from the current EL (EL1).
    const EC_DABT_CUR: u64 = 0x25;
    /// DFSC for a synchronous external abort (not on a table walk).
    const DFSC_SEA: u64 = 0x10;

    fn run(ctx: &Context) -> Outcome {
        let hyp = ctx.dtb.reserved_with_compatible("portcullis,hypervisor");
        check!(
            hyp.is_some(),
            "no portcullis,hypervisor reserved-memory node"
        );
        let hyp = hyp.unwrap_or(guest::dt::Reg { base: 0, size: 0 });
        let version = psci::version();
        check!(
            version >> 16 >= 1 || version == 2,
            "PSCI_VERSION gave {version:#x}"
        );

        let targets = [hyp.base, hyp.base + hyp.size / 2 + 8, hyp.end() - 8];
        for &addr in &targets {
            // SAFETY: the access is expected to abort; the handler skips it.
            let caught = expect_exception(|| unsafe {
                let _ = read64(addr);
            });
            check!(
                caught.is_some(),
                "a load from Portcullis' memory at {addr:#x} did not abort"
            );
            let c = caught.unwrap_or(guest::rt::Caught {
                esr: 0,
                far: 0,
                elr: 0,
            });
            println!("load  {addr:#x}: esr={:#x} far={:#x}", c.esr, c.far);
            check!(
                c.ec() == EC_DABT_CUR,
                "load abort EC {:#x}, want {EC_DABT_CUR:#x}",
                c.ec()
            );
            check!(
                c.fsc() == DFSC_SEA,
                "load abort DFSC {:#x}, want {DFSC_SEA:#x}",
                c.fsc()
            );
            check!(c.esr & (1 << 6) == 0, "load abort has WnR set");
            check!(c.far == addr, "load abort FAR {:#x}, want {addr:#x}", c.far);

            // SAFETY: as above.
            let caught = expect_exception(|| unsafe { write64(addr, 0xdead_beef_dead_beef) });
            check!(
                caught.is_some(),
                "a store to Portcullis' memory at {addr:#x} did not abort"
            );
            let c = caught.unwrap_or(guest::rt::Caught {
                esr: 0,
                far: 0,
                elr: 0,
            });
            println!("store {addr:#x}: esr={:#x} far={:#x}", c.esr, c.far);
            check!(c.ec() == EC_DABT_CUR, "store abort EC {:#x}", c.ec());
            check!(c.fsc() == DFSC_SEA, "store abort DFSC {:#x}", c.fsc());
            check!(c.esr & (1 << 6) != 0, "store abort lacks WnR");
            check!(
                c.far == addr,
                "store abort FAR {:#x}, want {addr:#x}",
                c.far
            );
        }

        // Portcullis is still there and still answers.
        let again = psci::version();
        check!(
            again == version,
            "PSCI_VERSION changed after the aborts: {again:#x} vs {version:#x}"
        );
        Ok(())
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
