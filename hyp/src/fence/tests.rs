//! The fence policy, and the fence end to end against the SMMU model.

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use platform::devtree::Bdf;
use proptest::prelude::*;

use super::*;
use crate::smmu::driver::stage2_ste;
use crate::smmu::faults::FaultRecord;
use crate::smmu::model;
use crate::smmu::regs::SmmuFeatures;
use crate::smmu::ste::STE0;
use crate::stage2::Stage2Table;

const MIB: u64 = 1 << 20;

fn crash() -> PhysRange {
    PhysRange::new(0x7c00_0000, 64 * MIB).expect("range")
}

// --- The kexec trap and the mode. ---

#[test]
fn only_a_fetch_from_the_crash_region_in_normal_mode_is_the_kexec_event() {
    let c = Some(crash());
    let perm = FaultStatus::Permission { level: 3 };
    let classify =
        |ipa: u64, region, mode| classify_instruction_abort(Ipa(ipa), perm, region, mode);
    assert_eq!(classify(0x7c00_0000, c, Mode::Normal), KexecTrap::Fence);
    assert_eq!(classify(0x7c12_3456, c, Mode::Normal), KexecTrap::Fence);
    assert_eq!(classify(0x7fff_fffc, c, Mode::Normal), KexecTrap::Fence);
    // Just outside, either side.
    assert_eq!(classify(0x7bff_fffc, c, Mode::Normal), KexecTrap::NotOurs);
    assert_eq!(classify(0x8000_0000, c, Mode::Normal), KexecTrap::NotOurs);
    // Elsewhere: the host's own fault.
    assert_eq!(classify(0x4000_0000, c, Mode::Normal), KexecTrap::NotOurs);
    // No crash region, or already fenced.
    assert_eq!(
        classify(0x7c00_0000, None, Mode::Normal),
        KexecTrap::NotOurs
    );
    assert_eq!(classify(0x7c00_0000, c, Mode::Crash), KexecTrap::NotOurs);
    // Only a permission fault: a translation fault in the crash region is a broken stage 2.
    assert_eq!(
        classify_instruction_abort(
            Ipa(0x7c00_0000),
            FaultStatus::Translation { level: 3 },
            c,
            Mode::Normal
        ),
        KexecTrap::NotOurs
    );
}

#[test]
fn report_state_follows_the_mode() {
    assert_eq!(ReportState::from(Mode::Normal).to_string(), "armed");
    assert_eq!(ReportState::from(Mode::Crash), ReportState::Fenced);
    assert_eq!(ReportState::Fenced.as_str(), "fenced");
}

// --- Commands. ---

fn features(ats: bool) -> SmmuFeatures {
    let mut f = model::qemu_features();
    f.oas_bits = 48;
    f.ats = ats;
    f
}

// --- After the fence. ---

fn with_config(ste: &Ste, config: u64) -> Ste {
    let mut s = *ste;
    s.0[0] = (s.0[0] & !(STE0::CONFIG.mask << STE0::CONFIG.shift)) | config << STE0::CONFIG.shift;
    s
}

#[test]
fn bypass_never_lifts_the_fence_of_a_dead_kernels_stream() {
    let f = features(false);
    let table = Stage2Table::build(&[], 40, 3).expect("table");
    let s2 = stage2_ste(&table, &f).expect("ste");
    let nested = with_config(&s2, 0b111);
    assert_eq!(nested.config(), StreamConfig::Nested);
    let bypass = Ste::bypass(&crate::smmu::ste::AttrOverrides::incoming(&f));
    let stage1 = with_config(&s2, 0b101);
    assert_eq!(stage1.config(), StreamConfig::Stage1);
    for fenced in [true, false] {
        // The capture kernel's own stage 1, or no traffic at all: always.
        assert!(should_lift(8, &nested, fenced));
        // Nothing through: fine for a stream the dead kernel did not have; a fenced one keeps the
        // terminate STE, which refuses too and also records.
        assert_eq!(should_lift(8, &Ste::abort(), fenced), !fenced);
        assert_eq!(should_lift(8, &Ste::INVALID, fenced), !fenced);
        // Without Portcullis' stage 2: never.
        assert!(!should_lift(8, &bypass, fenced));
        assert!(!should_lift(8, &stage1, fenced));
    }
    // Stage 2 only (host bypass): only for a stream the dead kernel did not have.
    assert!(!should_lift(8, &s2, true));
    assert!(should_lift(8, &s2, false));
}

// --- The window. ---

#[test]
fn ticks_to_ns_does_not_overflow() {
    assert_eq!(ticks_to_ns(0, 62_500_000), 0);
    assert_eq!(ticks_to_ns(625, 62_500_000), 10_000);
    assert_eq!(ticks_to_ns(24, 24_000_000), 1_000);
    assert_eq!(ticks_to_ns(1, 24_000_000), 41);
    assert_eq!(ticks_to_ns(12_345, 1_000_000_000), 12_345);
    // Would overflow u64 if multiplied first.
    assert_eq!(ticks_to_ns(u64::MAX, 1_000_000_000), u64::MAX);
    assert_eq!(ticks_to_ns(u64::MAX / 4, 4_000_000_000), u64::MAX / 4 / 4);
    // Saturates, and an unknown frequency is not "no time".
    assert_eq!(ticks_to_ns(u64::MAX, 1), u64::MAX);
    assert_eq!(ticks_to_ns(5, 0), u64::MAX);
}

// --- The report. ---

fn record(sid: StreamId, event: EventId, addr: u64, write: bool) -> FaultRecord {
    FaultRecord {
        sid,
        event,
        addr,
        write,
        stage2: true,
        raw: [0; 4],
    }
}

fn no_bdf(_: StreamId) -> Option<String> {
    None
}

#[test]
fn report_format() {
    let mut book = FaultBook::default();
    book.record(record(8, EventId::F_TRANSLATION, 0x7e00_0000, true));
    book.record(record(0x10, EventId::C_BAD_STE, 0, false));
    book.record(record(8, EventId::F_TRANSLATION, 0x7e00_1000, true));
    book.record(record(0x11, EventId(0x77), 0, false));
    book.record(record(0x12, EventId::F_PERMISSION, 0x4000_2000, false));
    book.record(record(0x1_2345, EventId(0xe3), 0x10, true));
    let bdf = |sid: StreamId| (sid < 0x10).then(|| Bdf::from_rid(sid as u16).to_string());
    let input = ReportInput {
        generation: 7,
        state: ReportState::Fenced,
        window_ns: 1234,
        commands: 3,
        stores: 4,
        cpu_window_ns: 5,
        streams_terminated: 2,
        live_streams: &[0x10, 8, 8, 0x1_2345],
        lpi_tables: &[],
        faults: &book,
        bdf: &bdf,
    };
    assert_eq!(
        render_report(&input),
        "PORTCULLIS FAULT REPORT v1\n\
         generation: 7\n\
         state: fenced\n\
         fence-window-ns: 1234\n\
         fence-commands: 3\n\
         streams-terminated: 2\n\
         fence-stores: 4\n\
         fence-cpu-window-ns: 5\n\
         live-streams: 0x0008 0x0010 0x12345\n\
         faults-total: 6\n\
         faults-overflowed: 0\n\
         fault: sid=0x0008 bdf=00:01.0 event=F_TRANSLATION addr=0x7e001000 dir=write count=2 writes=2\n\
         fault: sid=0x0010 bdf=- event=C_BAD_STE addr=0x0 dir=- count=1 writes=0\n\
         fault: sid=0x0011 bdf=- event=0x77 addr=0x0 dir=- count=1 writes=0\n\
         fault: sid=0x0012 bdf=- event=F_PERMISSION addr=0x40002000 dir=read count=1 writes=0\n\
         fault: sid=0x12345 bdf=- event=IMPDEF_EVENT0xe3 addr=0x10 dir=- count=1 writes=1\n\
         generation-end: 7\n\
         end\n"
    );
    assert!(alloc::format!("{input:?}").starts_with("ReportInput { generation: 7, state: Fenced"));
}

#[test]
fn armed_report_has_no_fence_numbers() {
    let book = FaultBook::default();
    let input = ReportInput {
        generation: 7,
        state: ReportState::Armed,
        window_ns: 99,
        commands: 5,
        stores: 0,
        cpu_window_ns: 0,
        streams_terminated: 7,
        live_streams: &[],
        lpi_tables: &[],
        faults: &book,
        bdf: &no_bdf,
    };
    assert_eq!(
        render_report(&input),
        "PORTCULLIS FAULT REPORT v1\n\
         generation: 7\n\
         state: armed\n\
         fence-window-ns: 0\n\
         fence-commands: 0\n\
         streams-terminated: 0\n\
         fence-stores: 0\n\
         fence-cpu-window-ns: 0\n\
         live-streams:\n\
         faults-total: 0\n\
         faults-overflowed: 0\n\
         generation-end: 7\n\
         end\n"
    );
}

#[test]
fn report_counts_what_the_book_could_not_keep() {
    let mut book = FaultBook::default();
    for i in 0..300 {
        book.record(record(
            i % 3,
            EventId::F_TRANSLATION,
            u64::from(i) << 12,
            true,
        ));
    }
    book.ring.note_hardware_overflow();
    let input = ReportInput {
        generation: 7,
        state: ReportState::Fenced,
        window_ns: 1,
        commands: 3,
        stores: 0,
        cpu_window_ns: 0,
        streams_terminated: 3,
        live_streams: &[0, 1, 2],
        lpi_tables: &[],
        faults: &book,
        bdf: &no_bdf,
    };
    let report = render_report(&input);
    // 300 counted, 44 refused by the 256-entry ring, and one Event queue overflow.
    assert!(report.contains("\nfaults-total: 300\nfaults-overflowed: 45\n"));
    assert!(report.contains(
        "fault: sid=0x0002 bdf=- event=F_TRANSLATION addr=0x12b000 dir=write count=100 writes=100\n"
    ));
}

fn stats(count: u64, addr: u64) -> StreamFaultStats {
    StreamFaultStats {
        count,
        writes: count,
        last_addr: addr,
        last_event: EventId::F_TRANSLATION,
        last_write: true,
    }
}

fn lines(report: &str) -> Vec<&str> {
    report.lines().collect()
}

#[test]
fn fault_lines_are_truncated_to_64k() {
    let streams: Vec<(StreamId, StreamFaultStats)> = (0..3000)
        .map(|sid| (sid, stats(u64::MAX, u64::MAX)))
        .chain([(5000, stats(0, 0))])
        .collect();
    let input = ReportInput {
        generation: 7,
        state: ReportState::Fenced,
        window_ns: u64::MAX,
        commands: u64::MAX,
        stores: 0,
        cpu_window_ns: 0,
        streams_terminated: u64::MAX,
        live_streams: &[1, 2, 3],
        lpi_tables: &[],
        faults: &FaultTotals {
            total: u64::MAX,
            overflowed: 17,
            streams: &streams,
        },
        bdf: &|sid| Some(Bdf::from_rid(sid as u16).to_string()),
    };
    let report = render_report(&input);
    assert!(report.len() <= MAX_REPORT_BYTES);
    assert!(report.len() > MAX_REPORT_BYTES - 200, "{}", report.len());
    let l = lines(&report);
    let faults = l.iter().filter(|l| l.starts_with("fault: ")).count();
    assert_eq!(l[l.len() - 1], "end");
    assert_eq!(l[l.len() - 2], "generation-end: 7");
    assert_eq!(
        l[l.len() - 3],
        alloc::format!("truncated: {} more", 3000 - faults)
    );
    // The first streams are kept, in order; the stream without faults has no line.
    assert!(l[11].starts_with("fault: sid=0x0000 bdf=00:00.0 "));
    assert!(l[12].starts_with("fault: sid=0x0001 bdf=00:00.1 "));
    assert!(!report.contains("sid=0x1388"));
    assert!(report.contains("\nfaults-overflowed: 17\n"));

    // Exactly as many as fit without the truncation line: no truncation.
    let few = &streams[..faults];
    let report = render_report(&ReportInput {
        faults: &FaultTotals {
            total: 1,
            overflowed: 0,
            streams: few,
        },
        ..input
    });
    assert!(report.len() <= MAX_REPORT_BYTES);
    assert!(!report.contains("truncated"));
}

#[test]
fn a_huge_live_stream_list_is_truncated() {
    let live: Vec<StreamId> = (0..20_000).rev().collect();
    let book = FaultBook::default();
    let input = ReportInput {
        generation: 7,
        state: ReportState::Fenced,
        window_ns: 1,
        commands: 2,
        stores: 0,
        cpu_window_ns: 0,
        streams_terminated: 20_000,
        live_streams: &live,
        lpi_tables: &[],
        faults: &book,
        bdf: &no_bdf,
    };
    let report = render_report(&input);
    let line = lines(&report)[8];
    assert!(line.len() < MAX_LIVE_STREAMS_LINE);
    let tokens: Vec<&str> = line.split(' ').skip(1).collect();
    let (last, sids) = tokens.split_last().expect("tokens");
    let rest: usize = last
        .strip_prefix("truncated=")
        .and_then(|n| n.parse().ok())
        .expect("truncated=N");
    assert_eq!(sids.len() + rest, 20_000);
    assert_eq!(sids[0], "0x0000");
    assert_eq!(sids[1], "0x0001");
    assert!(report.ends_with("\nfaults-total: 0\nfaults-overflowed: 0\ngeneration-end: 7\nend\n"));
}

/// A loose parser of the format, as a consumer would write it.
fn parse_fault_line(line: &str) -> Option<()> {
    let rest = line.strip_prefix("fault: ")?;
    let keys = ["sid", "bdf", "event", "addr", "dir", "count", "writes"];
    let fields: Vec<&str> = rest.split(' ').collect();
    if fields.len() != keys.len() {
        return None;
    }
    for (field, key) in fields.iter().zip(keys) {
        let value = field.strip_prefix(key)?.strip_prefix('=')?;
        match key {
            "sid" | "addr" => {
                u64::from_str_radix(value.strip_prefix("0x")?, 16).ok()?;
            }
            "count" | "writes" => {
                value.parse::<u64>().ok()?;
            }
            "dir" => {
                ["read", "write", "-"].contains(&value).then_some(())?;
            }
            _ => (!value.is_empty()).then_some(())?,
        }
    }
    Some(())
}

proptest! {
    /// Whatever the input, the report fits in 64 KiB, starts with the header, ends with `end`,
    /// is ASCII, parses, and accounts for every stream with faults.
    #[test]
    fn report_is_bounded_and_well_formed(
        fenced in any::<bool>(),
        numbers in any::<[u64; 5]>(),
        live in prop::collection::vec(any::<u32>(), 0..6000),
        streams in prop::collection::vec(
            (any::<u32>(), any::<u64>(), any::<u64>(), any::<u8>(), any::<bool>()),
            0..1500,
        ),
        book_records in prop::collection::vec((0u32..100, any::<u8>(), any::<u64>()), 0..300),
        use_book in any::<bool>(),
        bdf_texts in prop::collection::vec(any::<String>(), 1..4),
    ) {
        let streams: Vec<(StreamId, StreamFaultStats)> = streams
            .into_iter()
            .map(|(sid, count, addr, event, write)| {
                (sid, StreamFaultStats {
                    count: count % 4,
                    writes: if write { count % 4 } else { 0 },
                    last_addr: addr,
                    last_event: EventId(event),
                    last_write: write,
                })
            })
            .collect();
        let mut book = FaultBook::default();
        for (sid, event, addr) in book_records {
            book.record(record(sid, EventId(event), addr, addr & 1 != 0));
        }
        let totals = FaultTotals { total: numbers[3], overflowed: numbers[4], streams: &streams };
        let faults: &dyn FaultSource = if use_book { &book } else { &totals };
        // Well-formed, unknown, and text that would break the format if copied as is.
        let bdf = |sid: StreamId| match sid % 4 {
            0 => None,
            1 => Some(Bdf::from_rid(sid as u16).to_string()),
            2 => Some(bdf_texts[sid as usize % bdf_texts.len()].clone()),
            _ => Some(String::new()),
        };
        let input = ReportInput {
            generation: 7,
            state: if fenced { ReportState::Fenced } else { ReportState::Armed },
            window_ns: numbers[0],
            commands: numbers[1],
            stores: numbers[3],
            cpu_window_ns: numbers[4],
            streams_terminated: numbers[2],
            live_streams: &live,
            lpi_tables: &[],
            faults,
            bdf: &bdf,
        };
        let report = render_report(&input);
        prop_assert!(report.len() <= MAX_REPORT_BYTES);
        prop_assert!(report.starts_with("PORTCULLIS FAULT REPORT v1\n"));
        prop_assert!(report.ends_with("\nend\n"));
        prop_assert!(report.is_ascii());
        let l = lines(&report);
        let state = if fenced { "state: fenced" } else { "state: armed" };
        prop_assert_eq!(l[1], "generation: 7");
        prop_assert_eq!(l[l.len() - 2], "generation-end: 7");
        let l = &l[1..l.len() - 1];
        prop_assert_eq!(l[1], state);
        for (i, key) in [
            "fence-window-ns: ", "fence-commands: ", "streams-terminated: ", "fence-stores: ",
            "fence-cpu-window-ns: ",
        ].iter().enumerate() {
            let value: u64 = l[2 + i].strip_prefix(key).and_then(|v| v.parse().ok())
                .ok_or_else(|| TestCaseError::fail(l[2 + i].to_string()))?;
            prop_assert_eq!(value, if fenced { numbers[i] } else { 0 });
        }
        prop_assert!(l[7].starts_with("live-streams:"));
        prop_assert!(l[7].len() < MAX_LIVE_STREAMS_LINE);
        prop_assert!(l[8].starts_with("faults-total: "));
        prop_assert!(l[9].starts_with("faults-overflowed: "));
        let mut fault_lines = 0;
        let mut truncated = 0;
        for line in &l[10..l.len() - 1] {
            if let Some(n) = line.strip_prefix("truncated: ") {
                truncated = n.strip_suffix(" more").and_then(|n| n.parse().ok())
                    .ok_or_else(|| TestCaseError::fail(line.to_string()))?;
            } else {
                prop_assert!(parse_fault_line(line).is_some(), "bad line {}", line);
                prop_assert_eq!(truncated, 0, "fault line after truncation");
                fault_lines += 1;
            }
        }
        let with_faults = if use_book {
            book.streams.iter().filter(|(_, s)| s.count > 0).count()
        } else {
            streams.iter().filter(|(_, s)| s.count > 0).count()
        };
        prop_assert_eq!(fault_lines + truncated, with_faults);
    }
}

#[test]
fn ste_config_helper() {
    // `with_config` only touches Config.
    let s = with_config(&Ste::abort(), 0b110);
    assert_eq!(s.config(), StreamConfig::Stage2);
    assert_eq!(vec![s.0[1], s.0[2]], [0, 0]);
}

#[test]
fn bdf_text_cannot_break_the_format() {
    let streams = [
        (1, stats(1, 0x1000)),
        (2, stats(1, 0x2000)),
        (3, stats(1, 0x3000)),
    ];
    let bdf = |sid: StreamId| match sid {
        1 => Some("0000:00:01.0 x=y\nend".to_string()),
        2 => Some("é".repeat(40)),
        _ => Some(String::new()),
    };
    let report = render_report(&ReportInput {
        generation: 7,
        state: ReportState::Fenced,
        window_ns: 0,
        commands: 0,
        stores: 0,
        cpu_window_ns: 0,
        streams_terminated: 0,
        live_streams: &[],
        lpi_tables: &[],
        faults: &FaultTotals {
            total: 3,
            overflowed: 0,
            streams: &streams,
        },
        bdf: &bdf,
    });
    let l = lines(&report);
    assert_eq!(
        l[11],
        "fault: sid=0x0001 bdf=0000:00:01.0_x_y_end event=F_TRANSLATION addr=0x1000 dir=write \
         count=1 writes=1"
    );
    assert_eq!(
        l[12],
        alloc::format!(
            "fault: sid=0x0002 bdf={} event=F_TRANSLATION addr=0x2000 dir=write count=1 writes=1",
            "_".repeat(MAX_BDF_TEXT)
        )
    );
    assert!(l[13].starts_with("fault: sid=0x0003 bdf=- "));
    assert_eq!(l[14], "generation-end: 7");
    assert_eq!(l[15], "end");
}

#[test]
fn lpi_tables_line() {
    let book = FaultBook::default();
    let tables = [
        PhysRange::from_bounds(0x4801_0000, 0x4802_0000),
        PhysRange::from_bounds(0x4800_0000, 0x4801_0000),
    ];
    let report = render_report(&ReportInput {
        generation: 7,
        state: ReportState::Fenced,
        window_ns: 1,
        commands: 1,
        stores: 1,
        cpu_window_ns: 1,
        streams_terminated: 1,
        live_streams: &[8],
        lpi_tables: &tables,
        faults: &book,
        bdf: &no_bdf,
    });
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines[8], "live-streams: 0x0008");
    assert_eq!(
        lines[9],
        "lpi-tables: 0x48000000-0x48010000 0x48010000-0x48020000"
    );
    assert_eq!(lines[10], "faults-total: 0");
    // Many redistributors: the line is bounded and says how many it left out.
    let many: Vec<PhysRange> = (0..5000u64)
        .map(|i| PhysRange::from_bounds(0x4000_0000 + i * 0x1_0000, 0x4001_0000 + i * 0x1_0000))
        .collect();
    let report = render_report(&ReportInput {
        generation: 7,
        state: ReportState::Fenced,
        window_ns: 1,
        commands: 1,
        stores: 1,
        cpu_window_ns: 1,
        streams_terminated: 1,
        live_streams: &[],
        lpi_tables: &many,
        faults: &book,
        bdf: &no_bdf,
    });
    let line = report.lines().nth(9).expect("lpi-tables line");
    assert!(line.len() <= MAX_LPI_TABLES_LINE, "{}", line.len());
    assert!(line.ends_with(&alloc::format!(" truncated={}", 5000 - MAX_LPI_TABLES)));
}

mod lifting {
    use super::super::{HostSteLocation, from_capture_table, host_ste_location};
    use crate::smmu::Ipa;
    use crate::smmu::ste::{L1Std, StreamTableFormat, StreamTableLayout};
    use platform::addr::PhysRange;

    const CRASH: u64 = 0x7c00_0000;

    fn crash() -> [PhysRange; 1] {
        [PhysRange::new(CRASH, 64 << 20).expect("range")]
    }

    fn linear() -> StreamTableLayout {
        StreamTableLayout {
            log2_size: 8,
            format: StreamTableFormat::Linear,
        }
    }

    fn two_level() -> StreamTableLayout {
        StreamTableLayout {
            log2_size: 16,
            format: StreamTableFormat::TwoLevel { split: 8 },
        }
    }

    fn l1(l2: u64) -> u64 {
        L1Std::<Ipa> {
            span: 9,
            l2_table: Ipa(l2),
        }
        .encode()
    }

    #[test]
    fn a_table_in_the_crash_region_set_up_after_the_fence_lifts_whatever_its_base() {
        for base in [CRASH, CRASH + 0x10_0000, CRASH + 0x3f0_0000] {
            let at = host_ste_location(Ipa(base), &linear(), 8, |_| None);
            assert_eq!(
                at,
                Some(HostSteLocation {
                    l1: None,
                    ste: Ipa(base + 8 * 64)
                })
            );
            assert!(from_capture_table(true, at, &crash()), "{base:#x}");
        }
        let at = host_ste_location(Ipa(CRASH), &two_level(), 0x108, |a| {
            assert_eq!(a, Ipa(CRASH + 8));
            Some(l1(CRASH + 0x2_0000))
        });
        assert_eq!(
            at,
            Some(HostSteLocation {
                l1: Some(Ipa(CRASH + 8)),
                ste: Ipa(CRASH + 0x2_0000 + 8 * 64)
            })
        );
        assert!(from_capture_table(true, at, &crash()));
    }

    #[test]
    fn the_dead_kernels_table_never_lifts() {
        // The dead kernel's table (in the dump), kept as it is or written again after the fence.
        let dead = host_ste_location(Ipa(0x4100_0000), &linear(), 8, |_| None);
        assert!(!from_capture_table(false, dead, &crash()));
        assert!(!from_capture_table(true, dead, &crash()));
        // A table in the crash region not (re)based after the fence: the dead kernel may have
        // put one there before it crashed.
        let early = host_ste_location(Ipa(CRASH), &linear(), 8, |_| None);
        assert!(!from_capture_table(false, early, &crash()));
        // A new L1 table in the crash region whose descriptor points at the dead kernel's level
        // 2 table.
        let mixed = host_ste_location(Ipa(CRASH), &two_level(), 0x108, |_| Some(l1(0x4100_0000)));
        assert!(!from_capture_table(true, mixed, &crash()));
        // An STE straddling the end of the crash region.
        let edge = Some(HostSteLocation {
            l1: None,
            ste: Ipa(CRASH + (64 << 20) - 32),
        });
        assert!(!from_capture_table(true, edge, &crash()));
        // No STE at all (no level 2 table, unreadable L1).
        let none = host_ste_location(Ipa(CRASH), &two_level(), 0x108, |_| None);
        assert_eq!(none, None);
        assert!(!from_capture_table(true, none, &crash()));
        let invalid = host_ste_location(Ipa(CRASH), &two_level(), 0x108, |_| Some(0));
        assert!(!from_capture_table(true, invalid, &crash()));
    }
}

fn range(start: u64, size: u64) -> PhysRange {
    PhysRange::new(start, size).expect("a range that does not wrap")
}

/// QEMU virt with 1 GiB: the GICv3 ITS doorbell page in the first GiB, host RAM in the second.
fn virt_1g_dma_ranges() -> [PhysRange; 2] {
    [range(0x0809_0000, 0x1000), range(0x4000_0000, 0x3c00_0000)]
}

#[test]
fn the_dma_stage2_starts_at_level_1_when_few_gib_hold_dma_memory() {
    use super::dma_ipa_bits;
    // QEMU's SMMU (44-bit IAS), a 40-bit host IPA space, RAM and the doorbell in 2 GiB: level 1
    // (40 bits, two concatenated root tables), one stage-2 level fewer on every walk.
    assert_eq!(dma_ipa_bits(40, 44, &virt_1g_dma_ranges()), 40);
    assert_eq!(dma_ipa_bits(42, 52, &virt_1g_dma_ranges()), 42);
    // A 36-bit host.
    assert_eq!(dma_ipa_bits(36, 44, &virt_1g_dma_ranges()), 36);
    // Nothing mapped at all.
    assert_eq!(dma_ipa_bits(40, 44, &[]), 40);
}

#[test]
fn the_dma_stage2_starts_at_level_0_where_level_1_needs_many_fence_stores() {
    use super::{DMA_FENCE_MAX_LEVEL1_STORES, dma_ipa_bits};
    let gib = 1u64 << 30;
    let at_limit = [range(gib, DMA_FENCE_MAX_LEVEL1_STORES as u64 * gib)];
    assert_eq!(dma_ipa_bits(40, 44, &at_limit), 40);
    // One more GiB of RAM: 44 bits, level 0, one store for it all.
    let big = [range(gib, (DMA_FENCE_MAX_LEVEL1_STORES as u64 + 1) * gib)];
    assert_eq!(dma_ipa_bits(40, 44, &big), 44);
    assert_eq!(dma_ipa_bits(40, 52, &big), 44);
    // The host's own space already needs level 0.
    assert_eq!(dma_ipa_bits(44, 44, &virt_1g_dma_ranges()), 44);
    assert_eq!(dma_ipa_bits(48, 48, &virt_1g_dma_ranges()), 48);
    // A 40- or 42-bit SMMU: the largest it takes, whatever the stores.
    assert_eq!(dma_ipa_bits(40, 40, &big), 40);
    assert_eq!(dma_ipa_bits(44, 42, &big), 42);
}

#[test]
fn gib_slots_counts_each_touched_gib_once() {
    use super::gib_slots;
    let gib = 1u64 << 30;
    assert_eq!(gib_slots(&[]), 0);
    assert_eq!(gib_slots(&virt_1g_dma_ranges()), 2);
    // Straddling a GiB boundary, overlapping and unsorted ranges, an empty one.
    let r = range;
    assert_eq!(gib_slots(&[r(gib - 0x1000, 0x2000)]), 2);
    assert_eq!(
        gib_slots(&[
            r(5 * gib, gib),
            r(gib, 0x1000),
            r(gib + 0x2000, 0x1000),
            r(3 * gib, 0)
        ]),
        2
    );
    assert_eq!(
        gib_slots(&[r(0, 4 * gib), r(gib, gib), r(3 * gib, 2 * gib)]),
        5
    );
    // The top of the address space.
    assert_eq!(gib_slots(&[r(u64::MAX - gib, gib)]), 2);
}

#[test]
fn a_level_1_dma_stage2_for_qemu_virt_has_two_valid_top_entries() {
    // What the fence then stores: one per valid top-level entry.
    use crate::stage2::{Access, Region, Stage2Table};
    let ranges = virt_1g_dma_ranges();
    let regions = [
        Region {
            range: ranges[0],
            access: Access::Device,
        },
        Region {
            range: ranges[1],
            access: Access::RW,
        },
    ];
    let bits = super::dma_ipa_bits(40, 44, &ranges);
    let table = Stage2Table::build(&regions, bits, 2).expect("the virt DMA policy builds");
    assert_eq!((table.start_level(), table.root_tables()), (1, 2));
    assert_eq!(table.valid_top_entries(), [0, 1]);
    assert_eq!(table.valid_top_entries().len(), super::gib_slots(&ranges));
}
