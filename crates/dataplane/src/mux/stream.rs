//! A yamux stream as a [`Conn`]: split into halves that read and write independently (yamux
//! gives each half its own way to the driver, so neither steals the other's wake-up), holding
//! the stream's place in its session until both are gone.

use super::session::{Awaiting, Place};
use crate::transport::Conn;
use futures::io::AsyncReadExt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::compat::{FuturesAsyncReadCompatExt, FuturesAsyncWriteCompatExt};

/// `stream` as a connection to `peer`. With `awaiting`, the stream waits for its first byte
/// from the peer until its read half first gets something (data, end or error).
pub(super) fn conn(
    stream: yamux::Stream,
    place: Place,
    awaiting: Option<Awaiting>,
    peer: String,
) -> Conn {
    let place = Arc::new(place);
    let (r, w) = stream.split();
    Conn {
        read: Box::new(Half {
            io: r.compat(),
            _place: place.clone(),
            awaiting,
        }),
        write: Box::new(Half {
            io: w.compat_write(),
            _place: place,
            awaiting: None,
        }),
        peer,
        admitted: None,
    }
}

/// One half of a stream.
struct Half<T> {
    io: T,
    _place: Arc<Place>,
    awaiting: Option<Awaiting>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Half<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = ready!(Pin::new(&mut this.io).poll_read(cx, buf));
        // The peer answered (or the stream ended): it no longer waits.
        this.awaiting = None;
        Poll::Ready(r)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Half<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
