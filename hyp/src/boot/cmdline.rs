//! Command lines: Linux's `crashkernel=` in the host's, and Portcullis' own options.
//!
//! The crash region must be the same for Portcullis and for the host kernel, so the host's request
//! is read with Linux's rules (`kernel/crash_reserve.c`, `lib/cmdline.c` `memparse`, the
//! `Documentation/admin-guide/kdump/kdump.rst` syntax), Portcullis places the region, and
//! [`rewrite_crashkernel`] leaves the host exactly one `crashkernel=SIZE@BASE` naming it.
//!
//! Parameters are split the way Linux's `next_arg` splits them: at whitespace outside `"…"` spans.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use log::LevelFilter;
use platform::addr::{Pa, PhysRange};

/// Linux rounds the RAM size up to this before matching `crashkernel=` ranges, to absorb what
/// firmware keeps for itself.
pub const RANGE_RAM_ROUNDING: u64 = 128 << 20;

/// What the host asked for with `crashkernel=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashRequest {
    /// Requested size in bytes (not yet rounded).
    pub size: u64,
    /// `@BASE`, if given and non-zero (Linux treats `@0` as "anywhere").
    pub base: Option<Pa>,
}

/// Why a number could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemparseError {
    /// No digit where a number was expected.
    NoDigits,
    /// The value does not fit in 64 bits.
    Overflow,
}

/// Reads a number as Linux's `memparse` does: `0x` prefix for hex, a leading `0` for octal,
/// otherwise decimal, then an optional suffix `K`, `M`, `G`, `T`, `P` or `E` (any case) multiplying
/// by a power of 1024. Returns the value and the number of bytes consumed. Unlike Linux it refuses
/// values that overflow 64 bits instead of wrapping.
pub fn memparse(s: &str) -> Result<(u64, usize), MemparseError> {
    let b = s.as_bytes();
    let (radix, start) = match (b.first(), b.get(1), b.get(2)) {
        (Some(b'0'), Some(b'x' | b'X'), Some(h)) if h.is_ascii_hexdigit() => (16, 2),
        (Some(b'0'), _, _) => (8, 0),
        _ => (10, 0),
    };
    let mut value: u64 = 0;
    let mut i = start;
    while let Some(digit) = b.get(i).and_then(|c| char::from(*c).to_digit(radix)) {
        value = value
            .checked_mul(u64::from(radix))
            .and_then(|v| v.checked_add(u64::from(digit)))
            .ok_or(MemparseError::Overflow)?;
        i += 1;
    }
    if i == start {
        return Err(MemparseError::NoDigits);
    }
    let shift = match b.get(i).map(u8::to_ascii_uppercase) {
        Some(b'K') => 10,
        Some(b'M') => 20,
        Some(b'G') => 30,
        Some(b'T') => 40,
        Some(b'P') => 50,
        Some(b'E') => 60,
        _ => 0,
    };
    if shift != 0 {
        i += 1;
        if value > u64::MAX >> shift {
            return Err(MemparseError::Overflow);
        }
        value <<= shift;
    }
    Ok((value, i))
}

/// Writes `value` so that [`memparse`] reads it back exactly: with the largest exact binary
/// suffix, or in decimal.
pub fn format_size(value: u64) -> String {
    const SUFFIXES: [(u32, char); 6] = [
        (60, 'E'),
        (50, 'P'),
        (40, 'T'),
        (30, 'G'),
        (20, 'M'),
        (10, 'K'),
    ];
    if value != 0 {
        for (shift, suffix) in SUFFIXES {
            if value.trailing_zeros() >= shift {
                return format!("{}{suffix}", value >> shift);
            }
        }
    }
    format!("{value}")
}

/// Why a `crashkernel=` value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdlineError {
    /// A number was expected at byte `at` of the value.
    NumberExpected { value: String, at: usize },
    /// A number at byte `at` does not fit in 64 bits.
    NumberOverflow { value: String, at: usize },
    /// Something else than `expected` at byte `at`.
    Unexpected {
        value: String,
        at: usize,
        expected: &'static str,
    },
    /// A range `START-END` with END not above START.
    EmptyRange { value: String, start: u64, end: u64 },
    /// A range's size is not below the (rounded) RAM size, which Linux refuses.
    SizeNotBelowRam { value: String, size: u64, ram: u64 },
}

impl fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NumberExpected { value, at } => {
                write!(
                    f,
                    "crashkernel={value}: a number is expected at offset {at}"
                )
            }
            Self::NumberOverflow { value, at } => {
                write!(
                    f,
                    "crashkernel={value}: the number at offset {at} does not fit in 64 bits"
                )
            }
            Self::Unexpected {
                value,
                at,
                expected,
            } => {
                write!(f, "crashkernel={value}: {expected} expected at offset {at}")
            }
            Self::EmptyRange { value, start, end } => write!(
                f,
                "crashkernel={value}: range end {end:#x} is not above its start {start:#x}"
            ),
            Self::SizeNotBelowRam { value, size, ram } => write!(
                f,
                "crashkernel={value}: size {size:#x} is not below the RAM size {ram:#x}"
            ),
        }
    }
}

impl core::error::Error for CmdlineError {}

/// Linux's `isspace` for command lines.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// Byte spans of the parameters of `cmdline`, split as Linux's `next_arg` splits them.
fn tokens(cmdline: &str) -> Vec<(usize, usize)> {
    let b = cmdline.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while b.get(i).is_some_and(|c| is_space(*c)) {
            i += 1;
        }
        if i >= b.len() {
            return out;
        }
        let start = i;
        let mut in_quote = false;
        if b.get(i) == Some(&b'"') {
            in_quote = true;
            i += 1;
        }
        while let Some(&c) = b.get(i) {
            if is_space(c) && !in_quote {
                break;
            }
            if c == b'"' {
                in_quote = !in_quote;
            }
            i += 1;
        }
        out.push((start, i));
    }
}

/// A parameter's name and value (`None` without `=`), with the quotes Linux strips removed.
fn split_param(token: &str) -> (&str, Option<&str>) {
    let token = token
        .strip_prefix('"')
        .map_or(token, |t| t.strip_suffix('"').unwrap_or(t));
    match token.split_once('=') {
        Some((name, value)) => {
            let value = value
                .strip_prefix('"')
                .map_or(value, |v| v.strip_suffix('"').unwrap_or(v));
            (name, Some(value))
        }
        None => (token, None),
    }
}

/// The suffixes that make a `crashkernel=` a separate request in Linux.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Suffix {
    None,
    High,
    Low,
    /// `,cma` (Linux 6.16): extra CMA memory for the capture kernel; not a placement request.
    Cma,
}

fn suffix_of(value: &str) -> (Suffix, &str) {
    for (suffix, text) in [
        (Suffix::High, ",high"),
        (Suffix::Low, ",low"),
        (Suffix::Cma, ",cma"),
    ] {
        if let Some(v) = value.strip_suffix(text) {
            return (suffix, v);
        }
    }
    (Suffix::None, value)
}

struct Cursor<'v> {
    value: &'v str,
    pos: usize,
}

impl Cursor<'_> {
    fn number(&mut self) -> Result<u64, CmdlineError> {
        let rest = self.value.get(self.pos..).unwrap_or("");
        match memparse(rest) {
            Ok((v, used)) => {
                self.pos += used;
                Ok(v)
            }
            Err(MemparseError::NoDigits) => Err(CmdlineError::NumberExpected {
                value: self.value.to_owned(),
                at: self.pos,
            }),
            Err(MemparseError::Overflow) => Err(CmdlineError::NumberOverflow {
                value: self.value.to_owned(),
                at: self.pos,
            }),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.value.as_bytes().get(self.pos).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn expect(&mut self, c: u8, expected: &'static str) -> Result<(), CmdlineError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.unexpected(expected))
        }
    }

    fn unexpected(&self, expected: &'static str) -> CmdlineError {
        CmdlineError::Unexpected {
            value: self.value.to_owned(),
            at: self.pos,
            expected,
        }
    }

    fn end(&self) -> Result<(), CmdlineError> {
        if self.pos >= self.value.len() {
            Ok(())
        } else {
            Err(self.unexpected("end of value"))
        }
    }

    /// `@BASE` if present, then the end of the value.
    fn optional_base(&mut self) -> Result<Option<Pa>, CmdlineError> {
        let base = if self.eat(b'@') {
            Some(self.number()?)
        } else {
            None
        };
        self.end()?;
        Ok(base.filter(|b| *b != 0).map(Pa))
    }
}

/// Parses one `crashkernel=` value (without the `,high`/`,low` suffix); `None` if a range form
/// matches no range.
fn parse_value(value: &str, ram: u64) -> Result<Option<CrashRequest>, CmdlineError> {
    let mut c = Cursor { value, pos: 0 };
    if !value.contains(':') {
        let size = c.number()?;
        let base = c.optional_base()?;
        return Ok(Some(CrashRequest { size, base }));
    }

    let ram = ram
        .checked_next_multiple_of(RANGE_RAM_ROUNDING)
        .unwrap_or(ram);
    let mut chosen = None;
    loop {
        let start = c.number()?;
        c.expect(b'-', "'-'")?;
        let end = if c.peek() == Some(b':') {
            u64::MAX
        } else {
            c.number()?
        };
        if end <= start {
            return Err(CmdlineError::EmptyRange {
                value: value.to_owned(),
                start,
                end,
            });
        }
        c.expect(b':', "':'")?;
        let size = c.number()?;
        if size >= ram {
            return Err(CmdlineError::SizeNotBelowRam {
                value: value.to_owned(),
                size,
                ram,
            });
        }
        // Like Linux: the first matching range wins and the rest is not read.
        if ram >= start && ram < end {
            chosen = Some(size);
            break;
        }
        if !c.eat(b',') {
            break;
        }
    }
    let Some(size) = chosen else {
        // No range matches this RAM size: Linux reserves nothing (an `@BASE` is not read).
        return Ok(None);
    };
    while c.peek().is_some_and(|b| b != b'@') {
        c.pos += 1;
    }
    let base = c.optional_base()?;
    Ok(Some(CrashRequest { size, base }))
}

/// The host's crash request from its command line, or `None` if it has none (or a range form
/// matches no range). `ram` is the RAM size the host will see (rounded up to
/// [`RANGE_RAM_ROUNDING`] here, as Linux does).
///
/// Which `crashkernel=` counts: the last one without suffix, as in Linux; failing that the last
/// `,high`, failing that the last `,low` — both taken as a plain size, with no base and no separate
/// low region, since the host will be told one fixed `SIZE@BASE`. `,cma` extras are ignored (and
/// dropped by [`rewrite_crashkernel`]).
///
/// Unlike Linux, which finds `crashkernel=` by a plain substring search, only whole parameters
/// named `crashkernel` count; [`rewrite_crashkernel`] removes every one, so Linux sees only the
/// placed region.
pub fn parse_crashkernel(cmdline: &str, ram: u64) -> Result<Option<CrashRequest>, CmdlineError> {
    let mut best: Option<(Suffix, &str)> = None;
    for (start, end) in tokens(cmdline) {
        let (name, value) = split_param(cmdline.get(start..end).unwrap_or(""));
        let (Some(value), "crashkernel") = (value, name) else {
            continue;
        };
        let (suffix, value) = suffix_of(value);
        let rank = |s: Suffix| match s {
            Suffix::None => 3,
            Suffix::High => 2,
            Suffix::Low => 1,
            Suffix::Cma => 0,
        };
        if rank(suffix) > 0 && best.is_none_or(|(b, _)| rank(suffix) >= rank(b)) {
            best = Some((suffix, value));
        }
    }
    match best {
        None => Ok(None),
        Some((Suffix::None, value)) => parse_value(value, ram),
        Some((_, value)) => {
            let mut c = Cursor { value, pos: 0 };
            let size = c.number()?;
            c.end()?;
            Ok(Some(CrashRequest { size, base: None }))
        }
    }
}

/// `crashkernel=SIZE@BASE` for `region`, in a form Linux's parser reads back exactly.
pub fn crashkernel_param(region: PhysRange) -> String {
    format!(
        "crashkernel={}@{:#x}",
        format_size(region.size()),
        region.start.raw()
    )
}

/// The host's command line with every `crashkernel=` parameter replaced by exactly one
/// `crashkernel=SIZE@BASE` for `region` (in place of the first one), or removed when `region` is
/// `None`. Every other parameter and the whitespace between kept parameters is left as it was. If
/// there is a region but no `crashkernel=` in the line, the parameter is added before a `--` (which
/// starts init's arguments) or at the end.
pub fn rewrite_crashkernel(bootargs: &str, region: Option<PhysRange>) -> String {
    let spans = tokens(bootargs);
    let text = |(s, e): (usize, usize)| bootargs.get(s..e).unwrap_or("");
    let is_crash = |span| split_param(text(span)).0 == "crashkernel";
    let mut replacement = region.map(crashkernel_param);

    if replacement.is_some() && !spans.iter().any(|&s| is_crash(s)) {
        let new = replacement.unwrap_or_default();
        if let Some(&(dashes, _)) = spans.iter().find(|&&s| text(s) == "--") {
            let (before, after) = bootargs.split_at(dashes);
            return format!("{before}{new} {after}");
        }
        let kept = bootargs.trim_end_matches(|c: char| c.is_ascii() && is_space(c as u8));
        return if kept.is_empty() {
            new
        } else {
            format!("{kept} {new}")
        };
    }

    let mut out = String::with_capacity(bootargs.len() + 32);
    let lead_end = spans.first().map_or(bootargs.len(), |s| s.0);
    out.push_str(bootargs.get(..lead_end).unwrap_or(""));
    let mut first_kept = true;
    for (i, &span) in spans.iter().enumerate() {
        let piece = if is_crash(span) {
            match replacement.take() {
                Some(r) => r,
                None => continue,
            }
        } else {
            String::from(text(span))
        };
        if !first_kept {
            // The separator that preceded this parameter in the original line.
            let sep_start = i
                .checked_sub(1)
                .and_then(|p| spans.get(p))
                .map_or(span.0, |p| p.1);
            out.push_str(bootargs.get(sep_start..span.0).unwrap_or(" "));
        }
        first_kept = false;
        out.push_str(&piece);
    }
    let trail_start = spans.last().map_or(bootargs.len(), |s| s.1);
    out.push_str(bootargs.get(trail_start..).unwrap_or(""));
    out
}

/// Portcullis' own options, from `/chosen/portcullis,bootargs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HypOptions {
    /// `log=off|error|warn|info|debug|trace`.
    pub log_level: Option<LevelFilter>,
    /// `counters=cpu-off`: the counters line (`diag::counters`) also at each PSCI CPU_OFF, for
    /// benchmarks that bracket their work with a CPU offline/online; `counters=exit` (the
    /// default): only at SYSTEM_OFF / SYSTEM_RESET. Off by default because a dying kernel stops
    /// its secondary CPUs with CPU_OFF just before the kexec into the capture kernel: a kilobyte
    /// of console output from one CPU then (under QEMU, a trap per character, each taking QEMU's
    /// global lock) stretched the fence window on the other from ~0.1 to 0.6-1.3 ms.
    pub counters_at_cpu_off: Option<bool>,
}

/// Something in `portcullis,bootargs` that was ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionWarning {
    UnknownKey {
        key: String,
    },
    MissingValue {
        key: String,
    },
    BadValue {
        key: String,
        value: String,
        expected: &'static str,
    },
}

impl fmt::Display for OptionWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownKey { key } => write!(f, "portcullis,bootargs: unknown option \"{key}\""),
            Self::MissingValue { key } => {
                write!(
                    f,
                    "portcullis,bootargs: option \"{key}\" needs a value (key=value)"
                )
            }
            Self::BadValue {
                key,
                value,
                expected,
            } => write!(
                f,
                "portcullis,bootargs: \"{value}\" is not a valid value for {key} (expected {expected})"
            ),
        }
    }
}

/// Parses `portcullis,bootargs`: space-separated `key=value`. Unknown keys and bad values are
/// reported, never fatal; a later repetition of a key wins.
pub fn parse_hyp_options(args: &str) -> (HypOptions, Vec<OptionWarning>) {
    let mut options = HypOptions::default();
    let mut warnings = Vec::new();
    for (start, end) in tokens(args) {
        let (key, value) = split_param(args.get(start..end).unwrap_or(""));
        match (key, value) {
            ("log", Some(v)) => match v.parse::<LevelFilter>() {
                Ok(level) => options.log_level = Some(level),
                Err(_) => warnings.push(OptionWarning::BadValue {
                    key: key.to_owned(),
                    value: v.to_owned(),
                    expected: "off, error, warn, info, debug or trace",
                }),
            },
            ("counters", Some("cpu-off")) => options.counters_at_cpu_off = Some(true),
            ("counters", Some("exit")) => options.counters_at_cpu_off = Some(false),
            ("counters", Some(v)) => warnings.push(OptionWarning::BadValue {
                key: key.to_owned(),
                value: v.to_owned(),
                expected: "cpu-off or exit",
            }),
            ("log" | "counters", None) => warnings.push(OptionWarning::MissingValue {
                key: key.to_owned(),
            }),
            _ => warnings.push(OptionWarning::UnknownKey {
                key: key.to_owned(),
            }),
        }
    }
    (options, warnings)
}

// Tests unwrap freely: their inputs are fixtures they control.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
