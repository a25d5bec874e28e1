//! The loop of one link: take batches from the router while the window has room, write them,
//! read the receiver's acks, follow the destination when it moves, reconnect and re-send after a
//! failure, and end once the end of stream is acknowledged (or the input is abandoned, or the
//! link is fenced off or cancelled).

use super::admission::{connect, Admission};
use super::connection::{dest_of, send, Connection};
use super::window::{notify_done, take_ack, Window};
use super::{LinkEnd, LinkMsg, LinkSpec, EPOCH_SHIFT};
use crate::model::backoff::Backoff;
use crate::protocol::frame::{to_wire, Frame};
use crate::routes::RouteTable;
use crate::DataConfig;
use bytes::Bytes;
use futures::StreamExt;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The first wait before a link tries its destination again (a receiver not registered yet
/// is the common case at a job's start: it is there within milliseconds).
const RECONNECT_FIRST: Duration = Duration::from_millis(5);

/// The longest wait between a link's tries of the same destination. A destination that stays
/// unreachable costs one connection a second per link, not a storm; a new destination in the
/// routes is tried at once whatever the wait.
const RECONNECT_CAP: Duration = Duration::from_secs(1);

/// The link of a restarted sender whose destination already finished: everything it
/// regenerates was delivered by an earlier attempt, so its input is drained and dropped.
async fn drain_to_finished(
    spec: &LinkSpec,
    input: &mut mpsc::Receiver<LinkMsg>,
    (input_closed, eos_acked): (bool, bool),
    cancel: &CancellationToken,
) -> LinkEnd {
    debug!(job = %spec.job, from = %spec.from, to = %spec.to, "destination finished; its share of the regenerated output is dropped");
    spec.settle_upto(u64::MAX);
    if !input_closed {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return LinkEnd::Cancelled,
                m = input.recv() => match m {
                    Some(LinkMsg::Batch(_)) => {}
                    Some(LinkMsg::End) => break,
                    None => return LinkEnd::Cancelled,
                },
            }
        }
    }
    if !eos_acked {
        notify_done(spec);
    }
    LinkEnd::Done
}

/// Tells the sending task's meter, as a link ends, that it no longer tries to connect.
struct Reached<'a>(&'a LinkSpec);

impl Drop for Reached<'_> {
    fn drop(&mut self) {
        if let Some(m) = &self.0.meter {
            m.reached(self.0.to);
        }
    }
}

/// Runs a link until its end of stream is acknowledged (or, lingering, until cancelled).
pub async fn run_link(
    spec: LinkSpec,
    cfg: DataConfig,
    mut input: mpsc::Receiver<LinkMsg>,
    mut routes: watch::Receiver<RouteTable>,
    cancel: CancellationToken,
) -> LinkEnd {
    let floor = u64::from(spec.epoch) << EPOCH_SHIFT;
    let mut window = Window {
        batches: VecDeque::new(),
        bytes: 0,
        acked: floor,
        peer_ended: false,
    };
    let mut next_seq: u64 = floor + 1;
    let mut input_closed = false;
    let mut eos_sent = false;
    let mut eos_acked = false;
    let mut conn: Option<Connection> = None;
    let mut backoff = Backoff::new(RECONNECT_FIRST, RECONNECT_CAP);
    // However the link ends, it no longer counts as trying to reach its receiver.
    let _reached = Reached(&spec);
    loop {
        if conn.is_none() {
            let hello_state = (window.acked, eos_acked);
            if let Some(m) = &spec.meter {
                m.unreached(spec.to);
            }
            match connect(&spec, hello_state, &mut routes, &cancel, &mut backoff).await {
                Admission::Cancelled => return LinkEnd::Cancelled,
                Admission::Finished => {
                    let state = (input_closed, eos_acked);
                    return drain_to_finished(&spec, &mut input, state, &cancel).await;
                }
                Admission::Fenced(reason) => {
                    warn!(job = %spec.job, from = %spec.from, to = %spec.to, %reason, "link fenced off; stopping");
                    return LinkEnd::Fenced;
                }
                Admission::Admitted(mut c, upto, eos) => {
                    if let Some(m) = &spec.meter {
                        m.reached(spec.to);
                    }
                    if take_ack(
                        &spec,
                        &mut window,
                        (upto, eos),
                        (eos_sent, next_seq),
                        &mut eos_acked,
                    ) {
                        return LinkEnd::Done;
                    }
                    // Only batches written on an admitted connection can have been delivered:
                    // at-most-once drops those (delivered or not), never ones no receiver saw.
                    if !spec.resend {
                        window.batches.clear();
                        window.bytes = 0;
                        spec.settle_upto(next_seq - 1);
                    }
                    let mut frames: Vec<Bytes> =
                        window.batches.iter().map(|(_, _, b)| b.clone()).collect();
                    if eos_sent {
                        frames.push(to_wire(
                            &Frame::Eos {
                                last_seq: next_seq - 1,
                            }
                            .encode(),
                        ));
                    }
                    if send(&mut c, frames, &cancel, &mut routes, &spec.to)
                        .await
                        .is_ok()
                    {
                        conn = Some(*c);
                    }
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else {
            continue;
        };
        if input_closed && !eos_sent {
            eos_sent = true;
            // The receiver may hold the whole stream already (it said so before our end).
            let known = (window.acked, window.peer_ended);
            if take_ack(
                &spec,
                &mut window,
                known,
                (eos_sent, next_seq),
                &mut eos_acked,
            ) {
                return LinkEnd::Done;
            }
            let eos = Frame::Eos {
                last_seq: next_seq - 1,
            };
            if send(c, [to_wire(&eos.encode())], &cancel, &mut routes, &spec.to)
                .await
                .is_err()
            {
                conn = None;
                continue;
            }
        }
        let can_take = !input_closed && window.bytes < cfg.window_bytes;
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return LinkEnd::Cancelled,
            frame = c.rd.next() => {
                match frame.map(|r| r.map(|b| Frame::decode(b.freeze()))) {
                    Some(Ok(Ok(Frame::Ack { upto, eos, seen, by }))) => {
                        backoff.reset();
                        // How far the receiver got with this link before it took our
                        // connection: a switch of maps waits until we routed that far.
                        if by == spec.attempt + 1 {
                            if let Some(board) = &spec.board {
                                board.floor(spec.to.index as usize, seen);
                            }
                        }
                        if take_ack(&spec, &mut window, (upto, eos), (eos_sent, next_seq), &mut eos_acked) {
                            return LinkEnd::Done;
                        }
                    }
                    Some(Ok(Ok(Frame::Reject { retry: false, reason }))) => {
                        // This sender is a stale attempt: a newer one runs elsewhere.
                        warn!(job = %spec.job, from = %spec.from, to = %spec.to, %reason, "link fenced off; stopping");
                        return LinkEnd::Fenced;
                    }
                    Some(Ok(Ok(Frame::Reject { reason, .. }))) => {
                        debug!(job = %spec.job, from = %spec.from, to = %spec.to, %reason, "link rejected; retrying");
                        conn = None;
                        if pause(&cancel, &mut backoff).await.is_err() {
                            return LinkEnd::Cancelled;
                        }
                    }
                    Some(Ok(Ok(other))) => {
                        warn!(job = %spec.job, to = %spec.to, frame = ?other, "unexpected frame on link; resetting");
                        conn = None;
                    }
                    Some(Ok(Err(e))) => {
                        warn!(job = %spec.job, to = %spec.to, error = %e, "bad frame on link; resetting");
                        conn = None;
                    }
                    Some(Err(e)) => {
                        debug!(job = %spec.job, to = %spec.to, error = %e, "link connection failed; reconnecting");
                        conn = None;
                    }
                    None => {
                        debug!(job = %spec.job, to = %spec.to, "link connection closed; reconnecting");
                        conn = None;
                        if pause(&cancel, &mut backoff).await.is_err() {
                            return LinkEnd::Cancelled;
                        }
                    }
                }
            }
            changed = routes.changed() => {
                if changed.is_err() {
                    // The job's routes were removed: the job is over for this process.
                    return LinkEnd::Cancelled;
                }
                if dest_of(&routes.borrow(), &spec.to).as_ref() != Some(&c.dest) {
                    debug!(job = %spec.job, to = %spec.to, "destination moved or restarted; reconnecting");
                    conn = None;
                }
            }
            batch = input.recv(), if can_take => match batch {
                Some(LinkMsg::Batch(b)) => {
                    let n = u64::from(b.count);
                    if n == 0 {
                        continue;
                    }
                    let first = next_seq;
                    next_seq += n;
                    if next_seq - 1 <= window.acked {
                        // A restarted sender regenerating what its predecessor delivered:
                        // the receiver holds all of it acknowledged already, and a duplicate
                        // changes no ack, so keeping it would hold the window forever.
                        continue;
                    }
                    let bytes = b.seal(first);
                    window.bytes += bytes.len();
                    window.batches.push_back((first, next_seq - 1, bytes.clone()));
                    if send(c, [bytes], &cancel, &mut routes, &spec.to).await.is_err() {
                        conn = None;
                    }
                }
                Some(LinkMsg::End) => input_closed = true,
                None => {
                    debug!(job = %spec.job, from = %spec.from, to = %spec.to, "link abandoned without end of stream");
                    return LinkEnd::Cancelled;
                }
            },
        }
    }
}

/// Waits the backoff's next delay; Err when cancelled meanwhile.
async fn pause(cancel: &CancellationToken, backoff: &mut Backoff) -> Result<(), ()> {
    let d = backoff.next();
    tokio::select! {
        _ = cancel.cancelled() => Err(()),
        _ = tokio::time::sleep(d) => Ok(()),
    }
}

#[cfg(test)]
mod tests;
