//! Every TCP connection starts as a link's: the listener sends its challenge and reads what
//! should be a Hello. The read half here looks at the first bytes first. A link's Hello is
//! replayed to the listener untouched; the session preface ([`PREFACE`]) reads as the end of
//! the connection instead, and once the listener has dropped both halves (it does at once on
//! an end before the Hello) they are put back together and handed to the acceptor, which runs
//! a session on the connection. The client skips the challenge the listener sent first.

use super::PREFACE;
use crate::transport::Conn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tracing::debug;

/// A connection that asked to become a session, with its place among the listener's TCP
/// connections.
pub(super) struct Upgrade {
    /// The connection, the challenge and the preface behind it.
    pub(super) tcp: TcpStream,
    /// The peer's address, for logs.
    pub(super) peer: String,
    /// Its place in [`super::MuxConfig::max_tcp`], held for the session's life.
    pub(super) fd: OwnedSemaphorePermit,
}

/// `tcp` as a link's connection whose first bytes decide what it is; a session preface sends
/// it to `upgrades`.
pub(super) fn conn(
    tcp: TcpStream,
    peer: String,
    fd: OwnedSemaphorePermit,
    upgrades: mpsc::Sender<Upgrade>,
) -> Conn {
    if let Err(e) = tcp.set_nodelay(true) {
        debug!(error = %e, "set_nodelay failed");
    }
    let (r, w) = tcp.into_split();
    let divert = Arc::new(Divert {
        parts: Mutex::new(Parts {
            read: None,
            write: None,
            upgrade: false,
            fd: Some(fd),
        }),
        upgrades,
        peer: peer.clone(),
    });
    Conn {
        read: Box::new(SniffRead {
            io: Some(r),
            head: [0; PREFACE.len()],
            have: 0,
            replayed: 0,
            mode: Mode::Deciding,
            divert: divert.clone(),
        }),
        write: Box::new(KeepWrite {
            io: Some(w),
            divert,
        }),
        peer,
        admitted: None,
    }
}

/// Where a connection's halves meet again once it is to become a session.
struct Divert {
    parts: Mutex<Parts>,
    upgrades: mpsc::Sender<Upgrade>,
    peer: String,
}

/// What [`Divert`] collects.
struct Parts {
    read: Option<OwnedReadHalf>,
    write: Option<OwnedWriteHalf>,
    /// The peer sent the preface.
    upgrade: bool,
    /// The connection's place among the listener's TCP connections (given back with the
    /// last half of a link's connection).
    fd: Option<OwnedSemaphorePermit>,
}

impl Divert {
    fn lock(&self) -> std::sync::MutexGuard<'_, Parts> {
        self.parts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a dropped half back if the connection is to become a session; once both are
    /// back, hands the connection to the acceptor.
    fn give_back(&self, read: Option<OwnedReadHalf>, write: Option<OwnedWriteHalf>) {
        let ready = {
            let mut p = self.lock();
            if !p.upgrade {
                // A link's connection: the half closes here.
                return;
            }
            p.read = p.read.take().or(read);
            p.write = p.write.take().or(write);
            match (p.read.take(), p.write.take(), p.fd.take()) {
                (Some(r), Some(w), Some(fd)) => Some((r, w, fd)),
                (r, w, fd) => {
                    (p.read, p.write, p.fd) = (r, w, fd);
                    None
                }
            }
        };
        let Some((r, w, fd)) = ready else {
            return;
        };
        match r.reunite(w) {
            Ok(tcp) => {
                let up = Upgrade {
                    tcp,
                    peer: self.peer.clone(),
                    fd,
                };
                if let Err(e) = self.upgrades.try_send(up) {
                    debug!(peer = %self.peer, error = %e, "a session could not start (the acceptor is busy or gone); its connection is closed");
                }
            }
            Err(e) => debug!(peer = %self.peer, error = %e, "a session's halves did not match"),
        }
    }
}

/// What the read half knows about the connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Reading the first bytes.
    Deciding,
    /// A link's: the first bytes are given to the listener, then the rest.
    Replay,
    /// A link's, the first bytes given.
    Through,
    /// A session's: the listener sees the end of the connection.
    Upgraded,
}

/// The read half: decides from the first bytes.
struct SniffRead {
    io: Option<OwnedReadHalf>,
    head: [u8; PREFACE.len()],
    have: usize,
    replayed: usize,
    mode: Mode,
    divert: Arc<Divert>,
}

impl AsyncRead for SniffRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(io) = this.io.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        loop {
            match this.mode {
                Mode::Deciding => {
                    // Exactly the preface's length at most: what follows a preface is the
                    // session's and must stay in the socket.
                    let mut rb = ReadBuf::new(&mut this.head[this.have..]);
                    ready!(Pin::new(&mut *io).poll_read(cx, &mut rb))?;
                    let n = rb.filled().len();
                    if n == 0 {
                        this.mode = Mode::Replay;
                        continue;
                    }
                    this.have += n;
                    if this.head[..this.have] != PREFACE[..this.have] {
                        this.mode = Mode::Replay;
                    } else if this.have == PREFACE.len() {
                        this.mode = Mode::Upgraded;
                        this.divert.lock().upgrade = true;
                    }
                }
                Mode::Replay => {
                    if this.replayed < this.have {
                        let k = buf.remaining().min(this.have - this.replayed);
                        buf.put_slice(&this.head[this.replayed..this.replayed + k]);
                        this.replayed += k;
                        return Poll::Ready(Ok(()));
                    }
                    this.mode = Mode::Through;
                }
                Mode::Through => return Pin::new(io).poll_read(cx, buf),
                Mode::Upgraded => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl Drop for SniffRead {
    fn drop(&mut self) {
        self.divert.give_back(self.io.take(), None);
    }
}

/// The write half: the listener's challenge goes through it; kept for a session.
struct KeepWrite {
    io: Option<OwnedWriteHalf>,
    divert: Arc<Divert>,
}

impl KeepWrite {
    fn io(&mut self) -> io::Result<Pin<&mut OwnedWriteHalf>> {
        match self.io.as_mut() {
            Some(w) => Ok(Pin::new(w)),
            None => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }
}

impl AsyncWrite for KeepWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().io()?.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().io()?.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().io()?.poll_shutdown(cx)
    }
}

impl Drop for KeepWrite {
    fn drop(&mut self) {
        self.divert.give_back(None, self.io.take());
    }
}
