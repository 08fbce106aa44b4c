//! The capture kernel's virtual-timer accesses, trapped in crash mode (`CNTHCTL_EL2.EL1TVT`,
//! FEAT_ECV): which register a trapped `MRS`/`MSR` names, and what the emulation does with it.
//!
//! Why they trap at all (see `crash.rs` in the binary): a busy capture kernel never executes WFI
//! and may not otherwise trap for seconds, yet its timer tick reprograms the EL1 virtual timer
//! every tick; each such trap lets Portcullis drain the fence's records. The emulation itself is
//! the access, done at EL2 on the same register (with `HCR_EL2.E2H` = 0, EL2's `CNTV_*_EL0` are
//! the EL1 virtual timer's): the capture kernel sees no difference but the time it took.

use super::esr::SysRegAccess;

/// A register of the EL1 virtual timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtTimerReg {
    /// `CNTV_TVAL_EL0` (op0 3, op1 3, CRn 14, CRm 3, op2 0).
    Tval,
    /// `CNTV_CTL_EL0` (op2 1).
    Ctl,
    /// `CNTV_CVAL_EL0` (op2 2).
    Cval,
}

/// The virtual-timer register a trapped access names, if it names one.
pub fn classify(access: &SysRegAccess) -> Option<VirtTimerReg> {
    if (access.op0, access.op1, access.crn, access.crm) != (3, 3, 14, 3) {
        return None;
    }
    match access.op2 {
        0 => Some(VirtTimerReg::Tval),
        1 => Some(VirtTimerReg::Ctl),
        2 => Some(VirtTimerReg::Cval),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trap::esr::{Exception, decode};

    /// The ESR of a trapped `MRS`/`MSR` (EC 0x18, IL 1) of (3, 3, c14, c3, `op2`) with `rt`.
    fn esr(op2: u64, rt: u64, read: bool) -> u64 {
        let iss = (3 << 20) | (op2 << 17) | (3 << 14) | (14 << 10) | (rt << 5) | (3 << 1);
        (0x18 << 26) | (1 << 25) | iss | u64::from(read)
    }

    fn access(esr: u64) -> SysRegAccess {
        match decode(esr).exception {
            Exception::SysReg(a) => a,
            other => panic!("not a sysreg trap: {other:?}"),
        }
    }

    #[test]
    fn the_three_virtual_timer_registers() {
        let ctl = access(esr(1, 4, false));
        assert_eq!(classify(&ctl), Some(VirtTimerReg::Ctl));
        assert_eq!((ctl.rt, ctl.read), (4, false));
        assert_eq!(
            classify(&access(esr(2, 0, false))),
            Some(VirtTimerReg::Cval)
        );
        let tval = access(esr(0, 31, true));
        assert_eq!(classify(&tval), Some(VirtTimerReg::Tval));
        assert_eq!((tval.rt, tval.read), (31, true));
    }

    #[test]
    fn other_registers_are_not_the_timer() {
        // op2 3..7 in the same encoding space: not virtual-timer registers.
        assert_eq!(classify(&access(esr(3, 0, true))), None);
        // CNTP_CTL_EL0 (CRm 2) and CNTVCT_EL0 (CRm 0, op2 2): physical timer, counter.
        let mut a = access(esr(1, 0, true));
        a.crm = 2;
        assert_eq!(classify(&a), None);
        a.crm = 0;
        a.op2 = 2;
        assert_eq!(classify(&a), None);
        // An EL1 register (op1 0) with the same CRn/CRm.
        let mut a = access(esr(1, 0, true));
        a.op1 = 0;
        assert_eq!(classify(&a), None);
    }
}
