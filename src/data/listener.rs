//! The one data listener of a process (worker or leader), shared by all jobs for its whole life.
//! Each accepted connection names its link in a Hello; the handler then feeds the destination
//! task's bounded inbox and forwards the link's acks back. An unknown destination is a normal
//! case: it is answered with a Reject, never a panic.

use super::inbound::{Inbound, Registry};
use super::routes::{RouteTable, Routes};
use crate::ids::{JobId, TaskKey, TaskPos};
use crate::wire::{codec, Frame};
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};

/// Accepts connections until `shutdown`, then waits for every handler to finish.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    routes: Arc<Routes>,
    shutdown: CancellationToken,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let registry = registry.clone();
                    let routes = routes.clone();
                    let stop = shutdown.clone();
                    conns.spawn(
                        async move {
                            if let Err(e) = serve_conn(stream, registry, routes, stop).await {
                                debug!(error = %e, "data connection ended");
                            }
                        }
                        .instrument(tracing::debug_span!("data_conn", %peer)),
                    );
                }
                Err(e) => warn!(error = %e, "accept failed on the data listener"),
            },
            Some(res) = conns.join_next(), if !conns.is_empty() => {
                if let Err(e) = res {
                    warn!(error = %e, "data connection handler panicked");
                }
            }
        }
    }
    conns.shutdown().await;
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
    table
        .get(&from)
        .is_some_and(|(_, current)| *current > attempt)
}

async fn serve_conn(
    stream: TcpStream,
    registry: Arc<Registry>,
    routes: Arc<Routes>,
    shutdown: CancellationToken,
) -> Result<(), ConnError> {
    stream.set_nodelay(true)?;
    let (r, w) = stream.into_split();
    let mut rd = FramedRead::new(r, codec());
    let mut wr = FramedWrite::new(w, codec());
    let hello = match rd.next().await {
        Some(Ok(b)) => Frame::decode(b.freeze()).map_err(|e| ConnError::Protocol(e.to_string()))?,
        Some(Err(e)) => return Err(e.into()),
        None => return Ok(()),
    };
    let Frame::Hello {
        job,
        from_stage,
        from_index,
        from_attempt,
        to_stage,
        to_index,
    } = hello
    else {
        return Err(ConnError::Protocol("first frame is not a Hello".into()));
    };
    let key = TaskKey {
        job: JobId(job),
        pos: TaskPos {
            stage: to_stage,
            index: to_index,
        },
    };
    let Some(handle) = registry.get(&key) else {
        let reject = Frame::Reject {
            retry: true,
            reason: format!("no task {key} here (not started, restarted elsewhere, or finished)"),
        };
        wr.send(reject.encode()).await?;
        return Ok(());
    };
    let from = TaskPos {
        stage: from_stage,
        index: from_index,
    };
    // Fencing: a sender older than the attempt our route table names is a stale attempt (its
    // worker was declared dead but lives on); what it sends may derive from input its
    // replacement never sees, so it is refused, and dropped if it becomes stale later.
    let mut job_routes = routes.watch_existing(&key.job);
    if let Some(r) = &job_routes {
        if stale(&r.borrow(), from, from_attempt) {
            let reject = Frame::Reject {
                retry: false,
                reason: format!("attempt {from_attempt} of {from} is stale"),
            };
            wr.send(reject.encode()).await?;
            return Ok(());
        }
    }
    debug!(%key, from_stage, from_index, from_attempt, "link connected");
    let mut acks = handle.acks.subscribe(from_index);
    let inbox = handle.tx.clone();
    drop(handle);

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
                    from: from_index,
                    first_seq,
                    emit_ns,
                    tuples,
                },
                Frame::Eos { last_seq } => Inbound::Eos {
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
            let (upto, eos) = *acks.borrow_and_update();
            wr.send(Frame::Ack { upto, eos }.encode()).await?;
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
