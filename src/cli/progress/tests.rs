use super::*;

fn sample(tuples_in: u64, tuples_out: u64, elapsed_ms: u64) -> Sample {
    Sample {
        tuples_in,
        tuples_out,
        elapsed_ms,
        source: Some((1000, 421)),
        restarts: 0,
    }
}

fn rates(i: f64, o: f64) -> Rates {
    Rates {
        tuples_in: Some(i),
        tuples_out: Some(o),
    }
}

#[test]
fn the_line_says_share_counts_rates_and_time() {
    let s = sample(12_345, 12_000, 65_000);
    assert_eq!(
        render(&s, &rates(2410.4, 2398.6), 120),
        "rainstorm: 42% read · in 12,345 (2,410/s) · out 12,000 (2,399/s) · 1:05"
    );
    // Before two readings there is no rate; a restart is worth saying.
    let s = Sample {
        restarts: 2,
        source: None,
        ..sample(7, 0, 3_600_000 + 61_000)
    };
    assert_eq!(
        render(&s, &Rates::default(), 120),
        "rainstorm: in 7 · out 0 · 2 restarts · 1:01:01"
    );
}

#[test]
fn a_narrow_terminal_gets_a_shorter_line_never_a_wrapped_one() {
    let s = Sample {
        restarts: 1,
        ..sample(1_234_567, 1_234_000, 5_000)
    };
    let r = rates(100_000.0, 99_000.0);
    let mut last = usize::MAX;
    for width in (0..=120).rev() {
        let line = render(&s, &r, width);
        let n = line.chars().count();
        assert!(n < width.max(1), "width {width}: {line:?}");
        assert!(n <= last, "a narrower terminal never gets a longer line");
        last = n;
        assert!(!line.contains('\r') && !line.contains('\n'), "{line:?}");
    }
    assert_eq!(render(&s, &r, 30), "42% 1,234,567>1,234,000 0:05");
    assert_eq!(render(&s, &r, 10), "42% 1,234");
    assert_eq!(render(&s, &r, 0), "");
    // Each step down drops the least useful part first: the prefix, restarts, rates.
    assert!(render(&s, &r, 80).starts_with("42% read · in 1,234,567 (100,000/s)"));
    assert!(!render(&s, &r, 60).contains("restart"));
    assert_eq!(
        render(&s, &r, 50),
        "42% read · in 1,234,567 · out 1,234,000 · 0:05"
    );
}

#[test]
fn the_share_read_is_rounded_down_and_an_empty_source_is_all_read() {
    assert_eq!(percent(999, 1000), 99);
    assert_eq!(percent(1000, 1000), 100);
    assert_eq!(percent(5000, 1000), 100);
    assert_eq!(percent(0, 0), 100);
    assert_eq!(percent(u64::MAX - 1, u64::MAX), 99);
}

#[test]
fn counts_are_grouped_by_thousands() {
    let got: Vec<String> = [0, 999, 1000, 12_345, 1_000_000]
        .iter()
        .map(|n| group(*n))
        .collect();
    assert_eq!(got, ["0", "999", "1,000", "12,345", "1,000,000"]);
}

#[test]
fn rates_are_taken_over_the_last_two_seconds() {
    let mut h = History::default();
    assert_eq!(h.push(sample(0, 0, 0)), Rates::default());
    // Half a second later: the rate over that half second.
    assert_eq!(h.push(sample(50, 10, 500)), rates(100.0, 20.0));
    for (i, ms) in [1000, 1500, 2000].iter().enumerate() {
        h.push(sample(100 * (i as u64 + 1), 10, *ms));
    }
    // At 2.5 s the window starts at the reading of 0.5 s: (400 - 50) / 2 s in.
    assert_eq!(h.push(sample(400, 10, 2500)), rates(175.0, 0.0));
    // A reading that counts from less (a new leader) starts over.
    assert_eq!(h.push(sample(5, 5, 100)), Rates::default());
    assert_eq!(h.push(sample(15, 5, 600)), rates(20.0, 0.0));
    // The same time twice: no rate rather than a division by zero.
    assert_eq!(h.push(sample(15, 5, 600)).tuples_in, Some(20.0));
}
