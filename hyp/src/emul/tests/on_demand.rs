//! On-demand physical streams: the physical Stream table holds the streams that exist; a
//! StreamID the host configures to reach memory becomes a physical stream when it does, within the
//! physical table's budget; past it, the host's CMD_CFGI_STE gets a C_BAD_STREAMID record.

use std::vec;

use super::bringup::{abort_ste, bypass_ste, cmd, reset_and_enable};
use super::fakes::*;
use crate::emul::{EmulConfig, EmulatedSmmu, Note, StreamState};

/// A rig whose physical table has only SID 0x08 (the device on the root bus) and gives others a
/// slot on demand, at most `budget` of them.
fn rig(budget: usize) -> Rig {
    let mut config = EmulConfig::new(qemu_like(), 40);
    config.on_demand = Some(0xffff);
    let mut phys = FakePhys::new(policy());
    phys.cover_budget = Some(budget);
    Rig {
        smmu: EmulatedSmmu::new(&config, [0x08]).expect("valid config"),
        mem: FakeMemory::new(vec![HOST_RAM]),
        phys,
        notes: vec![],
    }
}

#[test]
fn configured_streams_become_physical_within_the_budget() {
    let mut rig = rig(1);
    // Boot state, GBPA bypass: every StreamID gets stage 2 only by default.
    rig.smmu.recompose_all(&mut rig.mem, &mut rig.phys);
    assert!(matches!(rig.phys.defaults.as_slice(), [Some(_)]));
    rig.phys.take();
    reset_and_enable(&mut rig);
    // Enabled: no default any more.
    assert_eq!(rig.phys.defaults.last(), Some(&None));
    // The host's table is empty: no StreamID became a physical stream.
    assert!(rig.phys.covered.is_empty());
    assert_eq!(rig.smmu.streams().count(), 1);

    // Level 2 table for SIDs 0x100..=0x1ff (bus 1, behind a bridge): 0x105 bypass, 0x106 abort.
    let l2 = L2_GROUP0 + 0x4000;
    rig.mem.poke_words(STRTAB + 8, &[l2 | 9]);
    rig.mem.poke_words(l2 + 64 * 0x05, &bypass_ste());
    rig.mem.poke_words(l2 + 64 * 0x06, &abort_ste());
    rig.issue(&[cmd::cfgi_ste(0x105), cmd::cfgi_ste(0x106), cmd::SYNC_SEV]);
    // 0x105 got a slot and its STE; 0x106 (aborted) needs none.
    assert_eq!(rig.phys.covered, [0x105]);
    assert!(matches!(
        rig.phys.take().as_slice(),
        [PhysOp::Ste(0x105, _), PhysOp::Sync]
    ));
    assert_eq!(rig.smmu.stream_state(0x105), Some(StreamState::Bypass));
    assert_eq!(rig.smmu.stream_state(0x106), None);
    assert!(rig.events().is_empty());

    // Past the budget: 0x107 stays refused; the CFGI_STE naming it gets C_BAD_STREAMID.
    rig.mem.poke_words(l2 + 64 * 0x07, &bypass_ste());
    rig.issue(&[cmd::cfgi_ste(0x107), cmd::SYNC_SEV]);
    assert_eq!(rig.smmu.stream_state(0x107), None);
    assert_eq!(rig.events(), [[0x02 | 0x107 << 32, 0, 0, 0]]);
    assert!(
        rig.take_notes()
            .iter()
            .any(|n| matches!(n, Note::StreamsRefused { count: 1 }))
    );
    // A bulk invalidation refuses it too, without flooding the host's queue.
    rig.issue(&[cmd::CFGI_ALL, cmd::SYNC_SEV]);
    assert!(rig.events().is_empty());
    assert_eq!(rig.smmu.live_streams().collect::<Vec<_>>(), [0x105]);
    assert!(rig.phys.violations.is_empty(), "{:?}", rig.phys.violations);
}
