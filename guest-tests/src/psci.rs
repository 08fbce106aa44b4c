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

/// The function IDs the payloads use (the SMC64 forms where there are two), from the smccc crate.
pub use smccc::psci::{
    PSCI_AFFINITY_INFO_64 as AFFINITY_INFO, PSCI_CPU_OFF as CPU_OFF, PSCI_CPU_ON_64 as CPU_ON,
    PSCI_CPU_SUSPEND_64 as CPU_SUSPEND, PSCI_FEATURES as FEATURES,
    PSCI_MIGRATE_INFO_TYPE as MIGRATE_INFO_TYPE, PSCI_SYSTEM_OFF as SYSTEM_OFF,
    PSCI_SYSTEM_SUSPEND_64 as SYSTEM_SUSPEND, PSCI_VERSION as VERSION,
};

/// PSCI return codes as a caller reads them in x0 (sign-extended), from the smccc crate's.
pub mod code {
    use smccc::psci::error;
    pub const NOT_SUPPORTED: i64 = error::NOT_SUPPORTED as i64;
    pub const INVALID_PARAMETERS: i64 = error::INVALID_PARAMETERS as i64;
    pub const ALREADY_ON: i64 = error::ALREADY_ON as i64;
    pub const ON_PENDING: i64 = error::ON_PENDING as i64;
    pub const INVALID_ADDRESS: i64 = error::INVALID_ADDRESS as i64;
}
pub use code::NOT_SUPPORTED;

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
