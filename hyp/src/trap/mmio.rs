//! Emulating a host load or store that trapped on an unmapped MMIO page (the SMMU frame).
//!
//! Only accesses with a valid instruction syndrome (ESR_EL2.ISV = 1) can be emulated: single
//! general-purpose register loads and stores without writeback. Everything else (writeback forms,
//! pairs, SIMD registers, cache maintenance, a stage-1 table walk into the frame) is a host error
//! that the caller answers with an injected external abort — never a hypervisor panic.

use core::fmt;

use platform::addr::Ipa;

use super::esr::DataAbort;

/// The register number that encodes XZR / WZR in SRT.
pub const ZERO_REGISTER: u8 = 31;

/// One emulatable MMIO access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioAccess {
    pub ipa: Ipa,
    /// 1, 2, 4 or 8.
    pub size_bytes: u8,
    pub write: bool,
    /// The transfer register, 0..=30, or 31 for XZR / WZR.
    pub reg: u8,
    /// A load that sign-extends (LDRSB, LDRSH, LDRSW).
    pub sign_extend: bool,
    /// The transfer register is an X register (SF = 1) rather than a W register.
    pub sixty_four: bool,
}

/// Why a data abort cannot be emulated as an MMIO access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MmioError {
    /// ISV = 0: no instruction syndrome (writeback addressing, LDP/STP, SIMD, ...).
    NoSyndrome,
    /// The abort was on a stage-1 translation table walk through the frame (S1PTW = 1).
    StageOneWalk,
    /// A cache maintenance or address translation instruction on the frame (CM = 1).
    CacheMaintenance,
    /// FAR_EL2 is not valid (FnV = 1), so the offset within the page is unknown.
    FarNotValid,
}

impl fmt::Display for MmioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoSyndrome => "MMIO access without instruction syndrome (ISV = 0)",
            Self::StageOneWalk => "stage-1 translation table walk into emulated MMIO",
            Self::CacheMaintenance => "cache maintenance or address translation on emulated MMIO",
            Self::FarNotValid => "MMIO abort without a valid fault address",
        })
    }
}

impl MmioAccess {
    /// The access described by a data abort at `ipa` (see `esr::fault_ipa`).
    pub fn from_abort(abort: &DataAbort, ipa: Ipa) -> Result<Self, MmioError> {
        if abort.s1ptw {
            return Err(MmioError::StageOneWalk);
        }
        if abort.cache_maintenance {
            return Err(MmioError::CacheMaintenance);
        }
        if abort.far_not_valid {
            return Err(MmioError::FarNotValid);
        }
        let syndrome = abort.access.ok_or(MmioError::NoSyndrome)?;
        Ok(Self {
            ipa,
            size_bytes: syndrome.size.bytes(),
            write: abort.write,
            reg: syndrome.register,
            sign_extend: syndrome.sign_extend,
            sixty_four: syndrome.sixty_four,
        })
    }

    /// The value a store writes: the low `size_bytes` of the transfer register (`gprs[reg]`, or
    /// 0 for XZR / WZR).
    pub fn store_value(&self, gprs: &[u64; 31]) -> u64 {
        let register = gprs.get(usize::from(self.reg)).copied().unwrap_or(0);
        truncate(register, self.size_bytes)
    }

    /// Writes a load's result (see [`load_result`]) into the transfer register; a load into
    /// XZR / WZR is discarded.
    pub fn complete_load(&self, gprs: &mut [u64; 31], raw_value: u64) {
        if let Some(register) = gprs.get_mut(usize::from(self.reg)) {
            *register = load_result(self, raw_value);
        }
    }
}

/// The value the transfer register holds after a load that read `raw_value` from the device:
/// truncated to the access size, sign-extended if SSE, then as written to a W register (upper 32
/// bits zero) unless SF. E.g. `ldrsb w0` of 0x80 gives 0xffff_ff80, `ldrsb x0` gives
/// 0xffff_ffff_ffff_ff80, `ldrb w0` gives 0x80.
pub fn load_result(access: &MmioAccess, raw_value: u64) -> u64 {
    let value = truncate(raw_value, access.size_bytes);
    let bits = u32::from(access.size_bytes.clamp(1, 8)) * 8;
    let value = if access.sign_extend && bits < 64 {
        let shift = 64 - bits;
        (((value << shift) as i64) >> shift) as u64
    } else {
        value
    };
    if access.sixty_four {
        value
    } else {
        value & 0xffff_ffff
    }
}

/// The low `size_bytes` bytes of `value` (all of it for 8 or more).
fn truncate(value: u64, size_bytes: u8) -> u64 {
    match size_bytes {
        0..8 => value & ((1u64 << (u32::from(size_bytes) * 8)) - 1),
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::super::esr::{Exception, decode};
    use super::*;
    use proptest::prelude::*;

    /// A data abort from a lower EL (EC 0x24, IL 1) with ISV = 1 and the given syndrome fields,
    /// DFSC = translation fault level 3.
    fn abort(sas: u64, sse: bool, srt: u64, sf: bool, wnr: bool) -> DataAbort {
        let iss = (1 << 24)
            | (sas << 22)
            | (u64::from(sse) << 21)
            | (srt << 16)
            | (u64::from(sf) << 15)
            | (u64::from(wnr) << 6)
            | 0x07;
        match decode((0x24 << 26) | (1 << 25) | iss).exception {
            Exception::DataAbort(abort) => abort,
            other => panic!("not a data abort: {other:?}"),
        }
    }

    const FRAME: Ipa = Ipa(0x0905_0000);

    #[test]
    fn ldr_w1() {
        // `ldr w1, [x0]`: SAS word, SSE 0, SRT 1, SF 0.
        let access = MmioAccess::from_abort(&abort(0b10, false, 1, false, false), FRAME)
            .expect("emulatable");
        assert_eq!(
            access,
            MmioAccess {
                ipa: FRAME,
                size_bytes: 4,
                write: false,
                reg: 1,
                sign_extend: false,
                sixty_four: false
            }
        );
        let mut gprs = [0xdead_beef_dead_beef; 31];
        access.complete_load(&mut gprs, 0x1234_5678_8000_0001);
        assert_eq!(gprs[1], 0x8000_0001, "W register write zeroes the top half");
    }

    #[test]
    fn ldrsh_into_x_and_w() {
        // `ldrsh x2, [x0]`: SAS halfword, SSE 1, SF 1.
        let x =
            MmioAccess::from_abort(&abort(0b01, true, 2, true, false), FRAME).expect("emulatable");
        assert_eq!(load_result(&x, 0xffff_8001), 0xffff_ffff_ffff_8001);
        assert_eq!(load_result(&x, 0x7fff), 0x7fff);
        // `ldrsh w2, [x0]`: SF 0, so the sign extension stops at bit 31.
        let w =
            MmioAccess::from_abort(&abort(0b01, true, 2, false, false), FRAME).expect("emulatable");
        assert_eq!(load_result(&w, 0xffff_8001), 0xffff_8001);
        assert_eq!(load_result(&w, 0x1_7fff), 0x7fff);
    }

    #[test]
    fn ldrsb_ldrsw_ldrb_ldr_x() {
        let ldrsb_w =
            MmioAccess::from_abort(&abort(0b00, true, 0, false, false), FRAME).expect("emulatable");
        assert_eq!(load_result(&ldrsb_w, 0x80), 0xffff_ff80);
        let ldrsb_x =
            MmioAccess::from_abort(&abort(0b00, true, 0, true, false), FRAME).expect("emulatable");
        assert_eq!(load_result(&ldrsb_x, 0x80), 0xffff_ffff_ffff_ff80);
        let ldrb = MmioAccess::from_abort(&abort(0b00, false, 0, false, false), FRAME)
            .expect("emulatable");
        assert_eq!(load_result(&ldrb, 0xff80), 0x80);
        let ldrsw =
            MmioAccess::from_abort(&abort(0b10, true, 0, true, false), FRAME).expect("emulatable");
        assert_eq!(load_result(&ldrsw, 0x8000_0000), 0xffff_ffff_8000_0000);
        let ldr_x =
            MmioAccess::from_abort(&abort(0b11, false, 0, true, false), FRAME).expect("emulatable");
        assert_eq!(
            load_result(&ldr_x, 0x8765_4321_0000_0001),
            0x8765_4321_0000_0001
        );
    }

    #[test]
    fn stores() {
        // `str w3, [x0]` and `strb wzr, [x0]`.
        let mut gprs = [0; 31];
        gprs[3] = 0xaaaa_bbbb_cccc_dddd;
        let str_w3 =
            MmioAccess::from_abort(&abort(0b10, false, 3, false, true), FRAME).expect("emulatable");
        assert!(str_w3.write);
        assert_eq!(str_w3.store_value(&gprs), 0xcccc_dddd);
        let strb_wzr = MmioAccess::from_abort(&abort(0b00, false, 31, false, true), FRAME)
            .expect("emulatable");
        assert_eq!(strb_wzr.store_value(&gprs), 0);
        // A load into XZR changes nothing.
        let before = gprs;
        strb_wzr.complete_load(&mut gprs, 0xff);
        assert_eq!(gprs, before);
    }

    #[test]
    fn unemulatable_aborts() {
        // `str x2, [x0], #8`: post-index writeback, ISV = 0 (EC 0x24, IL 1, WnR 1, DFSC 0x07).
        let Exception::DataAbort(post_index) = decode(0x9200_0047).exception else {
            panic!("not a data abort");
        };
        assert_eq!(
            MmioAccess::from_abort(&post_index, FRAME),
            Err(MmioError::NoSyndrome)
        );
        let mut walk = abort(0b10, false, 1, false, false);
        walk.s1ptw = true;
        assert_eq!(
            MmioAccess::from_abort(&walk, FRAME),
            Err(MmioError::StageOneWalk)
        );
        let mut cm = abort(0b10, false, 1, false, false);
        cm.cache_maintenance = true;
        assert_eq!(
            MmioAccess::from_abort(&cm, FRAME),
            Err(MmioError::CacheMaintenance)
        );
    }

    proptest! {
        #[test]
        fn never_panics(esr in any::<u64>(), ipa in any::<u64>(), raw in any::<u64>(), gpr in any::<u64>()) {
            if let Exception::DataAbort(abort) = decode(esr).exception
                && let Ok(access) = MmioAccess::from_abort(&abort, Ipa(ipa))
            {
                let result = load_result(&access, raw);
                if !access.sixty_four {
                    prop_assert_eq!(result >> 32, 0);
                }
                let mut gprs = [gpr; 31];
                access.complete_load(&mut gprs, raw);
                let stored = access.store_value(&gprs);
                prop_assert!(access.size_bytes == 8 || stored >> (access.size_bytes * 8) == 0);
            }
        }
    }
}
