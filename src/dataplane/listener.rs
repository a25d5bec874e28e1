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
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => {
                    backoff.reset();
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        warn!(peer = %conn.peer, limit = limits.max_conns, "too many data connections; closing a new one");
                        continue;
                    };
                    let registry = registry.clone();
                    let routes = routes.clone();
                    let stop = shutdown.clone();
                    let span = tracing::debug_span!("data_conn", peer = %conn.peer);
                    conns.spawn(
                        async move {
                            let deadline = limits.hello_deadline;
                            if let Err(e) = serve_conn(conn, registry, routes, deadline, stop).await {
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
                    warn!(error = %e, retry_in = ?d, "accept failed on the data listener");
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
    shutdown: CancellationToken,
) -> Result<(), ConnError> {
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
    let handle = match (verdict, handle) {
        (Ok(()), Some(h)) => h,
        (Err(refusal), _) => {
            if let Refusal::Unauthenticated(_) = refusal {
                warn!(peer = %conn.peer, %key, %from, from_attempt = hello.from_attempt, "data connection refused: not signed by the worker running the sender attempt it names");
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
    let ctl = ConnCtl::default();
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
mod tests {
    use super::*;
    use crate::dataplane::routes::Dest;
    use crate::model::tuple::Tuple;
    use crate::protocol::auth::Identity;
    use crate::protocol::control::Endpoint;
    use tokio::net::{TcpListener, TcpStream};

    type Rd = FramedRead<tokio::net::tcp::OwnedReadHalf, tokio_util::codec::LengthDelimitedCodec>;
    type Wr = FramedWrite<tokio::net::tcp::OwnedWriteHalf, tokio_util::codec::LengthDelimitedCodec>;

    /// A listener on a loopback port serving `registry` by `routes` until `stop` is cancelled.
    async fn listen(
        registry: Arc<Registry>,
        routes: Arc<Routes>,
    ) -> (
        std::net::SocketAddr,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            registry,
            routes,
            Limits::default(),
            stop.clone(),
        ));
        (addr, stop, server)
    }

    /// Makes a Hello's proof from the challenge and the Hello.
    type Prover<'a> = dyn FnOnce(&[u8; 16], &[u8]) -> Vec<u8> + 'a;

    /// The worker running the sender task 1.0 in these tests.
    fn sender() -> Identity {
        Identity::from_seed([1; 32]).unwrap()
    }

    /// Where sender attempt `attempt` of task 1.0 runs: on the worker [`sender`].
    fn sender_at(addr: &str, attempt: u32) -> Dest {
        let at = Endpoint {
            addr: addr.into(),
            key: sender().public(),
        };
        Dest::running(&at, attempt)
    }

    async fn hello(addr: std::net::SocketAddr, from_attempt: u32, to_attempt: u32) -> (Rd, Wr) {
        hello_as(addr, from_attempt, to_attempt, |n, body| {
            sender().sign_hello(n, body)
        })
        .await
    }

    /// Says Hello for sender 1.0 attempt `from_attempt` to receiver 2.0 attempt `to_attempt`
    /// with the proof `prove` makes of the challenge and the Hello.
    async fn hello_as(
        addr: std::net::SocketAddr,
        from_attempt: u32,
        to_attempt: u32,
        prove: impl FnOnce(&[u8; 16], &[u8]) -> Vec<u8>,
    ) -> (Rd, Wr) {
        let s = TcpStream::connect(addr).await.unwrap();
        let (r, w) = s.into_split();
        let mut rd = FramedRead::new(r, codec());
        let mut wr = FramedWrite::new(w, codec());
        let Some(Frame::Challenge(nonce)) = next(&mut rd).await else {
            panic!("the listener speaks first");
        };
        let mut h = Hello {
            job: "j".into(),
            from_stage: 1,
            from_index: 0,
            from_attempt,
            to_stage: 2,
            to_index: 0,
            to_attempt,
            epoch: 0,
            acked: 0,
            eos_acked: false,
            proof: Vec::new(),
        };
        h.proof = prove(&nonce, &h.signed_body());
        wr.send(Frame::Hello(h).encode()).await.unwrap();
        (rd, wr)
    }

    async fn next(rd: &mut Rd) -> Option<Frame> {
        let f = tokio::time::timeout(Duration::from_secs(10), rd.next())
            .await
            .ok()??;
        Frame::decode(f.ok()?.freeze()).ok()
    }

    #[tokio::test]
    async fn links_are_fenced_at_both_ends() {
        let registry = Arc::new(Registry::default());
        let routes = Arc::new(Routes::default());
        let job = JobId("j".into());
        let from = TaskPos { stage: 1, index: 0 };
        routes.set_many(&job, 1, &[(from, sender_at("x:1", 2))]);
        let key = TaskKey {
            job: job.clone(),
            pos: TaskPos { stage: 2, index: 0 },
        };
        let (addr, stop, server) = listen(registry.clone(), routes.clone()).await;

        // Nobody registered yet: come back later.
        let (mut rd, _wr) = hello(addr, 2, 5).await;
        assert!(matches!(
            next(&mut rd).await,
            Some(Frame::Reject { retry: true, .. })
        ));

        // Attempt 4 of the receiver is registered; a Hello for attempt 5 must not reach it.
        let (mut old_inbox, _old_acks, _old_reg) = registry.register(key.clone(), 4, 0, 4).unwrap();
        let (mut rd, _wr) = hello(addr, 2, 5).await;
        assert!(matches!(
            next(&mut rd).await,
            Some(Frame::Reject { retry: true, .. })
        ));
        assert!(
            old_inbox.try_recv().is_err(),
            "an older receiver attempt got a link"
        );

        // Attempt 5 registers: an older one can never register over it.
        let (mut inbox, acks, _reg) = registry.register(key.clone(), 5, 0, 4).unwrap();
        assert!(registry.register(key.clone(), 4, 0, 4).is_none());

        // Sender attempt 1 is older than the route table's attempt 2: refused for good.
        let (mut rd, _wr) = hello(addr, 1, 5).await;
        assert!(matches!(
            next(&mut rd).await,
            Some(Frame::Reject { retry: false, .. })
        ));

        // Sender attempt 3 is newer than the routes know: come back once they do.
        let (mut rd, _wr) = hello(addr, 3, 5).await;
        assert!(matches!(
            next(&mut rd).await,
            Some(Frame::Reject { retry: true, reason }) if reason.contains("routes yet")
        ));

        // Sender attempt 2 to receiver attempt 5: connected, acked, its batches delivered.
        let (mut rd, mut wr) = hello(addr, 2, 5).await;
        assert!(matches!(
            inbox.recv().await,
            Some(Inbound::Connected {
                from: 0,
                acked: 0,
                ..
            })
        ));
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

        // A newer attempt of the sender appears in the routes: the open connection is dropped.
        routes.set_many(&job, 2, &[(from, sender_at("y:1", 3))]);
        assert_eq!(next(&mut rd).await, None);

        stop.cancel();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_task_can_reset_a_connection() {
        let registry = Arc::new(Registry::default());
        let routes = Arc::new(Routes::default());
        let key = TaskKey {
            job: JobId("j".into()),
            pos: TaskPos { stage: 2, index: 0 },
        };
        let from = TaskPos { stage: 1, index: 0 };
        routes.set_many(&key.job, 1, &[(from, sender_at("x:1", 0))]);
        let (mut inbox, _acks, _reg) = registry.register(key, 0, 0, 4).unwrap();
        let (addr, stop, server) = listen(registry, routes).await;
        let (mut rd, _wr) = hello(addr, 0, 0).await;
        let Some(Inbound::Connected { conn, .. }) = inbox.recv().await else {
            panic!("no Connected");
        };
        assert!(matches!(next(&mut rd).await, Some(Frame::Ack { .. })));
        conn.reset();
        assert_eq!(next(&mut rd).await, None);
        stop.cancel();
        server.await.unwrap();
    }

    /// The hole a hostile probe found: a process holding the cluster secret, even a worker of
    /// the same job with a key of its own in the routes, posed as upstream task 1.0 attempt 0
    /// while the real link was live and had a batch above the receiver's mark acknowledged.
    /// Now only the worker the routes name for that attempt can open its link: every other
    /// proof is refused for good, and nothing of it reaches the receiver.
    #[tokio::test]
    async fn only_the_worker_running_the_sender_attempt_can_speak_for_it() {
        let registry = Arc::new(Registry::default());
        let routes = Arc::new(Routes::default());
        let job = JobId("j".into());
        let neighbour = Identity::from_seed([9; 32]).unwrap();
        let neighbour_at = Endpoint {
            addr: "n:1".into(),
            key: neighbour.public(),
        };
        routes.set_many(
            &job,
            1,
            &[
                (TaskPos { stage: 1, index: 0 }, sender_at("x:1", 0)),
                // Task 1.1 of the same job runs on another worker, whose key is in the routes.
                (
                    TaskPos { stage: 1, index: 1 },
                    Dest::running(&neighbour_at, 0),
                ),
            ],
        );
        let key = TaskKey {
            job: job.clone(),
            pos: TaskPos { stage: 2, index: 0 },
        };
        let (mut inbox, acks, _reg) = registry.register(key, 0, 0, 4).unwrap();
        let (addr, stop, server) = listen(registry, routes).await;

        // The real link is live.
        let (mut rd, mut wr) = hello(addr, 0, 0).await;
        assert!(matches!(
            inbox.recv().await,
            Some(Inbound::Connected { from: 0, .. })
        ));
        assert!(matches!(
            next(&mut rd).await,
            Some(Frame::Ack { upto: 0, .. })
        ));
        let real = Frame::Batch {
            first_seq: 1,
            emit_ns: 0,
            tuples: vec![Tuple::new("k", "real")],
        };
        wr.send(real.encode()).await.unwrap();
        assert!(matches!(
            inbox.recv().await,
            Some(Inbound::Batch { first_seq: 1, .. })
        ));
        acks.set(0, 1, false);

        // What a holder of the cluster secret can make: an HMAC under a key derived from it,
        // a proof of another worker's key (its own, registered), nothing at all.
        let secret_hmac = |n: &[u8; 16], body: &[u8]| {
            use hmac::Mac;
            let mut m =
                <hmac::Hmac<sha2::Sha256>>::new_from_slice(b"the-cluster-secret-0123").unwrap();
            m.update(n);
            m.update(body);
            m.finalize().into_bytes().to_vec()
        };
        let forgeries: [(&str, Box<Prover<'_>>); 4] = [
            ("an HMAC under the cluster secret", Box::new(secret_hmac)),
            (
                "another worker's signature",
                Box::new(|n: &[u8; 16], b: &[u8]| neighbour.sign_hello(n, b)),
            ),
            ("no proof", Box::new(|_: &[u8; 16], _: &[u8]| Vec::new())),
            (
                "64 zero bytes",
                Box::new(|_: &[u8; 16], _: &[u8]| vec![0; 64]),
            ),
        ];
        for (what, prove) in forgeries {
            let (mut frd, mut fwr) = hello_as(addr, 0, 0, prove).await;
            match next(&mut frd).await {
                Some(Frame::Reject {
                    retry: false,
                    reason,
                }) => {
                    assert!(reason.contains("authentication failed"), "{what}: {reason}")
                }
                other => panic!("{what}: expected a refusal for good, got {other:?}"),
            }
            // The forged batch at the mark + 1 goes nowhere.
            let forged = Frame::Batch {
                first_seq: 2,
                emit_ns: 0,
                tuples: vec![Tuple::new("k", "forged")],
            };
            let _ = fwr.send(forged.encode()).await;
            assert_eq!(
                next(&mut frd).await,
                None,
                "{what}: the connection is closed"
            );
        }
        // A signature made for one connection's challenge is no good on another.
        let (mut crd, _cwr) =
            hello_as(addr, 0, 0, |_, body| sender().sign_hello(&[0; 16], body)).await;
        assert!(matches!(
            next(&mut crd).await,
            Some(Frame::Reject { retry: false, .. })
        ));

        // Nothing of theirs reached the receiver; the real link carries on.
        assert!(
            inbox.try_recv().is_err(),
            "a forged connection reached the task"
        );
        assert_eq!(
            next(&mut rd).await,
            Some(Frame::Ack {
                upto: 1,
                eos: false
            })
        );
        stop.cancel();
        server.await.unwrap();
    }
}
