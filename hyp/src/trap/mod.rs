//! What a trap from the host means: syndrome decoding, PSCI/SMCCC calls, abort injection. This is
//! the decoder; the binary's dispatcher (`src/dispatch.rs`) reads the registers, calls it, and
//! sends each trap where it is answered.
//!
//! Pure computation from the raw register values the arch layer reads on a trap to EL2, to the
//! values it writes back:
//! - [`esr`]: `ESR_EL2` decoded into an [`Exception`], and the faulting IPA from `HPFAR_EL2`;
//! - [`mmio`]: a data abort on an emulated frame as an [`MmioAccess`] (or why it cannot be one);
//! - [`psci`]: an SMC / HVC classified as a [`Call`], and the [`Action`] Portcullis takes;
//! - [`inject`]: the registers that inject a synchronous external abort into the host, and the
//!   ELR that skips an emulated instruction;
//! - [`vtimer`]: a trapped access to the EL1 virtual timer (crash mode) and which register it names.

pub mod cpus;
pub mod esr;
pub mod inject;
pub mod mmio;
pub mod psci;
pub mod vtimer;

pub use esr::{DataAbort, Exception, FaultStatus, InstructionAbort, InstructionLength, Syndrome};
pub use inject::{
    Abort, GuestState, InjectError, Injection, inject_external_abort, skip_instruction,
};
pub use mmio::{MmioAccess, MmioError, load_result};
pub use psci::{Action, Call, classify, decide};
