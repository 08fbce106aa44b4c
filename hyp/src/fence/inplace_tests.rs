//! The in-place DMA fence against the SMMU model: the normal DMA stage 2's valid top-level entries
//! made invalid, then [`in_place_commands`] and one CMD_SYNC (what `firewall::cut_dma` and
//! `firewall::fence` do). After the sync every stream's transactions fault with a record and
//! nothing lands; the TLB holds nothing of the normal policy; no STE and no register changed.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use platform::addr::PhysRange;

use super::in_place_commands;
use crate::smmu::StreamId;
use crate::smmu::cmd::Command;
use crate::smmu::driver::{self, EventRecord, SmmuDriver};
use crate::smmu::event::Event;
use crate::smmu::model::{self, Model, ModelDma, ModelMmio, Trace, Transaction};
use crate::smmu::regs::offset;
use crate::smmu::ste::Ste;
use crate::stage2::{AddressMap, Mode, Stage2Table, dma_policy};

type Driver = SmmuDriver<ModelMmio, ModelDma>;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const VMID: u16 = 2;

fn r(start: u64, size: u64) -> PhysRange {
    PhysRange::new(start, size).expect("test range")
}

/// QEMU virt with 2 GiB of RAM.
fn map() -> AddressMap {
    AddressMap {
        ram: vec![r(0x4000_0000, 2 * GIB)],
        hyp: r(0x4020_0000, 0x0200_0000),
        crash: Some(r(0x7c00_0000, 64 * MIB)),
        smmu: Some(r(0x0905_0000, 0x2_0000)),
        its_doorbells: vec![r(0x0809_0000, 0x1000)],
        devices: Vec::new(),
        trapped: Vec::new(),
        report: Some(r(0xbfff_0000, 0x1_0000)),
        ipa_bits: 40,
    }
}

/// Addresses a device of the dead kernel may target: host RAM here and there, the ITS doorbell.
const TARGETS: [u64; 5] = [
    0x4000_1000,
    0x5000_0000,
    0x7000_0ff8,
    0xbffe_f000,
    0x0809_0040,
];

struct Setup {
    model: Model,
    driver: Driver,
    table: &'static Stage2Table,
    sids: Vec<StreamId>,
}

/// An SMMU with `streams` streams on the normal DMA policy (VMID 2), each of which has DMAed to
/// every target, so the TLB holds the normal policy's translations.
fn up(streams: StreamId) -> Setup {
    // Host test heap addresses need a 48-bit output size (QEMU's SMMU has 44 bits).
    let mut features = model::qemu_features();
    features.oas_bits = 48;
    let model = Model::new(features);
    let mut driver = SmmuDriver::probe(model.mmio(), model.dma()).expect("probe");
    driver.set_poll_limit(10_000);
    driver.init(streams - 1).expect("init");
    let m = map();
    let table: &'static Stage2Table = Box::leak(Box::new(
        Stage2Table::build(&dma_policy(&m, Mode::Normal), 40, VMID).expect("policy"),
    ));
    let ste = driver::stage2_ste(table, driver.features()).expect("ste");
    let sids: Vec<StreamId> = (0..streams).collect();
    driver
        .install_streams(sids.iter().copied(), &ste)
        .expect("install");
    model.register_stage2(table);
    for &sid in &sids {
        for &a in &TARGETS {
            assert!(
                matches!(model.transact(sid, a, true), Transaction::Landed(pa) if pa == a),
                "sid {sid:#x} at {a:#x} before the fence"
            );
        }
    }
    Setup {
        model,
        driver,
        table,
        sids,
    }
}

fn drain(driver: &mut Driver) -> Vec<Event> {
    let mut out = Vec::new();
    driver
        .drain_events(&mut |rec: EventRecord| out.push(rec.event.expect("decodable record")))
        .expect("drain");
    out
}

/// The fence as Portcullis raises it: the stores, then the commands and one CMD_SYNC.
fn fence(s: &mut Setup) -> usize {
    let top = s.table.valid_top_entries();
    let stores = s.table.invalidate_top(&top);
    s.driver
        .submit(&in_place_commands(VMID))
        .expect("fence commands");
    stores
}

#[test]
fn after_the_sync_every_stream_faults_with_a_record_and_nothing_lands() {
    let mut s = up(64);
    let stes: Vec<Option<Ste>> = s.sids.iter().map(|&sid| s.model.ste(sid)).collect();
    let mark = s.model.state().trace.len();
    let stores = fence(&mut s);
    assert!((1..=3).contains(&stores), "{stores} top-level stores");
    // Nothing of the normal policy is left in the TLB once the CMD_SYNC has completed.
    assert_eq!(s.model.tlb_entries(VMID), 0);
    let trace: Vec<Trace> = s.model.state().trace[mark..].to_vec();
    let executed: Vec<Command> = trace
        .iter()
        .filter_map(|t| match t {
            Trace::Exec(c) => Some(*c),
            _ => None,
        })
        .collect();
    assert_eq!(
        executed,
        [
            Command::CfgiAll,
            Command::TlbiS12Vmall { vmid: VMID },
            Command::Sync(crate::smmu::cmd::Sync::POLL)
        ]
    );
    // No register but the Command queue's producer index was written: SMMUEN stayed 1, GBPA
    // was never involved, no Stream table base moved.
    for t in &trace {
        if let Trace::Write32 { off, .. } | Trace::Write64 { off, .. } = t {
            assert_eq!(*off, offset::CMDQ_PROD, "register write {t:?} in the fence");
        }
    }
    // No STE changed.
    for (&sid, before) in s.sids.iter().zip(&stes) {
        assert_eq!(s.model.ste(sid), *before, "sid {sid:#x}");
    }
    // Every stream, every target, read or write: refused and recorded, with its address.
    for &sid in &s.sids {
        for &a in &TARGETS {
            for write in [true, false] {
                assert_eq!(
                    s.model.transact(sid, a, write),
                    Transaction::Faulted { recorded: true },
                    "sid {sid:#x} {} {a:#x} after the fence",
                    if write { "write" } else { "read" }
                );
            }
        }
        let events = drain(&mut s.driver);
        assert_eq!(events.len(), 2 * TARGETS.len(), "sid {sid:#x}");
        let expected = TARGETS.iter().flat_map(|&a| [(a, true), (a, false)]);
        for (e, (a, write)) in events.iter().zip(expected) {
            match e {
                Event::Translation(t) => {
                    assert!(t.stage2, "{e}");
                    assert_eq!(t.input_addr, a, "{e}");
                    assert_eq!(t.access.read, !write, "{e}");
                    assert_eq!(e.sid(), sid);
                }
                other => panic!("sid {sid:#x}: {other} instead of a stage-2 F_TRANSLATION"),
            }
        }
    }
    assert_eq!(
        s.model.state().violations,
        Vec::<alloc::string::String>::new()
    );
}

#[test]
fn the_fence_costs_the_same_whatever_the_number_of_streams() {
    let mut few = up(4);
    let mut many = up(1024);
    let mark = (
        few.model.state().executed.len(),
        many.model.state().executed.len(),
    );
    let stores = (fence(&mut few), fence(&mut many));
    assert_eq!(stores.0, stores.1);
    let executed = (
        few.model.state().executed.len() - mark.0,
        many.model.state().executed.len() - mark.1,
    );
    assert_eq!(executed, (3, 3));
}

/// The test can fail: the stores alone, closed by a CMD_SYNC without the TLB invalidation, leave
/// the normal policy's translations in the TLB, and a cached one still lands after the sync.
#[test]
fn without_the_tlb_invalidation_a_cached_translation_still_lands() {
    let mut s = up(4);
    let top = s.table.valid_top_entries();
    s.table.invalidate_top(&top);
    s.driver.sync().expect("sync");
    assert!(s.model.tlb_entries(VMID) > 0);
    assert!(matches!(
        s.model.transact(0, TARGETS[0], true),
        Transaction::Landed(_)
    ));
    // ... while an address never translated before faults.
    assert_eq!(
        s.model.transact(0, 0x6000_0000, true),
        Transaction::Faulted { recorded: true }
    );
}
