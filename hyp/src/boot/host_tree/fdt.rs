//! The host's tree written as a stream of tokens: the incoming tree ([`platform::fdt::Input`])
//! copied token by token with a few properties replaced, removed or added and a few nodes skipped
//! or appended, without building a model of the whole tree (which was most of Portcullis' boot:
//! every node and property copied into maps, then written out again).

use alloc::vec::Vec;

use platform::fdt::{BEGIN_NODE, END, END_NODE, HEADER_SIZE, MAGIC, PROP};
pub use platform::fdt::{Input, Malformed, Prop, Token};

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
        let mut strings = input.strings.to_vec();
        // A block whose last name lacks its NUL (no property can use that name: the reader
        // refuses it) is terminated, so that a name appended after it stays a name of its own.
        if strings.last().is_some_and(|b| *b != 0) {
            strings.push(0);
        }
        Self {
            structs: Vec::with_capacity(input.structs.len() + 1024),
            strings,
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
        // Only a NUL-terminated name of the input is the name: an unterminated last one is not.
        let mut at = 0usize;
        let mut found = None;
        for s in self.input_strings.split_inclusive(|b| *b == 0) {
            if s.strip_suffix(&[0]) == Some(name.as_bytes()) {
                found = Some(at as u32);
                break;
            }
            at += s.len();
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
