//! Tests of the emulated SMMU.

mod bounded;
mod bringup;
mod fast;
mod msi;
mod on_demand;
mod phys_commands;
mod props;

/// The fakes, shared with the fuzz targets (`fuzz/`, feature `testing`).
use super::testing as fakes;
