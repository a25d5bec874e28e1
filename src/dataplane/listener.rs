//! The one data listener of a process (worker or leader), shared by all jobs for its whole life.
//! Each accepted connection names its link in a Hello; the handler then feeds the destination
//! task's bounded inbox and forwards the link's acks back. An unknown destination is a normal
//! case: it is answered with a Reject, never a panic.

use super::inbound::{Inbound, Registry};
use super::routes::{RouteTable, Routes};
use crate::model::ids::{JobId, TaskKey, TaskPos};
use crate::protocol::frame::{codec, Frame};
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tuple::Tuple;

    async fn hello(
        addr: std::net::SocketAddr,
        attempt: u32,
    ) -> (
        FramedRead<tokio::net::tcp::OwnedReadHalf, tokio_util::codec::LengthDelimitedCodec>,
        FramedWrite<tokio::net::tcp::OwnedWriteHalf, tokio_util::codec::LengthDelimitedCodec>,
    ) {
        let s = TcpStream::connect(addr).await.unwrap();
        let (r, w) = s.into_split();
        let mut wr = FramedWrite::new(w, codec());
        let h = Frame::Hello {
            job: "j".into(),
            from_stage: 1,
            from_index: 0,
            from_attempt: attempt,
            to_stage: 2,
            to_index: 0,
        };
        wr.send(h.encode()).await.unwrap();
        (FramedRead::new(r, codec()), wr)
    }

    async fn next(
        rd: &mut FramedRead<
            tokio::net::tcp::OwnedReadHalf,
            tokio_util::codec::LengthDelimitedCodec,
        >,
    ) -> Option<Frame> {
        let f = tokio::time::timeout(std::time::Duration::from_secs(10), rd.next())
            .await
            .ok()??;
        Frame::decode(f.ok()?.freeze()).ok()
    }

    #[tokio::test]
    async fn stale_sender_attempts_are_fenced_off() {
        let registry = Arc::new(Registry::default());
        let routes = Arc::new(Routes::default());
        let job = JobId("j".into());
        let from = TaskPos { stage: 1, index: 0 };
        routes.set_many(&job, 1, &[(from, "x:1".into(), 2)]);
        let key = TaskKey {
            job: job.clone(),
            pos: TaskPos { stage: 2, index: 0 },
        };
        let (mut inbox, acks, _reg) = registry.register(key, 4);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            registry.clone(),
            routes.clone(),
            stop.clone(),
        ));

        // Attempt 1 is older than the route table's attempt 2: refused for good.
        let (mut rd, _wr) = hello(addr, 1).await;
        assert!(matches!(
            next(&mut rd).await,
            Some(Frame::Reject { retry: false, .. })
        ));

        // Attempt 2 is current: acked and its batches delivered.
        let (mut rd, mut wr) = hello(addr, 2).await;
        assert_eq!(
            next(&mut rd).await,
            Some(Frame::Ack {
                upto: 0,
                eos: false
            })
        );
        let b = Frame::Batch {
            first_seq: 1,
            emit_ns: 0,
            tuples: vec![Tuple::new("k", "v")],
        };
        wr.send(b.encode()).await.unwrap();
        assert!(matches!(
            inbox.recv().await,
            Some(Inbound::Batch {
                from: 0,
                first_seq: 1,
                ..
            })
        ));
        acks.set(0, 1, false);
        assert_eq!(
            next(&mut rd).await,
            Some(Frame::Ack {
                upto: 1,
                eos: false
            })
        );

        // A newer attempt appears in the routes: the open connection of attempt 2 is dropped.
        routes.set_many(&job, 2, &[(from, "y:1".into(), 3)]);
        assert_eq!(next(&mut rd).await, None);

        stop.cancel();
        server.await.unwrap();
    }
}
