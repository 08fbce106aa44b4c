use super::*;

const QEMU: &[u8] = include_bytes!("../../../../platform/tests/fixtures/qemu-virt-smmuv3.dtb");
const SYNTHETIC: &[u8] = include_bytes!("../../../../platform/tests/fixtures/synthetic.dtb");

fn parse(dtb: &[u8]) -> Platform {
    Platform::parse(dtb).expect("fixture parses")
}

#[test]
fn qemu_virt_every_requester_of_the_root_complex() {
    let machine = parse(QEMU);
    let phandle = machine.smmu.as_ref().and_then(|s| s.phandle);
    let sids = stream_ids(&machine, phandle);
    // iommu-map = <0x0 &smmu 0x0 0x10000>: RIDs 0..0xffff as StreamIDs 0..0xffff.
    assert_eq!(sids.len(), 0x1_0000);
    assert_eq!((sids[0], sids[sids.len() - 1]), (0, 0xffff));
}

#[test]
fn two_entries_sorted_and_only_towards_this_smmu() {
    let machine = parse(SYNTHETIC);
    let phandle = machine.smmu.as_ref().and_then(|s| s.phandle);
    let sids = stream_ids(&machine, phandle);
    // iommu-map = <0x0 &smmu 0x10000 0x100>, <0x100 &smmu 0x20000 0x100>.
    assert_eq!(sids.len(), 0x200);
    assert_eq!(sids[..2], [0x1_0000, 0x1_0001]);
    assert_eq!(sids[0xff..0x101], [0x1_00ff, 0x2_0000]);
    assert_eq!(sids[0x1ff], 0x2_00ff);
    assert!(sids.windows(2).all(|w| w[0] < w[1]));
    // Entries that name another IOMMU are not this SMMU's.
    assert!(stream_ids(&machine, phandle.map(|p| p + 1)).is_empty());
    // No PCI host, no streams.
    let mut none = machine.clone();
    none.pci.clear();
    assert!(stream_ids(&none, phandle).is_empty());
}
