//! Board support for Portcullis.
//!
//! Everything here is portable: it takes plain data (a flattened device tree) and returns plain data
//! (the address map of the machine), so it builds and is tested on the development host with
//! `cargo test`. Nothing in this crate touches a system register or MMIO.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod addr;
pub mod boards;
pub mod console;
pub mod devtree;
pub mod fdt;
pub mod sort;
