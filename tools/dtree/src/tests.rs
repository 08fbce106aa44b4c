use dtoolkit::model::{DeviceTree, DeviceTreeNode, DeviceTreeProperty};

use super::*;

const QEMU: &[u8] = include_bytes!("../../../platform/tests/fixtures/qemu-virt-smmuv3.dtb");

fn prop<T: dtoolkit::ToPropertyValue>(name: &str, value: T) -> DeviceTreeProperty {
    DeviceTreeProperty::new(name, value).unwrap()
}

/// A board whose root has one address cell and one size cell: RAM at 2 GiB.
fn one_cell_board() -> Vec<u8> {
    let mut tree = DeviceTree::new();
    tree.root.add_property(prop("#address-cells", 1u32));
    tree.root.add_property(prop("#size-cells", 1u32));
    let mut memory = DeviceTreeNode::new("memory@80000000").unwrap();
    memory.add_property(prop("device_type", "memory"));
    memory.add_property(prop("reg", [0x8000_0000u32, 0x4000_0000]));
    tree.root.add_child(memory);
    tree.root.add_child(DeviceTreeNode::new("chosen").unwrap());
    tree.to_dtb()
}

#[test]
fn ram_base_reads_the_roots_cells() {
    assert_eq!(ram_base(QEMU).unwrap(), 0x4000_0000);
    // Two cells read as one address would give 0x8000_0000_4000_0000 here (what the scripts'
    // fdtget reading did).
    assert_eq!(ram_base(&one_cell_board()).unwrap(), 0x8000_0000);
}

#[test]
fn encode_fits_or_refuses() {
    assert_eq!(encode(0x1234, 1).unwrap(), [0, 0, 0x12, 0x34]);
    assert_eq!(encode(0x1_0000_0002, 2).unwrap(), [0, 0, 0, 1, 0, 0, 0, 2]);
    assert_eq!(encode(5, 3).unwrap().len(), 12);
    assert_eq!(encode(1 << 32, 1), None);
    assert_eq!(encode(1, 0), None);
    assert_eq!(encode(1, 5), None);
}

#[test]
fn set_chosen_writes_what_portcullis_reads() {
    let edit = ChosenEdit {
        kernel: Some((0x4100_0000, 0x12_3456)),
        initrd: Some((0x4800_0000, 0x4810_0000)),
        bootargs: Some(String::from("console=ttyAMA0 crashkernel=64M")),
        hyp_args: Some(String::from("log=debug")),
    };
    let out = set_chosen(QEMU, &edit).unwrap();
    let p = Platform::parse(&out).unwrap();
    let k = p.chosen.kernel.unwrap();
    assert_eq!((k.start.raw(), k.size()), (0x4100_0000, 0x12_3456));
    let i = p.chosen.initrd.unwrap();
    assert_eq!((i.start.raw(), i.end.raw()), (0x4800_0000, 0x4810_0000));
    assert_eq!(p.chosen.bootargs, edit.bootargs);
    assert_eq!(p.chosen.portcullis_bootargs, edit.hyp_args);
    // In place: the header's boot CPU and everything but /chosen stay.
    let before = Platform::parse(QEMU).unwrap();
    assert_eq!(p.boot_cpuid_phys, before.boot_cpuid_phys);
    assert_eq!(p.devices, before.devices);
    assert_eq!(p.memory, before.memory);

    // Again: each property replaced, not doubled.
    let again = ChosenEdit {
        bootargs: Some(String::from("quiet")),
        ..ChosenEdit::default()
    };
    let out = set_chosen(&out, &again).unwrap();
    let p = Platform::parse(&out).unwrap();
    assert_eq!(p.chosen.bootargs.as_deref(), Some("quiet"));
    assert_eq!(p.chosen.portcullis_bootargs, edit.hyp_args);
    assert_eq!(get(&out, "/chosen", "bootargs").unwrap(), "quiet");
}

#[test]
fn set_chosen_uses_the_roots_cells() {
    let edit = ChosenEdit {
        kernel: Some((0x8020_0000, 0x1000)),
        ..ChosenEdit::default()
    };
    let out = set_chosen(&one_cell_board(), &edit).unwrap();
    assert_eq!(
        get(&out, "/chosen", "portcullis,kernel").unwrap(),
        "0x80200000 0x1000"
    );
    let high = ChosenEdit {
        kernel: Some((1 << 32, 0x1000)),
        ..ChosenEdit::default()
    };
    let err = set_chosen(&one_cell_board(), &high).unwrap_err();
    assert!(err.contains("does not fit in 1 cell"), "{err}");
}

#[test]
fn set_chosen_creates_chosen_and_keeps_the_header() {
    let mut tree = DeviceTree::from_fdt(&Fdt::new(&one_cell_board()).unwrap());
    tree.root.remove_child("chosen");
    let mut dtb = tree.to_dtb();
    // A boot CPU other than 0, which dtoolkit's writer would zero.
    dtb[BOOT_CPUID_OFFSET + 3] = 3;
    let edit = ChosenEdit {
        bootargs: Some(String::from("quiet")),
        ..ChosenEdit::default()
    };
    let out = set_chosen(&dtb, &edit).unwrap();
    let p = Platform::parse(&out).unwrap();
    assert_eq!(p.chosen.bootargs.as_deref(), Some("quiet"));
    assert_eq!(p.boot_cpuid_phys, 3);
}

/// QEMU's `dumpdtb` pads its tree to 1 MiB; the edited tree is written compact, not grown past it.
#[test]
fn set_chosen_writes_a_compact_tree() {
    let mut padded = QEMU.to_vec();
    padded.resize(1 << 20, 0);
    padded[4..8].copy_from_slice(&(1u32 << 20).to_be_bytes());
    let edit = ChosenEdit {
        kernel: Some((0x4100_0000, 0x1000)),
        bootargs: Some(String::from("console=ttyAMA0")),
        ..ChosenEdit::default()
    };
    let out = set_chosen(&padded, &edit).unwrap();
    assert!(out.len() < QEMU.len() + 4096, "{:#x} bytes", out.len());
}

#[test]
fn set_chosen_refuses_what_it_cannot_write() {
    let nul = ChosenEdit {
        bootargs: Some(String::from("a\0b")),
        ..ChosenEdit::default()
    };
    assert!(set_chosen(QEMU, &nul).unwrap_err().contains("NUL"));
    assert!(set_chosen(b"not a tree", &ChosenEdit::default()).is_err());
}

#[test]
fn get_prints_strings_cells_or_bytes() {
    assert_eq!(get(QEMU, "/", "compatible").unwrap(), "linux,dummy-virt");
    assert_eq!(
        get(QEMU, "/memory", "reg").unwrap(),
        "0x0 0x40000000 0x0 0x40000000"
    );
    assert!(get(QEMU, "/nonexistent", "reg").is_err());
    assert!(get(QEMU, "memory", "reg").is_err());
    assert!(get(QEMU, "/memory", "nonexistent").is_err());
}

/// `/chosen` is the node named exactly so, even after a `chosen@0` (as Portcullis reads it).
#[test]
fn get_prefers_the_exact_name() {
    let mut tree = DeviceTree::from_fdt(&Fdt::new(QEMU).unwrap());
    let chosen = tree.root.remove_child("chosen").unwrap();
    let mut first = DeviceTreeNode::new("chosen@0").unwrap();
    first.add_property(prop("bootargs", "first"));
    tree.root.add_child(first);
    tree.root.add_child(chosen);
    let dtb = tree.to_dtb();
    let edit = ChosenEdit {
        bootargs: Some(String::from("exact")),
        ..ChosenEdit::default()
    };
    let out = set_chosen(&dtb, &edit).unwrap();
    assert_eq!(get(&out, "/chosen", "bootargs").unwrap(), "exact");
    assert_eq!(get(&out, "/chosen@0", "bootargs").unwrap(), "first");
}
