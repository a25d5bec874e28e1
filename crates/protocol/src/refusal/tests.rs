//! Unit tests of `refusal`: the counting rule, on a clock the test moves.

use super::*;

fn at(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

#[test]
fn a_flood_is_one_line_then_one_summary_per_interval() {
    let log = RefusalLog::new("test refusals", Duration::from_secs(10));
    let t0 = Instant::now();
    assert_eq!(log.note("full", t0), Some(Line::First));
    // 100 000 refusals within the first interval: counted, not written.
    for i in 0..100_000u64 {
        assert_eq!(log.note("full", at(t0, 1 + i / 20)), None);
    }
    assert_eq!(log.note("unsigned", at(t0, 9_999)), None);
    // The first refusal after the interval writes the summary, itself included.
    assert_eq!(
        log.note("full", at(t0, 10_000)),
        Some(Line::Summary {
            counts: vec![("full", 100_001), ("unsigned", 1)],
            over: Duration::from_secs(10),
        })
    );
    assert_eq!(log.note("full", at(t0, 12_000)), None);
    assert_eq!(log.lines(), 2);
    assert_eq!(log.total(), 100_004);
    // Closing the door writes what is held, once.
    assert_eq!(
        log.flush_at(at(t0, 15_000)),
        Some(Line::Summary {
            counts: vec![("full", 1)],
            over: Duration::from_secs(5),
        })
    );
    assert_eq!(log.flush_at(at(t0, 15_001)), None);
    assert_eq!(log.lines(), 3);
}

#[test]
fn a_refusal_after_a_quiet_spell_is_said_in_full() {
    let log = RefusalLog::new("test refusals", Duration::from_secs(10));
    let t0 = Instant::now();
    assert_eq!(log.note("full", t0), Some(Line::First));
    assert_eq!(log.note("full", at(t0, 60_000)), Some(Line::First));
    assert_eq!(log.flush_at(at(t0, 60_001)), None, "nothing held");
    assert_eq!(log.lines(), 2);
}
