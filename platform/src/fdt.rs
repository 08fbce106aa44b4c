//! The flattened device tree read as a stream of tokens (devicetree specification v0.4,
//! chapter 5), in one linear pass: [`crate::devtree`] indexes the tree with it and Portcullis'
//! host-tree rewrite copies it token by token. dtoolkit's node and property iterators find a
//! node's children and properties by walking the blob again each time, which made reading the
//! tree most of Portcullis' boot.
//!
//! Every read is bounds-checked: a malformed input is an error, never a panic.

use alloc::vec::Vec;

pub const MAGIC: u32 = 0xd00d_feed;
pub const BEGIN_NODE: u32 = 1;
pub const END_NODE: u32 = 2;
pub const PROP: u32 = 3;
pub const NOP: u32 = 4;
pub const END: u32 = 9;
pub const HEADER_SIZE: usize = 40;

/// Where the input stops making sense, as an offset into the structure block (or the blob for
/// the header and the reservation block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub usize);

fn be32(data: &[u8], off: usize) -> Option<u32> {
    let b = data.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

pub fn align4(x: usize) -> usize {
    x.saturating_add(3) & !3
}

/// One token of the structure block.
#[derive(Debug, Clone, Copy)]
pub enum Token<'a> {
    Begin(&'a [u8]),
    End,
    Prop(Prop<'a>),
    Nop,
    Finish,
}

/// A property as it is in the input: its name's offset in the strings block is kept.
#[derive(Debug, Clone, Copy)]
pub struct Prop<'a> {
    pub name: &'a [u8],
    pub name_off: u32,
    pub value: &'a [u8],
}

/// The parts of an input blob.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The structure block.
    pub structs: &'a [u8],
    /// The strings block.
    pub strings: &'a [u8],
    /// The memory reservation block, its terminating entry included.
    pub reservations: &'a [u8],
    /// The header's `boot_cpuid_phys`.
    pub boot_cpuid: u32,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Result<Self, Malformed> {
        let word = |i: usize| be32(data, i * 4).ok_or(Malformed(i * 4));
        if word(0)? != MAGIC {
            return Err(Malformed(0));
        }
        let block = |off: u32, size: u32| {
            let off = off as usize;
            data.get(off..off.checked_add(size as usize)?)
        };
        let structs = block(word(2)?, word(9)?).ok_or(Malformed(8))?;
        let strings = block(word(3)?, word(8)?).ok_or(Malformed(12))?;
        let rsv = word(4)? as usize;
        let mut end = rsv;
        loop {
            let entry = data
                .get(end..end.saturating_add(16))
                .ok_or(Malformed(end))?;
            end += 16;
            if entry.iter().all(|b| *b == 0) {
                break;
            }
        }
        Ok(Self {
            structs,
            strings,
            reservations: data.get(rsv..end).ok_or(Malformed(rsv))?,
            boot_cpuid: word(7)?,
        })
    }

    /// The token at `off` and the offset of the next one.
    pub fn token(&self, off: usize) -> Result<(Token<'a>, usize), Malformed> {
        let s = self.structs;
        let bad = Malformed(off);
        let tag = be32(s, off).ok_or(bad)?;
        let body = off + 4;
        Ok(match tag {
            BEGIN_NODE => {
                let rest = s.get(body..).ok_or(bad)?;
                let len = rest.iter().position(|b| *b == 0).ok_or(bad)?;
                (Token::Begin(&rest[..len]), align4(body + len + 1))
            }
            END_NODE => (Token::End, body),
            NOP => (Token::Nop, body),
            END => (Token::Finish, body),
            PROP => {
                let len = be32(s, body).ok_or(bad)? as usize;
                let name_off = be32(s, body + 4).ok_or(bad)?;
                let start = body + 8;
                let value = s
                    .get(start..start.checked_add(len).ok_or(bad)?)
                    .ok_or(bad)?;
                let name = self.strings.get(name_off as usize..).ok_or(bad)?;
                let name = &name[..name.iter().position(|b| *b == 0).ok_or(bad)?];
                let prop = Prop {
                    name,
                    name_off,
                    value,
                };
                (Token::Prop(prop), align4(start + len))
            }
            _ => return Err(bad),
        })
    }

    /// The properties that start at `off` (right after a node's name), and the offset after them.
    pub fn props(&self, mut off: usize) -> Result<(Vec<Prop<'a>>, usize), Malformed> {
        let mut props = Vec::new();
        loop {
            let (tok, next) = self.token(off)?;
            match tok {
                Token::Prop(p) => props.push(p),
                Token::Nop => {}
                _ => return Ok((props, off)),
            }
            off = next;
        }
    }

    /// The offset after the subtree whose properties or children start at `off` (inside a node:
    /// its `END_NODE` included).
    pub fn skip_subtree(&self, mut off: usize) -> Result<usize, Malformed> {
        let mut depth = 1usize;
        loop {
            let (tok, next) = self.token(off)?;
            match tok {
                Token::Begin(_) => depth += 1,
                Token::End => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(next);
                    }
                }
                Token::Finish => return Err(Malformed(off)),
                Token::Prop(_) | Token::Nop => {}
            }
            off = next;
        }
    }
}

// Tests unwrap freely: their inputs are fixtures they control.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const QEMU: &[u8] = include_bytes!("../tests/fixtures/qemu-virt-smmuv3.dtb");

    /// Every token from the start; `Err` where the walk stops on malformed input.
    fn walk(data: &[u8]) -> Result<(usize, usize), Malformed> {
        let input = Input::new(data)?;
        let (mut nodes, mut props, mut off) = (0, 0, 0);
        loop {
            let (token, next) = input.token(off)?;
            match token {
                Token::Begin(_) => {
                    nodes += 1;
                    let (p, after) = input.props(next)?;
                    props += p.len();
                    off = after;
                    continue;
                }
                Token::Finish => return Ok((nodes, props)),
                _ => {}
            }
            off = next;
        }
    }

    #[test]
    fn qemu_tree_as_dtoolkit_reads_it() {
        use dtoolkit::fdt::Fdt;
        use dtoolkit::{Node, Property};
        let fdt = Fdt::new(QEMU).unwrap();
        let (mut nodes, mut props) = (0, 0);
        let mut stack = alloc::vec![fdt.root()];
        while let Some(n) = stack.pop() {
            nodes += 1;
            props += n.properties().count();
            stack.extend(n.children());
        }
        assert_eq!(walk(QEMU), Ok((nodes, props)));

        let input = Input::new(QEMU).unwrap();
        assert_eq!(input.boot_cpuid, fdt.boot_cpuid_phys());
        let (root_props, _) = input.props(align4(4 + 1)).unwrap();
        let root = fdt.root();
        let names: alloc::vec::Vec<alloc::string::String> =
            root.properties().map(|p| p.name().into()).collect();
        let ours: alloc::vec::Vec<&str> = root_props
            .iter()
            .map(|p| core::str::from_utf8(p.name).unwrap())
            .collect();
        assert_eq!(ours, names);
        assert_eq!(root_props[0].value, root.property(ours[0]).unwrap().value());
        // The reservation block ends with its all-zero entry.
        assert!(input.reservations.ends_with(&[0; 16]));
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert_eq!(Input::new(&QEMU[..20]).err(), Some(Malformed(36)));
        let mut bad = QEMU.to_vec();
        bad[0] ^= 1;
        assert_eq!(Input::new(&bad).err(), Some(Malformed(0)));
        // The structure block's size pointing past the blob.
        let mut bad = QEMU.to_vec();
        bad[36..40].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(Input::new(&bad).err(), Some(Malformed(8)));
        // An unknown token.
        let input = Input::new(QEMU).unwrap();
        let mut bad = QEMU.to_vec();
        let structs = u32::from_be_bytes(QEMU[8..12].try_into().unwrap()) as usize;
        bad[structs..structs + 4].copy_from_slice(&7u32.to_be_bytes());
        assert_eq!(walk(&bad), Err(Malformed(0)));
        // A subtree that never ends.
        assert!(input.skip_subtree(input.structs.len() - 4).is_err());
    }

    proptest! {
        /// Any corruption of a real tree reads as tokens or stops with an error: never a panic.
        #[test]
        fn corrupted_trees_never_panic(
            flips in proptest::collection::vec((0usize..QEMU.len(), any::<u8>()), 1..8),
            cut in 0usize..QEMU.len(),
        ) {
            let mut data = QEMU.to_vec();
            for (at, byte) in flips {
                data[at] = byte;
            }
            let _ = walk(&data);
            let _ = walk(&data[..cut]);
            if let Ok(input) = Input::new(&data) {
                let _ = input.skip_subtree(0);
            }
        }
    }
}
