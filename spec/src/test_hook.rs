//! Portcullis' test hooks: the SMCCC function IDs that only a test build of Portcullis (cargo
//! feature `test-hooks`) answers, so guest payloads can prove what they cannot see (that nothing
//! landed in Portcullis' own memory or the fault report, which faults the SMMU recorded, where the
//! trap path's time goes). Not an Arm number: Portcullis' own, in the range SMCCC gives a
//! hypervisor (fast calls, SMC64, owner 6 "standard hypervisor service", `0xC600_01xx`). One copy,
//! named by the hypervisor (`hyp/src/test_hooks.rs`, which answers) and the payloads
//! (`guest-tests/src/hooks.rs`, which call over HVC). A release build answers each NOT_SUPPORTED
//! (x0 = -1) like any unknown call.
//!
//! | function id   | x1        | returns                                                          |
//! |---------------|-----------|------------------------------------------------------------------|
//! | [`CANARY`]    | —         | x0 = 0, x1 = base, x2 = size of the image canary, x3 = checksum   |
//! | [`FAULTS`]    | StreamID  | x0 = 0, x1 = faults recorded for it, x2 = latest input address,  |
//! |               |           | x3 = (event type << 8) \| 1 if that access was a write            |
//! | [`MODE`]      | —         | x0 = 0, x1 = 1 in crash mode (fence raised) else 0,               |
//! |               |           | x2 = fence window in ns, x3 = streams terminated                   |
//! | [`CANARIES`]  | index *i* | x0 = 0, x1 = address of canary page *i*, x2 = its size,           |
//! |               |           | x3 = number of canary pages; x0 = -2 if *i* is out of range        |
//! | [`INTEGRITY`] | —         | x0 = 0, x1 = checksum of Portcullis' text + rodata, x2 = checksum |
//! |               |           | of every canary page, x3 = bit *i* set if canary *i* lost its pattern |
//! | [`REPORT`]    | —         | x0 = 0, x1 = checksum of the fault report region now, x2 = its    |
//! |               |           | checksum right after Portcullis last wrote it, x3 = how many times |
//! |               |           | Portcullis wrote it (0 and x1 = x2 = 0 without a report region)    |
//! | [`PROFILE`]   | 0 or *n*  | 0: zeroes the trap-path profile; *n*: logs it per stage, in ns per |
//! |               |           | *n* operations (x0 = 0; zeros without the `profile` feature)        |
//! | [`COUNTERS`]  | —         | logs the counters line (`at=hook`, `portcullis::diag::counters`); |
//! |               |           | x0 = 0, x1 = traps so far, x2 = physical SMMU register accesses,  |
//! |               |           | x3 = CMD_SYNC MSIs aborted << 32 \| MSIs written                  |

pub const CANARY: u32 = 0xc600_0100;
pub const FAULTS: u32 = 0xc600_0101;
pub const MODE: u32 = 0xc600_0102;
pub const CANARIES: u32 = 0xc600_0103;
pub const INTEGRITY: u32 = 0xc600_0104;
pub const REPORT: u32 = 0xc600_0105;
pub const PROFILE: u32 = 0xc600_0106;
pub const COUNTERS: u32 = 0xc600_0107;

/// Every hook, in ID order.
pub const ALL: [u32; 8] = [
    CANARY, FAULTS, MODE, CANARIES, INTEGRITY, REPORT, PROFILE, COUNTERS,
];

/// The first ID past the last hook: answered NOT_SUPPORTED like any unknown call (the hostile
/// payloads probe it).
pub const END: u32 = COUNTERS + 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_contiguous_below_end() {
        for (i, id) in ALL.iter().enumerate() {
            assert_eq!(*id, CANARY + i as u32);
        }
        assert_eq!(END, ALL[ALL.len() - 1] + 1);
    }
}
