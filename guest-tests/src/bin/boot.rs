//! Scenario *boot*: Portcullis entered the payload per the arm64 boot protocol, at EL1h, with a
//! device tree that hides Portcullis' memory and carries the placed crash region.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod scenario {
    use guest::rt::{Context, current_el};
    use guest::{Outcome, check, println};

    guest::scenario!("boot", run);

    fn parse_size(s: &str) -> Option<u64> {
        let (num, mult) = match s.as_bytes().last()? {
            b'K' | b'k' => (&s[..s.len() - 1], 1u64 << 10),
            b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
            b'G' | b'g' => (&s[..s.len() - 1], 1 << 30),
            _ => (s, 1),
        };
        let v = match num.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok()?,
            None => num.parse().ok()?,
        };
        v.checked_mul(mult)
    }

    fn run(ctx: &Context) -> Outcome {
        let (el, spsel) = current_el();
        check!(
            el == 1 && spsel == 1,
            "entered at EL{el} SPSel={spsel}, want EL1h"
        );
        check!(
            ctx.dtb_addr.is_multiple_of(8),
            "dtb {:#x} not 8-byte aligned",
            ctx.dtb_addr
        );

        let tree = &ctx.dtb;
        let hyp = tree.reserved_with_compatible("portcullis,hypervisor");
        check!(
            hyp.is_some(),
            "/reserved-memory has no portcullis,hypervisor node"
        );
        let hyp = hyp.unwrap_or(guest::dt::Reg { base: 0, size: 0 });
        check!(hyp.size > 0, "Portcullis' reserved region is empty");
        check!(
            tree.has_no_map("portcullis,hypervisor"),
            "Portcullis' region is not no-map"
        );
        println!("Portcullis' memory: {:#x}..{:#x}", hyp.base, hyp.end());

        let mut banks = 0;
        for m in tree.memory() {
            banks += 1;
            println!("memory bank {:#x}..{:#x}", m.base, m.end());
            check!(
                !m.overlaps(&hyp),
                "memory bank {:#x}+{:#x} includes Portcullis' memory",
                m.base,
                m.size
            );
        }
        check!(banks > 0, "no memory nodes");
        check!(
            tree.memory()
                .any(|m| m.base <= ctx.dtb_addr && ctx.dtb_addr < m.end()),
            "the device tree at {:#x} is outside host memory",
            ctx.dtb_addr
        );

        let bootargs = tree.bootargs().unwrap_or("");
        println!("bootargs: {bootargs}");
        check!(
            !bootargs.contains("portcullis"),
            "Portcullis' own options leaked into bootargs"
        );
        let ck = bootargs
            .split_ascii_whitespace()
            .find_map(|t| t.strip_prefix("crashkernel="));
        check!(ck.is_some(), "no crashkernel= in bootargs '{bootargs}'");
        let ck = ck.unwrap_or("");
        let (size, base) = ck.split_once('@').unwrap_or((ck, ""));
        let size = parse_size(size);
        let base = parse_size(base);
        check!(
            size.is_some() && base.is_some(),
            "crashkernel={ck} is not SIZE@BASE"
        );
        let (size, base) = (size.unwrap_or(0), base.unwrap_or(0));
        check!(
            size == 64 << 20,
            "crash region size {size:#x}, asked for 64M"
        );
        check!(
            base.is_multiple_of(2 << 20),
            "crash base {base:#x} not 2 MiB aligned"
        );
        let crash = guest::dt::Reg { base, size };
        check!(!crash.overlaps(&hyp), "crash region overlaps Portcullis");
        check!(
            tree.memory()
                .any(|m| m.base <= base && base + size <= m.end()),
            "crash region {base:#x}+{size:#x} not inside host memory"
        );
        check!(
            tree.fdt().find_node("/chosen").is_some_and(|c| {
                use dtoolkit::Node;
                c.property("portcullis,kernel").is_none()
                    && c.property("portcullis,bootargs").is_none()
            }),
            "/chosen still has portcullis,* properties"
        );
        Ok(())
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
