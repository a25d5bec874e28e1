use super::*;
use futures::FutureExt;
use tokio::io::AsyncReadExt;

fn line(i: usize) -> Vec<u8> {
    format!("k{i}\t{}\n", "v".repeat(i % 300)).into_bytes()
}

#[tokio::test]
async fn every_line_reaches_the_pipe_in_order() {
    let (w, mut r) = tokio::io::duplex(4096);
    let working = Arc::new(Stopwatch::default());
    let mut f = Feeder::spawn(Box::new(w), working.clone());
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        got
    });
    let mut want = Vec::new();
    for i in 0..20_000 {
        let l = line(i);
        want.extend_from_slice(&l);
        f.write(&l).await.unwrap();
        if i % 7_000 == 0 {
            f.hand_over().await.unwrap();
        }
    }
    let ended = f.close().await;
    assert_eq!(ended.unwritten, 0);
    drop(ended);
    assert_eq!(reader.await.unwrap(), want);
    assert!(!working.is_running());
}

#[tokio::test]
async fn lines_a_process_never_took_are_counted_once() {
    // It stopped reading before anything was written: every line the feeder accepted is
    // unwritten, whether queued, being written, or still in the task's chunk.
    let (w, r) = tokio::io::duplex(4096);
    drop(r);
    let working = Arc::new(Stopwatch::default());
    let mut f = Feeder::spawn(Box::new(w), working.clone());
    let mut accepted = 0u64;
    for i in 0..10_000 {
        if f.write(&line(i)).await.is_err() {
            // The line is in the chunk (added before the refused hand-over).
            accepted += 1;
            break;
        }
        accepted += 1;
    }
    let ended = f.close().await;
    assert_eq!(ended.unwritten, accepted);
    assert!(!working.is_running());
}

#[tokio::test]
async fn the_input_held_outside_a_full_pipe_is_bounded_and_pending() {
    let cap = 8192;
    let (w, r) = tokio::io::duplex(cap);
    let working = Arc::new(Stopwatch::default());
    let mut f = Feeder::spawn(Box::new(w), working.clone());
    let l = line(100);
    let mut accepted = 0usize;
    // Nobody reads: writes are taken until the writer is stuck on the full pipe and the
    // queue is full; the writer gets its turns in between.
    loop {
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        match f.write(&l).now_or_never() {
            Some(Ok(())) => accepted += l.len(),
            Some(Err(Gone)) => panic!("the writer ended"),
            None => break,
        }
        assert!(
            accepted <= PIPE_BUF + cap + l.len(),
            "{accepted} bytes taken"
        );
    }
    assert!(accepted >= PIPE_BUF - CHUNK, "only {accepted} bytes taken");
    assert!(
        working.is_running(),
        "input the process has not taken is the operator's work"
    );
    drop(f);
    drop(r);
}

#[tokio::test]
async fn a_line_cut_by_the_pipe_s_end_is_not_counted_twice() {
    // 100 bytes of room, lines of 30: three lines and a third of the fourth go in, then the
    // process leaves. The fourth line's start is in the pipe (its counter counts it there):
    // unwritten are the 16 after it (hostile probe 21 counted 939 discarded of 938 fed).
    let (w, r) = tokio::io::duplex(100);
    let working = Arc::new(Stopwatch::default());
    let mut f = Feeder::spawn(Box::new(w), working.clone());
    let line = format!("{}\n", "x".repeat(29));
    for _ in 0..20 {
        f.write(line.as_bytes()).await.unwrap();
    }
    f.hand_over().await.unwrap();
    while !working.is_running() {
        tokio::task::yield_now().await;
    }
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    drop(r);
    let ended = f.close().await;
    assert_eq!(ended.unwritten, 16);
}
