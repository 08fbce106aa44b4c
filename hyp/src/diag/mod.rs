//! What Portcullis says, and how much of it the host can make it say: a rate limiter for log lines
//! the host can trigger at will, and the bounded waits of a console the host also owns.

pub mod console_tx;
pub mod ns16550;
pub mod ratelimit;

pub use console_tx::{BoundedTx, TxPort, acquire_within};
pub use ratelimit::RateLimit;
