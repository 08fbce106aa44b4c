//! Portcullis' fault report, as the capture kernel reads it: ASCII text at the start of the
//! `/reserved-memory` region with compatible `portcullis,fault-report`, NUL-padded, in the fixed
//! format `hyp/src/fence.rs` (`render_report`) documents:
//!
//! ```text
//! PORTCULLIS FAULT REPORT v1
//! state: armed|fenced
//! fence-window-ns: <N>
//! fence-commands: <N>
//! streams-terminated: <N>
//! fence-stores: <N>                (optional)
//! fence-cpu-window-ns: <N>         (optional)
//! live-streams: <sid> <sid> ... [truncated=<N>]
//! faults-total: <N>
//! faults-overflowed: <N>
//! fault: sid=0x0008 bdf=00:01.0 event=F_TRANSLATION addr=0x7e001000 dir=write count=<N> writes=<N>
//! ...
//! [truncated: <N> more]
//! end
//! ```
//!
//! The parser is strict (every line in its place, every number well formed), so a report another
//! tool could misread fails here too. It allocates nothing and builds on the host, where it is
//! tested.

use core::fmt;

/// The report's first line.
pub const HEADER: &str = "PORTCULLIS FAULT REPORT v1";

/// One `fault:` line: the latest fault of one stream and how many it had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultLine<'a> {
    pub sid: u32,
    /// `None` for `bdf=-`.
    pub bdf: Option<&'a str>,
    /// The event's name (`F_TRANSLATION`), or `0x%02x` for a Reserved number.
    pub event: &'a str,
    pub addr: u64,
    /// `write`, `read`, or `-` for events without an access.
    pub dir: &'a str,
    pub count: u64,
    /// Of `count`, the refused writes.
    pub writes: u64,
}

/// A parsed report, borrowing its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report<'a> {
    /// `armed` or `fenced`.
    pub state: &'a str,
    pub fence_window_ns: u64,
    pub fence_commands: u64,
    pub streams_terminated: u64,
    /// `fence-stores:` (a later addition to v1; `None` in a report without it).
    pub fence_stores: Option<u64>,
    /// `fence-cpu-window-ns:` (likewise).
    pub fence_cpu_window_ns: Option<u64>,
    /// The StreamID tokens of `live-streams:` (without `truncated=`).
    live: &'a str,
    /// `truncated=<N>` at the end of `live-streams:`.
    pub live_truncated: Option<u64>,
    /// The tokens of `lpi-tables:` (empty without the line).
    pub lpi_tables: &'a str,
    pub faults_total: u64,
    pub faults_overflowed: u64,
    /// The `fault:` lines, each ending with a newline.
    fault_lines: &'a str,
    /// `truncated: <N> more`.
    pub truncated: Option<u64>,
}

/// Why a report could not be parsed: the 1-based line and what was wrong with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportError<'a> {
    pub line: usize,
    pub what: &'static str,
    /// The offending line (empty past the end).
    pub text: &'a str,
}

impl fmt::Display for ReportError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "line {}: {} ({:?})", self.line, self.what, self.text)
    }
}

/// The report's text in a region's bytes: everything before the first NUL, which must be ASCII.
pub fn text_of(bytes: &[u8]) -> Result<&str, ReportError<'static>> {
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let text = &bytes[..len];
    if !text.is_ascii() {
        return Err(ReportError {
            line: 0,
            what: "the report is not ASCII",
            text: "",
        });
    }
    core::str::from_utf8(text).map_err(|_| ReportError {
        line: 0,
        what: "the report is not ASCII",
        text: "",
    })
}

/// A decimal number.
fn decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A `0x` hexadecimal number.
fn hex(s: &str) -> Option<u64> {
    let digits = s.strip_prefix("0x")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// A StreamID token: `0x%04x` (at least four hex digits), at most 32 bits.
fn sid_token(s: &str) -> Option<u32> {
    let digits = s.strip_prefix("0x")?;
    if digits.len() < 4 {
        return None;
    }
    hex(s).and_then(|v| u32::try_from(v).ok())
}

impl<'a> FaultLine<'a> {
    /// Parses one `fault:` line (without its newline).
    pub fn parse(line: &'a str) -> Result<FaultLine<'a>, &'static str> {
        let rest = line.strip_prefix("fault: ").ok_or("not a fault: line")?;
        let mut fields = rest.split(' ');
        let mut field = |key: &'static str| -> Result<&'a str, &'static str> {
            fields
                .next()
                .and_then(|f| f.strip_prefix(key))
                .ok_or("fault: fields are not sid= bdf= event= addr= dir= count= writes=")
        };
        let sid = sid_token(field("sid=")?).ok_or("bad sid=")?;
        let bdf = field("bdf=")?;
        if bdf.is_empty() {
            return Err("empty bdf=");
        }
        let event = field("event=")?;
        if event.is_empty() {
            return Err("empty event=");
        }
        let addr = hex(field("addr=")?).ok_or("bad addr=")?;
        let dir = field("dir=")?;
        if !matches!(dir, "write" | "read" | "-") {
            return Err("dir= is not write, read or -");
        }
        let count = decimal(field("count=")?).ok_or("bad count=")?;
        let writes = decimal(field("writes=")?).ok_or("bad writes=")?;
        if writes > count {
            return Err("writes= above count=");
        }
        if fields.next().is_some() {
            return Err("trailing fields after writes=");
        }
        Ok(FaultLine {
            sid,
            bdf: (bdf != "-").then_some(bdf),
            event,
            addr,
            dir,
            count,
            writes,
        })
    }
}

/// The lines of a text, with their 1-based numbers, and where each starts.
struct Lines<'a> {
    text: &'a str,
    at: usize,
    number: usize,
}

impl<'a> Lines<'a> {
    /// The next line (without its newline); every line must end with one.
    fn next(&mut self) -> Result<&'a str, ReportError<'a>> {
        self.number += 1;
        let rest = &self.text[self.at..];
        match rest.find('\n') {
            Some(n) => {
                self.at += n + 1;
                Ok(&rest[..n])
            }
            None => Err(self.error(
                if rest.is_empty() {
                    "the report ends early"
                } else {
                    "the last line has no newline"
                },
                rest,
            )),
        }
    }

    fn error(&self, what: &'static str, text: &'a str) -> ReportError<'a> {
        ReportError {
            line: self.number,
            what,
            text,
        }
    }

    /// `key: <decimal>`.
    fn number_field(&mut self, key: &'static str) -> Result<u64, ReportError<'a>> {
        let line = self.next()?;
        line.strip_prefix(key)
            .and_then(|v| v.strip_prefix(": "))
            .and_then(decimal)
            .ok_or_else(|| self.error(key, line))
    }
}

impl<'a> Report<'a> {
    /// Parses a whole report: every line in place, ending with `end` and nothing after it.
    pub fn parse(text: &'a str) -> Result<Report<'a>, ReportError<'a>> {
        let mut lines = Lines {
            text,
            at: 0,
            number: 0,
        };
        let header = lines.next()?;
        if header != HEADER {
            return Err(lines.error("not the report header", header));
        }
        let mut line = lines.next()?;
        // `generation:` / `generation-end:` (optional): equal in a report read whole.
        let mut generation = None;
        if let Some(v) = line.strip_prefix("generation: ") {
            generation = Some(decimal(v).ok_or_else(|| lines.error("generation", line))?);
            line = lines.next()?;
        }
        let state = line
            .strip_prefix("state: ")
            .filter(|s| matches!(*s, "armed" | "fenced"))
            .ok_or_else(|| lines.error("state: is not armed or fenced", line))?;
        let fence_window_ns = lines.number_field("fence-window-ns")?;
        let fence_commands = lines.number_field("fence-commands")?;
        let streams_terminated = lines.number_field("streams-terminated")?;

        let mut line = lines.next()?;
        let mut fence_stores = None;
        if let Some(v) = line.strip_prefix("fence-stores: ") {
            fence_stores = Some(decimal(v).ok_or_else(|| lines.error("fence-stores", line))?);
            line = lines.next()?;
        }
        let mut fence_cpu_window_ns = None;
        if let Some(v) = line.strip_prefix("fence-cpu-window-ns: ") {
            fence_cpu_window_ns =
                Some(decimal(v).ok_or_else(|| lines.error("fence-cpu-window-ns", line))?);
            line = lines.next()?;
        }
        let tokens = line
            .strip_prefix("live-streams:")
            .ok_or_else(|| lines.error("no live-streams: line", line))?;
        let (live, live_truncated) = match tokens.rfind(" truncated=") {
            Some(at) => {
                let n = decimal(&tokens[at + " truncated=".len()..])
                    .ok_or_else(|| lines.error("bad truncated= in live-streams:", line))?;
                (&tokens[..at], Some(n))
            }
            None => (tokens, None),
        };
        if !live.is_empty() && !live.starts_with(' ') {
            return Err(lines.error("live-streams: tokens must follow a space", line));
        }
        let mut previous: Option<u32> = None;
        for token in live.split(' ').skip(1) {
            let sid = sid_token(token).ok_or_else(|| lines.error("bad StreamID", line))?;
            if previous.is_some_and(|p| p >= sid) {
                return Err(lines.error("live-streams: not sorted without duplicates", line));
            }
            previous = Some(sid);
        }

        // Optional (crash mode with GIC LPI tables kept writable): `lpi-tables: 0x<s>-0x<e> ...`.
        let mut lpi_tables = "";
        if lines.text[lines.at..].starts_with("lpi-tables:") {
            let line = lines.next()?;
            lpi_tables = line.strip_prefix("lpi-tables:").unwrap_or("");
            if !lpi_tables.is_empty() && !lpi_tables.starts_with(' ') {
                return Err(lines.error("lpi-tables: tokens must follow a space", line));
            }
        }

        let faults_total = lines.number_field("faults-total")?;
        let faults_overflowed = lines.number_field("faults-overflowed")?;

        let faults_start = lines.at;
        let mut faults_end = faults_start;
        let mut truncated = None;
        let mut end_generation = None;
        loop {
            let mut line = lines.next()?;
            if let Some(v) = line.strip_prefix("generation-end: ") {
                end_generation =
                    Some(decimal(v).ok_or_else(|| lines.error("generation-end", line))?);
                line = lines.next()?;
                if line != "end" {
                    return Err(lines.error("generation-end: is not followed by end", line));
                }
            }
            if line == "end" {
                break;
            }
            if let Some(rest) = line.strip_prefix("truncated: ") {
                let n = rest
                    .strip_suffix(" more")
                    .and_then(decimal)
                    .ok_or_else(|| lines.error("bad truncated: line", line))?;
                truncated = Some(n);
                let mut end = lines.next()?;
                if let Some(v) = end.strip_prefix("generation-end: ") {
                    end_generation =
                        Some(decimal(v).ok_or_else(|| lines.error("generation-end", end))?);
                    end = lines.next()?;
                }
                if end != "end" {
                    return Err(lines.error("truncated: is not followed by end", end));
                }
                break;
            }
            if truncated.is_none() && line.starts_with("fault: ") {
                FaultLine::parse(line).map_err(|what| lines.error(what, line))?;
                faults_end = lines.at;
                continue;
            }
            return Err(lines.error("not a fault:, truncated: or end line", line));
        }
        if generation != end_generation {
            return Err(lines.error(
                "generation: and generation-end: differ (read while rewritten)",
                "",
            ));
        }
        if lines.at != text.len() {
            return Err(lines.error("text after end", &text[lines.at..]));
        }
        Ok(Report {
            state,
            fence_window_ns,
            fence_commands,
            streams_terminated,
            fence_stores,
            fence_cpu_window_ns,
            live,
            live_truncated,
            lpi_tables,
            faults_total,
            faults_overflowed,
            fault_lines: &text[faults_start..faults_end],
            truncated,
        })
    }

    /// The StreamIDs of `live-streams:`, in the report's (ascending) order.
    pub fn live_streams(&self) -> impl Iterator<Item = u32> + 'a {
        self.live.split(' ').skip(1).filter_map(sid_token)
    }

    pub fn lists_live(&self, sid: u32) -> bool {
        self.live_streams().any(|s| s == sid)
    }

    /// The `fault:` lines.
    pub fn faults(&self) -> impl Iterator<Item = FaultLine<'a>> + 'a {
        self.fault_lines
            .lines()
            .filter_map(|l| FaultLine::parse(l).ok())
    }

    /// The `fault:` line of `sid`, if it has one.
    pub fn fault_for(&self, sid: u32) -> Option<FaultLine<'a>> {
        self.faults().find(|f| f.sid == sid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "PORTCULLIS FAULT REPORT v1\n\
        state: fenced\n\
        fence-window-ns: 123456\n\
        fence-commands: 4\n\
        streams-terminated: 65536\n\
        live-streams: 0x0008 0x0100\n\
        faults-total: 17\n\
        faults-overflowed: 0\n\
        fault: sid=0x0008 bdf=00:01.0 event=F_TRANSLATION addr=0x100001000 dir=write count=16 writes=16\n\
        fault: sid=0x0100 bdf=- event=0x3f addr=0x0 dir=- count=1 writes=0\n\
        end\n";

    #[test]
    fn parses_the_documented_format() {
        let r = Report::parse(SAMPLE).expect("sample parses");
        assert_eq!(r.state, "fenced");
        assert_eq!(r.fence_window_ns, 123_456);
        assert_eq!(r.fence_commands, 4);
        assert_eq!(r.streams_terminated, 65536);
        assert!(r.live_streams().eq([8, 0x100]));
        assert!(r.lists_live(0x100) && !r.lists_live(9));
        assert_eq!((r.faults_total, r.faults_overflowed), (17, 0));
        let f = r.fault_for(8).expect("sid 8 has a line");
        assert_eq!(
            f,
            FaultLine {
                sid: 8,
                bdf: Some("00:01.0"),
                event: "F_TRANSLATION",
                addr: 0x1_0000_1000,
                dir: "write",
                count: 16,
                writes: 16
            }
        );
        let g = r.fault_for(0x100).expect("sid 0x100 has a line");
        assert_eq!((g.bdf, g.event, g.dir), (None, "0x3f", "-"));
        assert_eq!(r.faults().count(), 2);
        assert_eq!((r.truncated, r.live_truncated), (None, None));
    }

    #[test]
    fn generations_must_agree() {
        let whole = SAMPLE
            .replace("v1\n", "v1\ngeneration: 5\n")
            .replace("\nend\n", "\ngeneration-end: 5\nend\n");
        assert!(Report::parse(&whole).is_ok());
        // Read while Portcullis rewrote it: the two numbers differ.
        let torn = whole.replace("generation-end: 5", "generation-end: 6");
        assert!(Report::parse(&torn).is_err());
        // One without the other is torn too.
        let half = SAMPLE.replace("\nend\n", "\ngeneration-end: 5\nend\n");
        assert!(Report::parse(&half).is_err());
    }

    #[test]
    fn lpi_tables_line_is_optional() {
        let text = "PORTCULLIS FAULT REPORT v1\nstate: fenced\nfence-window-ns: 1\n\
            fence-commands: 1\nstreams-terminated: 1\nlive-streams:\n\
            lpi-tables: 0x48000000-0x48010000\nfaults-total: 0\nfaults-overflowed: 0\nend\n";
        let r = Report::parse(text).expect("parses");
        assert_eq!(r.lpi_tables, " 0x48000000-0x48010000");
        assert_eq!(Report::parse(SAMPLE).expect("sample").lpi_tables, "");
    }

    #[test]
    fn armed_report_without_streams_or_faults() {
        let text = "PORTCULLIS FAULT REPORT v1\nstate: armed\nfence-window-ns: 0\n\
            fence-commands: 0\nstreams-terminated: 0\nlive-streams:\nfaults-total: 0\n\
            faults-overflowed: 0\nend\n";
        let r = Report::parse(text).expect("parses");
        assert_eq!(r.state, "armed");
        assert_eq!(r.live_streams().count(), 0);
        assert_eq!(r.faults().count(), 0);
    }

    #[test]
    fn truncation_markers() {
        let text = "PORTCULLIS FAULT REPORT v1\nstate: fenced\nfence-window-ns: 1\n\
            fence-commands: 2\nstreams-terminated: 3\nlive-streams: 0x0001 truncated=7\n\
            faults-total: 9\nfaults-overflowed: 1\n\
            fault: sid=0x0001 bdf=00:00.0 event=F_TRANSLATION addr=0x10 dir=read count=9 writes=0\n\
            truncated: 4 more\nend\n";
        let r = Report::parse(text).expect("parses");
        assert_eq!(r.live_truncated, Some(7));
        assert!(r.live_streams().eq([1]));
        assert_eq!(r.truncated, Some(4));
        assert_eq!(r.faults().count(), 1);
    }

    #[test]
    fn text_stops_at_nul() {
        let mut bytes = [0u8; 64];
        bytes[..3].copy_from_slice(b"abc");
        assert_eq!(text_of(&bytes), Ok("abc"));
        bytes[1] = 0xff;
        assert!(text_of(&bytes).is_err());
    }

    #[test]
    fn rejects_malformed_reports() {
        let bad = [
            SAMPLE.replace("v1", "v2"),
            SAMPLE.replace("fenced", "up"),
            SAMPLE.replace("123456", "12a"),
            SAMPLE.replace("0x0008 0x0100", "0x0100 0x0008"),
            SAMPLE.replace("0x0008 0x0100", "0x8"),
            SAMPLE.replace("dir=write", "dir=sideways"),
            SAMPLE.replace("writes=16", "writes=16 extra=1"),
            SAMPLE.replace("writes=16", "writes=17"),
            SAMPLE.replace(" writes=16", ""),
            SAMPLE.replace("end\n", "end\nmore\n"),
            SAMPLE.replace("end\n", "end"),
            SAMPLE.replace("faults-total: 17\n", ""),
        ];
        for text in &bad {
            assert!(Report::parse(text).is_err(), "accepted: {text}");
        }
        let e = Report::parse(&bad[0]).expect_err("bad header");
        assert_eq!(e.line, 1);
    }
}
