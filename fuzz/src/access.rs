//! What the fuzzers share about a trapped register access: its size, as the host's instruction
//! gives it (a word, a doubleword, or anything, which the emulation must refuse).

use arbitrary::Arbitrary;

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Size {
    Word,
    Double,
    Raw(u8),
}

impl Size {
    pub fn bytes(self) -> u8 {
        match self {
            Self::Word => 4,
            Self::Double => 8,
            Self::Raw(s) => s,
        }
    }
}
