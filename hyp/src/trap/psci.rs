//! The host's SMC (trapped by `HCR_EL2.TSC`) and HVC calls: classification by the SMC Calling
//! Convention (Arm DEN 0028) and the PSCI specification (Arm DEN 0022), and what Portcullis does
//! with each.
//!
//! Portcullis passes through what the host needs to manage CPUs and the system, intercepts CPU_ON
//! (a secondary CPU must enter Portcullis at EL2 first), answers the SMCCC discovery calls itself,
//! and refuses everything else with NOT_SUPPORTED. Refused on purpose: CPU_SUSPEND and
//! SYSTEM_SUSPEND (firmware would resume the CPU at EL2 without Portcullis' state), MIGRATE, and
//! every SiP / OEM / Trusted OS service (the host has no business talking to secure firmware behind
//! Portcullis' back).

use tock_registers::LocalRegisterCopy;
use tock_registers::register_bitfields;

/// PSCI return codes (DEN 0022, "Return error codes"), as the signed 32-bit values the spec gives
/// (the smccc crate's).
pub mod code {
    pub use smccc::psci::error::{
        ALREADY_ON, DENIED, DISABLED, INTERNAL_FAILURE, INVALID_ADDRESS, INVALID_PARAMETERS,
        NOT_PRESENT, NOT_SUPPORTED, ON_PENDING, SUCCESS,
    };
}

/// A return code as the host reads it in x0: sign-extended to 64 bits (so that both a 32-bit
/// caller reading w0 and a 64-bit one reading x0 see the negative value).
pub const fn x0(code: i32) -> u64 {
    code as i64 as u64
}

/// `NOT_SUPPORTED` in x0, the answer to every call Portcullis does not know.
pub const NOT_SUPPORTED: u64 = x0(code::NOT_SUPPORTED);

/// SMCCC_VERSION: the SMC Calling Convention version Portcullis implements towards the host.
pub const SMCCC_VERSION_ID: u32 = smccc::arch::SMCCC_VERSION;
/// SMCCC_ARCH_FEATURES.
pub const SMCCC_ARCH_FEATURES_ID: u32 = smccc::arch::SMCCC_ARCH_FEATURES;
/// The SMCCC version Portcullis answers: v1.1.
pub const SMCCC_VERSION: smccc::arch::Version = smccc::arch::Version { major: 1, minor: 1 };
/// [`SMCCC_VERSION`] as x0 holds it: major in bits [30:16], minor in bits [15:0].
pub const SMCCC_VERSION_1_1: u64 =
    ((SMCCC_VERSION.major as u64) << 16) | SMCCC_VERSION.minor as u64;

register_bitfields! [u32,
    /// An SMCCC Function Identifier (DEN 0028, "Function Identifiers").
    pub FUNCTION_ID [
        /// 1 for a Fast Call, 0 for a Yielding Call.
        FAST OFFSET(31) NUMBITS(1) [],
        /// Calling convention: SMC32/HVC32 (0) or SMC64/HVC64 (1).
        SMC64 OFFSET(30) NUMBITS(1) [],
        /// Owning Entity Number.
        OWNER OFFSET(24) NUMBITS(6) [
            Arm = 0,
            Cpu = 1,
            SiP = 2,
            Oem = 3,
            StandardSecure = 4,
            StandardHypervisor = 5,
            VendorHypervisor = 6,
            VendorEl3 = 7
        ],
        /// Must be zero for Fast Calls (bit 16 is the SVE live-state hint from SMCCC v1.3; a
        /// v1.1 caller never sets it).
        MBZ OFFSET(16) NUMBITS(8) [],
        FUNCTION_NUMBER OFFSET(0) NUMBITS(16) []
    ]
];

/// The register width of a call (SMC32 / HVC32 or SMC64 / HVC64).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Convention {
    /// Arguments and results are 32 bits; the upper halves of x1..x3 are ignored.
    Smc32,
    Smc64,
}

/// The PSCI functions (DEN 0022 v1.3, function numbers 0x00..=0x15 of the Standard Secure
/// Service).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PsciFunction {
    Version,
    CpuSuspend,
    CpuOff,
    CpuOn,
    AffinityInfo,
    Migrate,
    MigrateInfoType,
    MigrateInfoUpCpu,
    SystemOff,
    SystemReset,
    Features,
    CpuFreeze,
    CpuDefaultSuspend,
    NodeHwState,
    SystemSuspend,
    SetSuspendMode,
    StatResidency,
    StatCount,
    SystemReset2,
    MemProtect,
    MemProtectCheckRange,
    SystemOff2,
}

impl PsciFunction {
    /// Every function, in function-number order.
    pub const ALL: [Self; 22] = [
        Self::Version,
        Self::CpuSuspend,
        Self::CpuOff,
        Self::CpuOn,
        Self::AffinityInfo,
        Self::Migrate,
        Self::MigrateInfoType,
        Self::MigrateInfoUpCpu,
        Self::SystemOff,
        Self::SystemReset,
        Self::Features,
        Self::CpuFreeze,
        Self::CpuDefaultSuspend,
        Self::NodeHwState,
        Self::SystemSuspend,
        Self::SetSuspendMode,
        Self::StatResidency,
        Self::StatCount,
        Self::SystemReset2,
        Self::MemProtect,
        Self::MemProtectCheckRange,
        Self::SystemOff2,
    ];

    /// The function number (bits [15:0] of the function ID).
    pub const fn number(self) -> u16 {
        self as u16
    }

    /// Whether the function has an SMC64 form (those that take an address or an MPIDR).
    pub const fn has_smc64(self) -> bool {
        matches!(
            self,
            Self::CpuSuspend
                | Self::CpuOn
                | Self::AffinityInfo
                | Self::Migrate
                | Self::MigrateInfoUpCpu
                | Self::CpuDefaultSuspend
                | Self::NodeHwState
                | Self::SystemSuspend
                | Self::StatResidency
                | Self::StatCount
                | Self::SystemReset2
                | Self::MemProtectCheckRange
                | Self::SystemOff2
        )
    }

    /// The SMC32 function ID (every PSCI function has one).
    pub const fn smc32_id(self) -> u32 {
        0x8400_0000 | self.number() as u32
    }

    /// The function ID in the given convention, if the function exists in it.
    pub const fn id(self, convention: Convention) -> Option<u32> {
        match convention {
            Convention::Smc32 => Some(self.smc32_id()),
            Convention::Smc64 if self.has_smc64() => Some(0xc400_0000 | self.number() as u32),
            Convention::Smc64 => None,
        }
    }

    fn from_number(number: u32) -> Option<Self> {
        Self::ALL.get(usize::try_from(number).ok()?).copied()
    }

    /// Whether Portcullis passes this function through to firmware (possibly intercepted).
    pub const fn is_proxied(self) -> bool {
        matches!(
            self,
            Self::Version
                | Self::CpuOn
                | Self::CpuOff
                | Self::AffinityInfo
                | Self::SystemOff
                | Self::SystemReset
                | Self::MigrateInfoType
                | Self::Features
        )
    }
}

/// A classified SMC or HVC call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// SMCCC_VERSION (0x8000_0000).
    SmcccVersion,
    /// SMCCC_ARCH_FEATURES (0x8000_0001) asking about `function_id`.
    SmcccArchFeatures { function_id: u32 },
    /// A PSCI call, with x1..x3 (truncated to 32 bits for SMC32).
    Psci {
        function: PsciFunction,
        convention: Convention,
        args: [u64; 3],
    },
    /// Anything else.
    Unknown { function_id: u32 },
}

/// What Portcullis does with a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Make the same call to firmware (with the truncated arguments) and hand its x0..x3 back to
    /// the host.
    Forward { function_id: u32, args: [u64; 3] },
    /// CPU_ON, intercepted: ask firmware to start `target_cpu` (an MPIDR) at Portcullis' own EL2
    /// entry; once that CPU has set itself up, it enters the host at `entry` (an IPA, to be checked
    /// against the CPU policy) in EL1h with x0 = `context`. Firmware's answer goes to the host.
    CpuOn {
        target_cpu: u64,
        entry: u64,
        context: u64,
        convention: Convention,
    },
    /// CPU_OFF: the calling CPU is marked off (see [`super::cpus`]), then the call goes to
    /// firmware; if firmware returns (it refused), the CPU is on again and x0..x3 go to the host.
    CpuOff { function_id: u32 },
    /// Answer the host directly with this x0, without calling firmware.
    Return(u64),
}

/// Classifies a call from the host's x0..x3. The function ID is w0 (the upper half of x0 is
/// ignored, as the SMCCC says).
pub fn classify(regs: &[u64; 4]) -> Call {
    let function_id = regs[0] as u32;
    let id = LocalRegisterCopy::<u32, FUNCTION_ID::Register>::new(function_id);
    let convention = if id.is_set(FUNCTION_ID::SMC64) {
        Convention::Smc64
    } else {
        Convention::Smc32
    };
    let truncate = |value: u64| match convention {
        Convention::Smc32 => value & 0xffff_ffff,
        Convention::Smc64 => value,
    };
    let args = [truncate(regs[1]), truncate(regs[2]), truncate(regs[3])];
    match function_id {
        SMCCC_VERSION_ID => return Call::SmcccVersion,
        SMCCC_ARCH_FEATURES_ID => {
            return Call::SmcccArchFeatures {
                function_id: args[0] as u32,
            };
        }
        _ => {}
    }
    let standard_secure_fast_call = id.is_set(FUNCTION_ID::FAST)
        && id.matches_all(FUNCTION_ID::OWNER::StandardSecure)
        && id.read(FUNCTION_ID::MBZ) == 0;
    if !standard_secure_fast_call {
        return Call::Unknown { function_id };
    }
    match PsciFunction::from_number(id.read(FUNCTION_ID::FUNCTION_NUMBER)) {
        Some(function) if function.id(convention) == Some(function_id) => Call::Psci {
            function,
            convention,
            args,
        },
        _ => Call::Unknown { function_id },
    }
}

/// Whether a CPU of the dead kernel — still running after the fence, bound by the frozen stage 2 —
/// may make `call`. It may turn itself off and ask questions; it may not start CPUs (they would
/// join the capture kernel), reset or power off the machine (the dump would be lost before the
/// capture kernel saves it), or anything else: those are answered DENIED without reaching firmware.
pub fn allowed_after_death(call: &Call) -> bool {
    match call {
        Call::SmcccVersion | Call::SmcccArchFeatures { .. } => true,
        Call::Psci { function, .. } => matches!(
            function,
            PsciFunction::Version
                | PsciFunction::Features
                | PsciFunction::CpuOff
                | PsciFunction::AffinityInfo
        ),
        Call::Unknown { .. } => true,
    }
}

/// What Portcullis does with `call` (see the module documentation).
pub fn decide(call: &Call) -> Action {
    match *call {
        Call::SmcccVersion => Action::Return(SMCCC_VERSION_1_1),
        // No architectural workarounds or SoC ID are offered to the host.
        Call::SmcccArchFeatures { .. } => Action::Return(NOT_SUPPORTED),
        Call::Psci {
            function: PsciFunction::CpuOn,
            convention,
            args,
        } => Action::CpuOn {
            target_cpu: args[0],
            entry: args[1],
            context: args[2],
            convention,
        },
        Call::Psci {
            function: PsciFunction::Features,
            args,
            ..
        } => features(args[0] as u32),
        Call::Psci {
            function: PsciFunction::CpuOff,
            ..
        } => Action::CpuOff {
            function_id: PsciFunction::CpuOff.smc32_id(),
        },
        Call::Psci {
            function,
            convention,
            args,
        } if function.is_proxied() => match function.id(convention) {
            Some(function_id) => Action::Forward { function_id, args },
            None => Action::Return(NOT_SUPPORTED),
        },
        Call::Psci { .. } | Call::Unknown { .. } => Action::Return(NOT_SUPPORTED),
    }
}

/// PSCI_FEATURES(`function_id`): firmware's answer for what Portcullis passes through, SUCCESS for
/// SMCCC_VERSION (which Portcullis implements itself; this is how a caller discovers SMCCC v1.1),
/// NOT_SUPPORTED for everything else.
fn features(function_id: u32) -> Action {
    match classify(&[u64::from(function_id), 0, 0, 0]) {
        Call::SmcccVersion => Action::Return(x0(code::SUCCESS)),
        Call::Psci { function, .. } if function.is_proxied() => Action::Forward {
            function_id: PsciFunction::Features.smc32_id(),
            args: [u64::from(function_id), 0, 0],
        },
        _ => Action::Return(NOT_SUPPORTED),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_dead_cpu_may_only_turn_itself_off_and_ask() {
        use super::*;
        let call = |function: PsciFunction| Call::Psci {
            function,
            convention: Convention::Smc64,
            args: [0; 3],
        };
        for f in PsciFunction::ALL {
            let allowed = matches!(
                f,
                PsciFunction::Version
                    | PsciFunction::Features
                    | PsciFunction::CpuOff
                    | PsciFunction::AffinityInfo
            );
            assert_eq!(allowed_after_death(&call(f)), allowed, "{f:?}");
        }
        assert!(!allowed_after_death(&call(PsciFunction::SystemReset)));
        assert!(!allowed_after_death(&call(PsciFunction::CpuOn)));
        assert!(allowed_after_death(&Call::SmcccVersion));
        // Unknown calls are answered NOT_SUPPORTED by `decide` anyway.
        assert!(allowed_after_death(&Call::Unknown {
            function_id: 0xc600_0000
        }));
    }

    use super::*;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    use smccc::psci::{
        PSCI_AFFINITY_INFO_64 as AFFINITY_INFO_64, PSCI_CPU_OFF as CPU_OFF,
        PSCI_CPU_ON_32 as CPU_ON_32, PSCI_CPU_ON_64 as CPU_ON_64,
        PSCI_CPU_SUSPEND_64 as CPU_SUSPEND_64, PSCI_FEATURES,
        PSCI_MIGRATE_INFO_TYPE as MIGRATE_INFO_TYPE, PSCI_SYSTEM_OFF as SYSTEM_OFF,
        PSCI_SYSTEM_RESET as SYSTEM_RESET, PSCI_SYSTEM_RESET2_64 as SYSTEM_RESET2_64,
        PSCI_SYSTEM_SUSPEND_64 as SYSTEM_SUSPEND_64, PSCI_VERSION,
    };

    /// Every function ID the smccc crate defines (PSCI 1.1) is the one `PsciFunction` computes.
    #[test]
    fn ids_match_the_smccc_crate() {
        use Convention::{Smc32, Smc64};
        use PsciFunction as F;
        use smccc::psci::*;
        let expected = [
            (F::Version, Smc32, PSCI_VERSION),
            (F::CpuSuspend, Smc32, PSCI_CPU_SUSPEND_32),
            (F::CpuSuspend, Smc64, PSCI_CPU_SUSPEND_64),
            (F::CpuOff, Smc32, PSCI_CPU_OFF),
            (F::CpuOn, Smc32, PSCI_CPU_ON_32),
            (F::CpuOn, Smc64, PSCI_CPU_ON_64),
            (F::AffinityInfo, Smc32, PSCI_AFFINITY_INFO_32),
            (F::AffinityInfo, Smc64, PSCI_AFFINITY_INFO_64),
            (F::Migrate, Smc32, PSCI_MIGRATE_32),
            (F::Migrate, Smc64, PSCI_MIGRATE_64),
            (F::MigrateInfoType, Smc32, PSCI_MIGRATE_INFO_TYPE),
            (F::MigrateInfoUpCpu, Smc32, PSCI_MIGRATE_INFO_UP_CPU_32),
            (F::MigrateInfoUpCpu, Smc64, PSCI_MIGRATE_INFO_UP_CPU_64),
            (F::SystemOff, Smc32, PSCI_SYSTEM_OFF),
            (F::SystemReset, Smc32, PSCI_SYSTEM_RESET),
            (F::SystemReset2, Smc32, PSCI_SYSTEM_RESET2_32),
            (F::SystemReset2, Smc64, PSCI_SYSTEM_RESET2_64),
            (F::MemProtect, Smc32, PSCI_MEM_PROTECT),
            (
                F::MemProtectCheckRange,
                Smc32,
                PSCI_MEM_PROTECT_CHECK_RANGE_32,
            ),
            (
                F::MemProtectCheckRange,
                Smc64,
                PSCI_MEM_PROTECT_CHECK_RANGE_64,
            ),
            (F::Features, Smc32, PSCI_FEATURES),
            (F::CpuFreeze, Smc32, PSCI_CPU_FREEZE),
            (F::CpuDefaultSuspend, Smc32, PSCI_CPU_DEFAULT_SUSPEND_32),
            (F::CpuDefaultSuspend, Smc64, PSCI_CPU_DEFAULT_SUSPEND_64),
            (F::NodeHwState, Smc32, PSCI_NODE_HW_STATE_32),
            (F::NodeHwState, Smc64, PSCI_NODE_HW_STATE_64),
            (F::SystemSuspend, Smc32, PSCI_SYSTEM_SUSPEND_32),
            (F::SystemSuspend, Smc64, PSCI_SYSTEM_SUSPEND_64),
            (F::SetSuspendMode, Smc32, PSCI_SET_SUSPEND_MODE),
            (F::StatResidency, Smc32, PSCI_STAT_RESIDENCY_32),
            (F::StatResidency, Smc64, PSCI_STAT_RESIDENCY_64),
            (F::StatCount, Smc32, PSCI_STAT_COUNT_32),
            (F::StatCount, Smc64, PSCI_STAT_COUNT_64),
        ];
        for (function, convention, id) in expected {
            assert_eq!(
                function.id(convention),
                Some(id),
                "{function:?} {convention:?}"
            );
        }
        // The SMCCC version answered is v1.1, encoded as the smccc crate does.
        assert_eq!(SMCCC_VERSION_1_1, u64::from(u32::from(SMCCC_VERSION)));
        assert_eq!(SMCCC_VERSION_1_1, 0x1_0001);
    }

    /// Every ID `classify` knows, written out from the specifications.
    fn known_ids() -> Vec<u32> {
        let mut ids = alloc::vec![SMCCC_VERSION_ID, SMCCC_ARCH_FEATURES_ID];
        ids.extend((0x8400_0000..=0x8400_0015).map(|id: u32| id));
        ids.extend([
            0xc400_0001,
            0xc400_0003,
            0xc400_0004,
            0xc400_0005,
            0xc400_0007,
            0xc400_000c,
            0xc400_000d,
            0xc400_000e,
            0xc400_0010,
            0xc400_0011,
            0xc400_0012,
            0xc400_0014,
            0xc400_0015,
        ]);
        ids
    }

    fn call(id: u32, a: u64, b: u64, c: u64) -> Call {
        classify(&[u64::from(id), a, b, c])
    }

    #[test]
    fn ids_round_trip() {
        for function in PsciFunction::ALL {
            for convention in [Convention::Smc32, Convention::Smc64] {
                if let Some(id) = function.id(convention) {
                    assert!(
                        matches!(call(id, 0, 0, 0), Call::Psci { function: f, convention: c, .. } if f == function && c == convention),
                        "{function:?} {convention:?}"
                    );
                }
            }
        }
        assert_eq!(
            PsciFunction::SystemReset2.id(Convention::Smc64),
            Some(SYSTEM_RESET2_64)
        );
        assert_eq!(PsciFunction::Version.id(Convention::Smc64), None);
    }

    #[test]
    fn cpu_on_is_intercepted() {
        // Linux: CPU_ON_64(target MPIDR 0x1, entry 0x4008_0000, context 0).
        assert_eq!(
            decide(&call(CPU_ON_64, 0x1, 0x4008_0000, 0)),
            Action::CpuOn {
                target_cpu: 1,
                entry: 0x4008_0000,
                context: 0,
                convention: Convention::Smc64
            }
        );
        // The 32-bit form sees only the low halves of x1..x3.
        assert_eq!(
            decide(&call(
                CPU_ON_32,
                0xffff_0000_0000_0002,
                0x1_4008_0000,
                0xdead_0000_0000_0007
            )),
            Action::CpuOn {
                target_cpu: 2,
                entry: 0x4008_0000,
                context: 7,
                convention: Convention::Smc32
            }
        );
        // The upper half of x0 is not part of the function ID.
        assert!(matches!(
            classify(&[0xffff_ffff_0000_0000 | u64::from(CPU_ON_64), 1, 2, 3]),
            Call::Psci {
                function: PsciFunction::CpuOn,
                ..
            }
        ));
    }

    #[test]
    fn proxied_calls() {
        assert_eq!(
            decide(&call(CPU_OFF, 0, 0, 0)),
            Action::CpuOff {
                function_id: CPU_OFF
            }
        );
        for id in [PSCI_VERSION, MIGRATE_INFO_TYPE, SYSTEM_OFF, SYSTEM_RESET] {
            assert_eq!(
                decide(&call(id, 0, 0, 0)),
                Action::Forward {
                    function_id: id,
                    args: [0; 3]
                },
                "{id:#x}"
            );
        }
        assert_eq!(
            decide(&call(AFFINITY_INFO_64, 0x100, 0, 0)),
            Action::Forward {
                function_id: AFFINITY_INFO_64,
                args: [0x100, 0, 0]
            }
        );
    }

    #[test]
    fn answered_directly() {
        assert_eq!(
            decide(&call(SMCCC_VERSION_ID, 0, 0, 0)),
            Action::Return(0x1_0001)
        );
        // SMCCC_ARCH_FEATURES(SMCCC_ARCH_WORKAROUND_1): not offered.
        assert_eq!(
            decide(&call(SMCCC_ARCH_FEATURES_ID, 0x8000_8000, 0, 0)),
            Action::Return(u64::MAX)
        );
        // PSCI_FEATURES(SMCCC_VERSION) = SUCCESS: SMCCC v1.1 is discoverable.
        assert_eq!(
            decide(&call(PSCI_FEATURES, u64::from(SMCCC_VERSION_ID), 0, 0)),
            Action::Return(0)
        );
        // PSCI_FEATURES of a proxied function goes to firmware (it knows the flags).
        assert_eq!(
            decide(&call(PSCI_FEATURES, u64::from(CPU_ON_64), 0, 0)),
            Action::Forward {
                function_id: PSCI_FEATURES,
                args: [u64::from(CPU_ON_64), 0, 0]
            }
        );
        // ... and of anything Portcullis refuses is NOT_SUPPORTED.
        for id in [
            CPU_SUSPEND_64,
            SYSTEM_SUSPEND_64,
            SYSTEM_RESET2_64,
            0xc200_0001,
            0x1234_5678,
        ] {
            assert_eq!(
                decide(&call(PSCI_FEATURES, u64::from(id), 0, 0)),
                Action::Return(x0(code::NOT_SUPPORTED)),
                "{id:#x}"
            );
        }
    }

    #[test]
    fn refused_calls() {
        for id in [
            CPU_SUSPEND_64,
            SYSTEM_SUSPEND_64,
            SYSTEM_RESET2_64,
            0xc400_0005,
        ] {
            assert_eq!(
                decide(&call(id, 0, 0, 0)),
                Action::Return(u64::MAX),
                "{id:#x}"
            );
        }
        // A yielding call with a PSCI number, an SMC64 form of a 32-bit-only function, a SiP
        // call, a Fast Call with MBZ bits set, and a function number past PSCI 1.3.
        for id in [
            0x0400_0003,
            0xc400_0000,
            0xc200_0001,
            0x8401_0000,
            0x8400_0016,
        ] {
            assert_eq!(
                call(id, 0, 0, 0),
                Call::Unknown { function_id: id },
                "{id:#x}"
            );
        }
    }

    #[test]
    fn return_codes() {
        assert_eq!(x0(code::SUCCESS), 0);
        assert_eq!(x0(code::NOT_SUPPORTED), 0xffff_ffff_ffff_ffff);
        assert_eq!(x0(code::INVALID_ADDRESS), 0xffff_ffff_ffff_fff7);
        assert_eq!(
            [
                code::INVALID_PARAMETERS,
                code::DENIED,
                code::ALREADY_ON,
                code::ON_PENDING,
                code::INTERNAL_FAILURE,
                code::NOT_PRESENT,
                code::DISABLED
            ],
            [-2, -3, -4, -5, -6, -7, -8]
        );
    }

    fn near_known_id() -> impl Strategy<Value = u32> {
        let ids = known_ids();
        (0..ids.len(), 0u32..32).prop_map(move |(i, bit)| ids[i] ^ (1 << bit))
    }

    proptest! {
        /// No call that hands firmware an address to enter the host at (CPU_ON, CPU_SUSPEND,
        /// CPU_DEFAULT_SUSPEND, SYSTEM_SUSPEND) ever goes to firmware as the host made it:
        /// firmware would enter that address at EL2 or resume the CPU without Portcullis. CPU_ON
        /// is intercepted (firmware gets Portcullis' own entry), the others are refused.
        #[test]
        fn no_host_entry_address_reaches_firmware(
            function in proptest::sample::select(PsciFunction::ALL.to_vec()),
            smc64 in any::<bool>(),
            args in any::<[u64; 3]>(),
        ) {
            let convention = if smc64 { Convention::Smc64 } else { Convention::Smc32 };
            let Some(id) = function.id(convention) else { return Ok(()) };
            let action = decide(&classify(&[u64::from(id), args[0], args[1], args[2]]));
            let takes_entry = matches!(
                function,
                PsciFunction::CpuOn
                    | PsciFunction::CpuSuspend
                    | PsciFunction::CpuDefaultSuspend
                    | PsciFunction::SystemSuspend
            );
            if takes_entry {
                let forwarded = matches!(action, Action::Forward { .. });
                prop_assert!(!forwarded, "{:?} forwarded", function);
            }
        }

        #[test]
        fn unknown_ids_are_not_supported(
            id in prop_oneof![any::<u32>(), near_known_id()],
            upper in any::<u32>(),
            args in any::<[u64; 3]>(),
        ) {
            let x0_value = (u64::from(upper) << 32) | u64::from(id);
            let classified = classify(&[x0_value, args[0], args[1], args[2]]);
            if known_ids().contains(&id) {
                let unknown = matches!(classified, Call::Unknown { .. });
                prop_assert!(!unknown, "{:#x} is known", id);
            } else {
                prop_assert_eq!(classified, Call::Unknown { function_id: id });
                prop_assert_eq!(decide(&classified), Action::Return(NOT_SUPPORTED));
            }
            // Whatever it is, deciding never panics, and 32-bit calls never see upper halves.
            let action = decide(&classified);
            if let Call::Psci { convention: Convention::Smc32, args, .. } = classified {
                prop_assert!(args.iter().all(|a| a >> 32 == 0));
                if let Action::CpuOn { entry, .. } = action {
                    prop_assert_eq!(entry >> 32, 0);
                }
            }
        }
    }
}
