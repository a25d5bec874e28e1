//! The TCP connection under a session, as yamux sees it: it notes when the peer last sent
//! anything (for `silence`), and it joins small writes to the write after them. yamux writes a
//! frame's 12-byte header and its body in two calls; with Nagle off each call would be a
//! system call and the header a TCP segment of its own. A write of at most [`SMALL`] bytes is
//! held (copied: it is small) and goes out with the next write in one vectored call, or at
//! the next flush, which yamux's driver makes every time it has written what it had. A body is
//! never copied.

use super::session::Shared;
use super::MuxConfig;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};
use tracing::debug;

/// A session's yamux connection over TCP.
pub(super) type Mux = yamux::Connection<Compat<Heard>>;

/// A yamux connection over `tcp` in `mode`, shaped by `cfg`.
pub(super) fn connection(
    tcp: TcpStream,
    shared: Arc<Shared>,
    cfg: &MuxConfig,
    mode: yamux::Mode,
) -> Mux {
    if let Err(e) = tcp.set_nodelay(true) {
        debug!(error = %e, "set_nodelay failed");
    }
    yamux::Connection::new(Heard::new(tcp, shared).compat(), cfg.yamux(), mode)
}

/// The largest write held for the next one: a frame header, or a small frame whole (an ack
/// of the link protocol with its header).
pub(super) const SMALL: usize = 128;

/// A session's TCP connection.
pub(super) struct Heard {
    tcp: TcpStream,
    shared: Arc<Shared>,
    /// Bytes accepted from yamux and not yet written.
    held: [u8; SMALL],
    /// How many of `held` there are.
    len: usize,
}

impl Heard {
    /// `tcp`, reporting what it hears to `shared`.
    pub(super) fn new(tcp: TcpStream, shared: Arc<Shared>) -> Heard {
        Heard {
            tcp,
            shared,
            held: [0; SMALL],
            len: 0,
        }
    }

    /// Drops the first `n` held bytes, written.
    fn written(&mut self, n: usize) {
        self.held.copy_within(n..self.len, 0);
        self.len -= n;
    }

    /// Writes what is held.
    fn poll_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.len > 0 {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.held[..self.len]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Heard {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.shared.heard_now();
        }
        r
    }
}

impl AsyncWrite for Heard {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.len + buf.len() <= SMALL {
            this.held[this.len..this.len + buf.len()].copy_from_slice(buf);
            this.len += buf.len();
            return Poll::Ready(Ok(buf.len()));
        }
        loop {
            if this.len == 0 {
                return Pin::new(&mut this.tcp).poll_write(cx, buf);
            }
            let parts = [IoSlice::new(&this.held[..this.len]), IoSlice::new(buf)];
            let n = ready!(Pin::new(&mut this.tcp).poll_write_vectored(cx, &parts))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let from_held = n.min(this.len);
            this.written(from_held);
            if n > from_held {
                return Poll::Ready(Ok(n - from_held));
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_held(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_held(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}
