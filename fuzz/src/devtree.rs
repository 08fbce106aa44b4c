//! The boot path's device-tree handling on mutated trees: `Platform::parse`, the placement of the
//! crash region and fault report from `crashkernel=`, `portcullis,bootargs`, and the host-tree
//! rewrite (`boot::host_tree::build_host_tree`).
//!
//! The input is a flattened device tree; bytes after its `totalsize` choose the rewrite's
//! parameters (where Portcullis' memory is, whether to hide the SMMU), so plain `.dtb` files are
//! seeds. Invariants on a tree that was accepted:
//! - the rewritten tree parses again (with the SMMU hidden or devices withheld, a malformed node
//!   the input also had may come first of its kind: only structural, memory, reservation and
//!   /chosen errors count then), is at most `DTB_MAX_SIZE`, keeps `boot_cpuid_phys`;
//! - its RAM is the incoming RAM minus Portcullis' memory: no byte of Portcullis' memory is RAM for
//!   the host, and Portcullis' memory (and the fault report) are reserved `no-map`;
//! - the crash region, when placed, lies in RAM, overlaps nothing taken, and is the only
//!   `crashkernel=` of the host's command line, which Portcullis parses back to the same region;
//! - the fault report overlaps neither Portcullis nor the crash region;
//! - wherever the boot path accepts the address map (`AddressMap::validate`, with the device map
//!   of `boot::devices`), the host's CPU stage 2 of either mode (`stage2::cpu_policy`) maps no byte
//!   of Portcullis' memory and no writable byte of the fault report.

use portcullis::boot::cmdline::{parse_crashkernel, parse_hyp_options};
use portcullis::boot::devices::DeviceMap;
use portcullis::boot::host_tree::{HostTreeParams, build_host_tree};
use portcullis::boot::layout::{
    self, DTB_MAX_SIZE, Taken, TakenKind, place_crash_region, place_report, platform_taken,
};
use portcullis::platform::addr::{PhysRange, subtract_ranges};
use portcullis::platform::devtree::{DtError, Platform, dtb_total_size};
use portcullis::stage2::{Access, AddressMap, Mode, cpu_policy, ipa_bits_for};

/// Portcullis' footprint in the harness (as the real image, 2 MiB aligned).
const HYP_SIZE: u64 = 8 << 20;
const MIB: u64 = 1 << 20;

/// The host's CPU stage 2 in both modes, as the boot path builds it from this tree (the device
/// map's `allowed` pages may overlap RAM in a mutated tree: the policy cuts RAM and Portcullis out
/// of device MMIO): wherever the map is accepted, Portcullis' memory is never mapped and the fault
/// report never writable.
fn check_policy(
    platform: &Platform,
    devices: &DeviceMap,
    hyp: PhysRange,
    crash: Option<PhysRange>,
    report: Option<PhysRange>,
) {
    let map = AddressMap {
        ram: platform.memory.clone(),
        hyp,
        crash,
        smmu: platform.smmu.as_ref().map(|s| s.regs),
        its_doorbells: Vec::new(),
        devices: devices.allowed.clone(),
        trapped: Vec::new(),
        report,
        ipa_bits: ipa_bits_for(platform.max_address.saturating_sub(1), 48),
    };
    // A map the boot path refuses stops the boot (a device window over RAM, say): nothing to check.
    if map.validate().is_err() {
        return;
    }
    for mode in [Mode::Normal, Mode::Crash] {
        for region in cpu_policy(&map, mode, true) {
            if region.access == Access::None {
                continue;
            }
            assert!(
                !region.range.overlaps(&hyp),
                "{mode:?}: {region:?} maps Portcullis {hyp}"
            );
            let writable = matches!(
                region.access,
                Access::Device | Access::NormalMemory { write: true, .. }
            );
            if let Some(r) = report {
                assert!(
                    !(writable && region.range.overlaps(&r)),
                    "{mode:?}: {region:?} lets the host write the fault report {r}"
                );
            }
        }
    }
}

pub fn run(data: &[u8]) {
    let Ok(platform) = Platform::parse(data) else {
        return;
    };
    // The parameters: the bytes after the tree.
    let tail = dtb_total_size(data)
        .ok()
        .and_then(|n| data.get(n..))
        .unwrap_or(&[]);
    let knob = |i: usize| tail.get(i).copied().unwrap_or(0);
    let Some(first) = platform
        .memory
        .get(usize::from(knob(0)) % platform.memory.len().max(1))
    else {
        return;
    };
    let slot = u64::from(knob(1)) * 2 * MIB;
    let hyp_start = first
        .start
        .raw()
        .checked_add(slot)
        .unwrap_or(first.start.raw())
        & !(2 * MIB - 1);
    let Some(hyp) = PhysRange::new(hyp_start, HYP_SIZE) else {
        return;
    };
    let hide_smmu = knob(2) & 1 != 0;

    let _ = parse_hyp_options(platform.chosen.portcullis_bootargs.as_deref().unwrap_or(""));
    let bootargs = platform.chosen.bootargs.as_deref().unwrap_or("");
    let mut taken = platform_taken(&platform);
    taken.push(Taken::new(TakenKind::Portcullis, hyp));
    let ram_total = layout::total_ram(&platform.memory);
    let crash = match parse_crashkernel(bootargs, ram_total) {
        Ok(Some(request)) => place_crash_region(&platform.memory, &taken, &request).ok(),
        _ => None,
    };
    if let Some(c) = crash {
        assert!(
            platform.memory.iter().any(|r| r.covers(&c)),
            "crash region {c} outside RAM"
        );
        for t in &taken {
            assert!(!t.range.overlaps(&c), "crash region {c} overlaps {t:?}");
        }
        taken.push(Taken::new(TakenKind::CrashRegion, c));
    }
    let report = crash.and_then(|_| place_report(&platform.memory, &taken).ok());
    if let Some(r) = report {
        for t in &taken {
            assert!(!t.range.overlaps(&r), "fault report {r} overlaps {t:?}");
        }
    }

    let devices = DeviceMap::decide(&platform);
    check_policy(&platform, &devices, hyp, crash, report);
    let params = HostTreeParams {
        portcullis: hyp,
        crash_region: crash,
        hide_smmu,
        fault_report: report,
        disable: devices.to_disable(),
    };
    let Ok(out) = build_host_tree(data, &params) else {
        return;
    };
    assert!(out.len() as u64 <= DTB_MAX_SIZE);
    let host = match Platform::parse(&out) {
        Ok(p) => p,
        // Portcullis' parser takes the first available node of a kind (SMMU, UART, GIC): with the
        // SMMU hidden or devices withheld, a malformed second one the input also had may now come
        // first. The host does not need Portcullis' parser to accept its tree; it needs memory,
        // reservations and /chosen right, so only errors there count.
        Err(e) if params.hide_smmu || !params.disable.is_empty() => {
            let msg = e.to_string();
            assert!(
                !["/memory", "/reserved-memory", "/chosen", "no usable memory"]
                    .iter()
                    .any(|p| msg.contains(p))
                    && !matches!(
                        e,
                        DtError::Truncated { .. }
                            | DtError::NotADeviceTree { .. }
                            | DtError::Malformed(_)
                            | DtError::Stream(_)
                            | DtError::TooDeep { .. }
                            | DtError::Duplicate { .. }
                    ),
                "the host's tree does not parse: {e}"
            );
            return;
        }
        Err(e) => panic!("the host's tree does not parse: {e}"),
    };
    assert_eq!(host.boot_cpuid_phys, platform.boot_cpuid_phys);
    for r in &host.memory {
        assert!(!r.overlaps(&hyp), "host RAM {r} overlaps Portcullis {hyp}");
    }
    assert_eq!(
        host.memory,
        subtract_ranges(&platform.memory, &[hyp]),
        "host RAM is not the incoming RAM minus Portcullis"
    );
    let no_map = |range: PhysRange| {
        host.reserved_regions
            .iter()
            .any(|r| r.no_map && r.range.covers(&range))
    };
    assert!(no_map(hyp), "Portcullis {hyp} not reserved no-map");
    if let Some(r) = report {
        assert!(no_map(r), "fault report {r} not reserved no-map");
    }
    let host_args = host.chosen.bootargs.as_deref().unwrap_or("");
    // Parameters named `crashkernel` (Portcullis' reading: one inside another parameter's quoted
    // value is not one; Linux's substring search differs there, see the README).
    let crash_params = host_args
        .split_ascii_whitespace()
        .filter(|p| p.starts_with("crashkernel=") && !p.contains('"'))
        .count();
    assert_eq!(
        crash_params,
        usize::from(crash.is_some()),
        "crashkernel= in the host's command line: {host_args:?}"
    );
    if let Some(c) = crash {
        let back = parse_crashkernel(host_args, ram_total);
        let Ok(Some(request)) = back else {
            panic!("host command line {host_args:?} does not give the crash region back")
        };
        assert_eq!(
            (request.size, request.base.map(|b| b.raw())),
            (c.size(), Some(c.start.raw()))
        );
    }
}
