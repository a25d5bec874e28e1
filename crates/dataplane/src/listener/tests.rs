//! Unit tests of `listener`.

use super::*;
use crate::model::tuple::Tuple;
use crate::protocol::auth::Identity;
use crate::protocol::control::Endpoint;
use crate::routes::Dest;
use tokio::net::{TcpListener, TcpStream};

type Rd = FramedRead<tokio::net::tcp::OwnedReadHalf, tokio_util::codec::LengthDelimitedCodec>;
type Wr = FramedWrite<tokio::net::tcp::OwnedWriteHalf, tokio_util::codec::LengthDelimitedCodec>;

/// A listener on a loopback port serving `registry` by `routes` until `stop` is cancelled.
async fn listen(
    registry: Arc<Registry>,
    routes: Arc<Routes>,
) -> (
    std::net::SocketAddr,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve(
        listener,
        registry,
        routes,
        Limits::default(),
        stop.clone(),
    ));
    (addr, stop, server)
}

/// Makes a Hello's proof from the challenge and the Hello.
type Prover<'a> = dyn FnOnce(&[u8; 16], &[u8]) -> Vec<u8> + 'a;

/// The worker running the sender task 1.0 in these tests.
fn sender() -> Identity {
    Identity::from_seed([1; 32]).unwrap()
}

/// Where sender attempt `attempt` of task 1.0 runs: on the worker [`sender`].
fn sender_at(addr: &str, attempt: u32) -> Dest {
    let at = Endpoint {
        addr: addr.into(),
        key: sender().public(),
    };
    Dest::running(&at, attempt)
}

async fn hello(addr: std::net::SocketAddr, from_attempt: u32, to_attempt: u32) -> (Rd, Wr) {
    hello_as(addr, from_attempt, to_attempt, |n, body| {
        sender().sign_hello(n, body)
    })
    .await
}

/// Says Hello for sender 1.0 attempt `from_attempt` to receiver 2.0 attempt `to_attempt`
/// with the proof `prove` makes of the challenge and the Hello.
async fn hello_as(
    addr: std::net::SocketAddr,
    from_attempt: u32,
    to_attempt: u32,
    prove: impl FnOnce(&[u8; 16], &[u8]) -> Vec<u8>,
) -> (Rd, Wr) {
    let s = TcpStream::connect(addr).await.unwrap();
    let (r, w) = s.into_split();
    let mut rd = FramedRead::new(r, codec());
    let mut wr = FramedWrite::new(w, codec());
    let Some(Frame::Challenge(nonce)) = next(&mut rd).await else {
        panic!("the listener speaks first");
    };
    let mut h = Hello {
        job: "j".into(),
        from_stage: 1,
        from_index: 0,
        from_attempt,
        to_stage: 2,
        to_index: 0,
        to_attempt,
        epoch: 0,
        acked: 0,
        eos_acked: false,
        proof: Vec::new(),
    };
    h.proof = prove(&nonce, &h.signed_body());
    wr.send(Frame::Hello(h).encode()).await.unwrap();
    (rd, wr)
}

async fn next(rd: &mut Rd) -> Option<Frame> {
    let f = tokio::time::timeout(Duration::from_secs(10), rd.next())
        .await
        .ok()??;
    Frame::decode(f.ok()?.freeze()).ok()
}

#[tokio::test]
async fn links_are_fenced_at_both_ends() {
    let registry = Arc::new(Registry::default());
    let routes = Arc::new(Routes::default());
    let job = JobId("j".into());
    let from = TaskPos { stage: 1, index: 0 };
    routes.set_many(&job, 1, &[(from, sender_at("x:1", 2))]);
    let key = TaskKey {
        job: job.clone(),
        pos: TaskPos { stage: 2, index: 0 },
    };
    let (addr, stop, server) = listen(registry.clone(), routes.clone()).await;

    // Nobody registered yet: come back later.
    let (mut rd, _wr) = hello(addr, 2, 5).await;
    assert!(matches!(
        next(&mut rd).await,
        Some(Frame::Reject { retry: true, .. })
    ));

    // Attempt 4 of the receiver is registered; a Hello for attempt 5 must not reach it.
    let (mut old_inbox, _old_acks, _old_reg) = registry.register(key.clone(), 4, 0, 4).unwrap();
    let (mut rd, _wr) = hello(addr, 2, 5).await;
    assert!(matches!(
        next(&mut rd).await,
        Some(Frame::Reject { retry: true, .. })
    ));
    assert!(
        old_inbox.try_recv().is_err(),
        "an older receiver attempt got a link"
    );

    // Attempt 5 registers: an older one can never register over it.
    let (mut inbox, acks, _reg) = registry.register(key.clone(), 5, 0, 4).unwrap();
    assert!(registry.register(key.clone(), 4, 0, 4).is_none());

    // Sender attempt 1 is older than the route table's attempt 2: refused for good.
    let (mut rd, _wr) = hello(addr, 1, 5).await;
    assert!(matches!(
        next(&mut rd).await,
        Some(Frame::Reject { retry: false, .. })
    ));

    // Sender attempt 3 is newer than the routes know: come back once they do.
    let (mut rd, _wr) = hello(addr, 3, 5).await;
    assert!(matches!(
        next(&mut rd).await,
        Some(Frame::Reject { retry: true, reason }) if reason.contains("routes yet")
    ));

    // Sender attempt 2 to receiver attempt 5: connected, acked, its batches delivered.
    let (mut rd, mut wr) = hello(addr, 2, 5).await;
    assert!(matches!(
        inbox.recv().await,
        Some(Inbound::Connected {
            from: 0,
            acked: 0,
            ..
        })
    ));
    assert!(matches!(
        next(&mut rd).await,
        Some(Frame::Ack {
            upto: 0,
            eos: false,
            ..
        })
    ));
    let b = Frame::Batch {
        first_seq: 1,
        emit_ns: 0,
        tuples: vec![Tuple::new("k", "v")],
    };
    wr.send(b.encode()).await.unwrap();
    assert!(matches!(
        inbox.recv().await,
        Some(Inbound::Batch {
            from: 0,
            first_seq: 1,
            ..
        })
    ));
    acks.set(0, 1, false);
    assert!(matches!(
        next(&mut rd).await,
        Some(Frame::Ack {
            upto: 1,
            eos: false,
            ..
        })
    ));

    // A newer attempt of the sender appears in the routes: the open connection is dropped.
    routes.set_many(&job, 2, &[(from, sender_at("y:1", 3))]);
    assert_eq!(next(&mut rd).await, None);

    stop.cancel();
    server.await.unwrap();
}

#[tokio::test]
async fn a_task_can_reset_a_connection() {
    let registry = Arc::new(Registry::default());
    let routes = Arc::new(Routes::default());
    let key = TaskKey {
        job: JobId("j".into()),
        pos: TaskPos { stage: 2, index: 0 },
    };
    let from = TaskPos { stage: 1, index: 0 };
    routes.set_many(&key.job, 1, &[(from, sender_at("x:1", 0))]);
    let (mut inbox, _acks, _reg) = registry.register(key, 0, 0, 4).unwrap();
    let (addr, stop, server) = listen(registry, routes).await;
    let (mut rd, _wr) = hello(addr, 0, 0).await;
    let Some(Inbound::Connected { conn, .. }) = inbox.recv().await else {
        panic!("no Connected");
    };
    assert!(matches!(next(&mut rd).await, Some(Frame::Ack { .. })));
    conn.reset();
    assert_eq!(next(&mut rd).await, None);
    stop.cancel();
    server.await.unwrap();
}

/// The hole a hostile probe found: a process holding the cluster secret, even a worker of
/// the same job with a key of its own in the routes, posed as upstream task 1.0 attempt 0
/// while the real link was live and had a batch above the receiver's mark acknowledged.
/// Now only the worker the routes name for that attempt can open its link: every other
/// proof is refused for good, and nothing of it reaches the receiver.
#[tokio::test]
async fn only_the_worker_running_the_sender_attempt_can_speak_for_it() {
    let registry = Arc::new(Registry::default());
    let routes = Arc::new(Routes::default());
    let job = JobId("j".into());
    let neighbour = Identity::from_seed([9; 32]).unwrap();
    let neighbour_at = Endpoint {
        addr: "n:1".into(),
        key: neighbour.public(),
    };
    routes.set_many(
        &job,
        1,
        &[
            (TaskPos { stage: 1, index: 0 }, sender_at("x:1", 0)),
            // Task 1.1 of the same job runs on another worker, whose key is in the routes.
            (
                TaskPos { stage: 1, index: 1 },
                Dest::running(&neighbour_at, 0),
            ),
        ],
    );
    let key = TaskKey {
        job: job.clone(),
        pos: TaskPos { stage: 2, index: 0 },
    };
    let (mut inbox, acks, _reg) = registry.register(key, 0, 0, 4).unwrap();
    let (addr, stop, server) = listen(registry, routes).await;

    // The real link is live.
    let (mut rd, mut wr) = hello(addr, 0, 0).await;
    assert!(matches!(
        inbox.recv().await,
        Some(Inbound::Connected { from: 0, .. })
    ));
    assert!(matches!(
        next(&mut rd).await,
        Some(Frame::Ack { upto: 0, .. })
    ));
    let real = Frame::Batch {
        first_seq: 1,
        emit_ns: 0,
        tuples: vec![Tuple::new("k", "real")],
    };
    wr.send(real.encode()).await.unwrap();
    assert!(matches!(
        inbox.recv().await,
        Some(Inbound::Batch { first_seq: 1, .. })
    ));
    acks.set(0, 1, false);

    // What a holder of the cluster secret can make: an HMAC under a key derived from it,
    // a proof of another worker's key (its own, registered), nothing at all.
    let secret_hmac = |n: &[u8; 16], body: &[u8]| {
        use hmac::Mac;
        let mut m = <hmac::Hmac<sha2::Sha256>>::new_from_slice(b"the-cluster-secret-0123").unwrap();
        m.update(n);
        m.update(body);
        m.finalize().into_bytes().to_vec()
    };
    let forgeries: [(&str, Box<Prover<'_>>); 4] = [
        ("an HMAC under the cluster secret", Box::new(secret_hmac)),
        (
            "another worker's signature",
            Box::new(|n: &[u8; 16], b: &[u8]| neighbour.sign_hello(n, b)),
        ),
        ("no proof", Box::new(|_: &[u8; 16], _: &[u8]| Vec::new())),
        (
            "64 zero bytes",
            Box::new(|_: &[u8; 16], _: &[u8]| vec![0; 64]),
        ),
    ];
    for (what, prove) in forgeries {
        let (mut frd, mut fwr) = hello_as(addr, 0, 0, prove).await;
        match next(&mut frd).await {
            Some(Frame::Reject {
                retry: false,
                reason,
            }) => {
                assert!(reason.contains("authentication failed"), "{what}: {reason}")
            }
            other => panic!("{what}: expected a refusal for good, got {other:?}"),
        }
        // The forged batch at the mark + 1 goes nowhere.
        let forged = Frame::Batch {
            first_seq: 2,
            emit_ns: 0,
            tuples: vec![Tuple::new("k", "forged")],
        };
        let _ = fwr.send(forged.encode()).await;
        assert_eq!(
            next(&mut frd).await,
            None,
            "{what}: the connection is closed"
        );
    }
    // A signature made for one connection's challenge is no good on another.
    let (mut crd, _cwr) = hello_as(addr, 0, 0, |_, body| sender().sign_hello(&[0; 16], body)).await;
    assert!(matches!(
        next(&mut crd).await,
        Some(Frame::Reject { retry: false, .. })
    ));

    // Nothing of theirs reached the receiver; the real link carries on.
    assert!(
        inbox.try_recv().is_err(),
        "a forged connection reached the task"
    );
    assert!(matches!(
        next(&mut rd).await,
        Some(Frame::Ack {
            upto: 1,
            eos: false,
            ..
        })
    ));
    stop.cancel();
    server.await.unwrap();
}

/// Counts the WARN events (a log line each) of the thread it is the default subscriber of.
struct WarnLines(Arc<std::sync::atomic::AtomicUsize>);

impl tracing::Subscriber for WarnLines {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// An unauthenticated flood (connections over the cap, Hellos signed by the wrong key) is
/// refused connection by connection, but logged in a bounded number of lines.
#[tokio::test]
async fn a_flood_of_refusals_logs_a_few_lines() {
    const FLOOD: usize = 300;
    let warns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Current-thread runtime: the listeners' tasks log on this thread.
    let _log = tracing::subscriber::set_default(WarnLines(warns.clone()));
    let registry = Arc::new(Registry::default());
    let routes = Arc::new(Routes::default());
    let job = JobId("j".into());
    routes.set_many(
        &job,
        1,
        &[(TaskPos { stage: 1, index: 0 }, sender_at("x:1", 0))],
    );
    let key = TaskKey {
        job,
        pos: TaskPos { stage: 2, index: 0 },
    };
    let (_inbox, _acks, _reg) = registry.register(key, 0, 0, 4).unwrap();

    // Hellos signed by another worker's key: each refused for good.
    let (addr, stop, server) = listen(registry.clone(), routes.clone()).await;
    let neighbour = Identity::from_seed([9; 32]).unwrap();
    for _ in 0..FLOOD {
        let (mut rd, _wr) = hello_as(addr, 0, 0, |n, b| neighbour.sign_hello(n, b)).await;
        assert!(matches!(
            next(&mut rd).await,
            Some(Frame::Reject { retry: false, .. })
        ));
    }
    stop.cancel();
    server.await.unwrap();

    // Connections over the cap: one holds the only slot, every other is closed at once.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let limits = Limits {
        hello_deadline: Duration::from_secs(30),
        max_conns: 1,
    };
    let server = tokio::spawn(serve(listener, registry, routes, limits, stop.clone()));
    // Its write half stays open: it never says Hello, nor goes away.
    let (held, _held_wr) = TcpStream::connect(addr).await.unwrap().into_split();
    let mut held = FramedRead::new(held, codec());
    assert!(
        matches!(next(&mut held).await, Some(Frame::Challenge(_))),
        "the first connection is served"
    );
    for _ in 0..FLOOD {
        let (s, _wr) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut s = FramedRead::new(s, codec());
        assert_eq!(
            next(&mut s).await,
            None,
            "a connection over the cap is closed"
        );
    }
    stop.cancel();
    server.await.unwrap();

    // Each listener: its first refusal, then one summary when it closes.
    let lines = warns.load(std::sync::atomic::Ordering::Relaxed);
    assert!(lines <= 4, "{lines} warnings for {} refusals", 2 * FLOOD);
}
