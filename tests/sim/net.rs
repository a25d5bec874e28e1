//! A simulated network for the data plane: in-memory byte pipes with per-connection latency
//! (so frames on different connections overtake each other), cuts (a reset, or a close whose
//! data still drains to the reader — a half-open connection delivering late), and partitions
//! that freeze or reset traffic between hosts until they heal. Everything runs on the
//! simulation's paused tokio clock.

use futures::future::BoxFuture;
use rainstorm::dataplane::transport::{Acceptor, Conn, Network};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use super::rng::Rng;

/// Bytes a direction holds before its writer waits.
const PIPE_CAP: usize = 16 * 1024;

#[derive(Default)]
struct PipeState {
    chunks: VecDeque<(Instant, Vec<u8>)>,
    in_flight: usize,
    last_due: Option<Instant>,
    /// The writer closed: the reader gets EOF after the queued data.
    closed: bool,
    /// Reset: both ends fail at once, queued data is lost.
    broken: bool,
    /// Partitioned: nothing is delivered until it heals.
    frozen: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

struct Pipe {
    /// The pipe's number in the run (connection order), for the trace.
    id: u64,
    state: Mutex<PipeState>,
    latency: Duration,
    jitter_us: u64,
    rng: Rng,
}

impl Pipe {
    fn st(&self) -> std::sync::MutexGuard<'_, PipeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake(st: &mut PipeState) {
        if let Some(w) = st.reader.take() {
            w.wake();
        }
        if let Some(w) = st.writer.take() {
            w.wake();
        }
    }

    fn reset(&self) {
        let mut st = self.st();
        st.broken = true;
        st.chunks.clear();
        Pipe::wake(&mut st);
    }

    fn close(&self) {
        let mut st = self.st();
        st.closed = true;
        Pipe::wake(&mut st);
    }

    fn freeze(&self, frozen: bool) {
        let mut st = self.st();
        st.frozen = frozen;
        Pipe::wake(&mut st);
    }
}

struct PipeReader {
    pipe: Arc<Pipe>,
    timer: Option<Pin<Box<Sleep>>>,
}

struct PipeWriter {
    pipe: Arc<Pipe>,
}

impl AsyncRead for PipeReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            let due = {
                let mut st = this.pipe.st();
                if st.broken {
                    return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
                }
                match st.chunks.front() {
                    None if st.closed => return Poll::Ready(Ok(())),
                    None => {
                        st.reader = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                    Some(_) if st.frozen => {
                        st.reader = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                    Some((due, _)) if *due <= Instant::now() => {
                        let (due, mut chunk) = st.chunks.pop_front().expect("front exists");
                        let n = chunk.len().min(buf.remaining());
                        buf.put_slice(&chunk[..n]);
                        if n < chunk.len() {
                            chunk.drain(..n);
                            st.chunks.push_front((due, chunk));
                        }
                        st.in_flight -= n;
                        if let Some(w) = st.writer.take() {
                            w.wake();
                        }
                        return Poll::Ready(Ok(()));
                    }
                    Some((due, _)) => *due,
                }
            };
            let timer = this
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            timer.as_mut().reset(due);
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

use std::future::Future;

impl AsyncWrite for PipeWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let pipe = &self.pipe;
        let mut st = pipe.st();
        if st.broken || st.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if st.in_flight >= PIPE_CAP {
            st.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = data.len().min(PIPE_CAP - st.in_flight);
        let jitter = Duration::from_micros(pipe.rng.below(pipe.jitter_us + 1));
        let mut due = Instant::now() + pipe.latency + jitter;
        if let Some(last) = st.last_due {
            due = due.max(last);
        }
        st.last_due = Some(due);
        trace(pipe.id, n as u64);
        st.chunks.push_back((due, data[..n].to_vec()));
        st.in_flight += n;
        if let Some(w) = st.reader.take() {
            w.wake();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.pipe.close();
        Poll::Ready(Ok(()))
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        self.pipe.close();
    }
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        // Nobody reads any more: the writer sees a reset, as with a closed socket.
        let mut st = self.pipe.st();
        st.broken = true;
        Pipe::wake(&mut st);
    }
}

/// One simulated connection: two pipes, and the hosts at its ends.
struct Link {
    hosts: (String, String),
    up: Arc<Pipe>,
    down: Arc<Pipe>,
}

#[derive(Default)]
struct NetState {
    listeners: BTreeMap<String, (String, mpsc::UnboundedSender<Conn>)>,
    conns: Vec<Weak<Link>>,
    cut: BTreeSet<(String, String)>,
    /// Pipes made so far (their ids).
    pipes: u64,
}

thread_local! {
    /// The run's data-plane trace on this thread (one run at a time per thread): its start and
    /// an FNV-1a hash of every write (virtual time, pipe, length). Not the bytes: they carry
    /// random challenge nonces and wall-clock emit stamps, which decide nothing.
    static TRACE: std::cell::Cell<(Option<Instant>, u64)> = const { std::cell::Cell::new((None, 0)) };
}

/// Starts this thread's trace (at the start of a run).
pub fn trace_start() {
    TRACE.set((Some(Instant::now()), 0xcbf2_9ce4_8422_2325));
}

/// Virtual time since this thread's trace started.
pub fn trace_elapsed() -> Duration {
    TRACE.get().0.map_or(Duration::ZERO, |t| t.elapsed())
}

/// This thread's trace so far.
pub fn trace_hash() -> u64 {
    TRACE.get().1
}

fn trace(pipe: u64, n: u64) {
    tracing::trace!(target: "sim", pipe, n, "write");
    let (t0, mut h) = TRACE.get();
    let at = t0.map_or(0, |t| t.elapsed().as_nanos() as u64);
    for b in at
        .to_le_bytes()
        .iter()
        .chain(&pipe.to_le_bytes())
        .chain(&n.to_le_bytes())
    {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    TRACE.set((t0, h));
}

/// The simulated network shared by every host of one run.
#[derive(Clone)]
pub struct SimNet {
    state: Arc<Mutex<NetState>>,
    rng: Rng,
}

fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

impl SimNet {
    /// An empty network.
    pub fn new(rng: Rng) -> Self {
        SimNet {
            state: Arc::default(),
            rng,
        }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Binds `addr` for `host`; returns its acceptor.
    pub fn listen(&self, host: &str, addr: &str) -> SimAcceptor {
        let (tx, rx) = mpsc::unbounded_channel();
        self.st()
            .listeners
            .insert(addr.to_string(), (host.to_string(), tx));
        SimAcceptor { rx }
    }

    /// The network as seen from `host`.
    pub fn host(&self, host: &str) -> Arc<dyn Network> {
        Arc::new(HostNet {
            net: self.clone(),
            host: host.to_string(),
        })
    }

    fn live(&self) -> Vec<Arc<Link>> {
        let mut st = self.st();
        st.conns.retain(|w| w.strong_count() > 0);
        st.conns.iter().filter_map(Weak::upgrade).collect()
    }

    /// Cuts one live connection at random: a reset, or a close whose queued data still
    /// reaches the listener side (late frames from a connection its sender gave up).
    pub fn cut_random(&self, rng: &Rng) -> bool {
        let live = self.live();
        if live.is_empty() {
            return false;
        }
        let l = &live[rng.below(live.len() as u64) as usize];
        if rng.chance(0.5) {
            l.up.reset();
            l.down.reset();
        } else {
            // The sender's side fails now; what it already wrote still arrives.
            l.up.close();
            l.down.reset();
        }
        true
    }

    /// Partitions `host` from every other host: connections between them freeze (or reset)
    /// and new ones are refused until [`SimNet::heal`].
    pub fn partition(&self, host: &str, rng: &Rng) {
        let others: Vec<String> = self
            .st()
            .listeners
            .values()
            .map(|(h, _)| h.clone())
            .filter(|h| h != host)
            .collect();
        {
            let mut st = self.st();
            for o in &others {
                st.cut.insert(pair(host, o));
            }
        }
        for l in self.live() {
            if l.hosts.0 == host || l.hosts.1 == host {
                if rng.chance(0.3) {
                    l.up.reset();
                    l.down.reset();
                } else {
                    l.up.freeze(true);
                    l.down.freeze(true);
                }
            }
        }
    }

    /// Ends every partition of `host`.
    pub fn heal(&self, host: &str) {
        self.st().cut.retain(|(a, b)| a != host && b != host);
        for l in self.live() {
            if l.hosts.0 == host || l.hosts.1 == host {
                l.up.freeze(false);
                l.down.freeze(false);
            }
        }
    }

    fn connect(&self, from: &str, addr: &str) -> io::Result<Conn> {
        let mut st = self.st();
        let Some((to, tx)) = st.listeners.get(addr).cloned() else {
            return Err(io::ErrorKind::ConnectionRefused.into());
        };
        if st.cut.contains(&pair(from, &to)) {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let slow = self.rng.chance(0.2);
        let mut mk = |rng: &Rng| {
            st.pipes += 1;
            let id = st.pipes;
            let base = if slow {
                rng.below(20_000) + 1_000
            } else {
                rng.below(500) + 20
            };
            Arc::new(Pipe {
                id,
                state: Mutex::new(PipeState::default()),
                latency: Duration::from_micros(base),
                jitter_us: 300,
                rng: rng.fork(),
            })
        };
        let up = mk(&self.rng);
        let down = mk(&self.rng);
        tracing::trace!(target: "sim", from, to, up = up.id, down = down.id, "connect");
        let link = Arc::new(Link {
            hosts: pair(from, &to),
            up: up.clone(),
            down: down.clone(),
        });
        st.conns.push(Arc::downgrade(&link));
        let server = Conn {
            read: Box::new(Holding {
                inner: PipeReader {
                    pipe: up.clone(),
                    timer: None,
                },
                _link: link.clone(),
            }),
            write: Box::new(PipeWriter { pipe: down.clone() }),
            peer: from.to_string(),
            admitted: None,
        };
        let client = Conn {
            read: Box::new(Holding {
                inner: PipeReader {
                    pipe: down,
                    timer: None,
                },
                _link: link,
            }),
            write: Box::new(PipeWriter { pipe: up }),
            peer: addr.to_string(),
            admitted: None,
        };
        tx.send(server)
            .map_err(|_| io::Error::from(io::ErrorKind::ConnectionRefused))?;
        Ok(client)
    }
}

/// Keeps a connection listed (for cuts and partitions) while either reader lives.
struct Holding<R> {
    inner: R,
    _link: Arc<Link>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Holding<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

struct HostNet {
    net: SimNet,
    host: String,
}

impl Network for HostNet {
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<Conn>> {
        Box::pin(async move {
            // A connection takes a little while to set up, like a TCP handshake.
            tokio::time::sleep(Duration::from_micros(50)).await;
            self.net.connect(&self.host, addr)
        })
    }
}

/// The accept side of a simulated listener.
pub struct SimAcceptor {
    rx: mpsc::UnboundedReceiver<Conn>,
}

impl Acceptor for SimAcceptor {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Conn>> {
        Box::pin(async move {
            match self.rx.recv().await {
                Some(c) => Ok(c),
                None => std::future::pending().await,
            }
        })
    }
}
