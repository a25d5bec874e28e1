//! Opening a link: connect to wherever the destination runs now, answer the listener's
//! challenge with a Hello, and wait for the receiver's verdict. Nothing is written before
//! admission, so a refused connection can never have delivered anything.

use super::connection::{dest_of, finished, Connection};
use super::LinkSpec;
use crate::model::backoff::Backoff;
use crate::protocol::frame::{codec, Frame, Hello};
use crate::routes::RouteTable;
use futures::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How an attempt to open a link ended.
pub(super) enum Admission {
    /// The receiver took the link; its first ack (`upto`, `eos`) came with it.
    Admitted(Box<Connection>, u64, bool),
    /// Cancelled while connecting.
    Cancelled,
    /// The destination finished: there is nothing left to deliver to it.
    Finished,
    /// The receiver refused this sender for good (stale attempt or epoch, or a Hello not
    /// signed by the key its routes name for this attempt).
    Fenced(String),
}

/// Connects to wherever the destination runs now, says Hello (naming both attempts and how far
/// the link is acknowledged) and waits for the verdict: the receiver's first ack admits the
/// link, a retryable Reject (the receiver is not registered yet) means try again. Nothing is
/// written before admission, so a refused connection can never have delivered anything.
pub(super) async fn connect(
    spec: &LinkSpec,
    (acked, eos_acked): (u64, bool),
    routes: &mut watch::Receiver<RouteTable>,
    cancel: &CancellationToken,
    backoff: &mut Backoff,
) -> Admission {
    loop {
        let dest = {
            let table = routes.borrow_and_update();
            if finished(&table, &spec.to) {
                return Admission::Finished;
            }
            dest_of(&table, &spec.to)
        };
        if let Some((addr, to_attempt)) = dest.clone() {
            // A socket only with a slot of the process's budget: past it, wait (a link
            // finishing frees one) instead of failing for want of descriptors.
            let slot = tokio::select! {
                _ = cancel.cancelled() => return Admission::Cancelled,
                s = spec.slots.acquire() => s,
            };
            let Some(slot) = slot else {
                return Admission::Cancelled;
            };
            let attempt = tokio::time::timeout(Duration::from_secs(2), spec.net.connect(&addr));
            let res = tokio::select! {
                _ = cancel.cancelled() => return Admission::Cancelled,
                r = attempt => r,
            };
            match res {
                Ok(Ok(stream)) => {
                    let mut rd = FramedRead::new(stream.read, codec());
                    let mut wr = FramedWrite::new(stream.write, codec());
                    // The listener speaks first: a challenge the Hello must be signed over.
                    let challenge = tokio::select! {
                        _ = cancel.cancelled() => return Admission::Cancelled,
                        f = tokio::time::timeout(Duration::from_secs(10), rd.next()) => f,
                    };
                    let challenge = match challenge {
                        Ok(Some(Ok(b))) => match Frame::decode(b.freeze()) {
                            Ok(Frame::Challenge(n)) => Some(n),
                            other => {
                                debug!(job = %spec.job, to = %spec.to, frame = ?other, "expected a challenge");
                                None
                            }
                        },
                        _ => None,
                    };
                    if let Some(challenge) = challenge {
                        let mut hello = Hello {
                            job: spec.job.0.clone(),
                            from_stage: spec.from.stage,
                            from_index: spec.from.index,
                            from_attempt: spec.attempt,
                            to_stage: spec.to.stage,
                            to_index: spec.to.index,
                            to_attempt,
                            epoch: spec.epoch,
                            acked,
                            eos_acked,
                            proof: Vec::new(),
                        };
                        hello.proof = spec.identity.sign_hello(&challenge, &hello.signed_body());
                        if wr.send(Frame::Hello(hello).encode()).await.is_ok() {
                            // The Hello is flushed: the codec holds nothing more.
                            let wr = super::writer::FrameWriter::new(wr.into_inner());
                            let mut c = Connection {
                                rd,
                                wr,
                                dest: (addr, to_attempt),
                                _slot: slot,
                            };
                            match verdict(spec, &mut c, routes, cancel).await {
                                Verdict::Ack(upto, eos) => {
                                    return Admission::Admitted(Box::new(c), upto, eos)
                                }
                                Verdict::Cancelled => return Admission::Cancelled,
                                Verdict::Fenced(reason) => return Admission::Fenced(reason),
                                Verdict::Retry => {}
                            }
                        }
                    }
                }
                Ok(Err(e)) => {
                    debug!(job = %spec.job, to = %spec.to, %addr, error = %e, "connect failed")
                }
                Err(_) => debug!(job = %spec.job, to = %spec.to, %addr, "connect timed out"),
            }
        }
        let d = backoff.next();
        tokio::select! {
            _ = cancel.cancelled() => return Admission::Cancelled,
            r = routes.changed() => {
                if r.is_err() {
                    return Admission::Cancelled;
                }
                // A new destination (moved, or a new attempt) is worth trying at once and
                // again soon; a table that changed elsewhere keeps the backoff growing.
                if dest_of(&routes.borrow(), &spec.to) != dest {
                    backoff.reset();
                }
            }
            _ = tokio::time::sleep(d) => {}
        }
    }
}

/// The receiver's answer to a Hello.
enum Verdict {
    Ack(u64, bool),
    Retry,
    Fenced(String),
    Cancelled,
}

/// Waits for the receiver's answer to a Hello. A receiver whose inbox is full answers late,
/// so there is no deadline here; a move of the destination or cancellation ends the wait.
async fn verdict(
    spec: &LinkSpec,
    c: &mut Connection,
    routes: &mut watch::Receiver<RouteTable>,
    cancel: &CancellationToken,
) -> Verdict {
    let moved = async {
        loop {
            if routes.changed().await.is_err() {
                return;
            }
            if dest_of(&routes.borrow(), &spec.to).as_ref() != Some(&c.dest) {
                return;
            }
        }
    };
    let frame = tokio::select! {
        _ = cancel.cancelled() => return Verdict::Cancelled,
        _ = moved => return Verdict::Retry,
        f = c.rd.next() => f,
    };
    match frame.map(|r| r.map(|b| Frame::decode(b.freeze()))) {
        Some(Ok(Ok(Frame::Ack { upto, eos, .. }))) => Verdict::Ack(upto, eos),
        Some(Ok(Ok(Frame::Reject {
            retry: false,
            reason,
        }))) => Verdict::Fenced(reason),
        Some(Ok(Ok(Frame::Reject { reason, .. }))) => {
            debug!(job = %spec.job, from = %spec.from, to = %spec.to, %reason, "link refused; retrying");
            Verdict::Retry
        }
        Some(Ok(Ok(other))) => {
            warn!(job = %spec.job, to = %spec.to, frame = ?other, "expected an ack or a reject; retrying");
            Verdict::Retry
        }
        Some(Ok(Err(e))) => {
            warn!(job = %spec.job, to = %spec.to, error = %e, "bad frame instead of an admission; retrying");
            Verdict::Retry
        }
        Some(Err(e)) => {
            debug!(job = %spec.job, to = %spec.to, error = %e, "link connection failed before admission");
            Verdict::Retry
        }
        None => {
            debug!(job = %spec.job, to = %spec.to, "link connection closed before admission");
            Verdict::Retry
        }
    }
}
