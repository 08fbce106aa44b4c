//! Property tests: arbitrary sequences of host register writes, commands (valid and random words),
//! host STEs and level 1 descriptors (valid and random words), forwarded event records and policy
//! switches. After every step:
//! - (a) no physical STE carries a stage 2 other than the live policy (or is anything but abort,
//!   stage 2 only or nested), and no physical command is anything but CFGI_CD* or an NH TLBI in
//!   the policy's VMID (checked by [`FakePhys`]);
//! - (b) every host memory request lies inside a structure the host pointed the SMMU at (the
//!   Command queue, the Event queue for writes, the Stream table, a level 2 table an L1STD read in
//!   the same step points at), is at most 64 bytes, and the fake memory refused the ones outside
//!   the policy;
//! - (c) the host-visible state follows the architecture: acknowledgements mirror their
//!   registers, `CMDQ_CONS` moves only towards `CMDQ_PROD`, ERR only with `GERROR.CMDQ_ERR`
//!   active, `EVENTQ_PROD` never passes `EVENTQ_CONS`, guarded registers do not change while
//!   guarded, only implemented GERROR bits;
//! - and nothing panics.

use std::ops::Range;
use std::vec::Vec;

use proptest::prelude::*;

use super::bringup::{abort_ste, bypass_ste, cmd, s1_ste};
use super::fakes::*;
use crate::emul::registers::mask;
use crate::smmu::queue::{CmdqCons, OutputQueueCons, OutputQueueProd, QueueIndex, QueuePair};
use crate::smmu::regs::offset as o;
use crate::smmu::ste::{L1Std, StreamTableFormat, StreamTableLayout};
use crate::smmu::{Ipa, StreamId};

const PROP_STREAMS: [StreamId; 8] = [0x00, 0x08, 0x10, 0x11, 0x3f, 0x100, 0x300, 0xffff];

#[derive(Clone, Debug)]
enum Op {
    Reg {
        offset: usize,
        size: u8,
        value: u64,
    },
    Commands(Vec<[u64; 2]>),
    /// An STE at `slot` of the level 2 table of group 0 (also the linear table's first 256).
    Ste {
        slot: u16,
        words: [u64; 8],
    },
    /// An STE in the linear table at the Stream table base.
    LinearSte {
        slot: u16,
        words: [u64; 8],
    },
    L1 {
        index: u8,
        raw: u64,
    },
    Event([u64; 4]),
    SwitchPolicy,
}

fn sid() -> impl Strategy<Value = u32> {
    prop_oneof![prop::sample::select(PROP_STREAMS.to_vec()), any::<u32>()]
}

fn command() -> impl Strategy<Value = [u64; 2]> {
    prop_oneof![
        sid().prop_map(cmd::cfgi_ste),
        Just(cmd::CFGI_ALL),
        (sid(), 0u64..31).prop_map(|(s, r)| [0x04 | u64::from(s) << 32, r]),
        (sid(), 0u32..16).prop_map(|(s, ssid)| cmd::cfgi_cd(s, ssid, true)),
        sid().prop_map(cmd::cfgi_cd_all),
        (any::<u16>(), any::<u16>()).prop_map(|(v, a)| cmd::tlbi_nh_asid(v, a)),
        (any::<u16>(), any::<u64>()).prop_map(|(a, va)| cmd::tlbi_nh_va(a, va & !0xfff, true)),
        Just(cmd::TLBI_NSNH_ALL),
        Just(cmd::SYNC_SEV),
        Just(cmd::SYNC_NONE),
        Just(cmd::SYNC_IRQ),
        (any::<u32>(), msi_target()).prop_map(|(data, addr)| [
            0x46 | 0b01 << 12 | u64::from(data) << 32,
            addr & 0x00ff_ffff_ffff_fffc
        ]),
        Just(cmd::TLBI_EL2_ALL),
        (any::<u16>(), any::<u64>()).prop_map(|(v, ipa)| cmd::tlbi_s2_ipa(v, ipa & !0xfff)),
        (any::<u8>(), any::<u64>()).prop_map(|(op, w1)| [u64::from(op), w1 & 0x1f]),
        any::<[u64; 2]>(),
    ]
}

/// Where a CMD_SYNC's MSI may point: the host's own queue, its RAM, the crash region, Portcullis.
fn msi_target() -> impl Strategy<Value = u64> {
    prop_oneof![
        (0u64..256).prop_map(|i| CMDQ + 16 * i),
        HOST_RAM.prop_map(|a| a & !3),
        CRASH_REGION.prop_map(|a| a & !3),
        Just(HYP_MEM),
        Just(HOST_RAM.end - 4),
        any::<u64>(),
    ]
}

fn ste_words() -> impl Strategy<Value = [u64; 8]> {
    prop_oneof![
        Just(s1_ste(CD_TABLE)),
        (0u64..1 << 44).prop_map(|p| s1_ste(p & !0x3f)),
        (any::<u64>(), any::<u64>()).prop_map(|(w0, w1)| {
            let mut s = s1_ste(CD_TABLE);
            s[0] |= w0 & 0xf800_0000_0000_0030;
            s[1] = w1;
            s
        }),
        Just(bypass_ste()),
        any::<u64>().prop_map(|w1| [1 | 0b100 << 1, w1, 0, 0, 0, 0, 0, 0]),
        Just(abort_ste()),
        Just([0; 8]),
        Just([1 | 0b110 << 1, 0, 0, 0, 0, 0, 0, 0]),
        any::<[u64; 8]>(),
    ]
}

fn l1() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(L2_GROUP0 | 9),
        (0u64..12).prop_map(|span| L2_GROUP0 | span),
        Just(HYP_MEM | 9),
        Just(0),
        any::<u64>(),
    ]
}

fn base(structure: u64, log2: Range<u64>) -> impl Strategy<Value = u64> {
    prop_oneof![
        log2.clone().prop_map(move |l| structure | l),
        log2.prop_map(|l| HYP_MEM | l),
        (0x4000_0000u64..0x4900_0000).prop_map(|a| a & !0x1f | 8),
        any::<u64>(),
    ]
}

fn register_write() -> impl Strategy<Value = Op> {
    let reg = |offset: usize, value: BoxedStrategy<u64>| {
        value.prop_map(move |value| Op::Reg {
            offset,
            size: 4,
            value,
        })
    };
    let reg64 = |offset: usize, value: BoxedStrategy<u64>| {
        value.prop_map(move |value| Op::Reg {
            offset,
            size: 8,
            value,
        })
    };
    prop_oneof![
        4 => reg(o::CR0, (0u64..16).boxed()),
        1 => reg(o::CR1, any::<u32>().prop_map(u64::from).boxed()),
        1 => reg(o::CR2, (0u64..16).boxed()),
        1 => reg(
            o::GBPA,
            prop_oneof![Just(1u64 << 31 | 1 << 20), Just(1 << 31 | 1 << 12), any::<u32>().prop_map(u64::from)]
                .boxed()
        ),
        1 => reg(o::IRQ_CTRL, (0u64..8).boxed()),
        1 => reg(o::GERRORN, (0u64..8).boxed()),
        2 => reg64(o::STRTAB_BASE, base(STRTAB, 0..1).boxed()),
        2 => reg(
            o::STRTAB_BASE_CFG,
            prop_oneof![
                Just(1u64 << 16 | 8 << 6 | 16),
                Just(8),
                (0u64..40).prop_map(|l| 1 << 16 | 6 << 6 | l),
                any::<u32>().prop_map(u64::from)
            ]
            .boxed()
        ),
        2 => reg64(o::CMDQ_BASE, base(CMDQ, 0..10).boxed()),
        1 => reg(o::CMDQ_CONS, prop_oneof![0u64..600, any::<u32>().prop_map(u64::from)].boxed()),
        1 => reg(o::CMDQ_PROD, prop_oneof![0u64..600, any::<u32>().prop_map(u64::from)].boxed()),
        2 => reg64(o::EVTQ_BASE, base(EVTQ, 0..10).boxed()),
        1 => reg(o::EVTQ_PROD, prop_oneof![0u64..600, any::<u32>().prop_map(u64::from)].boxed()),
        1 => reg(o::EVTQ_CONS, prop_oneof![0u64..600, any::<u32>().prop_map(u64::from)].boxed()),
        1 => (0usize..0x2_1000, prop::sample::select(vec![1u8, 2, 4, 8]), any::<u64>())
            .prop_map(|(offset, size, value)| Op::Reg { offset, size, value }),
        // 32-bit halves of the 64-bit registers.
        1 => (prop::sample::select(vec![0x80usize, 0x84, 0x90, 0x94, 0xa0, 0xa4]), any::<u32>())
            .prop_map(|(offset, v)| Op::Reg { offset, size: 4, value: v.into() }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => register_write(),
        4 => prop::collection::vec(command(), 1..12).prop_map(Op::Commands),
        3 => (0u16..256, ste_words()).prop_map(|(slot, words)| Op::Ste { slot, words }),
        1 => (0u16..256, ste_words()).prop_map(|(slot, words)| Op::LinearSte { slot, words }),
        2 => (0u8..4, l1()).prop_map(|(index, raw)| Op::L1 { index, raw }),
        1 => any::<[u64; 4]>().prop_map(Op::Event),
        1 => Just(Op::SwitchPolicy),
    ]
}

/// A start that is already a working driver setup, so that sequences get far quickly.
fn setup() -> impl Strategy<Value = bool> {
    any::<bool>()
}

fn window(base: u64, len: u64) -> Range<u64> {
    base..base.saturating_add(len)
}

fn inside(a: &MemAccess, w: &Range<u64>) -> bool {
    a.ipa >= w.start && a.ipa.saturating_add(a.len as u64) <= w.end
}

/// What the host pointed the SMMU at, after an op.
fn windows(rig: &Rig) -> (Range<u64>, Range<u64>, Range<u64>, Option<u8>) {
    let host = *rig.smmu.host_features();
    let cmdq_base = rig.r64(o::CMDQ_BASE) & 0x00ff_ffff_ffff_ffe0;
    let evtq_base = rig.r64(o::EVTQ_BASE) & 0x00ff_ffff_ffff_ffe0;
    let cmdq = window(cmdq_base, 16 << rig.smmu.cmdq_log2());
    let evtq = window(evtq_base, 32 << rig.smmu.evtq_log2());
    let layout = StreamTableLayout::decode(rig.r32(o::STRTAB_BASE_CFG), &host);
    let strtab_base = rig.r64(o::STRTAB_BASE) & 0x00ff_ffff_ffff_ffc0;
    let strtab = window(strtab_base, layout.top_level_bytes());
    let split = match layout.format {
        StreamTableFormat::Linear => None,
        StreamTableFormat::TwoLevel { split } => Some(split),
    };
    (cmdq, evtq, strtab, split)
}

fn apply(rig: &mut Rig, op: &Op) {
    match op {
        Op::Reg {
            offset,
            size,
            value,
        } => rig.write(*offset, *size, *value),
        Op::Commands(cmds) => rig.issue(cmds),
        Op::Ste { slot, words } => rig.mem.poke_words(L2_GROUP0 + 64 * u64::from(*slot), words),
        Op::LinearSte { slot, words } => {
            let base = rig.r64(o::STRTAB_BASE) & 0x00ff_ffff_ffff_ffc0;
            if (0x4000_0000..0x4800_0000).contains(&base) {
                rig.mem.poke_words(base + 64 * u64::from(*slot), words);
            }
        }
        Op::L1 { index, raw } => rig.mem.poke_words(STRTAB + 8 * u64::from(*index), &[*raw]),
        Op::Event(raw) => {
            rig.smmu.deliver_record(*raw, &mut rig.mem);
        }
        Op::SwitchPolicy => {
            rig.phys.policy = if rig.phys.policy == policy() {
                crash_policy()
            } else {
                policy()
            };
            rig.smmu.recompose_all(&mut rig.mem, &mut rig.phys);
        }
    }
}

/// Snapshot of the host-visible registers the invariants compare across an op.
#[derive(Clone, Copy, Debug)]
struct Visible {
    cr0: u32,
    strtab_base: u64,
    strtab_cfg: u32,
    cmdq_base: u64,
    cmdq_prod: u32,
    cmdq_cons: u32,
    evtq_base: u64,
    evtq_prod: u32,
    evtq_cons: u32,
    cmdq_log2: u8,
    evtq_log2: u8,
}

fn visible(rig: &Rig) -> Visible {
    Visible {
        cr0: rig.r32(o::CR0),
        strtab_base: rig.r64(o::STRTAB_BASE),
        strtab_cfg: rig.r32(o::STRTAB_BASE_CFG),
        cmdq_base: rig.r64(o::CMDQ_BASE),
        cmdq_prod: rig.r32(o::CMDQ_PROD),
        cmdq_cons: rig.r32(o::CMDQ_CONS),
        evtq_base: rig.r64(o::EVTQ_BASE),
        evtq_prod: rig.r32(o::EVTQ_PROD),
        evtq_cons: rig.r32(o::EVTQ_CONS),
        cmdq_log2: rig.smmu.cmdq_log2(),
        evtq_log2: rig.smmu.evtq_log2(),
    }
}

/// The register an op writes directly, if any.
fn written_register(op: &Op) -> Option<usize> {
    match op {
        Op::Reg { offset, .. } => Some(offset & !3),
        _ => None,
    }
}

fn check_step(rig: &Rig, op: &Op, before: &Visible) -> Result<(), TestCaseError> {
    let after = visible(rig);
    let wrote = written_register(op);
    // (a)
    prop_assert!(rig.phys.violations.is_empty(), "{:?}", rig.phys.violations);
    // (a) a 4-byte write is a CMD_SYNC's MSI: only where the host's devices may write.
    for w in rig.mem.accesses() {
        if w.write && w.allowed && w.len == 4 {
            prop_assert!(
                rig.phys
                    .dma_writable
                    .iter()
                    .any(|r| r.start <= w.ipa && w.ipa + 4 <= r.end),
                "MSI written at {:#x}, outside the DMA policy",
                w.ipa
            );
        }
    }

    // (c) acknowledgements.
    prop_assert_eq!(rig.r32(o::CR0ACK), after.cr0);
    prop_assert_eq!(rig.r32(o::IRQ_CTRLACK), rig.r32(o::IRQ_CTRL));
    prop_assert_eq!(rig.r32(o::GBPA) >> 31, 0, "GBPA.UPDATE completes at once");
    let gerror = rig.r32(o::GERROR);
    let gerrorn = rig.r32(o::GERRORN);
    prop_assert_eq!(gerror & !mask::GERROR_BITS, 0);
    prop_assert_eq!(gerrorn & !mask::GERROR_BITS, 0);
    let cmdq_err_active = (gerror ^ gerrorn) & 1 != 0;
    let cons = CmdqCons::decode(after.cmdq_log2, after.cmdq_cons);
    prop_assert!(
        cons.err == 0 || cmdq_err_active,
        "ERR without GERROR.CMDQ_ERR"
    );
    if let Some(e) = cons.error().filter(|_| cons.err != 0) {
        prop_assert!(matches!(
            e,
            crate::smmu::queue::CommandQueueError::Illegal
                | crate::smmu::queue::CommandQueueError::Abort
        ));
    }

    // (c) guarded registers.
    let enabled = |bit: u32| before.cr0 & bit != 0;
    if enabled(1) {
        prop_assert_eq!(after.strtab_base, before.strtab_base);
        prop_assert_eq!(after.strtab_cfg, before.strtab_cfg);
    }
    if enabled(1 << 3) {
        prop_assert_eq!(after.cmdq_base, before.cmdq_base);
    }
    if enabled(1 << 2) {
        prop_assert_eq!(after.evtq_base, before.evtq_base);
    }

    // (c) CMDQ_CONS moves from where it was towards PROD, never past it.
    let cons_written = matches!(wrote, Some(o::CMDQ_CONS | o::CMDQ_BASE | 0x94));
    if !cons_written && after.cmdq_log2 == before.cmdq_log2 {
        let log2 = after.cmdq_log2;
        let prod = QueueIndex::from_field(log2, after.cmdq_prod);
        let old = CmdqCons::decode(log2, before.cmdq_cons).rd;
        let new = cons.rd;
        if let Ok(pair) = QueuePair::new(prod, old) {
            let moved = QueuePair::new(new, old).map(|q| q.len());
            prop_assert!(
                moved.is_ok_and(|m| m <= pair.len()),
                "CONS {:?} -> {:?} with PROD {:?}",
                old,
                new,
                prod
            );
        } else {
            prop_assert_eq!(new, old, "an overrun PROD consumes nothing");
        }
    }

    // (c) EVENTQ_PROD never passes EVENTQ_CONS.
    let evtq_written = matches!(
        wrote,
        Some(o::EVTQ_PROD | o::EVTQ_CONS | o::EVTQ_BASE | 0xa4)
    ) || matches!(wrote, Some(off) if off == o::page0_alias::EVTQ_PROD || off == o::page0_alias::EVTQ_CONS);
    if !evtq_written && after.evtq_log2 == before.evtq_log2 {
        let log2 = after.evtq_log2;
        let cons = OutputQueueCons::decode(log2, after.evtq_cons).rd;
        let p0 = OutputQueueProd::decode(log2, before.evtq_prod).wr;
        let p1 = OutputQueueProd::decode(log2, after.evtq_prod).wr;
        if QueuePair::new(p0, cons).is_ok() {
            prop_assert!(QueuePair::new(p1, cons).is_ok(), "EVENTQ_PROD passed CONS");
        } else {
            prop_assert_eq!(p1, p0, "no record into a queue with inconsistent indexes");
        }
    }

    // (b) every access inside what the host pointed the SMMU at.
    let (cmdq, evtq, strtab, split) = windows(rig);
    let accesses = rig.mem.accesses();
    let mut l2_windows = Vec::new();
    for a in accesses
        .iter()
        .filter(|a| !a.write && a.allowed && a.len == 8)
    {
        if let (Some(split), true) = (split, inside(a, &strtab)) {
            let l1 = L1Std::<Ipa>::decode(rig.mem.peek_words::<1>(a.ipa)[0]);
            if l1.span > 0 && l1.span <= split + 1 {
                l2_windows.push(window(l1.l2_table.0, 64 << (l1.span - 1)));
            }
        }
    }
    for a in &accesses {
        prop_assert!(a.len <= 64);
        if a.write && a.len == 4 {
            // A CMD_SYNC's MSI: checked against the DMA policy in `check_step`.
            continue;
        }
        if a.write {
            prop_assert!(
                inside(a, &evtq),
                "write {:?} outside the Event queue {:?}",
                a,
                evtq
            );
            continue;
        }
        // Commands are read up to four at a time (one 64-byte block of the queue).
        let command_block = a.len % 16 == 0 && inside(a, &cmdq);
        let ok = command_block
            || match a.len {
                8 => split.is_some() && inside(a, &strtab),
                64 => {
                    (split.is_none() && inside(a, &strtab))
                        || l2_windows.iter().any(|w| inside(a, w))
                }
                _ => false,
            };
        prop_assert!(ok, "read {:?} outside the host's structures", a);
        if a.allowed {
            prop_assert!(inside(a, &HOST_RAM));
        }
    }
    Ok(())
}

fn prime(rig: &mut Rig) {
    super::bringup::reset_and_enable(rig);
    for i in 0..256 {
        rig.mem.poke_words(L2_GROUP0 + 64 * i, &abort_ste());
    }
    rig.mem.poke_words(STRTAB, &[L2_GROUP0 | 9]);
    rig.phys.take();
    rig.take_notes();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn host_cannot_escape(primed in setup(), ops in prop::collection::vec(op(), 1..48)) {
        let mut rig = Rig::with(qemu_like(), &PROP_STREAMS);
        if primed {
            prime(&mut rig);
        }
        for op in &ops {
            let before = visible(&rig);
            rig.mem.clear_log();
            apply(&mut rig, op);
            check_step(&rig, op, &before)?;
        }
        // Whatever happened, a live stream is one whose physical STE lets traffic through.
        for (sid, state) in rig.smmu.streams() {
            let last = rig.phys.log.iter().rev().find_map(|p| match p {
                PhysOp::Ste(s, ste) if *s == sid => Some(*ste),
                _ => None,
            });
            if let Some(ste) = last {
                let aborts = ste == crate::smmu::ste::Ste::abort();
                prop_assert_eq!(aborts, !state.is_live(), "{:#x}: {:?} {:?}", sid, state, ste);
            }
        }
    }

    /// Arbitrary words at every register, with no setup at all.
    #[test]
    fn register_noise(writes in prop::collection::vec(
        (0usize..0x2_1000, prop::sample::select(vec![1u8, 2, 4, 8]), any::<u64>()), 1..64)) {
        let mut rig = Rig::with(qemu_like(), &PROP_STREAMS);
        for (offset, size, value) in writes {
            let before = visible(&rig);
            rig.mem.clear_log();
            let op = Op::Reg { offset, size, value };
            apply(&mut rig, &op);
            check_step(&rig, &op, &before)?;
            let _ = rig.smmu.read(offset, size);
        }
    }
}
