//! The leader's HTTP server: its own accept loop around hyper, in place of `axum::serve`, so
//! that a flood of connections without the cluster secret cannot take the door from the
//! clients that have it. Every connection counts against a cap ([`ApiLimits::max_conns`]); at
//! the cap a new connection closes the oldest one that proves nothing (`table`), so a flood
//! evicts itself. A connection must send a request's headers within
//! [`ApiLimits::header_timeout`], which also ends idle keep-alive connections; a request body
//! must keep coming (`body`). Accept failures (out of descriptors) back off instead of
//! spinning. Refusals and evictions are counted in one [`RefusalLog`], not logged each.

mod body;
mod table;
#[cfg(test)]
mod tests;

use crate::model::backoff::Backoff;
use crate::protocol::refusal::{RefusalLog, INTERVAL};
use axum::http::{HeaderMap, Request};
use axum::Router;
use body::{Held, Paced};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use table::{Rank, Table};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{debug, warn};

/// What the HTTP API grants its clients before they prove anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiLimits {
    /// Connections open at once (at most half the process's descriptor limit is used).
    pub max_conns: usize,
    /// How long a connection may take to send a request's headers, counted from when it
    /// opened or finished its previous request (so idle keep-alive connections end too).
    pub header_timeout: Duration,
    /// A request body must bring [`MIN_BODY_BYTES`] bytes (or end) in every this much time
    /// the server spends waiting for it.
    pub body_timeout: Duration,
    /// How long an answer may wait for its client to take it before its connection may give
    /// way at the cap (`table.rs`, rank 4).
    pub unread_timeout: Duration,
}

/// An answer left unread this many times [`ApiLimits::unread_timeout`] is closed, at the cap
/// or not: each holds some 2 MB of buffers (hostile probe 13: 200 stalled followers took the
/// leader from 48 to 502 MB).
pub const ABANDONED: u32 = 10;

/// The bytes a request body must bring in every [`ApiLimits::body_timeout`] of waiting.
pub const MIN_BODY_BYTES: usize = body::MIN_BYTES_PER_WINDOW;

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_conns: 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            unread_timeout: table::UNREAD,
        }
    }
}

impl ApiLimits {
    /// The cap to apply: [`ApiLimits::max_conns`], but at most half the soft limit of open
    /// descriptors, so that a full house of connections leaves the leader the descriptors
    /// its store and data dir need.
    pub fn effective_max_conns(&self) -> usize {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct we pass, which we own.
        let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            lim.rlim_cur
        } else {
            libc::RLIM_INFINITY
        };
        let half = usize::try_from(soft / 2).unwrap_or(usize::MAX);
        self.max_conns.min(half).max(1)
    }
}

/// Whether a request proves a credential, from its headers (the cluster secret, a worker's
/// session key); such a request is never closed to make room.
pub type Vouch = Arc<dyn Fn(&HeaderMap) -> bool + Send + Sync>;

/// Serves `app` on `listener` under `limits` until `stop`; then every connection ends
/// gracefully (an idle one at once, a busy one once its answer is sent) within `drain`, and
/// those still open are aborted. Returns when every connection task has been joined.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    vouch: Vouch,
    limits: ApiLimits,
    stop: CancellationToken,
    drain: Duration,
) {
    let cap = limits.effective_max_conns();
    let table = Arc::new(Mutex::new(Table::new(cap, limits.unread_timeout)));
    let log = RefusalLog::new("HTTP connections refused or closed", INTERVAL);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let mut conns = JoinSet::new();
    let mut backoff = Backoff::new(Duration::from_millis(5), Duration::from_secs(1));
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            Some(r) = conns.join_next(), if !conns.is_empty() => {
                if let Err(e) = r {
                    if e.is_panic() {
                        warn!(error = %e, "an HTTP connection task panicked");
                    }
                }
                continue;
            }
            a = listener.accept() => a,
        };
        let (sock, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                if out_of_descriptors(&e) {
                    // Free one that proves nothing, so the next accept can succeed.
                    if let Some(ev) = lock(&table).evict(Rank::Unproven, Instant::now()) {
                        ev.close.cancel();
                        log.refused(ev.rank.reason(), || "to free a descriptor");
                    }
                }
                let d = backoff.next();
                log.refused("accept failed", || format!("{e}; retrying in {d:?}"));
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(d) => continue,
                }
            }
        };
        backoff.reset();
        // A streamed answer (a job's output, its final status) is many small writes: without
        // this, Nagle's algorithm holds each behind the peer's delayed ACK (up to 40 ms).
        if let Err(e) = sock.set_nodelay(true) {
            debug!(peer = %peer, error = %e, "set_nodelay failed");
        }
        let admitted = lock(&table).admit(Instant::now());
        let Some((id, close, evicted)) = admitted else {
            log.refused(
                "refused at the cap: every connection carries a request with a credential",
                || format!("peer {peer}, cap {cap}"),
            );
            continue;
        };
        if let Some(ev) = evicted {
            ev.close.cancel();
            log.refused(ev.rank.reason(), || format!("for {peer}, cap {cap}"));
        }
        let open = Arc::new(Open {
            table: table.clone(),
            id,
        });
        let (http, app, vouch, stop) = (http.clone(), app.clone(), vouch.clone(), stop.clone());
        let body_timeout = limits.body_timeout;
        let abandoned = limits.unread_timeout * ABANDONED;
        conns.spawn(async move {
            let conn = connection(sock, &http, app, vouch, body_timeout, open.clone());
            tokio::pin!(conn);
            let ended = tokio::select! {
                r = conn.as_mut() => r,
                // Closed to make room: dropping it closes the socket.
                _ = close.cancelled() => Ok(()),
                // Its client left its answer unread for good: what it holds is freed (a
                // follower reconnects where it stopped).
                () = open.abandoned(abandoned) => {
                    debug!(%peer, "closing an answer its client left unread");
                    Ok(())
                }
                // Stopping: a connection without a request (a slowloris among them) closes now;
                // one carrying a request closes once its answer is sent.
                _ = stop.cancelled() => {
                    if open.busy() {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    } else {
                        Ok(())
                    }
                }
            };
            if let Err(e) = ended {
                debug!(%peer, error = %e, "HTTP connection ended");
            }
        });
    }
    crate::join_within(&mut conns, drain, "HTTP connections").await;
    log.flush();
}

/// One connection's hyper state: every request is paced and counted in the table while its
/// answer is sent; `open` takes it out of the table when the connection is dropped.
fn connection(
    sock: TcpStream,
    http: &http1::Builder,
    app: Router,
    vouch: Vouch,
    body_timeout: Duration,
    open: Arc<Open>,
) -> http1::Connection<TokioIo<TcpStream>, Service> {
    let svc = Service {
        app,
        vouch,
        body_timeout,
        open,
    };
    http.serve_connection(TokioIo::new(sock), svc)
}

/// The app as one connection's hyper service.
struct Service {
    app: Router,
    vouch: Vouch,
    body_timeout: Duration,
    open: Arc<Open>,
}

/// An answer whose connection counts as busy until its body is sent.
type Answer = axum::http::Response<Held<axum::body::Body, Busy>>;

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Answer;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Answer, Self::Error>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let busy = Busy::begin(&self.open, (self.vouch)(req.headers()));
        let req = req.map(|b| axum::body::Body::new(Paced::new(b, self.body_timeout)));
        let app = self.app.clone();
        Box::pin(async move {
            let answer = app.oneshot(req).await;
            answer.map(|r| r.map(|b| Held::new(b, busy)))
        })
    }
}

/// Whether an accept failed for want of descriptors (this process's, or the system's).
fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
    // The table stays consistent whatever panicked: each change is one map operation.
    table.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connection in the table; dropping it (the connection ended, or its task was aborted)
/// takes it out.
struct Open {
    table: Arc<Mutex<Table>>,
    id: u64,
}

impl Open {
    /// Whether it carries a request now.
    fn busy(&self) -> bool {
        lock(&self.table).busy(self.id)
    }

    /// Resolves once the answer it carries has waited `after` for its client to take it.
    async fn abandoned(&self, after: Duration) {
        loop {
            let unread = lock(&self.table).unread_for(self.id, Instant::now());
            match unread {
                Some(d) if d >= after => return,
                Some(d) => tokio::time::sleep(after.saturating_sub(d)).await,
                None => tokio::time::sleep(after).await,
            }
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        lock(&self.table).remove(self.id);
    }
}

/// A request in flight on a connection, until its answer is sent or dropped.
struct Busy(Arc<Open>);

impl Busy {
    fn begin(open: &Arc<Open>, vouched: bool) -> Busy {
        lock(&open.table).begin(open.id, vouched, Instant::now());
        Busy(open.clone())
    }
}

impl body::Progress for Busy {
    fn handed(&self) {
        lock(&self.0.table).handed(self.0.id, Instant::now());
    }

    fn taken(&self) {
        lock(&self.0.table).taken(self.0.id);
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        lock(&self.0.table).end(self.0.id, Instant::now());
    }
}
