//! Unit tests of `run`.

use super::*;
use crate::link::{LinkSlots, OutBatch};
use crate::model::ids::JobId;
use crate::model::ids::TaskPos;
use crate::model::tuple::Tuple;
use crate::protocol::auth::Identity;
use crate::protocol::control::Endpoint;
use crate::protocol::frame::{codec, Hello};
use crate::routes::Dest;
use crate::transport::{Conn, ConnRead, ConnWrite, Network};
use futures::future::BoxFuture;
use futures::SinkExt;
use std::collections::HashMap;
use std::sync::Arc;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

/// Where the receiver runs (these tests play it: its key signs nothing).
fn receiver() -> Dest {
    let at = Endpoint {
        addr: "r:1".into(),
        key: Identity::from_seed([2; 32]).unwrap().public(),
    };
    Dest::running(&at, 0)
}

/// A network whose every connection lands in a channel the test reads as the receiver.
struct Loopback(mpsc::UnboundedSender<Conn>);

impl Network for Loopback {
    fn connect<'a>(&'a self, _addr: &'a str) -> BoxFuture<'a, std::io::Result<Conn>> {
        Box::pin(async move {
            let (a, b) = tokio::io::duplex(1 << 16);
            let (ar, aw) = tokio::io::split(a);
            let (br, bw) = tokio::io::split(b);
            let server = Conn {
                read: Box::new(br),
                write: Box::new(bw),
                peer: "link".into(),
                admitted: None,
            };
            self.0
                .send(server)
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::ConnectionRefused))?;
            Ok(Conn {
                read: Box::new(ar),
                write: Box::new(aw),
                peer: "receiver".into(),
                admitted: None,
            })
        })
    }
}

type Rd = FramedRead<ConnRead, LengthDelimitedCodec>;
type Wr = FramedWrite<ConnWrite, LengthDelimitedCodec>;

struct Receiver {
    conns: mpsc::UnboundedReceiver<Conn>,
}

impl Receiver {
    async fn accept(&mut self) -> (Rd, Wr, Hello) {
        let c = self.conns.recv().await.expect("a connection");
        let mut rd = FramedRead::new(c.read, codec());
        let mut wr = FramedWrite::new(c.write, codec());
        wr.send(Frame::Challenge([0; 16]).encode()).await.unwrap();
        let hello = match next(&mut rd).await {
            Some(Frame::Hello(h)) => h,
            other => panic!("expected a Hello, got {other:?}"),
        };
        (rd, wr, hello)
    }

    /// Accepts a connection and admits it, holding what the sender says was acked.
    async fn admit(&mut self) -> (Rd, Wr, Hello) {
        let (rd, mut wr, hello) = self.accept().await;
        ack(&mut wr, hello.acked, hello.eos_acked).await;
        (rd, wr, hello)
    }
}

async fn next(rd: &mut Rd) -> Option<Frame> {
    let f = tokio::time::timeout(Duration::from_secs(10), rd.next())
        .await
        .ok()??;
    Frame::decode(f.ok()?.freeze()).ok()
}

async fn ack(wr: &mut Wr, upto: u64, eos: bool) {
    let ack = Frame::Ack {
        upto,
        eos,
        seen: 0,
        by: 0,
    };
    wr.send(ack.encode()).await.unwrap();
}

type Started = (
    mpsc::Sender<LinkMsg>,
    Receiver,
    tokio::task::JoinHandle<LinkEnd>,
    watch::Sender<RouteTable>,
);

fn start(queue: usize, window: usize, resend: bool) -> Started {
    start_with(
        queue,
        window,
        resend,
        LinkSlots::new(64),
        CancellationToken::new(),
    )
}

fn start_with(
    queue: usize,
    window: usize,
    resend: bool,
    slots: LinkSlots,
    cancel: CancellationToken,
) -> Started {
    let (conn_tx, conns) = mpsc::unbounded_channel();
    let to = TaskPos { stage: 2, index: 0 };
    let spec = LinkSpec {
        slots,
        job: JobId("j".into()),
        from: TaskPos { stage: 1, index: 0 },
        attempt: 0,
        epoch: 0,
        to,
        resend,
        linger: false,
        done: None,
        net: Arc::new(Loopback(conn_tx)),
        identity: Identity::from_seed([1; 32]).unwrap(),
        board: None,
        settled: None,
        meter: None,
    };
    let cfg = DataConfig {
        window_bytes: window,
        ..DataConfig::default()
    };
    let (tx, rx) = mpsc::channel(queue);
    let (routes_tx, routes) = watch::channel(HashMap::from([(to, receiver())]));
    let link = tokio::spawn(run_link(spec, cfg, rx, routes, cancel));
    (tx, Receiver { conns }, link, routes_tx)
}

fn batch(values: &[&str]) -> LinkMsg {
    let tuples: Vec<Tuple> = values.iter().map(|v| Tuple::new("k", *v)).collect();
    LinkMsg::Batch(OutBatch::of(&tuples, 0))
}

/// War story: stale acks from timed-out sends desynchronised the stream. Acks here are
/// cumulative, so a late or repeated ack changes nothing, and an end-of-stream ack counts
/// only when it covers every tuple.
#[tokio::test]
async fn ghost_acks_late_and_duplicate_change_nothing() {
    let (tx, mut recv, link, _routes) = start(8, 1 << 20, true);
    for b in [["a", "b"], ["c", "d"], ["e", "f"]] {
        tx.send(batch(&b)).await.unwrap();
    }
    tx.send(LinkMsg::End).await.unwrap();
    let (mut rd, mut wr, hello) = recv.admit().await;
    assert_eq!((hello.acked, hello.eos_acked), (0, false));
    for first in [1, 3, 5] {
        assert!(
            matches!(next(&mut rd).await, Some(Frame::Batch { first_seq, .. }) if first_seq == first)
        );
    }
    assert_eq!(next(&mut rd).await, Some(Frame::Eos { last_seq: 6 }));
    ack(&mut wr, 4, false).await;
    ack(&mut wr, 2, false).await; // late
    ack(&mut wr, 4, false).await; // duplicate
    ack(&mut wr, 4, true).await; // an end ack that does not cover tuples 5 and 6
    drop((rd, wr));
    // The link reconnects: it holds 4 acknowledged, and re-sends exactly 5..6 and the end.
    let (mut rd, mut wr, hello) = recv.admit().await;
    assert_eq!((hello.acked, hello.eos_acked), (4, false));
    match next(&mut rd).await {
        Some(Frame::Batch {
            first_seq, tuples, ..
        }) => {
            assert_eq!(first_seq, 5);
            assert_eq!(tuples.len(), 2);
        }
        other => panic!("expected the unacknowledged batch, got {other:?}"),
    }
    assert_eq!(next(&mut rd).await, Some(Frame::Eos { last_seq: 6 }));
    assert!(!link.is_finished());
    ack(&mut wr, 6, true).await;
    assert_eq!(link.await.unwrap(), LinkEnd::Done);
}

/// War story: a sender re-queued a failed tuple into its own full input channel and
/// deadlocked. Retry belongs to the link's window: with its input queue full and every
/// connection reset before any ack, it keeps re-sending and finishes once acked.
#[tokio::test]
async fn self_requeue_a_retry_never_writes_into_its_own_input() {
    let (tx, mut recv, link, _routes) = start(1, 64, true);
    let producer = tokio::spawn(async move {
        for i in 0..20 {
            tx.send(batch(&[&format!("v{i}")])).await.unwrap();
        }
        tx.send(LinkMsg::End).await.unwrap();
    });
    let mut got = Vec::new();
    // Ten connections in a row are dropped without an ack after their first batch.
    for _ in 0..10 {
        let (mut rd, _wr, hello) = recv.admit().await;
        assert_eq!(hello.acked, 0);
        assert!(matches!(
            next(&mut rd).await,
            Some(Frame::Batch { first_seq: 1, .. })
        ));
    }
    // Then a receiver that acks everything it gets.
    let (mut rd, mut wr, _) = recv.admit().await;
    loop {
        match next(&mut rd).await {
            Some(Frame::Batch {
                first_seq, tuples, ..
            }) => {
                let last = first_seq + tuples.len() as u64 - 1;
                if last as usize > got.len() {
                    got.extend(tuples.into_iter().skip(got.len() + 1 - first_seq as usize));
                }
                ack(&mut wr, last, false).await;
            }
            Some(Frame::Eos { last_seq }) => {
                ack(&mut wr, last_seq, true).await;
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    producer.await.unwrap();
    assert_eq!(link.await.unwrap(), LinkEnd::Done);
    let values: Vec<String> = got.into_iter().map(|t| t.value.to_string()).collect();
    let want: Vec<String> = (0..20).map(|i| format!("v{i}")).collect();
    assert_eq!(values, want);
}

/// War story: at-most-once lost its first tuples whenever the first stage registered after
/// the source connected: batches written behind a Hello the receiver refused were dropped
/// as if delivered. Nothing is written before admission, so a refusal loses nothing; only
/// what went out on an admitted connection is dropped at a reconnect.
#[tokio::test]
async fn at_most_once_loses_nothing_to_a_refused_connection() {
    let (tx, mut recv, link, _routes) = start(8, 1 << 20, false);
    tx.send(batch(&["a"])).await.unwrap();
    let (mut rd, mut wr, _) = recv.accept().await;
    let refuse = Frame::Reject {
        retry: true,
        reason: "not registered yet".into(),
    };
    wr.send(refuse.encode()).await.unwrap();
    assert_eq!(
        next(&mut rd).await,
        None,
        "nothing is sent before admission"
    );
    drop((rd, wr));
    let (mut rd, mut wr, hello) = recv.admit().await;
    assert_eq!(hello.acked, 0);
    match next(&mut rd).await {
        Some(Frame::Batch {
            first_seq: 1,
            tuples,
            ..
        }) => assert_eq!(tuples[0].value, "a"),
        other => panic!("the refused batch must still be sent, got {other:?}"),
    }
    // Admitted and unacknowledged, then the connection drops: at-most-once drops "b".
    tx.send(batch(&["b"])).await.unwrap();
    assert!(matches!(
        next(&mut rd).await,
        Some(Frame::Batch { first_seq: 2, .. })
    ));
    ack(&mut wr, 1, false).await;
    drop((rd, wr));
    tx.send(LinkMsg::End).await.unwrap();
    let (mut rd, mut wr, hello) = recv.admit().await;
    assert_eq!(hello.acked, 1);
    assert_eq!(next(&mut rd).await, Some(Frame::Eos { last_seq: 2 }));
    ack(&mut wr, 2, true).await;
    assert_eq!(link.await.unwrap(), LinkEnd::Done);
}

/// War story (simulation seed 2864): a task that finished after an upstream attempt's end
/// of stream left that upstream's restarted attempt retrying a link to nowhere forever.
/// A finished destination holds the whole stream: the link drains its input and ends.
#[tokio::test]
async fn a_link_to_a_finished_task_drains_and_ends() {
    let (tx, mut recv, link, routes) = start(2, 1 << 20, true);
    tx.send(batch(&["a"])).await.unwrap();
    let (mut rd, _wr, _) = recv.admit().await;
    assert!(matches!(next(&mut rd).await, Some(Frame::Batch { .. })));
    let to = TaskPos { stage: 2, index: 0 };
    routes.send_replace(HashMap::from([(
        to,
        Dest {
            finished: true,
            ..receiver()
        },
    )]));
    // Regenerated output keeps coming; none of it goes anywhere, and End ends the link.
    for i in 0..10 {
        tx.send(batch(&[&format!("v{i}")])).await.unwrap();
    }
    tx.send(LinkMsg::End).await.unwrap();
    assert_eq!(link.await.unwrap(), LinkEnd::Done);
    assert!(
        recv.conns.try_recv().is_err(),
        "no new connection is opened"
    );
}

/// War story (simulation seed 8206 of 20,000): a restarted sender connected to a receiver
/// that already held its whole stream, ended, from an earlier attempt. The receiver said
/// so in its first ack, before the sender had sent its own end, and never acked again; the
/// link forgot it and waited forever. The receiver's word is kept until the end is sent.
#[tokio::test]
async fn an_end_acknowledged_before_it_is_sent_still_completes_the_link() {
    let (tx, mut recv, link, _routes) = start(8, 1 << 20, true);
    let (_rd, mut wr, hello) = recv.accept().await;
    assert_eq!(hello.acked, 0);
    ack(&mut wr, 2, true).await;
    // The regenerated stream: everything is at or below the receiver's end.
    tx.send(batch(&["a", "b"])).await.unwrap();
    tx.send(LinkMsg::End).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), link)
        .await
        .expect("the link must end without another ack");
    assert_eq!(end.unwrap(), LinkEnd::Done);
}

/// Links past the process's budget of connections wait for a slot instead of opening a
/// socket: with one slot, a second link connects only once the first one's connection is
/// gone. (Paused clock: the wait is virtual, nothing sleeps.)
#[tokio::test(start_paused = true)]
async fn a_link_past_the_connection_budget_waits_for_a_slot() {
    let slots = LinkSlots::new(1);
    let (tx1, mut recv1, link1, _r1) =
        start_with(8, 1 << 20, true, slots.clone(), CancellationToken::new());
    let (tx2, mut recv2, link2, _r2) =
        start_with(8, 1 << 20, true, slots.clone(), CancellationToken::new());
    // Whichever link got the slot is admitted; the other has not even connected.
    let first = tokio::select! {
        c = recv1.admit() => (1, c),
        c = recv2.admit() => (2, c),
    };
    let (n, (mut rd, mut wr, hello)) = first;
    assert_eq!(slots.in_use(), 1);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let other = if n == 1 { &mut recv2 } else { &mut recv1 };
    assert!(
        other.conns.try_recv().is_err(),
        "a link connected past the budget of 1"
    );
    // The first link ends (its whole stream acked): its slot goes to the other link.
    let (tx_first, tx_other) = if n == 1 { (&tx1, &tx2) } else { (&tx2, &tx1) };
    tx_first.send(LinkMsg::End).await.unwrap();
    let last = match next(&mut rd).await {
        Some(Frame::Eos { last_seq }) => last_seq,
        f => panic!("expected the end of stream, got {f:?}"),
    };
    ack(&mut wr, last.max(hello.acked), true).await;
    let (mut rd2, mut wr2, hello2) = other.admit().await;
    tx_other.send(LinkMsg::End).await.unwrap();
    let last2 = match next(&mut rd2).await {
        Some(Frame::Eos { last_seq }) => last_seq,
        f => panic!("expected the end of stream, got {f:?}"),
    };
    ack(&mut wr2, last2.max(hello2.acked), true).await;
    assert_eq!(link1.await.unwrap(), LinkEnd::Done);
    assert_eq!(link2.await.unwrap(), LinkEnd::Done);
    assert_eq!(slots.in_use(), 0);
}

/// A destination that keeps refusing is retried with a growing wait, capped at a second: ten
/// (virtual) seconds of refusals cost a handful of connections, not a storm; once the link is
/// cancelled it connects no more, and its slot is free.
#[tokio::test(start_paused = true)]
async fn a_refusing_destination_is_retried_with_backoff_and_not_after_cancel() {
    let slots = LinkSlots::new(4);
    let cancel = CancellationToken::new();
    let (_tx, mut recv, link, _routes) =
        start_with(8, 1 << 20, true, slots.clone(), cancel.clone());
    let refuse = Frame::Reject {
        retry: true,
        reason: "not here yet".into(),
    };
    let t0 = tokio::time::Instant::now();
    let mut tries = 0;
    while t0.elapsed() < Duration::from_secs(10) {
        let Ok(Some(c)) = tokio::time::timeout(Duration::from_secs(5), recv.conns.recv()).await
        else {
            break;
        };
        tries += 1;
        let mut rd = FramedRead::new(c.read, codec());
        let mut wr = FramedWrite::new(c.write, codec());
        wr.send(Frame::Challenge([0; 16]).encode()).await.unwrap();
        assert!(matches!(next(&mut rd).await, Some(Frame::Hello(_))));
        wr.send(refuse.clone().encode()).await.unwrap();
    }
    // 5 ms doubling to 1 s: 8 quick tries within 1.3 s, then one a second.
    assert!(
        (10..=20).contains(&tries),
        "{tries} connections in 10 s to a refusing destination"
    );
    cancel.cancel();
    assert_eq!(link.await.unwrap(), LinkEnd::Cancelled);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(recv.conns.try_recv().is_err(), "a cancelled link connected");
    assert_eq!(slots.in_use(), 0);
}

/// While a link has no connection its task's meter names the receiver it tries to reach
/// (the job's views say so after 2 s: a cut between two workers); once admitted, and once the
/// link ends, it no longer does.
#[tokio::test]
async fn a_link_without_a_connection_is_named_on_its_task_s_meter() {
    let meter = Arc::new(crate::meter::SendMeter::default());
    let (conn_tx, conns) = mpsc::unbounded_channel();
    let to = TaskPos { stage: 2, index: 0 };
    let spec = LinkSpec {
        slots: LinkSlots::new(64),
        job: JobId("j".into()),
        from: TaskPos { stage: 1, index: 0 },
        attempt: 0,
        epoch: 0,
        to,
        resend: true,
        linger: false,
        done: None,
        net: Arc::new(Loopback(conn_tx)),
        identity: Identity::from_seed([1; 32]).unwrap(),
        board: None,
        settled: None,
        meter: Some(meter.clone()),
    };
    let (tx, rx) = mpsc::channel(4);
    let (_routes_tx, routes) = watch::channel(HashMap::from([(to, receiver())]));
    let cancel = CancellationToken::new();
    let link = tokio::spawn(run_link(
        spec,
        DataConfig::default(),
        rx,
        routes,
        cancel.clone(),
    ));
    let mut recv = Receiver { conns };
    // The receiver has not answered: the link tries to reach it, and says so for as long.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (who, how_long) = loop {
        match meter.longest_unreached() {
            Some((who, d)) if d >= Duration::from_millis(50) => break (who, d),
            _ => assert!(
                tokio::time::Instant::now() < deadline,
                "never named while unreached"
            ),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(who, to, "{how_long:?}");
    let (_rd, _wr, _hello) = recv.admit().await;
    tx.send(batch(&["a"])).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while meter.longest_unreached().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still named once admitted"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cancel.cancel();
    link.await.unwrap();
    assert_eq!(meter.longest_unreached(), None);
}
