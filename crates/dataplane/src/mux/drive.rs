//! The task that drives one session until it ends. yamux makes progress only while its
//! connection is polled, so each session has exactly one driver, owned by whoever started it
//! (the pool's tracker, or the acceptor's `JoinSet`), that polls it: on the connecting side it
//! also opens the streams links ask for and watches for a silent peer; on both sides it closes
//! a session no stream has used for a while.

use super::session::{Inbound, Open, Shared};
use super::socket::Mux;
use super::MuxConfig;
use crate::protocol::refusal::RefusalLog;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

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
                // Streams refused one after another would otherwise keep it open forever.
                if shared.retire_if_unproven(cfg.peer_idle) {
                    refusals.refused("session closed: no stream of it proved the cluster secret", || {
                        format!("peer {peer}, within {:?}", cfg.peer_idle)
                    });
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
