use super::*;

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
}
