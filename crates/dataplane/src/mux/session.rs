//! One session: a TCP connection carrying many streams (yamux), and what its driver (`drive`)
//! shares with the session's streams and (connecting side) the pool: how many streams are
//! open, whether it takes more, and when the peer was last heard.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

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
    /// Whether the listener admitted a signed Hello on one of its streams (a session a peer
    /// opened): only then may it outlive its first Hello deadline.
    admitted: std::sync::atomic::AtomicBool,
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
            admitted: std::sync::atomic::AtomicBool::new(false),
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
    pub(super) fn heard_now(&self) {
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

    /// A stream of this session carried a Hello the listener admitted: its peer holds the
    /// cluster secret.
    pub(super) fn admit(&self) {
        self.admitted.store(true, Ordering::Relaxed);
    }

    /// Whether it is `deadline` old and none of its streams was admitted yet (see
    /// [`Shared::admit`]); it is then marked closed.
    pub(super) fn retire_if_unproven(&self, deadline: Duration) -> bool {
        let unproven = !self.admitted.load(Ordering::Relaxed) && self.born.elapsed() >= deadline;
        if unproven {
            self.close();
        }
        unproven
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
    pub(super) fn close(&self) {
        self.lock().closed = true;
    }

    /// Whether no stream has been open for `idle`; if so the session is closed at once, in
    /// the same hold of the lock, so that no stream is placed on it meanwhile.
    pub(super) fn retire_if_idle(&self, idle: Duration) -> bool {
        let mut s = self.lock();
        let idle = s.open == 0 && s.idle_since.elapsed() >= idle;
        if idle {
            s.closed = true;
        }
        idle
    }

    /// Whether a stream has waited for the peer while the peer sent nothing for `silence`.
    pub(super) fn silent_for(&self, silence: Duration) -> bool {
        let quiet = self
            .now_ms()
            .saturating_sub(self.heard.load(Ordering::Relaxed));
        self.awaiting.load(Ordering::Relaxed) > 0 && u128::from(quiet) >= silence.as_millis()
    }
}

/// One stream's place in its session's count, given back when dropped.
pub(super) struct Place(Arc<Shared>);

impl Place {
    /// The session it is a place of.
    pub(super) fn session(&self) -> Arc<Shared> {
        self.0.clone()
    }
}

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
