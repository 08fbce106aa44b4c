//! The flattened device tree read and written as a stream of tokens (devicetree specification
//! v0.4, chapter 5): the host's tree is the incoming one copied token by token with a few
//! properties replaced, removed or added and a few nodes skipped or appended, without building a
//! model of the whole tree (which was most of Portcullis' boot: every node and property copied
//! into maps, then written out again).
//!
//! Every read is bounds-checked: a malformed input is an error, never a panic.

use alloc::vec::Vec;

const MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;
const HEADER_SIZE: usize = 40;

/// Where the input stops making sense, as an offset into the structure block (or the blob for
/// the header and the reservation block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub usize);

fn be32(data: &[u8], off: usize) -> Option<u32> {
    let b = data.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn align4(x: usize) -> usize {
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
    structs: &'a [u8],
    strings: &'a [u8],
    reservations: &'a [u8],
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

/// The output blob under construction: structure block and strings block, assembled by
/// [`Output::finish`].
#[derive(Debug)]
pub struct Output<'a> {
    structs: Vec<u8>,
    strings: Vec<u8>,
    input_strings: &'a [u8],
    /// Offsets of the names Portcullis adds, found or appended once each.
    names: Vec<(&'static str, u32)>,
}

impl<'a> Output<'a> {
    pub fn new(input: &Input<'a>) -> Self {
        Self {
            structs: Vec::with_capacity(input.structs.len() + 1024),
            strings: input.strings.to_vec(),
            input_strings: input.strings,
            names: Vec::new(),
        }
    }

    fn word(&mut self, w: u32) {
        self.structs.extend_from_slice(&w.to_be_bytes());
    }

    fn pad(&mut self) {
        while !self.structs.len().is_multiple_of(4) {
            self.structs.push(0);
        }
    }

    pub fn begin(&mut self, name: &[u8]) {
        self.word(BEGIN_NODE);
        self.structs.extend_from_slice(name);
        self.structs.push(0);
        self.pad();
    }

    pub fn end(&mut self) {
        self.word(END_NODE);
    }

    /// A property whose name is already in the strings block at `name_off`.
    pub fn prop_at(&mut self, name_off: u32, value: &[u8]) {
        self.word(PROP);
        self.word(value.len() as u32);
        self.word(name_off);
        self.structs.extend_from_slice(value);
        self.pad();
    }

    /// A property named by Portcullis.
    pub fn prop(&mut self, name: &'static str, value: &[u8]) {
        let off = self.name_offset(name);
        self.prop_at(off, value);
    }

    fn name_offset(&mut self, name: &'static str) -> u32 {
        if let Some((_, off)) = self.names.iter().find(|(n, _)| *n == name) {
            return *off;
        }
        let mut at = 0usize;
        let mut found = None;
        for s in self.input_strings.split(|b| *b == 0) {
            if s == name.as_bytes() {
                found = Some(at as u32);
                break;
            }
            at += s.len() + 1;
        }
        let off = found.unwrap_or_else(|| {
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        });
        self.names.push((name, off));
        off
    }

    /// The blob: header, the input's memory reservations, structure and strings blocks.
    pub fn finish(mut self, input: &Input<'_>) -> Vec<u8> {
        self.word(END);
        let rsv = HEADER_SIZE;
        let structs = rsv + input.reservations.len();
        let strings = structs + self.structs.len();
        let total = strings + self.strings.len();
        let mut out = Vec::with_capacity(total);
        for w in [
            MAGIC,
            total as u32,
            structs as u32,
            strings as u32,
            rsv as u32,
            17,
            16,
            input.boot_cpuid,
            self.strings.len() as u32,
            self.structs.len() as u32,
        ] {
            out.extend_from_slice(&w.to_be_bytes());
        }
        out.extend_from_slice(input.reservations);
        out.extend_from_slice(&self.structs);
        out.extend_from_slice(&self.strings);
        out
    }
}
