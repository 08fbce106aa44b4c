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
//! 4. [`layout::place_crash_region`] against [`layout::platform_taken`] plus Portcullis, the image
//!    and the incoming tree; on error, log it and boot without a crash region.
//! 5. [`devices::DeviceMap::decide`] which devices the host may touch (default-deny), then
//!    [`host_tree::build_host_tree`] with the placed region and the withheld devices disabled, then
//!    [`layout::place_dtb`] for the result (with the crash region added to the taken ranges); the
//!    allowed device pages become [`crate::stage2::AddressMap::devices`].

pub mod cmdline;
pub mod devices;
pub mod heap;
pub mod host_tree;
pub mod layout;
pub mod pci_scan;
