//! SMMUv3 event numbers (IHI 0070, section 7.3 "Event records", bits [7:0] of a record) and the
//! specification's names for them.

pub const F_UUT: u8 = 0x01;
pub const C_BAD_STREAMID: u8 = 0x02;
pub const F_STE_FETCH: u8 = 0x03;
pub const C_BAD_STE: u8 = 0x04;
pub const F_BAD_ATS_TREQ: u8 = 0x05;
pub const F_STREAM_DISABLED: u8 = 0x06;
pub const F_TRANSL_FORBIDDEN: u8 = 0x07;
pub const C_BAD_SUBSTREAMID: u8 = 0x08;
pub const F_CD_FETCH: u8 = 0x09;
pub const C_BAD_CD: u8 = 0x0a;
pub const F_WALK_EABT: u8 = 0x0b;
pub const F_TRANSLATION: u8 = 0x10;
pub const F_ADDR_SIZE: u8 = 0x11;
pub const F_ACCESS: u8 = 0x12;
pub const F_PERMISSION: u8 = 0x13;
pub const F_TLB_CONFLICT: u8 = 0x20;
pub const F_CFG_CONFLICT: u8 = 0x21;
pub const E_PAGE_REQUEST: u8 = 0x24;
pub const F_VMS_FETCH: u8 = 0x25;
/// The IMPLEMENTATION DEFINED events.
pub const IMPDEF: core::ops::RangeInclusive<u8> = 0xe0..=0xef;

/// The specification's name for event number `code`, `None` for a Reserved number. The
/// IMPLEMENTATION DEFINED events 0xE0..0xEF are all `IMPDEF_EVENT`.
pub const fn name(code: u8) -> Option<&'static str> {
    Some(match code {
        F_UUT => "F_UUT",
        C_BAD_STREAMID => "C_BAD_STREAMID",
        F_STE_FETCH => "F_STE_FETCH",
        C_BAD_STE => "C_BAD_STE",
        F_BAD_ATS_TREQ => "F_BAD_ATS_TREQ",
        F_STREAM_DISABLED => "F_STREAM_DISABLED",
        F_TRANSL_FORBIDDEN => "F_TRANSL_FORBIDDEN",
        C_BAD_SUBSTREAMID => "C_BAD_SUBSTREAMID",
        F_CD_FETCH => "F_CD_FETCH",
        C_BAD_CD => "C_BAD_CD",
        F_WALK_EABT => "F_WALK_EABT",
        F_TRANSLATION => "F_TRANSLATION",
        F_ADDR_SIZE => "F_ADDR_SIZE",
        F_ACCESS => "F_ACCESS",
        F_PERMISSION => "F_PERMISSION",
        F_TLB_CONFLICT => "F_TLB_CONFLICT",
        F_CFG_CONFLICT => "F_CFG_CONFLICT",
        E_PAGE_REQUEST => "E_PAGE_REQUEST",
        F_VMS_FETCH => "F_VMS_FETCH",
        0xe0..=0xef => "IMPDEF_EVENT",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(name(F_PERMISSION), Some("F_PERMISSION"));
        assert_eq!(name(0x0b), Some("F_WALK_EABT"));
        assert_eq!(name(0xe3), Some("IMPDEF_EVENT"));
        assert!(IMPDEF.contains(&0xef));
        // Reserved numbers have no name.
        for code in [0x00, 0x0c, 0x0f, 0x14, 0x22, 0x23, 0x26, 0xdf, 0xf0, 0xff] {
            assert_eq!(name(code), None, "{code:#x}");
        }
        // 19 named events and 16 IMPLEMENTATION DEFINED ones.
        assert_eq!((0..=255u8).filter(|&c| name(c).is_some()).count(), 19 + 16);
    }
}
