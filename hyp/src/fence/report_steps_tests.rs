//! The barriers of the report writer (`report_write_steps`): the first step ends right after
//! `generation:`, the last starts at `generation-end:`, whatever fits in the region.

use platform::devtree::Bdf;

use super::*;
use crate::smmu::event::EventId;
use crate::smmu::faults::FaultRecord;

fn report(generation: u64) -> String {
    let mut book = FaultBook::default();
    for sid in 0..40 {
        book.record(FaultRecord {
            sid,
            event: EventId::F_TRANSLATION,
            addr: 0x7e00_0000 + u64::from(sid) * 0x1000,
            write: true,
            stage2: true,
            raw: [0; 4],
        });
    }
    let bdf = |sid: StreamId| Some(alloc::format!("{}", Bdf::from_rid(sid as u16)));
    render_report(&ReportInput {
        generation,
        state: ReportState::Fenced,
        window_ns: 1,
        commands: 3,
        stores: 4,
        cpu_window_ns: 5,
        streams_terminated: 40,
        live_streams: &[1, 2],
        lpi_tables: &[],
        faults: &book,
        bdf: &bdf,
    })
}

#[test]
fn steps_split_at_the_two_generations() {
    let text = report(12);
    let [first, closing] = report_write_steps(&text, text.len());
    assert!(
        text[..first].ends_with("generation: 12\n"),
        "{:?}",
        &text[..first]
    );
    assert!(text[first..].starts_with("state: fenced\n"));
    assert!(text[closing..].starts_with("generation-end: 12\nend\n"));
    assert!(text[first..closing].contains("fault: sid=0x0027"));
}

#[test]
fn a_region_shorter_than_the_text_clamps_both() {
    let text = report(3);
    let [first, _] = report_write_steps(&text, text.len());
    // The region ends inside the body: the closing step is empty.
    let short = first + 40;
    assert_eq!(report_write_steps(&text, short), [first, short]);
    // The region ends inside the header: one step.
    assert_eq!(report_write_steps(&text, 10), [10, 10]);
    // Not a report at all: everything in the first step.
    assert_eq!(report_write_steps("garbage", 7), [7, 7]);
}
