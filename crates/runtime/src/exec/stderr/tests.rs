//! Unit tests of `stderr`: bounded lines, the rate limit, escaping.

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
    relay(rd, per_sec, |r| {
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
