//! Stage-2 translation tables built from a region list, and the registers that make them live.
//!
//! Geometry (4 KiB granule, ARM ARM DDI 0487 D8.2 "Translation table walk", stage 2):
//! - up to 39 IPA bits: the walk starts at level 1, one root table;
//! - 40..=43 IPA bits: the walk starts at level 1 with 2..=16 *concatenated* root tables. A level-0
//!   start would cover them too, but with a 4 KiB granule the ARM ARM makes `VTCR_EL2.SL0` = 0b10
//!   valid only when the PE implements at least 44 PA bits (`AArch64.S2InvalidSL`), and 40-bit IPA
//!   spaces are exactly what 40- and 42-bit-PA cores (Cortex-A53, A55, A76, ...) get. Concatenated
//!   level-1 roots are valid on every PE;
//! - 44..=48 IPA bits: the walk starts at level 0.
//!
//! `aarch64-paging` builds the tables (it knows neither stage-2 concatenation nor an IPA size that
//! is not a whole level). For 40..=43 bits it builds them from a level-0 root, and the root the
//! hardware walks is a copy of that root's first level-1 tables laid side by side; below level 1
//! both share the same tables.
//!
//! The root the hardware walks is always Portcullis' own copy ([`Root`], for every geometry), and
//! it is the one part of a table that may change after `build`: the crash fence edits it in place
//! (ARCHITECTURE.md "The kexec trap and the fence"). [`Stage2Table::invalidate_top`] writes invalid
//! descriptors over chosen top-level entries (the DMA fence), and a [`TopSwap`] replaces top-level
//! entries with another table's, so the live table then translates as that one (the CPU side: the
//! crash-mode subtrees, prebuilt at boot). Every store is one single-copy-atomic 64-bit write
//! (ARM ARM B2.2.1; IHI 0070 3.21.1 for the SMMU's walks: descriptors are read 64 bits at a time),
//! so a walker sees the old or the new descriptor, never a mix. Ordering, break-before-make and
//! TLB maintenance are the caller's: the stores here are only the memory side.

use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use aarch64_paging::descriptor::Stage2Attributes;
use aarch64_paging::idmap::IdMap;
use aarch64_paging::paging::{Constraints, MemoryRegion, Stage2};
use platform::addr::{Ipa, Pa};
use tock_registers::LocalRegisterCopy;
use tock_registers::register_bitfields;

use super::PolicyError;
use super::leaves::Leaves;
use super::policy::{Access, MAX_IPA_BITS, MIN_IPA_BITS, PAGE_SIZE, Region, ipa_limit};

// Addresses are handed to aarch64-paging as `usize`; Portcullis only runs on 64-bit targets.
const _: () = assert!(usize::BITS == 64);

/// Descriptors per translation table with a 4 KiB granule.
const ENTRIES: usize = 512;

/// The deepest lookup level with a 4 KiB granule.
const LEAF_LEVEL: usize = 3;

register_bitfields! [u64,
    /// VTCR_EL2, Virtualization Translation Control Register (ARM ARM D23.2 / D19.2).
    VTCR_EL2 [
        /// Size offset of the IPA space: the space is 2^(64 - T0SZ) bytes.
        T0SZ OFFSET(0) NUMBITS(6) [],
        /// Starting level of the stage-2 walk; the encoding depends on the granule (4 KiB here).
        SL0 OFFSET(6) NUMBITS(2) [
            Level2 = 0b00,
            Level1 = 0b01,
            Level0 = 0b10
        ],
        /// Inner cacheability of the table walks.
        IRGN0 OFFSET(8) NUMBITS(2) [
            WriteBackReadAllocateWriteAllocate = 0b01
        ],
        /// Outer cacheability of the table walks.
        ORGN0 OFFSET(10) NUMBITS(2) [
            WriteBackReadAllocateWriteAllocate = 0b01
        ],
        /// Shareability of the table walks.
        SH0 OFFSET(12) NUMBITS(2) [
            InnerShareable = 0b11
        ],
        /// Granule size.
        TG0 OFFSET(14) NUMBITS(2) [
            Granule4KiB = 0b00
        ],
        /// Physical address size of stage-2 output, encoded like ID_AA64MMFR0_EL1.PARange.
        PS OFFSET(16) NUMBITS(3) [],
        /// VMID size.
        VS OFFSET(19) NUMBITS(1) [
            Bits8 = 0,
            Bits16 = 1
        ],
        /// Bit 31 is RES1.
        RES1 OFFSET(31) NUMBITS(1) []
    ],

    /// VTTBR_EL2, Virtualization Translation Table Base Register.
    VTTBR_EL2 [
        /// Translation table base address, bits [47:1] (bit 0 is CnP, left 0).
        BADDR OFFSET(1) NUMBITS(47) [],
        VMID OFFSET(48) NUMBITS(16) []
    ],

    /// A VMSAv8-64 stage-2 descriptor (4 KiB granule, no LPA2; ARM ARM D8.3).
    S2_DESCRIPTOR [
        VALID OFFSET(0) NUMBITS(1) [],
        /// At levels 0..=2: table (1) or block (0). At level 3: page (1); 0 is reserved.
        TYPE OFFSET(1) NUMBITS(1) [
            Block = 0,
            TableOrPage = 1
        ],
        /// MemAttr[3:2] == 0b00 is Device memory; otherwise [3:2] outer and [1:0] inner
        /// cacheability of Normal memory (with FEAT_S2FWB off).
        MEMATTR OFFSET(2) NUMBITS(4) [
            DeviceNGnRE = 0b0001,
            NormalWriteBack = 0b1111
        ],
        /// Stage-2 data access permissions: bit 0 read, bit 1 write.
        S2AP OFFSET(6) NUMBITS(2) [],
        SH OFFSET(8) NUMBITS(2) [
            NonShareable = 0b00,
            OuterShareable = 0b10,
            InnerShareable = 0b11
        ],
        AF OFFSET(10) NUMBITS(1) [],
        /// Output (next-level table, block or page) address bits [47:12].
        OUTPUT_ADDRESS OFFSET(12) NUMBITS(36) [],
        /// XN[1] (bit 54). Without FEAT_XNX bit 53 is RES0 and this bit alone is XN; with it,
        /// XN[1:0] = 0b10 is execute-never at EL1 and EL0.
        XN OFFSET(54) NUMBITS(1) []
    ]
];

/// A built stage-2 translation table for one policy, with the VMID it runs under.
pub struct Stage2Table {
    /// The tables as `aarch64-paging` built them (identity-mapped IPA = PA).
    idmap: IdMap<Stage2>,
    /// The root the hardware walks: a copy of `idmap`'s root (or, for 40..=43 IPA bits, of its
    /// first level-1 tables side by side), the only part edited after `build`.
    root: Root,
    ipa_bits: u32,
    vmid: u16,
}

impl Stage2Table {
    /// Builds identity-mapped stage-2 tables for `regions` over a `2^ipa_bits` IPA space.
    ///
    /// Regions with [`Access::None`] and empty regions are skipped; the others must be 4 KiB
    /// aligned, inside the IPA space and disjoint. Aligned stretches get block mappings (1 GiB at
    /// level 1, 2 MiB at level 2), so that even a whole 1 TiB device space takes few tables.
    pub fn build(regions: &[Region], ipa_bits: u32, vmid: u16) -> Result<Self, PolicyError> {
        Self::build_with(regions, ipa_bits, vmid, Leaves::Largest)
    }

    /// [`Self::build`] with the memory regions' leaves chosen by `leaves` (see
    /// [`super::leaves`]); device regions always get the largest blocks.
    pub fn build_with(
        regions: &[Region],
        ipa_bits: u32,
        vmid: u16,
        leaves: Leaves,
    ) -> Result<Self, PolicyError> {
        if !(MIN_IPA_BITS..=MAX_IPA_BITS).contains(&ipa_bits) {
            return Err(PolicyError::UnsupportedIpaBits(ipa_bits));
        }
        let limit = ipa_limit(ipa_bits);
        let mut mapped: Vec<&Region> = regions
            .iter()
            .filter(|r| r.access != Access::None && !r.range.is_empty())
            .collect();
        platform::sort::sort_small_by_key(&mut mapped, |r| r.range.start);
        for region in &mapped {
            let range = region.range;
            if !range.start.is_aligned(PAGE_SIZE) || !range.end.is_aligned(PAGE_SIZE) {
                return Err(PolicyError::Unaligned {
                    what: "region",
                    range,
                });
            }
            if range.end.0 > limit {
                return Err(PolicyError::OutsideIpaSpace {
                    what: "region",
                    range,
                    ipa_bits,
                });
            }
        }
        for pair in mapped.windows(2) {
            if pair[0].range.overlaps(&pair[1].range) {
                return Err(PolicyError::Overlap {
                    first: pair[0].range,
                    second: pair[1].range,
                });
            }
        }

        let mut idmap = IdMap::new(idmap_level(ipa_bits), Stage2);
        for region in mapped {
            let range = region.range;
            let memory_region = MemoryRegion::new(range.start.0 as usize, range.end.0 as usize);
            idmap
                .map_range_with_constraints(
                    &memory_region,
                    attributes(region.access),
                    constraints(region.access, leaves),
                )
                .map_err(|error| PolicyError::Map { range, error })?;
        }
        let root = Root::copy_from(&idmap, ipa_bits);
        Ok(Self {
            idmap,
            root,
            ipa_bits,
            vmid,
        })
    }

    /// The size of the IPA space in bits.
    pub fn ipa_bits(&self) -> u32 {
        self.ipa_bits
    }

    /// The VMID this policy runs under.
    pub fn vmid(&self) -> u16 {
        self.vmid
    }

    /// The level the stage-2 walk starts at (0 or 1).
    pub fn start_level(&self) -> usize {
        start_level(self.ipa_bits)
    }

    /// How many concatenated tables the root consists of (1, or 2..=16 for 40..=43 IPA bits).
    /// The root is aligned to its total size, as the architecture requires.
    pub fn root_tables(&self) -> usize {
        concatenated_tables(self.ipa_bits)
    }

    /// The physical address of the root table the hardware walks.
    pub fn root_pa(&self) -> Pa {
        Pa(self.root.pa())
    }

    /// How many descriptors the root the hardware walks has (512 per root table).
    pub fn top_entries(&self) -> usize {
        self.root.entries().len()
    }

    /// Top-level descriptor `index` as the hardware would read it now (0 beyond the root).
    pub fn top_entry(&self, index: usize) -> u64 {
        self.root
            .entries()
            .get(index)
            .map_or(0, |e| e.load(Ordering::Relaxed))
    }

    /// The top-level entries that are valid now.
    pub fn valid_top_entries(&self) -> Vec<usize> {
        (0..self.top_entries())
            .filter(|&i| self.top_entry(i) & 1 != 0)
            .collect()
    }

    /// The size of the IPA range one top-level entry covers.
    pub fn top_entry_size(&self) -> u64 {
        level_size(self.start_level())
    }

    /// Writes an invalid descriptor over each top-level entry in `indices` (out-of-range indices
    /// are ignored), one single-copy-atomic store each, in order. Nothing else: the caller makes
    /// the stores visible (`DSB`) and removes what TLBs and walk caches hold (the ARM ARM and
    /// IHI 0070 allow invalid descriptors never to be cached, so no other maintenance is owed).
    /// Returns the number of stores.
    pub fn invalidate_top(&self, indices: &[usize]) -> usize {
        let entries = self.root.entries();
        let mut stores = 0;
        for &i in indices {
            if let Some(e) = entries.get(i) {
                e.store(0, Ordering::Relaxed);
                stores += 1;
            }
        }
        stores
    }

    /// The top-level stores that make this table translate exactly as `target` does: every
    /// top-level entry whose subtree differs (descriptors compared all the way down, so entries
    /// whose contents are equal but were built separately stay). `target` must have the same
    /// geometry, and is borrowed for ever: after [`make_top`](Self::make_top) the hardware walks
    /// its subtrees from this table's root.
    pub fn swap_plan(&self, target: &'static Stage2Table) -> Result<TopSwap, PolicyError> {
        if target.ipa_bits != self.ipa_bits {
            return Err(PolicyError::UnsupportedIpaBits(target.ipa_bits));
        }
        let level = self.start_level();
        let entries = (0..self.top_entries())
            .filter_map(|i| {
                let (old, new) = (self.top_entry(i), target.top_entry(i));
                // SAFETY: both descriptors come from the roots of live tables with the same
                // geometry, at the start level; their subtrees are theirs (or, for `self`, those
                // of a table borrowed for ever by an earlier swap).
                let same = unsafe { subtree_eq(old, new, level) };
                (!same).then_some((i, new))
            })
            .collect();
        Ok(TopSwap {
            ipa_bits: self.ipa_bits,
            entries,
            _target: target,
        })
    }

    /// The "break" of a swap: an invalid descriptor over every entry `swap` changes that is valid
    /// now. Returns the number of stores.
    pub fn break_top(&self, swap: &TopSwap) -> usize {
        assert_eq!(
            swap.ipa_bits, self.ipa_bits,
            "a swap plan for another table"
        );
        let entries = self.root.entries();
        let mut stores = 0;
        for &(i, _) in &swap.entries {
            if entries[i].load(Ordering::Relaxed) != 0 {
                entries[i].store(0, Ordering::Relaxed);
                stores += 1;
            }
        }
        stores
    }

    /// The "make" of a swap: the target's descriptors into every entry `swap` changes. Returns the
    /// number of stores.
    pub fn make_top(&self, swap: &TopSwap) -> usize {
        assert_eq!(
            swap.ipa_bits, self.ipa_bits,
            "a swap plan for another table"
        );
        let entries = self.root.entries();
        for &(i, new) in &swap.entries {
            entries[i].store(new, Ordering::Relaxed);
        }
        swap.entries.len()
    }

    /// The `VTTBR_EL2` value that makes this policy live: root address and VMID (CnP = 0).
    /// With 8-bit VMIDs (`VTCR_EL2.VS` = 0) the VMID must be below 256.
    pub fn vttbr(&self) -> u64 {
        let mut vttbr = LocalRegisterCopy::<u64, VTTBR_EL2::Register>::new(0);
        vttbr.write(
            VTTBR_EL2::BADDR.val(self.root_pa().0 >> 1) + VTTBR_EL2::VMID.val(u64::from(self.vmid)),
        );
        vttbr.get()
    }

    /// The `VTCR_EL2` value for this table: T0SZ and SL0 from the geometry, walks inner/outer
    /// write-back write-allocate and inner shareable, 4 KiB granule, `PS = pa_range_field` (the
    /// CPU's `ID_AA64MMFR0_EL1.PARange`, at least as large as the IPA space), and 16-bit VMIDs if
    /// `vmid16` (only if `ID_AA64MMFR1_EL1.VMIDBits` says so). Hardware access/dirty flag updates
    /// stay off: every descriptor is built with AF set and nothing is ever written back.
    pub fn vtcr(&self, pa_range_field: u64, vmid16: bool) -> u64 {
        let sl0 = match self.start_level() {
            0 => VTCR_EL2::SL0::Level0,
            _ => VTCR_EL2::SL0::Level1,
        };
        let vs = if vmid16 {
            VTCR_EL2::VS::Bits16
        } else {
            VTCR_EL2::VS::Bits8
        };
        let mut vtcr = LocalRegisterCopy::<u64, VTCR_EL2::Register>::new(0);
        vtcr.write(
            VTCR_EL2::T0SZ.val(u64::from(64 - self.ipa_bits))
                + sl0
                + VTCR_EL2::IRGN0::WriteBackReadAllocateWriteAllocate
                + VTCR_EL2::ORGN0::WriteBackReadAllocateWriteAllocate
                + VTCR_EL2::SH0::InnerShareable
                + VTCR_EL2::TG0::Granule4KiB
                + VTCR_EL2::PS.val(pa_range_field & 0b111)
                + vs
                + VTCR_EL2::RES1.val(1),
        );
        vtcr.get()
    }

    /// What the host may do at `ipa` and where it lands, by walking the tables exactly as the
    /// hardware would from [`root_pa`](Self::root_pa); `None` if `ipa` is unmapped.
    pub fn translate(&self, ipa: Ipa) -> Option<(Pa, Access)> {
        let (descriptor, level) = self.leaf(ipa.0)?;
        let block_mask = level_size(level) - 1;
        let output = descriptor.read(S2_DESCRIPTOR::OUTPUT_ADDRESS) << 12;
        Some((
            Pa((output & !block_mask) | (ipa.0 & block_mask)),
            decode_access(descriptor),
        ))
    }

    /// Whether the host may access `ipa` under this table: a write if `write`, an instruction
    /// fetch if `exec`, else a read.
    pub fn permits(&self, ipa: Ipa, write: bool, exec: bool) -> bool {
        match self.translate(ipa) {
            Some((
                _,
                Access::NormalMemory {
                    read,
                    write: w,
                    exec: x,
                },
            )) => read && (w || !write) && (x || !exec),
            Some((_, Access::Device)) => !exec,
            _ => false,
        }
    }

    /// Whether Portcullis may read (and, if `write`, write) `[ipa, ipa + len)` on the host's
    /// behalf: every page it touches is identity-mapped normal memory the host itself may read
    /// (and write). A range that wraps is refused.
    pub fn is_host_memory(&self, ipa: Ipa, len: usize, write: bool) -> bool {
        let Some(end) = ipa.0.checked_add(len as u64) else {
            return false;
        };
        let mut page = ipa.0 & !(PAGE_SIZE - 1);
        while page < end {
            match self.translate(Ipa(page)) {
                Some((
                    pa,
                    Access::NormalMemory {
                        read: true,
                        write: w,
                        ..
                    },
                )) if pa.0 == page && (w || !write) => {}
                _ => return false,
            }
            page += PAGE_SIZE;
        }
        true
    }

    /// How many 4 KiB pages the tables take, bookkeeping copies included.
    pub fn table_pages(&self) -> usize {
        let root = self.idmap.root_address().0 as u64;
        // SAFETY: `root` is the root of `self.idmap`, at the level it was created with.
        let built = unsafe { count_tables(root, idmap_level(self.ipa_bits)) };
        built + self.root.storage.len() / ENTRIES
    }

    /// The level of the block (1: 1 GiB, 2: 2 MiB) or page (3) that maps `ipa`, if mapped.
    #[cfg(test)]
    pub(crate) fn leaf_level(&self, ipa: u64) -> Option<usize> {
        self.leaf(ipa).map(|(_, level)| level)
    }

    /// The leaf (block or page) descriptor for `ipa` and its level, if `ipa` is mapped.
    fn leaf(&self, ipa: u64) -> Option<(LocalRegisterCopy<u64, S2_DESCRIPTOR::Register>, usize)> {
        if ipa >= ipa_limit(self.ipa_bits) {
            return None;
        }
        let mut level = self.start_level();
        // Below the limit, the root index is below 512 * root_tables().
        let root_index = (ipa >> level_shift(level)) as usize;
        let mut raw = self.root.entries().get(root_index)?.load(Ordering::Relaxed);
        loop {
            let descriptor = LocalRegisterCopy::<u64, S2_DESCRIPTOR::Register>::new(raw);
            if !descriptor.is_set(S2_DESCRIPTOR::VALID) {
                return None;
            }
            let table_or_page = descriptor.matches_all(S2_DESCRIPTOR::TYPE::TableOrPage);
            match (level, table_or_page) {
                (LEAF_LEVEL, true) | (1 | 2, false) => return Some((descriptor, level)),
                (0..LEAF_LEVEL, true) => {
                    level += 1;
                    let table = descriptor.read(S2_DESCRIPTOR::OUTPUT_ADDRESS) << 12;
                    let index = ((ipa >> level_shift(level)) as usize) % ENTRIES;
                    // SAFETY: `table` comes from a valid table descriptor of these tables (written
                    // by aarch64-paging, or copied from them), so it is one of `idmap`'s tables
                    // at `level` -- or of a swap target's, which `TopSwap` borrows for ever --
                    // and `index` is below 512.
                    raw = unsafe { read_entry(table, index) };
                }
                // A level-3 entry with TYPE 0 is reserved; a level-0 block needs LPA2.
                _ => return None,
            }
        }
    }
}

impl fmt::Debug for Stage2Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stage2Table")
            .field("root", &self.root_pa())
            .field("start_level", &self.start_level())
            .field("root_tables", &self.root_tables())
            .field("ipa_bits", &self.ipa_bits)
            .field("vmid", &self.vmid)
            .finish()
    }
}

/// Top-level stores that make one table translate as another (see [`Stage2Table::swap_plan`]).
#[derive(Debug)]
pub struct TopSwap {
    ipa_bits: u32,
    /// (index, the target's descriptor) for every top-level entry that changes.
    entries: Vec<(usize, u64)>,
    /// Keeps the target's subtrees alive for as long as a root may point at them.
    _target: &'static Stage2Table,
}

impl TopSwap {
    /// How many top-level entries the swap changes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The indices of the entries the swap changes.
    pub fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.entries.iter().map(|&(i, _)| i)
    }
}

/// The root the hardware walks: `tables` tables of 512 descriptors side by side, aligned to their
/// total size, each descriptor an atomic so that the fence may rewrite it while walkers read it.
///
/// The storage is twice as large as needed, so that a suitably aligned window always fits inside
/// it without an allocator call of its own; it never grows, so the window never moves.
struct Root {
    storage: Vec<AtomicU64>,
    /// Index of the window's first entry in `storage`.
    offset: usize,
    tables: usize,
}

impl Root {
    /// Copies the root the hardware walks out of `idmap`: its root itself, or for 40..=43 IPA
    /// bits the first level-1 tables under its level-0 root side by side.
    fn copy_from(idmap: &IdMap<Stage2>, ipa_bits: u32) -> Self {
        let tables = concatenated_tables(ipa_bits);
        let len = tables * ENTRIES;
        let storage: Vec<AtomicU64> = (0..2 * len).map(|_| AtomicU64::new(0)).collect();
        let align = len * size_of::<u64>();
        let misalignment = storage.as_ptr() as usize % align;
        let offset = if misalignment == 0 {
            0
        } else {
            (align - misalignment) / size_of::<u64>()
        };
        let root = idmap.root_address().0 as u64;
        let window = &storage[offset..][..len];
        if tables == 1 {
            for (index, entry) in window.iter().enumerate() {
                // SAFETY: `root` is `idmap`'s root and `index` is below 512.
                entry.store(unsafe { read_entry(root, index) }, Ordering::Relaxed);
            }
        } else {
            for table in 0..tables {
                // SAFETY: `root` is `idmap`'s level-0 root and `table` is below 16.
                let raw = unsafe { read_entry(root, table) };
                let descriptor = LocalRegisterCopy::<u64, S2_DESCRIPTOR::Register>::new(raw);
                // Level-0 entries are tables or invalid (a 4 KiB granule has no level-0 blocks);
                // an invalid one leaves its level-1 table all invalid.
                if !descriptor
                    .matches_all(S2_DESCRIPTOR::VALID::SET + S2_DESCRIPTOR::TYPE::TableOrPage)
                {
                    continue;
                }
                let level1 = descriptor.read(S2_DESCRIPTOR::OUTPUT_ADDRESS) << 12;
                for (index, entry) in window[table * ENTRIES..][..ENTRIES].iter().enumerate() {
                    // SAFETY: `level1` comes from a valid table descriptor in `idmap`'s root, so
                    // it is one of `idmap`'s level-1 tables, and `index` is below 512.
                    entry.store(unsafe { read_entry(level1, index) }, Ordering::Relaxed);
                }
            }
        }
        Self {
            storage,
            offset,
            tables,
        }
    }

    fn entries(&self) -> &[AtomicU64] {
        &self.storage[self.offset..][..self.tables * ENTRIES]
    }

    /// The physical address of the window (Portcullis' memory is identity-mapped at EL2, as
    /// `aarch64-paging`'s `IdTranslation` assumes for every other table too).
    fn pa(&self) -> u64 {
        self.entries().as_ptr() as u64
    }
}

/// Whether descriptors `a` and `b` at `level` translate alike: equal, or both tables whose
/// entries translate alike.
///
/// # Safety
///
/// Valid table descriptors in `a` and `b` must point at live tables at `level + 1` as for
/// [`read_entry`].
unsafe fn subtree_eq(a: u64, b: u64, level: usize) -> bool {
    if a == b {
        return true;
    }
    let table = |raw: u64| {
        let d = LocalRegisterCopy::<u64, S2_DESCRIPTOR::Register>::new(raw);
        (level < LEAF_LEVEL
            && d.matches_all(S2_DESCRIPTOR::VALID::SET + S2_DESCRIPTOR::TYPE::TableOrPage))
        .then(|| d.read(S2_DESCRIPTOR::OUTPUT_ADDRESS) << 12)
    };
    let (Some(ta), Some(tb)) = (table(a), table(b)) else {
        return false;
    };
    (0..ENTRIES).all(|i| {
        // SAFETY: as promised by our caller: `ta` and `tb` are live tables at `level + 1`, and
        // `i` is below 512.
        unsafe { subtree_eq(read_entry(ta, i), read_entry(tb, i), level + 1) }
    })
}

/// Reads entry `index` of the translation table at physical address `table`.
///
/// # Safety
///
/// `table` must be the address of a live translation table allocated by `aarch64-paging` through
/// `IdTranslation` (so its physical address is its address in Portcullis' identity-mapped memory),
/// owned by a `Stage2Table` the caller borrows for the duration of the call (which keeps it from
/// being freed or modified), and `index` must be below 512.
unsafe fn read_entry(table: u64, index: usize) -> u64 {
    debug_assert!(index < ENTRIES);
    let entries = table as usize as *const u64;
    // SAFETY: the caller promises that `table` points to a live, 4 KiB-aligned table of 512
    // descriptors that nobody writes while we read, and that `index` is in bounds.
    unsafe { entries.add(index).read() }
}

/// Counts `table` and every table below it.
///
/// # Safety
///
/// As for [`read_entry`], with `table` at lookup level `level`.
unsafe fn count_tables(table: u64, level: usize) -> usize {
    let mut count = 1;
    if level < LEAF_LEVEL {
        for index in 0..ENTRIES {
            // SAFETY: as promised by our caller, and `index` is below 512.
            let raw = unsafe { read_entry(table, index) };
            let descriptor = LocalRegisterCopy::<u64, S2_DESCRIPTOR::Register>::new(raw);
            if descriptor.matches_all(S2_DESCRIPTOR::VALID::SET + S2_DESCRIPTOR::TYPE::TableOrPage)
            {
                let next = descriptor.read(S2_DESCRIPTOR::OUTPUT_ADDRESS) << 12;
                // SAFETY: a valid table descriptor at `level` below the leaf level points to one
                // of the same tables' subtables, at `level + 1`.
                count += unsafe { count_tables(next, level + 1) };
            }
        }
    }
    count
}

/// The level `aarch64-paging` builds from: it has no concatenated roots, so anything above one
/// level-1 table (39 bits) starts at level 0.
fn idmap_level(ipa_bits: u32) -> usize {
    if ipa_bits > 39 { 0 } else { 1 }
}

/// The level the hardware walk starts at (see the module documentation).
fn start_level(ipa_bits: u32) -> usize {
    if ipa_bits > 43 { 0 } else { 1 }
}

/// The number of concatenated tables at the start level.
fn concatenated_tables(ipa_bits: u32) -> usize {
    if (40..=43).contains(&ipa_bits) {
        1 << (ipa_bits - 39)
    } else {
        1
    }
}

/// The bit position of the lowest IPA bit a table at `level` resolves.
fn level_shift(level: usize) -> u32 {
    12 + 9 * (LEAF_LEVEL - level) as u32
}

/// The size of the region a block (or page) at `level` maps.
fn level_size(level: usize) -> u64 {
    1 << level_shift(level)
}

/// Descriptor attributes for a mapped region.
/// `aarch64-paging`'s mapping constraints for a region with `access` in a table with `leaves`.
fn constraints(access: Access, leaves: Leaves) -> Constraints {
    match (leaves, access) {
        (Leaves::MemoryPages, Access::NormalMemory { .. }) => Constraints::NO_BLOCK_MAPPINGS,
        _ => Constraints::empty(),
    }
}

fn attributes(access: Access) -> Stage2Attributes {
    match access {
        Access::NormalMemory { read, write, exec } => {
            let mut attributes = Stage2Attributes::VALID
                | Stage2Attributes::MEMATTR_NORMAL_INNER_WB
                | Stage2Attributes::MEMATTR_NORMAL_OUTER_WB
                | Stage2Attributes::SH_INNER
                | Stage2Attributes::ACCESS_FLAG;
            attributes |= match (read, write) {
                (true, true) => Stage2Attributes::S2AP_ACCESS_RW,
                (true, false) => Stage2Attributes::S2AP_ACCESS_RO,
                (false, true) => Stage2Attributes::S2AP_ACCESS_WO,
                (false, false) => Stage2Attributes::S2AP_ACCESS_NONE,
            };
            if !exec {
                attributes |= Stage2Attributes::XN;
            }
            attributes
        }
        // AF set as for memory: without hardware AF management an AF = 0 entry faults.
        Access::Device => {
            Stage2Attributes::VALID
                | Stage2Attributes::MEMATTR_DEVICE_nGnRE
                | Stage2Attributes::S2AP_ACCESS_RW
                | Stage2Attributes::ACCESS_FLAG
                | Stage2Attributes::XN
        }
        Access::None => Stage2Attributes::empty(),
    }
}

/// The access a leaf descriptor grants.
fn decode_access(descriptor: LocalRegisterCopy<u64, S2_DESCRIPTOR::Register>) -> Access {
    if descriptor.read(S2_DESCRIPTOR::MEMATTR) >> 2 == 0 {
        return Access::Device;
    }
    let s2ap = descriptor.read(S2_DESCRIPTOR::S2AP);
    Access::NormalMemory {
        read: s2ap & 0b01 != 0,
        write: s2ap & 0b10 != 0,
        exec: !descriptor.is_set(S2_DESCRIPTOR::XN),
    }
}

/// The descriptor bits of a leaf, for tests that check memory type and shareability.
#[cfg(test)]
pub(super) fn raw_leaf(table: &Stage2Table, ipa: u64) -> Option<(u64, usize)> {
    table.leaf(ipa).map(|(d, level)| (d.get(), level))
}

/// What `aarch64-paging`'s own walker says about `ipa`: the leaf descriptor's attributes and
/// output address, to cross-check [`Stage2Table::translate`] (and the concatenated root copy).
#[cfg(test)]
pub(super) fn idmap_lookup(table: &Stage2Table, ipa: u64) -> Option<(u64, u64)> {
    let page = (ipa & !(PAGE_SIZE - 1)) as usize;
    let mut found = None;
    table
        .idmap
        .walk_range(
            &MemoryRegion::new(page, page + PAGE_SIZE as usize),
            &mut |_, d, level| {
                if d.is_valid() {
                    let mask = level_size(level) - 1;
                    let pa = (d.output_address().0 as u64 & !mask) | (ipa & mask);
                    found = Some((d.flags().bits() as u64, pa));
                }
                Ok(())
            },
        )
        .ok()?;
    found
}
