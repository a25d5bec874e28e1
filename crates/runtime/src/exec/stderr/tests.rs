//! Unit tests of `stderr`: bounded lines, the rate limit, escaping, the tail a failure quotes.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the relay hands on, owned.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Line(String, usize),
    Dropped(u64, u64),
}

async fn relayed(rd: impl AsyncRead + Unpin, per_sec: u32) -> Vec<Got> {
    let mut got = Vec::new();
    relay(rd, per_sec, &Tail::default(), |r| {
        got.push(match r {
            Relayed::Line { text, len } => Got::Line(text.to_string(), len),
            Relayed::Dropped { lines, bytes } => Got::Dropped(lines, bytes),
        })
    })
    .await
    .unwrap();
    got
}

#[tokio::test]
async fn fifty_megabytes_without_a_newline_are_one_line_of_4_kib() {
    let endless = tokio::io::repeat(b'x').take(50 << 20);
    let got = relayed(endless, LINES_PER_SEC).await;
    assert_eq!(got, [Got::Line("x".repeat(MAX_LINE), 50 << 20)]);
}

#[tokio::test(start_paused = true)]
async fn lines_over_the_rate_are_counted_and_reported_once_the_second_is_over() {
    let (mut w, r) = tokio::io::duplex(1 << 16);
    let writer = tokio::spawn(async move {
        for i in 0..100 {
            w.write_all(format!("burst {i:03}\n").as_bytes())
                .await
                .unwrap();
        }
        w.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        for i in 0..3 {
            w.write_all(format!("later {i}\n").as_bytes())
                .await
                .unwrap();
        }
    });
    let got = relayed(r, 20).await;
    writer.await.unwrap();
    let mut want: Vec<Got> = (0..20)
        .map(|i| Got::Line(format!("burst {i:03}"), 9))
        .collect();
    want.push(Got::Dropped(80, 80 * 9));
    want.extend((0..3).map(|i| Got::Line(format!("later {i}"), 7)));
    assert_eq!(got, want);
}

#[tokio::test]
async fn what_is_left_out_at_the_end_is_reported_at_the_end() {
    let text: String = (0..50).map(|i| format!("{i}\n")).collect();
    let got = relayed(text.as_bytes(), 10).await;
    assert_eq!(got.len(), 11);
    let dropped_bytes: u64 = (10..50).map(|i: u64| i.to_string().len() as u64).sum();
    assert_eq!(got[10], Got::Dropped(40, dropped_bytes));
}

#[tokio::test]
async fn control_characters_are_escaped_and_line_ends_removed() {
    let got = relayed(&b"red \x1b[31malert\r\nfake\rline\tok\nlast"[..], 20).await;
    assert_eq!(
        got,
        [
            Got::Line("red \\u{1b}[31malert".to_string(), 14),
            Got::Line("fake\\rline\tok".to_string(), 12),
            Got::Line("last".to_string(), 4),
        ]
    );
}

#[tokio::test]
async fn the_tail_keeps_the_last_five_lines_in_order_even_those_the_rate_left_out() {
    let text: String = (0..50).map(|i| format!("line {i}\n")).collect();
    let tail = Tail::default();
    let mut logged = 0;
    relay(text.as_bytes(), 10, &tail, |r| {
        if let Relayed::Line { .. } = r {
            logged += 1;
        }
    })
    .await
    .unwrap();
    // Only the first 10 reached the log; the tail has the last 5 of all 50.
    assert_eq!(logged, 10);
    let want: Vec<String> = (45..50).map(|i| format!("line {i}")).collect();
    assert_eq!(tail.lines(), want);
}

#[tokio::test]
async fn the_tail_of_a_few_lines_is_all_of_them() {
    let tail = Tail::default();
    relay(&b"one\r\n\ntwo"[..], 20, &tail, |_| {})
        .await
        .unwrap();
    assert_eq!(tail.lines(), ["one", "", "two"]);
    assert!(Tail::default().lines().is_empty());
}

#[test]
fn a_tail_line_is_cut_to_300_bytes_escaped_and_quotable() {
    let tail = Tail::default();
    let long = "é".repeat(1000);
    tail.push(long.as_bytes(), long.len());
    // 4 KiB kept of a 50 MB line: still cut, and marked.
    tail.push(&[b'x'; MAX_LINE], 50 << 20);
    let quoted = b"\x1b[2Jsaid \"no\"\tok";
    tail.push(quoted, quoted.len());
    tail.push(&[0xff; 400], 400);
    let lines = tail.lines();
    assert_eq!(lines.len(), 4);
    for l in &lines {
        assert!(l.len() <= TAIL_LINE, "{} bytes: {l}", l.len());
    }
    assert!(lines[0].ends_with("é…"), "{}", lines[0]);
    assert!(lines[0].len() > TAIL_LINE - 6);
    assert_eq!(lines[1], format!("{}…", "x".repeat(TAIL_LINE - "…".len())));
    assert_eq!(lines[2], "\\u{1b}[2Jsaid \\\"no\\\"\tok");
    assert!(lines[3].starts_with('\u{fffd}') && lines[3].ends_with('…'));
}

#[test]
fn a_tail_holds_at_most_five_lines() {
    let tail = Tail::default();
    for i in 0..1000 {
        let line = format!("{i}");
        tail.push(line.as_bytes(), line.len());
        assert!(tail.lines().len() <= TAIL_LINES);
    }
    assert_eq!(tail.lines(), ["995", "996", "997", "998", "999"]);
}

#[test]
fn a_failure_quotes_the_tail_after_its_exit_and_says_nothing_without_one() {
    let none = super::super::ExecError::Exited {
        pid: 7,
        how: "exited with code 3".into(),
        stderr: super::super::LastStderr(Vec::new()),
    };
    assert_eq!(none.to_string(), "operator process 7 exited with code 3");
    let some = super::super::ExecError::Exited {
        pid: 7,
        how: "exited with code 3".into(),
        stderr: super::super::LastStderr(vec!["Traceback …".into(), "ValueError: bad row".into()]),
    };
    assert_eq!(
        some.to_string(),
        r#"operator process 7 exited with code 3; last stderr: "Traceback …" | "ValueError: bad row""#
    );
}
