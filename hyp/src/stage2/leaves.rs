//! Which leaf size the host's CPU stage 2 maps its memory with: 4 KiB pages, not the largest
//! blocks, while the tables stay small.
//!
//! Blocks make a stage-2 table small and its walks short, which is what the DMA stage 2s and the
//! device ranges get. For the CPU's memory, pages are cheaper where it matters, for two reasons:
//! - On hardware a TLB entry for a two-stage translation covers the smaller of the two leaves, and
//!   Linux maps its linear map with pages (arm64 `rodata=full`, Debian's default): stage-2 blocks
//!   add no TLB reach there, only shorter stage-2 walks on a miss, which walk caches mostly hide.
//! - Under QEMU's TCG (the machine this project measures on) a block leaf is costly: QEMU records
//!   a combined translation with the *larger* of the two leaf sizes, so that an invalidation by
//!   address covers a whole large leaf, and once any entry larger than a page is in the CPU's
//!   TLB, every TLBI by VA that falls in the span the large entries cover (with kernel addresses
//!   spread over the address space: nearly all) flushes the whole TLB of that translation regime.
//!   Linux issues thousands of those at boot (code patching through the fixmap, vmalloc, page
//!   table updates): measured with Debian 6.12 on QEMU 10.0 TCG, the boot from `SLUB:` to `ftrace:
//!   allocating` took 1.0 s under Portcullis with 2 MiB stage-2 blocks against 0.4 s natively,
//!   and 0.43 s with pages (`scripts/linux/boottime`).
//!
//! Pages cost one last-level table (4 KiB) per 2 MiB of memory, 2 MiB of tables per GiB, taken from
//! the host's RAM; above [`PAGED_RAM_LIMIT`] the CPU stage 2 keeps blocks. The limit is 1 GiB so
//! that Portcullis' whole reservation stays within its 8 MiB budget at every RAM size (about
//! 4.9 MiB with blocks, 6.9 MiB with pages on 1 GiB; 4 GiB of pages would add 8 MiB). The policy (which IPA
//! the host may touch, and how) is the same either way: only the shape of the tables differs.

/// The leaves a stage-2 table maps its regions with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leaves {
    /// The largest blocks the alignment allows (1 GiB at level 1, 2 MiB at level 2), pages only
    /// at unaligned edges.
    Largest,
    /// 4 KiB pages for memory; device ranges still get the largest blocks.
    MemoryPages,
}

/// The most RAM whose CPU stage 2 is built from pages (1 GiB: 2 MiB of last-level tables).
pub const PAGED_RAM_LIMIT: u64 = 1 << 30;

/// Bytes one last-level table maps with 4 KiB pages.
const PER_TABLE: u64 = 2 << 20;

/// The leaves of the host's normal-mode CPU stage 2 for a machine with `ram_bytes` of RAM.
pub const fn cpu_leaves(ram_bytes: u64) -> Leaves {
    if ram_bytes <= PAGED_RAM_LIMIT {
        Leaves::MemoryPages
    } else {
        Leaves::Largest
    }
}

/// The last-level table pages a table with `leaves` needs beyond a [`Leaves::Largest`] one over
/// `ram_bytes` of RAM (an upper bound: one per 2 MiB).
pub const fn extra_table_pages(leaves: Leaves, ram_bytes: u64) -> u64 {
    match leaves {
        Leaves::Largest => 0,
        Leaves::MemoryPages => ram_bytes.div_ceil(PER_TABLE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_up_to_the_limit_then_blocks() {
        assert_eq!(cpu_leaves(1 << 30), Leaves::MemoryPages);
        assert_eq!(cpu_leaves(PAGED_RAM_LIMIT), Leaves::MemoryPages);
        assert_eq!(cpu_leaves(PAGED_RAM_LIMIT + 4096), Leaves::Largest);
        assert_eq!(cpu_leaves(u64::MAX), Leaves::Largest);
    }

    #[test]
    fn one_table_page_per_2_mib() {
        assert_eq!(extra_table_pages(Leaves::MemoryPages, 1 << 30), 512);
        assert_eq!(extra_table_pages(Leaves::MemoryPages, (1 << 30) + 1), 513);
        assert_eq!(extra_table_pages(Leaves::Largest, 1 << 30), 0);
        assert_eq!(extra_table_pages(Leaves::MemoryPages, 0), 0);
    }
}
