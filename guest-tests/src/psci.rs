//! PSCI calls from EL1, through the conduit the device tree names (Portcullis traps both).

use core::sync::atomic::{AtomicBool, Ordering};

static USE_HVC: AtomicBool = AtomicBool::new(false);

pub fn init(hvc: bool) {
    USE_HVC.store(hvc, Ordering::Relaxed);
}

/// A raw SMCCC call; returns x0–x3.
pub fn call(function: u32, a: u64, b: u64, c: u64) -> [u64; 4] {
    let mut args = [0u64; 17];
    args[0] = a;
    args[1] = b;
    args[2] = c;
    let r = if USE_HVC.load(Ordering::Relaxed) {
        smccc::hvc64(function, args)
    } else {
        smccc::smc64(function, args)
    };
    [r[0], r[1], r[2], r[3]]
}

pub const VERSION: u32 = 0x8400_0000;
pub const CPU_OFF: u32 = 0x8400_0002;
pub const CPU_ON: u32 = 0xc400_0003;
pub const AFFINITY_INFO: u32 = 0xc400_0004;
pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
pub const SYSTEM_OFF: u32 = 0x8400_0008;
pub const FEATURES: u32 = 0x8400_000a;
pub const NOT_SUPPORTED: i64 = -1;

pub fn version() -> u64 {
    call(VERSION, 0, 0, 0)[0]
}

pub fn cpu_on(mpidr: u64, entry: u64, context: u64) -> i64 {
    call(CPU_ON, mpidr, entry, context)[0] as i64
}

pub fn cpu_off() -> i64 {
    call(CPU_OFF, 0, 0, 0)[0] as i64
}

/// 0 = on, 1 = off, 2 = on pending.
pub fn affinity_info(mpidr: u64) -> i64 {
    call(AFFINITY_INFO, mpidr, 0, 0)[0] as i64
}
