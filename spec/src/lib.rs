//! Numbers the Arm specifications define that both the hypervisor (`portcullis`) and the bare-metal
//! guest payloads (`portcullis-guest-tests`) name, and the one interface between them that is
//! Portcullis' own (the test hooks' function IDs). The payloads have no allocator, so this crate
//! uses none and depends on nothing: one copy of each table, with the least coupling.

#![no_std]

pub mod gic;
pub mod smmu_event;
pub mod test_hook;
