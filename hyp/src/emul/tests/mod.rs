//! Tests of the emulated SMMU.

mod bringup;
mod fakes;
mod props;
