//! The sending side of one link: a task of its own that numbers batches, keeps every
//! unacknowledged batch in a bounded window, writes them pipelined, re-sends the window after a
//! reconnect, and ends with an end-of-stream marker once its input closes and everything is
//! acked. Retry belongs to the link: nothing is ever written back into the queue it drains.

use super::routes::RouteTable;
use super::DataConfig;
use crate::model::ids::{JobId, TaskPos};
use crate::model::tuple::Tuple;
use crate::protocol::frame::{codec, encode_batch, Frame};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

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

/// How far a link is acknowledged, published for whoever must know (the leader reads its
/// source links' progress when a first-stage task restarts).
#[derive(Debug, Default)]
pub struct LinkProgress {
    /// Highest acknowledged sequence number.
    pub acked: std::sync::atomic::AtomicU64,
    /// The end of stream is acknowledged.
    pub eos: std::sync::atomic::AtomicBool,
}

/// Static description of a link.
#[derive(Clone, Debug)]
pub struct LinkSpec {
    /// Job.
    pub job: JobId,
    /// Sending task.
    pub from: TaskPos,
    /// Sending task's attempt (announced in the Hello, for fencing).
    pub attempt: u32,
    /// Receiving task.
    pub to: TaskPos,
    /// Whether unacknowledged batches are re-sent after a reconnect (false = at-most-once).
    pub resend: bool,
    /// Where to publish acknowledgements, if anyone needs them.
    pub progress: Option<std::sync::Arc<LinkProgress>>,
    /// Sequence numbers start above this (the job epoch's floor; 0 in the first epoch).
    pub floor: u64,
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
}

type Conn = (
    FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
    FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
    String,
);

struct Window {
    batches: VecDeque<(u64, u64, Bytes)>,
    bytes: usize,
}

impl Window {
    fn ack(&mut self, upto: u64) {
        while let Some((_, last, b)) = self.batches.front() {
            if *last > upto {
                break;
            }
            self.bytes -= b.len();
            self.batches.pop_front();
        }
    }
}

/// Runs a link until its end of stream is acknowledged or it is cancelled.
pub async fn run_link(
    spec: LinkSpec,
    cfg: DataConfig,
    mut input: mpsc::Receiver<LinkMsg>,
    mut routes: watch::Receiver<RouteTable>,
    cancel: CancellationToken,
) -> LinkEnd {
    let mut window = Window {
        batches: VecDeque::new(),
        bytes: 0,
    };
    let mut next_seq: u64 = spec.floor + 1;
    let mut input_closed = false;
    let mut eos_sent = false;
    let mut conn: Option<Conn> = None;
    let mut backoff = Duration::from_millis(5);
    loop {
        if conn.is_none() {
            match connect(&spec, &mut routes, &cancel, &mut backoff).await {
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
                    if send(&mut c.1, frames, &cancel, &mut routes, &spec.to, &c.2)
                        .await
                        .is_ok()
                    {
                        conn = Some(c);
                    }
                    continue;
                }
            }
        }
        let Some((rd, wr, addr)) = conn.as_mut() else {
            continue;
        };
        if input_closed && !eos_sent {
            eos_sent = true;
            let eos = Frame::Eos {
                last_seq: next_seq - 1,
            };
            if send(wr, [eos.encode()], &cancel, &mut routes, &spec.to, addr)
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
            frame = rd.next() => {
                match frame.map(|r| r.map(|b| Frame::decode(b.freeze()))) {
                    Some(Ok(Ok(Frame::Ack { upto, eos }))) => {
                        window.ack(upto);
                        if let Some(p) = &spec.progress {
                            p.acked.fetch_max(upto, std::sync::atomic::Ordering::Relaxed);
                            if eos && eos_sent && upto >= next_seq - 1 {
                                p.eos.store(true, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                        backoff = Duration::from_millis(5);
                        if eos && eos_sent && upto >= next_seq - 1 {
                            return LinkEnd::Done;
                        }
                    }
                    Some(Ok(Ok(Frame::Reject { retry: false, reason }))) => {
                        // This sender is a stale attempt: a newer one runs elsewhere.
                        warn!(job = %spec.job, from = %spec.from, to = %spec.to, %reason, "link fenced off; stopping");
                        return LinkEnd::Cancelled;
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
                let moved = routes.borrow().get(&spec.to).map(|(a, _)| a != addr).unwrap_or(true);
                if moved {
                    debug!(job = %spec.job, to = %spec.to, "destination moved; reconnecting");
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
                    let bytes = encode_batch(first, b.emit_ns, &b.tuples);
                    window.bytes += bytes.len();
                    window.batches.push_back((first, next_seq - 1, bytes.clone()));
                    if send(wr, [bytes], &cancel, &mut routes, &spec.to, addr).await.is_err() {
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

/// Writes frames and flushes; gives up (Err) on cancellation or when the destination moves.
/// A write to a partitioned host can block for minutes (no reset ever comes), so a blocked
/// write must not keep a link from following its destination to a new worker.
async fn send(
    wr: &mut FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
    frames: impl IntoIterator<Item = Bytes>,
    cancel: &CancellationToken,
    routes: &mut watch::Receiver<RouteTable>,
    to: &TaskPos,
    addr: &str,
) -> Result<(), ()> {
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
            if routes
                .borrow()
                .get(to)
                .map(|(a, _)| a != addr)
                .unwrap_or(true)
            {
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

async fn pause(cancel: &CancellationToken, backoff: &mut Duration) -> Result<(), ()> {
    let d = *backoff;
    *backoff = (*backoff * 2).min(Duration::from_millis(250));
    tokio::select! {
        _ = cancel.cancelled() => Err(()),
        _ = tokio::time::sleep(d) => Ok(()),
    }
}

async fn connect(
    spec: &LinkSpec,
    routes: &mut watch::Receiver<RouteTable>,
    cancel: &CancellationToken,
    backoff: &mut Duration,
) -> Option<Conn> {
    loop {
        let addr = routes
            .borrow_and_update()
            .get(&spec.to)
            .map(|(a, _)| a.clone());
        if let Some(addr) = addr {
            let attempt = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&addr));
            let res = tokio::select! {
                _ = cancel.cancelled() => return None,
                r = attempt => r,
            };
            match res {
                Ok(Ok(stream)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        debug!(error = %e, "set_nodelay failed");
                    }
                    let (r, w) = stream.into_split();
                    let mut wr = FramedWrite::new(w, codec());
                    let hello = Frame::Hello {
                        job: spec.job.0.clone(),
                        from_stage: spec.from.stage,
                        from_index: spec.from.index,
                        from_attempt: spec.attempt,
                        to_stage: spec.to.stage,
                        to_index: spec.to.index,
                    };
                    if wr.send(hello.encode()).await.is_ok() {
                        return Some((FramedRead::new(r, codec()), wr, addr));
                    }
                }
                Ok(Err(e)) => {
                    debug!(job = %spec.job, to = %spec.to, %addr, error = %e, "connect failed")
                }
                Err(_) => debug!(job = %spec.job, to = %spec.to, %addr, "connect timed out"),
            }
        }
        let d = *backoff;
        *backoff = (*backoff * 2).min(Duration::from_millis(250));
        tokio::select! {
            _ = cancel.cancelled() => return None,
            r = routes.changed() => if r.is_err() { return None; },
            _ = tokio::time::sleep(d) => {}
        }
    }
}
