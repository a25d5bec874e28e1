//! Links between two tasks of one process without the network stack, as Flink's local input
//! channels: an embedded cluster's workers all live in one process, and a worker of a real
//! cluster runs tasks of adjacent stages side by side. Such a link's bytes went through a
//! loopback TCP connection — two system calls, the kernel's copies and soft interrupts and,
//! multiplexed, the session's frames — for a peer in the same address space.
//!
//! A listener of this process registers its advertised address in the process's [`LocalHub`]
//! ([`LocalAcceptor`]); a link connecting through [`LocalNet`] to a registered address gets a
//! pair of in-memory pipes instead of a socket, and the listener accepts the other ends as a
//! connection like any other. Everything above the bytes stays as it is: the listener's
//! challenge, the signed Hello, its deadline and connection cap, windows, acks, and the
//! end of a connection when either side drops it (the peer reads the end, a write fails), so a
//! local link is admitted, fenced and recovered exactly as a remote one. Any other address
//! goes to the inner network.

use crate::transport::{Acceptor, Conn, Network};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;

/// Bytes one direction of a local connection holds before its writer waits for the reader:
/// as much as a yamux stream's first window, several batch frames.
const PIPE_BYTES: usize = 256 * 1024;

/// Local connections waiting for their listener to accept them.
const BACKLOG: usize = 128;

/// The listeners of this process by advertised address. See the module doc.
#[derive(Default)]
pub struct LocalHub {
    listeners: Mutex<HashMap<String, (u64, mpsc::Sender<Conn>)>>,
    next_id: AtomicU64,
}

impl LocalHub {
    /// The hub every real listener and network of this process shares: an embedded cluster's
    /// workers reach each other through it. (The simulation has a network of its own and never
    /// uses it.)
    pub fn process() -> Arc<LocalHub> {
        static HUB: OnceLock<Arc<LocalHub>> = OnceLock::new();
        HUB.get_or_init(Arc::default).clone()
    }

    /// Registers a listener at `addr`: connections to it arrive on the receiver until the
    /// returned [`Registration`] is dropped. A later registration of the same address
    /// replaces this one.
    pub fn register(self: &Arc<Self>, addr: &str) -> (Registration, mpsc::Receiver<Conn>) {
        let (tx, rx) = mpsc::channel(BACKLOG);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(addr.to_string(), (id, tx));
        let reg = Registration {
            hub: self.clone(),
            addr: addr.to_string(),
            id,
        };
        (reg, rx)
    }

    /// The listener registered at `addr`, if any.
    fn listener(&self, addr: &str) -> Option<mpsc::Sender<Conn>> {
        self.lock().get(addr).map(|(_, tx)| tx.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, mpsc::Sender<Conn>)>> {
        // The map is only ever inserted into or removed from: a panic elsewhere while it was
        // held cannot leave it half changed.
        self.listeners.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A listener's place in the hub; dropping it takes the listener out (connections to its
/// address then go to the network, and find nothing there either once it has closed).
pub struct Registration {
    hub: Arc<LocalHub>,
    addr: String,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = self.hub.lock();
        if map.get(&self.addr).is_some_and(|(id, _)| *id == self.id) {
            map.remove(&self.addr);
        }
    }
}

/// Two connected ends: what one writes the other reads, each direction a pipe of
/// [`PIPE_BYTES`]. As with a socket, dropping an end's writing half ends what the other end
/// reads, and dropping a whole end makes the other end's writes fail.
/// The dialer's writing half holds `open`, so the link counts as open while it can write.
fn pair(peer: &str, open: OpenLink) -> (Conn, Conn) {
    let (dialer, listener) = tokio::io::duplex(PIPE_BYTES);
    let (dialer_rd, dialer_wr) = tokio::io::split(dialer);
    let (listener_rd, listener_wr) = tokio::io::split(listener);
    let dialer = Conn {
        read: Box::new(dialer_rd),
        write: Box::new(Closing {
            io: dialer_wr,
            _open: Some(open),
        }),
        peer: peer.to_string(),
        admitted: None,
    };
    let listener = Conn {
        read: Box::new(listener_rd),
        write: Box::new(Closing {
            io: listener_wr,
            _open: None,
        }),
        peer: "local".to_string(),
        admitted: None,
    };
    (dialer, listener)
}

/// A writing half that shuts its direction down when dropped, as a TCP stream's does: the
/// reader then sees the end instead of waiting for bytes that will never come.
struct Closing<W: AsyncWrite + Unpin> {
    io: W,
    _open: Option<OpenLink>,
}

/// One local link counted as open in its network ([`LocalNet::shared`]) until dropped.
struct OpenLink(Arc<AtomicU64>);

impl OpenLink {
    fn new(count: &Arc<AtomicU64>) -> OpenLink {
        count.fetch_add(1, Ordering::Relaxed);
        OpenLink(count.clone())
    }
}

impl Drop for OpenLink {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Closing<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<W: AsyncWrite + Unpin> Drop for Closing<W> {
    fn drop(&mut self) {
        // An in-memory pipe's shutdown only marks it closed and wakes its reader: it is done
        // in this one poll, whatever the waker.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if let Poll::Ready(Err(e)) = Pin::new(&mut self.io).poll_shutdown(&mut cx) {
            tracing::debug!(error = %e, "closing a local connection's writing half failed");
        }
    }
}

/// A network that connects to this process's own listeners in memory and to everything else
/// through `inner`.
pub struct LocalNet {
    hub: Arc<LocalHub>,
    inner: Arc<dyn Network>,
    /// Its links open in memory now.
    open: Arc<AtomicU64>,
}

impl LocalNet {
    /// `inner`, with the listeners registered in `hub` reached in memory.
    pub fn new(hub: Arc<LocalHub>, inner: Arc<dyn Network>) -> LocalNet {
        LocalNet {
            hub,
            inner,
            open: Arc::default(),
        }
    }
}

impl Network for LocalNet {
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<Conn>> {
        Box::pin(async move {
            let Some(listener) = self.hub.listener(addr) else {
                return self.inner.connect(addr).await;
            };
            let (dialer, accepted) = pair(addr, OpenLink::new(&self.open));
            listener.send(accepted).await.map_err(|_| {
                io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "the local listener closed",
                )
            })?;
            Ok(dialer)
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        self.inner.shutdown()
    }

    /// The inner network's shared connections, with the links open in memory beside them
    /// (reported even when the inner network shares nothing, once there are some).
    fn shared(&self) -> Option<crate::protocol::api::DataConns> {
        let local = self.open.load(Ordering::Relaxed);
        match self.inner.shared() {
            Some(c) => Some(crate::protocol::api::DataConns { local, ..c }),
            None if local > 0 => Some(crate::protocol::api::DataConns {
                local,
                ..Default::default()
            }),
            None => None,
        }
    }
}

/// A listener's acceptor that also takes this process's local connections to `addr`, for as
/// long as it lives.
pub struct LocalAcceptor<A> {
    inner: A,
    local: mpsc::Receiver<Conn>,
    _registration: Registration,
}

impl<A: Acceptor> LocalAcceptor<A> {
    /// `inner`, registered in `hub` at `addr` (the address the process advertises).
    pub fn new(inner: A, hub: &Arc<LocalHub>, addr: &str) -> LocalAcceptor<A> {
        let (registration, local) = hub.register(addr);
        LocalAcceptor {
            inner,
            local,
            _registration: registration,
        }
    }
}

impl<A: Acceptor> Acceptor for LocalAcceptor<A> {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Conn>> {
        Box::pin(async move {
            tokio::select! {
                Some(c) = self.local.recv() => Ok(c),
                c = self.inner.accept() => c,
            }
        })
    }

    fn shutdown(&mut self) -> BoxFuture<'_, ()> {
        // No more local connections: dialers now find the address closed.
        self.local.close();
        self.inner.shutdown()
    }
}

#[cfg(test)]
mod tests;
