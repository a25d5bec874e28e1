//! The one data listener of a worker, shared by all jobs for its whole life. Each accepted
//! connection names its link in a Hello signed by the sending worker's key; the handler checks
//! that signature against the key the job's route table names for that sender attempt, then
//! feeds the destination task's bounded inbox and forwards the link's acks back. An unknown
//! destination is a normal case: it is answered with a Reject, never a panic.

use super::inbound::{ConnCtl, Inbound, Registry};
use super::routes::{RouteTable, Routes};
use super::transport::{Acceptor, Conn};
use super::DataConfig;
use crate::model::backoff::Backoff;
use crate::model::ids::{JobId, TaskKey, TaskPos};
use crate::protocol::auth::nonce;
use crate::protocol::frame::{codec, Frame, Hello, MAX_FRAME, MAX_HELLO};
use crate::protocol::refusal::{RefusalLog, INTERVAL};
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};

/// What a listener grants peers before they prove anything.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How long a new connection may take to say Hello before it is dropped.
    pub hello_deadline: Duration,
    /// Connections served at once; more are closed as they come.
    pub max_conns: usize,
}

impl Limits {
    /// The limits `cfg` sets.
    pub fn of(cfg: &DataConfig) -> Limits {
        Limits {
            hello_deadline: Duration::from_millis(cfg.hello_deadline_ms as u64),
            max_conns: cfg.max_conns,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::of(&DataConfig::default())
    }
}

/// Accepts connections until `shutdown`, then waits for every handler to finish. Each
/// connection must say Hello within `limits.hello_deadline`, signed by the key `routes` names
/// for the sender attempt it speaks for; at most `limits.max_conns` are served at once.
/// Refusals (over the cap, unsigned Hellos) and accept failures are counted in one
/// [`RefusalLog`]: a flood of them writes a line per interval, not a line each.
pub async fn serve(
    mut listener: impl Acceptor,
    registry: Arc<Registry>,
    routes: Arc<Routes>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let mut conns = JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_conns));
    let mut backoff = Backoff::new(Duration::from_millis(5), Duration::from_secs(1));
    let refusals = Arc::new(RefusalLog::new("data connections refused", INTERVAL));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => {
                    backoff.reset();
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        refusals.refused("too many connections", || {
                            format!("peer {}, limit {}", conn.peer, limits.max_conns)
                        });
                        continue;
                    };
                    let registry = registry.clone();
                    let refusals = refusals.clone();
                    let routes = routes.clone();
                    let stop = shutdown.clone();
                    let span = tracing::debug_span!("data_conn", peer = %conn.peer);
                    conns.spawn(
                        async move {
                            let deadline = limits.hello_deadline;
                            let served = serve_conn(conn, registry, routes, deadline, &refusals, stop);
                            if let Err(e) = served.await {
                                debug!(error = %e, "data connection ended");
                            }
                            drop(slot);
                        }
                        .instrument(span),
                    );
                }
                Err(e) => {
                    // Out of descriptors, say: back off instead of spinning on the error.
                    let d = backoff.next();
                    refusals.refused("accept failed (out of descriptors?)", || {
                        format!("{e}; retrying in {d:?}")
                    });
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(d) => {}
                    }
                }
            },
            Some(res) = conns.join_next(), if !conns.is_empty() => {
                if let Err(e) = res {
                    warn!(error = %e, "data connection handler panicked");
                }
            }
        }
    }
    conns.shutdown().await;
    listener.shutdown().await;
    refusals.flush();
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// Socket error.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Malformed frame.
    #[error("protocol: {0}")]
    Protocol(String),
}

/// Whether the route table knows a newer attempt of the sender than `attempt`.
fn stale(table: &RouteTable, from: TaskPos, attempt: u32) -> bool {
    table.get(&from).is_some_and(|d| d.attempt > attempt)
}

/// Why a Hello was refused; each becomes a Reject frame.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// The receiver it names is not here yet, or this worker has not yet learned where the
    /// sender runs (it will soon be in its routes): try again.
    Later(String),
    /// The sender is stale: a newer attempt or epoch of it exists. Never again.
    Stale(String),
    /// The Hello is not signed by the key of the worker the route table names for the sender
    /// attempt it speaks for. Never again.
    Unauthenticated(String),
}

impl Refusal {
    /// The Reject frame that answers it.
    fn reject(self) -> Frame {
        match self {
            Refusal::Later(reason) => Frame::Reject {
                retry: true,
                reason,
            },
            Refusal::Stale(reason) | Refusal::Unauthenticated(reason) => Frame::Reject {
                retry: false,
                reason,
            },
        }
    }
}

/// Decides whether a Hello may reach a registered task. Nothing reaches a task unless it is
/// signed by the worker our route table names for the sender attempt, whoever holds the
/// cluster secret.
fn admit(
    hello: &Hello,
    challenge: &[u8; 16],
    registered: Option<(u32, u32)>,
    table: Option<&RouteTable>,
) -> Result<(), Refusal> {
    let to = TaskPos {
        stage: hello.to_stage,
        index: hello.to_index,
    };
    let from = TaskPos {
        stage: hello.from_stage,
        index: hello.from_index,
    };
    if table.is_some_and(|t| stale(t, from, hello.from_attempt)) {
        return Err(Refusal::Stale(format!(
            "attempt {} of {from} is stale",
            hello.from_attempt
        )));
    }
    let (Some((attempt, epoch)), Some(table)) = (registered, table) else {
        return Err(Refusal::Later(format!(
            "no task {to} here (not started, restarted elsewhere, or finished)"
        )));
    };
    let Some(sender) = table.get(&from).filter(|d| d.attempt == hello.from_attempt) else {
        return Err(Refusal::Later(format!(
            "attempt {} of {from} is not in this worker's routes yet",
            hello.from_attempt
        )));
    };
    let signed = sender
        .key
        .is_some_and(|k| k.verify_hello(challenge, &hello.signed_body(), &hello.proof));
    if !signed {
        return Err(Refusal::Unauthenticated(format!(
            "authentication failed: the Hello is not signed by the worker running attempt {} of {from}",
            hello.from_attempt
        )));
    }
    if hello.epoch < epoch {
        return Err(Refusal::Stale(format!(
            "epoch {} is over (epoch {epoch} runs)",
            hello.epoch
        )));
    }
    if hello.epoch > epoch || hello.to_attempt != attempt {
        return Err(Refusal::Later(format!(
            "attempt {} of {to} (epoch {}) is not here; attempt {attempt} (epoch {epoch}) is",
            hello.to_attempt, hello.epoch
        )));
    }
    Ok(())
}

async fn serve_conn(
    conn: Conn,
    registry: Arc<Registry>,
    routes: Arc<Routes>,
    hello_deadline: Duration,
    refusals: &RefusalLog,
    shutdown: CancellationToken,
) -> Result<(), ConnError> {
    let admitted = conn.admitted;
    let mut rd = FramedRead::new(conn.read, codec());
    // Until the Hello is authenticated, a peer may not make us buffer a large frame.
    rd.decoder_mut().set_max_frame_length(MAX_HELLO);
    let mut wr = FramedWrite::new(conn.write, codec());
    let challenge = nonce();
    wr.send(Frame::Challenge(challenge).encode()).await?;
    let first = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        f = tokio::time::timeout(hello_deadline, rd.next()) => match f {
            Ok(f) => f,
            Err(_) => return Err(ConnError::Protocol("no Hello before the deadline".into())),
        },
    };
    let hello = match first {
        Some(Ok(b)) => Frame::decode(b.freeze()).map_err(|e| ConnError::Protocol(e.to_string()))?,
        Some(Err(e)) => return Err(e.into()),
        None => return Ok(()),
    };
    let Frame::Hello(hello) = hello else {
        return Err(ConnError::Protocol("first frame is not a Hello".into()));
    };
    let key = TaskKey {
        job: JobId(hello.job.clone()),
        pos: TaskPos {
            stage: hello.to_stage,
            index: hello.to_index,
        },
    };
    let from = TaskPos {
        stage: hello.from_stage,
        index: hello.from_index,
    };
    // The sender must be who it says (signed by the key of the worker our route table names
    // for its attempt) and current (no newer attempt of it in our routes); the receiver must
    // be exactly the attempt and epoch the sender expects.
    let handle = registry.get(&key);
    let mut job_routes = routes.watch_existing(&key.job);
    let verdict = admit(
        &hello,
        &challenge,
        handle.as_ref().map(|h| (h.attempt, h.epoch)),
        job_routes.as_ref().map(|r| r.borrow().clone()).as_ref(),
    );
    // Signed by a worker of the cluster: whatever carries the connection may trust it.
    if let (Ok(()), Some(admitted)) = (&verdict, admitted) {
        admitted();
    }
    let handle = match (verdict, handle) {
        (Ok(()), Some(h)) => h,
        (Err(refusal), _) => {
            if let Refusal::Unauthenticated(_) = refusal {
                refusals.refused(
                    "not signed by the worker running the sender attempt it names",
                    || {
                        let a = hello.from_attempt;
                        format!("peer {}, to {key}, from {from} attempt {a}", conn.peer)
                    },
                );
            } else {
                debug!(%key, %from, ?refusal, "link refused");
            }
            wr.send(refusal.reject().encode()).await?;
            return Ok(());
        }
        (Ok(()), None) => return Ok(()),
    };
    rd.decoder_mut().set_max_frame_length(MAX_FRAME);
    debug!(%key, %from, from_attempt = hello.from_attempt, to_attempt = hello.to_attempt, "link connected");
    let from_index = hello.from_index;
    let from_attempt = hello.from_attempt;
    let mut acks = handle.acks.subscribe(from_index);
    let inbox = handle.tx.clone();
    drop(handle);
    let ctl = ConnCtl::new(from_attempt);
    let connected = Inbound::Connected {
        from: from_index,
        acked: hello.acked,
        eos_acked: hello.eos_acked,
        conn: ctl.clone(),
    };
    if inbox.send(connected).await.is_err() {
        return Ok(());
    }

    let reader = async {
        while let Some(frame) = rd.next().await {
            let frame =
                Frame::decode(frame?.freeze()).map_err(|e| ConnError::Protocol(e.to_string()))?;
            let msg = match frame {
                Frame::Batch {
                    first_seq,
                    emit_ns,
                    tuples,
                } => Inbound::Batch {
                    conn: ctl.clone(),
                    from: from_index,
                    first_seq,
                    emit_ns,
                    tuples,
                },
                Frame::Eos { last_seq } => Inbound::Eos {
                    conn: ctl.clone(),
                    from: from_index,
                    last_seq,
                },
                other => return Err(ConnError::Protocol(format!("unexpected frame {other:?}"))),
            };
            if inbox.send(msg).await.is_err() {
                // The task ended under us; the sender will reconnect to wherever it runs next.
                return Ok(true);
            }
        }
        Ok(false)
    };
    let writer = async {
        loop {
            let (upto, eos, seen, by) = *acks.borrow_and_update();
            wr.send(
                Frame::Ack {
                    upto,
                    eos,
                    seen,
                    by,
                }
                .encode(),
            )
            .await?;
            if acks.changed().await.is_err() {
                return Ok::<_, ConnError>(());
            }
        }
    };
    let fenced = async {
        match job_routes.as_mut() {
            Some(r) => loop {
                if r.changed().await.is_err() {
                    return std::future::pending::<()>().await;
                }
                if stale(&r.borrow_and_update(), from, from_attempt) {
                    return;
                }
            },
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => Ok(()),
        _ = ctl.reset_requested() => {
            debug!(%key, %from, "connection reset by its task (protocol error)");
            Ok(())
        }
        _ = fenced => {
            debug!(%key, %from, from_attempt, "sender became stale; closing its connection");
            Ok(())
        }
        res = reader => match res {
            Ok(true) => {
                // Closing is the answer: the sender reconnects and asks where the task runs now.
                debug!(%key, "destination task ended; closing its link connection");
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        },
        res = writer => res,
    }
}

#[cfg(test)]
mod tests;
