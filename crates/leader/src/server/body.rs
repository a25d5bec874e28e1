//! The bodies the HTTP server wraps around every request and answer: a request body must keep
//! coming ([`Paced`]), and a connection carries a request until its answer is sent ([`Held`]).

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The bytes a request body must bring in every window of waiting for it.
pub(crate) const MIN_BYTES_PER_WINDOW: usize = 1024;

/// A request body whose sender stalls or trickles: fewer than [`MIN_BYTES_PER_WINDOW`] bytes
/// in a window of waiting.
#[derive(Debug, thiserror::Error)]
#[error("request body too slow: under {MIN_BYTES_PER_WINDOW} bytes in {0:?} of waiting for it")]
pub(crate) struct TooSlow(Duration);

/// A request body that must bring [`MIN_BYTES_PER_WINDOW`] bytes (or end) in every `window` of
/// time spent waiting for it, so a trickle cannot hold a connection for ever. Only the time
/// the handler waits for the body counts: a handler that reads slowly (a store upload
/// writing to a slow store) never makes a fast sender too slow, and an upload of any size or
/// length passes as long as it keeps coming.
pub(crate) struct Paced<B> {
    inner: B,
    window: Duration,
    /// Waiting time used up in this window (not counting the wait in progress).
    waited: Duration,
    /// Bytes received in this window.
    got: usize,
    /// When the wait in progress began.
    waiting_since: Option<Instant>,
    timer: Pin<Box<Sleep>>,
}

impl<B> Paced<B> {
    /// `inner`, held to at least [`MIN_BYTES_PER_WINDOW`] bytes per `window` of waiting.
    pub(crate) fn new(inner: B, window: Duration) -> Paced<B> {
        Paced {
            inner,
            window,
            waited: Duration::ZERO,
            got: 0,
            waiting_since: None,
            timer: Box::pin(tokio::time::sleep(window)),
        }
    }

    /// The window is used up at `now`: a new one if this one brought enough, else the error.
    fn next_window(&mut self, now: Instant) -> Result<(), TooSlow> {
        if self.got < MIN_BYTES_PER_WINDOW {
            return Err(TooSlow(self.window));
        }
        self.waited = Duration::ZERO;
        self.got = 0;
        if self.waiting_since.is_some() {
            self.waiting_since = Some(now);
        }
        Ok(())
    }
}

impl<B> Body for Paced<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        loop {
            if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
                let now = Instant::now();
                if let Some(since) = this.waiting_since.take() {
                    this.waited += now - since;
                }
                if let Some(Ok(f)) = &frame {
                    this.got += f.data_ref().map_or(0, |d| d.len());
                    if this.waited >= this.window {
                        if let Err(e) = this.next_window(now) {
                            return Poll::Ready(Some(Err(e.into())));
                        }
                    }
                }
                return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
            }
            let now = Instant::now();
            let since = *this.waiting_since.get_or_insert(now);
            let deadline = since + this.window.saturating_sub(this.waited);
            if this.timer.deadline() != deadline {
                this.timer.as_mut().reset(deadline);
            }
            ready!(this.timer.as_mut().poll(cx));
            if let Err(e) = this.next_window(Instant::now()) {
                return Poll::Ready(Some(Err(e.into())));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What an answer tells its connection's guard as it goes out: the server handed a piece to
/// the connection, or asked for the next one (so the client took what it had).
pub(crate) trait Progress {
    /// A piece of the answer went to the connection.
    fn handed(&self);
    /// The connection asks for the next piece: what it was handed is on its way.
    fn taken(&self);
}

/// An answer's body holding `guard` until it is sent (or dropped): a long poll or a followed
/// output stream keeps its connection busy for as long as it streams. Each piece handed to
/// the connection and each ask for the next are told to the guard: a connection that stops
/// asking while it holds a piece has a client that stopped reading.
pub(crate) struct Held<B, G> {
    inner: B,
    guard: G,
}

impl<B, G> Held<B, G> {
    /// `inner`, holding `guard` while it lives.
    pub(crate) fn new(inner: B, guard: G) -> Held<B, G> {
        Held { inner, guard }
    }
}

impl<B: Body + Unpin, G: Progress + Unpin> Body for Held<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        this.guard.taken();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            this.guard.handed();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
