//! How the data plane reaches other processes. Links connect through a [`Network`] and the
//! listener accepts through an [`Acceptor`]; the engine ships TCP, and the deterministic
//! simulation (`tests/sim`) plugs in an in-memory network with a simulated clock, delays,
//! cuts and partitions — so the protocol code under test is the code that ships.

use futures::future::BoxFuture;
use std::io;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// The reading half of a connection.
pub type ConnRead = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of a connection.
pub type ConnWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// One established connection, split into halves so reading and writing never wait on each
/// other.
pub struct Conn {
    /// Bytes from the peer.
    pub read: ConnRead,
    /// Bytes to the peer.
    pub write: ConnWrite,
    /// The peer's address, for logs.
    pub peer: String,
    /// Called by the listener once the peer's signed Hello is admitted: a multiplexed
    /// session's stream tells its session so, and a session none of whose streams was admitted
    /// in time is closed (a peer without the cluster secret cannot hold one open).
    pub admitted: Option<Admitted>,
}

/// See [`Conn::admitted`].
pub type Admitted = Box<dyn FnOnce() + Send>;

/// Opens connections to data listeners by address (`host:port`).
pub trait Network: Send + Sync + 'static {
    /// Connects to `addr`.
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<Conn>>;

    /// Ends whatever the network keeps running beside its connections (a multiplexer's
    /// sessions) and waits for it, so nothing outlives the process's data plane. Called once,
    /// when the process's links are over; a network that keeps nothing has nothing to do.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// The TCP connections it holds and the links' streams open on them, for a network that
    /// shares connections among links (`None`: each link is a connection of its own).
    fn shared(&self) -> Option<crate::protocol::api::DataConns> {
        None
    }
}

/// A bound data listener's accept side.
pub trait Acceptor: Send + 'static {
    /// Waits for the next inbound connection.
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Conn>>;

    /// Ends whatever the acceptor runs beside the connections it yields (a multiplexer's
    /// sessions) and waits for it. The listener calls it once, after its last connection.
    fn shutdown(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// The network that ships: TCP with Nagle off (batches are already large; acks must not wait).
#[derive(Clone, Copy, Debug, Default)]
pub struct Tcp;

fn tcp_conn(stream: TcpStream, peer: String) -> Conn {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "set_nodelay failed");
    }
    let (r, w) = stream.into_split();
    Conn {
        read: Box::new(r),
        write: Box::new(w),
        peer,
        admitted: None,
    }
}

impl Network for Tcp {
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<Conn>> {
        Box::pin(async move {
            let stream = TcpStream::connect(addr).await?;
            Ok(tcp_conn(stream, addr.to_string()))
        })
    }
}

impl Acceptor for TcpListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Conn>> {
        Box::pin(async move {
            let (stream, peer) = TcpListener::accept(self).await?;
            Ok(tcp_conn(stream, peer.to_string()))
        })
    }
}
