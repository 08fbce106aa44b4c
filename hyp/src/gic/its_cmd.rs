//! ITS commands (IHI 0069 5.3): decoding the host's, checking each against the current mode's
//! policy, and re-encoding the accepted ones for Portcullis' own command queue.
//!
//! Every command the physical ITS executes is built here from decoded fields (reserved bits
//! zero), so nothing the host put in a reserved field reaches the hardware. A command is refused
//! when the ITS could write memory it names outside the policy:
//! - `MAPD`: the ITT, `2^(Size+1)` entries of `GITS_TYPER.ITT_entry_size` bytes, must lie wholly
//!   in device-writable memory; `Size` must not exceed what the ITS implements;
//! - `MAPC`, `SYNC`, `MOVALL`: a target that is not one of the machine's redistributors;
//! - DeviceIDs and CollectionIDs outside Portcullis' own device and collection tables;
//! - in crash mode, `MAPTI`, `MAPI`, `MOVI` and `DISCARD` (which write the ITT) for a device not
//!   mapped again since the fence: the dead kernel's ITTs lie in the frozen dump;
//! - every GICv4 command (Portcullis hides GITS_TYPER.Virtual) and every unknown opcode.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use super::window::{DmaWindow, Outside};

pub mod opcode {
    pub const MOVI: u8 = 0x01;
    pub const INT: u8 = 0x03;
    pub const CLEAR: u8 = 0x04;
    pub const SYNC: u8 = 0x05;
    pub const MAPD: u8 = 0x08;
    pub const MAPC: u8 = 0x09;
    pub const MAPTI: u8 = 0x0a;
    pub const MAPI: u8 = 0x0b;
    pub const INV: u8 = 0x0c;
    pub const INVALL: u8 = 0x0d;
    pub const MOVALL: u8 = 0x0e;
    pub const DISCARD: u8 = 0x0f;
    /// GICv4 commands: VMOVI, VMOVP, VSGI, VSYNC, VMAPP, VMAPTI, VMAPI, VINVALL, INVDB.
    pub const GICV4: [u8; 9] = [0x21, 0x22, 0x23, 0x25, 0x29, 0x2a, 0x2b, 0x2d, 0x2e];
}

/// A redistributor as a command names it: a processor number (`GITS_TYPER.PTA == 0`) or bits
/// [51:16] of its physical address (`PTA == 1`), as found in the RDbase field.
pub type RdBase = u64;

/// One decoded ITS command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItsCommand {
    Movi {
        device: u32,
        event: u32,
        icid: u16,
    },
    Int {
        device: u32,
        event: u32,
    },
    Clear {
        device: u32,
        event: u32,
    },
    Sync {
        target: RdBase,
    },
    Mapd {
        device: u32,
        size: u8,
        itt: u64,
        valid: bool,
    },
    Mapc {
        icid: u16,
        target: RdBase,
        valid: bool,
    },
    Mapti {
        device: u32,
        event: u32,
        intid: u32,
        icid: u16,
    },
    Mapi {
        device: u32,
        event: u32,
        icid: u16,
    },
    Inv {
        device: u32,
        event: u32,
    },
    Invall {
        icid: u16,
    },
    Movall {
        from: RdBase,
        to: RdBase,
    },
    Discard {
        device: u32,
        event: u32,
    },
}

/// Why a host command is not passed to the ITS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A GICv4 command: virtual LPIs are not offered.
    Virtual(u8),
    Unknown(u8),
    /// MAPD's Size asks for more EventID bits than the ITS implements.
    EventIdBits {
        size: u8,
        implemented: u32,
    },
    /// MAPD's ITT is not wholly device-writable memory.
    Itt {
        device: u32,
        outside: Outside,
    },
    /// A DeviceID beyond Portcullis' device table.
    DeviceId(u32),
    /// A CollectionID beyond Portcullis' collection table.
    CollectionId(u16),
    /// A target that names no redistributor.
    Target(RdBase),
    /// Crash mode: a command that writes the ITT of a device not mapped since the fence.
    StaleDevice {
        opcode: u8,
        device: u32,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Virtual(op) => write!(f, "GICv4 command {op:#04x} (virtual LPIs not offered)"),
            Self::Unknown(op) => write!(f, "unknown command {op:#04x}"),
            Self::EventIdBits { size, implemented } => write!(
                f,
                "MAPD Size {size} exceeds the {implemented} EventID bits implemented"
            ),
            Self::Itt { device, outside } => {
                write!(f, "MAPD of device {device:#x}: ITT {outside}")
            }
            Self::DeviceId(d) => write!(f, "DeviceID {d:#x} beyond the device table"),
            Self::CollectionId(c) => write!(f, "CollectionID {c:#x} beyond the collection table"),
            Self::Target(t) => write!(f, "target {t:#x} is no redistributor"),
            Self::StaleDevice { opcode, device } => write!(
                f,
                "command {opcode:#04x} for device {device:#x}, not mapped since the fence (its ITT is in the dump)"
            ),
        }
    }
}

const RDBASE_SHIFT: u32 = 16;
const RDBASE_MASK: u64 = (1 << 36) - 1;
const ITT_MASK: u64 = 0x000f_ffff_ffff_ff00;
const VALID: u64 = 1 << 63;

fn device_of(dw0: u64) -> u32 {
    (dw0 >> 32) as u32
}

fn rdbase_of(dw: u64) -> RdBase {
    (dw >> RDBASE_SHIFT) & RDBASE_MASK
}

/// Decodes a host command (four little-endian doublewords).
pub fn decode(raw: [u64; 4]) -> Result<ItsCommand, Refusal> {
    let op = raw[0] as u8;
    let device = device_of(raw[0]);
    let event = raw[1] as u32;
    let icid = raw[2] as u16;
    Ok(match op {
        opcode::MOVI => ItsCommand::Movi {
            device,
            event,
            icid,
        },
        opcode::INT => ItsCommand::Int { device, event },
        opcode::CLEAR => ItsCommand::Clear { device, event },
        opcode::SYNC => ItsCommand::Sync {
            target: rdbase_of(raw[2]),
        },
        opcode::MAPD => ItsCommand::Mapd {
            device,
            size: (raw[1] & 0x1f) as u8,
            itt: raw[2] & ITT_MASK,
            valid: raw[2] & VALID != 0,
        },
        opcode::MAPC => ItsCommand::Mapc {
            icid,
            target: rdbase_of(raw[2]),
            valid: raw[2] & VALID != 0,
        },
        opcode::MAPTI => ItsCommand::Mapti {
            device,
            event,
            intid: (raw[1] >> 32) as u32,
            icid,
        },
        opcode::MAPI => ItsCommand::Mapi {
            device,
            event,
            icid,
        },
        opcode::INV => ItsCommand::Inv { device, event },
        opcode::INVALL => ItsCommand::Invall { icid },
        opcode::MOVALL => ItsCommand::Movall {
            from: rdbase_of(raw[2]),
            to: rdbase_of(raw[3]),
        },
        opcode::DISCARD => ItsCommand::Discard { device, event },
        op if opcode::GICV4.contains(&op) => return Err(Refusal::Virtual(op)),
        op => return Err(Refusal::Unknown(op)),
    })
}

impl ItsCommand {
    pub fn opcode(&self) -> u8 {
        match self {
            Self::Movi { .. } => opcode::MOVI,
            Self::Int { .. } => opcode::INT,
            Self::Clear { .. } => opcode::CLEAR,
            Self::Sync { .. } => opcode::SYNC,
            Self::Mapd { .. } => opcode::MAPD,
            Self::Mapc { .. } => opcode::MAPC,
            Self::Mapti { .. } => opcode::MAPTI,
            Self::Mapi { .. } => opcode::MAPI,
            Self::Inv { .. } => opcode::INV,
            Self::Invall { .. } => opcode::INVALL,
            Self::Movall { .. } => opcode::MOVALL,
            Self::Discard { .. } => opcode::DISCARD,
        }
    }

    /// The command as the ITS reads it, every reserved bit zero.
    pub fn encode(&self) -> [u64; 4] {
        let op = u64::from(self.opcode());
        let dev = |d: u32| op | (u64::from(d) << 32);
        let rd = |t: RdBase| (t & RDBASE_MASK) << RDBASE_SHIFT;
        match *self {
            Self::Movi {
                device,
                event,
                icid,
            }
            | Self::Mapi {
                device,
                event,
                icid,
            } => [dev(device), u64::from(event), u64::from(icid), 0],
            Self::Int { device, event }
            | Self::Clear { device, event }
            | Self::Inv { device, event }
            | Self::Discard { device, event } => [dev(device), u64::from(event), 0, 0],
            Self::Sync { target } => [op, 0, rd(target), 0],
            Self::Mapd {
                device,
                size,
                itt,
                valid,
            } => [
                dev(device),
                u64::from(size & 0x1f),
                (itt & ITT_MASK) | if valid { VALID } else { 0 },
                0,
            ],
            Self::Mapc {
                icid,
                target,
                valid,
            } => [
                op,
                0,
                u64::from(icid) | rd(target) | if valid { VALID } else { 0 },
                0,
            ],
            Self::Mapti {
                device,
                event,
                intid,
                icid,
            } => [
                dev(device),
                u64::from(event) | (u64::from(intid) << 32),
                u64::from(icid),
                0,
            ],
            Self::Invall { icid } => [op, 0, u64::from(icid), 0],
            Self::Movall { from, to } => [op, 0, rd(from), rd(to)],
        }
    }

    fn device(&self) -> Option<u32> {
        match *self {
            Self::Movi { device, .. }
            | Self::Int { device, .. }
            | Self::Clear { device, .. }
            | Self::Mapd { device, .. }
            | Self::Mapti { device, .. }
            | Self::Mapi { device, .. }
            | Self::Inv { device, .. }
            | Self::Discard { device, .. } => Some(device),
            _ => None,
        }
    }

    fn collection(&self) -> Option<u16> {
        match *self {
            Self::Movi { icid, .. }
            | Self::Mapc { icid, .. }
            | Self::Mapti { icid, .. }
            | Self::Mapi { icid, .. }
            | Self::Invall { icid } => Some(icid),
            _ => None,
        }
    }

    fn targets(&self) -> [Option<RdBase>; 2] {
        match *self {
            Self::Sync { target } | Self::Mapc { target, .. } => [Some(target), None],
            Self::Movall { from, to } => [Some(from), Some(to)],
            _ => [None, None],
        }
    }

    /// Whether the ITS writes this command's device's ITT.
    fn writes_itt(&self) -> bool {
        matches!(
            self,
            Self::Mapti { .. } | Self::Mapi { .. } | Self::Movi { .. } | Self::Discard { .. }
        )
    }
}

/// DeviceIDs mapped (MAPD, valid) since the fence: the only devices whose ITT the ITS may write
/// in crash mode. One bit per DeviceID of Portcullis' device table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceBitmap {
    words: Vec<u64>,
}

impl DeviceBitmap {
    pub fn new(devices: u32) -> Self {
        Self {
            words: vec![0; (devices as usize).div_ceil(64)],
        }
    }

    pub fn clear(&mut self) {
        self.words.fill(0);
    }

    pub fn set(&mut self, device: u32) {
        if let Some(w) = self.words.get_mut(device as usize / 64) {
            *w |= 1 << (device % 64);
        }
    }

    pub fn contains(&self, device: u32) -> bool {
        self.words
            .get(device as usize / 64)
            .is_some_and(|w| w & (1 << (device % 64)) != 0)
    }
}

/// What the filter checks a command against.
#[derive(Debug)]
pub struct Limits<'a> {
    /// Device-writable memory of the current mode.
    pub window: &'a DmaWindow,
    /// `GITS_TYPER.ITT_entry_size + 1`.
    pub itt_entry_bytes: u64,
    /// `GITS_TYPER.ID_bits + 1`.
    pub event_id_bits: u32,
    /// Entries in Portcullis' device table.
    pub devices: u32,
    /// Entries in Portcullis' collection table.
    pub collections: u32,
    /// The RDbase values that name a redistributor.
    pub targets: &'a [RdBase],
    /// Crash mode: the devices mapped since the fence.
    pub remapped: Option<&'a DeviceBitmap>,
}

/// Checks one command against `limits`; `Ok` means the ITS may execute it.
pub fn check(cmd: &ItsCommand, limits: &Limits<'_>) -> Result<(), Refusal> {
    if let Some(device) = cmd.device()
        && device >= limits.devices
    {
        return Err(Refusal::DeviceId(device));
    }
    if let Some(icid) = cmd.collection()
        && u32::from(icid) >= limits.collections
    {
        return Err(Refusal::CollectionId(icid));
    }
    for target in cmd.targets().into_iter().flatten() {
        if !limits.targets.contains(&target) {
            return Err(Refusal::Target(target));
        }
    }
    if let ItsCommand::Mapd {
        device,
        size,
        itt,
        valid: true,
    } = *cmd
    {
        let bits = u32::from(size) + 1;
        if bits > limits.event_id_bits {
            return Err(Refusal::EventIdBits {
                size,
                implemented: limits.event_id_bits,
            });
        }
        // bits <= 32 and the entry size <= 16 bytes: no overflow in u64.
        let len = (1u64 << bits) * limits.itt_entry_bytes;
        limits
            .window
            .check(itt, len)
            .map_err(|outside| Refusal::Itt { device, outside })?;
    }
    if let (Some(remapped), Some(device)) = (limits.remapped, cmd.device())
        && cmd.writes_itt()
        && !remapped.contains(device)
    {
        return Err(Refusal::StaleDevice {
            opcode: cmd.opcode(),
            device,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use platform::addr::PhysRange;
    use proptest::prelude::*;

    fn window() -> DmaWindow {
        // RAM [0x4000_0000, 0x8000_0000) minus Portcullis [0x4020_0000, 0x4080_0000).
        DmaWindow::from_ranges(alloc::vec![
            PhysRange::from_bounds(0x4000_0000, 0x4020_0000),
            PhysRange::from_bounds(0x4080_0000, 0x8000_0000),
        ])
    }

    fn limits<'a>(w: &'a DmaWindow, remapped: Option<&'a DeviceBitmap>) -> Limits<'a> {
        Limits {
            window: w,
            itt_entry_bytes: 12,
            event_id_bits: 16,
            devices: 1 << 16,
            collections: 8192,
            targets: &[0, 1],
            remapped,
        }
    }

    fn mapd(device: u32, size: u8, itt: u64) -> [u64; 4] {
        [
            u64::from(opcode::MAPD) | (u64::from(device) << 32),
            u64::from(size),
            itt | VALID,
            0,
        ]
    }

    #[test]
    fn mapd_itt_must_be_device_writable() {
        let w = window();
        let l = limits(&w, None);
        let ok = decode(mapd(8, 4, 0x5000_0000)).expect("MAPD");
        assert_eq!(check(&ok, &l), Ok(()));
        // Inside Portcullis; straddling into it (32 entries of 12 bytes = 384 bytes from 0x401f_ff00);
        // the last entry ending exactly at Portcullis' first byte.
        for itt in [0x4030_0000, 0x401f_ff00] {
            let c = decode(mapd(8, 4, itt)).expect("MAPD");
            assert!(
                matches!(check(&c, &l), Err(Refusal::Itt { .. })),
                "{itt:#x}"
            );
        }
        let c = decode(mapd(8, 4, 0x4020_0000 - 384)).expect("MAPD");
        assert_eq!(check(&c, &l), Ok(()));
        // Size beyond the EventID bits implemented.
        let c = decode(mapd(8, 16, 0x5000_0000)).expect("MAPD");
        assert!(matches!(check(&c, &l), Err(Refusal::EventIdBits { .. })));
        // The largest ITT (2^32 entries) at the top of the address space: refused, no overflow.
        let big = Limits {
            event_id_bits: 32,
            itt_entry_bytes: 16,
            ..limits(&w, None)
        };
        let c = decode(mapd(8, 31, ITT_MASK)).expect("MAPD");
        assert!(matches!(check(&c, &big), Err(Refusal::Itt { .. })));
        // V = 0 (unmap) names no ITT.
        let c = decode([u64::from(opcode::MAPD) | (8 << 32), 4, 0x4030_0000, 0]).expect("MAPD");
        assert_eq!(check(&c, &l), Ok(()));
    }

    #[test]
    fn targets_ids_and_opcodes() {
        let w = window();
        let l = limits(&w, None);
        let mapc = |t: u64| [u64::from(opcode::MAPC), 0, 3 | (t << 16) | VALID, 0];
        assert_eq!(check(&decode(mapc(1)).expect("MAPC"), &l), Ok(()));
        assert_eq!(
            check(&decode(mapc(7)).expect("MAPC"), &l),
            Err(Refusal::Target(7))
        );
        let c = decode([u64::from(opcode::MOVALL), 0, 0, 9 << 16]).expect("MOVALL");
        assert_eq!(check(&c, &l), Err(Refusal::Target(9)));
        let c = decode([u64::from(opcode::INVALL), 0, 9000, 0]).expect("INVALL");
        assert_eq!(check(&c, &l), Err(Refusal::CollectionId(9000)));
        let small = Limits {
            devices: 256,
            ..limits(&w, None)
        };
        let c = decode([u64::from(opcode::INT) | (256 << 32), 0, 0, 0]).expect("INT");
        assert_eq!(check(&c, &small), Err(Refusal::DeviceId(256)));
        for op in opcode::GICV4 {
            assert_eq!(decode([u64::from(op), 0, 0, 0]), Err(Refusal::Virtual(op)));
        }
        for op in [0x00, 0x02, 0x06, 0x07, 0x10, 0x20, 0xff] {
            assert_eq!(decode([u64::from(op), 0, 0, 0]), Err(Refusal::Unknown(op)));
        }
    }

    #[test]
    fn crash_mode_writes_only_remapped_itts() {
        let w = window();
        let mut remapped = DeviceBitmap::new(1 << 16);
        remapped.set(0x10);
        let l = limits(&w, Some(&remapped));
        let mapti = |d: u64| [u64::from(opcode::MAPTI) | (d << 32), 8192 << 32, 0, 0];
        assert_eq!(check(&decode(mapti(0x10)).expect("MAPTI"), &l), Ok(()));
        assert!(matches!(
            check(&decode(mapti(0x11)).expect("MAPTI"), &l),
            Err(Refusal::StaleDevice { .. })
        ));
        for op in [opcode::MAPI, opcode::MOVI, opcode::DISCARD] {
            let c = decode([u64::from(op) | (0x11 << 32), 0, 0, 0]).expect("cmd");
            assert!(matches!(check(&c, &l), Err(Refusal::StaleDevice { .. })));
        }
        // Reading an old device's ITT is fine.
        let c = decode([u64::from(opcode::INT) | (0x11 << 32), 0, 0, 0]).expect("INT");
        assert_eq!(check(&c, &l), Ok(()));
        assert!(!remapped.contains(u32::MAX));
    }

    #[test]
    fn reserved_bits_do_not_survive() {
        let raw = [
            u64::from(opcode::SYNC) | 0xff00,
            u64::MAX,
            (1 << 16) | 0xffff | (0xfff << 52),
            u64::MAX,
        ];
        let c = decode(raw).expect("SYNC");
        assert_eq!(c.encode(), [u64::from(opcode::SYNC), 0, 1 << 16, 0]);
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(raw in any::<[u64; 4]>()) {
            if let Ok(cmd) = decode(raw) {
                prop_assert_eq!(decode(cmd.encode()), Ok(cmd));
            }
        }

        #[test]
        fn accepted_itts_are_inside_the_window(device in 0u32..1024, size in 0u8..32, itt in any::<u64>()) {
            let w = window();
            let l = limits(&w, None);
            let cmd = decode(mapd(device, size, itt & ITT_MASK)).expect("MAPD");
            if check(&cmd, &l).is_ok() {
                let len = (1u64 << (u32::from(size) + 1)) * 12;
                let r = PhysRange::new(itt & ITT_MASK, len).expect("no wrap");
                prop_assert!(w.ranges().iter().any(|x| x.covers(&r)));
            }
        }
    }
}
