use super::*;

/// What a router sends for `tuples` over 3 links, each pushed as a tuple or as a pair.
async fn frames(partition: Partition, pairs: bool, tuples: &[(&str, &str)]) -> Vec<Vec<u8>> {
    let mut rxs = Vec::new();
    let mut links = Vec::new();
    for _ in 0..3 {
        let (tx, rx) = mpsc::channel(64);
        links.push(tx);
        rxs.push(rx);
    }
    let mut r = Router::new(
        links,
        partition,
        Arc::new(Switchboard::new(Vec::new(), 3, false)),
        DataConfig::default(),
        Arc::new(AtomicU64::new(0)),
        Arc::new(SendMeter::default()),
    );
    for (k, v) in tuples {
        match pairs {
            true => r.push_pair(k, v, 7).await.unwrap(),
            false => r.push(Tuple::new(*k, *v), 7).await.unwrap(),
        }
    }
    r.flush().await.unwrap();
    let mut out = Vec::new();
    for rx in &mut rxs {
        while let Ok(m) = rx.try_recv() {
            if let LinkMsg::Batch(b) = m {
                out.push(b.frame.to_vec());
            }
        }
    }
    out
}

/// A line the source routes as a pair goes where, and as, the same tuple would: one
/// definition of routing, whichever way in (first-stage replay routes tuples).
#[tokio::test]
async fn a_pair_is_routed_and_encoded_as_its_tuple_would_be() {
    let tuples: Vec<(String, String)> = (0..500)
        .map(|i| (format!("in.csv:{i}"), format!("{i},a b,\"q, r\",{}", i % 7)))
        .collect();
    let tuples: Vec<(&str, &str)> = tuples.iter().map(|(k, v)| (&**k, &**v)).collect();
    for p in [
        Partition::Key,
        Partition::Hashed,
        Partition::ValueOnly,
        Partition::Field(3),
        Partition::Column(1),
        Partition::KeySelect {
            cols: vec![0, 2],
            key: false,
        },
    ] {
        let (a, b) = (
            frames(p.clone(), false, &tuples).await,
            frames(p.clone(), true, &tuples).await,
        );
        assert!(!a.is_empty());
        assert_eq!(a, b, "{p:?}");
    }
}

/// `settle` returns only once every link's receiver holds what was routed to it: a task
/// hands a key group's state on after it, so its outputs for the group stay ahead of the
/// next owner's.
#[tokio::test]
async fn settle_waits_until_every_receiver_holds_what_was_routed_to_it() {
    let (mut rxs, mut links, mut held, mut watches) = (vec![], vec![], vec![], vec![]);
    for _ in 0..2 {
        let (tx, rx) = mpsc::channel(64);
        links.push(tx);
        rxs.push(rx);
        let (w_tx, w_rx) = tokio::sync::watch::channel(0u64);
        held.push(w_tx);
        watches.push(w_rx);
    }
    let mut r = Router::new(
        links,
        Partition::Key,
        Arc::new(Switchboard::new(Vec::new(), 2, false)),
        DataConfig::default(),
        Arc::new(AtomicU64::new(0)),
        Arc::new(SendMeter::default()),
    )
    .with_settled(watches);
    for k in ["a", "b", "c", "d", "e", "f"] {
        r.push(Tuple::new(k, "v"), 1).await.unwrap();
    }
    let mut sent = Vec::new();
    {
        let settle = r.settle();
        tokio::pin!(settle);
        // Nothing acknowledged yet: it waits (and flushed the batches meanwhile).
        tokio::select! {
            biased;
            _ = &mut settle => panic!("settled before any receiver held anything"),
            _ = tokio::task::yield_now() => {}
        }
        for rx in &mut rxs {
            let mut n = 0u64;
            while let Ok(LinkMsg::Batch(b)) = rx.try_recv() {
                n += u64::from(b.count);
            }
            sent.push(n);
        }
        assert_eq!(
            sent.iter().sum::<u64>(),
            6,
            "every output was flushed: {sent:?}"
        );
        // One receiver holds all of its share, the other all but one tuple: still waiting.
        held[0].send_replace(sent[0]);
        held[1].send_replace(sent[1].saturating_sub(1));
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), &mut settle);
        assert!(
            waited.await.is_err() || sent[1] == 0,
            "settled with a tuple unheld"
        );
        held[1].send_replace(sent[1]);
        settle.await.unwrap();
    }
    // A link that ends (its sender gone) makes the wait fail, not hang.
    r.push(Tuple::new("a", "v"), 1).await.unwrap();
    r.push(Tuple::new("b", "v"), 1).await.unwrap();
    drop(held);
    assert!(r.settle().await.is_err());
}

/// The limit is on a tuple's key and value bytes, as stated, and a refusal quotes them: a
/// tuple exactly at it was refused and quoted 8 bytes more (its encoded lengths; hostile
/// probe). The frame still carries it.
#[tokio::test]
async fn a_tuple_at_the_stated_limit_is_carried_and_one_byte_more_is_refused() {
    let (tx, mut rx) = mpsc::channel(64);
    let mut r = Router::new(
        vec![tx],
        Partition::Key,
        Arc::new(Switchboard::new(Vec::new(), 1, false)),
        DataConfig::default(),
        Arc::new(AtomicU64::new(0)),
        Arc::new(SendMeter::default()),
    );
    let value = "x".repeat(MAX_TUPLE - 1);
    r.push_pair("k", &value, 7).await.unwrap();
    r.flush().await.unwrap();
    let carried = std::iter::from_fn(|| rx.try_recv().ok())
        .filter(|m| matches!(m, LinkMsg::Batch(_)))
        .count();
    assert_eq!(carried, 1);
    let over = "x".repeat(MAX_TUPLE);
    for refused in [
        r.push_pair("k", &over, 7).await,
        r.push(Tuple::new("k", over.as_str()), 7).await,
    ] {
        assert!(
            matches!(refused, Err(Closed::TooLarge(n)) if n == MAX_TUPLE + 1),
            "{refused:?}"
        );
    }
    assert_eq!(MAX_LINE, MAX_TUPLE + 1, "a tab between key and value");
}
