//! The power state of each CPU, as Portcullis sees it through the host's PSCI calls, and where a
//! CPU being started enters the host.
//!
//! | state     | how it is reached                                       | CPU_ON answers |
//! |-----------|---------------------------------------------------------|----------------|
//! | Off       | at boot (secondaries); CPU_OFF; firmware refused CPU_ON | starts it      |
//! | Claimed   | a CPU_ON is recording the entry point                   | ON_PENDING     |
//! | OnPending | entry point recorded, firmware asked to start the CPU   | ON_PENDING     |
//! | On        | the CPU reached Portcullis' secondary entry (or booted) | ALREADY_ON     |
//!
//! A racing second CPU_ON never touches the first one's entry point: only the CPU_ON that moves
//! Off → Claimed writes it, and the CPU reads it only after moving OnPending → On.
//!
//! **A CPU that arrives with no pending entry.** Portcullis gives firmware its secondary entry only
//! after the target's state is OnPending, and the state leaves OnPending only when that CPU
//! arrives (→ On) or firmware refused to start it (→ Off). The entry point is stored before the
//! state becomes OnPending (release) and read after the arrival's compare-and-swap (acquire), so a
//! CPU that finds OnPending always finds its entry: there is no "OnPending without an entry" case
//! to panic on. A CPU that arrives in any other state was started by firmware without a request
//! Portcullis made (or after firmware reported it could not): the host cannot cause that, and
//! the CPU has nowhere to go, so it is parked (turned off again), never entered into the host.
//!
//! Lock-free: a CPU_ON on a trap path never waits for another CPU.

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use platform::addr::{Pa, PhysRange};

use super::psci::code;

/// The affinity fields of `MPIDR_EL1` (Aff3, Aff2, Aff1, Aff0; ARM ARM D23.2 "MPIDR_EL1"): what
/// the device tree's `reg` of a CPU and PSCI's `target_cpu` name.
pub const MPIDR_AFFINITY: u64 = 0xff_00ff_ffff;

/// Whether a CPU may enter the host at `entry` (PSCI CPU_ON's entry point): inside host RAM and
/// outside Portcullis' own memory; anything else is INVALID_ADDRESS.
pub fn entry_allowed(ram: &[PhysRange], hyp: PhysRange, entry: u64) -> bool {
    ram.iter().any(|r| r.contains(Pa(entry))) && !hyp.contains(Pa(entry))
}

/// Portcullis' index of a CPU (its EL2 stack, `TPIDR_EL2`, its entry in a [`CpuTable`]) from its
/// position in the device tree: the boot CPU is 0 wherever the tree lists it, and the CPU listed
/// first takes the boot CPU's position, so that no secondary is ever started on the boot CPU's
/// stack. A bijection on the positions.
pub const fn cpu_slot(tree_index: usize, boot_tree_index: usize) -> usize {
    if tree_index == boot_tree_index {
        0
    } else if tree_index == 0 {
        boot_tree_index
    } else {
        tree_index
    }
}

/// Power state of one CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CpuState {
    Off = 0,
    Claimed = 1,
    OnPending = 2,
    On = 3,
}

impl CpuState {
    fn from_raw(raw: u8) -> Self {
        match raw {
            0 => Self::Off,
            1 => Self::Claimed,
            2 => Self::OnPending,
            _ => Self::On,
        }
    }
}

/// Where a started CPU enters the host: EL1h at `pc` with x0 = `context`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostEntry {
    pub pc: u64,
    pub context: u64,
    /// Requested by the capture kernel (after the fence): the CPU enters under the crash-mode
    /// stage 2. A CPU the dead kernel asked for before the fence enters under the dead CPUs' one.
    pub capture: bool,
}

/// What a CPU reaching Portcullis' secondary entry does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Enter the host here.
    Enter(HostEntry),
    /// No CPU_ON is pending for it (the state it found): park it.
    Unexpected(CpuState),
}

/// The state of `N` CPUs (indexed as the device tree lists them).
#[derive(Debug)]
pub struct CpuTable<const N: usize> {
    state: [AtomicU8; N],
    pc: [AtomicU64; N],
    context: [AtomicU64; N],
    capture: [AtomicBool; N],
}

impl<const N: usize> Default for CpuTable<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> CpuTable<N> {
    /// Every CPU off.
    pub const fn new() -> Self {
        Self {
            state: [const { AtomicU8::new(CpuState::Off as u8) }; N],
            pc: [const { AtomicU64::new(0) }; N],
            context: [const { AtomicU64::new(0) }; N],
            capture: [const { AtomicBool::new(false) }; N],
        }
    }

    pub fn state(&self, cpu: usize) -> Option<CpuState> {
        self.state
            .get(cpu)
            .map(|s| CpuState::from_raw(s.load(Ordering::Acquire)))
    }

    /// The boot CPU runs without a CPU_ON.
    pub fn booted(&self, cpu: usize) {
        if let Some(s) = self.state.get(cpu) {
            s.store(CpuState::On as u8, Ordering::Release);
        }
    }

    /// A CPU_ON for `cpu`: records `entry` and returns `Ok` if the CPU was off (the caller then
    /// asks firmware to start it, and reports a refusal with [`firmware_refused`]); otherwise the
    /// PSCI code to answer, with nothing changed.
    ///
    /// [`firmware_refused`]: Self::firmware_refused
    pub fn request_on(&self, cpu: usize, entry: HostEntry) -> Result<(), i32> {
        let Some(state) = self.state.get(cpu) else {
            return Err(code::INVALID_PARAMETERS);
        };
        if let Err(now) = state.compare_exchange(
            CpuState::Off as u8,
            CpuState::Claimed as u8,
            Ordering::Acquire,
            Ordering::Acquire,
        ) {
            return Err(match CpuState::from_raw(now) {
                CpuState::On => code::ALREADY_ON,
                _ => code::ON_PENDING,
            });
        }
        // Only the claimant writes the entry.
        self.pc[cpu].store(entry.pc, Ordering::Relaxed);
        self.context[cpu].store(entry.context, Ordering::Relaxed);
        self.capture[cpu].store(entry.capture, Ordering::Relaxed);
        state.store(CpuState::OnPending as u8, Ordering::Release);
        Ok(())
    }

    /// Firmware did not start `cpu` after [`request_on`](Self::request_on): it is off again
    /// (unless it arrived after all).
    pub fn firmware_refused(&self, cpu: usize) {
        if let Some(s) = self.state.get(cpu) {
            let _ = s.compare_exchange(
                CpuState::OnPending as u8,
                CpuState::Off as u8,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    /// `cpu` reached Portcullis' secondary entry.
    pub fn arrive(&self, cpu: usize) -> Arrival {
        let Some(state) = self.state.get(cpu) else {
            return Arrival::Unexpected(CpuState::Off);
        };
        match state.compare_exchange(
            CpuState::OnPending as u8,
            CpuState::On as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Arrival::Enter(HostEntry {
                pc: self.pc[cpu].load(Ordering::Relaxed),
                context: self.context[cpu].load(Ordering::Relaxed),
                capture: self.capture[cpu].load(Ordering::Relaxed),
            }),
            Err(now) => Arrival::Unexpected(CpuState::from_raw(now)),
        }
    }

    /// `cpu` (the calling CPU) is about to ask firmware to turn it off. Marked before the call, so
    /// that a CPU_ON racing with the power-down is asked of firmware (which knows whether the CPU
    /// is still on) rather than answered ALREADY_ON for a CPU about to be off for good.
    pub fn turning_off(&self, cpu: usize) {
        if let Some(s) = self.state.get(cpu) {
            s.store(CpuState::Off as u8, Ordering::Release);
        }
    }

    /// Firmware's CPU_OFF returned (it failed): the calling CPU `cpu` is still on.
    pub fn still_on(&self, cpu: usize) {
        self.booted(cpu);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::vec::Vec;

    #[test]
    fn entry_only_in_host_ram_outside_portcullis() {
        let ram = [
            PhysRange::new(0x4000_0000, 0x4000_0000).expect("range"),
            PhysRange::new(0x1_0000_0000, 0x1000_0000).expect("range"),
        ];
        let hyp = PhysRange::new(0x4020_0000, 0x200_0000).expect("range");
        for ok in [
            0x4000_0000,
            0x401f_fffc,
            0x4220_0000,
            0x7fff_fffc,
            0x1_0000_0000,
        ] {
            assert!(entry_allowed(&ram, hyp, ok), "{ok:#x}");
        }
        for bad in [
            0,
            0x0900_0000,
            0x4020_0000,
            0x421f_fffc,
            0x8000_0000,
            0x1_1000_0000,
            u64::MAX,
        ] {
            assert!(!entry_allowed(&ram, hyp, bad), "{bad:#x}");
        }
    }

    #[test]
    fn affinity_drops_mt_and_u_bits() {
        // MPIDR_EL1 with RES1 (bit 31), U (bit 30) and MT (bit 24) set: Aff3.Aff2.Aff1.Aff0 only.
        let mpidr: u64 = (1 << 31) | (1 << 30) | (1 << 24) | 0x7f_0012_0304;
        assert_eq!(mpidr & MPIDR_AFFINITY, 0x7f_0012_0304);
    }

    const E1: HostEntry = HostEntry {
        pc: 0x4008_0000,
        context: 1,
        capture: false,
    };
    const E2: HostEntry = HostEntry {
        pc: 0x4009_0000,
        context: 2,
        capture: true,
    };

    #[test]
    fn cpu_on_then_arrival() {
        let t = CpuTable::<4>::new();
        t.booted(0);
        assert_eq!(t.request_on(1, E1), Ok(()));
        assert_eq!(t.state(1), Some(CpuState::OnPending));
        assert_eq!(t.arrive(1), Arrival::Enter(E1));
        assert_eq!(t.state(1), Some(CpuState::On));
    }

    #[test]
    fn a_second_cpu_on_never_replaces_the_pending_entry() {
        let t = CpuTable::<4>::new();
        assert_eq!(t.request_on(1, E1), Ok(()));
        assert_eq!(t.request_on(1, E2), Err(code::ON_PENDING));
        assert_eq!(t.arrive(1), Arrival::Enter(E1));
        assert_eq!(t.request_on(1, E2), Err(code::ALREADY_ON));
        // The boot CPU is on from the start.
        t.booted(0);
        assert_eq!(t.request_on(0, E2), Err(code::ALREADY_ON));
    }

    #[test]
    fn off_and_on_again() {
        let t = CpuTable::<4>::new();
        assert_eq!(t.request_on(2, E1), Ok(()));
        t.arrive(2);
        t.turning_off(2);
        assert_eq!(t.request_on(2, E2), Ok(()));
        assert_eq!(t.arrive(2), Arrival::Enter(E2));
        // A CPU_OFF that firmware refused leaves the CPU on.
        t.turning_off(2);
        t.still_on(2);
        assert_eq!(t.request_on(2, E1), Err(code::ALREADY_ON));
    }

    #[test]
    fn firmware_refusal_turns_it_off_again() {
        let t = CpuTable::<4>::new();
        assert_eq!(t.request_on(3, E1), Ok(()));
        t.firmware_refused(3);
        assert_eq!(t.state(3), Some(CpuState::Off));
        assert_eq!(t.request_on(3, E2), Ok(()));
        assert_eq!(t.arrive(3), Arrival::Enter(E2));
        // A refusal reported after the CPU arrived changes nothing.
        t.firmware_refused(3);
        assert_eq!(t.state(3), Some(CpuState::On));
    }

    #[test]
    fn an_unrequested_arrival_is_parked() {
        let t = CpuTable::<4>::new();
        assert_eq!(t.arrive(1), Arrival::Unexpected(CpuState::Off));
        t.booted(0);
        assert_eq!(t.arrive(0), Arrival::Unexpected(CpuState::On));
        assert_eq!(t.arrive(9), Arrival::Unexpected(CpuState::Off));
        // Arriving twice for one CPU_ON: the second is parked.
        assert_eq!(t.request_on(2, E1), Ok(()));
        assert_eq!(t.arrive(2), Arrival::Enter(E1));
        assert_eq!(t.arrive(2), Arrival::Unexpected(CpuState::On));
    }

    #[test]
    fn slots_are_a_bijection_with_the_boot_cpu_first() {
        for n in 1..8 {
            for boot in 0..n {
                let mut slots: Vec<usize> = (0..n).map(|i| cpu_slot(i, boot)).collect();
                assert_eq!(slots[boot], 0);
                slots.sort_unstable();
                assert_eq!(
                    slots,
                    (0..n).collect::<Vec<_>>(),
                    "boot CPU at {boot} of {n}"
                );
            }
        }
    }

    #[test]
    fn index_out_of_range_is_invalid_parameters() {
        let t = CpuTable::<2>::new();
        assert_eq!(t.request_on(2, E1), Err(code::INVALID_PARAMETERS));
        assert_eq!(t.state(2), None);
    }

    /// Many threads race CPU_ON for one CPU while it arrives: exactly one request wins, the CPU
    /// enters with the winner's entry, and every loser was answered ON_PENDING or ALREADY_ON.
    #[test]
    fn racing_cpu_ons() {
        for round in 0..200u64 {
            let t = Arc::new(CpuTable::<2>::new());
            let threads: Vec<_> = (0..4u64)
                .map(|i| {
                    let t = Arc::clone(&t);
                    std::thread::spawn(move || {
                        let e = HostEntry {
                            pc: 0x1000 * (i + 1),
                            context: round,
                            capture: i % 2 == 1,
                        };
                        (e, t.request_on(1, e))
                    })
                })
                .collect();
            let arrival = loop {
                match t.arrive(1) {
                    Arrival::Enter(e) => break e,
                    Arrival::Unexpected(_) => std::hint::spin_loop(),
                }
            };
            let results: Vec<_> = threads
                .into_iter()
                .map(|h| h.join().expect("CPU_ON thread"))
                .collect();
            let winners: Vec<_> = results.iter().filter(|(_, r)| r.is_ok()).collect();
            assert_eq!(winners.len(), 1);
            assert_eq!(winners[0].0, arrival);
            for (_, r) in &results {
                assert!(matches!(
                    r,
                    Ok(()) | Err(code::ON_PENDING) | Err(code::ALREADY_ON)
                ));
            }
        }
    }
}
