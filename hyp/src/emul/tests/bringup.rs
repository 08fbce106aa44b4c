//! A small Linux driver's life on the emulated SMMU: probe, reset, queues, a two-level Stream
//! table, enabling, a stage 1 device and a bypass device, invalidations. Every command, STE and
//! physical request is checked exactly.

use std::vec;
use std::vec::Vec;

use super::fakes::*;
use crate::emul::Note;
use crate::smmu::cmd::{Command, TlbiScope};
use crate::smmu::regs::{IDR0, IDR1, IDR5, offset as o};
use crate::smmu::ste::{AttrOverrides, Ste};
use tock_registers::LocalRegisterCopy;

/// Commands as a driver encodes them (chapter 4 field positions).
pub mod cmd {
    pub const CFGI_ALL: [u64; 2] = [0x04, 31];
    pub const SYNC_SEV: [u64; 2] = [0x46 | 0b10 << 12, 0];
    pub const SYNC_NONE: [u64; 2] = [0x46, 0];
    pub const SYNC_IRQ: [u64; 2] = [0x46 | 0b01 << 12, 0];
    pub const TLBI_NSNH_ALL: [u64; 2] = [0x30, 0];
    pub const TLBI_EL2_ALL: [u64; 2] = [0x20, 0];

    pub const fn cfgi_ste(sid: u32) -> [u64; 2] {
        [0x03 | (sid as u64) << 32, 0]
    }
    pub const fn cfgi_cd(sid: u32, ssid: u32, leaf: bool) -> [u64; 2] {
        [0x05 | (ssid as u64) << 12 | (sid as u64) << 32, leaf as u64]
    }
    pub const fn cfgi_cd_all(sid: u32) -> [u64; 2] {
        [0x06 | (sid as u64) << 32, 0]
    }
    pub const fn tlbi_nh_asid(vmid: u16, asid: u16) -> [u64; 2] {
        [0x11 | (vmid as u64) << 32 | (asid as u64) << 48, 0]
    }
    pub const fn tlbi_nh_va(asid: u16, va: u64, leaf: bool) -> [u64; 2] {
        [0x12 | (asid as u64) << 48, va | leaf as u64]
    }
    pub const fn tlbi_s2_ipa(vmid: u16, ipa: u64) -> [u64; 2] {
        [0x2a | (vmid as u64) << 32, ipa]
    }
}

/// A stage 1 STE as Linux writes one: V, Config = S1 translate, linear CD table of one CD,
/// S1CIR/S1COR write-back, S1CSH inner shareable. Stage 2 fields and STRW/EATS hold junk that a
/// host has no business setting and the emulation must ignore.
pub fn s1_ste(cd_table: u64) -> [u64; 8] {
    let w0 = 1 | 0b101 << 1 | cd_table;
    let w1 = 0b01 << 2 | 0b01 << 4 | 0b11 << 6 | 0b10 << 30;
    let w2 = 0x55 | 0x3f << 32; // S2VMID, S2T0SZ
    let w3 = 0x4800_0000; // S2TTB into Portcullis' memory
    [w0, w1, w2, w3, 0, 0, 0, 0]
}

/// A bypass STE with SHCFG = use incoming.
pub fn bypass_ste() -> [u64; 8] {
    [1 | 0b100 << 1, 0b01 << 44, 0, 0, 0, 0, 0, 0]
}

/// An abort STE.
pub fn abort_ste() -> [u64; 8] {
    [1, 0, 0, 0, 0, 0, 0, 0]
}

/// The stage 2 words of every non-abort physical STE: [`policy`] by absolute bit number
/// (section 5.2): S2VMID [143:128], S2T0SZ [165:160], S2SL0 [167:166], S2IR0, S2OR0, S2SH0
/// [173:168], S2TG [175:174], S2PS [178:176] (44 bits: 0b100), S2AA64 [179], S2PTW [182], S2R [186];
/// S2TTB [247:196].
pub fn policy_words() -> [u64; 2] {
    let w2 = 7
        | 24 << 32
        | 0b01 << 38
        | 0b01 << 40
        | 0b01 << 42
        | 0b11 << 44
        | 0b100 << 48
        | 1 << 51
        | 1 << 54
        | 1 << 58;
    [w2, 0x4900_0000]
}

/// Steps 1..12 of the bring-up: probe, reset, queues, a two-level table with no level 2 tables,
/// CFGI_ALL and TLBI_NSNH_ALL, the Event queue, interrupts, SMMUEN. Returns the physical log of the
/// enable.
pub fn reset_and_enable(rig: &mut Rig) -> Vec<PhysOp> {
    // Probe.
    let idr0 = LocalRegisterCopy::<u32, IDR0::Register>::new(rig.r32(o::IDR0));
    assert!(idr0.is_set(IDR0::S1P) && !idr0.is_set(IDR0::S2P));
    assert!(!idr0.is_set(IDR0::HYP) && idr0.is_set(IDR0::MSI) && !idr0.is_set(IDR0::ATS));
    assert!(!idr0.is_set(IDR0::PRI) && !idr0.is_set(IDR0::SEV) && !idr0.is_set(IDR0::BTM));
    assert_eq!(idr0.read(IDR0::ST_LEVEL), 0b01);
    assert_eq!(idr0.read(IDR0::STALL_MODEL), 0b01);
    let idr1 = LocalRegisterCopy::<u32, IDR1::Register>::new(rig.r32(o::IDR1));
    assert_eq!(idr1.read(IDR1::SIDSIZE), 16);
    assert_eq!(idr1.read(IDR1::SSIDSIZE), 16);
    assert_eq!(idr1.read(IDR1::CMDQS), 8);
    assert_eq!(idr1.read(IDR1::EVTQS), 8);
    assert_eq!(idr1.read(IDR1::PRIQS), 0);
    let idr5 = LocalRegisterCopy::<u32, IDR5::Register>::new(rig.r32(o::IDR5));
    assert_eq!(
        idr5.read(IDR5::OAS),
        0b010,
        "OAS = the host's 40-bit IPA space"
    );

    // Reset: disable, table and queue attributes, CR2.
    rig.w32(o::CR0, 0);
    assert_eq!(rig.r32(o::CR0ACK), 0);
    rig.w32(o::CR1, 0xd75);
    rig.w32(o::CR2, 0b110);
    assert_eq!(rig.r32(o::CR2), 0b110);

    // Stream table: two levels, SPLIT 8, 2^16 StreamIDs (256 L1STDs, all invalid).
    rig.w64(o::STRTAB_BASE, 1 << 62 | STRTAB);
    rig.w32(o::STRTAB_BASE_CFG, 1 << 16 | 8 << 6 | 16);
    assert_eq!(rig.r64(o::STRTAB_BASE), 1 << 62 | STRTAB);

    // Command queue of 2^8 commands.
    rig.w64(o::CMDQ_BASE, 1 << 62 | CMDQ | 8);
    rig.w32(o::CMDQ_PROD, 0);
    rig.w32(o::CMDQ_CONS, 0);
    rig.w32(o::CR0, 1 << 3);
    assert_eq!(rig.r32(o::CR0ACK), 1 << 3);

    // Invalidate cached configuration and TLBs. With SMMUEN = 0 the streams follow GBPA (which the
    // physical SMMU already does): nothing to write, but the CMD_SYNC waits for a physical sync.
    rig.issue(&[cmd::CFGI_ALL, cmd::SYNC_SEV]);
    assert_eq!(rig.r32(o::CMDQ_CONS), 2);
    assert_eq!(rig.phys.take(), [PhysOp::Sync]);
    rig.issue(&[cmd::TLBI_NSNH_ALL, cmd::SYNC_SEV]);
    assert_eq!(rig.r32(o::CMDQ_CONS), 4);
    assert_eq!(
        rig.phys.take(),
        [
            PhysOp::Submit(vec![Command::TlbiNhAll { vmid: 7 }]),
            PhysOp::Sync
        ]
    );

    // Event queue of 2^8 records.
    rig.w64(o::EVTQ_BASE, 1 << 62 | EVTQ | 8);
    rig.w32(o::EVTQ_PROD, 0);
    rig.w32(o::EVTQ_CONS, 0);
    rig.w32(o::CR0, 1 << 3 | 1 << 2);
    assert_eq!(rig.r32(o::CR0ACK), 1 << 3 | 1 << 2);

    // Wired interrupts: GERROR and EVENTQ.
    rig.w32(o::IRQ_CTRL, 0);
    assert_eq!(rig.r32(o::IRQ_CTRLACK), 0);
    rig.w32(o::IRQ_CTRL, 0b101);
    assert_eq!(rig.r32(o::IRQ_CTRLACK), 0b101);

    // Enable: every physical stream is recomposed from the (empty) table and synced before
    // CR0ACK says so.
    rig.w32(o::CR0, 1 << 3 | 1 << 2 | 1);
    assert_eq!(rig.r32(o::CR0ACK), 0b1101);
    assert!(rig.take_notes().is_empty());
    rig.phys.take()
}

#[test]
fn linux_bringup() {
    let mut rig = Rig::new();
    let enable = reset_and_enable(&mut rig);
    let mut expected: Vec<PhysOp> = STREAMS
        .iter()
        .map(|&s| PhysOp::Ste(s, Ste::abort()))
        .collect();
    expected.push(PhysOp::Sync);
    assert_eq!(enable, expected, "no level 2 tables yet: everything aborts");
    assert!(
        rig.events().is_empty(),
        "no C_BAD_STREAMID for a bulk recomposition"
    );

    // The driver probes devices 0x10 and 0x11: a level 2 table for StreamIDs 0..255 filled with
    // abort STEs, linked with Span = SPLIT + 1.
    for i in 0..256 {
        rig.mem.poke_words(L2_GROUP0 + 64 * i, &abort_ste());
    }
    rig.mem.poke_words(STRTAB, &[L2_GROUP0 | 9]);

    // Device 0x10 gets a stage 1 domain.
    rig.mem.poke_words(L2_GROUP0 + 64 * 0x10, &s1_ste(CD_TABLE));
    rig.issue(&[cmd::cfgi_ste(0x10), cmd::SYNC_SEV]);
    let nested = Ste([
        1 | 0b111 << 1 | CD_TABLE,
        0b01 << 2 | 0b01 << 4 | 0b11 << 6,
        policy_words()[0],
        policy_words()[1],
        0,
        0,
        0,
        0,
    ]);
    assert_eq!(rig.phys.take(), [PhysOp::Ste(0x10, nested), PhysOp::Sync]);

    // Device 0x11 gets an identity domain: stage 2 only, with the policy.
    rig.mem.poke_words(L2_GROUP0 + 64 * 0x11, &bypass_ste());
    rig.issue(&[cmd::cfgi_ste(0x11), cmd::SYNC_SEV]);
    let s2_only = Ste([
        1 | 0b110 << 1,
        0,
        policy_words()[0],
        policy_words()[1],
        0,
        0,
        0,
        0,
    ]);
    assert_eq!(s2_only, Ste::stage2(&policy(), &AttrOverrides::default()));
    assert_eq!(rig.phys.take(), [PhysOp::Ste(0x11, s2_only), PhysOp::Sync]);

    // Unmapping from the stage 1 domain: an ASID invalidation, forwarded in Portcullis' VMID.
    rig.issue(&[cmd::tlbi_nh_asid(0, 5), cmd::SYNC_SEV]);
    assert_eq!(
        rig.phys.take(),
        [
            PhysOp::Submit(vec![Command::TlbiNhAsid { vmid: 7, asid: 5 }]),
            PhysOp::Sync
        ]
    );

    // A batch with two syncs costs one physical sync.
    rig.issue(&[
        cmd::cfgi_cd(0x10, 0, true),
        cmd::tlbi_nh_va(5, 0xffff_8000_0000_0000, true),
        cmd::SYNC_NONE,
        cmd::cfgi_cd_all(0x10),
        cmd::cfgi_cd_all(0x1234), // not a physical stream: nothing to forward
        cmd::SYNC_SEV,
    ]);
    assert_eq!(
        rig.phys.take(),
        [
            PhysOp::Submit(vec![
                Command::CfgiCd {
                    sid: 0x10,
                    ssid: 0,
                    leaf: true
                },
                Command::TlbiNhVa {
                    vmid: 7,
                    asid: 5,
                    va: 0xffff_8000_0000_0000,
                    scope: TlbiScope::single(true)
                },
                Command::CfgiCdAll { sid: 0x10 },
            ]),
            PhysOp::Sync
        ]
    );
    assert_eq!(rig.r32(o::CMDQ_CONS), rig.r32(o::CMDQ_PROD));
    assert_eq!(rig.r32(o::GERROR), rig.r32(o::GERRORN));

    // Nothing went wrong, nothing was reported, nothing escaped the policy.
    assert!(rig.take_notes().is_empty());
    assert!(rig.events().is_empty());
    assert!(rig.phys.violations.is_empty(), "{:?}", rig.phys.violations);
    let live: Vec<u32> = rig.smmu.live_streams().collect();
    assert_eq!(live, [0x10, 0x11]);

    // Portcullis read only the Stream table, the level 2 table and the Command queue, never the
    // CD table; and wrote nothing.
    for a in rig.mem.accesses() {
        let inside = |base: u64, len: u64| a.ipa >= base && a.ipa + a.len as u64 <= base + len;
        assert!(!a.write, "{a:?}");
        assert!(
            inside(STRTAB, 256 * 8) || inside(L2_GROUP0, 256 * 64) || inside(CMDQ, 256 * 16),
            "{a:?}"
        );
    }
}

#[test]
fn illegal_commands_stop_the_queue() {
    let mut rig = Rig::new();
    reset_and_enable(&mut rig);
    for bad in [
        cmd::tlbi_s2_ipa(1, 0x4000_0000),
        cmd::TLBI_EL2_ALL,
        [0x0f, 0],                        // a Reserved opcode
        [0x46 | 0b11 << 12, 0],           // CMD_SYNC with a Reserved CS
        [0x40 | 0x10 << 32, 0x4000_0000], // CMD_ATC_INV: ATS not offered
        [0x44 | 0x10 << 32, 0],           // CMD_RESUME: stalls not offered
    ] {
        let start = rig.r32(o::CMDQ_CONS);
        let gerror = rig.r32(o::GERROR);
        rig.issue(&[
            cmd::tlbi_nh_asid(0, 1),
            cmd::SYNC_NONE,
            bad,
            cmd::tlbi_nh_asid(0, 2),
        ]);
        // The commands before the bad one completed, with their sync.
        assert_eq!(
            rig.phys.take(),
            [
                PhysOp::Submit(vec![Command::TlbiNhAsid { vmid: 7, asid: 1 }]),
                PhysOp::Sync
            ]
        );
        // CONS points at the bad command, ERR = CERROR_ILL, GERROR.CMDQ_ERR toggled.
        let cons = rig.r32(o::CMDQ_CONS);
        assert_eq!(cons & 0xfffff, (start + 2) & 0x1ff, "{bad:x?}");
        assert_eq!(cons >> 24, 0x01);
        assert_eq!(rig.r32(o::GERROR), gerror ^ 1);
        assert!(matches!(
            rig.take_notes().as_slice(),
            [Note::IllegalCommand { .. }]
        ));
        // Nothing moves until the host acknowledges, however often it writes PROD.
        let prod = rig.r32(o::CMDQ_PROD);
        rig.w32(o::CMDQ_PROD, prod);
        assert_eq!(rig.r32(o::CMDQ_CONS), cons);
        assert!(rig.phys.take().is_empty());
        // The host replaces the bad command with a CMD_SYNC (as Linux does) and acknowledges:
        // consumption resumes at CONS, and ERR clears.
        let slot = CMDQ + 16 * u64::from(cons & 0xff);
        rig.mem.poke_words(slot, &cmd::SYNC_NONE);
        rig.w32(o::GERRORN, rig.r32(o::GERROR));
        assert_eq!(rig.r32(o::CMDQ_CONS), prod);
        assert_eq!(
            rig.phys.take(),
            [
                PhysOp::Submit(vec![Command::TlbiNhAsid { vmid: 7, asid: 2 }]),
                PhysOp::Sync
            ]
        );
    }
    assert!(rig.phys.violations.is_empty(), "{:?}", rig.phys.violations);
}

#[test]
fn malformed_ste_is_reported_in_the_host_queue() {
    let mut rig = Rig::new();
    reset_and_enable(&mut rig);
    rig.phys.take();
    for i in 0..256 {
        rig.mem.poke_words(L2_GROUP0 + 64 * i, &abort_ste());
    }
    rig.mem.poke_words(STRTAB, &[L2_GROUP0 | 9]);
    // Config = stage 2 (the emulated SMMU has none): ILLEGAL.
    rig.mem.poke_words(
        L2_GROUP0 + 64 * 0x10,
        &[1 | 0b110 << 1, 0, 0, 0, 0, 0, 0, 0],
    );
    // S1CDMax 17 > SSIDSIZE 16: ILLEGAL.
    let mut too_many_cds = s1_ste(CD_TABLE);
    too_many_cds[0] |= 17 << 59;
    rig.mem.poke_words(L2_GROUP0 + 64 * 0x11, &too_many_cds);
    rig.mem.poke_words(L2_GROUP0 + 64 * 0x08, &[0; 8]); // V = 0: abort, no event
    rig.issue(&[
        cmd::cfgi_ste(0x10),
        cmd::cfgi_ste(0x11),
        cmd::cfgi_ste(0x08),
        cmd::SYNC_SEV,
    ]);
    assert_eq!(
        rig.phys.take(),
        [
            PhysOp::Ste(0x10, Ste::abort()),
            PhysOp::Ste(0x11, Ste::abort()),
            PhysOp::Ste(0x08, Ste::abort()),
            PhysOp::Sync
        ]
    );
    // C_BAD_STE (0x04) with the StreamID in [63:32].
    assert_eq!(
        rig.events(),
        [[0x04 | 0x10 << 32, 0, 0, 0], [0x04 | 0x11 << 32, 0, 0, 0]]
    );
    assert_eq!(
        rig.r32(o::CMDQ_CONS),
        rig.r32(o::CMDQ_PROD),
        "not a command error"
    );
    assert!(rig.smmu.live_streams().next().is_none());
}

#[test]
fn unconfigured_stream_named_by_cfgi_is_c_bad_streamid() {
    let mut rig = Rig::new();
    reset_and_enable(&mut rig);
    // 0x300 has no level 2 table; CR2.RECINVSID is set: C_BAD_STREAMID, abort.
    rig.issue(&[cmd::cfgi_ste(0x300), cmd::SYNC_SEV]);
    assert_eq!(rig.events(), [[0x02 | 0x300 << 32, 0, 0, 0]]);
    // Without RECINVSID, nothing is recorded.
    rig.w32(o::CR0, 0b1100);
    rig.w32(o::CR2, 0);
    rig.w32(o::CR0, 0b1101);
    rig.issue(&[cmd::cfgi_ste(0x300), cmd::SYNC_SEV]);
    assert!(rig.events().is_empty());
}

#[test]
fn bypass_gets_stage2_only_with_the_policy() {
    // Before the host enables anything, GBPA bypass: stage 2 only (and GBPA's attributes).
    let mut rig = Rig::with(
        crate::smmu::regs::SmmuFeatures {
            attr_types_ovr: true,
            ..qemu_like()
        },
        &STREAMS,
    );
    let notes = rig.smmu.recompose_all(&mut rig.mem, &mut rig.phys);
    assert!(notes.is_empty(), "{notes:?}");
    let gbpa = Ste::stage2(
        &policy(),
        &AttrOverrides {
            shcfg: 0b01,
            ..AttrOverrides::default()
        },
    );
    let mut expected: Vec<PhysOp> = STREAMS.iter().map(|&s| PhysOp::Ste(s, gbpa)).collect();
    expected.push(PhysOp::Sync);
    assert_eq!(rig.phys.take(), expected);
    assert_eq!(rig.smmu.live_streams().count(), STREAMS.len());

    // A bypass STE with its SHCFG override kept (the physical SMMU has ATTR_TYPES_OVR).
    reset_and_enable(&mut rig);
    rig.mem.poke_words(STRTAB, &[L2_GROUP0 | 9]);
    rig.mem.poke_words(L2_GROUP0 + 64 * 0x08, &bypass_ste());
    rig.issue(&[cmd::cfgi_ste(0x08), cmd::SYNC_SEV]);
    let ste = Ste([
        1 | 0b110 << 1,
        0b01 << 44,
        policy_words()[0],
        policy_words()[1],
        0,
        0,
        0,
        0,
    ]);
    assert_eq!(rig.phys.take(), [PhysOp::Ste(0x08, ste), PhysOp::Sync]);

    // After a mode switch, Portcullis recomposes with the new policy.
    rig.phys.policy = crash_policy();
    rig.smmu.recompose_all(&mut rig.mem, &mut rig.phys);
    let crash = Ste::stage2(
        &crash_policy(),
        &AttrOverrides {
            shcfg: 0b01,
            ..AttrOverrides::default()
        },
    );
    assert!(rig.phys.take().contains(&PhysOp::Ste(0x08, crash)));
    assert!(rig.phys.violations.is_empty(), "{:?}", rig.phys.violations);
}

#[test]
fn stream_table_outside_host_memory_is_not_read() {
    let mut rig = Rig::new();
    reset_and_enable(&mut rig);
    // Disable, point the Stream table at Portcullis' memory, enable.
    rig.w32(o::CR0, 0b1100);
    rig.phys.take();
    rig.mem.clear_log();
    rig.w64(o::STRTAB_BASE, HYP_MEM);
    rig.w32(o::STRTAB_BASE_CFG, 8); // linear, 256 STEs
    rig.w32(o::CR0, 0b1101);
    // Every read was refused by the policy before touching memory; every stream aborts with
    // F_STE_FETCH (0x03) carrying the fetch address in [247:195].
    let reads: Vec<_> = rig
        .mem
        .accesses()
        .into_iter()
        .filter(|a| !a.write)
        .collect();
    assert_eq!(reads.len(), STREAMS.len() - 1, "0x300 is beyond 256 STEs");
    assert!(reads.iter().all(|a| !a.allowed && a.ipa >= HYP_MEM));
    let events = rig.events();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0], [0x03 | 0x08 << 32, 0, 0, HYP_MEM + 0x08 * 64]);
    let mut expected: Vec<PhysOp> = STREAMS
        .iter()
        .map(|&s| PhysOp::Ste(s, Ste::abort()))
        .collect();
    expected.push(PhysOp::Sync);
    assert_eq!(rig.phys.take(), expected);
}

#[test]
fn command_queue_outside_host_memory_is_cerror_abt() {
    let mut rig = Rig::new();
    reset_and_enable(&mut rig);
    rig.w32(o::CR0, 0b0101);
    rig.w64(o::CMDQ_BASE, HYP_MEM | 8);
    rig.w32(o::CMDQ_CONS, 0);
    rig.w32(o::CMDQ_PROD, 0);
    rig.w32(o::CR0, 0b1101);
    rig.mem.clear_log();
    rig.w32(o::CMDQ_PROD, 1);
    // CERROR_ABT (0x02), CONS at the command it could not read, GERROR.CMDQ_ERR active.
    assert_eq!(rig.r32(o::CMDQ_CONS), 0x02 << 24);
    assert_eq!(rig.r32(o::GERROR) ^ rig.r32(o::GERRORN), 1);
    assert!(rig.mem.accesses().iter().all(|a| !a.allowed));
    assert!(matches!(
        rig.take_notes().as_slice(),
        [Note::CommandFetchAborted { .. }]
    ));
}

/// A strict unmap's TLBI + CMD_SYNC is read from host memory in one access (commands are read up
/// to four at a time).
#[test]
fn a_tlbi_and_sync_batch_is_one_host_read() {
    let mut rig = Rig::new();
    reset_and_enable(&mut rig);
    rig.phys.take();
    rig.mem.clear_log();
    rig.issue(&[cmd::tlbi_nh_va(1, 0x1000, true), cmd::SYNC_NONE]);
    let reads: Vec<(u64, usize)> = rig
        .mem
        .accesses()
        .iter()
        .filter(|a| !a.write)
        .map(|a| (a.ipa, a.len))
        .collect();
    assert_eq!(reads.len(), 1, "{reads:x?}");
    assert_eq!(reads[0].1, 32);
    assert!(matches!(
        rig.phys.take().as_slice(),
        [PhysOp::Submit(_), PhysOp::Sync]
    ));
}

/// Commands read ahead in one access: when some command of the run may not be read, the ones
/// before it still execute and the queue stops with CERROR_ABT exactly at it.
#[test]
fn a_run_reaching_outside_host_memory_stops_at_its_first_unreadable_command() {
    let mut rig = Rig::new();
    reset_and_enable(&mut rig);
    // Eight entries from 32 bytes below the end of host RAM: entries 0 and 1 are host RAM,
    // 2.. are Portcullis' memory.
    let base = HYP_MEM - 32;
    rig.w32(o::CR0, 0b0101);
    rig.w64(o::CMDQ_BASE, base | 3);
    rig.w32(o::CMDQ_CONS, 0);
    rig.w32(o::CMDQ_PROD, 0);
    rig.w32(o::CR0, 0b1101);
    rig.mem.poke_words(base, &cmd::tlbi_nh_va(1, 0x1000, true));
    rig.mem.poke_words(base + 16, &cmd::SYNC_NONE);
    rig.phys.take();
    rig.take_notes();
    rig.w32(o::CMDQ_PROD, 3);
    // CERROR_ABT (0x02) with CONS at entry 2; the TLBI and its sync before it completed.
    assert_eq!(rig.r32(o::CMDQ_CONS), 0x02 << 24 | 2);
    assert_eq!(rig.r32(o::GERROR) ^ rig.r32(o::GERRORN), 1);
    assert!(matches!(
        rig.phys.take().as_slice(),
        [PhysOp::Submit(_), PhysOp::Sync]
    ));
    assert!(matches!(
        rig.take_notes().as_slice(),
        [Note::CommandFetchAborted { ipa }] if ipa.0 == HYP_MEM
    ));
}

#[test]
fn event_queue_outside_host_memory_and_overflow() {
    let mut rig = Rig::new();
    reset_and_enable(&mut rig);
    let bad_ste = crate::smmu::event::Event::BadSte {
        origin: crate::smmu::event::Origin::stream(1),
    };
    // A 2-entry queue: two records fit, the third overflows (OVFLG toggles once).
    rig.w32(o::CR0, 0b1001);
    rig.w64(o::EVTQ_BASE, EVTQ | 1);
    rig.w32(o::CR0, 0b1101);
    use crate::emul::Delivery;
    let d: Vec<Delivery> = (0..4)
        .map(|_| rig.smmu.deliver_event(&bad_ste, &mut rig.mem))
        .collect();
    assert_eq!(
        d,
        [
            Delivery::Written,
            Delivery::Written,
            Delivery::Overflow,
            Delivery::Overflow
        ]
    );
    assert_eq!(rig.r32(o::EVTQ_PROD), 1 << 31 | 0b10);
    // The host drains and acknowledges the overflow: room again, no overflow pending.
    assert_eq!(rig.events().len(), 2);
    assert_eq!(rig.r32(o::EVTQ_CONS), 1 << 31 | 0b10);
    assert_eq!(
        rig.smmu.deliver_event(&bad_ste, &mut rig.mem),
        Delivery::Written
    );

    // Pointed at Portcullis' memory: the write is refused, GERROR.EVENTQ_ABT_ERR is active.
    rig.w32(o::CR0, 0b1001);
    rig.w64(o::EVTQ_BASE, HYP_MEM | 8);
    rig.w32(o::EVTQ_PROD, 0);
    rig.w32(o::EVTQ_CONS, 0);
    rig.w32(o::CR0, 0b1101);
    assert_eq!(
        rig.smmu.deliver_event(&bad_ste, &mut rig.mem),
        Delivery::WriteAborted
    );
    assert_eq!(rig.r32(o::GERROR) ^ rig.r32(o::GERRORN), 1 << 2);
    assert_eq!(rig.r32(o::EVTQ_PROD), 0);
    // Disabled: dropped.
    rig.w32(o::CR0, 0b1001);
    assert_eq!(
        rig.smmu.deliver_event(&bad_ste, &mut rig.mem),
        Delivery::QueueDisabled
    );
}

#[test]
fn capture_kernel_reset() {
    let mut rig = Rig::new();
    reset_and_enable(&mut rig);
    rig.mem.poke_words(STRTAB, &[L2_GROUP0 | 9]);
    rig.mem.poke_words(L2_GROUP0 + 64 * 0x10, &s1_ste(CD_TABLE));
    rig.mem.poke_words(L2_GROUP0 + 64 * 0x11, &bypass_ste());
    rig.issue(&[cmd::cfgi_ste(0x10), cmd::cfgi_ste(0x11), cmd::SYNC_SEV]);
    rig.phys.take();
    assert_eq!(rig.smmu.live_streams().count(), 2);

    // The capture kernel: GBPA abort first (Linux does when it finds SMMUEN set), then CR0 = 0.
    // GBPA does not apply while SMMUEN is 1; disabling makes every stream follow it at once.
    let gbpa = rig.r32(o::GBPA);
    rig.w32(o::GBPA, gbpa | 1 << 31 | 1 << 20);
    assert_eq!(
        rig.r32(o::GBPA),
        1 << 20 | 1 << 12,
        "UPDATE completes at once"
    );
    assert!(rig.phys.take().is_empty());
    rig.w32(o::CR0, 0);
    let mut expected: Vec<PhysOp> = STREAMS
        .iter()
        .map(|&s| PhysOp::Ste(s, Ste::abort()))
        .collect();
    expected.push(PhysOp::Sync);
    assert_eq!(rig.phys.take(), expected);
    assert!(rig.smmu.live_streams().next().is_none());
    // Cached configuration is gone: a CFGI_STE while disabled writes nothing.
    rig.w32(o::CR0, 1 << 3);
    rig.issue(&[cmd::cfgi_ste(0x10), cmd::SYNC_SEV]);
    assert_eq!(rig.phys.take(), [PhysOp::Sync]);

    // New tables in the crash region (here: a linear table elsewhere), enable: the new table
    // applies, the old one is never read again.
    let new_table = 0x4700_0000;
    rig.w32(o::CR0, 0);
    rig.w64(o::STRTAB_BASE, new_table);
    rig.w32(o::STRTAB_BASE_CFG, 9); // linear, 512 STEs
    rig.mem
        .poke_words(new_table + 64 * 0x11, &s1_ste(0x4710_0000));
    rig.mem.clear_log();
    rig.w32(o::CR0, 1 << 3 | 1);
    let log = rig.phys.take();
    assert_eq!(log.len(), STREAMS.len() + 1);
    assert!(log.contains(&PhysOp::Ste(0x10, Ste::abort())));
    assert!(matches!(log[2], PhysOp::Ste(0x11, ste) if ste.0[0] == 1 | 0b111 << 1 | 0x4710_0000));
    assert!(
        rig.mem
            .accesses()
            .iter()
            .all(|a| a.ipa >= new_table && a.ipa < new_table + 512 * 64)
    );
}

#[test]
fn guarded_registers_and_access_sizes() {
    let mut rig = Rig::new();
    reset_and_enable(&mut rig);
    rig.take_notes();
    // Guarded while enabled: ignored and noted.
    rig.w64(o::STRTAB_BASE, 0x4400_0000);
    rig.w32(o::STRTAB_BASE_CFG, 0);
    rig.w64(o::CMDQ_BASE, 0x4400_0000);
    rig.w32(o::CMDQ_CONS, 0x55);
    rig.w64(o::EVTQ_BASE, 0x4400_0000);
    rig.w32(o::EVTQ_PROD, 0x55);
    rig.w32(o::CR1, 0);
    rig.w32(o::CR2, 0);
    rig.w32(o::GBPA, 0); // without UPDATE
    rig.w32(o::IDR0, 0);
    assert_eq!(rig.take_notes().len(), 10);
    assert_eq!(rig.r64(o::STRTAB_BASE), 1 << 62 | STRTAB);
    assert_eq!(rig.r64(o::CMDQ_BASE), 1 << 62 | CMDQ | 8);
    assert_eq!(rig.r32(o::CR1), 0xd75);
    // 32-bit halves of a 64-bit register.
    rig.w32(o::CR0, 0);
    rig.w32(o::STRTAB_BASE, 0x1234_5678);
    rig.w32(o::STRTAB_BASE + 4, 0x4000_00ab);
    assert_eq!(rig.r64(o::STRTAB_BASE), 0x4000_00ab_1234_5640);
    assert_eq!(rig.r32(o::STRTAB_BASE + 4), 0x4000_00ab);
    // Unknown offsets and unsupported sizes: RAZ/WI, noted.
    assert_eq!(rig.smmu.read(0x30, 4).value, 0);
    assert!(matches!(
        rig.smmu.read(0x30, 4).note,
        Some(Note::UnknownRegister { offset: 0x30, .. })
    ));
    assert!(matches!(
        rig.smmu.read(o::CR0, 8).note,
        Some(Note::BadAccess { .. })
    ));
    rig.write(0x2_0000, 4, 1);
    rig.write(o::CR0, 1, 1);
    assert_eq!(rig.r32(o::CR0), 0);
    assert_eq!(rig.take_notes().len(), 2);
    // Features not offered read as zero without a note.
    assert_eq!(
        rig.smmu.read(o::PRIQ_BASE, 8),
        crate::emul::MmioRead {
            value: 0,
            note: None
        }
    );
    // EVENTQ_PROD answers at page 1 and at its page 0 alias.
    assert_eq!(rig.r32(o::EVTQ_PROD), rig.r32(o::page0_alias::EVTQ_PROD));
}

#[test]
fn physical_sync_failure_holds_the_host_sync() {
    let mut rig = Rig::new();
    reset_and_enable(&mut rig);
    let before = rig.r32(o::CMDQ_CONS);
    rig.phys.fail_sync = true;
    rig.issue(&[
        cmd::tlbi_nh_asid(0, 3),
        cmd::SYNC_SEV,
        cmd::tlbi_nh_asid(0, 4),
    ]);
    // CONS stops at the host's CMD_SYNC, without an error: the host keeps polling.
    assert_eq!(rig.r32(o::CMDQ_CONS), before + 1);
    assert_eq!(rig.r32(o::GERROR), rig.r32(o::GERRORN));
    assert!(matches!(
        rig.take_notes().as_slice(),
        [Note::Physical { .. }]
    ));
    // Once the physical SMMU recovers, the next PROD write completes it.
    rig.phys.fail_sync = false;
    rig.phys.take();
    let prod = rig.r32(o::CMDQ_PROD);
    rig.w32(o::CMDQ_PROD, prod);
    assert_eq!(rig.r32(o::CMDQ_CONS), prod);
}

#[test]
fn stalls_are_forbidden_on_a_stalling_smmu() {
    // MMU-700: stall and terminate. The host sees terminate-only, so the nested STE sets
    // S1STALLD: a CD asking to stall is C_BAD_CD in hardware, as it is ILLEGAL for the host.
    let mmu700 = crate::smmu::regs::SmmuFeatures::from_idr(
        0x080f_7e3f,
        0x0e73_9d18,
        0x0000_003c,
        0x0040_0075,
    );
    let mut rig = Rig::with(mmu700, &[0x10]);
    rig.w64(o::STRTAB_BASE, STRTAB);
    rig.w32(o::STRTAB_BASE_CFG, 8);
    rig.mem.poke_words(STRTAB + 64 * 0x10, &s1_ste(CD_TABLE));
    rig.w32(o::CR0, 1);
    match rig.phys.take().as_slice() {
        [PhysOp::Ste(0x10, ste), PhysOp::Sync] => {
            assert_eq!(ste.0[1] >> 27 & 1, 1, "S1STALLD");
            assert_eq!(ste.config(), crate::smmu::ste::StreamConfig::Nested);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn event_routing() {
    use crate::emul::EventRoute;
    use crate::smmu::event::{AccessAttrs, Event, FaultClass, Origin, TranslationFault};
    let mut rig = Rig::new();
    reset_and_enable(&mut rig);
    rig.mem.poke_words(STRTAB, &[L2_GROUP0 | 9]);
    rig.mem.poke_words(L2_GROUP0 + 64 * 0x10, &s1_ste(CD_TABLE));
    rig.issue(&[cmd::cfgi_ste(0x10), cmd::SYNC_SEV]);
    let fault = |sid, stage2| {
        Event::Translation(TranslationFault {
            origin: Origin::stream(sid),
            stag: 0,
            stall: false,
            access: AccessAttrs::default(),
            nsipa: false,
            stage2,
            class: FaultClass::Input,
            ttrnw: false,
            input_addr: 0x1000,
            ipa: crate::smmu::Ipa(0),
        })
    };
    // The host's stage 1 fault on its nested stream: the host's.
    assert_eq!(rig.smmu.route(&fault(0x10, false)), EventRoute::Host);
    // Stage 2 (the firewall, or the fence): Portcullis'.
    assert_eq!(rig.smmu.route(&fault(0x10, true)), EventRoute::Portcullis);
    // A stream the emulation does not configure, or an aborted one: Portcullis'.
    assert_eq!(rig.smmu.route(&fault(0x99, false)), EventRoute::Portcullis);
    assert_eq!(rig.smmu.route(&fault(0x08, false)), EventRoute::Portcullis);
    // A bad CD of the host: the host's. A bad physical STE: Portcullis'.
    let bad_cd = Event::BadCd {
        origin: Origin::stream(0x10),
    };
    assert_eq!(rig.smmu.route(&bad_cd), EventRoute::Host);
    let bad_ste = Event::BadSte {
        origin: Origin::stream(0x10),
    };
    assert_eq!(rig.smmu.route(&bad_ste), EventRoute::Portcullis);
    // Forwarding a host record lands it in the host's queue as is.
    let raw = bad_cd.encode();
    rig.smmu.deliver_record(raw, &mut rig.mem);
    assert_eq!(rig.events(), [raw]);
}
