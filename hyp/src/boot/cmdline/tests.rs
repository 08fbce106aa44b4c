use alloc::string::ToString;
use alloc::vec;

use proptest::prelude::*;

use super::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn req(size: u64, base: Option<u64>) -> Option<CrashRequest> {
    Some(CrashRequest {
        size,
        base: base.map(Pa),
    })
}

fn r(start: u64, size: u64) -> PhysRange {
    PhysRange::new(start, size).unwrap()
}

#[test]
fn memparse_bases_and_suffixes() {
    assert_eq!(memparse("0"), Ok((0, 1)));
    assert_eq!(memparse("123"), Ok((123, 3)));
    assert_eq!(memparse("64M"), Ok((64 * MIB, 3)));
    assert_eq!(memparse("64m"), Ok((64 * MIB, 3)));
    assert_eq!(memparse("1k"), Ok((1024, 2)));
    assert_eq!(memparse("2G@"), Ok((2 * GIB, 2)));
    assert_eq!(memparse("1T"), Ok((1 << 40, 2)));
    assert_eq!(memparse("1p"), Ok((1 << 50, 2)));
    assert_eq!(memparse("3E"), Ok((3 << 60, 2)));
    assert_eq!(memparse("0x7c000000"), Ok((0x7c00_0000, 10)));
    assert_eq!(memparse("0X1fM"), Ok((0x1f * MIB, 5)));
    assert_eq!(memparse("0xABCdef"), Ok((0xabc_def, 8)));
    // A leading zero means octal, as with Linux's simple_strtoull(.., 0).
    assert_eq!(memparse("0100M"), Ok((64 * MIB, 5)));
    assert_eq!(memparse("08"), Ok((0, 1)));
    // "0x" without a hex digit is the octal 0 followed by 'x'.
    assert_eq!(memparse("0xg"), Ok((0, 1)));
    assert_eq!(memparse("0x"), Ok((0, 1)));
    // Unknown suffixes are not consumed.
    assert_eq!(memparse("5B"), Ok((5, 1)));
    assert_eq!(memparse("5MB"), Ok((5 * MIB, 2)));
}

#[test]
fn memparse_errors() {
    assert_eq!(memparse(""), Err(MemparseError::NoDigits));
    assert_eq!(memparse("M"), Err(MemparseError::NoDigits));
    assert_eq!(memparse("-1"), Err(MemparseError::NoDigits));
    assert_eq!(memparse(" 1"), Err(MemparseError::NoDigits));
    assert_eq!(memparse("18446744073709551615"), Ok((u64::MAX, 20)));
    assert_eq!(
        memparse("18446744073709551616"),
        Err(MemparseError::Overflow)
    );
    assert_eq!(memparse("0xffffffffffffffff"), Ok((u64::MAX, 18)));
    assert_eq!(
        memparse("0x10000000000000000"),
        Err(MemparseError::Overflow)
    );
    assert_eq!(memparse("16E"), Err(MemparseError::Overflow));
    assert_eq!(memparse("15E"), Ok((15 << 60, 3)));
    assert_eq!(memparse("0x40000000000000G"), Err(MemparseError::Overflow));
}

#[test]
fn format_size_reads_back() {
    assert_eq!(format_size(0), "0");
    assert_eq!(format_size(64 * MIB), "64M");
    assert_eq!(format_size(2 * GIB), "2G");
    assert_eq!(format_size(1536 * MIB), "1536M");
    assert_eq!(format_size(4096), "4K");
    assert_eq!(format_size(4097), "4097");
    assert_eq!(format_size(1 << 63), "8E");
    for v in [0, 1, 1023, 1024, 3 * MIB + 4096, u64::MAX, u64::MAX - 1023] {
        assert_eq!(memparse(&format_size(v)).map(|(v, _)| v), Ok(v));
    }
}

#[test]
fn crashkernel_simple_forms() {
    assert_eq!(parse_crashkernel("", GIB), Ok(None));
    assert_eq!(
        parse_crashkernel("console=ttyAMA0 root=/dev/vda", GIB),
        Ok(None)
    );
    assert_eq!(
        parse_crashkernel("crashkernel=64M", GIB),
        Ok(req(64 * MIB, None))
    );
    assert_eq!(
        parse_crashkernel("a crashkernel=256M b", GIB),
        Ok(req(256 * MIB, None))
    );
    assert_eq!(
        parse_crashkernel("crashkernel=64M@0x7c000000", GIB),
        Ok(req(64 * MIB, Some(0x7c00_0000)))
    );
    assert_eq!(
        parse_crashkernel("crashkernel=0x4000000@2G", GIB),
        Ok(req(64 * MIB, Some(2 * GIB)))
    );
    // @0 means "anywhere" to Linux.
    assert_eq!(
        parse_crashkernel("crashkernel=64M@0", GIB),
        Ok(req(64 * MIB, None))
    );
    // Size zero is reported to the placement, which refuses it.
    assert_eq!(parse_crashkernel("crashkernel=0", GIB), Ok(req(0, None)));
    // The last one wins.
    assert_eq!(
        parse_crashkernel("crashkernel=64M crashkernel=128M@0x60000000", GIB),
        Ok(req(128 * MIB, Some(0x6000_0000)))
    );
    // Only whole parameters count.
    assert_eq!(
        parse_crashkernel("xcrashkernel=64M foo.crashkernel=1G", GIB),
        Ok(None)
    );
    assert_eq!(parse_crashkernel("crashkernel", GIB), Ok(None));
}

#[test]
fn crashkernel_high_low() {
    assert_eq!(
        parse_crashkernel("crashkernel=512M,high", 8 * GIB),
        Ok(req(512 * MIB, None))
    );
    assert_eq!(
        parse_crashkernel("crashkernel=128M,low", 8 * GIB),
        Ok(req(128 * MIB, None))
    );
    // A plain one takes precedence over any suffixed one, wherever it is.
    assert_eq!(
        parse_crashkernel(
            "crashkernel=256M crashkernel=512M,high crashkernel=64M,low",
            8 * GIB
        ),
        Ok(req(256 * MIB, None))
    );
    // ,high over ,low.
    assert_eq!(
        parse_crashkernel("crashkernel=512M,high crashkernel=64M,low", 8 * GIB),
        Ok(req(512 * MIB, None))
    );
    // ,cma is not a placement request.
    assert_eq!(parse_crashkernel("crashkernel=64M,cma", 8 * GIB), Ok(None));
    // No base with a suffix.
    assert!(matches!(
        parse_crashkernel("crashkernel=512M@1G,high", 8 * GIB),
        Err(CmdlineError::Unexpected { at: 4, .. })
    ));
}

#[test]
fn crashkernel_range_form() {
    let line = "crashkernel=512M-2G:64M,2G-:128M";
    assert_eq!(
        parse_crashkernel(line, 256 * MIB),
        Ok(None),
        "below every range"
    );
    assert_eq!(parse_crashkernel(line, GIB), Ok(req(64 * MIB, None)));
    assert_eq!(
        parse_crashkernel(line, 2 * GIB),
        Ok(req(128 * MIB, None)),
        "end is exclusive"
    );
    assert_eq!(
        parse_crashkernel(line, 64 * GIB),
        Ok(req(128 * MIB, None)),
        "open end"
    );
    // RAM is rounded up to 128 MiB first: 1.9 GiB of visible RAM counts as 2 GiB.
    assert_eq!(
        parse_crashkernel(line, 2 * GIB - 100 * MIB),
        Ok(req(128 * MIB, None))
    );
    assert_eq!(
        parse_crashkernel("crashkernel=1G-4G:192M,4G-64G:256M@0x80000000", 8 * GIB),
        Ok(req(256 * MIB, Some(0x8000_0000)))
    );
    // The base applies to whichever range matched.
    assert_eq!(
        parse_crashkernel("crashkernel=1G-4G:192M,4G-64G:256M@0x80000000", 2 * GIB),
        Ok(req(192 * MIB, Some(0x8000_0000)))
    );
    // Linux stops reading at the first match, so junk later is not seen.
    assert_eq!(
        parse_crashkernel("crashkernel=0-:64M,junk", GIB),
        Ok(req(64 * MIB, None))
    );
}

#[test]
fn crashkernel_range_errors() {
    let e = |line| parse_crashkernel(line, GIB).unwrap_err();
    assert_eq!(
        e("crashkernel=2G-1G:64M"),
        CmdlineError::EmptyRange {
            value: "2G-1G:64M".into(),
            start: 2 * GIB,
            end: GIB
        }
    );
    assert!(matches!(
        e("crashkernel=1G:64M"),
        CmdlineError::Unexpected {
            expected: "'-'",
            ..
        }
    ));
    assert!(matches!(
        e("crashkernel=0-1G;64M:x"),
        CmdlineError::Unexpected {
            expected: "':'",
            ..
        }
    ));
    assert!(matches!(
        e("crashkernel=-1G:64M"),
        CmdlineError::NumberExpected { at: 0, .. }
    ));
    assert!(matches!(
        e("crashkernel=0-1G:"),
        CmdlineError::NumberExpected { .. }
    ));
    assert_eq!(
        e("crashkernel=0-:2G"),
        CmdlineError::SizeNotBelowRam {
            value: "0-:2G".into(),
            size: 2 * GIB,
            ram: GIB
        }
    );
    // A size check hits entries before the match too, as in Linux.
    assert!(matches!(
        e("crashkernel=2G-4G:4G,0-:64M"),
        CmdlineError::SizeNotBelowRam { .. }
    ));
    assert!(matches!(
        e("crashkernel=0-:64M@"),
        CmdlineError::NumberExpected { .. }
    ));
    assert!(matches!(
        e("crashkernel=0-:64M@1Gx"),
        CmdlineError::Unexpected { .. }
    ));
}

#[test]
fn crashkernel_simple_errors() {
    let e = |line| parse_crashkernel(line, GIB).unwrap_err();
    assert_eq!(
        e("crashkernel="),
        CmdlineError::NumberExpected {
            value: "".into(),
            at: 0
        }
    );
    assert_eq!(
        e("crashkernel=auto"),
        CmdlineError::NumberExpected {
            value: "auto".into(),
            at: 0
        }
    );
    assert!(matches!(
        e("crashkernel=64Q"),
        CmdlineError::Unexpected { at: 2, .. }
    ));
    assert!(matches!(
        e("crashkernel=64M@"),
        CmdlineError::NumberExpected { at: 4, .. }
    ));
    assert!(matches!(
        e("crashkernel=64M@1G,"),
        CmdlineError::Unexpected { at: 6, .. }
    ));
    assert!(matches!(
        e("crashkernel=99999999999999999999"),
        CmdlineError::NumberOverflow { .. }
    ));
    for err in [
        e("crashkernel="),
        e("crashkernel=64Q"),
        e("crashkernel=2G-1G:64M"),
        e("crashkernel=99999999999999999999"),
        e("crashkernel=0-:2G"),
    ] {
        let msg = err.to_string();
        assert!(msg.starts_with("crashkernel="), "{msg}");
    }
}

#[test]
fn crashkernel_quoting() {
    // A quoted parameter is one parameter, quotes stripped as Linux's next_arg does.
    assert_eq!(
        parse_crashkernel("\"crashkernel=64M\"", GIB),
        Ok(req(64 * MIB, None))
    );
    assert_eq!(
        parse_crashkernel("crashkernel=\"64M@0x40000000\"", GIB),
        Ok(req(64 * MIB, Some(GIB)))
    );
    // Inside another parameter's quoted value it is not a parameter.
    assert_eq!(
        parse_crashkernel("dyndbg=\"file a.c crashkernel=64M\" ro", GIB),
        Ok(None)
    );
}

#[test]
fn rewrite_replaces_and_removes() {
    let region = Some(r(0x7c00_0000, 64 * MIB));
    assert_eq!(
        rewrite_crashkernel("console=ttyAMA0 crashkernel=64M root=/dev/vda", region),
        "console=ttyAMA0 crashkernel=64M@0x7c000000 root=/dev/vda"
    );
    assert_eq!(
        rewrite_crashkernel("console=ttyAMA0 crashkernel=64M root=/dev/vda", None),
        "console=ttyAMA0 root=/dev/vda"
    );
    // Every crashkernel= goes; exactly one comes back, where the first was.
    assert_eq!(
        rewrite_crashkernel(
            "crashkernel=1G-:64M a crashkernel=512M,high b crashkernel=64M,low",
            region
        ),
        "crashkernel=64M@0x7c000000 a b"
    );
    assert_eq!(rewrite_crashkernel("crashkernel=64M", None), "");
    assert_eq!(rewrite_crashkernel("crashkernel=64M   ro", None), "ro");
    assert_eq!(rewrite_crashkernel("ro\tcrashkernel=64M", None), "ro");
    // Whitespace between kept parameters is kept as it was, leading and trailing too.
    assert_eq!(
        rewrite_crashkernel("  a\t\tcrashkernel=1M  b   ", Some(r(0x4000_0000, 2 * MIB))),
        "  a\t\tcrashkernel=2M@0x40000000  b   "
    );
    assert_eq!(
        rewrite_crashkernel("  a\t\tcrashkernel=1M  b   ", None),
        "  a  b   "
    );
    // Sizes are written with the largest exact suffix.
    assert_eq!(
        rewrite_crashkernel("crashkernel=1", Some(r(0x20_0000, 0x20_1000))),
        "crashkernel=2052K@0x200000"
    );
}

#[test]
fn rewrite_adds_when_missing() {
    let region = Some(r(0x7c00_0000, 64 * MIB));
    assert_eq!(
        rewrite_crashkernel("", region),
        "crashkernel=64M@0x7c000000"
    );
    assert_eq!(
        rewrite_crashkernel("ro  ", region),
        "ro crashkernel=64M@0x7c000000"
    );
    assert_eq!(
        rewrite_crashkernel("ro -- init-arg", region),
        "ro crashkernel=64M@0x7c000000 -- init-arg"
    );
    assert_eq!(rewrite_crashkernel("ro", None), "ro");
}

#[test]
fn rewrite_respects_quotes() {
    let region = Some(r(0x7c00_0000, 64 * MIB));
    let line = "dyndbg=\"file a.c +p; crashkernel=1G\" crashkernel=64M \"quoted param\" x";
    assert_eq!(
        rewrite_crashkernel(line, region),
        "dyndbg=\"file a.c +p; crashkernel=1G\" crashkernel=64M@0x7c000000 \"quoted param\" x"
    );
    assert_eq!(
        rewrite_crashkernel(line, None),
        "dyndbg=\"file a.c +p; crashkernel=1G\" \"quoted param\" x"
    );
    // An unterminated quote runs to the end, as in Linux.
    assert_eq!(
        rewrite_crashkernel("crashkernel=64M a=\"b c", None),
        "a=\"b c"
    );
}

#[test]
fn rewrite_reads_back() {
    for (start, size) in [
        (0x7c00_0000, 64 * MIB),
        (0x8_0000_0000, 3 * GIB),
        (0x20_0000, 0x20_1000),
    ] {
        let region = r(start, size);
        let line = rewrite_crashkernel("ro crashkernel=1-2:3,4-:5", Some(region));
        assert_eq!(
            parse_crashkernel(&line, 64 * GIB),
            Ok(req(size, Some(start)))
        );
    }
}

#[test]
fn hyp_options() {
    let (o, w) = parse_hyp_options("log=debug");
    assert_eq!(o.log_level, Some(LevelFilter::Debug));
    assert!(w.is_empty());
    let (o, w) = parse_hyp_options("  log=TRACE  ");
    assert_eq!(o.log_level, Some(LevelFilter::Trace));
    assert!(w.is_empty());
    let (o, w) = parse_hyp_options("log=loud colour=blue log verbose log=warn");
    assert_eq!(o.log_level, Some(LevelFilter::Warn));
    assert_eq!(
        w,
        vec![
            OptionWarning::BadValue {
                key: "log".into(),
                value: "loud".into(),
                expected: "off, error, warn, info, debug or trace"
            },
            OptionWarning::UnknownKey {
                key: "colour".into()
            },
            OptionWarning::MissingValue { key: "log".into() },
            OptionWarning::UnknownKey {
                key: "verbose".into()
            },
        ]
    );
    for warning in &w {
        assert!(warning.to_string().starts_with("portcullis,bootargs: "));
    }
    assert_eq!(parse_hyp_options(""), (HypOptions::default(), vec![]));
}

#[test]
fn counters_at_cpu_off_is_opt_in() {
    assert_eq!(parse_hyp_options("").0.counters_at_cpu_off, None);
    let (o, w) = parse_hyp_options("log=info counters=cpu-off");
    assert_eq!((o.counters_at_cpu_off, w), (Some(true), vec![]));
    let (o, w) = parse_hyp_options("counters=cpu-off counters=exit");
    assert_eq!((o.counters_at_cpu_off, w), (Some(false), vec![]));
    let (o, w) = parse_hyp_options("counters=always counters");
    assert_eq!(o.counters_at_cpu_off, None);
    assert_eq!(
        w,
        vec![
            OptionWarning::BadValue {
                key: "counters".into(),
                value: "always".into(),
                expected: "cpu-off or exit"
            },
            OptionWarning::MissingValue {
                key: "counters".into()
            },
        ]
    );
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_.]{1,8}(=[a-zA-Z0-9,.:@/-]{0,10})?",
        "\"[a-z =]{0,10}\"",
        "[a-z]{1,5}=\"[a-z ]{0,8}\"",
        Just("--".to_string()),
    ]
}

fn crash_word() -> impl Strategy<Value = String> {
    prop_oneof![
        "crashkernel=[0-9]{1,4}[KMG]?",
        "crashkernel=[0-9]{1,3}[MG]@0x[0-9a-f]{1,9}",
        "crashkernel=[0-9]{1,2}G-([0-9]{1,2}G)?:[0-9]{1,3}M(,[0-9]{1,2}G-:[0-9]{1,3}M)?",
        "crashkernel=[0-9]{1,3}M,(high|low|cma)",
        "crashkernel=[^ \t\"]{0,12}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn parsers_never_panic(line in "\\PC{0,64}", ram in any::<u64>()) {
        let _ = parse_crashkernel(&line, ram);
        let _ = parse_hyp_options(&line);
        let _ = memparse(&line);
        let _ = rewrite_crashkernel(&line, None);
        let _ = rewrite_crashkernel(&line, Some(r(0x4000_0000, 2 * MIB)));
    }

    #[test]
    fn crashkernel_values_never_panic(value in "[0-9a-zA-Z@:,x\"-]{0,24}", ram in any::<u64>()) {
        let _ = parse_crashkernel(&format!("crashkernel={value}"), ram);
    }

    /// Rewriting keeps every other parameter, in order, and leaves exactly the placed region.
    #[test]
    fn rewrite_keeps_other_tokens(
        words in proptest::collection::vec(prop_oneof![3 => word(), 1 => crash_word()], 0..10),
        seps in proptest::collection::vec("[ \t]{1,3}", 10),
        start in 1u64..0x1000_0000,
        size in 1u64..0x1000,
        place in any::<bool>(),
    ) {
        let mut line = String::new();
        for (i, w) in words.iter().enumerate() {
            if i > 0 {
                line.push_str(&seps[i]);
            }
            line.push_str(w);
        }
        let region = place.then(|| r(start << 21, size << 21));
        let out = rewrite_crashkernel(&line, region);

        let params = |s: &str| -> Vec<String> {
            tokens(s).iter().map(|&(a, b)| s[a..b].to_string()).collect()
        };
        let others = |v: Vec<String>| -> Vec<String> {
            v.into_iter().filter(|t| split_param(t).0 != "crashkernel").collect()
        };
        prop_assert_eq!(others(params(&out)), others(params(&line)));
        let crash: Vec<String> =
            params(&out).into_iter().filter(|t| split_param(t).0 == "crashkernel").collect();
        match region {
            Some(region) => {
                prop_assert_eq!(crash, vec![crashkernel_param(region)]);
                prop_assert_eq!(
                    parse_crashkernel(&out, 1 << 40),
                    Ok(Some(CrashRequest { size: region.size(), base: Some(region.start) }))
                );
            }
            None => {
                prop_assert!(crash.is_empty());
                prop_assert_eq!(parse_crashkernel(&out, 1 << 40), Ok(None));
            }
        }
    }
}
