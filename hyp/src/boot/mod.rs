//! Boot-time decisions: the host's command line, where Portcullis and the crash region live, and the
//! device tree the host is given.
//!
//! The order at boot, all from plain data:
//! 1. [`platform::devtree::Platform::parse`] the incoming tree;
//!    [`cmdline::parse_hyp_options`] on `chosen.portcullis_bootargs`.
//! 2. [`layout::ImageHeader::parse`] the host Image at `chosen.kernel` (refused without the magic)
//!    and take its [`layout::ImageHeader::footprint`].
//! 3. [`cmdline::parse_crashkernel`] on `chosen.bootargs`, with the RAM the host will see (RAM
//!    minus Portcullis' memory, [`layout::total_ram`]).
//! 4. [`address_map::place`]: [`layout::place_crash_region`] against [`layout::platform_taken`]
//!    plus Portcullis, the image and the incoming tree, then [`layout::place_report`]; on error
//!    the host boots without a crash region (or report), and the binary logs why.
//! 5. [`devices::DeviceMap::decide`] which devices the host may touch (default-deny), then
//!    [`host_tree::build_host_tree`] with the placed region and the withheld devices disabled, then
//!    [`layout::place_dtb`] for the result (with the crash region added to the taken ranges).
//! 6. [`address_map::assemble`] the host's [`crate::stage2::AddressMap`]: RAM, the SMMU frame,
//!    the ITS doorbells, the allowed device pages, the GIC pages Portcullis traps, and the ranges
//!    placed in 4.

pub mod address_map;
pub mod cmdline;
pub mod devices;
pub mod heap;
pub mod host_tree;
pub mod layout;
pub mod pci_scan;
pub mod phases;
