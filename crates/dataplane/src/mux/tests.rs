//! Tests of `mux` against the real listener and real links on loopback: many links over one
//! TCP connection, a stalled link beside a flowing one, a peer that dies, hostile streams and
//! sessions, a silent peer, and both kinds of connection on one port.

use super::*;
use super::{session, socket};
use crate::inbound::{AckBoard, Inbound, Registration, Registry};
use crate::link::{run_link, LinkEnd, LinkMsg, LinkSlots, LinkSpec, OutBatch};
use crate::listener::{serve, Limits};
use crate::model::ids::{JobId, TaskKey, TaskPos};
use crate::model::tuple::Tuple;
use crate::protocol::auth::Identity;
use crate::protocol::control::Endpoint;
use crate::protocol::frame::{codec, Frame, Hello};
use crate::routes::{Dest, Routes};
use crate::transport::{Conn, Network, Tcp};
use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

/// The worker every sender of these tests runs on.
fn sender() -> Identity {
    Identity::from_seed([7; 32]).unwrap()
}

fn job() -> JobId {
    JobId("j".into())
}

/// Sessions that notice idleness and silence within a test's patience.
fn quick() -> MuxConfig {
    MuxConfig {
        idle: Duration::from_millis(300),
        peer_idle: Duration::from_millis(300),
        silence: Duration::from_millis(300),
        ..MuxConfig::default()
    }
}

/// A data listener on loopback, taking links' connections and sessions.
struct Listener {
    addr: SocketAddr,
    registry: Arc<Registry>,
    routes: Arc<Routes>,
    stop: CancellationToken,
    server: JoinHandle<()>,
}

impl Listener {
    async fn start(cfg: MuxConfig, limits: Limits) -> Listener {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Listener::on(tcp, cfg, limits, Arc::default()).await
    }

    async fn on(tcp: TcpListener, cfg: MuxConfig, limits: Limits, routes: Arc<Routes>) -> Listener {
        let addr = tcp.local_addr().unwrap();
        let registry = Arc::new(Registry::default());
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(
            MuxAcceptor::new(tcp, cfg),
            registry.clone(),
            routes.clone(),
            limits,
            stop.clone(),
        ));
        let l = Listener {
            addr,
            registry,
            routes,
            stop,
            server,
        };
        l.route(1, None);
        l
    }

    /// Routes (table `version`) senders 1.0 to 1.63 and receivers 2.0 to 2.63, all here, at
    /// attempt 0 but for `restarted` (receiver index, attempt).
    fn route(&self, version: u64, restarted: Option<(u32, u32)>) {
        let at = Endpoint {
            addr: self.addr.to_string(),
            key: sender().public(),
        };
        let mut table: Vec<_> = (0..64)
            .map(|i| (TaskPos { stage: 1, index: i }, Dest::running(&at, 0)))
            .collect();
        table.extend((0..64).map(|i| {
            let attempt = restarted.filter(|r| r.0 == i).map_or(0, |r| r.1);
            (TaskPos { stage: 2, index: i }, Dest::running(&at, attempt))
        }));
        self.routes.set_many(&job(), version, &table);
    }

    /// Registers attempt 0 of receiver 2.`index` with an inbox of `capacity` batches.
    fn receiver(
        &self,
        index: u32,
        capacity: usize,
    ) -> (mpsc::Receiver<Inbound>, Arc<AckBoard>, Registration) {
        self.receiver_at(index, 0, capacity)
    }

    /// Registers attempt `attempt` of receiver 2.`index`.
    fn receiver_at(
        &self,
        index: u32,
        attempt: u32,
        capacity: usize,
    ) -> (mpsc::Receiver<Inbound>, Arc<AckBoard>, Registration) {
        let key = TaskKey {
            job: job(),
            pos: TaskPos { stage: 2, index },
        };
        self.registry.register(key, attempt, 0, capacity).unwrap()
    }

    async fn stop(self) {
        self.stop.cancel();
        within("the listener to stop", self.server).await.unwrap();
    }
}

/// Plays a receiving task: acks every batch, and returns how many fresh tuples each sender
/// delivered once `links` ends of stream came.
async fn drain(
    mut inbox: mpsc::Receiver<Inbound>,
    acks: Arc<AckBoard>,
    links: usize,
) -> HashMap<u32, u64> {
    let mut held: HashMap<u32, u64> = HashMap::new();
    let mut ended = 0;
    while let Some(m) = inbox.recv().await {
        match m {
            Inbound::Batch {
                from,
                first_seq,
                tuples,
                ..
            } => {
                let last = first_seq + tuples.len() as u64 - 1;
                let hwm = held.entry(from).or_default();
                *hwm = (*hwm).max(last);
                acks.set(from, *hwm, false);
            }
            Inbound::Eos { from, last_seq, .. } => {
                acks.set(from, last_seq, true);
                ended += 1;
                if ended == links {
                    break;
                }
            }
            Inbound::Connected { .. } => {}
        }
    }
    held
}

/// A link from sender 1.`from` to receiver 2.`to` through `net`.
fn link(
    l: &Listener,
    net: Arc<dyn Network>,
    (from, to): (u32, u32),
    window: usize,
) -> (
    mpsc::Sender<LinkMsg>,
    JoinHandle<LinkEnd>,
    CancellationToken,
) {
    let spec = LinkSpec {
        job: job(),
        from: TaskPos {
            stage: 1,
            index: from,
        },
        attempt: 0,
        epoch: 0,
        to: TaskPos {
            stage: 2,
            index: to,
        },
        resend: true,
        linger: false,
        done: None,
        net,
        identity: sender(),
        slots: LinkSlots::new(4096),
        board: None,
        settled: None,
        meter: None,
    };
    let cfg = crate::DataConfig {
        window_bytes: window,
        ..crate::DataConfig::default()
    };
    let (tx, rx) = mpsc::channel(4);
    let cancel = CancellationToken::new();
    let routes = l.routes.watch(&job());
    let task = tokio::spawn(run_link(spec, cfg, rx, routes, cancel.clone()));
    (tx, task, cancel)
}

/// A batch of `n` tuples of `bytes` bytes each.
fn batch(n: usize, bytes: usize) -> LinkMsg {
    let value = "x".repeat(bytes);
    let tuples: Vec<Tuple> = (0..n).map(|_| Tuple::new("k", value.as_str())).collect();
    LinkMsg::Batch(OutBatch::of(&tuples, 0))
}

/// `f`'s result, within 30 s (a test fails, it does not hang).
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(30), f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not within 30 s"),
    }
}

/// Hands a link `m`, within 30 s.
async fn feed(tx: &mpsc::Sender<LinkMsg>, m: LinkMsg) {
    within("a link taking its input", tx.send(m)).await.unwrap();
}

/// How a link ended, within 30 s.
async fn ended(task: JoinHandle<LinkEnd>) -> LinkEnd {
    let end = tokio::time::timeout(Duration::from_secs(30), task).await;
    end.expect("a link did not end within 30 s").unwrap()
}

/// What a receiver held at its end, within 30 s.
async fn held(task: JoinHandle<HashMap<u32, u64>>) -> HashMap<u32, u64> {
    let end = tokio::time::timeout(Duration::from_secs(30), task).await;
    end.expect("a receiver did not get every end of stream within 30 s")
        .unwrap()
}

/// Waits for `cond`, polling, for at most `limit`.
async fn until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads one frame from a raw stream or connection, within 10 s.
async fn frame(
    rd: &mut FramedRead<crate::transport::ConnRead, tokio_util::codec::LengthDelimitedCodec>,
) -> Option<Frame> {
    let f = tokio::time::timeout(Duration::from_secs(10), rd.next())
        .await
        .ok()??;
    Frame::decode(f.ok()?.freeze()).ok()
}

/// 8 senders × 8 receivers on one process pair: 64 links, one TCP connection, every tuple
/// delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_links_between_two_processes_share_one_tcp_connection() {
    let l = Listener::start(MuxConfig::default(), Limits::default()).await;
    let net = Arc::new(MuxNet::new(MuxConfig::default()));
    let mut receivers = Vec::new();
    let mut registrations = Vec::new();
    for to in 0..8 {
        let (inbox, acks, reg) = l.receiver(to, 8);
        registrations.push(reg);
        receivers.push(tokio::spawn(drain(inbox, acks, 8)));
    }
    let mut links = Vec::new();
    for from in 0..8 {
        for to in 0..8 {
            links.push(link(&l, net.clone(), (from, to), 1 << 20));
        }
    }
    for (tx, _, _) in &links {
        for _ in 0..5 {
            feed(tx, batch(100, 20)).await;
        }
    }
    until("every link's stream", Duration::from_secs(20), || {
        net.streams() == 64
    })
    .await;
    assert_eq!(net.sessions(), 1, "64 links opened more than one session");
    for (tx, _, _) in &links {
        feed(tx, LinkMsg::End).await;
    }
    for (_, task, _) in links {
        assert_eq!(ended(task).await, LinkEnd::Done);
    }
    for r in receivers {
        let held = held(r).await;
        assert_eq!(held.len(), 8);
        assert!(held.values().all(|n| *n == 500), "lost tuples: {held:?}");
    }
    // The links ended: their streams close, then the idle session (3 s) with them.
    until("the streams to close", Duration::from_secs(10), || {
        net.streams() == 0
    })
    .await;
    drop(registrations);
    within("the sessions to end", net.shutdown()).await;
    l.stop().await;
}

/// No head-of-line blocking: the receiver of one link stops taking input (its inbox is
/// full, so the listener stops reading that stream), and another link on the same TCP
/// connection still delivers 16 MiB and ends, while the first stays stuck. Then the stuck
/// receiver restarts on the same process: the link's write, blocked on its stream's window,
/// gives up, and the link follows on a new stream of the same connection and delivers
/// everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_link_does_not_hold_up_another_on_the_same_connection() {
    let l = Listener::start(MuxConfig::default(), Limits::default()).await;
    let net = Arc::new(MuxNet::new(MuxConfig::default()));
    // Receiver 2.0 never reads its inbox of one batch.
    let (stuck_inbox, stuck_acks, r0) = l.receiver(0, 1);
    let (inbox, acks, _r1) = l.receiver(1, 8);
    let flowing = tokio::spawn(drain(inbox, acks, 1));
    let (stuck_tx, stuck, _) = link(&l, net.clone(), (0, 0), 8 << 20);
    let (flow_tx, flow, _) = link(&l, net.clone(), (1, 1), 2 << 20);
    // 4 MiB towards the stuck receiver: far more than its inbox, its stream's window and
    // the socket buffers hold.
    let feeder = tokio::spawn(async move {
        for _ in 0..64 {
            if stuck_tx.send(batch(64, 1000)).await.is_err() {
                break;
            }
        }
        stuck_tx
    });
    until(
        "the stalled receiver's inbox to fill",
        Duration::from_secs(10),
        || stuck_inbox.len() == 1,
    )
    .await;
    for _ in 0..256 {
        feed(&flow_tx, batch(64, 1000)).await;
    }
    feed(&flow_tx, LinkMsg::End).await;
    let flowed = tokio::time::timeout(Duration::from_secs(30), flow).await;
    assert_eq!(
        flowed
            .expect("the flowing link was held up by the stalled one")
            .unwrap(),
        LinkEnd::Done
    );
    let flowed = held(flowing).await;
    assert_eq!(flowed.get(&1), Some(&(256 * 64)));
    assert_eq!(
        net.sessions(),
        1,
        "the two links did not share a connection"
    );
    assert!(
        !stuck.is_finished() && !feeder.is_finished(),
        "the stalled link was not stalled"
    );
    // Attempt 1 of the receiver starts on the same process; the stalled attempt is still
    // there (its inbox full, its stream unread: no reset comes), like a host cut off.
    let (inbox, acks, _r0) = l.receiver_at(0, 1, 8);
    let restarted = tokio::spawn(drain(inbox, acks, 1));
    l.route(2, Some((0, 1)));
    let stuck_tx = within("the feeder to finish", feeder).await.unwrap();
    feed(&stuck_tx, LinkMsg::End).await;
    assert_eq!(ended(stuck).await, LinkEnd::Done);
    assert_eq!(held(restarted).await.get(&0), Some(&(64 * 64)));
    assert_eq!(
        net.sessions(),
        1,
        "the restarted receiver got a new connection"
    );
    drop((stuck_inbox, stuck_acks, r0));
    within("the sessions to end", net.shutdown()).await;
    l.stop().await;
}

/// Opens a raw stream through `net` and reads the listener's challenge on it.
async fn challenged(
    net: &MuxNet,
    addr: SocketAddr,
) -> (
    FramedRead<crate::transport::ConnRead, tokio_util::codec::LengthDelimitedCodec>,
    FramedWrite<crate::transport::ConnWrite, tokio_util::codec::LengthDelimitedCodec>,
) {
    let conn = within("a stream", net.connect(&addr.to_string())).await;
    let Conn { read, write, .. } = conn.unwrap();
    let mut rd = FramedRead::new(read, codec());
    let wr = FramedWrite::new(write, codec());
    assert!(matches!(frame(&mut rd).await, Some(Frame::Challenge(_))));
    (rd, wr)
}

/// A peer process that dies takes every stream of its connection with it; the next connect
/// dials a new connection, to the process that listens there now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_dies_ends_every_stream_and_the_next_connect_dials_anew() {
    let l = Listener::start(MuxConfig::default(), Limits::default()).await;
    let addr = l.addr;
    let net = MuxNet::new(MuxConfig::default());
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(challenged(&net, addr).await);
    }
    assert_eq!(net.sessions(), 1);
    // The peer goes away: its listener and every session with it.
    l.stop().await;
    for (rd, _) in &mut streams {
        let end = tokio::time::timeout(Duration::from_secs(10), rd.next()).await;
        assert!(
            matches!(end, Ok(None) | Ok(Some(Err(_)))),
            "a stream outlived its connection"
        );
    }
    until(
        "the broken session to leave the pool",
        Duration::from_secs(10),
        || net.sessions() == 0,
    )
    .await;
    // A new process on the same port.
    let tcp = {
        let t0 = Instant::now();
        loop {
            match TcpListener::bind(addr).await {
                Ok(t) => break t,
                Err(e) => {
                    assert!(
                        t0.elapsed() < Duration::from_secs(10),
                        "rebinding {addr}: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    };
    let l = Listener::on(tcp, MuxConfig::default(), Limits::default(), Arc::default()).await;
    let _fresh = challenged(&net, addr).await;
    assert_eq!(net.sessions(), 1);
    within("the sessions to end", net.shutdown()).await;
    l.stop().await;
}

/// A Hello with the right names and a proof by a key no worker of the cluster holds.
fn forged_hello() -> Hello {
    let mut h = Hello {
        job: "j".into(),
        from_stage: 1,
        from_index: 1,
        from_attempt: 0,
        to_stage: 2,
        to_index: 0,
        to_attempt: 0,
        epoch: 0,
        acked: 0,
        eos_acked: false,
        proof: Vec::new(),
    };
    h.proof = Identity::from_seed([9; 32])
        .unwrap()
        .sign_hello(&[0; 16], &h.signed_body());
    h
}

/// A peer without the cluster secret cannot hold a session open by opening stream after
/// stream that the listener refuses (each one keeps it from being idle): a session none of
/// whose streams was admitted is closed at the Hello deadline, and the peer has to dial again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_streams_are_all_refused_is_closed_at_the_hello_deadline() {
    let limits = Limits {
        hello_deadline: Duration::from_millis(300),
        ..Limits::default()
    };
    let l = Listener::start(quick(), limits).await;
    let net = MuxNet::new(MuxConfig::default());
    // The client names each stream's session in its peer: "addr (session N, stream M)".
    let mut sessions = std::collections::BTreeSet::new();
    let t0 = Instant::now();
    while sessions.len() < 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "one session served refused streams for 10 s: {sessions:?}"
        );
        let Ok(conn) = within("a stream", net.connect(&l.addr.to_string())).await else {
            continue; // the session ended while the stream opened
        };
        let session = conn.peer.split(", stream").next().unwrap_or_default();
        sessions.insert(session.to_string());
        let Conn { read, write, .. } = conn;
        let mut rd = FramedRead::new(read, codec());
        let mut wr = FramedWrite::new(write, codec());
        if let Some(Frame::Challenge(_)) = frame(&mut rd).await {
            if wr.send(Frame::Hello(forged_hello()).encode()).await.is_ok() {
                // Refused, or the session ended under it.
                let _ = frame(&mut rd).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    within("the sessions to end", net.shutdown()).await;
    l.stop().await;
}

/// The listener judges every stream as it judges a link's connection: a stream whose Hello
/// is not signed by the sender's worker is refused for good, and one that never says Hello
/// is closed at the deadline; the session and a real link on it carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_without_a_valid_hello_is_closed_and_its_session_serves_on() {
    let limits = Limits {
        hello_deadline: Duration::from_millis(300),
        ..Limits::default()
    };
    let l = Listener::start(MuxConfig::default(), limits).await;
    let net = Arc::new(MuxNet::new(MuxConfig::default()));
    let (inbox, acks, _reg) = l.receiver(0, 8);
    let drained = tokio::spawn(drain(inbox, acks, 1));
    let (tx, real, _) = link(&l, net.clone(), (0, 0), 1 << 20);
    feed(&tx, batch(10, 10)).await;
    until("the real link's stream", Duration::from_secs(10), || {
        net.streams() == 1
    })
    .await;
    // A forged Hello: the right names, a proof by another key.
    let (mut rd, mut wr) = challenged(&net, l.addr).await;
    wr.send(Frame::Hello(forged_hello()).encode())
        .await
        .unwrap();
    assert!(matches!(
        frame(&mut rd).await,
        Some(Frame::Reject { retry: false, .. })
    ));
    assert!(
        frame(&mut rd).await.is_none(),
        "a refused stream stayed open"
    );
    // Silence: closed at the 300 ms deadline.
    let (mut rd, _wr) = challenged(&net, l.addr).await;
    let t0 = Instant::now();
    assert!(frame(&mut rd).await.is_none());
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "the Hello deadline was not applied"
    );
    // The real link, on the same session, delivers and ends.
    feed(&tx, batch(10, 10)).await;
    feed(&tx, LinkMsg::End).await;
    assert_eq!(ended(real).await, LinkEnd::Done);
    assert_eq!(held(drained).await.get(&0), Some(&20));
    assert_eq!(net.sessions(), 1);
    within("the sessions to end", net.shutdown()).await;
    l.stop().await;
}

/// Sends the session preface on a raw TCP connection and reads the listener's challenge.
async fn raw_session(addr: SocketAddr) -> TcpStream {
    within("a raw session", raw_session_now(addr)).await
}

async fn raw_session_now(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&PREFACE).await.unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.unwrap();
    assert!(matches!(
        Frame::decode(body.into()),
        Ok(Frame::Challenge(_))
    ));
    s
}

/// Whether the peer closes `s` within 10 s (whatever it sent before).
async fn closed(s: &mut TcpStream) -> bool {
    let mut sink = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut sink)).await;
    matches!(read, Ok(Ok(_)) | Ok(Err(_)))
}

/// What an unauthenticated peer can hold is bounded: a session that opens no stream is
/// closed after `peer_idle`, TCP connections past `max_tcp` are closed at once, and a peer
/// that opens more streams than `max_streams` loses its session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_peer_holds_bounded_sessions_and_streams() {
    let server = MuxConfig {
        max_tcp: 2,
        max_streams: 4,
        ..quick()
    };
    let l = Listener::start(server, Limits::default()).await;
    // A session that never opens a stream.
    let mut idle = raw_session(l.addr).await;
    let t0 = Instant::now();
    assert!(closed(&mut idle).await, "an idle session was kept");
    assert!(t0.elapsed() < Duration::from_secs(5));
    // Two connections held: a third is closed without a challenge.
    let _a = raw_session(l.addr).await;
    let _b = raw_session(l.addr).await;
    let mut third = TcpStream::connect(l.addr).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), third.read_to_end(&mut got)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a connection past the cap was served: {got:?}"
    );
    drop((_a, _b));
    // Those ended: their places serve a new connection.
    let t0 = Instant::now();
    loop {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the places freed by closed connections never served again"
        );
        let attempt = TcpStream::connect(l.addr).await.unwrap();
        let mut rd = FramedRead::new(attempt, codec());
        let first = tokio::time::timeout(Duration::from_secs(10), rd.next()).await;
        if let Ok(Some(Ok(f))) = first {
            assert!(matches!(Frame::decode(f.freeze()), Ok(Frame::Challenge(_))));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    l.stop().await;
    // A client that opens more streams than the listener's session allows: the session
    // ends, and every stream on it. (A listener whose idle sessions last: a session is not
    // closed for idleness while its first stream is on its way.)
    let server = MuxConfig {
        max_streams: 4,
        ..MuxConfig::default()
    };
    let l = Listener::start(server, Limits::default()).await;
    let greedy = MuxNet::new(MuxConfig {
        streams_per_session: 64,
        ..MuxConfig::default()
    });
    // One stream past the cap: a further connect could find the session already ended and
    // dial a new one, which would then (rightly) live on.
    let mut streams = Vec::new();
    for _ in 0..5 {
        match within("a stream", greedy.connect(&l.addr.to_string())).await {
            Ok(c) => streams.push(c),
            Err(_) => break,
        }
    }
    assert!(streams.len() >= 5, "only {} streams opened", streams.len());
    until("the greedy session to end", Duration::from_secs(10), || {
        greedy.sessions() == 0
    })
    .await;
    for c in &mut streams {
        let mut buf = Vec::new();
        // Whatever the stream got (a challenge), it ends.
        let end = tokio::time::timeout(Duration::from_secs(10), c.read.read_to_end(&mut buf)).await;
        assert!(end.is_ok(), "a stream outlived its session");
    }
    within("the sessions to end", greedy.shutdown()).await;
    l.stop().await;
}

/// A peer that stops answering (a partition: no reset ever comes) while a new link waits for
/// its challenge: the session is closed after `silence`, its streams end, and the next
/// connect dials a new TCP connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_session_is_closed_and_the_next_connect_dials_anew() {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    // A "listener" that sends a challenge, takes the preface, then says nothing ever.
    let (accepted_tx, mut accepted) = mpsc::unbounded_channel();
    let mute = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = tcp.accept().await {
            let challenge = Frame::Challenge([1; 16]).encode();
            s.write_all(&(challenge.len() as u32).to_be_bytes())
                .await
                .unwrap();
            s.write_all(&challenge).await.unwrap();
            held.push(s);
            if accepted_tx.send(()).is_err() {
                break;
            }
        }
    });
    let net = MuxNet::new(quick());
    let conn = within("a stream", net.connect(&addr.to_string())).await;
    let Conn { read, .. } = conn.unwrap();
    within("a connection", accepted.recv()).await.unwrap();
    let mut rd = FramedRead::new(read, codec());
    let t0 = Instant::now();
    assert!(
        frame(&mut rd).await.is_none(),
        "a stream on a silent session stayed open"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "the silence was not noticed"
    );
    until(
        "the silent session to leave the pool",
        Duration::from_secs(5),
        || net.sessions() == 0,
    )
    .await;
    let again = within("a stream", net.connect(&addr.to_string())).await;
    assert!(again.is_ok());
    within("a new connection", accepted.recv()).await.unwrap();
    within("the sessions to end", net.shutdown()).await;
    mute.abort();
}

/// One port, both kinds: a link of a process that connects per link (`RAINSTORM_DATA_MUX=0`)
/// and a link of one that multiplexes both reach a multiplexing listener's tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_connections_and_sessions_share_one_port() {
    let l = Listener::start(MuxConfig::default(), Limits::default()).await;
    let (inbox, acks, _reg) = l.receiver(0, 8);
    let drained = tokio::spawn(drain(inbox, acks, 2));
    let mux = Arc::new(MuxNet::new(MuxConfig::default()));
    let (tx_plain, plain, _) = link(&l, Arc::new(Tcp), (0, 0), 1 << 20);
    let (tx_mux, muxed, _) = link(&l, mux.clone(), (1, 0), 1 << 20);
    for tx in [&tx_plain, &tx_mux] {
        feed(tx, batch(7, 10)).await;
        feed(tx, LinkMsg::End).await;
    }
    assert_eq!(ended(plain).await, LinkEnd::Done);
    assert_eq!(ended(muxed).await, LinkEnd::Done);
    let held = held(drained).await;
    assert_eq!((held.get(&0), held.get(&1)), (Some(&7), Some(&7)));
    within("the sessions to end", mux.shutdown()).await;
    l.stop().await;
}

/// The socket under a session holds small writes for the next one and writes everything, in
/// order, by the next flush at the latest.
#[tokio::test]
async fn small_writes_are_joined_to_the_next_and_nothing_is_lost_or_reordered() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let mut w = socket::Heard::new(client.unwrap(), session::Shared::new());
    let mut r = server.unwrap().0;
    let mut want = Vec::new();
    // Headers, small frames, bodies larger than the socket takes at once, and a flush.
    let pieces: Vec<Vec<u8>> = (0..200u32)
        .map(|i| {
            let len = match i % 4 {
                0 => 12,
                1 => 40,
                2 => 70_000 + i as usize,
                _ => socket::SMALL + 1,
            };
            (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
        })
        .collect();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        got
    });
    for p in &pieces {
        w.write_all(p).await.unwrap();
        want.extend_from_slice(p);
    }
    w.write_all(b"tail").await.unwrap();
    want.extend_from_slice(b"tail");
    w.shutdown().await.unwrap();
    let got = within("the reader", reader).await.unwrap();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "bytes reordered or changed");
}
