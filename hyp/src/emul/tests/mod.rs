//! Tests of the emulated SMMU.

mod bounded;
mod bringup;
mod fakes;
mod props;
