//! Unit tests of `local`.

use super::*;
use crate::inbound::Registry;
use crate::listener::{serve, Limits};
use crate::protocol::frame::{codec, Frame, Hello};
use crate::routes::Routes;
use futures::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

/// A network that only counts the connections asked of it and refuses them.
#[derive(Default)]
struct Elsewhere(AtomicUsize);

impl Network for Elsewhere {
    fn connect<'a>(&'a self, _addr: &'a str) -> BoxFuture<'a, io::Result<Conn>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Err(io::Error::from(io::ErrorKind::ConnectionRefused)) })
    }
}

/// An acceptor with nothing to accept.
struct Nothing;

impl Acceptor for Nothing {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Conn>> {
        Box::pin(futures::future::pending())
    }
}

#[tokio::test]
async fn a_listener_of_this_process_is_reached_in_memory_and_any_other_through_the_network() {
    let hub = Arc::new(LocalHub::default());
    let inner = Arc::new(Elsewhere::default());
    let net = LocalNet::new(hub.clone(), inner.clone());
    let mut acceptor = LocalAcceptor::new(Nothing, &hub, "10.0.0.1:7000");

    let mut dialer = net.connect("10.0.0.1:7000").await.unwrap();
    let mut accepted = acceptor.accept().await.unwrap();
    assert_eq!(
        inner.0.load(Ordering::SeqCst),
        0,
        "no socket for a local peer"
    );
    assert_eq!(accepted.peer, "local");
    let local = |net: &LocalNet| net.shared().map(|c| c.local);
    assert_eq!(local(&net), Some(1), "an open local link is counted");

    // Both ways, more than a pipe holds, so each side waits for the other to read.
    let big = vec![7u8; 3 * PIPE_BYTES];
    let sent = big.clone();
    let writer = tokio::spawn(async move {
        dialer.write.write_all(&sent).await.unwrap();
        dialer.write.shutdown().await.unwrap();
        let mut back = Vec::new();
        dialer.read.read_to_end(&mut back).await.unwrap();
        back
    });
    let mut got = Vec::new();
    accepted.read.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, big);
    accepted.write.write_all(b"ack").await.unwrap();
    drop(accepted);
    assert_eq!(
        writer.await.unwrap(),
        b"ack",
        "the listener's end closed after its answer"
    );
    assert_eq!(local(&net), None, "a closed one is not");

    // Another address is the network's.
    assert!(net.connect("10.0.0.2:7000").await.is_err());
    assert_eq!(inner.0.load(Ordering::SeqCst), 1);

    // A listener that shut down refuses; one that is gone is no longer local.
    acceptor.shutdown().await;
    let refused = net.connect("10.0.0.1:7000").await.err().map(|e| e.kind());
    assert_eq!(refused, Some(io::ErrorKind::ConnectionRefused));
    assert_eq!(inner.0.load(Ordering::SeqCst), 1);
    drop(acceptor);
    assert!(net.connect("10.0.0.1:7000").await.is_err());
    assert_eq!(
        inner.0.load(Ordering::SeqCst),
        2,
        "gone: the network is asked"
    );
}

#[tokio::test]
async fn a_new_listener_at_an_address_is_not_unregistered_by_the_old_one() {
    let hub = Arc::new(LocalHub::default());
    let inner = Arc::new(Elsewhere::default());
    let net = LocalNet::new(hub.clone(), inner.clone());
    let old = LocalAcceptor::new(Nothing, &hub, "a:1");
    let mut new = LocalAcceptor::new(Nothing, &hub, "a:1");
    drop(old);
    let _dialer = net.connect("a:1").await.unwrap();
    assert!(new.accept().await.is_ok());
    assert_eq!(inner.0.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_local_connection_must_prove_the_secret_like_any_other() {
    let hub = Arc::new(LocalHub::default());
    let net = LocalNet::new(hub.clone(), Arc::new(Elsewhere::default()));
    let registry = Arc::new(Registry::default());
    let routes = Arc::new(Routes::default());
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve(
        LocalAcceptor::new(Nothing, &hub, "me:1"),
        registry,
        routes,
        Limits {
            hello_deadline: Duration::from_secs(10),
            max_conns: 4,
        },
        stop.clone(),
    ));

    let c = net.connect("me:1").await.unwrap();
    let mut rd = FramedRead::new(c.read, codec());
    let mut wr = FramedWrite::new(c.write, codec());
    let first = rd.next().await.unwrap().unwrap();
    assert!(
        matches!(Frame::decode(first.freeze()), Ok(Frame::Challenge(_))),
        "the listener speaks first, as on a socket"
    );
    // A Hello signed with nobody's key, for a sender the listener has no route for.
    let hello = Hello {
        job: "j".into(),
        from_stage: 1,
        from_index: 0,
        from_attempt: 0,
        to_stage: 2,
        to_index: 0,
        to_attempt: 0,
        epoch: 0,
        acked: 0,
        eos_acked: false,
        proof: vec![0; 64],
    };
    wr.send(Frame::Hello(hello).encode()).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), rd.next())
        .await
        .unwrap();
    let refused = match answer {
        None | Some(Err(_)) => true,
        Some(Ok(f)) => matches!(Frame::decode(f.freeze()), Ok(Frame::Reject { .. })),
    };
    assert!(refused, "an unproven Hello is refused in memory too");
    stop.cancel();
    server.await.unwrap();
}
