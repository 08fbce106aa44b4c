use super::*;
use crate::emul::AccessDenied;
use crate::gic::its_cmd::opcode;
use crate::gic::testing::FakeIts;
use alloc::vec;
use alloc::vec::Vec;
use platform::addr::PhysRange;

/// QEMU's ITS: Devbits 15, ID_bits 15, ITT entries of 12 bytes, CIL with 16 CIDbits, PTA = 0.
const QEMU_TYPER: u64 = 1 | (11 << 4) | (15 << 8) | (15 << 13) | (15 << 32) | (1 << 36);
const DEVICE_BASER: u64 = (1 << 56) | (7 << 48) | (2 << 8);
const COLLECTION_BASER: u64 = (4 << 56) | (7 << 48) | (2 << 8);

/// Host memory: one readable range, little-endian.
struct FakeRam {
    base: u64,
    bytes: Vec<u8>,
}

impl FakeRam {
    fn new(base: u64, len: usize) -> Self {
        Self {
            base,
            bytes: vec![0; len],
        }
    }
    fn put(&mut self, at: u64, cmd: [u64; 4]) {
        let o = (at - self.base) as usize;
        for (i, dw) in cmd.iter().enumerate() {
            self.bytes[o + 8 * i..o + 8 * i + 8].copy_from_slice(&dw.to_le_bytes());
        }
    }
}

impl HostMemory for FakeRam {
    fn read(&self, ipa: Ipa, buf: &mut [u8]) -> Result<(), AccessDenied> {
        let o = ipa
            .raw()
            .checked_sub(self.base)
            .ok_or(AccessDenied { ipa })? as usize;
        let src = self
            .bytes
            .get(o..o + buf.len())
            .ok_or(AccessDenied { ipa })?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write(&mut self, ipa: Ipa, _: &[u8]) -> Result<(), AccessDenied> {
        Err(AccessDenied { ipa })
    }
}

const RAM: u64 = 0x5000_0000;
const QUEUE: u64 = RAM;

fn window() -> DmaWindow {
    // Device-writable: [0x4000_0000, 0x4020_0000) and [0x4080_0000, 0x8000_0000); Portcullis between.
    DmaWindow::from_ranges(vec![
        PhysRange::from_bounds(0x4000_0000, 0x4020_0000),
        PhysRange::from_bounds(0x4080_0000, 0x8000_0000),
    ])
}

fn config(slots: usize) -> ItsConfig {
    let mut basers = [0; 8];
    basers[0] = DEVICE_BASER;
    basers[1] = COLLECTION_BASER;
    basers[2] = (2 << 56) | (31 << 48);
    let plans = plan_tables(QEMU_TYPER, &basers);
    let entries = |k| plans.iter().find(|p| p.kind == k).map_or(0, |p| p.entries);
    ItsConfig {
        typer: QEMU_TYPER,
        basers,
        devices: entries(TableKind::Devices),
        collections: entries(TableKind::Collections),
        targets: vec![0, 1],
        queue_slots: slots,
        queue_cbaser: cbaser_value(0x4040_0000, slots as u64 * 32),
        max_polls: 100,
    }
}

/// An enabled emulated ITS with a 4 KiB host queue at QUEUE.
fn setup(slots: usize) -> (EmulatedIts, FakeIts, FakeRam) {
    let mut its = EmulatedIts::new(config(slots));
    let mut phys = FakeIts::new(slots);
    let ram = FakeRam::new(RAM, 0x10_0000);
    let w = window();
    assert_eq!(
        its.write(gits::CBASER, 8, (1 << 63) | QUEUE, &ram, &w, &mut phys),
        None
    );
    assert_eq!(its.write(gits::CTLR, 4, 1, &ram, &w, &mut phys), None);
    (its, phys, ram)
}

fn mapd(device: u64, itt: u64) -> [u64; 4] {
    [
        u64::from(opcode::MAPD) | (device << 32),
        4,
        itt | (1 << 63),
        0,
    ]
}

fn sync() -> [u64; 4] {
    [u64::from(opcode::SYNC), 0, 0, 0]
}

#[test]
fn tables_are_sized_from_the_hardware() {
    let plans = plan_tables(QEMU_TYPER, &config(64).basers);
    assert_eq!(plans.len(), 2);
    // 2^16 DeviceIDs of 8 bytes; 2^13 collections of 8 bytes.
    assert_eq!(
        (plans[0].kind, plans[0].bytes, plans[0].entries),
        (TableKind::Devices, 512 << 10, 1 << 16)
    );
    assert_eq!(
        (plans[1].kind, plans[1].bytes, plans[1].entries),
        (TableKind::Collections, 64 << 10, 1 << 13)
    );
    let v = baser_value(&plans[0], DEVICE_BASER, 0x4100_0000);
    let b = LocalRegisterCopy::<u64, GITS_BASER::Register>::new(v);
    assert!(b.is_set(GITS_BASER::Valid));
    assert!(!b.is_set(GITS_BASER::Indirect));
    assert_eq!(b.read(GITS_BASER::Size), 7);
    assert_eq!(b.read(GITS_BASER::Type), 1);
    assert_eq!(v & 0x0000_ffff_ffff_0000, 0x4100_0000);
    assert_eq!(cbaser_value(0x4040_0000, 64 << 10) & 0xff, 15);
}

#[test]
fn registers_the_host_sees() {
    let (mut its, mut phys, ram) = setup(64);
    let w = window();
    let t =
        LocalRegisterCopy::<u64, GITS_TYPER::Register>::new(its.read(gits::TYPER, 8, &mut phys));
    assert!(!t.is_set(GITS_TYPER::Virtual));
    assert_eq!(t.read(GITS_TYPER::Devbits), 15);
    assert_eq!(t.read(GITS_TYPER::CIDbits), 12);
    // BASERs are read-write while disabled, Type/Entry_Size read-only, Indirect RAZ/WI; the vPE
    // table is hidden.
    its.write(gits::CTLR, 4, 0, &ram, &w, &mut phys);
    assert_eq!(phys.ctlr & 1, 0);
    let host = (1 << 63) | (1 << 62) | (3 << 56) | 0x4800_0000 | (2 << 8) | 7;
    its.write(gits::BASER, 8, host, &ram, &w, &mut phys);
    let back = its.read(gits::BASER, 8, &mut phys);
    assert_eq!(
        back,
        (1 << 63) | (1 << 56) | (7 << 48) | 0x4800_0000 | (2 << 8) | 7
    );
    its.write(gits::BASER + 16, 8, u64::MAX, &ram, &w, &mut phys);
    assert_eq!(its.read(gits::BASER + 16, 8, &mut phys), 0);
    // 32-bit halves.
    its.write(gits::BASER + 12, 4, 0x8000_0000, &ram, &w, &mut phys);
    assert_eq!(its.read(gits::BASER + 12, 4, &mut phys) >> 31, 1);
    // CTLR: Enabled is the host's, the rest (Quiescent) the hardware's.
    assert_eq!(its.read(gits::CTLR, 4, &mut phys), 1 << 31);
    // Writes while enabled are ignored.
    its.write(gits::CTLR, 4, 1, &ram, &w, &mut phys);
    assert!(matches!(
        its.write(gits::BASER, 8, 0, &ram, &w, &mut phys),
        Some(ItsNote::WhileEnabled { .. })
    ));
    assert_eq!(
        its.read(gits::BASER, 8, &mut phys) & 0x4800_0000,
        0x4800_0000
    );
}

#[test]
fn valid_commands_reach_the_hardware_re_encoded() {
    let (mut its, mut phys, mut ram) = setup(64);
    let w = window();
    let mut noisy = mapd(1, 0x5010_0000);
    noisy[3] = u64::MAX;
    ram.put(QUEUE, noisy);
    ram.put(QUEUE + 32, sync());
    assert_eq!(its.write(gits::CWRITER, 8, 64, &ram, &w, &mut phys), None);
    assert_eq!(phys.executed, vec![mapd(1, 0x5010_0000), sync()]);
    assert_eq!(its.read(gits::CREADR, 8, &mut phys), 64);
    // The physical queue is Portcullis' (CBASER as configured), never the host's.
    assert_eq!(phys.cbaser, config(64).queue_cbaser);
}

#[test]
fn an_itt_in_portcullis_stalls_the_queue() {
    for itt in [0x4030_0000u64, 0x401f_ff00, 0x8000_0000 - 0x100] {
        let (mut its, mut phys, mut ram) = setup(64);
        let w = window();
        ram.put(QUEUE, sync());
        ram.put(QUEUE + 32, mapd(1, itt));
        ram.put(QUEUE + 64, sync());
        let note = its.write(gits::CWRITER, 8, 96, &ram, &w, &mut phys);
        assert!(
            matches!(note, Some(ItsNote::Refused { offset: 32, .. })),
            "{itt:#x}: {note:?}"
        );
        assert_eq!(phys.executed, vec![sync()]);
        assert_eq!(its.read(gits::CREADR, 8, &mut phys), 32 | 1);
        // Writing CWRITER again without Retry changes nothing; Retry re-checks the same command.
        assert_eq!(its.write(gits::CWRITER, 8, 96, &ram, &w, &mut phys), None);
        assert!(
            its.write(gits::CWRITER, 8, 96 | 1, &ram, &w, &mut phys)
                .is_some()
        );
        // The host fixes the command and retries.
        ram.put(QUEUE + 32, mapd(1, 0x5010_0000));
        assert_eq!(
            its.write(gits::CWRITER, 8, 96 | 1, &ram, &w, &mut phys),
            None
        );
        assert_eq!(its.read(gits::CREADR, 8, &mut phys), 96);
        assert_eq!(phys.executed.len(), 3);
    }
}

#[test]
fn a_queue_outside_host_memory_stalls() {
    let mut its = EmulatedIts::new(config(64));
    let mut phys = FakeIts::new(64);
    let mut ram = FakeRam::new(RAM, 0x1000);
    for i in 0..128 {
        ram.put(RAM + 32 * i, sync());
    }
    let w = window();
    // The queue straddles the end of what the host may read.
    its.write(gits::CBASER, 8, (1 << 63) | 1 | RAM, &ram, &w, &mut phys);
    its.write(gits::CTLR, 4, 1, &ram, &w, &mut phys);
    let note = its.write(gits::CWRITER, 8, 0x1000 + 32, &ram, &w, &mut phys);
    assert!(matches!(note, Some(ItsNote::Unreadable { .. })), "{note:?}");
    assert_eq!(its.read(gits::CREADR, 8, &mut phys), 0x1000 | 1);
    // CWRITER beyond the queue.
    let (mut its, mut phys, ram) = setup(64);
    let note = its.write(gits::CWRITER, 8, 0x2000, &ram, &w, &mut phys);
    assert!(matches!(note, Some(ItsNote::WriterOutOfRange { .. })));
}

#[test]
fn long_batches_wrap_both_queues() {
    let (mut its, mut phys, mut ram) = setup(8);
    let w = window();
    // 100 SYNCs through an 8-slot physical queue, wrapping the host's 4 KiB queue (128 slots).
    for i in 0..128 {
        ram.put(QUEUE + 32 * i, sync());
    }
    assert_eq!(
        its.write(gits::CWRITER, 8, 100 * 32, &ram, &w, &mut phys),
        None
    );
    assert_eq!(its.write(gits::CWRITER, 8, 0, &ram, &w, &mut phys), None);
    assert_eq!(
        its.write(gits::CWRITER, 8, 72 * 32, &ram, &w, &mut phys),
        None
    );
    assert_eq!(phys.executed.len(), 200);
    assert_eq!(its.read(gits::CREADR, 8, &mut phys), 72 * 32);
}

#[test]
fn hardware_stall_and_timeout_are_bounded() {
    let (mut its, mut phys, mut ram) = setup(16);
    let w = window();
    phys.stall_on = Some(opcode::INVALL);
    ram.put(QUEUE, sync());
    ram.put(QUEUE + 32, [u64::from(opcode::INVALL), 0, 0, 0]);
    ram.put(QUEUE + 64, sync());
    let note = its.write(gits::CWRITER, 8, 96, &ram, &w, &mut phys);
    assert_eq!(note, Some(ItsNote::PhysicalStall { offset: 32 }));
    assert_eq!(its.read(gits::CREADR, 8, &mut phys), 32 | 1);
    // Portcullis' queue drained (the stalled command and the rest replaced by SYNCs).
    assert_eq!(phys.creadr, phys.cwriter);

    let (mut its, mut phys, mut ram) = setup(16);
    phys.frozen = true;
    ram.put(QUEUE, sync());
    assert_eq!(
        its.write(gits::CWRITER, 8, 32, &ram, &w, &mut phys),
        Some(ItsNote::PhysicalTimeout)
    );
    assert_eq!(its.read(gits::CREADR, 8, &mut phys), 0);
    phys.frozen = false;
    phys.run();
    // The next write finds the hardware idle again and carries on.
    ram.put(QUEUE + 32, sync());
    assert_eq!(its.write(gits::CWRITER, 8, 64, &ram, &w, &mut phys), None);
    assert_eq!(its.read(gits::CREADR, 8, &mut phys), 64);
}

#[test]
fn crash_mode_itts_must_be_remapped_and_in_the_crash_window() {
    let (mut its, mut phys, mut ram) = setup(64);
    its.enter_crash();
    let crash = DmaWindow::from_ranges(vec![PhysRange::from_bounds(0x7c00_0000, 0x7e00_0000)]);
    let mapti = |d: u64| [u64::from(opcode::MAPTI) | (d << 32), 8192 << 32, 0, 0];
    // An ITT in the dump (normal RAM) is refused now.
    ram.put(QUEUE, mapd(3, 0x5010_0000));
    assert!(matches!(
        its.write(gits::CWRITER, 8, 32, &ram, &crash, &mut phys),
        Some(ItsNote::Refused { .. })
    ));
    ram.put(QUEUE, mapd(3, 0x7c00_0000));
    assert_eq!(
        its.write(gits::CWRITER, 8, 32 | 1, &ram, &crash, &mut phys),
        None
    );
    ram.put(QUEUE + 32, mapti(3));
    ram.put(QUEUE + 64, mapti(4));
    let note = its.write(gits::CWRITER, 8, 96, &ram, &crash, &mut phys);
    assert!(matches!(
        note,
        Some(ItsNote::Refused {
            offset: 64,
            refusal: Refusal::StaleDevice { device: 4, .. }
        })
    ));
    assert_eq!(phys.executed, vec![mapd(3, 0x7c00_0000), mapti(3)]);
}

#[test]
fn garbage_never_panics() {
    // Whatever the host writes anywhere in the frame, and whatever is in its queue.
    let (mut its, mut phys, mut ram) = setup(16);
    let w = window();
    let mut x = 0x1234_5678_9abc_def0u64;
    for i in 0..4096u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ram.put(
            QUEUE + (i % 128) * 32,
            [x, x.rotate_left(7), x.rotate_left(19), x],
        );
        let offset = (x % 0x200) as usize & !3;
        let size = if x & 1 == 0 { 4 } else { 8 };
        let _ = its.write(offset, size, x.rotate_right(3), &ram, &w, &mut phys);
        let _ = its.read(offset, size, &mut phys);
        for cmd in &phys.executed {
            if cmd[0] as u8 == opcode::MAPD && cmd[2] >> 63 == 1 {
                let itt = cmd[2] & 0x000f_ffff_ffff_ff00;
                let len = (1u64 << ((cmd[1] & 0x1f) + 1)) * 12;
                assert!(w.check(itt, len).is_ok(), "MAPD {cmd:x?} reached the ITS");
            }
        }
    }
}
