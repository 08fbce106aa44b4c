//! The default payload of `scripts/run`: shows what the host sees under Portcullis, then powers off.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod scenario {
    use guest::mmio::read64;
    use guest::rt::{Context, expect_exception};
    use guest::{Outcome, println, psci};

    guest::scenario!("demo", run);

    fn run(ctx: &Context) -> Outcome {
        let (el, _) = guest::rt::current_el();
        println!("Hello from the host payload at EL{el}, under Portcullis.");
        for m in ctx.dtb.memory() {
            println!("  my memory:          {:#x}..{:#x}", m.base, m.end());
        }
        if let Some(h) = ctx.dtb.reserved_with_compatible("portcullis,hypervisor") {
            println!(
                "  Portcullis' memory: {:#x}..{:#x} (reserved, no-map)",
                h.base,
                h.end()
            );
            // SAFETY: expected to abort; the runtime skips the load.
            let caught = expect_exception(|| unsafe {
                let _ = read64(h.base);
            });
            match caught {
                Some(c) => println!(
                    "  reading it: refused (ESR_EL1 {:#x}, FAR {:#x})",
                    c.esr, c.far
                ),
                None => {
                    println!("  reading it: NOT refused -- Portcullis is not protecting itself!")
                }
            }
        }
        println!("  bootargs: {}", ctx.dtb.bootargs().unwrap_or(""));
        println!("Powering off through PSCI SYSTEM_OFF.");
        psci::call(psci::SYSTEM_OFF, 0, 0, 0);
        Ok(())
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
