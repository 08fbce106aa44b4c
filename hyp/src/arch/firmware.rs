//! Calls into the firmware below Portcullis (PSCI through SMC or HVC, as the device tree says).

use platform::devtree::Conduit;
use smccc::psci::{PSCI_CPU_ON_64, PSCI_SYSTEM_OFF};
use spin::Once;

static CONDUIT: Once<Conduit> = Once::new();

/// Records how firmware is called. Portcullis runs at EL2, so an "hvc" conduit would call itself:
/// that is refused by the caller before this.
pub fn init(conduit: Conduit) {
    CONDUIT.call_once(|| conduit);
}

/// A raw SMCCC call with up to four arguments; returns x0–x3.
pub fn call(function: u32, args: [u64; 3]) -> [u64; 4] {
    let mut a = [0u64; 17];
    a[..3].copy_from_slice(&args);
    let r = match CONDUIT.get() {
        Some(Conduit::Hvc) => smccc::hvc64(function, a),
        _ => smccc::smc64(function, a),
    };
    [r[0], r[1], r[2], r[3]]
}

/// Starts CPU `mpidr` at Portcullis' secondary entry with `context` in x0. Returns the PSCI status.
pub fn cpu_on(mpidr: u64, entry: u64, context: u64) -> i64 {
    call(PSCI_CPU_ON_64, [mpidr, entry, context])[0] as i64
}

/// Turns the machine off (used after a fatal error, so QEMU exits instead of hanging).
pub fn system_off() -> ! {
    call(PSCI_SYSTEM_OFF, [0; 3]);
    loop {
        core::hint::spin_loop();
    }
}
