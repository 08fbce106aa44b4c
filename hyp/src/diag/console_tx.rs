//! Bounded console output. The host owns the UART Portcullis logs to, and may disable its
//! transmitter: a real PL011's FIFO then never drains. A character waits at most a budget of
//! counter time for room in the FIFO; past it the console is *stalled*: characters are dropped
//! (and counted) without waiting for as long as the FIFO stays full, and the count is reported once
//! output works again. Taking the console lock is bounded the same way.

/// The transmit side of a UART.
pub trait TxPort {
    fn tx_full(&self) -> bool;
    fn put(&mut self, byte: u8);
}

/// How long one character may wait, in counter ticks and in polls (whichever ends first, so that a
/// counter that does not advance cannot make the wait unbounded).
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub ticks: u64,
    pub polls: u32,
}

/// Transmission state of one console.
#[derive(Debug, Default)]
pub struct BoundedTx {
    stalled: bool,
    dropped: u64,
}

impl BoundedTx {
    pub const fn new() -> Self {
        Self {
            stalled: false,
            dropped: 0,
        }
    }

    /// Sends `byte` if the FIFO has room within `budget`; returns whether it was sent.
    pub fn put<P: TxPort>(
        &mut self,
        port: &mut P,
        byte: u8,
        clock: &mut impl FnMut() -> u64,
        budget: Budget,
    ) -> bool {
        if self.stalled {
            if port.tx_full() {
                self.dropped += 1;
                return false;
            }
            self.stalled = false;
        }
        let start = clock();
        let mut polls = 0u32;
        while port.tx_full() {
            polls += 1;
            if polls >= budget.polls || clock().wrapping_sub(start) >= budget.ticks {
                self.stalled = true;
                self.dropped += 1;
                return false;
            }
            core::hint::spin_loop();
        }
        port.put(byte);
        true
    }

    /// The characters dropped since the last call, once the console is not stalled (0 otherwise).
    pub fn take_dropped(&mut self) -> u64 {
        if self.stalled {
            0
        } else {
            core::mem::take(&mut self.dropped)
        }
    }

    pub fn is_stalled(&self) -> bool {
        self.stalled
    }
}

/// Tries `try_once` until it succeeds or `budget` runs out.
pub fn acquire_within<T>(
    mut try_once: impl FnMut() -> Option<T>,
    clock: &mut impl FnMut() -> u64,
    budget: Budget,
) -> Option<T> {
    let start = clock();
    let mut polls = 0u32;
    loop {
        if let Some(t) = try_once() {
            return Some(t);
        }
        polls += 1;
        if polls >= budget.polls || clock().wrapping_sub(start) >= budget.ticks {
            return None;
        }
        core::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A PL011 whose transmitter may be disabled: the FIFO (4 deep) drains one byte per poll while
    /// enabled, never while disabled.
    struct FakeUart {
        enabled: bool,
        fifo: usize,
        sent: Vec<u8>,
        polls: Cell<u64>,
    }

    impl TxPort for FakeUart {
        fn tx_full(&self) -> bool {
            self.polls.set(self.polls.get() + 1);
            self.fifo >= 4
        }
        fn put(&mut self, byte: u8) {
            self.fifo += 1;
            self.sent.push(byte);
        }
    }

    impl FakeUart {
        fn drain(&mut self) {
            if self.enabled {
                self.fifo = self.fifo.saturating_sub(1);
            }
        }
    }

    const BUDGET: Budget = Budget {
        ticks: 100,
        polls: 1_000_000,
    };

    #[test]
    fn a_working_uart_loses_nothing() {
        let mut uart = FakeUart {
            enabled: true,
            fifo: 0,
            sent: Vec::new(),
            polls: Cell::new(0),
        };
        let mut tx = BoundedTx::new();
        let mut t = 0;
        for &b in b"hello, world" {
            uart.drain();
            assert!(tx.put(
                &mut uart,
                b,
                &mut || {
                    t += 1;
                    t
                },
                BUDGET
            ));
        }
        assert_eq!(uart.sent, b"hello, world");
        assert_eq!(tx.take_dropped(), 0);
    }

    #[test]
    fn a_disabled_transmitter_costs_one_budget_then_nothing() {
        let mut uart = FakeUart {
            enabled: false,
            fifo: 4,
            sent: Vec::new(),
            polls: Cell::new(0),
        };
        let mut tx = BoundedTx::new();
        let mut t = 0u64;
        let mut clock = || {
            t += 1;
            t
        };
        for &b in b"a line of a thousand characters..." {
            assert!(!tx.put(&mut uart, b, &mut clock, BUDGET));
        }
        // One budget of waiting for the first character; one poll each for the rest.
        assert!(uart.polls.get() < 100 + 40, "{}", uart.polls.get());
        assert!(tx.is_stalled());
        assert_eq!(tx.take_dropped(), 0, "not reported while still stalled");
        // The host enables its UART again: output resumes and the loss is reported.
        uart.enabled = true;
        uart.drain();
        assert!(tx.put(&mut uart, b'x', &mut clock, BUDGET));
        assert_eq!(tx.take_dropped(), 34);
        assert_eq!(tx.take_dropped(), 0);
    }

    #[test]
    fn a_counter_that_stops_cannot_make_the_wait_unbounded() {
        let mut uart = FakeUart {
            enabled: false,
            fifo: 4,
            sent: Vec::new(),
            polls: Cell::new(0),
        };
        let mut tx = BoundedTx::new();
        let budget = Budget {
            ticks: 100,
            polls: 500,
        };
        assert!(!tx.put(&mut uart, b'a', &mut || 7, budget));
        assert!(uart.polls.get() <= 501);
    }

    #[test]
    fn acquire_gives_up_after_the_budget() {
        let mut t = 0u64;
        let mut clock = || {
            t += 1;
            t
        };
        assert_eq!(acquire_within(|| None::<()>, &mut clock, BUDGET), None);
        let mut tries = 0;
        let got = acquire_within(
            || {
                tries += 1;
                (tries == 3).then_some(42)
            },
            &mut clock,
            BUDGET,
        );
        assert_eq!(got, Some(42));
    }
}
