//! The listening side: a TCP listener whose connections are links' connections or sessions
//! of many links, yielded alike to the listener as [`Conn`]s — a link's connection as it is,
//! a session's streams one by one. The acceptor owns every session's driver (a `JoinSet`,
//! joined as they end and at [`Acceptor::shutdown`]).

use super::session::{Inbound, Shared};
use super::sniff::{self, Upgrade};
use super::MuxConfig;
use crate::protocol::refusal::{RefusalLog, INTERVAL};
use crate::transport::{Acceptor, Conn};
use futures::future::BoxFuture;
use std::io;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{warn, Instrument};

/// Inbound streams of all sessions waiting for the listener to take them. A session with a
/// stream to hand over while this is full waits, so the wait is held back by TCP.
const STREAM_QUEUE: usize = 256;

/// Connections that sent the preface, waiting for their session to start.
const UPGRADE_QUEUE: usize = 64;

/// The data listener's acceptor: links' connections and sessions on one port.
pub struct MuxAcceptor {
    tcp: TcpListener,
    cfg: MuxConfig,
    /// Places for TCP connections (links' and sessions' together).
    fds: Arc<Semaphore>,
    upgrades_tx: mpsc::Sender<Upgrade>,
    upgrades: mpsc::Receiver<Upgrade>,
    streams_tx: mpsc::Sender<Inbound>,
    streams: mpsc::Receiver<Inbound>,
    sessions: JoinSet<()>,
    refusals: Arc<RefusalLog>,
    stop: CancellationToken,
}

impl MuxAcceptor {
    /// Accepts on `tcp`, sessions shaped by `cfg`.
    pub fn new(tcp: TcpListener, cfg: MuxConfig) -> MuxAcceptor {
        let (upgrades_tx, upgrades) = mpsc::channel(UPGRADE_QUEUE);
        let (streams_tx, streams) = mpsc::channel(STREAM_QUEUE);
        MuxAcceptor {
            tcp,
            fds: Arc::new(Semaphore::new(cfg.max_tcp.clamp(1, Semaphore::MAX_PERMITS))),
            cfg,
            upgrades_tx,
            upgrades,
            streams_tx,
            streams,
            sessions: JoinSet::new(),
            refusals: Arc::new(RefusalLog::new("data TCP connections refused", INTERVAL)),
            stop: CancellationToken::new(),
        }
    }

    /// Sessions running now.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Starts the session a connection asked for.
    fn start(&mut self, up: Upgrade) {
        let shared = Shared::new();
        let conn =
            super::socket::connection(up.tcp, shared.clone(), &self.cfg, yamux::Mode::Server);
        let span = tracing::debug_span!("data_session", peer = %up.peer);
        let driver = super::drive::drive_server(
            conn,
            shared,
            self.streams_tx.clone(),
            self.cfg.clone(),
            up.peer,
            self.refusals.clone(),
            self.stop.child_token(),
        );
        let fd = up.fd;
        self.sessions.spawn(
            async move {
                driver.await;
                drop(fd);
            }
            .instrument(span),
        );
    }
}

impl Acceptor for MuxAcceptor {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Conn>> {
        Box::pin(async move {
            loop {
                tokio::select! {
                    Some(s) = self.streams.recv() => {
                        let shared = s.place.session();
                        let mut c = super::stream::conn(s.stream, s.place, None, s.peer);
                        c.admitted = Some(Box::new(move || shared.admit()));
                        return Ok(c);
                    }
                    Some(up) = self.upgrades.recv() => self.start(up),
                    Some(ended) = self.sessions.join_next(), if !self.sessions.is_empty() => {
                        if let Err(e) = ended {
                            warn!(error = %e, "a data session's driver panicked");
                        }
                    }
                    accepted = self.tcp.accept() => {
                        let (tcp, peer) = accepted?;
                        let Ok(fd) = self.fds.clone().try_acquire_owned() else {
                            // Closed at once: the peer learns it without a challenge.
                            let cap = self.cfg.max_tcp;
                            self.refusals.refused("too many TCP connections", || {
                                format!("peer {peer}, limit {cap}")
                            });
                            continue;
                        };
                        let up = self.upgrades_tx.clone();
                        return Ok(sniff::conn(tcp, peer.to_string(), fd, up));
                    }
                }
            }
        })
    }

    fn shutdown(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.stop.cancel();
            while let Some(ended) = self.sessions.join_next().await {
                if let Err(e) = ended {
                    warn!(error = %e, "a data session's driver panicked");
                }
            }
            self.refusals.flush();
        })
    }
}
