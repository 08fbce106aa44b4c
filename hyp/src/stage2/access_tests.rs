//! The two checks the binary makes against the live CPU stage 2: whether a faulting host access
//! is allowed now (`Stage2Table::permits`) and whether Portcullis may touch host memory on the
//! host's behalf (`Stage2Table::is_host_memory`).

use alloc::vec;

use platform::addr::{Ipa, PhysRange};

use super::*;

fn r(start: u64, size: u64) -> PhysRange {
    PhysRange::new(start, size).expect("test range")
}

const RAM: u64 = 0x4000_0000;
const HYP: u64 = 0x4020_0000;
const CRASH: u64 = 0x5000_0000;
const REPORT: u64 = 0x4fff_0000;
const UART: u64 = 0x0900_0000;

/// 512 MiB of RAM with Portcullis, a crash region and the report in it, and one device page.
fn map() -> AddressMap {
    AddressMap {
        ram: vec![r(RAM, 512 << 20)],
        hyp: r(HYP, 2 << 20),
        crash: Some(r(CRASH, 64 << 20)),
        smmu: None,
        its_doorbells: vec![],
        devices: vec![r(UART, 0x1000)],
        trapped: vec![],
        report: Some(r(REPORT, 0x1_0000)),
        ipa_bits: 40,
    }
}

fn table(mode: Mode) -> Stage2Table {
    Stage2Table::build(&cpu_policy(&map(), mode, true), 40, 1).expect("builds")
}

#[test]
fn permits_follows_the_policy() {
    let normal = table(Mode::Normal);
    // Host RAM: RWX.
    assert!(normal.permits(Ipa(RAM), true, false));
    assert!(normal.permits(Ipa(RAM), false, true));
    // The crash region: RW, execute-never (the kexec trap).
    assert!(normal.permits(Ipa(CRASH), true, false));
    assert!(!normal.permits(Ipa(CRASH), false, true));
    // A device: read and write, never a fetch.
    assert!(normal.permits(Ipa(UART), true, false));
    assert!(!normal.permits(Ipa(UART), false, true));
    // Portcullis, the report, an unmapped hole: nothing.
    for ipa in [HYP, REPORT, 0x2000_0000] {
        assert!(!normal.permits(Ipa(ipa), false, false), "{ipa:#x}");
    }
    let crash = table(Mode::Crash);
    // The dump: read-only, execute-never; the crash region: everything.
    assert!(crash.permits(Ipa(RAM), false, false));
    assert!(!crash.permits(Ipa(RAM), true, false));
    assert!(!crash.permits(Ipa(RAM), false, true));
    assert!(crash.permits(Ipa(CRASH), true, true));
    assert!(crash.permits(Ipa(REPORT), false, false));
    assert!(!crash.permits(Ipa(REPORT), true, false));
}

#[test]
fn host_memory_is_every_page_of_the_range() {
    let normal = table(Mode::Normal);
    assert!(normal.is_host_memory(Ipa(RAM), 64, true));
    assert!(normal.is_host_memory(Ipa(RAM + 0xff8), 16, true));
    // Ending at Portcullis' first byte is fine; one byte into it is not.
    assert!(normal.is_host_memory(Ipa(HYP - 8), 8, true));
    assert!(!normal.is_host_memory(Ipa(HYP - 8), 9, false));
    // Device memory, the report, holes, wrapping ranges: never.
    assert!(!normal.is_host_memory(Ipa(UART), 4, false));
    assert!(!normal.is_host_memory(Ipa(REPORT), 8, false));
    assert!(!normal.is_host_memory(Ipa(0x2000_0000), 8, false));
    assert!(!normal.is_host_memory(Ipa(u64::MAX - 3), 8, false));
    // An empty range at a page boundary touches nothing.
    assert!(normal.is_host_memory(Ipa(0x2000_0000), 0, false));
    let crash = table(Mode::Crash);
    // The dump reads but is not written; the crash region is both.
    assert!(crash.is_host_memory(Ipa(RAM), 64, false));
    assert!(!crash.is_host_memory(Ipa(RAM), 64, true));
    assert!(crash.is_host_memory(Ipa(CRASH), 64, true));
    // A range straddling the dump and the crash region is not writable as a whole.
    assert!(!crash.is_host_memory(Ipa(CRASH - 8), 16, true));
}
