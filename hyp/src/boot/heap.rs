//! How much heap Portcullis keeps, decided at boot from the machine, and how the heap grows into
//! the room the image reserves for it.
//!
//! The image's linker script reserves a ceiling for the heap; the boot loader keeps that room
//! free. Portcullis starts with an empty heap and adds memory from that room, in aligned chunks,
//! only when an allocation needs it ([`grow_step`]). Before the host's memory map is decided (the
//! crash region, the stage 2s), everything boot allocated so far is in the heap; what is still to
//! come is computed from the machine ([`reserve`]): the CPU and DMA stage 2s from the RAM, the
//! SMMU's tables and queues from the StreamIDs, per-CPU work from the CPU count. Portcullis'
//! memory then ends at the heap's end plus that reserve ([`HeapPlan::limit`]); the rest of the
//! ceiling is given to the host as ordinary RAM, and the heap never grows past the limit again.

use crate::stage2::leaves;

/// Growth granule: the heap takes the room in chunks of at least this size, aligned to it.
pub const GROW_CHUNK: u64 = 256 << 10;

/// What the boot still has to allocate after the memory map is decided, and what runs later.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Machine {
    pub cpus: u64,
    /// RAM in bytes, and in how many banks.
    pub ram_bytes: u64,
    pub ram_banks: u64,
    /// Device ranges the host may touch (each may need its own last-level stage-2 pages).
    pub device_ranges: u64,
    /// The incoming device tree's size (the host's is built from it).
    pub dtb_bytes: u64,
    /// Stream table: level 1 bytes (or the whole linear table), level 2 tables at boot (present
    /// StreamIDs) and on demand, the bytes of one level 2 table.
    pub strtab_top_bytes: u64,
    pub l2_tables: u64,
    pub l2_bytes: u64,
    /// The SMMU's Command and Event queues.
    pub queue_bytes: u64,
}

/// The reserve, by purpose (bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reserve {
    pub stage2: u64,
    pub smmu: u64,
    pub streams: u64,
    pub host_tree: u64,
    pub per_cpu: u64,
    pub slack: u64,
}

impl Reserve {
    pub fn total(&self) -> u64 {
        self.stage2 + self.smmu + self.streams + self.host_tree + self.per_cpu + self.slack
    }
}

/// Stage-2 tables Portcullis builds: the host's CPU stage 2, the dead kernel's (the fence swaps
/// its subtrees in) and the capture kernel's, the normal and the crash-mode DMA stage 2s.
pub const STAGE2_TABLES: u64 = 5;
/// Heap per CPU beyond the boot CPU's: its trap-path work (PSCI, GIC mediation state).
pub const PER_CPU: u64 = 16 << 10;
/// The emulation's record of one physical stream (a `BTreeMap` entry, with node overhead).
pub const STREAM_RECORD: u64 = 64;
/// For what no formula covers: log lines, the fault book's ring, the emulation's command
/// batches (1 024 STEs, 64 KiB, at a time), the fault report's text.
pub const SLACK: u64 = 512 << 10;

/// The heap still needed once the memory map is decided. Stage 2 (4 KiB tables, blocks where
/// the alignment allows): per table a root of up to 16 concatenated pages, one level 1 and one
/// level 2 table per GiB of RAM (blocks of 2 MiB at the level below need no more), and two last-
/// level pages per RAM bank edge, reserved region edge (Portcullis, crash region, report: six
/// edges) and device range.
/// The host's CPU stage 2 in normal mode adds one last-level page per 2 MiB of RAM when
/// [`leaves::cpu_leaves`] picks pages.
pub fn reserve(m: &Machine) -> Reserve {
    const PAGE: u64 = 4096;
    let gib = m.ram_bytes.div_ceil(1 << 30);
    let edges = 2 * m.ram_banks + 6 + m.device_ranges;
    let pages_per_table = 16 + 2 * gib + 2 * edges;
    // The host's normal-mode CPU stage 2 maps memory with pages on small machines.
    let paged = leaves::extra_table_pages(leaves::cpu_leaves(m.ram_bytes), m.ram_bytes);
    Reserve {
        stage2: (STAGE2_TABLES * pages_per_table + paged) * PAGE,
        smmu: m.strtab_top_bytes + m.queue_bytes,
        streams: m.l2_tables * (m.l2_bytes + (m.l2_bytes / 64) * STREAM_RECORD),
        host_tree: 2 * m.dtb_bytes,
        per_cpu: m.cpus.saturating_sub(1) * PER_CPU,
        slack: SLACK,
    }
}

/// The heap's plan once decided: it may grow up to `limit` (exclusive), which is where
/// Portcullis' memory ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapPlan {
    pub limit: u64,
}

impl HeapPlan {
    /// The limit for a heap grown to `next` so far that needs `reserve` more, within the
    /// `ceiling` the image reserves; page aligned. `false` if the reserve does not fit (the
    /// limit is then the ceiling).
    pub fn decide(next: u64, reserve: u64, ceiling: u64) -> (Self, bool) {
        let want = next.saturating_add(reserve).next_multiple_of(4096);
        if want > ceiling {
            (Self { limit: ceiling }, false)
        } else {
            (Self { limit: want }, true)
        }
    }
}

/// The heap's end after growing from `next` to hold an allocation of `size` bytes aligned to
/// `align` (a buddy allocator needs a free block of the next power of two, aligned to its size),
/// at most to `limit`: `None` if the room left cannot hold it.
pub fn grow_step(next: u64, limit: u64, size: u64, align: u64) -> Option<u64> {
    let block = size.max(align).max(8).checked_next_power_of_two()?;
    let granule = block.max(GROW_CHUNK);
    // The first aligned block at or above `next`, rounded up to the growth granule.
    let end = next
        .checked_next_multiple_of(block)?
        .checked_add(block)?
        .checked_next_multiple_of(granule)?;
    if end <= limit {
        return Some(end);
    }
    // Near the limit: whatever still holds the block.
    let tight = next.checked_next_multiple_of(block)?.checked_add(block)?;
    (tight <= limit).then_some(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// QEMU virt with 2 GiB, 2 CPUs and the test devices, as `scripts/run` boots it.
    fn qemu() -> Machine {
        Machine {
            cpus: 2,
            ram_bytes: 2 << 30,
            ram_banks: 1,
            device_ranges: 12,
            dtb_bytes: 36 << 10,
            strtab_top_bytes: 2 << 10,
            l2_tables: 1 + 32,
            l2_bytes: 16 << 10,
            queue_bytes: (4 << 10) + (128 << 10),
        }
    }

    #[test]
    fn qemu_reserve_is_a_few_mib() {
        let r = reserve(&qemu());
        // 5 tables x (16 + 4 + 40) pages; 2 GiB is above the paged limit, so no page tables.
        assert_eq!(r.stage2, 5 * 60 * 4096);
        // With 1 GiB (two table pages fewer each) the CPU stage 2 maps memory with pages: one
        // table page per 2 MiB.
        let small = Machine {
            ram_bytes: 1 << 30,
            ..qemu()
        };
        assert_eq!(reserve(&small).stage2, (5 * 58 + 512) * 4096);
        assert_eq!(r.streams, (33 * (16 + 16)) << 10);
        assert!(r.total() < 7 * MIB, "{r:?} = {}", r.total());
        // More RAM, more CPUs: more reserve.
        let big = Machine {
            cpus: 64,
            ram_bytes: 512 << 30,
            ..qemu()
        };
        assert!(reserve(&big).total() > r.total() + 8 * MIB);
    }

    #[test]
    fn the_limit_holds_the_reserve_within_the_ceiling() {
        let base = 0x4030_0000;
        assert_eq!(
            HeapPlan::decide(base + 0x1_2345, MIB, base + 16 * MIB),
            (
                HeapPlan {
                    limit: base + 0x1_2345_u64.next_multiple_of(4096) + MIB
                },
                true
            )
        );
        assert_eq!(
            HeapPlan::decide(base, 32 * MIB, base + 16 * MIB),
            (
                HeapPlan {
                    limit: base + 16 * MIB
                },
                false
            )
        );
    }

    #[test]
    fn growth_holds_an_aligned_block_and_stops_at_the_limit() {
        let start = 0x4030_1000;
        // A small allocation: one chunk, to the next 256 KiB boundary past the block.
        assert_eq!(grow_step(start, start + 16 * MIB, 64, 8), Some(0x4034_0000));
        // A 512 KiB table aligned to 64 KiB: a 512 KiB block aligned to 512 KiB fits.
        let end = grow_step(start, start + 16 * MIB, 512 << 10, 64 << 10).expect("room");
        assert_eq!(end, 0x4040_0000);
        assert!(end - (start.next_multiple_of(512 << 10)) >= 512 << 10);
        // Near the limit: up to the limit if the block fits, else nothing.
        assert_eq!(grow_step(start, 0x4032_0000, 4096, 4096), Some(0x4032_0000));
        assert_eq!(grow_step(start, 0x4030_2000, 8192, 8192), None);
        assert_eq!(grow_step(u64::MAX - 10, u64::MAX, 64, 8), None);
    }
}
