//! Unit tests of `listener`.

use super::*;
use crate::model::tuple::Tuple;
use crate::routes::Dest;
use tokio::net::{TcpListener, TcpStream};

type Rd = FramedRead<tokio::net::tcp::OwnedReadHalf, tokio_util::codec::LengthDelimitedCodec>;
type Wr = FramedWrite<tokio::net::tcp::OwnedWriteHalf, tokio_util::codec::LengthDelimitedCodec>;

fn secret() -> DataAuth {
    DataAuth(Some(
        crate::protocol::auth::Secret::new("listener-test-secret")
            .unwrap()
            .data_key(),
    ))
}

async fn hello(addr: std::net::SocketAddr, from_attempt: u32, to_attempt: u32) -> (Rd, Wr) {
    hello_as(addr, from_attempt, to_attempt, &secret()).await
}

async fn hello_as(
    addr: std::net::SocketAddr,
    from_attempt: u32,
    to_attempt: u32,
    auth: &DataAuth,
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
    h.proof = auth.prove(&nonce, &h.signed_body());
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
    routes.set_many(&job, 1, &[(from, Dest::running("x:1", 2))]);
    let key = TaskKey {
        job: job.clone(),
        pos: TaskPos { stage: 2, index: 0 },
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve(
        listener,
        registry.clone(),
        routes.clone(),
        secret(),
        Limits::default(),
        stop.clone(),
    ));

    // Without the secret: refused for good.
    let stranger = DataAuth(Some(
        crate::protocol::auth::Secret::new("not-the-cluster-secret")
            .unwrap()
            .data_key(),
    ));
    let (mut rd, _wr) = hello_as(addr, 2, 5, &stranger).await;
    assert!(matches!(
        next(&mut rd).await,
        Some(Frame::Reject { retry: false, reason }) if reason.contains("authentication")
    ));

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
    assert_eq!(
        next(&mut rd).await,
        Some(Frame::Ack {
            upto: 0,
            eos: false
        })
    );
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
    assert_eq!(
        next(&mut rd).await,
        Some(Frame::Ack {
            upto: 1,
            eos: false
        })
    );

    // A newer attempt of the sender appears in the routes: the open connection is dropped.
    routes.set_many(&job, 2, &[(from, Dest::running("y:1", 3))]);
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
    let (mut inbox, _acks, _reg) = registry.register(key, 0, 0, 4).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve(
        listener,
        registry,
        routes,
        secret(),
        Limits::default(),
        stop.clone(),
    ));
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
