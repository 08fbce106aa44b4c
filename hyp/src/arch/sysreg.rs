//! Accessors for the system registers aarch64-cpu (11.x) lacks, in its style (`Readable` /
//! `Writeable` from tock-registers); their fields are in `portcullis::sysregs`. The encodings are
//! the ARM ARM's (`S<op0>_<op1>_C<n>_C<m>_<op2>` where the assembler may not know the name).

use portcullis::sysregs;
use tock_registers::interfaces::{Readable, Writeable};

macro_rules! sysreg {
    ($(#[$doc:meta])* $name:ident, $ty:ident, $enc:literal, $fields:ty $(, $rw:ident)+) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $ty;
        $(sysreg!(@$rw $ty, $enc, $fields);)+
        $(#[$doc])*
        pub const $name: $ty = $ty;
    };
    (@read $ty:ident, $enc:literal, $fields:ty) => {
        impl Readable for $ty {
            type T = u64;
            type R = $fields;
            #[inline]
            fn get(&self) -> u64 {
                let v: u64;
                // SAFETY: reading this register has no side effects; it exists wherever the caller
                // reads it (ID registers in this space are RAZ where not implemented).
                unsafe {
                    core::arch::asm!(concat!("mrs {}, ", $enc), out(reg) v, options(nomem, nostack))
                };
                v
            }
        }
    };
    (@write $ty:ident, $enc:literal, $fields:ty) => {
        impl Writeable for $ty {
            type T = u64;
            type R = $fields;
            #[inline]
            fn set(&self, value: u64) {
                // SAFETY: an EL2 control that only changes what the host's EL1/EL0 may do or sees;
                // the caller writes it only where the feature that defines it is present.
                unsafe {
                    core::arch::asm!(concat!("msr ", $enc, ", {}"), in(reg) value, options(nomem, nostack))
                };
            }
        }
    };
}

sysreg!(
    /// Virtualization Processor ID Register: what EL1 reads as MIDR_EL1.
    VPIDR_EL2, VpidrEl2, "vpidr_el2", (), write
);
sysreg!(
    /// Hypervisor System Trap Register (AArch32 system-register traps).
    HSTR_EL2, HstrEl2, "hstr_el2", (), write
);
sysreg!(
    /// Performance Monitors Control Register.
    PMCR_EL0, PmcrEl0, "pmcr_el0", (), read
);
sysreg!(
    /// Interrupt Status Register: pending physical IRQ/FIQ/SError at EL2 with HCR_EL2.IMO = 0.
    ISR_EL1, IsrEl1, "isr_el1", (), read
);
sysreg!(
    /// Extended Hypervisor Configuration Register (FEAT_HCX).
    HCRX_EL2, HcrxEl2, "S3_4_C1_C2_2", sysregs::HCRX_EL2::Register, write
);
sysreg!(
    /// SVE Control Register for EL2 (FEAT_SVE).
    ZCR_EL2, ZcrEl2, "S3_4_C1_C2_0", sysregs::ZCR_EL2::Register, write
);
sysreg!(
    /// SME Control Register for EL2 (FEAT_SME).
    SMCR_EL2, SmcrEl2, "S3_4_C1_C2_6", sysregs::SMCR_EL2::Register, write
);
sysreg!(
    /// AArch64 Memory Model Feature Register 3.
    ID_AA64MMFR3_EL1, IdAa64Mmfr3El1, "S3_0_C0_C7_3", sysregs::ID_AA64MMFR3_EL1::Register, read
);
sysreg!(
    /// AArch64 Instruction Set Attribute Register 2.
    ID_AA64ISAR2_EL1, IdAa64Isar2El1, "S3_0_C0_C6_2", sysregs::ID_AA64ISAR2_EL1::Register, read
);
sysreg!(
    /// Cache Type Register.
    CTR_EL0, CtrEl0, "ctr_el0", sysregs::CTR_EL0::Register, read
);
sysreg!(
    /// Data Cache Zero ID Register.
    DCZID_EL0, DczidEl0, "dczid_el0", sysregs::DCZID_EL0::Register, read
);
