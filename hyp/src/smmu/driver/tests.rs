//! The driver against the SMMU model of `model.rs`.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;

use platform::addr::PhysRange;
use proptest::prelude::*;

use super::*;
use crate::smmu::cmd::{CommandError, TlbiScope};
use crate::smmu::faults::{FaultBook, FaultRecord};
use crate::smmu::model::{self, Barrier, Injected, Model, ModelDma, ModelMmio, Trace};
use crate::smmu::regs::{CR0, GERROR, STRTAB_BASE_CFG, offset};
use crate::smmu::ste::{STE2, STE3};
use crate::smmu::{Ipa, Pa};
use crate::stage2::{AddressMap, Mode, Stage2Table, dma_policy};

type Driver = SmmuDriver<ModelMmio, ModelDma>;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn r(start: u64, size: u64) -> PhysRange {
    PhysRange::new(start, size).expect("test range")
}

/// QEMU virt with 1 GiB of RAM, as in the stage-2 tests.
fn qemu_map(ipa_bits: u32) -> AddressMap {
    AddressMap {
        ram: vec![r(0x4000_0000, GIB)],
        hyp: r(0x4020_0000, 0x0200_0000),
        crash: Some(r(0x7c00_0000, 64 * MIB)),
        smmu: Some(r(0x0905_0000, 0x2_0000)),
        its_doorbells: vec![r(0x0809_0000, 0x1000)],
        devices: vec![r(0x0900_0000, 0x1000)],
        trapped: Vec::new(),
        report: None,
        ipa_bits,
    }
}

fn table(mode: Mode, ipa_bits: u32, vmid: u16) -> Stage2Table {
    let map = qemu_map(ipa_bits);
    Stage2Table::build(&dma_policy(&map, mode), ipa_bits, vmid).expect("policy builds")
}

fn probe(model: &Model) -> Driver {
    let mut d = SmmuDriver::probe(model.mmio(), model.dma()).expect("probe");
    d.set_poll_limit(10_000);
    d
}

fn up(features: SmmuFeatures, max_sid: StreamId) -> (Model, Driver) {
    let model = Model::new(features);
    let mut d = probe(&model);
    d.init(max_sid).expect("init");
    assert_no_violations(&model);
    (model, d)
}

fn assert_no_violations(model: &Model) {
    let v = model.violations();
    assert!(v.is_empty(), "model violations: {v:#?}");
}

fn writes(trace: &[Trace]) -> Vec<(usize, u64)> {
    trace
        .iter()
        .filter_map(|t| match *t {
            Trace::Write32 { off, value } => Some((off, u64::from(value))),
            Trace::Write64 { off, value } => Some((off, value)),
            _ => None,
        })
        .collect()
}

fn translation_fault(sid: StreamId, addr: u64, write: bool) -> [u64; 4] {
    crate::smmu::event::stage2_translation_fault(sid, addr, write).encode()
}

fn since(model: &Model, mark: usize) -> Vec<Trace> {
    model.trace()[mark..].to_vec()
}

fn executed_since(model: &Model, mark: usize) -> Vec<Command> {
    model.executed()[mark..].to_vec()
}

const SYNC: Command = Command::Sync(SyncCommand::POLL);

/// The QEMU-like model with a 48-bit OAS: on the host the "physical" address of a stage-2 table
/// is its heap address, up to 47 bits, which a 44-bit SMMU could not reach (and
/// [`stage2_config`] rightly refuses).
fn features() -> SmmuFeatures {
    let mut f = model::qemu_features();
    f.oas_bits = 48;
    f
}

#[test]
fn bring_up_order() {
    let model = Model::new(model::qemu_features());
    let mut d = probe(&model);
    let report = d.init(0xffff).expect("init");
    assert_no_violations(&model);
    let trace = model.trace();
    let w = writes(&trace);
    // GBPA = abort, with Update, before anything else; QEMU reset it to bypass.
    assert_eq!(w[0].0, offset::GBPA);
    assert_eq!(w[0].1 & 0x8010_0000, 0x8010_0000);
    assert_eq!(
        model.gbpa() & GBPA::ABORT::SET.value,
        GBPA::ABORT::SET.value
    );
    assert_eq!(report.previous_gbpa, 0);
    // Then everything off, interrupts off.
    assert_eq!(w[1], (offset::CR0, 0));
    assert!(w.contains(&(offset::IRQ_CTRL, 0)));
    let at = |off: usize, bit: u64| {
        w.iter()
            .position(|&(o, v)| o == off && (bit == 0 || v & bit != 0))
            .unwrap_or_else(|| panic!("no write to {off:#x} with {bit:#x}"))
    };
    let cmdqen = at(offset::CR0, CR0::CMDQEN::SET.value.into());
    let evtqen = at(offset::CR0, CR0::EVTQEN::SET.value.into());
    let smmuen = at(offset::CR0, CR0::SMMUEN::SET.value.into());
    // The tables exist before anything that uses them is enabled, enables go one at a time.
    assert!(at(offset::STRTAB_BASE, 0) < smmuen && at(offset::STRTAB_BASE_CFG, 0) < smmuen);
    assert!(at(offset::CMDQ_BASE, 0) < cmdqen && at(offset::EVTQ_BASE, 0) < evtqen);
    assert!(at(offset::CR1, 0) < cmdqen && at(offset::CR2, 0) < cmdqen);
    assert!(cmdqen < evtqen && evtqen < smmuen);
    assert_eq!(w[cmdqen].1, 0b1000);
    assert_eq!(w[evtqen].1, 0b1100);
    assert_eq!(w[smmuen].1, 0b1101);
    assert_eq!(model.cr0ack(), 0b1101);
    // The invalidations, one SYNC, all before SMMUEN.
    let smmuen_in_trace = trace
        .iter()
        .position(|t| matches!(t, Trace::Write32 { off: offset::CR0, value } if value & 1 != 0))
        .expect("SMMUEN write");
    let before: Vec<Command> = trace[..smmuen_in_trace]
        .iter()
        .filter_map(|t| match t {
            Trace::Exec(c) => Some(*c),
            _ => None,
        })
        .collect();
    assert_eq!(before, [Command::CfgiAll, Command::TlbiNsnhAll, SYNC]);
    assert_eq!(model.executed().len(), 3);
    // CR1: WB/WB/ISH for queues and tables; CR2: RECINVSID, no PTM without BTM, E2H = 0.
    assert_eq!(model.cr1(), 0xd75);
    assert_eq!(model.cr2(), 0b010);
    // Two-level (SIDSIZE 16 > 8), SPLIT 8, the Command queue capped at 2^8, the Event queue at
    // 2^12 (room for a flood of refused DMA between two drains).
    assert_eq!(
        report.stream_table,
        StreamTableLayout {
            log2_size: 16,
            format: StreamTableFormat::TwoLevel { split: 8 }
        }
    );
    assert_eq!((report.cmdq_log2, report.evtq_log2), (8, 12));
    assert_eq!(
        w[at(offset::STRTAB_BASE_CFG, 0)].1 as u32,
        (STRTAB_BASE_CFG::FMT::TwoLevel
            + STRTAB_BASE_CFG::SPLIT.val(8)
            + STRTAB_BASE_CFG::LOG2SIZE.val(16))
        .value
    );
    assert!(alloc::format!("{report}").starts_with("SMMU up: stream table 2-level 16b"));
    assert_eq!(d.init(0xffff), Err(SmmuError::AlreadyInitialized));
}

#[test]
fn bring_up_with_hyp_btm_and_stale_errors() {
    let mut f = model::qemu_features();
    f.hyp = true;
    f.btm = true;
    let model = Model::new(f);
    // A previous owner left a command error and an event queue abort active.
    let stale = (GERROR::CMDQ_ERR::SET + GERROR::EVTQ_ABT_ERR::SET).value;
    model.raise_gerror(stale);
    let mut d = probe(&model);
    let report = d.init(0xff).expect("init");
    assert_no_violations(&model);
    assert_eq!(report.stale_errors, GlobalErrors(stale));
    assert_eq!(
        alloc::format!("{}", report.stale_errors),
        "CMDQ_ERR EVTQ_ABT_ERR"
    );
    assert_eq!(
        model.executed(),
        [
            Command::CfgiAll,
            Command::TlbiNsnhAll,
            Command::TlbiEl2All,
            SYNC
        ]
    );
    assert_eq!(model.cr2(), 0b110);
    // 8 StreamID bits: linear.
    assert_eq!(report.stream_table.format, StreamTableFormat::Linear);
    assert!(d.global_errors().is_empty());
    model.raise_gerror(GERROR::SFM_ERR::SET.value);
    assert_eq!(alloc::format!("{}", d.global_errors()), "SFM_ERR");
    assert!(d.global_errors().is_empty());
}

#[test]
fn probe_requires_what_portcullis_needs() {
    let reject = |edit: fn(&mut SmmuFeatures), what: &str| {
        let mut f = model::qemu_features();
        edit(&mut f);
        let model = Model::new(f);
        match SmmuDriver::probe(model.mmio(), model.dma()) {
            Err(SmmuError::Unsupported(w)) => assert!(w.contains(what), "{w}"),
            other => panic!("expected Unsupported({what}), got {other:?}"),
        }
    };
    reject(|f| f.stage2 = false, "stage 2");
    reject(|f| f.table_formats = TableFormats::AArch32, "AArch64");
    reject(|f| f.gran4k = false, "4 KiB");
    reject(|f| f.coherent = false, "COHACC");
    reject(|f| f.endianness = TableEndianness::Big, "little-endian");
    reject(|f| f.tables_preset = true, "PRESET");
    let model = Model::new(model::qemu_features());
    let d = probe(&model);
    assert_eq!(d.features(), &model::qemu_features());
    // Nothing written by probe.
    assert!(writes(&model.trace()).is_empty());
    let e = SmmuError::Unsupported("stage 2 translation (IDR0.S2P)");
    assert_eq!(
        alloc::format!("{e}"),
        "SMMU unsupported: no stage 2 translation (IDR0.S2P)"
    );
}

#[test]
fn stream_table_layouts() {
    let f = model::qemu_features();
    let layout = |f: &SmmuFeatures, max| stream_table_layout(f, max);
    assert_eq!(
        layout(&f, 0xff),
        Ok(StreamTableLayout {
            log2_size: 8,
            format: StreamTableFormat::Linear
        })
    );
    assert_eq!(
        layout(&f, 0x100).map(|l| l.format),
        Ok(StreamTableFormat::TwoLevel { split: 8 })
    );
    // Clamped to SIDSIZE.
    assert_eq!(layout(&f, u32::MAX).map(|l| l.log2_size), Ok(16));
    let mut small = f;
    small.sid_bits = 6;
    assert_eq!(
        layout(&small, 0xffff),
        Ok(StreamTableLayout {
            log2_size: 6,
            format: StreamTableFormat::Linear
        })
    );
    let mut no2l = f;
    no2l.two_level_strtab = false;
    no2l.sid_bits = 24;
    assert_eq!(layout(&no2l, 0xffff).map(|l| l.log2_size), Ok(16));
    assert_eq!(
        layout(&no2l, 0x1_ffff),
        Err(SmmuError::StreamTableTooLarge { sid_bits: 17 })
    );
    let mut wide = f;
    wide.sid_bits = 32;
    assert_eq!(
        layout(&wide, u32::MAX),
        Err(SmmuError::StreamTableTooLarge { sid_bits: 32 })
    );
    assert_eq!(layout(&wide, 0xff_ffff).map(|l| l.log2_size), Ok(24));
}

/// The STE fields for a policy table, by absolute bit number (section 5.2).
fn check_policy_ste(ste: &Ste, t: &Stage2Table, f: &SmmuFeatures) {
    assert_eq!(ste.config(), StreamConfig::Stage2);
    assert_eq!(ste.s2ttb(), t.root_pa());
    assert_eq!(ste.vmid(), t.vmid());
    let w2 = ste.word2();
    assert_eq!(w2.read(STE2::S2T0SZ), u64::from(64 - t.ipa_bits()));
    let sl0 = if t.start_level() == 0 { 0b10 } else { 0b01 };
    assert_eq!(w2.read(STE2::S2SL0), sl0);
    assert_eq!(w2.read(STE2::S2TG), 0b00);
    assert_eq!(
        w2.read(STE2::S2PS),
        u64::from(crate::smmu::regs::address_size_encoding(f.oas_bits.min(48)).expect("OAS"))
    );
    assert!(w2.is_set(STE2::S2AA64) && w2.is_set(STE2::S2R) && w2.is_set(STE2::S2PTW));
    assert!(!w2.is_set(STE2::S2AFFD) && !w2.is_set(STE2::S2S) && !w2.is_set(STE2::S2ENDI));
    assert_eq!(
        (
            w2.read(STE2::S2IR0),
            w2.read(STE2::S2OR0),
            w2.read(STE2::S2SH0)
        ),
        (0b01, 0b01, 0b11)
    );
    assert_eq!(ste.word3().read(STE3::S2SL0_2), 0);
}

#[test]
fn policy_ste_matches_the_table() {
    let f = features();
    // 40 bits: level-1 start with two concatenated tables.
    let t40 = table(Mode::Normal, 40, 1);
    assert_eq!((t40.start_level(), t40.root_tables()), (1, 2));
    check_policy_ste(&stage2_ste(&t40, &f).expect("40-bit policy"), &t40, &f);
    // 44 bits: level-0 start.
    let t44 = table(Mode::Normal, 44, 2);
    assert_eq!(t44.start_level(), 0);
    check_policy_ste(&stage2_ste(&t44, &f).expect("44-bit policy"), &t44, &f);
    // 48 bits do not fit QEMU's 44-bit IAS.
    let t48 = table(Mode::Normal, 48, 3);
    assert_eq!(
        stage2_config(&t48, &model::qemu_features()),
        Err(SmmuError::Stage2Mismatch {
            what: "IPA bits",
            value: 48,
            limit: 44
        })
    );
    // AArch32 support raises the IAS to 40 on a 36-bit-OAS SMMU.
    let mut small = f;
    small.oas_bits = 36;
    small.table_formats = TableFormats::Both;
    assert_eq!(ias_bits(&small), 40);
    // 16-bit VMIDs need VMID16.
    let mut vmid8 = f;
    vmid8.vmid16 = false;
    let t = table(Mode::Normal, 40, 0x100);
    assert!(matches!(
        stage2_config(&t, &vmid8),
        Err(SmmuError::Stage2Mismatch { what: "VMID", .. })
    ));
    // A root beyond the output size is refused (host heap addresses are above 4 GiB).
    let mut oas32 = f;
    oas32.oas_bits = 32;
    let t32 = table(Mode::Normal, 32, 1);
    if t32.root_pa().0 >> 32 != 0 {
        assert!(matches!(
            stage2_config(&t32, &oas32),
            Err(SmmuError::Stage2Mismatch {
                what: "table root",
                ..
            })
        ));
    }
    // A forced-stall SMMU gets S2S.
    let mut forced = f;
    forced.stall_model = StallModel::StallForced;
    assert!(stage2_config(&t40, &forced).expect("config").stall);
}

#[test]
fn linear_table_every_sid_gets_the_policy() {
    let mut f = features();
    f.sid_bits = 6;
    let (model, mut d) = up(f, 0xffff);
    assert_eq!(
        d.strtab_layout(),
        Some(StreamTableLayout {
            log2_size: 6,
            format: StreamTableFormat::Linear
        })
    );
    let t = table(Mode::Normal, 40, 1);
    let ste = stage2_ste(&t, &f).expect("policy");
    model.watch([0, 5, 63]);
    let mark = model.executed().len();
    let report = d.install_streams(0..64, &ste).expect("install");
    assert_no_violations(&model);
    // Invalid -> valid: filled, invalidated, then V set, invalidated: two SYNCs for all 64.
    assert_eq!((report.made, report.syncs), (64, 2));
    assert_eq!(
        executed_since(&model, mark),
        [Command::CfgiAll, SYNC, Command::CfgiAll, SYNC]
    );
    for sid in 0..64 {
        let hw = model.ste(sid).expect("reachable");
        assert_eq!(hw, ste, "sid {sid}");
        check_policy_ste(&hw, &t, &f);
    }
    assert_eq!(
        d.install_streams([64], &ste),
        Err(SmmuError::StreamIdOutOfRange {
            sid: 64,
            sid_bits: 6
        })
    );
    // Installing again changes nothing and costs nothing.
    let mark = model.executed().len();
    let again = d.install_streams(0..64, &ste).expect("install");
    assert_eq!((again.unchanged, again.syncs), (64, 0));
    assert_eq!(executed_since(&model, mark), []);
}

#[test]
fn two_level_table_covers_the_iommu_map() {
    let f = features();
    let (model, mut d) = up(f, 0xffff);
    let t = table(Mode::Normal, 40, 1);
    let ste = stage2_ste(&t, &f).expect("policy");
    model.watch([0, 0x1234, 0xffff]);
    // QEMU virt: iommu-map = <0x0 &smmu 0x0 0x10000>.
    let mark = model.executed().len();
    let report = d.install_streams(0..0x1_0000, &ste).expect("install");
    assert_no_violations(&model);
    assert_eq!(
        (report.new_tables, report.in_new_tables, report.syncs),
        (256, 0x1_0000, 1)
    );
    let executed = executed_since(&model, mark);
    assert_eq!(executed.len(), 257);
    for (l1, cmd) in executed[..256].iter().enumerate() {
        assert_eq!(
            *cmd,
            Command::CfgiSteRange {
                sid: (l1 as u32) << 8,
                range: 7
            }
        );
        assert_eq!(model.l1std(l1).map(|d| d.span), Some(9));
    }
    for sid in 0..0x1_0000 {
        assert_eq!(model.ste(sid), Some(ste), "sid {sid:#x}");
    }
    check_policy_ste(&ste, &t, &f);
    // The watched STEs were never seen invalid-but-reachable: they appear whole.
    for t in model.trace() {
        if let Trace::Ste { ste: Some(s), .. } = t {
            assert_eq!(s, ste);
        }
    }
}

#[test]
fn two_level_table_only_where_needed() {
    let f = features();
    let (model, mut d) = up(f, 0xffff);
    let ste = stage2_ste(&table(Mode::Normal, 40, 1), &f).expect("policy");
    // iommu-map = <0x100 &smmu 0x100 0x300>: buses 1..=3.
    let report = d.install_streams(0x100..0x400, &ste).expect("install");
    assert_eq!(report.new_tables, 3);
    assert_eq!(model.l1std(0).map(|d| d.span), Some(0));
    assert_eq!(model.l1std(4).map(|d| d.span), Some(0));
    assert_eq!(model.ste(0xff), None);
    assert_eq!(model.ste(0x100), Some(ste));
    assert_eq!(model.ste(0x3ff), Some(ste));
    assert_eq!(d.read_ste(0xff), Ok(Ste::INVALID));
    assert_eq!(d.read_ste(0x3ff), Ok(ste));
    // A StreamID in an existing table, invalid so far, is filled then made valid.
    let mark = model.executed().len();
    model.watch([0x155]);
    let r2 = d.write_ste(0x155, &Ste::abort()).expect("write");
    assert_eq!(r2.break_before_make, 1);
    let r3 = d.write_ste(0x155, &ste).expect("write");
    assert_eq!(r3.break_before_make, 1);
    assert_no_violations(&model);
    assert_eq!(
        executed_since(&model, mark)
            .iter()
            .filter(|c| **c == SYNC)
            .count(),
        6
    );
}

/// The physical table of a machine with one device on the root bus (the edu at 00:01.0, SID 8):
/// one level 2 table; a stray StreamID elsewhere is refused with C_BAD_STREAMID, one in the
/// existing level 2 table with C_BAD_STE; a StreamID the host configures gets its level 2 table
/// on demand, within the budget; past the budget, or without memory, nothing changes and the
/// error says why.
#[test]
fn level2_tables_only_for_existing_or_configured_streams() {
    let f = features();
    let (model, mut d) = up(f, 0xffff);
    let t: &'static Stage2Table = Box::leak(Box::new(table(Mode::Normal, 40, 2)));
    model.register_stage2(t);
    let ste = stage2_ste(t, &f).expect("policy");
    let report = d.install_streams([8], &ste).expect("install");
    assert_eq!((report.new_tables, d.l2_tables()), (1, 1));
    d.set_l2_budget(2);
    assert!(d.covers(8) && d.covers(0xff) && !d.covers(0x100));
    assert!(matches!(
        model.transact(8, 0x5000_0000, true),
        model::Transaction::Landed(_)
    ));

    let mut drained = Vec::new();
    let mut drain = |d: &mut Driver| {
        drained.clear();
        d.drain_events(&mut |r| drained.push(r.id()))
            .expect("drain");
        drained.clone()
    };
    assert_eq!(
        model.transact(0x1234, 0x5000_0000, true),
        model::Transaction::Aborted
    );
    assert_eq!(drain(&mut d), vec![EventId::C_BAD_STREAMID]);
    assert_eq!(
        model.transact(9, 0x5000_0000, true),
        model::Transaction::Aborted
    );
    assert_eq!(drain(&mut d), vec![EventId::C_BAD_STE]);

    // The host configures SID 0x105 (behind a bridge, bus 1): its level 2 table on demand.
    d.reserve_stream(0x105).expect("within the budget");
    assert!(d.covers(0x105) && d.covers(0x1ff));
    assert_eq!(model.l1std(1).map(|l| l.span), Some(9));
    d.write_ste(0x105, &ste).expect("write");
    assert!(matches!(
        model.transact(0x105, 0x5000_0000, false),
        model::Transaction::Landed(_)
    ));
    assert_no_violations(&model);

    // Past the budget: refused, nothing linked, the StreamID still refused with a record.
    assert_eq!(
        d.reserve_stream(0x205),
        Err(SmmuError::StreamTableFull {
            sid: 0x205,
            tables: 2
        })
    );
    assert_eq!(
        d.write_ste(0x205, &ste),
        Err(SmmuError::StreamTableFull {
            sid: 0x205,
            tables: 2
        })
    );
    assert_eq!(model.l1std(2).map(|l| l.span), Some(0));
    assert_eq!(d.l2_tables(), 2);
    assert_eq!(
        model.transact(0x205, 0x5000_0000, true),
        model::Transaction::Aborted
    );
    assert_eq!(drain(&mut d), vec![EventId::C_BAD_STREAMID]);

    // Within the budget but out of memory: refused the same way, nothing half-made.
    d.set_l2_budget(4);
    model.state().knobs.allocs_left = Some(0);
    assert_eq!(
        d.reserve_stream(0x305),
        Err(SmmuError::OutOfMemory { bytes: 0x4000 })
    );
    assert_eq!(
        d.write_stes(&[0x305, 0x405], &ste).map(|_| ()),
        Err(SmmuError::OutOfMemory { bytes: 0x4000 })
    );
    assert!(!d.covers(0x305) && !d.covers(0x405));
    assert_eq!(model.l1std(3).map(|l| l.span), Some(0));
    model.state().knobs.allocs_left = None;
    d.write_stes(&[0x305, 0x405], &ste).expect("memory again");
    assert!(d.covers(0x305) && d.covers(0x405));
    assert_no_violations(&model);
}

/// The default STE (the host's SMMU disabled with GBPA bypass): every StreamID without a level 2
/// table of its own gets it through one shared table, a device behind a bridge included; taken
/// away, those StreamIDs are refused with C_BAD_STREAMID again. The tables written before they
/// are linked (the model checks), one CMD_CFGI_ALL per change.
#[test]
fn default_ste_through_one_shared_level2_table() {
    let f = features();
    let (model, mut d) = up(f, 0xffff);
    let t: &'static Stage2Table = Box::leak(Box::new(table(Mode::Normal, 40, 2)));
    model.register_stage2(t);
    let ste = stage2_ste(t, &f).expect("policy");
    d.install_streams([8], &ste).expect("install");
    let mark = model.executed().len();
    d.set_default_ste(Some(&ste)).expect("default");
    assert_eq!(executed_since(&model, mark), [Command::CfgiAll, SYNC]);
    assert_eq!(d.default_streams(), 255 * 256);
    assert_eq!(d.l2_tables(), 1);
    let landed = |sid| {
        matches!(
            model.transact(sid, 0x5000_0000, true),
            model::Transaction::Landed(_)
        )
    };
    assert!(landed(0x105) && landed(0xffff) && landed(8));
    // The root bus's own table: its other StreamIDs have no device and no STE.
    assert!(!landed(9));
    // Setting it again changes nothing.
    let mark = model.executed().len();
    d.set_default_ste(Some(&ste)).expect("default");
    assert!(executed_since(&model, mark).is_empty());
    // A StreamID the host configures later gets a table of its own.
    d.write_ste(0x205, &Ste::abort()).expect("write");
    assert_eq!(d.default_streams(), 254 * 256);
    assert!(!landed(0x205) && landed(0x105));
    d.set_default_ste(None).expect("no default");
    assert_eq!(d.default_streams(), 0);
    assert!(!landed(0x105) && landed(8));
    let mut ids = Vec::new();
    d.drain_events(&mut |r| ids.push(r.id())).expect("drain");
    assert_eq!(ids.last(), Some(&EventId::C_BAD_STREAMID));
    assert_no_violations(&model);
}

/// The states a watched STE went through and the commands, from the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Valid(Ste),
    Invalid,
    Cfgi,
    Sync,
    Tlbi,
}

fn steps(trace: &[Trace], sid: StreamId) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    for t in trace {
        let step = match t {
            Trace::Ste { sid: s, ste } if *s == sid => match ste {
                Some(ste) if ste.config() != StreamConfig::Invalid => Step::Valid(*ste),
                _ => Step::Invalid,
            },
            Trace::Exec(Command::CfgiSte { sid: s, .. }) if *s == sid => Step::Cfgi,
            Trace::Exec(Command::CfgiAll) => Step::Cfgi,
            Trace::Exec(Command::Sync(_)) => Step::Sync,
            Trace::Exec(Command::TlbiS12Vmall { .. }) => Step::Tlbi,
            _ => continue,
        };
        // Consecutive fill states collapse into one.
        if step == Step::Invalid && out.last() == Some(&Step::Invalid) {
            continue;
        }
        out.push(step);
    }
    out
}

#[test]
fn one_word_change_is_made_in_place() {
    let f = features();
    let (model, mut d) = up(f, 0xffff);
    let a = stage2_ste(&table(Mode::Normal, 40, 1), &f).expect("policy");
    d.install_streams([5], &a).expect("install");
    model.watch([5]);
    // Only the VMID (word 2) changes.
    let mut b = a;
    b.0[2] = (b.0[2] & !0xffff) | 7;
    let mark = model.trace().len();
    let report = d.write_ste(5, &b).expect("write");
    assert_eq!((report.in_place, report.syncs), (1, 1));
    assert_no_violations(&model);
    assert_eq!(
        steps(&since(&model, mark), 5),
        [Step::Valid(b), Step::Cfgi, Step::Sync]
    );
    // Only the root (word 3) changes, under the same VMID: in place, plus a TLB invalidation
    // of that VMID.
    let crash = table(Mode::Crash, 40, 7);
    let mut c = b;
    c.0[3] = stage2_ste(&crash, &f).expect("policy").0[3];
    let mark = model.executed().len();
    let report = d.write_ste(5, &c).expect("write");
    assert_eq!(report.in_place, 1);
    assert_eq!(
        executed_since(&model, mark),
        [
            Command::CfgiSte { sid: 5, leaf: true },
            Command::TlbiS12Vmall { vmid: 7 },
            SYNC
        ]
    );
    assert_no_violations(&model);
}

#[test]
fn several_word_change_is_break_before_make() {
    let f = features();
    let (model, mut d) = up(f, 0xffff);
    let normal = table(Mode::Normal, 40, 1);
    let crash = table(Mode::Crash, 40, 2);
    let a = stage2_ste(&normal, &f).expect("policy");
    let c = stage2_ste(&crash, &f).expect("policy");
    assert!((0..8).filter(|&i| a.0[i] != c.0[i]).count() > 1);
    d.install_streams([5, 6], &a).expect("install");
    model.watch([5]);
    let mark = model.trace().len();
    let report = d.write_ste(5, &c).expect("write");
    assert_eq!((report.break_before_make, report.syncs), (1, 3));
    assert_no_violations(&model);
    // Break (V = 0, CFGI, SYNC), fill (new words, V still 0; CFGI, SYNC), make (V = 1, CFGI,
    // SYNC).
    assert_eq!(
        steps(&since(&model, mark), 5),
        [
            Step::Invalid,
            Step::Cfgi,
            Step::Sync,
            Step::Invalid,
            Step::Cfgi,
            Step::Sync,
            Step::Valid(c),
            Step::Cfgi,
            Step::Sync
        ]
    );
    // The break keeps the old words until invalidation completed; the neighbour is untouched.
    assert_eq!(model.ste(6), Some(a));
    // Valid -> invalid: break and fill only.
    let report = d.write_ste(5, &Ste::INVALID).expect("write");
    assert_eq!((report.break_before_make, report.syncs), (1, 2));
    assert_eq!(model.ste(5), Some(Ste::INVALID));
    // Invalid -> valid: fill then make.
    let mark = model.trace().len();
    let report = d.write_ste(5, &a).expect("write");
    assert_eq!((report.made, report.syncs), (1, 2));
    assert_eq!(
        steps(&since(&model, mark), 5),
        [
            Step::Invalid,
            Step::Cfgi,
            Step::Sync,
            Step::Valid(a),
            Step::Cfgi,
            Step::Sync
        ]
    );
    assert_no_violations(&model);
}

#[test]
fn command_queue_wraps_around() {
    let mut f = model::qemu_features();
    f.cmdq_log2 = 3;
    for lazy in [None, Some(1), Some(3)] {
        let (model, mut d) = up(f, 0xff);
        model.state().knobs.cmdq_per_poll = lazy;
        let mark = model.executed().len();
        let mut expected = Vec::new();
        for round in 0..60u32 {
            let cmds: Vec<Command> = (0..round % 13)
                .map(|i| Command::CfgiSte {
                    sid: round * 16 + i,
                    leaf: true,
                })
                .collect();
            d.submit(&cmds).expect("submit");
            expected.extend_from_slice(&cmds);
            expected.push(SYNC);
        }
        assert_eq!(executed_since(&model, mark), expected, "lazy {lazy:?}");
        assert_no_violations(&model);
        let stats = d.stats();
        assert_eq!(stats.syncs, 61);
        // Every CMDQ_PROD write follows a write barrier.
        let trace = model.trace();
        for (i, t) in trace.iter().enumerate() {
            if matches!(
                t,
                Trace::Write32 {
                    off: offset::CMDQ_PROD,
                    ..
                }
            ) && i > 0
            {
                let last = trace[..i].iter().rev().find(|t| {
                    matches!(
                        t,
                        Trace::Barrier(_)
                            | Trace::Write32 {
                                off: offset::CMDQ_PROD,
                                ..
                            }
                    )
                });
                assert!(
                    matches!(last, Some(Trace::Barrier(Barrier::Write)) | None),
                    "CMDQ_PROD without a barrier at {i}"
                );
            }
        }
    }
}

/// The model's registers, counting `CMDQ_CONS` reads.
struct CountingMmio(ModelMmio, Rc<Cell<u32>>);

impl SmmuMmio for CountingMmio {
    fn read32(&mut self, offset: usize) -> u32 {
        if offset == offset::CMDQ_CONS {
            self.1.set(self.1.get() + 1);
        }
        self.0.read32(offset)
    }
    fn write32(&mut self, offset: usize, value: u32) {
        self.0.write32(offset, value);
    }
    fn read64(&mut self, offset: usize) -> u64 {
        self.0.read64(offset)
    }
    fn write64(&mut self, offset: usize, value: u64) {
        self.0.write64(offset, value);
    }
}

/// A batch that fits in the room the last `CMDQ_CONS` read showed is written without reading
/// `CMDQ_CONS` first: a strict unmap's TLBI + CMD_SYNC costs one `CMDQ_PROD` write and one
/// `CMDQ_CONS` read (the sync's). A batch larger than the room known still waits for space.
#[test]
fn a_batch_that_fits_reads_cmdq_cons_once() {
    let mut f = model::qemu_features();
    f.cmdq_log2 = 3;
    let model = Model::new(f);
    let reads = Rc::new(Cell::new(0));
    let mut d =
        SmmuDriver::probe(CountingMmio(model.mmio(), reads.clone()), model.dma()).expect("probe");
    d.set_poll_limit(10_000);
    d.init(0xff).expect("init");
    let tlbi = Command::TlbiNhVa {
        vmid: 2,
        asid: 1,
        va: 0x4000_0000,
        scope: TlbiScope::single(true),
    };
    for _ in 0..20 {
        reads.set(0);
        d.submit(&[tlbi]).expect("submit");
        assert_eq!(reads.get(), 1, "CMDQ_CONS reads for TLBI + CMD_SYNC");
    }
    // Nine commands and a sync in a queue of eight: room is waited for (and read) on the way.
    let mark = model.executed().len();
    reads.set(0);
    d.submit(&[tlbi; 9]).expect("submit");
    assert!(reads.get() >= 2);
    assert_eq!(executed_since(&model, mark).len(), 10);
    assert_no_violations(&model);
}

#[test]
fn illegal_command_is_skipped_and_named() {
    let (model, mut d) = up(model::qemu_features(), 0xff);
    let mark = model.executed().len();
    // No IDR0.Hyp on this SMMU: CMD_TLBI_EL2_ALL is CERROR_ILL.
    let err = d
        .submit(&[
            Command::CfgiSte { sid: 1, leaf: true },
            Command::TlbiEl2All,
            Command::CfgiSte { sid: 2, leaf: true },
        ])
        .expect_err("refused");
    let SmmuError::CommandFailed(failure) = err else {
        panic!("not a command failure: {err:?}");
    };
    assert_eq!(failure.code, 0x01);
    assert_eq!(failure.command, Some(Command::TlbiEl2All));
    assert!(matches!(
        failure.reason,
        Some(CommandError::NotSupported { .. })
    ));
    let text = alloc::format!("{err}");
    assert!(
        text.contains("CERROR_ILL") && text.contains("CMD_TLBI_EL2_ALL") && text.contains("EL2"),
        "{text}"
    );
    // The bad command became a CMD_SYNC, the rest of the batch ran.
    assert_eq!(
        executed_since(&model, mark),
        [
            Command::CfgiSte { sid: 1, leaf: true },
            SYNC,
            Command::CfgiSte { sid: 2, leaf: true },
            SYNC
        ]
    );
    {
        let s = model.state();
        assert_eq!(s.gerror, s.gerrorn);
    }
    assert_eq!(d.stats().command_errors, 1);
    d.submit(&[Command::CfgiAll]).expect("queue works again");
    // A range TLBI without IDR3.RIL, in a queue that has to wait for space.
    let mut f = model::qemu_features();
    f.ril = false;
    f.cmdq_log2 = 2;
    let (model, mut d) = up(f, 0xff);
    model.state().knobs.cmdq_per_poll = Some(1);
    let mut cmds = vec![Command::CfgiAll; 6];
    cmds[3] = Command::TlbiS2Ipa {
        vmid: 1,
        ipa: Ipa(0x4000_0000),
        scope: TlbiScope {
            leaf: true,
            granule: crate::smmu::cmd::TlbiGranule::K4,
            ttl: 3,
            num: 0,
            scale: 0,
        },
    };
    let mark = model.executed().len();
    let err = d.submit(&cmds).expect_err("refused");
    // Init left PROD at 3 (three commands): the fourth command lands in entry (3 + 3) % 4.
    assert!(
        matches!(err, SmmuError::CommandFailed(f) if f.index == 2),
        "{err:?}"
    );
    assert_eq!(executed_since(&model, mark).len(), 7);
    assert_no_violations(&model);
}

/// A drain that finds the Event queue empty costs one register access (the `EVENTQ_PROD` read):
/// `EVENTQ_CONS` is written only when it changes (records consumed, an overflow acknowledged).
/// Portcullis drains mostly empty queues, every 10 ms while the host traps.
#[test]
fn an_empty_drain_reads_evtq_prod_and_writes_nothing() {
    let mut f = model::qemu_features();
    f.evtq_log2 = 2;
    let (model, mut d) = up(f, 0xff);
    let since = |model: &Model, reads: usize, writes_before: usize| {
        (
            model.reads()[reads..].to_vec(),
            writes(&model.trace())[writes_before..].to_vec(),
        )
    };
    for _ in 0..3 {
        let (r0, w0) = (model.reads().len(), writes(&model.trace()).len());
        let report = d.drain_events(&mut |_| {}).expect("drain");
        assert_eq!((report.records, report.overflow), (0, false));
        assert_eq!(since(&model, r0, w0), (vec![offset::EVTQ_PROD], vec![]));
    }
    // Two records: CONS moves on by two, written once.
    for i in 0..2 {
        model.inject_event(translation_fault(8, 0x7c00_0000 + i * 0x1000, true));
    }
    let (r0, w0) = (model.reads().len(), writes(&model.trace()).len());
    assert_eq!(d.drain_events(&mut |_| {}).expect("drain").records, 2);
    assert_eq!(
        since(&model, r0, w0),
        (vec![offset::EVTQ_PROD], vec![(offset::EVTQ_CONS, 2)])
    );
    // Overflow with the queue drained to empty again: the acknowledgement alone is a change.
    for i in 0..5 {
        model.inject_event(translation_fault(9, i * 0x1000, false));
    }
    assert!(d.drain_events(&mut |_| {}).expect("drain").overflow);
    let (prod, cons) = model.evtq_prod_cons();
    assert_eq!(prod >> 31, cons >> 31, "overflow acknowledged");
    let (r0, w0) = (model.reads().len(), writes(&model.trace()).len());
    d.drain_events(&mut |_| {}).expect("drain");
    assert_eq!(since(&model, r0, w0).1, vec![]);
    assert_no_violations(&model);
}

#[test]
fn events_drain_with_wrap_and_overflow() {
    let mut f = model::qemu_features();
    f.evtq_log2 = 2;
    let (model, mut d) = up(f, 0xff);
    let mut seen = Vec::new();
    let mut collect = |r: EventRecord| seen.push(r);
    for i in 0..3 {
        assert_eq!(
            model.inject_event(translation_fault(8, 0x7c00_0000 + i * 0x1000, true)),
            Injected::Written
        );
    }
    let report = d.drain_events(&mut collect).expect("drain");
    assert_eq!((report.records, report.overflow), (3, false));
    // Fill the 4-entry queue (wrapping), then two more are lost.
    for i in 0..4 {
        assert_eq!(
            model.inject_event(translation_fault(9, i * 0x1000, false)),
            Injected::Written
        );
    }
    assert_eq!(
        model.inject_event(translation_fault(9, 0xdead_0000, false)),
        Injected::Overflow
    );
    assert_eq!(
        model.inject_event(translation_fault(9, 0xdead_1000, false)),
        Injected::Overflow
    );
    let report = d.drain_events(&mut collect).expect("drain");
    assert_eq!((report.records, report.overflow), (4, true));
    let (prod, cons) = model.evtq_prod_cons();
    assert_eq!(prod >> 31, cons >> 31, "overflow acknowledged");
    assert_eq!(prod & 0x7, cons & 0x7);
    // A Reserved event number is kept raw.
    let odd = [0x0000_0003_0000_0077, 1, 2, 3];
    assert_eq!(model.inject_event(odd), Injected::Written);
    let report = d.drain_events(&mut collect).expect("drain");
    assert_eq!((report.records, report.overflow), (1, false));
    assert_eq!(seen.len(), 8);
    assert_eq!(seen[0].id(), EventId::F_TRANSLATION);
    assert_eq!(seen[3].sid(), 9);
    assert_eq!(seen[7].raw, odd);
    assert!(matches!(seen[7].event, Err(EventError::ReservedType(0x77))));
    let addrs: Vec<u64> = seen[3..7]
        .iter()
        .map(|r| FaultRecord::from_raw(r.raw).addr)
        .collect();
    assert_eq!(addrs, [0, 0x1000, 0x2000, 0x3000]);
    let stats = d.stats();
    assert_eq!((stats.event_records, stats.event_overflows), (8, 1));
    // Barriers: PROD read, rmb, records, mb, CONS write.
    let trace = model.trace();
    let cons_write = trace
        .iter()
        .rposition(|t| {
            matches!(
                t,
                Trace::Write32 {
                    off: offset::EVTQ_CONS,
                    ..
                }
            )
        })
        .expect("CONS written");
    assert_eq!(trace[cons_write - 1], Trace::Barrier(Barrier::Full));
    assert_eq!(trace[cons_write - 2], Trace::Barrier(Barrier::Read));
    assert_no_violations(&model);
}

#[test]
fn drained_faults_feed_the_fault_book() {
    let f = features();
    let (model, mut d) = up(f, 0xffff);
    let mut book = FaultBook::new(2);
    for i in 0..5 {
        model.inject_event(translation_fault(0x08, 0x7c00_0000 + i * 0x1000, true));
    }
    model.inject_event(translation_fault(0x10, 0x4000_0000, false));
    let mut lines = Vec::new();
    d.drain_events(&mut |r| {
        let rec = FaultRecord::from_raw(r.raw);
        if book.record(rec) {
            lines.push(alloc::format!("{rec}"));
        }
    })
    .expect("drain");
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[0],
        "F_TRANSLATION sid 0x8: write at 0x7c000000 (stage 2)"
    );
    assert_eq!(book.ring.len(), 6);
    assert_eq!(
        book.streams.get(8).map(|s| (s.count, s.last_addr)),
        Some((5, 0x7c00_4000))
    );
    let summaries = book.console.summaries();
    assert_eq!(
        alloc::format!("{}", summaries[0]),
        "sid 0x8: … and 3 more faults"
    );
}

#[test]
fn stalled_faults_are_terminated_on_forced_stall_smmus() {
    let mut f = model::qemu_features();
    f.stall_model = StallModel::StallForced;
    let (model, mut d) = up(f, 0xff);
    let mut raw = translation_fault(4, 0x1000, true);
    raw[1] |= 1 << 31 | 0x2a;
    model.inject_event(raw);
    let mark = model.executed().len();
    let report = d.drain_events(&mut |_| {}).expect("drain");
    assert_eq!(report.terminated_stalls, 1);
    assert_eq!(
        executed_since(&model, mark),
        [
            Command::Resume {
                sid: 4,
                stag: 0x2a,
                action: ResumeAction::Terminate { abort: true }
            },
            SYNC
        ]
    );
}

#[test]
fn timeouts_name_what_did_not_happen() {
    let attempt = |knobs: fn(&mut model::Knobs)| {
        let model = Model::new(model::qemu_features());
        knobs(&mut model.state().knobs);
        let mut d = probe(&model);
        d.set_poll_limit(50);
        d.init(0xff)
    };
    assert_eq!(
        attempt(|k| k.gbpa_update_never = true),
        Err(SmmuError::Timeout("GBPA.Update"))
    );
    assert_eq!(
        attempt(|k| k.cr0_ack_never = true),
        Err(SmmuError::Timeout("CR0ACK.CMDQEN"))
    );
    assert_eq!(
        attempt(|k| k.cmdq_stalled = true),
        Err(SmmuError::Timeout("CMD_SYNC"))
    );
    // A failed bring-up leaves the driver uninitialised, and the SMMU refusing DMA.
    let model = Model::new(model::qemu_features());
    model.state().knobs.cmdq_stalled = true;
    let mut d = probe(&model);
    d.set_poll_limit(50);
    assert!(d.init(0xff).is_err());
    assert_eq!(d.sync(), Err(SmmuError::NotInitialized));
    assert_eq!(d.strtab_layout(), None);
    assert_eq!(model.cr0ack() & CR0::SMMUEN::SET.value, 0);
    assert_ne!(model.gbpa() & GBPA::ABORT::SET.value, 0);
    // Slow, but within the limit.
    assert!(
        attempt(|k| {
            k.cr0_ack_delay = 20;
            k.gbpa_update_delay = 20;
        })
        .is_ok()
    );
    let mut f = model::qemu_features();
    f.cmdq_log2 = 2;
    let (model, mut d) = up(f, 0xff);
    model.state().knobs.cmdq_stalled = true;
    assert_eq!(
        d.submit(&[Command::CfgiAll; 10]),
        Err(SmmuError::Timeout("command queue space"))
    );
    assert_eq!(
        alloc::format!("{}", SmmuError::Timeout("CMD_SYNC")),
        "SMMU timeout waiting for CMD_SYNC"
    );
    let model = Model::new(model::qemu_features());
    let mut d = probe(&model);
    assert_eq!(d.sync(), Err(SmmuError::NotInitialized));
    assert_eq!(d.drain_events(&mut |_| {}), Err(SmmuError::NotInitialized));
    assert_eq!(d.read_ste(0), Err(SmmuError::NotInitialized));
}

// --- Property test: random sequences keep the invariants. ---

#[derive(Clone, Debug)]
enum Op {
    /// Write STE choice `ste` for StreamID choice `sid`.
    Write {
        sid: usize,
        ste: usize,
    },
    /// Install STE choice `ste` for all StreamIDs.
    Install {
        ste: usize,
    },
    /// Submit `n` harmless commands.
    Submit(u8),
    /// Submit a batch with an illegal command at `at`.
    Illegal(u8),
    /// Inject `n` fault records.
    Inject(u8),
    Drain,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..5, 0usize..7).prop_map(|(sid, ste)| Op::Write { sid, ste }),
        1 => (0usize..7).prop_map(|ste| Op::Install { ste }),
        2 => (0u8..20).prop_map(Op::Submit),
        1 => (0u8..6).prop_map(Op::Illegal),
        2 => (0u8..12).prop_map(Op::Inject),
        2 => Just(Op::Drain),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever the driver is asked, in whatever order: the model sees no rule broken (registers,
    /// barriers, invalidations, queue indexes), every valid STE a watched StreamID ever shows is
    /// one that was asked for (never a torn mix), every STE ends as last asked, and every injected
    /// event is drained or counted as lost.
    #[test]
    fn random_operations_keep_invariants(
        two_level in any::<bool>(),
        cmdq_log2 in 2u8..5,
        evtq_log2 in 1u8..4,
        ops in proptest::collection::vec(op(), 1..30),
    ) {
        let mut f = features();
        f.cmdq_log2 = cmdq_log2;
        f.evtq_log2 = evtq_log2;
        let sids: [StreamId; 5] = if two_level {
            [0, 1, 0xff, 0x100, 0x3fe]
        } else {
            f.sid_bits = 5;
            [0, 1, 7, 30, 31]
        };
        let (model, mut d) = up(f, 0xffff);
        let normal = table(Mode::Normal, 40, 1);
        let crash = table(Mode::Crash, 40, 2);
        let a = stage2_ste(&normal, &f).expect("policy");
        let c = stage2_ste(&crash, &f).expect("policy");
        let mut a_vmid9 = a;
        a_vmid9.0[2] = (a.0[2] & !0xffff) | 9;
        let mut c_vmid1 = c;
        c_vmid1.0[2] = (c.0[2] & !0xffff) | 1;
        let choices = [a, a_vmid9, c, c_vmid1, Ste::abort(), Ste::bypass(&AttrOverrides::default()), Ste::INVALID];
        model.watch(sids);
        let mut expected: BTreeMap<StreamId, Ste> = BTreeMap::new();
        let mut allowed: BTreeMap<StreamId, BTreeSet<[u64; 8]>> = BTreeMap::new();
        let (mut injected, mut drained) = (0u64, 0u64);
        for op in ops {
            match op {
                Op::Write { sid, ste } => {
                    let (sid, ste) = (sids[sid], choices[ste]);
                    allowed.entry(sid).or_default().insert(ste.0);
                    d.write_ste(sid, &ste).expect("write_ste");
                    expected.insert(sid, ste);
                }
                Op::Install { ste } => {
                    let ste = choices[ste];
                    for &sid in &sids {
                        allowed.entry(sid).or_default().insert(ste.0);
                        expected.insert(sid, ste);
                    }
                    d.install_streams(sids, &ste).expect("install");
                }
                Op::Submit(n) => {
                    let cmds: Vec<Command> = (0..u32::from(n))
                        .map(|i| Command::CfgiSte { sid: i, leaf: true })
                        .collect();
                    d.submit(&cmds).expect("submit");
                }
                Op::Illegal(at) => {
                    let mut cmds = vec![Command::CfgiAll; usize::from(at) + 2];
                    cmds[usize::from(at)] = Command::TlbiEl2All;
                    let err = d.submit(&cmds);
                    prop_assert!(matches!(err, Err(SmmuError::CommandFailed(_))), "{:?}", err);
                }
                Op::Inject(n) => {
                    for i in 0..u64::from(n) {
                        if model.inject_event(translation_fault(1, i << 12, true)) == Injected::Written {
                            injected += 1;
                        }
                    }
                }
                Op::Drain => {
                    let report = d.drain_events(&mut |_| {}).expect("drain");
                    drained += u64::from(report.records);
                }
            }
            let v = model.violations();
            prop_assert!(v.is_empty(), "violations after {:?}: {:#?}", op, v);
            for &sid in &sids {
                let hw = model.ste(sid).unwrap_or(Ste::INVALID);
                prop_assert_eq!(hw, expected.get(&sid).copied().unwrap_or(Ste::INVALID));
            }
        }
        for t in model.trace() {
            if let Trace::Ste { sid, ste: Some(ste) } = t
                && ste.config() != StreamConfig::Invalid
            {
                prop_assert!(
                    allowed.get(&sid).is_some_and(|s| s.contains(&ste.0)),
                    "sid {:#x} showed an STE never asked for: {:?}", sid, ste
                );
            }
        }
        let report = d.drain_events(&mut |_| {}).expect("drain");
        drained += u64::from(report.records);
        prop_assert_eq!(drained, injected);
        prop_assert_eq!(d.stats().event_overflows > 0, model.state().events_lost > 0);
    }
}

#[test]
fn dma_block_bounds_and_debug() {
    let model = Model::new(features());
    let mut dma = model.dma();
    let block = dma.alloc_zeroed(64, 64).expect("alloc");
    block.write(7, 0x1234);
    assert_eq!(block.read(7), 0x1234);
    assert_eq!(block.bytes(), 64);
    assert!(block.pa().is_aligned(64));
    assert!(alloc::format!("{block:?}").starts_with("DmaBlock(0x"));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| block.read(8)));
    assert!(r.is_err());
    let _ = Pa(0);
}
