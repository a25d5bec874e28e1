//! One session: a TCP connection carrying many streams (yamux), the task that drives it, and
//! what that task shares with the session's streams and (connecting side) the pool. yamux
//! makes progress only while its connection is polled, so each session has exactly one
//! driver, owned by whoever started it (the pool's tracker, or the acceptor's `JoinSet`), that
//! polls it until the session ends; the streams it yields are independent connections.

use super::MuxConfig;
use crate::protocol::refusal::RefusalLog;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// A session's yamux connection over TCP.
pub(super) type Mux = yamux::Connection<Compat<Heard>>;

/// A stream a peer opened, for the listener, with its place in the session's count.
pub(super) struct Inbound {
    /// The stream.
    pub(super) stream: yamux::Stream,
    /// Its place, held until its connection is dropped.
    pub(super) place: Place,
    /// The peer and the stream, for logs.
    pub(super) peer: String,
}

/// A request for a new outbound stream, answered by the driver.
pub(super) type Open = oneshot::Sender<Result<yamux::Stream, yamux::ConnectionError>>;

/// What a session's driver, its streams and the pool share.
pub(super) struct Shared {
    /// When the session started: the clock of `heard`.
    born: Instant,
    /// Milliseconds from `born` to the last byte from the peer, or to the moment the latest
    /// stream began to wait for one, whichever is later.
    heard: AtomicU64,
    /// Streams waiting for their first byte from the peer.
    awaiting: AtomicUsize,
    /// Streams open and whether the session takes more.
    state: Mutex<State>,
}

/// The part of [`Shared`] changed together.
struct State {
    /// Streams open (their connections not yet dropped).
    open: usize,
    /// The session takes no more streams: its driver ended or is closing it.
    closed: bool,
    /// Since when no stream has been open.
    idle_since: Instant,
}

impl Shared {
    /// The shared state of a new session.
    pub(super) fn new() -> Arc<Shared> {
        let now = Instant::now();
        Arc::new(Shared {
            born: now,
            heard: AtomicU64::new(0),
            awaiting: AtomicUsize::new(0),
            state: Mutex::new(State {
                open: 0,
                closed: false,
                idle_since: now,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock still holds consistent counts: every update is one statement.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Notes that the peer was heard (or that a stream began to wait for it) now.
    fn heard_now(&self) {
        self.heard.fetch_max(self.now_ms(), Ordering::Relaxed);
    }

    /// A place for one more stream, unless the session is closed or holds `cap` already.
    pub(super) fn reserve(self: &Arc<Self>, cap: usize) -> Option<Place> {
        let mut s = self.lock();
        if s.closed || s.open >= cap {
            return None;
        }
        s.open += 1;
        Some(Place(self.clone()))
    }

    /// A place for a stream the peer opened (yamux already bounds how many).
    pub(super) fn place(self: &Arc<Self>) -> Place {
        self.lock().open += 1;
        Place(self.clone())
    }

    /// Whether the session takes no more streams.
    pub(super) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Streams open now.
    pub(super) fn open_streams(&self) -> usize {
        self.lock().open
    }

    /// Marks the session closed.
    fn close(&self) {
        self.lock().closed = true;
    }

    /// Whether no stream has been open for `idle`; if so the session is closed at once, in
    /// the same hold of the lock, so that no stream is placed on it meanwhile.
    fn retire_if_idle(&self, idle: Duration) -> bool {
        let mut s = self.lock();
        let idle = s.open == 0 && s.idle_since.elapsed() >= idle;
        if idle {
            s.closed = true;
        }
        idle
    }

    /// Whether a stream has waited for the peer while the peer sent nothing for `silence`.
    fn silent_for(&self, silence: Duration) -> bool {
        let quiet = self
            .now_ms()
            .saturating_sub(self.heard.load(Ordering::Relaxed));
        self.awaiting.load(Ordering::Relaxed) > 0 && u128::from(quiet) >= silence.as_millis()
    }
}

/// One stream's place in its session's count, given back when dropped.
pub(super) struct Place(Arc<Shared>);

impl Drop for Place {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.open = s.open.saturating_sub(1);
        if s.open == 0 {
            s.idle_since = Instant::now();
        }
    }
}

/// A new stream waiting for its first byte from the peer; the wait ends when it is dropped.
pub(super) struct Awaiting(Arc<Shared>);

impl Awaiting {
    /// Starts a wait: the peer's silence is counted from now.
    pub(super) fn new(shared: &Arc<Shared>) -> Awaiting {
        shared.awaiting.fetch_add(1, Ordering::Relaxed);
        shared.heard_now();
        Awaiting(shared.clone())
    }
}

impl Drop for Awaiting {
    fn drop(&mut self) {
        self.0.awaiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A session's TCP connection, noting when the peer last sent anything.
pub(super) struct Heard {
    tcp: TcpStream,
    shared: Arc<Shared>,
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
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

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
    yamux::Connection::new(Heard { tcp, shared }.compat(), cfg.yamux(), mode)
}

/// How often a driver looks at its session's idleness and silence.
fn ticker(cfg: &MuxConfig) -> tokio::time::Interval {
    let least = cfg.idle.min(cfg.peer_idle).min(cfg.silence);
    let period = (least / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut t = tokio::time::interval(period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// Closes a session politely, for at most a second (a peer that does not read its socket
/// gets the TCP connection dropped instead).
async fn close(conn: &mut Mux) {
    let closing = poll_fn(|cx| conn.poll_close(cx));
    match tokio::time::timeout(Duration::from_secs(1), closing).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(error = %e, "session closed with an error"),
        Err(_) => debug!("the peer did not take the session's close within 1 s"),
    }
}

/// What one poll of a connecting side's session came to.
enum Step {
    /// A requested stream, or why there is none.
    Opened(Open, Result<yamux::Stream, yamux::ConnectionError>),
    /// The peer opened a stream: links only go one way, so it is refused.
    Inbound(yamux::Stream),
    /// The session ended (with the error, if any).
    Ended(Option<yamux::ConnectionError>),
}

/// Serves requests for streams and drives the connection, until something happens.
fn client_step(
    conn: &mut Mux,
    opens: &mut mpsc::Receiver<Open>,
    pending: &mut Option<Open>,
    cx: &mut Context<'_>,
) -> Poll<Step> {
    loop {
        if pending.is_none() {
            match opens.poll_recv(cx) {
                Poll::Ready(Some(o)) => *pending = Some(o),
                // Nothing asked for (or nobody left to ask): drive the connection.
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        match pending.take() {
            // The link gave up waiting (its connect timed out): nothing to open.
            Some(o) if o.is_closed() => continue,
            Some(o) => match conn.poll_new_outbound(cx) {
                Poll::Ready(r) => return Poll::Ready(Step::Opened(o, r)),
                // Too many streams not yet acknowledged by the peer: wait, driving.
                Poll::Pending => {
                    *pending = Some(o);
                    break;
                }
            },
            None => break,
        }
    }
    match conn.poll_next_inbound(cx) {
        Poll::Ready(Some(Ok(s))) => Poll::Ready(Step::Inbound(s)),
        Poll::Ready(Some(Err(e))) => Poll::Ready(Step::Ended(Some(e))),
        Poll::Ready(None) => Poll::Ready(Step::Ended(None)),
        Poll::Pending => Poll::Pending,
    }
}

/// Drives a session this process opened: opens the streams its links ask for, until the
/// connection breaks, the peer stays silent while a stream waits for it, no link has used it
/// for `cfg.idle`, or `stop`.
pub(super) async fn drive_client(
    mut conn: Mux,
    mut opens: mpsc::Receiver<Open>,
    shared: Arc<Shared>,
    cfg: MuxConfig,
    stop: CancellationToken,
) {
    let mut pending = None;
    let mut tick = ticker(&cfg);
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                shared.close();
                close(&mut conn).await;
                break;
            }
            _ = tick.tick() => {
                if shared.silent_for(cfg.silence) {
                    warn!(silence = ?cfg.silence, "the peer sent nothing while a new link waited for its answer; closing the connection (its links reconnect on a new one)");
                    break;
                }
                if shared.retire_if_idle(cfg.idle) {
                    debug!("no link uses the session; closing it");
                    close(&mut conn).await;
                    break;
                }
            }
            step = poll_fn(|cx| client_step(&mut conn, &mut opens, &mut pending, cx)) => match step {
                Step::Opened(reply, opened) => {
                    if reply.send(opened).is_err() {
                        debug!("a link stopped waiting for its stream; the stream is closed");
                    }
                }
                Step::Inbound(s) => debug!(stream = %s.id(), "the peer opened a stream; refused"),
                Step::Ended(Some(e)) => {
                    debug!(error = %e, "session ended");
                    break;
                }
                Step::Ended(None) => {
                    debug!("session closed by the peer");
                    break;
                }
            }
        }
    }
    shared.close();
}

/// Drives a session a peer opened: hands every stream it opens to `out` (the listener's
/// queue), until the connection breaks, it has had no stream for
/// `cfg.peer_idle`, or `stop`. While `out` is full the session waits (not reading its TCP
/// connection), so a flood of streams is held back by TCP, not queued here.
pub(super) async fn drive_server(
    mut conn: Mux,
    shared: Arc<Shared>,
    out: mpsc::Sender<Inbound>,
    cfg: MuxConfig,
    peer: String,
    refusals: Arc<RefusalLog>,
    stop: CancellationToken,
) {
    let mut tick = ticker(&cfg);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                if shared.retire_if_idle(cfg.peer_idle) {
                    debug!("no stream on the session for {:?}; closing it", cfg.peer_idle);
                    close(&mut conn).await;
                    break;
                }
            }
            inbound = poll_fn(|cx| conn.poll_next_inbound(cx)) => match inbound {
                Some(Ok(stream)) => {
                    let c = Inbound {
                        peer: format!("{peer} (stream {})", stream.id()),
                        place: shared.place(),
                        stream,
                    };
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        sent = out.send(c) => if sent.is_err() {
                            break;
                        },
                    }
                }
                Some(Err(yamux::ConnectionError::Decode(e))) => {
                    // A peer speaking something else than yamux ends here.
                    refusals.refused("session ended by a malformed frame", || format!("peer {peer}: {e}"));
                    break;
                }
                Some(Err(e)) => {
                    debug!(error = %e, "session ended");
                    break;
                }
                None => {
                    debug!("session closed by the peer");
                    break;
                }
            }
        }
    }
    shared.close();
}
