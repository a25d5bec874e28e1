use super::*;
use crate::model::tuple::Tuple;

async fn read_all(text: &[u8], max_line: usize) -> std::io::Result<Vec<Tuple>> {
    let mut rd = SourceReader::new(std::io::Cursor::new(text.to_vec()), "f");
    rd.max_line = max_line;
    let mut out = Vec::new();
    while let Some(t) = rd.next_tuple().await? {
        out.push(t);
    }
    Ok(out)
}

#[tokio::test(start_paused = true)]
async fn lines_an_earlier_attempt_read_go_at_once_and_the_pace_counts_after_them() {
    let rate = 10.0;
    let mut pace = Pace {
        since: Instant::now(),
        from_line: 0,
        rate,
        caught_up: 100,
    };
    tokio::time::advance(Duration::from_secs(3)).await;
    assert!((0..100).all(|l| pace.due(l, rate).is_none()), "no wait");
    let start = Instant::now();
    assert_eq!(
        pace.due(100, rate),
        Some(start),
        "the first new line at once"
    );
    assert_eq!(pace.due(110, rate), Some(start + Duration::from_secs(1)));
    // Without it, line 110 was due 11 s after the start.
    let mut fresh = Pace {
        since: start,
        from_line: 0,
        rate,
        caught_up: 0,
    };
    assert_eq!(fresh.due(110, rate), Some(start + Duration::from_secs(11)));
}

#[tokio::test(start_paused = true)]
async fn a_source_held_back_resumes_at_its_rate_not_in_a_rush() {
    let rate = 100.0;
    let start = Instant::now();
    let mut pace = Pace {
        since: start,
        from_line: 0,
        rate,
        caught_up: 0,
    };
    assert_eq!(pace.due(0, rate), Some(start));
    // Behind by half a second (jitter): the lines that were due go at once.
    tokio::time::advance(Duration::from_millis(600)).await;
    assert_eq!(pace.due(10, rate), Some(start + Duration::from_millis(100)));
    // Held back 30 s (a store pause): the 3,000 lines due since are not rushed; line 11 goes
    // now and every later one at the rate from here.
    tokio::time::advance(Duration::from_secs(30)).await;
    let now = Instant::now();
    assert_eq!(pace.due(11, rate), Some(now));
    assert_eq!(pace.due(111, rate), Some(now + Duration::from_secs(1)));
}

#[tokio::test]
async fn lines_become_numbered_tuples_whatever_their_ending() {
    let got = read_all(b"a,1\r\nb,2\n\nlast", 100).await.unwrap();
    let pairs: Vec<(&str, &str)> = got.iter().map(|t| (&*t.key, &*t.value)).collect();
    assert_eq!(
        pairs,
        [("f:1", "a,1"), ("f:2", "b,2"), ("f:3", ""), ("f:4", "last")]
    );
}

#[tokio::test]
async fn the_reader_counts_the_bytes_it_took_line_ends_included() {
    let text = b"a,1\r\nb,2\n\n";
    let mut rd = SourceReader::new(std::io::Cursor::new(text.to_vec()), "f");
    let mut seen = Vec::new();
    while rd.next_tuple().await.unwrap().is_some() {
        seen.push(rd.consumed());
    }
    assert_eq!(seen, [5, 9, 10]);
    assert_eq!(rd.consumed(), text.len() as u64);
}

#[tokio::test]
async fn a_line_longer_than_a_tuple_fails_the_read_naming_it() {
    // Exactly the limit is fine, with or without its newline.
    assert_eq!(read_all(b"12345\n12345", 5).await.unwrap().len(), 2);
    let err = read_all(b"ok\n123456\nok\n", 5).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("line 2 is longer"), "{err}");
    // No newline at all: the error comes before the whole file is in memory.
    let endless = vec![b'x'; 1 << 20];
    let err = read_all(&endless, 1000).await.unwrap_err();
    assert!(err.to_string().contains("line 1 is longer"), "{err}");
    // Every attempt would meet it (the source fails its job at once); a read that failed
    // otherwise is not such an error.
    assert!(super::reader::is_line_too_long(&err));
    assert!(!super::reader::is_line_too_long(&std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "line 1 is longer than the largest tuple"
    )));
}

/// A file that yields at most `n` bytes per read, so lines straddle every read.
struct Dribble(std::io::Cursor<Vec<u8>>, usize);

impl tokio::io::AsyncRead for Dribble {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = self.1.min(buf.remaining());
        let mut small = vec![0u8; n];
        let mut rb = tokio::io::ReadBuf::new(&mut small);
        let me = &mut *self;
        match std::pin::Pin::new(&mut me.0).poll_read(cx, &mut rb) {
            std::task::Poll::Ready(Ok(())) => {
                buf.put_slice(rb.filled());
                std::task::Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

#[tokio::test]
async fn lines_across_reads_and_chunks_come_out_whole_and_in_order() {
    // Short and long lines (one longer than a chunk), CRLF, empty lines, bad UTF-8.
    let mut text = Vec::new();
    let mut want = Vec::new();
    for i in 0..3000 {
        let line = match i % 7 {
            _ if i % 1000 == 2 => "x".repeat(300 * 1024 + i),
            0 => String::new(),
            1 => "é,ü,ß".repeat(i % 50),
            _ => format!("row {i},{}", "y".repeat(i % 300)),
        };
        text.extend_from_slice(line.as_bytes());
        text.extend_from_slice(if i % 5 == 0 { b"\r\n" } else { b"\n" });
        want.push((format!("f:{}", i + 1), line));
    }
    text.extend_from_slice(b"bad \xff byte");
    want.push(("f:3001".to_string(), "bad \u{fffd} byte".to_string()));
    for step in [1 << 20, 4096, 7] {
        if step == 7 && text.len() > 4 << 20 {
            // Byte-sized reads of the whole file take too long; the first 2 MB show it.
            let cut = text[..2 << 20].iter().rposition(|b| *b == b'\n').unwrap() + 1;
            let lines = text[..cut].iter().filter(|b| **b == b'\n').count();
            let mut rd = SourceReader::new(
                Dribble(std::io::Cursor::new(text[..cut].to_vec()), step),
                "f",
            );
            for (k, v) in &want[..lines] {
                let t = rd.next_tuple().await.unwrap().unwrap();
                assert_eq!((&*t.key, &*t.value), (k.as_str(), v.as_str()));
            }
            assert!(rd.next_tuple().await.unwrap().is_none());
            assert_eq!(rd.consumed(), cut as u64);
            continue;
        }
        let mut rd = SourceReader::new(Dribble(std::io::Cursor::new(text.clone()), step), "f");
        for (k, v) in &want {
            let t = rd.next_tuple().await.unwrap().unwrap();
            assert_eq!(
                (&*t.key, &*t.value),
                (k.as_str(), v.as_str()),
                "reads of {step}"
            );
        }
        assert!(rd.next_tuple().await.unwrap().is_none());
        // The last line has no newline: one byte more than the file, as documented.
        assert_eq!(rd.consumed(), text.len() as u64 + 1);
    }
}

/// A line's key hash, continued from its name's, is the hash of its whole key: what the
/// partitioner would compute (replay routes by the key itself).
#[tokio::test]
async fn a_line_s_key_hash_is_its_key_s() {
    let mut rd = SourceReader::new(std::io::Cursor::new(b"a\nb\n".repeat(600)), "in.csv");
    while let Some(l) = rd.next_line().await.unwrap() {
        assert_eq!(
            l.key_hash,
            crate::model::tuple::stable_hash(l.key.as_bytes()),
            "{}",
            l.key
        );
    }
}

/// Through the pushed-down filter the reader yields only the lines it keeps, each keyed by
/// its number in the file, while it counts every line and byte it took: what the source
/// sends, and what a first-stage replay must read alike.
#[tokio::test]
async fn a_filtered_reader_keeps_line_numbers_and_counts_every_line() {
    use crate::model::pushdown::SourceFilter;
    use crate::model::spec::ChainStep;
    let filter = SourceFilter {
        steps: vec![ChainStep {
            name: "filter".into(),
            args: vec!["keep".into()],
        }],
    };
    let text = b"keep 1\r\ndrop\nkeep \xff 3\n\ndrop\nlast keep";
    let mut rd = SourceReader::new(std::io::Cursor::new(text.to_vec()), "f")
        .filtered(Some(filter.compile().unwrap()));
    let mut got = Vec::new();
    while let Some(l) = rd.next_line().await.unwrap() {
        got.push((l.key.to_string(), l.value.into_owned(), l.number));
    }
    assert_eq!(
        got,
        [
            ("f:1".to_string(), "keep 1".to_string(), 1),
            ("f:3".to_string(), "keep \u{FFFD} 3".to_string(), 3),
            ("f:6".to_string(), "last keep".to_string(), 6),
        ]
    );
    assert_eq!(rd.lines(), 6);
    assert_eq!(rd.consumed(), text.len() as u64 + 1);
    // The same file unfiltered gives those tuples among the rest, with the same keys.
    let all = read_all(text, 100).await.unwrap();
    let kept: Vec<&str> = all
        .iter()
        .filter(|t| t.value.contains("keep"))
        .map(|t| &*t.key)
        .collect();
    assert_eq!(kept, ["f:1", "f:3", "f:6"]);
}

/// The filtered reader skips lines in bulk (one search for the substring, a count of line
/// ends) yet yields exactly what reading every line and testing it as the stage's own filter
/// would, with the same keys, line count and bytes consumed: over random files of short and
/// empty lines, CRLF, stray bytes, the substring at line starts and ends and cut across
/// reads, a last line with and without its line end, and reads of every size from 1 byte.
#[tokio::test]
async fn a_bulk_skipping_reader_yields_what_a_line_by_line_filter_does() {
    use crate::model::pushdown::SourceFilter;
    use crate::model::spec::ChainStep;
    let filters: [&[(&str, &str)]; 5] = [
        &[("filter", "ab")],
        &[("filter", "a")],
        &[("filter", "b\r")],
        &[("filter", "ab"), ("filter-regex", "^.?a")],
        &[("filter", "\u{FFFD}")],
    ];
    let pieces: [&[u8]; 9] = [
        b"ab", b"a", b"b", b"x", b"\n", b"\r\n", b"\xff", b"yy", b"\n",
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..300 {
        let len = (next() % 60) as usize;
        let text: Vec<u8> = (0..len)
            .flat_map(|_| pieces[(next() % pieces.len() as u64) as usize].to_vec())
            .collect();
        let steps = &filters[round % filters.len()];
        let filter = SourceFilter {
            steps: steps
                .iter()
                .map(|(name, arg)| ChainStep {
                    name: name.to_string(),
                    args: vec![arg.to_string()],
                })
                .collect(),
        };
        // The reference: every line, tested as the stage's filters test a tuple's value.
        let mut ops: Vec<crate::builtin::Builtin> = steps
            .iter()
            .map(|(name, arg)| crate::builtin::Builtin::from_spec(name, &[arg.to_string()]))
            .collect::<Result<_, _>>()
            .unwrap();
        let all = read_all(&text, 1 << 20).await.unwrap();
        let mut want = Vec::new();
        for t in &all {
            let mut cur = vec![t.clone()];
            for op in &mut ops {
                let mut out = Vec::new();
                for t in cur {
                    op.process(t, &mut out);
                }
                cur = out;
            }
            want.extend(
                cur.into_iter()
                    .map(|t| (t.key.to_string(), t.value.to_string())),
            );
        }
        let ended = text.last().is_none_or(|b| *b == b'\n');
        for step in [1, 3, 64, 1 << 20] {
            let mut rd = SourceReader::new(Dribble(std::io::Cursor::new(text.clone()), step), "f")
                .filtered(Some(filter.compile().unwrap()));
            let mut got = Vec::new();
            while let Some(l) = rd.next_line().await.unwrap() {
                assert_eq!(l.key, format!("f:{}", l.number));
                got.push((l.key.to_string(), l.value.into_owned()));
            }
            let what = format!(
                "{steps:?} over {:?} in reads of {step}",
                String::from_utf8_lossy(&text)
            );
            assert_eq!(got, want, "{what}");
            assert_eq!(rd.lines(), all.len() as u64, "{what}");
            let consumed = text.len() as u64 + u64::from(!ended);
            assert_eq!(rd.consumed(), consumed, "{what}");
        }
    }
}
