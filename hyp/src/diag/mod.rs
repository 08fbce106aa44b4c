//! What Portcullis says, and how much of it the host can make it say: a rate limiter for log lines
//! the host can trigger at will, the bounded waits of a console the host also owns, and counters of
//! what the host makes Portcullis do.

pub mod console_tx;
pub mod counters;
pub mod ns16550;
pub mod ratelimit;

pub use console_tx::{BoundedTx, TxPort, acquire_within};
pub use ratelimit::RateLimit;
