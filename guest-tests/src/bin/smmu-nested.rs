//! Scenario *smmu-nested*: the payload drives the SMMUv3 Portcullis emulates with a small driver of
//! its own ([`guest::smmu`]), the way a host kernel would, and checks that the emulation keeps the
//! architecture's promises while Portcullis' stage 2 stays in force underneath:
//!
//! 0. bring-up: ID registers (stage 1 only: S2P = 0), Command and Event queues in the payload's
//!    memory, a two-level Stream table (SPLIT 8), CR1/CR2, queues then SMMUEN, CFGI_ALL +
//!    TLBI_NSNH_ALL + CMD_SYNC; a CD and stage 1 tables (4 KiB granule, 48-bit VA) for the edu's
//!    StreamID mapping IOVA 0x1_0000_0000.. onto two pages of payload RAM;
//! 1. DMA through the IOVAs works both ways, across the page boundary too;
//! 2. an unmapped page (TLBI_NH_VA, then TLBI_NH_ASID, + CMD_SYNC) refuses DMA, and a stage 1
//!    F_TRANSLATION naming the StreamID and the IOVA arrives in the payload's own Event queue;
//! 3. stage 2 and EL2 commands and a Reserved opcode stop the Command queue with CERROR_ILL at the
//!    bad command (GERROR.CMDQ_ERR active); the payload recovers as section 7.1 allows (replacing
//!    the command, or skipping it) and a following CMD_SYNC completes;
//! 4. a CD pointer into Portcullis' memory is never followed: the canary is unchanged, DMA on the
//!    stream fails both ways, and the refusal is recorded. Portcullis does not read CDs; the SMMU
//!    fetches the CD through Portcullis' stage 2, which faults. The architecture reports a CD fetch
//!    that faults at stage 2 as that stage 2 fault: F_TRANSLATION with S2 = 1, CLASS = CD, IPA =
//!    the CD's address, InputAddr = the transaction's address (F_CD_FETCH is an external abort on
//!    the fetch, C_BAD_CD a fetched CD that is ILLEGAL). Stage 2 faults are Portcullis' own
//!    (PORTCULLIS_TEST_FAULTS); a record in the payload's queue is accepted as well;
//! 5. a stream left in bypass is still confined by Portcullis' stage 2: DMA into Portcullis'
//!    memory refused and recorded (by Portcullis, not in the payload's queue), ordinary RAM works;
//! 6. a Stream table in Portcullis' memory is not read: the emulation composes STEs when it is told
//!    to (SMMUEN, CFGI_ALL), refuses the level 1 descriptor fetch and records F_STE_FETCH naming
//!    it for each stream in the table's range; the stream is aborted, the canary unchanged.
//!
//! Needs a `test-hooks` build of Portcullis:
//!
//! `scripts/run --kernel <smmu-nested> --features test-hooks --smp 1 --timeout 180
//!  --append "crashkernel=32M" -- -device edu,dma_mask=0xffffffffffffffff`
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod scenario {
    use guest::dma::{
        self, DmaBuffer, PROBE, READBACK_FILL, Staging, Subject, device_pattern, discover,
        dma_failed, faults_now, fill_memory, memory_changed, memory_pattern,
    };
    use guest::edu::{BUFFER_SIZE, Edu};
    use guest::hooks::{self, Canary};
    use guest::rt::Context;
    use guest::smmu::{
        Command, Deadline, Event, SPLIT, Smmu, SmmuError, SmmuMemory, Stage1Tables, Ste,
        SyncSignal, cmdq_cons, cr0, evt, gerror, reg, strtab,
    };
    use guest::{Failure, Outcome, check, println};

    guest::scenario!("smmu-nested", run);

    static SMMU_MEMORY: SmmuMemory = SmmuMemory::new();
    static TABLES: Stage1Tables = Stage1Tables::new();
    /// The pages IOVA page 0 and page 1 map.
    static PAGES: [DmaBuffer<BUFFER_SIZE>; 2] = [DmaBuffer::new(), DmaBuffer::new()];
    /// Staging buffers for DMA by physical address (the bypass check).
    static SOURCE: DmaBuffer<BUFFER_SIZE> = DmaBuffer::new();
    static READBACK: DmaBuffer<BUFFER_SIZE> = DmaBuffer::new();

    /// The IOVA window: nothing but the SMMU's translation puts RAM there (QEMU's RAM is below
    /// 4 GiB with `-m 1G`), so a transfer that lands proves the translation.
    const IOVA: u64 = 0x1_0000_0000;
    const PAGE: u64 = 0x1000;
    const ASID: u16 = 1;
    /// How long a record may take to reach the payload's Event queue.
    const EVENT_TIMEOUT_MS: u64 = 2000;

    /// What every check works with.
    struct Rig<'a> {
        smmu: &'a Smmu,
        edu: &'a Edu,
        sid: u32,
    }

    impl Rig<'_> {
        fn dma_to_device(&self, iova: u64, len: usize, what: &str) -> Outcome {
            self.edu
                .to_device(iova, len)
                .map_err(|e| dma_failed(format_args!("{what}: RAM->device from {iova:#x}"), e))
        }

        fn dma_from_device(&self, iova: u64, len: usize, what: &str) -> Outcome {
            self.edu
                .from_device(iova, len)
                .map_err(|e| dma_failed(format_args!("{what}: device->RAM to {iova:#x}"), e))
        }

        /// Drains the payload's Event queue, printing what was there.
        fn drain(&self, when: &str) -> Outcome {
            let d = self
                .smmu
                .drain_until_quiet(|e| println!("  event ({when}): {e}"))
                .map_err(|e| smmu_failed(format_args!("draining the Event queue {when}"), e))?;
            if d.overflowed {
                println!("  the Event queue overflowed ({when})");
            }
            Ok(())
        }

        /// Waits for a translation fault of this stream in the payload's Event queue.
        fn wait_fault(&self, what: &str) -> Result<Event, Failure> {
            let sid = self.sid;
            let mut others = 0usize;
            let mut first_other = None;
            let found = self
                .smmu
                .wait_event(
                    EVENT_TIMEOUT_MS,
                    |e| e.kind() == evt::F_TRANSLATION && e.sid() == sid,
                    |e| {
                        println!("  event: {e}");
                        if e.kind() != evt::F_TRANSLATION || e.sid() != sid {
                            others += 1;
                            first_other.get_or_insert(*e);
                        }
                    },
                )
                .map_err(|e| smmu_failed(format_args!("polling EVENTQ_PROD after {what}"), e))?;
            found.ok_or_else(|| match first_other {
                Some(o) => Failure::new(format_args!(
                    "no F_TRANSLATION for SID {sid:#x} in the payload's Event queue within \
                     {EVENT_TIMEOUT_MS} ms after {what}; {others} other record(s), the first: {o}"
                )),
                None => Failure::new(format_args!(
                    "no F_TRANSLATION for SID {sid:#x} in the payload's Event queue within \
                     {EVENT_TIMEOUT_MS} ms after {what}: the queue stayed empty (EVENTQ_PROD read \
                     should bring in the physical SMMU's records)"
                )),
            })
        }

        /// A stage 1 translation fault of this stream for `iova`, in the right direction.
        fn expect_stage1_fault(&self, e: &Event, iova: u64, read: bool, what: &str) -> Outcome {
            let sid = self.sid;
            check!(
                !e.stage2(),
                "the fault after {what} is a stage 2 fault ({e}): want stage 1 (S2 = 0), the \
                 payload's own page table refused it"
            );
            check!(
                e.class() == evt::CLASS_IN,
                "the fault after {what} has CLASS {:#x} ({e}), want IN (0b10): the input address \
                 was not mapped",
                e.class()
            );
            check!(
                e.input_addr() == iova,
                "the fault after {what} names InputAddr {:#x} ({e}), want the IOVA {iova:#x}",
                e.input_addr()
            );
            check!(
                e.is_read() == read,
                "the fault after {what} is recorded as a {} ({e}), want a {} (SID {sid:#x})",
                if e.is_read() { "read" } else { "write" },
                if read { "read" } else { "write" }
            );
            Ok(())
        }
    }

    fn smmu_failed(what: core::fmt::Arguments, e: SmmuError) -> Failure {
        Failure::new(format_args!("{what}: {e}"))
    }

    fn canary_checksum() -> Result<u64, Failure> {
        hooks::canary()
            .map(|c| c.checksum)
            .map_err(|e| Failure::new(format_args!("PORTCULLIS_TEST_CANARY: {e}")))
    }

    fn run(ctx: &Context) -> Outcome {
        let tree = &ctx.dtb;
        let hyp = dma::hypervisor_region(tree)?;
        println!("Portcullis' memory: {:#x}..{:#x}", hyp.base, hyp.end());
        let frame = tree.smmu().ok_or_else(|| {
            Failure::new(format_args!(
                "no arm,smmu-v3 node in the host's tree: Portcullis should show its emulated SMMU"
            ))
        })?;
        println!("SMMU node: {:#x}+{:#x}", frame.base, frame.size);
        check!(
            frame.size >= 0x2_0000,
            "the SMMU's reg is {:#x} bytes: too small for register pages 0 and 1",
            frame.size
        );
        let (host, topology) = discover(tree)?;
        check!(
            !host.iommu_map().is_empty(),
            "the PCI host has no iommu-map: the host tree should map RIDs to the emulated SMMU"
        );
        let (edu, sid) = &dma::one_edu(&host, &topology, tree)?;
        let canary = dma::canary(hyp)?;
        println!(
            "canary: {:#x}+{:#x}, checksum {:#x}",
            canary.base, canary.size, canary.checksum
        );

        let smmu = Smmu::probe(frame.base, &SMMU_MEMORY)
            .map_err(|e| smmu_failed(format_args!("probing the SMMU"), e))?;
        let f = smmu.features;
        println!("SMMU: {f}");
        check!(
            !f.stage2 && !f.hyp,
            "the emulated SMMU offers stage 2 or EL2 (IDR0 {:#x}): Portcullis keeps both",
            f.idr0
        );
        // MSI is offered for CMD_SYNC completion (Linux's MSI polling); the rest stays wired.
        check!(
            f.msi,
            "the emulated SMMU offers no MSI (IDR0 {:#x}): CMD_SYNC completion by MSI is emulated",
            f.idr0
        );
        check!(
            f.oas_bits <= 48,
            "IDR5.OAS says {} bits: the stage 1 tables here are 48-bit",
            f.oas_bits
        );
        smmu.reset(*sid)
            .map_err(|e| smmu_failed(format_args!("bringing the SMMU up"), e))?;
        println!(
            "SMMU up: Stream table 2-level 2^{} SPLIT {SPLIT} at {:#x}, CR0 {:#x}",
            smmu.strtab_log2(),
            smmu.own_strtab_base(),
            smmu.cr0()
        );
        // The bare CMD_SYNC forms the emulation takes: SIG_NONE and SIG_SEV.
        smmu.issue(&[Command::Sync(SyncSignal::Sev)])
            .map_err(|e| smmu_failed(format_args!("a CMD_SYNC with CS = SIG_SEV"), e))?;

        TABLES.init(IOVA, ASID, f.oas);
        TABLES.map(IOVA, PAGES[0].addr());
        TABLES.map(IOVA + PAGE, PAGES[1].addr());
        smmu.install_ste(*sid, &Ste::stage1(TABLES.cd_addr()), ASID)
            .map_err(|e| smmu_failed(format_args!("installing the edu's stage 1 STE"), e))?;
        println!(
            "edu SID {sid:#x}: stage 1, CD at {:#x}, ASID {ASID}; IOVA {IOVA:#x} -> {:#x}, \
             {:#x} -> {:#x}",
            TABLES.cd_addr(),
            PAGES[0].addr(),
            IOVA + PAGE,
            PAGES[1].addr()
        );
        let rig = Rig {
            smmu: &smmu,
            edu,
            sid: *sid,
        };
        rig.drain("after bring-up")?;

        check_iova_dma(&rig)?;
        println!("1. DMA through the IOVAs: ok");
        check_unmapped(&rig)?;
        println!("2. unmapped IOVAs refused, stage 1 faults in the payload's Event queue: ok");
        check_illegal_commands(&rig)?;
        println!("3. illegal commands: CERROR_ILL, recovered: ok");
        check_cd_in_hypervisor(&rig, &canary)?;
        println!("4. a CD pointer into Portcullis' memory is refused: ok");
        let staging = Staging {
            source: &SOURCE,
            readback: &READBACK,
        };
        check_bypass_confined(&rig, &canary, &staging)?;
        println!("5. a bypass stream is confined by Portcullis' stage 2: ok");
        check_strtab_in_hypervisor(&rig, &canary)?;
        println!("6. a Stream table in Portcullis' memory is refused: ok");
        Ok(())
    }

    /// 1. DMA through the IOVAs, both directions, and across the page boundary.
    fn check_iova_dma(r: &Rig) -> Outcome {
        PAGES[0].fill(|i| device_pattern(1, i));
        PAGES[1].fill(|_| READBACK_FILL);
        r.dma_to_device(IOVA, BUFFER_SIZE, "IOVA page 0")?;
        r.dma_from_device(IOVA + PAGE, BUFFER_SIZE, "IOVA page 1")?;
        let bad = PAGES[1].mismatch(0..BUFFER_SIZE, |i| device_pattern(1, i));
        check!(
            bad.is_none(),
            "DMA through the IOVAs: {:#x} bytes from IOVA {IOVA:#x} (PA {:#x}) to the device, then to \
             IOVA {:#x} (PA {:#x}): byte {:#x} is {:#x}, want {:#x}",
            BUFFER_SIZE,
            PAGES[0].addr(),
            IOVA + PAGE,
            PAGES[1].addr(),
            bad.map_or(0, |b| b.0),
            bad.map_or(0, |b| b.1),
            bad.map_or(0, |b| b.2)
        );
        // A transfer straddling the two pages: each half translated on its own.
        PAGES[0].fill(|i| device_pattern(2, i));
        PAGES[1].fill(|i| device_pattern(3, i));
        let half = BUFFER_SIZE / 2;
        r.dma_to_device(IOVA + half as u64, BUFFER_SIZE, "across the page boundary")?;
        PAGES[1].fill(|_| READBACK_FILL);
        r.dma_from_device(IOVA + PAGE, BUFFER_SIZE, "reading it back")?;
        let want = |i: usize| {
            if i < half {
                device_pattern(2, half + i)
            } else {
                device_pattern(3, i - half)
            }
        };
        let bad = PAGES[1].mismatch(0..BUFFER_SIZE, want);
        check!(
            bad.is_none(),
            "DMA from IOVA {:#x} across the page boundary: device buffer byte {:#x} is {:#x}, want \
             {:#x} (the first half comes from PA {:#x}, the second from PA {:#x})",
            IOVA + half as u64,
            bad.map_or(0, |b| b.0),
            bad.map_or(0, |b| b.1),
            bad.map_or(0, |b| b.2),
            PAGES[0].addr() + half as u64,
            PAGES[1].addr()
        );
        Ok(())
    }

    /// 2. Unmapped pages: TLBI_NH_VA (page 1, a write) and TLBI_NH_ASID (page 0, a read).
    fn check_unmapped(r: &Rig) -> Outcome {
        let smmu = r.smmu;
        // Page 1 was last written through the IOVA: its translation may well be cached.
        TABLES.unmap(IOVA + PAGE);
        smmu.issue(&[
            Command::TlbiNhVa {
                asid: ASID,
                va: IOVA + PAGE,
            },
            Command::Sync(SyncSignal::None),
        ])
        .map_err(|e| smmu_failed(format_args!("TLBI_NH_VA + CMD_SYNC"), e))?;
        PAGES[0].fill(|i| device_pattern(4, i));
        r.dma_to_device(IOVA, BUFFER_SIZE, "loading the device through page 0")?;
        r.drain("before the unmapped write")?;
        // SAFETY: page 1 is the payload's own buffer.
        unsafe { fill_memory(PAGES[1].addr(), PAGE) };
        let target = IOVA + PAGE;
        r.dma_from_device(target, PROBE, "the unmapped page 1")?;
        // SAFETY: as above.
        let landed = unsafe { memory_changed(PAGES[1].addr(), PAGE) };
        check!(
            landed.is_none(),
            "a {PROBE}-byte DMA write to IOVA {target:#x}, unmapped and invalidated with \
             TLBI_NH_VA + CMD_SYNC, landed in the page it used to map: byte {:#x} is {:#x} (a \
             stale translation: was the TLBI forwarded?)",
            landed.map_or(0, |l| l.0),
            landed.map_or(0, |l| l.1)
        );
        let what = "a DMA write to the unmapped IOVA page 1";
        let e = r.wait_fault(what)?;
        r.expect_stage1_fault(&e, target, false, what)?;
        println!("  unmapped write: {e}");

        // Page 0 still translates (TLBI_NH_VA took one page only).
        PAGES[0].fill(|_| READBACK_FILL);
        r.dma_from_device(IOVA, 64, "page 0 after page 1 was unmapped")?;
        let bad = PAGES[0].mismatch(0..64, |i| device_pattern(4, i));
        check!(
            bad.is_none(),
            "IOVA {IOVA:#x} stopped working when only {target:#x} was unmapped: byte {:#x} is \
             {:#x}, want {:#x}",
            bad.map_or(0, |b| b.0),
            bad.map_or(0, |b| b.1),
            bad.map_or(0, |b| b.2)
        );

        // Page 0, invalidated by ASID, read by the device.
        TABLES.unmap(IOVA);
        smmu.issue(&[
            Command::TlbiNhAsid { asid: ASID },
            Command::Sync(SyncSignal::None),
        ])
        .map_err(|e| smmu_failed(format_args!("TLBI_NH_ASID + CMD_SYNC"), e))?;
        // SAFETY: page 0 is the payload's own buffer.
        unsafe { fill_memory(PAGES[0].addr(), PAGE) };
        r.dma_to_device(IOVA, PROBE, "the unmapped page 0")?;
        let what = "a DMA read from the unmapped IOVA page 0";
        let e = r.wait_fault(what)?;
        r.expect_stage1_fault(&e, IOVA, true, what)?;
        println!("  unmapped read: {e}");
        // The device got none of page 0: read its buffer back through a remapped page 1.
        TABLES.map(IOVA + PAGE, PAGES[1].addr());
        PAGES[1].fill(|_| READBACK_FILL);
        r.dma_from_device(IOVA + PAGE, PROBE, "reading the device's buffer back")?;
        let unchanged = PAGES[1]
            .mismatch(0..PROBE, |i| device_pattern(4, i))
            .is_none();
        let zeroed = PAGES[1].mismatch(0..PROBE, |_| 0).is_none();
        let leaked = PAGES[1]
            .mismatch(0..PROBE, |i| memory_pattern(PAGES[0].addr() + i as u64))
            .is_none();
        check!(
            !leaked,
            "a DMA read from IOVA {IOVA:#x}, unmapped and invalidated with TLBI_NH_ASID + \
             CMD_SYNC, got page 0's bytes (a stale translation)"
        );
        check!(
            unchanged || zeroed,
            "after a refused DMA read from IOVA {IOVA:#x} the device's buffer holds {:#x?}: \
             neither its old bytes nor zeros",
            [
                PAGES[1].get(0),
                PAGES[1].get(1),
                PAGES[1].get(2),
                PAGES[1].get(3)
            ]
        );
        TABLES.map(IOVA, PAGES[0].addr());
        r.drain("after the unmapped-page checks")
    }

    /// How the payload gets its Command queue going again after CERROR_ILL (section 7.1).
    #[derive(Clone, Copy, Debug)]
    enum Recovery {
        /// Overwrite the refused command with another, then acknowledge: the SMMU re-reads it.
        Replace(Command),
        /// Stop the queue, acknowledge, move CMDQ_CONS past the command, restart the queue.
        Skip,
    }

    /// 3. Illegal commands: CERROR_ILL at the command, GERROR.CMDQ_ERR, recovery, a CMD_SYNC.
    fn check_illegal_commands(r: &Rig) -> Outcome {
        let smmu = r.smmu;
        let ring = smmu.cmdq_ring();
        let cases = [
            (
                "CMD_TLBI_S2_IPA (stage 2 maintenance)",
                Command::TlbiS2Ipa {
                    vmid: 0,
                    ipa: PAGES[0].addr(),
                },
                Recovery::Replace(Command::Sync(SyncSignal::None)),
            ),
            (
                "CMD_TLBI_EL2_ALL (EL2 maintenance)",
                Command::TlbiEl2All,
                Recovery::Skip,
            ),
            (
                "Reserved opcode 0x3f",
                Command::Raw([0x3f, 0]),
                Recovery::Replace(Command::TlbiNhAsid { asid: ASID }),
            ),
        ];
        for (name, bad, recovery) in cases {
            let (active, g, n) = smmu.active_gerrors();
            check!(
                active == 0,
                "a global error is active before {name}: GERROR {g:#x}, GERRORN {n:#x}"
            );
            let bad_at = ring.next(smmu.cmdq_prod());
            let prod = smmu
                .submit(&[
                    Command::CfgiSte { sid: r.sid },
                    bad,
                    Command::Sync(SyncSignal::None),
                ])
                .map_err(|e| smmu_failed(format_args!("submitting {name}"), e))?;
            match smmu.wait_consumed(prod) {
                Err(SmmuError::CommandError {
                    cons,
                    err,
                    gerror: g,
                    gerrorn: n,
                    ..
                }) => {
                    check!(
                        err == cmdq_cons::CERROR_ILL,
                        "{name}: CMDQ_CONS.ERR is {err:#x}, want CERROR_ILL (0x1)"
                    );
                    check!(
                        cons == bad_at,
                        "{name}: CMDQ_CONS.RD is {cons:#x}, want {bad_at:#x} (the refused \
                         command; the CFGI_STE before it is complete, the CMD_SYNC after it is not)"
                    );
                    check!(
                        (g ^ n) as u64 & gerror::CMDQ_ERR.mask() != 0,
                        "{name}: GERROR {g:#x} / GERRORN {n:#x}: CMDQ_ERR not active"
                    );
                }
                Ok(()) => {
                    return Err(Failure::new(format_args!(
                        "{name} was accepted: CMDQ_CONS reached PROD {prod:#x} without CERROR_ILL"
                    )));
                }
                Err(e) => return Err(smmu_failed(format_args!("{name}"), e)),
            }
            // The queue stays stopped at the command until the error is acknowledged.
            let held = cmdq_cons::RD.get(smmu.cmdq_cons().into()) as u32;
            check!(
                held == bad_at,
                "{name}: CMDQ_CONS moved to {held:#x} while CMDQ_ERR was active"
            );
            match recovery {
                Recovery::Replace(with) => {
                    smmu.replace_command(bad_at, &with);
                    smmu.acknowledge_gerrors();
                }
                Recovery::Skip => {
                    let on = smmu.cr0();
                    smmu.set_cr0(on & !(cr0::CMDQEN.set() as u32))
                        .map_err(|e| smmu_failed(format_args!("stopping the Command queue"), e))?;
                    smmu.acknowledge_gerrors();
                    smmu.write32(reg::CMDQ_CONS, ring.next(bad_at));
                    smmu.set_cr0(on).map_err(|e| {
                        smmu_failed(format_args!("restarting the Command queue"), e)
                    })?;
                }
            }
            let (active, g, n) = smmu.active_gerrors();
            check!(
                active == 0,
                "{name}: GERROR {g:#x} / GERRORN {n:#x} still differ after GERRORN was written"
            );
            smmu.wait_consumed(prod).map_err(|e| {
                smmu_failed(
                    format_args!("{name}: the CMD_SYNC behind it, after recovery ({recovery:?})"),
                    e,
                )
            })?;
            smmu.issue(&[Command::Sync(SyncSignal::None)])
                .map_err(|e| smmu_failed(format_args!("{name}: a CMD_SYNC after recovery"), e))?;
            println!("  {name}: CERROR_ILL at {bad_at:#x}, recovered by {recovery:?}");
        }
        r.drain("after the illegal commands")
    }

    /// 4. An STE whose S1ContextPtr points into Portcullis' memory (the canary).
    fn check_cd_in_hypervisor(r: &Rig, canary: &Canary) -> Outcome {
        let sid = r.sid;
        // The device's buffer first holds a known pattern, loaded through the working context.
        PAGES[0].fill(|i| device_pattern(5, i));
        r.dma_to_device(IOVA, BUFFER_SIZE, "loading the device through page 0")?;
        // What a DMA that got through would carry or leave.
        // SAFETY: the payload's own buffers.
        unsafe {
            fill_memory(PAGES[0].addr(), PAGE);
            fill_memory(PAGES[1].addr(), PAGE);
        }
        r.drain("before the CD pointer check")?;
        let before = faults_now(sid)?;
        let sum = canary_checksum()?;
        check!(
            sum == canary.checksum,
            "the canary changed before the CD pointer check: {:#x} -> {sum:#x}",
            canary.checksum
        );

        r.smmu
            .install_ste(sid, &Ste::stage1(canary.base), ASID)
            .map_err(|e| {
                smmu_failed(
                    format_args!("installing an STE with its CD at the canary"),
                    e,
                )
            })?;
        let sum = canary_checksum()?;
        check!(
            sum == canary.checksum,
            "installing an STE whose S1ContextPtr is the canary {:#x} changed it: checksum \
             {:#x} -> {sum:#x}",
            canary.base,
            canary.checksum
        );
        let what = "an STE whose CD is in Portcullis' memory";
        r.dma_from_device(IOVA + PAGE, PROBE, what)?;
        // SAFETY: the payload's own buffer.
        let landed = unsafe { memory_changed(PAGES[1].addr(), PAGE) };
        check!(
            landed.is_none(),
            "a DMA write to IOVA {:#x} by SID {sid:#x}, whose STE points its CD at Portcullis' \
             memory {:#x}, landed at {:#x}: the SMMU translated with some CD",
            IOVA + PAGE,
            canary.base,
            landed.map_or(0, |l| l.0)
        );
        r.dma_to_device(IOVA, PROBE, what)?;
        let sum = canary_checksum()?;
        check!(
            sum == canary.checksum,
            "DMA on a stream whose CD pointer is the canary changed it: checksum {:#x} -> {sum:#x}",
            canary.checksum
        );

        // The records: the architecture reports a CD fetch that faults at stage 2 as that stage 2
        // fault (F_TRANSLATION with S2 = 1, CLASS = CD, IPA = the CD's address); F_CD_FETCH is for
        // an external abort on the fetch, C_BAD_CD for a CD that was fetched and is ILLEGAL.
        let mut in_queue: Option<Event> = None;
        let mut in_queue_count = 0u64;
        let mut stage1: Option<Event> = None;
        r.smmu
            .drain_until_quiet(|e| {
                println!("  event: {e}");
                if e.sid() != sid {
                    return;
                }
                let cd_fault = match e.kind() {
                    evt::F_CD_FETCH | evt::C_BAD_CD => true,
                    k if (0x10..=0x13).contains(&k) => {
                        if !e.stage2() {
                            stage1.get_or_insert(*e);
                        }
                        e.stage2() && e.class() == evt::CLASS_CD
                    }
                    _ => false,
                };
                if cd_fault {
                    in_queue_count += 1;
                    in_queue.get_or_insert(*e);
                }
            })
            .map_err(|e| smmu_failed(format_args!("draining the Event queue"), e))?;
        let after = faults_now(sid)?;
        check!(
            stage1.is_none(),
            "a stage 1 fault {} after DMA through an STE whose CD is in Portcullis' memory: the \
             SMMU used a CD from there",
            stage1.unwrap_or_default()
        );
        // Two refused transactions, each recorded once, wherever.
        let recorded = after.count - before.count;
        check!(
            in_queue_count + recorded >= 2,
            "the refused CD fetches of SID {sid:#x} (CD pointer {:#x} in Portcullis' memory, two \
             transactions) were recorded {in_queue_count} time(s) in the payload's Event queue \
             and {recorded} time(s) by Portcullis (PORTCULLIS_TEST_FAULTS {} -> {})",
            canary.base,
            before.count,
            after.count
        );
        if let Some(e) = in_queue {
            if e.kind() == evt::F_TRANSLATION {
                check!(
                    e.ipa() == canary.base & !(PAGE - 1),
                    "the stage 2 CD-fetch fault {e} names IPA {:#x}, want the CD's page {:#x}",
                    e.ipa(),
                    canary.base & !(PAGE - 1)
                );
            }
            println!("  reported in the payload's Event queue: {in_queue_count} x {e}");
        }
        if recorded > 0 {
            check!(
                after.last_type == evt::F_TRANSLATION,
                "Portcullis recorded the refused CD fetch of SID {sid:#x} as {:#x} ({}), want \
                 F_TRANSLATION: a CD fetch that faults at stage 2 is reported as that stage 2 \
                 fault (S2 = 1, CLASS = CD)",
                after.last_type,
                hooks::event_name(after.last_type)
            );
            check!(
                after.last_addr == IOVA,
                "Portcullis' latest record for SID {sid:#x} (its refused read through the CD at \
                 {:#x}) names {:#x}: InputAddr should be the transaction's IOVA {IOVA:#x}",
                canary.base,
                after.last_addr
            );
            println!(
                "  recorded by Portcullis: {recorded} x {}, the latest at input address {:#x}",
                hooks::event_name(after.last_type),
                after.last_addr
            );
        }

        // Back to the real CD: the device's buffer must not hold page 0's bytes.
        r.smmu
            .install_ste(sid, &Ste::stage1(TABLES.cd_addr()), ASID)
            .map_err(|e| smmu_failed(format_args!("restoring the edu's stage 1 STE"), e))?;
        PAGES[1].fill(|_| READBACK_FILL);
        r.dma_from_device(IOVA + PAGE, PROBE, "reading the device's buffer back")?;
        let unchanged = PAGES[1]
            .mismatch(0..PROBE, |i| device_pattern(5, i))
            .is_none();
        let zeroed = PAGES[1].mismatch(0..PROBE, |_| 0).is_none();
        check!(
            unchanged || zeroed,
            "a DMA read through an STE whose CD is in Portcullis' memory brought the device data: \
             its buffer holds {:#x?}, neither its old bytes nor zeros",
            [
                PAGES[1].get(0),
                PAGES[1].get(1),
                PAGES[1].get(2),
                PAGES[1].get(3)
            ]
        );
        r.drain("after the CD pointer check")
    }

    /// 5. A bypass stream: ordinary RAM by physical address works, Portcullis' memory does not.
    fn check_bypass_confined(r: &Rig, canary: &Canary, staging: &Staging) -> Outcome {
        r.smmu
            .install_ste(r.sid, &Ste::bypass(), ASID)
            .map_err(|e| smmu_failed(format_args!("installing a bypass STE"), e))?;
        r.drain("after switching to bypass")?;
        staging.load(r.edu, 6)?;
        let dev = Subject {
            edu: r.edu,
            sid: r.sid,
            staging,
            bystander: None,
        };
        dev.refused_write_to_canary(canary, canary.base, PROBE, 7)?;
        dev.refused_write_to_canary(canary, canary.base + 0x100, 0x40, 8)?;
        dev.refused_read_from_canary(canary, canary.base, 0x40, 9)?;
        // Portcullis' stage 2 faults are its own: none reaches the payload's queue.
        let mut leaked = None;
        let d = r
            .smmu
            .drain_until_quiet(|e| {
                println!("  event: {e}");
                leaked.get_or_insert(*e);
            })
            .map_err(|e| smmu_failed(format_args!("draining the Event queue"), e))?;
        check!(
            d.records == 0,
            "{} record(s) in the payload's Event queue after its bypass stream was refused by \
             Portcullis' stage 2, the first: {}",
            d.records,
            leaked.unwrap_or_default()
        );
        staging.load(r.edu, 10)?;
        r.smmu
            .install_ste(r.sid, &Ste::stage1(TABLES.cd_addr()), ASID)
            .map_err(|e| smmu_failed(format_args!("restoring the edu's stage 1 STE"), e))
    }

    /// Records of check 6.
    #[derive(Debug, Default)]
    struct StrtabTally {
        ste_fetch: usize,
        for_edu: Option<Event>,
        /// An F_STE_FETCH naming another address than the stream's level 1 descriptor.
        misplaced: Option<Event>,
        other: usize,
        first_other: Option<Event>,
        overflowed: bool,
    }

    /// 6. STRTAB_BASE in Portcullis' memory.
    fn check_strtab_in_hypervisor(r: &Rig, canary: &Canary) -> Outcome {
        let smmu = r.smmu;
        let sid = r.sid;
        r.drain("before the Stream table check")?;
        let on = smmu.cr0();
        let off = on & !(cr0::SMMUEN.set() as u32);
        smmu.set_cr0(off)
            .map_err(|e| smmu_failed(format_args!("clearing SMMUEN"), e))?;
        let base = strtab::BASE_ADDR.addr(canary.base);
        smmu.write64(reg::STRTAB_BASE, base);
        let got = smmu.read64(reg::STRTAB_BASE);
        check!(
            got == base,
            "STRTAB_BASE reads {got:#x} after {base:#x} was written with SMMUEN = 0"
        );
        // The table covers only the edu's level 1 descriptor's StreamIDs: the emulation records
        // an F_STE_FETCH for every stream in range each time it recomposes them (it sees no
        // transactions), and a range no larger than the Event queue keeps every record.
        let narrow = SPLIT.max(u32::BITS - sid.leading_zeros());
        smmu.write32(reg::STRTAB_BASE_CFG, Smmu::strtab_base_cfg_for(narrow));
        let in_range = 1usize << narrow;
        let room = 1usize << smmu.evtq_log2();
        let l1_of = |s: u32| base + u64::from(s >> SPLIT) * 8;
        let mut tally = StrtabTally::default();
        let mut count = |e: &Event| {
            if e.kind() == evt::F_STE_FETCH {
                tally.ste_fetch += 1;
                if e.fetch_addr() != l1_of(e.sid()) {
                    tally.misplaced.get_or_insert(*e);
                }
                if e.sid() == sid {
                    tally.for_edu.get_or_insert(*e);
                }
            } else {
                tally.other += 1;
                tally.first_other.get_or_insert(*e);
            }
        };
        let clock = Deadline::after_ms(0).map_err(|e| smmu_failed(format_args!("timing"), e))?;
        smmu.set_cr0(on).map_err(|e| {
            smmu_failed(format_args!("setting SMMUEN with STRTAB_BASE {base:#x}"), e)
        })?;
        println!(
            "  SMMUEN set with the Stream table at {base:#x} in {} ms",
            clock.waited_ms()
        );
        let d = smmu
            .drain_until_quiet(&mut count)
            .map_err(|e| smmu_failed(format_args!("draining the Event queue"), e))?;
        let after_enable = d.records;
        let mut overflowed = d.overflowed;
        smmu.issue(&[Command::CfgiAll, Command::Sync(SyncSignal::None)])
            .map_err(|e| smmu_failed(format_args!("CFGI_ALL + CMD_SYNC"), e))?;
        let d = smmu
            .drain_until_quiet(&mut count)
            .map_err(|e| smmu_failed(format_args!("draining the Event queue"), e))?;
        overflowed |= d.overflowed;
        tally.overflowed = overflowed;
        println!(
            "  2^{narrow} StreamIDs in range; records: {after_enable} after SMMUEN, {} after \
             CFGI_ALL: {} F_STE_FETCH, {} other{}",
            d.records,
            tally.ste_fetch,
            tally.other,
            if tally.overflowed {
                "; the Event queue overflowed"
            } else {
                ""
            }
        );
        let sum = canary_checksum()?;
        check!(
            sum == canary.checksum,
            "a Stream table at the canary {base:#x} changed it: checksum {:#x} -> {sum:#x}",
            canary.checksum
        );
        check!(
            tally.other == 0,
            "{} record(s) other than F_STE_FETCH with the Stream table in Portcullis' memory, the \
             first: {} (a C_BAD_STE or a translation would mean its contents were read)",
            tally.other,
            tally.first_other.unwrap_or_default()
        );
        let Some(e) = tally.for_edu else {
            return Err(Failure::new(format_args!(
                "no F_STE_FETCH for SID {sid:#x} with STRTAB_BASE {base:#x} in Portcullis' memory \
                 ({} F_STE_FETCH for other streams{})",
                tally.ste_fetch,
                if tally.overflowed {
                    "; the Event queue overflowed"
                } else {
                    ""
                }
            )));
        };
        check!(
            e.fetch_addr() == l1_of(sid),
            "the F_STE_FETCH for SID {sid:#x} names {:#x}, want its level 1 descriptor at {:#x} \
             ({e})",
            e.fetch_addr(),
            l1_of(sid)
        );
        check!(
            tally.misplaced.is_none(),
            "an F_STE_FETCH names another address than its stream's level 1 descriptor: {} \
             (want {:#x})",
            tally.misplaced.unwrap_or_default(),
            tally.misplaced.map_or(0, |m| l1_of(m.sid()))
        );
        check!(
            !tally.overflowed || in_range > room,
            "the Event queue ({room} entries, drained before) overflowed with 2^{narrow} StreamIDs \
             in the Stream table's range: more than one record per stream and recomposition"
        );
        println!("  {e}");

        // The stream is aborted: DMA does not land, by IOVA or by physical address.
        // SAFETY: the payload's own buffer.
        unsafe { fill_memory(PAGES[1].addr(), PAGE) };
        r.dma_from_device(
            IOVA + PAGE,
            PROBE,
            "with the Stream table in Portcullis' memory",
        )?;
        r.dma_from_device(
            PAGES[1].addr() + 0x10,
            PROBE,
            "with the Stream table in Portcullis' memory",
        )?;
        // SAFETY: as above.
        let landed = unsafe { memory_changed(PAGES[1].addr(), PAGE) };
        check!(
            landed.is_none(),
            "DMA by SID {sid:#x} landed at {:#x} while STRTAB_BASE pointed into Portcullis' memory \
             (the stream should be aborted)",
            landed.map_or(0, |l| l.0)
        );
        let sum = canary_checksum()?;
        check!(
            sum == canary.checksum,
            "DMA with the Stream table at the canary changed it: checksum {:#x} -> {sum:#x}",
            canary.checksum
        );

        // Back to the payload's own table; everything works again.
        smmu.set_cr0(off)
            .map_err(|e| smmu_failed(format_args!("clearing SMMUEN"), e))?;
        smmu.write64(reg::STRTAB_BASE, smmu.own_strtab_base());
        smmu.write32(reg::STRTAB_BASE_CFG, smmu.strtab_base_cfg());
        smmu.set_cr0(on)
            .map_err(|e| smmu_failed(format_args!("setting SMMUEN"), e))?;
        smmu.issue(&[
            Command::CfgiAll,
            Command::TlbiNsnhAll,
            Command::Sync(SyncSignal::None),
        ])
        .map_err(|e| smmu_failed(format_args!("CFGI_ALL + TLBI_NSNH_ALL + CMD_SYNC"), e))?;
        r.drain("after restoring the Stream table")?;
        PAGES[0].fill(|i| device_pattern(11, i));
        PAGES[1].fill(|_| READBACK_FILL);
        r.dma_to_device(IOVA, BUFFER_SIZE, "after restoring the Stream table")?;
        r.dma_from_device(IOVA + PAGE, BUFFER_SIZE, "after restoring the Stream table")?;
        let bad = PAGES[1].mismatch(0..BUFFER_SIZE, |i| device_pattern(11, i));
        check!(
            bad.is_none(),
            "DMA through the IOVAs after the Stream table was restored: byte {:#x} is {:#x}, want \
             {:#x}",
            bad.map_or(0, |b| b.0),
            bad.map_or(0, |b| b.1),
            bad.map_or(0, |b| b.2)
        );
        Ok(())
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
