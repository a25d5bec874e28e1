//! The connecting side: one pool of sessions per process, by peer address. A link's connect
//! takes a place on a session to that address with room (at most
//! [`MuxConfig::streams_per_session`] streams), or dials one — once, however many links ask
//! at the same moment — and opens a stream on it. A session that broke is dropped from the
//! pool as soon as its driver ends, so the next connect dials a fresh one. Every driver
//! belongs to the pool's tracker and ends at [`Network::shutdown`].

use super::session::{Awaiting, Open, Place, Shared};
use super::{MuxConfig, PREFACE};
use crate::protocol::frame::{Frame, MAX_HELLO};
use crate::transport::{Conn, Network};
use futures::future::{BoxFuture, FutureExt, Shared as SharedFuture};
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, Instrument};

/// Requests for streams queued to one session's driver.
const OPEN_QUEUE: usize = 64;

/// How many times one connect tries again after the session it chose ended under it.
const TRIES: usize = 3;

/// The network of a process whose links share a TCP connection per peer.
pub struct MuxNet {
    pool: Arc<Pool>,
}

/// What the network keeps.
struct Pool {
    cfg: MuxConfig,
    peers: Mutex<HashMap<String, Peer>>,
    drivers: TaskTracker,
    stop: CancellationToken,
    next_id: AtomicU64,
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Dropped without a shutdown (a test, a failed start): its drivers end now anyway.
        self.stop.cancel();
    }
}

/// The sessions to one address.
#[derive(Default)]
struct Peer {
    sessions: Vec<Session>,
    /// A session being dialled, awaited by every link that found no room meanwhile.
    dialing: Option<Dialing>,
}

/// A dial in progress, shared by whoever waits for it.
type Dialing = SharedFuture<BoxFuture<'static, Result<Session, Arc<io::Error>>>>;

/// One session, as the pool sees it.
#[derive(Clone)]
struct Session {
    id: u64,
    opens: mpsc::Sender<Open>,
    shared: Arc<Shared>,
}

impl Session {
    /// A new stream, from the session's driver.
    async fn open(&self) -> io::Result<yamux::Stream> {
        let gone = || io::Error::new(io::ErrorKind::ConnectionAborted, "the session ended");
        let (tx, rx) = oneshot::channel();
        self.opens.send(tx).await.map_err(|_| gone())?;
        match rx.await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(io::Error::other(format!("no stream on the session: {e}"))),
            Err(_) => Err(gone()),
        }
    }
}

impl MuxNet {
    /// A network with sessions shaped by `cfg`.
    pub fn new(cfg: MuxConfig) -> MuxNet {
        MuxNet {
            pool: Arc::new(Pool {
                cfg,
                peers: Mutex::default(),
                drivers: TaskTracker::new(),
                stop: CancellationToken::new(),
                next_id: AtomicU64::new(1),
            }),
        }
    }

    fn peers(&self) -> MutexGuard<'_, HashMap<String, Peer>> {
        self.pool.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sessions (TCP connections) this process holds to its peers now.
    pub fn sessions(&self) -> usize {
        let peers = self.peers();
        let open = peers.values().flat_map(|p| &p.sessions);
        open.filter(|s| !s.shared.is_closed()).count()
    }

    /// Streams (links' connections) open on them now.
    pub fn streams(&self) -> usize {
        let peers = self.peers();
        let open = peers.values().flat_map(|p| &p.sessions);
        open.map(|s| s.shared.open_streams()).sum()
    }

    /// A place on a session to `addr` with room, dialling one if there is none.
    async fn place(&self, addr: &str) -> io::Result<(Session, Place)> {
        let cap = self.pool.cfg.streams_per_session;
        let mut dials = 0;
        loop {
            let dialing = {
                let mut peers = self.peers();
                peers.retain(|_, p| {
                    p.sessions.retain(|s| !s.shared.is_closed());
                    !p.sessions.is_empty() || p.dialing.is_some()
                });
                let peer = peers.entry(addr.to_string()).or_default();
                for s in &peer.sessions {
                    if let Some(place) = s.shared.reserve(cap) {
                        return Ok((s.clone(), place));
                    }
                }
                if dials == TRIES {
                    return Err(io::Error::other(format!(
                        "{TRIES} sessions to {addr} ended as soon as they were opened"
                    )));
                }
                // The dial holds what it needs, not the pool (which holds the dial).
                let to = addr.to_string();
                let cfg = self.pool.cfg.clone();
                let drivers = self.pool.drivers.clone();
                let stop = self.pool.stop.clone();
                let id = self.pool.next_id.fetch_add(1, Ordering::Relaxed);
                let dial = move || dial(to, cfg, drivers, stop, id).boxed().shared();
                peer.dialing.get_or_insert_with(dial).clone()
            };
            dials += 1;
            let dialed = dialing.clone().await;
            {
                let mut peers = self.peers();
                let peer = peers.entry(addr.to_string()).or_default();
                if peer.dialing.as_ref().is_some_and(|d| d.ptr_eq(&dialing)) {
                    peer.dialing = None;
                    if let Ok(s) = &dialed {
                        peer.sessions.push(s.clone());
                    }
                }
            }
            if let Err(e) = dialed {
                return Err(io::Error::new(e.kind(), e.to_string()));
            }
        }
    }
}

/// Opens a session to `addr` and starts its driver.
async fn dial(
    addr: String,
    cfg: MuxConfig,
    drivers: TaskTracker,
    stop: CancellationToken,
    id: u64,
) -> Result<Session, Arc<io::Error>> {
    let tcp = match tokio::time::timeout(cfg.handshake, handshake(&addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(Arc::new(e)),
        Err(_) => {
            let e = io::Error::new(io::ErrorKind::TimedOut, "opening a session timed out");
            return Err(Arc::new(e));
        }
    };
    let shared = Shared::new();
    let conn = super::socket::connection(tcp, shared.clone(), &cfg, yamux::Mode::Client);
    let (opens, rx) = mpsc::channel(OPEN_QUEUE);
    let driver = super::drive::drive_client(conn, rx, shared.clone(), cfg, stop.child_token());
    let span = tracing::debug_span!("data_session", peer = %addr, id);
    drivers.spawn(driver.instrument(span));
    debug!(peer = %addr, id, "data session opened");
    Ok(Session { id, opens, shared })
}

/// Connects to a data listener and turns the connection into a session: the preface, then
/// the listener's first frame (a link's challenge, of no use to a session) read exactly, so
/// that what follows is the session's.
async fn handshake(addr: &str) -> io::Result<TcpStream> {
    let not_a_listener = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{addr} is not a data listener: {what}"),
        )
    };
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(&PREFACE).await?;
    let mut len = [0u8; 4];
    if let Err(e) = tcp.read_exact(&mut len).await {
        return Err(match e.kind() {
            io::ErrorKind::UnexpectedEof => io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!(
                    "{addr} closed the connection without a challenge (at its connection cap?)"
                ),
            ),
            _ => e,
        });
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_HELLO {
        return Err(not_a_listener("its first frame is too long"));
    }
    let mut body = vec![0u8; len];
    tcp.read_exact(&mut body).await?;
    match Frame::decode(body.into()) {
        Ok(Frame::Challenge(_)) => Ok(tcp),
        _ => Err(not_a_listener("its first frame is not a challenge")),
    }
}

impl Network for MuxNet {
    fn shared(&self) -> Option<crate::protocol::api::DataConns> {
        Some(crate::protocol::api::DataConns {
            sessions: self.sessions() as u64,
            streams: self.streams() as u64,
            local: 0,
        })
    }

    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<Conn>> {
        Box::pin(async move {
            let mut last = None;
            for _ in 0..TRIES {
                let (session, place) = self.place(addr).await?;
                let mut stream = match session.open().await {
                    Ok(s) => s,
                    Err(e) => {
                        debug!(peer = %addr, session = session.id, error = %e, "no stream on a session; trying again");
                        last = Some(e);
                        continue;
                    }
                };
                // From here the peer owes this stream an answer (its listener's challenge).
                let awaiting = Awaiting::new(&session.shared);
                // yamux announces a stream with its first frame, and a link writes nothing
                // before the listener's challenge: an empty frame announces it now.
                futures::AsyncWriteExt::write(&mut stream, &[]).await?;
                futures::AsyncWriteExt::flush(&mut stream).await?;
                let peer = format!("{addr} (session {}, stream {})", session.id, stream.id());
                return Ok(super::stream::conn(stream, place, Some(awaiting), peer));
            }
            Err(last.unwrap_or_else(|| io::Error::other("no stream on a session")))
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.pool.stop.cancel();
            self.pool.drivers.close();
            self.pool.drivers.wait().await;
        })
    }
}
