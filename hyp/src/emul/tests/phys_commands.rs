//! What reaches the physical Command queue per host command: Linux's invalidations go through one
//! for one, with only the VMID replaced by the DMA stage 2's (never widened to a by-ASID, by-VMID
//! or whole-SMMU invalidation, which would flush more of the physical IOTLB than the host asked
//! for), and one physical CMD_SYNC per host CMD_SYNC.

use std::vec;
use std::vec::Vec;

use super::bringup::{cmd, reset_and_enable};
use super::fakes::*;
use crate::smmu::cmd::{Command, TlbiGranule, TlbiScope};
use crate::smmu::regs::offset as o;

/// The VMID field of a command's first word, [47:32].
const VMID_FIELD: u64 = 0xffff << 32;

/// CMD_TLBI_NH_VA as Linux 6.12 issues it for a strict unmap on an SMMU with range invalidation
/// (seen in QEMU's `smmuv3_range_inval` trace: 32 pages, TG 4 KiB, TTL 3, leaf): NUM [16:12],
/// SCALE [24:20], VMID [47:32] (junk from the host), ASID [63:48]; Leaf [64], TTL [73:72], TG
/// [75:74], Address [127:76].
fn linux_range_tlbi(asid: u16, va: u64, num: u8, scale: u8) -> [u64; 2] {
    [
        0x12 | u64::from(num) << 12 | u64::from(scale) << 20 | 0x55 << 32 | u64::from(asid) << 48,
        va | 1 | 3 << 8 | 0b01 << 10,
    ]
}

/// The host commands of one batch and what Portcullis handed the physical SMMU for them.
fn physical_for(host: &[[u64; 2]]) -> Vec<PhysOp> {
    let mut rig = Rig::new();
    reset_and_enable(&mut rig);
    rig.phys.take();
    rig.issue(host);
    assert_eq!(rig.r32(o::CMDQ_CONS), rig.r32(o::CMDQ_PROD));
    assert_eq!(rig.r32(o::GERROR), rig.r32(o::GERRORN));
    assert!(rig.phys.violations.is_empty(), "{:?}", rig.phys.violations);
    rig.phys.take()
}

#[test]
fn a_strict_unmap_is_one_physical_tlbi_nh_va_and_one_sync() {
    let host = linux_range_tlbi(3, 0xfff6_0000, 31, 0);
    let ops = physical_for(&[host, cmd::SYNC_NONE]);
    let expected = Command::TlbiNhVa {
        vmid: 7,
        asid: 3,
        va: 0xfff6_0000,
        scope: TlbiScope {
            leaf: true,
            granule: TlbiGranule::K4,
            ttl: 3,
            num: 31,
            scale: 0,
        },
    };
    assert_eq!(ops, [PhysOp::Submit(vec![expected]), PhysOp::Sync]);
    // Word for word the host's command but for the VMID: the same range, granule, level hint and
    // leaf flag, so the physical IOTLB loses exactly what the host invalidated.
    let phys = expected.encode();
    assert_eq!(phys[0] & !VMID_FIELD, host[0] & !VMID_FIELD);
    assert_eq!(phys[1], host[1]);
    assert_eq!((phys[0] & VMID_FIELD) >> 32, 7);
}

#[test]
fn each_stage_1_invalidation_is_forwarded_one_for_one_with_the_vmid_forced() {
    let scaled = linux_range_tlbi(9, 0x1_0000_0000, 3, 5);
    let single = cmd::tlbi_nh_va(4, 0x2000, false);
    let vaa = [0x13 | 0x66 << 32, 0x4000 | 1];
    let cases: [([u64; 2], Command); 5] = [
        (
            scaled,
            Command::TlbiNhVa {
                vmid: 7,
                asid: 9,
                va: 0x1_0000_0000,
                scope: TlbiScope {
                    leaf: true,
                    granule: TlbiGranule::K4,
                    ttl: 3,
                    num: 3,
                    scale: 5,
                },
            },
        ),
        (
            single,
            Command::TlbiNhVa {
                vmid: 7,
                asid: 4,
                va: 0x2000,
                scope: TlbiScope::single(false),
            },
        ),
        (
            vaa,
            Command::TlbiNhVaa {
                vmid: 7,
                va: 0x4000,
                scope: TlbiScope::single(true),
            },
        ),
        (
            cmd::tlbi_nh_asid(0x55, 5),
            Command::TlbiNhAsid { vmid: 7, asid: 5 },
        ),
        (cmd::TLBI_NSNH_ALL, Command::TlbiNhAll { vmid: 7 }),
    ];
    for (host, phys) in cases {
        assert_eq!(
            physical_for(&[host, cmd::SYNC_SEV]),
            [PhysOp::Submit(vec![phys]), PhysOp::Sync],
            "host {host:x?}"
        );
        if !matches!(phys, Command::TlbiNhAll { .. }) {
            let enc = phys.encode();
            assert_eq!(enc[0] & !VMID_FIELD, host[0] & !VMID_FIELD, "{phys:?}");
            assert_eq!(enc[1], host[1], "{phys:?}");
        }
    }
}

/// A batch of unmaps (as Linux queues them when CPUs race on the queue): as many physical
/// invalidations as the host's, in order, and a physical CMD_SYNC per host CMD_SYNC, no more.
#[test]
fn a_batch_of_unmaps_adds_no_command_and_no_sync() {
    let host: Vec<[u64; 2]> = (0..4u64)
        .flat_map(|i| {
            [
                linux_range_tlbi(3, 0x10_0000 * (i + 1), 1, 0),
                cmd::SYNC_NONE,
            ]
        })
        .collect();
    let ops = physical_for(&host);
    let tlbis: Vec<&Command> = ops
        .iter()
        .filter_map(|op| match op {
            PhysOp::Submit(cmds) => Some(cmds.iter()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(tlbis.len(), 4, "{ops:?}");
    for (i, c) in tlbis.iter().enumerate() {
        assert!(
            matches!(c, Command::TlbiNhVa { vmid: 7, asid: 3, va, .. } if *va == 0x10_0000 * (i as u64 + 1)),
            "{c:?}"
        );
    }
    let syncs = ops.iter().filter(|op| **op == PhysOp::Sync).count();
    assert!(syncs <= 4, "{ops:?}");
}
