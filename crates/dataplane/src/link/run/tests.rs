//! Unit tests of `run`.

use super::*;
use crate::link::OutBatch;
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
            };
            self.0
                .send(server)
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::ConnectionRefused))?;
            Ok(Conn {
                read: Box::new(ar),
                write: Box::new(aw),
                peer: "receiver".into(),
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
    wr.send(Frame::Ack { upto, eos }.encode()).await.unwrap();
}

fn start(
    queue: usize,
    window: usize,
    resend: bool,
) -> (
    mpsc::Sender<LinkMsg>,
    Receiver,
    tokio::task::JoinHandle<LinkEnd>,
    watch::Sender<RouteTable>,
) {
    let (conn_tx, conns) = mpsc::unbounded_channel();
    let to = TaskPos { stage: 2, index: 0 };
    let spec = LinkSpec {
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
    };
    let cfg = DataConfig {
        window_bytes: window,
        ..DataConfig::default()
    };
    let (tx, rx) = mpsc::channel(queue);
    let (routes_tx, routes) = watch::channel(HashMap::from([(to, receiver())]));
    let link = tokio::spawn(run_link(spec, cfg, rx, routes, CancellationToken::new()));
    (tx, Receiver { conns }, link, routes_tx)
}

fn batch(values: &[&str]) -> LinkMsg {
    LinkMsg::Batch(OutBatch {
        tuples: values.iter().map(|v| Tuple::new("k", *v)).collect(),
        emit_ns: 0,
    })
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
    let values: Vec<String> = got.into_iter().map(|t| t.value).collect();
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
