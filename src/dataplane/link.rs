//! The sending side of one link: a task of its own that numbers batches, keeps every
//! unacknowledged batch in a bounded window, writes them pipelined, re-sends the window after a
//! reconnect, and ends with an end-of-stream marker once its input closes and everything is
//! acked. Retry belongs to the link: nothing is ever written back into the queue it drains.

use super::routes::RouteTable;
use super::transport::Network;
use super::DataConfig;
use crate::model::backoff::Backoff;
use crate::model::ids::{JobId, TaskPos};
use crate::model::tuple::Tuple;
use crate::protocol::frame::{codec, encode_batch, Frame, Hello};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::transport::{ConnRead, ConnWrite};

/// What a router hands a link. The end of stream is explicit: a link whose channel merely
/// closes (its task failed or was cancelled) abandons the stream and never sends EOS, so a
/// failed task can never make downstream believe its output was complete.
#[derive(Debug)]
pub enum LinkMsg {
    /// More tuples.
    Batch(OutBatch),
    /// The stream is complete.
    End,
}

/// A batch handed from a router to a link.
#[derive(Debug)]
pub struct OutBatch {
    /// The tuples, in order.
    pub tuples: Vec<Tuple>,
    /// Oldest source emit time among them.
    pub emit_ns: u64,
}

/// Static description of a link.
#[derive(Clone)]
pub struct LinkSpec {
    /// Job.
    pub job: JobId,
    /// Sending task.
    pub from: TaskPos,
    /// Sending task's attempt (announced in the Hello, for fencing).
    pub attempt: u32,
    /// Job epoch (announced in the Hello; sequence numbers start above `epoch << EPOCH_SHIFT`).
    pub epoch: u32,
    /// Receiving task.
    pub to: TaskPos,
    /// Whether unacknowledged batches are re-sent after a reconnect (false = at-most-once).
    pub resend: bool,
    /// Keep serving after the end of stream is acknowledged: a later attempt of the receiver
    /// is told, in its Hello, that everything including the end was acknowledged. The source
    /// needs this (its links are the first stage's only record of what was delivered).
    pub linger: bool,
    /// Told this link's index the first time its end of stream is acknowledged.
    pub done: Option<mpsc::Sender<u32>>,
    /// How to reach the receiver.
    pub net: Arc<dyn Network>,
}

/// Bits of a sequence number below the epoch: epoch `e` numbers its tuples from `e << 40`.
pub const EPOCH_SHIFT: u32 = 40;

/// How a link ended.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkEnd {
    /// Everything including the end of stream was acknowledged.
    Done,
    /// Stopped by cancellation.
    Cancelled,
    /// Refused for good by the receiver: this sender attempt (or epoch) is stale.
    Fenced,
}

struct Connection {
    rd: FramedRead<ConnRead, LengthDelimitedCodec>,
    wr: FramedWrite<ConnWrite, LengthDelimitedCodec>,
    /// Where it goes: the destination's address and attempt when it was opened.
    dest: (String, u32),
}

struct Window {
    batches: VecDeque<(u64, u64, Bytes)>,
    bytes: usize,
    /// Highest sequence number acknowledged.
    acked: u64,
}

impl Window {
    fn ack(&mut self, upto: u64) {
        self.acked = self.acked.max(upto);
        while let Some((_, last, b)) = self.batches.front() {
            if *last > self.acked {
                break;
            }
            self.bytes -= b.len();
            self.batches.pop_front();
        }
    }
}

/// The destination's current placement, if any.
fn dest_of(routes: &RouteTable, to: &TaskPos) -> Option<(String, u32)> {
    routes.get(to).cloned()
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
    };
    let mut next_seq: u64 = floor + 1;
    let mut input_closed = false;
    let mut eos_sent = false;
    let mut eos_acked = false;
    let mut conn: Option<Connection> = None;
    let mut backoff = Backoff::new(Duration::from_millis(5), Duration::from_millis(250));
    loop {
        if conn.is_none() {
            let hello_state = (window.acked, eos_acked);
            match connect(&spec, hello_state, &mut routes, &cancel, &mut backoff).await {
                None => return LinkEnd::Cancelled,
                Some(mut c) => {
                    if !spec.resend {
                        window.batches.clear();
                        window.bytes = 0;
                    }
                    let mut frames: Vec<Bytes> =
                        window.batches.iter().map(|(_, _, b)| b.clone()).collect();
                    if eos_sent {
                        frames.push(
                            Frame::Eos {
                                last_seq: next_seq - 1,
                            }
                            .encode(),
                        );
                    }
                    if send(&mut c, frames, &cancel, &mut routes, &spec.to)
                        .await
                        .is_ok()
                    {
                        conn = Some(c);
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
            let eos = Frame::Eos {
                last_seq: next_seq - 1,
            };
            if send(c, [eos.encode()], &cancel, &mut routes, &spec.to)
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
                    Some(Ok(Ok(Frame::Ack { upto, eos }))) => {
                        tracing::trace!(job = %spec.job, from = %spec.from, to = %spec.to, upto, eos, "ack");
                        window.ack(upto);
                        backoff.reset();
                        if eos && eos_sent && upto >= next_seq - 1 && !eos_acked {
                            eos_acked = true;
                            if let Some(done) = &spec.done {
                                if done.try_send(spec.to.index).is_err() {
                                    debug!(job = %spec.job, to = %spec.to, "nobody waits for this link's end");
                                }
                            }
                            if !spec.linger {
                                return LinkEnd::Done;
                            }
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
                    let n = b.tuples.len() as u64;
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
                    let bytes = encode_batch(first, b.emit_ns, &b.tuples);
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

/// Writes frames and flushes; gives up (Err) on cancellation or when the destination moves or
/// restarts. A write to a partitioned host can block for minutes (no reset ever comes), so a
/// blocked write must not keep a link from following its destination to a new attempt.
async fn send(
    c: &mut Connection,
    frames: impl IntoIterator<Item = Bytes>,
    cancel: &CancellationToken,
    routes: &mut watch::Receiver<RouteTable>,
    to: &TaskPos,
) -> Result<(), ()> {
    let wr = &mut c.wr;
    let dest = &c.dest;
    let write = async {
        for f in frames {
            wr.feed(f).await?;
        }
        SinkExt::<Bytes>::flush(wr).await
    };
    let moved = async {
        loop {
            if routes.changed().await.is_err() {
                return;
            }
            if dest_of(&routes.borrow(), to).as_ref() != Some(dest) {
                return;
            }
        }
    };
    tokio::select! {
        _ = cancel.cancelled() => Err(()),
        _ = moved => {
            debug!(%to, "destination moved during a write; reconnecting");
            Err(())
        }
        r = write => r.map_err(|e: std::io::Error| debug!(error = %e, "link write failed")),
    }
}

async fn pause(cancel: &CancellationToken, backoff: &mut Backoff) -> Result<(), ()> {
    let d = backoff.next();
    tokio::select! {
        _ = cancel.cancelled() => Err(()),
        _ = tokio::time::sleep(d) => Ok(()),
    }
}

/// Connects to wherever the destination runs now and says Hello, naming both attempts and
/// how far the link is acknowledged.
async fn connect(
    spec: &LinkSpec,
    (acked, eos_acked): (u64, bool),
    routes: &mut watch::Receiver<RouteTable>,
    cancel: &CancellationToken,
    backoff: &mut Backoff,
) -> Option<Connection> {
    loop {
        let dest = dest_of(&routes.borrow_and_update(), &spec.to);
        if let Some((addr, to_attempt)) = dest {
            let attempt = tokio::time::timeout(Duration::from_secs(2), spec.net.connect(&addr));
            let res = tokio::select! {
                _ = cancel.cancelled() => return None,
                r = attempt => r,
            };
            match res {
                Ok(Ok(stream)) => {
                    let mut wr = FramedWrite::new(stream.write, codec());
                    let hello = Frame::Hello(Hello {
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
                    });
                    if wr.send(hello.encode()).await.is_ok() {
                        return Some(Connection {
                            rd: FramedRead::new(stream.read, codec()),
                            wr,
                            dest: (addr, to_attempt),
                        });
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
            _ = cancel.cancelled() => return None,
            r = routes.changed() => if r.is_err() { return None; },
            _ = tokio::time::sleep(d) => {}
        }
    }
}
