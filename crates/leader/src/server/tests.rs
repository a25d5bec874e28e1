//! Unit tests of `server`: an in-process server on a loopback port, and its connection table.

use super::*;
use axum::body::{Body, Bytes};
use axum::routing::{get, post};
use futures::StreamExt;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GOOD: &str = "Bearer good";

/// Counts a body's bytes, pausing `pause` after each frame (a handler writing each to a slow
/// store, say); 400 if the body breaks.
async fn count(body: Body, pause: Duration) -> (axum::http::StatusCode, String) {
    let mut frames = body.into_data_stream();
    let mut n = 0;
    while let Some(chunk) = frames.next().await {
        match chunk {
            Ok(c) => n += c.len(),
            Err(e) => return (axum::http::StatusCode::BAD_REQUEST, e.to_string()),
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    (axum::http::StatusCode::OK, n.to_string())
}

/// A server of a small app under `limits` whose clients prove themselves with [`GOOD`]:
/// `/hello` answers at once, `/count` counts a body's bytes, `/count-slowly` too at
/// the pace of a slow store, `/forever` streams an answer that never ends, and `/flood` one
/// that never stops sending.
async fn start(limits: ApiLimits) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route("/count", post(|body: Body| count(body, Duration::ZERO)))
        .route(
            "/count-slowly",
            post(|body: Body| count(body, Duration::from_millis(20))),
        )
        .route(
            "/flood",
            get(|| async {
                let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
                Body::from_stream(futures::stream::repeat_with(move || {
                    Ok::<_, std::io::Error>(chunk.clone())
                }))
            }),
        )
        .route(
            "/forever",
            get(|| async {
                Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>())
            }),
        );
    let vouch: Vouch = Arc::new(|h: &HeaderMap| {
        h.get(axum::http::header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes() == GOOD.as_bytes())
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve(
        listener,
        app,
        vouch,
        limits,
        stop.clone(),
        Duration::from_millis(300),
    ));
    (addr, stop, server)
}

/// One request on a fresh connection; the status and body of the answer, read to its end.
async fn request(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut text = String::new();
    let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_string(&mut text));
    read.await.expect("an answer within 20 s").unwrap();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Whether the server closed `s` (end of stream or reset) within `limit`.
async fn closed_within(s: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 256];
    let read = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read).await.is_ok()
}

fn limits(max_conns: usize, header_ms: u64, body_ms: u64) -> ApiLimits {
    ApiLimits {
        max_conns,
        header_timeout: Duration::from_millis(header_ms),
        body_timeout: Duration::from_millis(body_ms),
        unread_timeout: table::UNREAD,
    }
}

#[tokio::test]
async fn a_trickling_body_is_cut_and_a_slowly_read_one_is_not() {
    let (addr, stop, server) = start(limits(64, 10_000, 300)).await;
    // 100 000 bytes announced, one byte every 20 ms: 2000 s at that pace.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let cut = loop {
        tokio::select! {
            _ = tick.tick() => {
                if s.write_all(b"x").await.is_err() {
                    break true;
                }
            }
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => break true,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            },
        }
        if started.elapsed() > Duration::from_secs(20) {
            break false;
        }
    };
    let answer = String::from_utf8_lossy(&answer);
    assert!(cut, "a trickling body was still being read after 20 s");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );

    // 2 MiB sent at once and read at the handler's pace (20 ms a frame): many windows long,
    // and never cut, since the sender keeps up.
    let body = vec![b'y'; 2 << 20];
    let head = format!(
        "POST /count-slowly HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    assert_eq!(
        request(addr, &head, &body).await,
        (200, (2 << 20).to_string())
    );
    stop.cancel();
    server.await.unwrap();
}

#[tokio::test]
async fn a_flood_at_the_cap_evicts_itself_not_the_clients_with_a_credential() {
    let (addr, stop, server) = start(limits(50, 60_000, 30_000)).await;
    // A client with a credential streams an answer that never ends: never closed for room.
    let mut streaming = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("GET /forever HTTP/1.1\r\nHost: x\r\nAuthorization: {GOOD}\r\n\r\n");
    streaming.write_all(head.as_bytes()).await.unwrap();
    let mut buf = [0u8; 12];
    streaming.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");

    // 500 connections that never send a request, far over the cap of 50.
    let mut flood = Vec::new();
    for _ in 0..500 {
        flood.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // A client with a credential is served at once.
    let head = format!(
        "GET /hello HTTP/1.1\r\nHost: x\r\nAuthorization: {GOOD}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(request(addr, &head, b"").await, (200, "hello".into()));
    // The flood made room for itself: all but the newest (at most the cap) are closed, long
    // before their header deadline.
    let mut closing: futures::stream::FuturesUnordered<_> = flood
        .iter_mut()
        .map(|s| closed_within(s, Duration::from_secs(10)))
        .collect();
    let mut closed = 0;
    while closed < 500 - 50 {
        match closing.next().await {
            Some(true) => closed += 1,
            _ => panic!("only {closed} of 500 closed within 10 s"),
        }
    }
    drop(closing);
    assert!(
        !closed_within(&mut streaming, Duration::from_millis(50)).await,
        "the streaming answer was closed to make room"
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stops within its drain bound, streams and all")
        .unwrap();
}

#[tokio::test]
async fn idle_connections_end_at_the_header_deadline() {
    let (addr, stop, server) = start(limits(64, 300, 30_000)).await;
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut slowloris = tokio::net::TcpStream::connect(addr).await.unwrap();
    slowloris
        .write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut kept_alive = tokio::net::TcpStream::connect(addr).await.unwrap();
    kept_alive
        .write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    kept_alive.read_exact(&mut answer).await.unwrap();
    for (what, s) in [
        ("silent", &mut silent),
        ("slowloris", &mut slowloris),
        ("idle keep-alive", &mut kept_alive),
    ] {
        assert!(
            closed_within(s, Duration::from_secs(10)).await,
            "{what} connection still open"
        );
    }
    stop.cancel();
    server.await.unwrap();
}

#[test]
fn at_the_cap_the_oldest_of_the_lowest_rank_gives_way() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let mut t = Table::new(4, table::UNREAD);
    let admit = |t: &mut Table, ms| {
        let (id, close, evicted) = t.admit(at(ms)).expect("room");
        (id, close, evicted.map(|e| (e.rank, e.close)))
    };
    let (a, a_close, _) = admit(&mut t, 0);
    t.begin(a, true, at(4)); // a request with a credential
    let (b, b_close, _) = admit(&mut t, 1);
    t.begin(b, true, at(5));
    t.end(b, at(6)); // an idle keep-alive connection, vouched before
    let (c, c_close, _) = admit(&mut t, 2);
    t.begin(c, false, at(7)); // a request without a credential
    let (_d, d_close, _) = admit(&mut t, 3); // a stranger
    assert_eq!(t.len(), 4);

    // Full: strangers go first, the oldest first (the newest connection included: it has
    // proved nothing yet either).
    let (e, _, ev) = admit(&mut t, 10);
    assert_eq!(ev.as_ref().map(|(r, _)| *r), Some(Rank::Stranger));
    assert!(ev.is_some_and(|(_, close)| {
        close.cancel();
        d_close.is_cancelled()
    }));
    let (f, _, ev) = admit(&mut t, 11);
    assert!(
        ev.is_some_and(|(rank, _)| rank == Rank::Stranger),
        "e gave way"
    );
    let _ = e;
    t.begin(f, true, at(12));
    // Then the request without a credential; then the idle keep-alive connection.
    let (g, _, ev) = admit(&mut t, 13);
    assert_eq!(ev.as_ref().map(|(r, _)| *r), Some(Rank::Unproven));
    assert!(ev.is_some_and(|(_, close)| {
        close.cancel();
        c_close.is_cancelled()
    }));
    t.begin(g, true, at(14));
    let (h, _, ev) = admit(&mut t, 15);
    assert_eq!(ev.as_ref().map(|(r, _)| *r), Some(Rank::Idle));
    assert!(ev.is_some_and(|(_, close)| {
        close.cancel();
        b_close.is_cancelled()
    }));
    t.begin(h, true, at(16));
    // Every connection carries a request with a credential: the new one is refused.
    assert!(t.admit(at(17)).is_none());
    assert_eq!(t.len(), 4);
    // Once its answer is sent, a is an idle keep-alive connection: it gives way.
    t.end(a, at(18));
    let (_, _, ev) = admit(&mut t, 19);
    assert!(ev.is_some_and(|(rank, close)| {
        close.cancel();
        rank == Rank::Idle && a_close.is_cancelled()
    }));
    // A closed connection leaves the table.
    t.remove(h);
    assert_eq!(t.len(), 3);
}

/// Clients let an idle connection go before this server closes it: the server ends an idle
/// keep-alive connection at its header timeout, and a client that kept one longer could send
/// its next request as the server closed it ("error sending request"; a sink restarted after
/// 10 s of back-off failed its first LIST so, found by a full test suite).
#[test]
fn clients_drop_idle_connections_before_the_server_closes_them() {
    let server_idle = ApiLimits::default().header_timeout;
    let client_idle = rainstorm_store::client::IDLE_CONNECTION;
    assert!(
        client_idle * 2 <= server_idle,
        "clients keep idle connections {client_idle:?}, the server closes them at {server_idle:?}"
    );
}

/// A follower that stops reading holds an answer with a credential, which is never cut
/// short otherwise: once it has left what it was handed unread for `UNREAD`, its connection
/// gives way at the cap, after every other rank (hostile probe 13: 39 stalled followers filled
/// a cap of 40, and the workers' heartbeats, refused, had them declared dead). A stream that
/// waits for output to send is not waiting on its client and stays.
#[test]
fn an_answer_its_client_stopped_reading_gives_way_at_the_cap_after_every_other() {
    use super::table::UNREAD;
    let t0 = Instant::now();
    let at = |d: Duration| t0 + d;
    let ms = Duration::from_millis;
    let mut t = Table::new(3, UNREAD);
    let (stalled, stalled_close, _) = t.admit(at(ms(0))).expect("room");
    t.begin(stalled, true, at(ms(1)));
    t.handed(stalled, at(ms(2))); // its client never asks for more
    let (waiting, _, _) = t.admit(at(ms(3))).expect("room");
    t.begin(waiting, true, at(ms(4)));
    t.handed(waiting, at(ms(5)));
    t.taken(waiting); // it took everything: the stream waits for output
    let (reading, _, _) = t.admit(at(ms(6))).expect("room");
    t.begin(reading, true, at(ms(7)));
    t.handed(reading, at(ms(8) + UNREAD - ms(100)));
    // Before UNREAD has passed, nothing may give way.
    assert!(t.admit(at(ms(2) + UNREAD - ms(1))).is_none());
    // Then the one that left its answer unread longest goes; the others stay.
    let (newcomer, _, ev) = t
        .admit(at(ms(2) + UNREAD))
        .expect("the stalled one gives way");
    t.begin(newcomer, true, at(ms(3) + UNREAD));
    let ev = ev.expect("one closed");
    assert_eq!(ev.rank, Rank::Unread);
    ev.close.cancel();
    assert!(stalled_close.is_cancelled());
    // An idle keep-alive connection still goes before a stalled answer.
    t.end(waiting, at(UNREAD * 2));
    t.handed(reading, at(UNREAD * 2));
    let (_, _, ev) = t.admit(at(UNREAD * 4)).expect("room made");
    assert_eq!(ev.map(|e| e.rank), Some(Rank::Idle));
}

/// A request with the credential for `path`.
fn ask(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {GOOD}\r\n\r\n")
}

/// Two clients with the credential: one asks for the endless `/flood` and reads none of it,
/// the other for `/forever`, a stream with nothing to send.
async fn stalled_and_waiting(addr: SocketAddr) -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    stalled.write_all(ask("/flood").as_bytes()).await.unwrap();
    let mut waiting = tokio::net::TcpStream::connect(addr).await.unwrap();
    waiting.write_all(ask("/forever").as_bytes()).await.unwrap();
    (stalled, waiting)
}

/// The same through a real server: a client with the credential that stops reading an
/// endless answer gives way at the cap once it has left it unread for the unread timeout,
/// while a stream waiting for something to send stays.
#[tokio::test]
async fn a_client_that_stopped_reading_gives_way_to_a_new_one_at_the_cap() {
    let limits = ApiLimits {
        unread_timeout: Duration::from_millis(300),
        ..limits(2, 10_000, 30_000)
    };
    let (addr, stop, server) = start(limits).await;
    let (mut stalled, mut waiting) = stalled_and_waiting(addr).await;
    // A new client gets in once the flood's reader has left it unread long enough; until
    // then the cap refuses it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut text = String::new();
        let answered = async {
            let hello = ask("/hello").replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
            s.write_all(hello.as_bytes()).await?;
            s.read_to_string(&mut text).await
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), answered).await;
        if text.contains("hello") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never let in: {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        closed_within(&mut stalled, Duration::from_secs(10)).await,
        "the stalled reader's connection is still open"
    );
    assert!(
        !closed_within(&mut waiting, Duration::from_millis(200)).await,
        "the stream waiting for output was closed"
    );
    stop.cancel();
    server.await.unwrap();
}

/// Below the cap too, an answer its client leaves unread for `ABANDONED` times the unread
/// timeout is closed, freeing its buffers; one that waits for something to send stays.
#[tokio::test]
async fn an_answer_left_unread_for_long_is_closed_below_the_cap() {
    let limits = ApiLimits {
        unread_timeout: Duration::from_millis(50),
        ..limits(64, 10_000, 30_000)
    };
    let (addr, stop, server) = start(limits).await;
    let (mut stalled, mut waiting) = stalled_and_waiting(addr).await;
    // The client stalls (what is under test, not a wait for the server: the server's
    // close can only be seen by reading), well past the 500 ms it may leave an answer unread.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        closed_within(&mut stalled, Duration::from_secs(10)).await,
        "the answer left unread is still streaming"
    );
    assert!(
        !closed_within(&mut waiting, Duration::from_millis(200)).await,
        "the stream waiting for output was closed"
    );
    stop.cancel();
    server.await.unwrap();
}
