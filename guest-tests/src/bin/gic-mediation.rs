//! Scenario *gic-mediation*: as a hostile host, point every address the GIC's bus masters use at
//! Portcullis' own memory (the test-hooks canary page) and make them write there:
//! - A: `GITS_BASER0` (device table) at the canary, then `MAPD`: the ITS would write the
//!   device-table entry there;
//! - B: `MAPD` with its ITT at the canary, then `MAPTI`: the ITS would write the entry there
//!   (the queue must stall at the `MAPD`);
//! - C: `GITS_CBASER` at the canary: the ITS would consume Portcullis' memory as commands (the
//!   queue must stall without executing anything);
//! - D: `GICR_PROPBASER` / `GICR_PENDBASER` at the canary, EnableLPIs, then an LPI made pending
//!   through the ITS: the redistributor would set its pending bit in the canary;
//! - E: the same with the payload's own tables: accepted, and the LPI's pending bit lands there
//!   (mediation keeps MSIs working).
//!
//! After each attack the canary's checksum is unchanged and Portcullis still answers. Needs a test
//! build (`--features test-hooks`) and QEMU virt with `gic-version=3` (an ITS).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod scenario {
    use core::cell::UnsafeCell;
    use guest::mmio::{mmio_read32, mmio_write32, read64, write64};
    use guest::rt;
    use guest::rt::Context;
    use guest::{Failure, Outcome, check, hooks, println, psci};

    guest::scenario!("gic-mediation", run);

    /// Memory the payload hands the GIC, 64 KiB aligned (a pending table's alignment).
    #[repr(C, align(65536))]
    struct Table<const N: usize>(UnsafeCell<[u8; N]>);
    // SAFETY: one CPU; the GIC writes them, the payload only reads and writes with volatile accesses.
    unsafe impl<const N: usize> Sync for Table<N> {}
    impl<const N: usize> Table<N> {
        const fn new() -> Self {
            Self(UnsafeCell::new([0; N]))
        }
        fn pa(&self) -> u64 {
            // The payload runs with the MMU off: addresses are physical.
            self.0.get() as u64
        }
        fn fill(&self, byte: u8) {
            let p = self.0.get() as *mut u8;
            for i in 0..N {
                // SAFETY: inside the table.
                unsafe { p.add(i).write_volatile(byte) };
            }
        }
        fn byte(&self, i: usize) -> u8 {
            // SAFETY: `i` is checked against N.
            unsafe {
                (self.0.get() as *const u8)
                    .add(i.min(N - 1))
                    .read_volatile()
            }
        }
    }

    static DEVICES: Table<0x1_0000> = Table::new();
    static COLLECTIONS: Table<0x1_0000> = Table::new();
    static QUEUE: Table<0x1000> = Table::new();
    static ITT: Table<0x1000> = Table::new();
    static PROP: Table<0x1_0000> = Table::new();
    static PEND: Table<0x1_0000> = Table::new();

    // ITS control frame.
    use guest::gic::{
        GICR_CTLR, GICR_PENDBASER, GICR_PROPBASER, GICR_TYPER, GITS_BASER0, GITS_CBASER,
        GITS_CREADR, GITS_CTLR, GITS_CWRITER, GITS_TYPER,
    };
    const GITS_BASER1: u64 = GITS_BASER0 + 8;
    // Redistributor RD_base frame.

    const VALID: u64 = 1 << 63;
    const BASER_RO: u64 = (0x1f << 48) | (0x7 << 56);
    const INNER_SHAREABLE: u64 = 1 << 10;

    struct Its {
        base: u64,
        /// The RDbase of this CPU's redistributor as commands name it.
        target: u64,
        /// Commands written to the payload's queue since the last setup.
        next: u64,
    }

    impl Its {
        fn r64(&self, off: u64) -> u64 {
            // SAFETY: a register of the ITS control frame from the device tree.
            unsafe { read64(self.base + off) }
        }
        fn w64(&self, off: u64, v: u64) {
            // SAFETY: as for `r64`.
            unsafe { write64(self.base + off, v) }
        }

        /// Disabled, the given tables and queue (4 KiB pages), enabled, an empty queue.
        fn setup(&mut self, devices: (u64, u64), collections: (u64, u64), queue: u64) {
            // SAFETY: GITS_CTLR of the ITS.
            unsafe { mmio_write32(self.base + GITS_CTLR, 0) };
            for _ in 0..100_000 {
                // SAFETY: as above.
                if unsafe { mmio_read32(self.base + GITS_CTLR) } & (1 << 31) != 0 {
                    break;
                }
            }
            for (reg, (pa, bytes)) in [(GITS_BASER0, devices), (GITS_BASER1, collections)] {
                let ro = self.r64(reg) & BASER_RO;
                self.w64(reg, VALID | ro | INNER_SHAREABLE | pa | (bytes / 4096 - 1));
            }
            self.w64(GITS_CBASER, VALID | INNER_SHAREABLE | queue);
            self.w64(GITS_CWRITER, 0);
            self.next = 0;
            // SAFETY: as above.
            unsafe { mmio_write32(self.base + GITS_CTLR, 1) };
        }

        /// Appends `cmds` to the payload's queue and tells the ITS; returns GITS_CREADR.
        fn send(&mut self, cmds: &[[u64; 4]]) -> u64 {
            for cmd in cmds {
                for (i, dw) in cmd.iter().enumerate() {
                    // SAFETY: inside QUEUE (at most 128 commands of 32 bytes).
                    unsafe { write64(QUEUE.pa() + (self.next % 128) * 32 + 8 * i as u64, *dw) };
                }
                self.next += 1;
            }
            self.w64(GITS_CWRITER, (self.next % 128) * 32);
            self.creadr()
        }

        fn creadr(&self) -> u64 {
            let mut r = 0;
            for _ in 0..1000 {
                r = self.r64(GITS_CREADR);
                if r & 1 != 0 || r == (self.next % 128) * 32 {
                    break;
                }
            }
            r
        }

        fn mapc(&self, icid: u64) -> [u64; 4] {
            [0x09, 0, icid | (self.target << 16) | VALID, 0]
        }
        fn sync(&self) -> [u64; 4] {
            [0x05, 0, self.target << 16, 0]
        }
    }

    fn mapd(device: u64, itt: u64) -> [u64; 4] {
        // Size 4: 32 EventIDs.
        [0x08 | (device << 32), 4, itt | VALID, 0]
    }
    fn mapti(device: u64, event: u64, intid: u64, icid: u64) -> [u64; 4] {
        [0x0a | (device << 32), event | (intid << 32), icid, 0]
    }
    fn int(device: u64, event: u64) -> [u64; 4] {
        [0x03 | (device << 32), event, 0, 0]
    }

    fn checksum() -> Result<u64, Failure> {
        hooks::canary()
            .map(|c| c.checksum)
            .map_err(|e| Failure::new(format_args!("canary hook: {e}")))
    }

    /// Records a failed expectation without stopping: every attack runs, so one run shows all
    /// that is broken.
    struct Verdict {
        failed: u32,
        first: Option<Failure>,
    }

    impl Verdict {
        fn expect(&mut self, ok: bool, what: core::fmt::Arguments) {
            if ok {
                println!("gic-mediation: ok: {what}");
                return;
            }
            println!("gic-mediation: FAILED: {what}");
            self.failed += 1;
            if self.first.is_none() {
                self.first = Some(Failure::new(what));
            }
        }
    }

    fn run(ctx: &Context) -> Outcome {
        let gic = ctx.dtb.gic_v3();
        check!(gic.is_some(), "no arm,gic-v3 node");
        let Some(gic) = gic else { return Ok(()) };
        check!(
            gic.its.is_some(),
            "no ITS (QEMU virt gic-version=3 has one)"
        );
        let Some(its_reg) = gic.its else {
            return Ok(());
        };
        let canary = hooks::canary().map_err(|e| Failure::new(format_args!("{e}")))?;
        let version = psci::version();
        let gicr = gic.redistributors.base;
        println!(
            "ITS at {:#x}, redistributor 0 at {gicr:#x}, canary {:#x}+{:#x}",
            its_reg.base, canary.base, canary.size
        );
        // SAFETY: GICR_TYPER of the first redistributor (this CPU's on QEMU virt).
        let rd_typer = unsafe { read64(gicr + GICR_TYPER) };
        let mut its = Its {
            base: its_reg.base,
            target: 0,
            next: 0,
        };
        let typer = its.r64(GITS_TYPER);
        its.target = if typer & (1 << 19) != 0 {
            gicr >> 16
        } else {
            (rd_typer >> 8) & 0xffff
        };
        println!("GITS_TYPER {typer:#x}, target {:#x}", its.target);
        let mut v = Verdict {
            failed: 0,
            first: None,
        };
        let table = |t: &Table<0x1_0000>| (t.pa(), 0x1_0000u64);

        // A: the device table in Portcullis' memory.
        let before = checksum()?;
        its.setup((canary.base, 0x1000), table(&COLLECTIONS), QUEUE.pa());
        let sync = its.sync();
        its.send(&[mapd(1, ITT.pa()), sync]);
        v.expect(
            checksum()? == before,
            format_args!("A: GITS_BASER0 at the canary, MAPD: canary unchanged"),
        );

        // B: an ITT in Portcullis' memory.
        let before = checksum()?;
        its.setup(table(&DEVICES), table(&COLLECTIONS), QUEUE.pa());
        let cmds = [
            its.mapc(0),
            mapd(2, canary.base),
            mapti(2, 0, 8192, 0),
            its.sync(),
        ];
        let r = its.send(&cmds);
        v.expect(
            checksum()? == before,
            format_args!("B: MAPD with the ITT at the canary, MAPTI: canary unchanged"),
        );
        v.expect(
            r == 32 | 1,
            format_args!("B: the queue stalls at the MAPD (GITS_CREADR {r:#x}, want 0x21)"),
        );

        // C: the command queue in Portcullis' memory.
        let before = checksum()?;
        its.setup(table(&DEVICES), table(&COLLECTIONS), canary.base);
        its.w64(GITS_CWRITER, 4 * 32);
        let r = its.r64(GITS_CREADR);
        v.expect(
            checksum()? == before,
            format_args!("C: GITS_CBASER at the canary: canary unchanged"),
        );
        v.expect(
            r == 1,
            format_args!(
                "C: the queue stalls before its first command (GITS_CREADR {r:#x}, want 0x1)"
            ),
        );

        // D: the redistributor's LPI tables in Portcullis' memory, an LPI made pending.
        let before = checksum()?;
        let block = canary.base & !0xffff;
        // The pending bit of INTID n is bit n % 8 of byte n / 8: aim at byte 1024 of the canary,
        // bit 1 (bit 0 of the pattern there is already set), if the canary is near the start of
        // its 64 KiB block (the pending table holds 2^16 bits here).
        let intid = 8 * (canary.base - block + 1024) + 1;
        PROP.fill(0xa1);
        let rd = |off: u64| {
            // SAFETY: a register of the redistributor's RD_base frame.
            unsafe { read64(gicr + off) }
        };
        let set_rd = |off: u64, val: u64| {
            // SAFETY: as above.
            unsafe { write64(gicr + off, val) }
        };
        set_rd(GICR_PROPBASER, canary.base | 15);
        let prop = rd(GICR_PROPBASER);
        v.expect(
            prop & 0x000f_ffff_ffff_f000 != canary.base,
            format_args!("D: GICR_PROPBASER at the canary refused (reads {prop:#x})"),
        );
        set_rd(GICR_PROPBASER, PROP.pa() | 15);
        set_rd(GICR_PENDBASER, block);
        let pend = rd(GICR_PENDBASER);
        v.expect(
            pend & 0x000f_ffff_ffff_0000 != block,
            format_args!("D: GICR_PENDBASER in Portcullis' memory refused (reads {pend:#x})"),
        );
        // SAFETY: GICR_CTLR.
        unsafe { mmio_write32(gicr + GICR_CTLR, 1) };
        // SAFETY: as above.
        let ctlr = unsafe { mmio_read32(gicr + GICR_CTLR) };
        v.expect(
            ctlr & 1 == 0,
            format_args!("D: EnableLPIs refused without accepted tables (GICR_CTLR {ctlr:#x})"),
        );
        its.setup(table(&DEVICES), table(&COLLECTIONS), QUEUE.pa());
        let cmds = [
            its.mapc(0),
            mapd(3, ITT.pa()),
            mapti(3, 0, intid, 0),
            int(3, 0),
            its.sync(),
        ];
        let r = its.send(&cmds);
        v.expect(
            r == 5 * 32,
            format_args!("D: valid commands all executed (GITS_CREADR {r:#x}, want 0xa0)"),
        );
        if intid < 1 << 16 {
            v.expect(
                checksum()? == before,
                format_args!(
                    "D: LPI {intid} made pending with PENDBASER at the canary: canary unchanged"
                ),
            );
        } else {
            println!("D: canary too far into its 64 KiB block to aim an LPI at it; not tried");
        }

        // E: the payload's own tables: accepted, and the LPI lands in its pending table.
        set_rd(GICR_PROPBASER, PROP.pa() | 15);
        set_rd(GICR_PENDBASER, PEND.pa());
        // SAFETY: GICR_CTLR.
        unsafe { mmio_write32(gicr + GICR_CTLR, 1) };
        // SAFETY: as above.
        let ctlr = unsafe { mmio_read32(gicr + GICR_CTLR) };
        v.expect(
            ctlr & 1 == 1,
            format_args!("E: EnableLPIs with the payload's own tables (GICR_CTLR {ctlr:#x})"),
        );
        let own = 8193u64;
        let cmds = [mapti(3, 1, own, 0), int(3, 1), its.sync()];
        its.send(&cmds);
        let byte = PEND.byte((own / 8) as usize);
        v.expect(
            byte & (1 << (own % 8)) != 0,
            format_args!("E: LPI {own} pending in the payload's own table (byte {byte:#x})"),
        );

        // Informational: the cost of one ITS command round trip (write it, GITS_CWRITER, read
        // GITS_CREADR), which under Portcullis is two traps and a checked copy.
        const ROUNDS: u64 = 64;
        let start = rt::ticks();
        for _ in 0..ROUNDS {
            let sync = its.sync();
            its.send(&[sync]);
        }
        let elapsed = rt::ticks() - start;
        let hz = rt::tick_hz().max(1);
        println!(
            "gic-mediation: {ROUNDS} SYNC round trips in {} us ({} us each)",
            elapsed * 1_000_000 / hz,
            elapsed * 1_000_000 / hz / ROUNDS
        );

        let again = psci::version();
        v.expect(
            again == version && hooks::canary().is_ok(),
            format_args!("Portcullis still answers (PSCI_VERSION {again:#x})"),
        );
        match v.first {
            None => Ok(()),
            Some(first) => Err(Failure::new(format_args!(
                "{} checks failed, first: {}",
                v.failed,
                first.message()
            ))),
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
