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
use crate::protocol::auth::DataAuth;
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
    /// How to prove the cluster secret in the Hello.
    pub auth: DataAuth,
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
    /// The receiver said it holds this link's end of stream (behind `acked`). Kept, because it
    /// may say so before this attempt has sent its own end: a receiver that already has the
    /// whole stream (from an earlier attempt of this sender) acks nothing new afterwards.
    peer_ended: bool,
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

/// Where the destination runs now (address and attempt), if placed and not finished.
fn dest_of(routes: &RouteTable, to: &TaskPos) -> Option<(String, u32)> {
    routes
        .get(to)
        .filter(|d| !d.finished)
        .map(|d| (d.addr.clone(), d.attempt))
}

/// Whether the destination has finished: it holds this link's whole stream acknowledged.
fn finished(routes: &RouteTable, to: &TaskPos) -> bool {
    routes.get(to).is_some_and(|d| d.finished)
}

/// The link of a restarted sender whose destination already finished: everything it
/// regenerates was delivered by an earlier attempt, so its input is drained and dropped.
async fn drain_to_finished(
    spec: &LinkSpec,
    input: &mut mpsc::Receiver<LinkMsg>,
    (input_closed, eos_acked): (bool, bool),
    cancel: &CancellationToken,
) -> LinkEnd {
    debug!(job = %spec.job, from = %spec.from, to = %spec.to, "destination finished; its share of the regenerated output is dropped");
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
    let mut backoff = Backoff::new(Duration::from_millis(5), Duration::from_millis(250));
    loop {
        if conn.is_none() {
            let hello_state = (window.acked, eos_acked);
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
                        backoff.reset();
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

/// Tells whoever waits for this link's end (the source) that it was delivered.
fn notify_done(spec: &LinkSpec) {
    if let Some(done) = &spec.done {
        if done.try_send(spec.to.index).is_err() {
            debug!(job = %spec.job, to = %spec.to, "nobody waits for this link's end");
        }
    }
}

/// Applies a cumulative ack; true when it completes a link that does not linger.
fn take_ack(
    spec: &LinkSpec,
    window: &mut Window,
    (upto, eos): (u64, bool),
    (eos_sent, next_seq): (bool, u64),
    eos_acked: &mut bool,
) -> bool {
    tracing::trace!(job = %spec.job, from = %spec.from, to = %spec.to, upto, eos, "ack");
    window.ack(upto);
    window.peer_ended |= eos;
    if window.peer_ended && eos_sent && window.acked >= next_seq - 1 && !*eos_acked {
        *eos_acked = true;
        notify_done(spec);
        return !spec.linger;
    }
    false
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

/// How an attempt to open a link ended.
enum Admission {
    /// The receiver took the link; its first ack (`upto`, `eos`) came with it.
    Admitted(Box<Connection>, u64, bool),
    /// Cancelled while connecting.
    Cancelled,
    /// The destination finished: there is nothing left to deliver to it.
    Finished,
    /// The receiver refused this sender for good (stale attempt or epoch, or no secret).
    Fenced(String),
}

/// Connects to wherever the destination runs now, says Hello (naming both attempts and how far
/// the link is acknowledged) and waits for the verdict: the receiver's first ack admits the
/// link, a retryable Reject (the receiver is not registered yet) means try again. Nothing is
/// written before admission, so a refused connection can never have delivered anything.
async fn connect(
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
        if let Some((addr, to_attempt)) = dest {
            let attempt = tokio::time::timeout(Duration::from_secs(2), spec.net.connect(&addr));
            let res = tokio::select! {
                _ = cancel.cancelled() => return Admission::Cancelled,
                r = attempt => r,
            };
            match res {
                Ok(Ok(stream)) => {
                    let mut rd = FramedRead::new(stream.read, codec());
                    let mut wr = FramedWrite::new(stream.write, codec());
                    // The listener speaks first: a challenge the Hello must prove the secret over.
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
                        hello.proof = spec.auth.prove(&challenge, &hello.signed_body());
                        if wr.send(Frame::Hello(hello).encode()).await.is_ok() {
                            let mut c = Connection {
                                rd,
                                wr,
                                dest: (addr, to_attempt),
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
            r = routes.changed() => if r.is_err() { return Admission::Cancelled; },
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
        Some(Ok(Ok(Frame::Ack { upto, eos }))) => Verdict::Ack(upto, eos),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::routes::Dest;
    use crate::dataplane::transport::Conn;
    use crate::model::ids::JobId;
    use futures::future::BoxFuture;
    use std::collections::HashMap;

    /// A network whose every connection lands in a channel the test reads as the receiver.
    struct Loopback(mpsc::UnboundedSender<Conn>);

    impl Network for Loopback {
        fn connect<'a>(&'a self, _addr: &'a str) -> BoxFuture<'a, std::io::Result<Conn>> {
            Box::pin(async move {
                let (a, b) = tokio::io::duplex(1 << 16);
                let (ar, aw) = tokio::io::split(a);
                let (br, bw) = tokio::io::split(b);
                let server = Conn {
                    read: Box::new(br),
                    write: Box::new(bw),
                    peer: "link".into(),
                };
                self.0
                    .send(server)
                    .map_err(|_| std::io::Error::from(std::io::ErrorKind::ConnectionRefused))?;
                Ok(Conn {
                    read: Box::new(ar),
                    write: Box::new(aw),
                    peer: "receiver".into(),
                })
            })
        }
    }

    type Rd = FramedRead<ConnRead, LengthDelimitedCodec>;
    type Wr = FramedWrite<ConnWrite, LengthDelimitedCodec>;

    struct Receiver {
        conns: mpsc::UnboundedReceiver<Conn>,
    }

    impl Receiver {
        async fn accept(&mut self) -> (Rd, Wr, Hello) {
            let c = self.conns.recv().await.expect("a connection");
            let mut rd = FramedRead::new(c.read, codec());
            let mut wr = FramedWrite::new(c.write, codec());
            wr.send(Frame::Challenge([0; 16]).encode()).await.unwrap();
            let hello = match next(&mut rd).await {
                Some(Frame::Hello(h)) => h,
                other => panic!("expected a Hello, got {other:?}"),
            };
            (rd, wr, hello)
        }

        /// Accepts a connection and admits it, holding what the sender says was acked.
        async fn admit(&mut self) -> (Rd, Wr, Hello) {
            let (rd, mut wr, hello) = self.accept().await;
            ack(&mut wr, hello.acked, hello.eos_acked).await;
            (rd, wr, hello)
        }
    }

    async fn next(rd: &mut Rd) -> Option<Frame> {
        let f = tokio::time::timeout(Duration::from_secs(10), rd.next())
            .await
            .ok()??;
        Frame::decode(f.ok()?.freeze()).ok()
    }

    async fn ack(wr: &mut Wr, upto: u64, eos: bool) {
        wr.send(Frame::Ack { upto, eos }.encode()).await.unwrap();
    }

    fn start(
        queue: usize,
        window: usize,
        resend: bool,
    ) -> (
        mpsc::Sender<LinkMsg>,
        Receiver,
        tokio::task::JoinHandle<LinkEnd>,
        watch::Sender<RouteTable>,
    ) {
        let (conn_tx, conns) = mpsc::unbounded_channel();
        let to = TaskPos { stage: 2, index: 0 };
        let spec = LinkSpec {
            job: JobId("j".into()),
            from: TaskPos { stage: 1, index: 0 },
            attempt: 0,
            epoch: 0,
            to,
            resend,
            linger: false,
            done: None,
            net: Arc::new(Loopback(conn_tx)),
            auth: DataAuth::default(),
        };
        let cfg = DataConfig {
            window_bytes: window,
            ..DataConfig::default()
        };
        let (tx, rx) = mpsc::channel(queue);
        let (routes_tx, routes) = watch::channel(HashMap::from([(to, Dest::running("r:1", 0))]));
        let link = tokio::spawn(run_link(spec, cfg, rx, routes, CancellationToken::new()));
        (tx, Receiver { conns }, link, routes_tx)
    }

    fn batch(values: &[&str]) -> LinkMsg {
        LinkMsg::Batch(OutBatch {
            tuples: values.iter().map(|v| Tuple::new("k", *v)).collect(),
            emit_ns: 0,
        })
    }

    /// War story: stale acks from timed-out sends desynchronised the stream. Acks here are
    /// cumulative, so a late or repeated ack changes nothing, and an end-of-stream ack counts
    /// only when it covers every tuple.
    #[tokio::test]
    async fn ghost_acks_late_and_duplicate_change_nothing() {
        let (tx, mut recv, link, _routes) = start(8, 1 << 20, true);
        for b in [["a", "b"], ["c", "d"], ["e", "f"]] {
            tx.send(batch(&b)).await.unwrap();
        }
        tx.send(LinkMsg::End).await.unwrap();
        let (mut rd, mut wr, hello) = recv.admit().await;
        assert_eq!((hello.acked, hello.eos_acked), (0, false));
        for first in [1, 3, 5] {
            assert!(
                matches!(next(&mut rd).await, Some(Frame::Batch { first_seq, .. }) if first_seq == first)
            );
        }
        assert_eq!(next(&mut rd).await, Some(Frame::Eos { last_seq: 6 }));
        ack(&mut wr, 4, false).await;
        ack(&mut wr, 2, false).await; // late
        ack(&mut wr, 4, false).await; // duplicate
        ack(&mut wr, 4, true).await; // an end ack that does not cover tuples 5 and 6
        drop((rd, wr));
        // The link reconnects: it holds 4 acknowledged, and re-sends exactly 5..6 and the end.
        let (mut rd, mut wr, hello) = recv.admit().await;
        assert_eq!((hello.acked, hello.eos_acked), (4, false));
        match next(&mut rd).await {
            Some(Frame::Batch {
                first_seq, tuples, ..
            }) => {
                assert_eq!(first_seq, 5);
                assert_eq!(tuples.len(), 2);
            }
            other => panic!("expected the unacknowledged batch, got {other:?}"),
        }
        assert_eq!(next(&mut rd).await, Some(Frame::Eos { last_seq: 6 }));
        assert!(!link.is_finished());
        ack(&mut wr, 6, true).await;
        assert_eq!(link.await.unwrap(), LinkEnd::Done);
    }

    /// War story: a sender re-queued a failed tuple into its own full input channel and
    /// deadlocked. Retry belongs to the link's window: with its input queue full and every
    /// connection reset before any ack, it keeps re-sending and finishes once acked.
    #[tokio::test]
    async fn self_requeue_a_retry_never_writes_into_its_own_input() {
        let (tx, mut recv, link, _routes) = start(1, 64, true);
        let producer = tokio::spawn(async move {
            for i in 0..20 {
                tx.send(batch(&[&format!("v{i}")])).await.unwrap();
            }
            tx.send(LinkMsg::End).await.unwrap();
        });
        let mut got = Vec::new();
        // Ten connections in a row are dropped without an ack after their first batch.
        for _ in 0..10 {
            let (mut rd, _wr, hello) = recv.admit().await;
            assert_eq!(hello.acked, 0);
            assert!(matches!(
                next(&mut rd).await,
                Some(Frame::Batch { first_seq: 1, .. })
            ));
        }
        // Then a receiver that acks everything it gets.
        let (mut rd, mut wr, _) = recv.admit().await;
        loop {
            match next(&mut rd).await {
                Some(Frame::Batch {
                    first_seq, tuples, ..
                }) => {
                    let last = first_seq + tuples.len() as u64 - 1;
                    if last as usize > got.len() {
                        got.extend(tuples.into_iter().skip(got.len() + 1 - first_seq as usize));
                    }
                    ack(&mut wr, last, false).await;
                }
                Some(Frame::Eos { last_seq }) => {
                    ack(&mut wr, last_seq, true).await;
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        producer.await.unwrap();
        assert_eq!(link.await.unwrap(), LinkEnd::Done);
        let values: Vec<String> = got.into_iter().map(|t| t.value).collect();
        let want: Vec<String> = (0..20).map(|i| format!("v{i}")).collect();
        assert_eq!(values, want);
    }

    /// War story: at-most-once lost its first tuples whenever the first stage registered after
    /// the source connected: batches written behind a Hello the receiver refused were dropped
    /// as if delivered. Nothing is written before admission, so a refusal loses nothing; only
    /// what went out on an admitted connection is dropped at a reconnect.
    #[tokio::test]
    async fn at_most_once_loses_nothing_to_a_refused_connection() {
        let (tx, mut recv, link, _routes) = start(8, 1 << 20, false);
        tx.send(batch(&["a"])).await.unwrap();
        let (mut rd, mut wr, _) = recv.accept().await;
        let refuse = Frame::Reject {
            retry: true,
            reason: "not registered yet".into(),
        };
        wr.send(refuse.encode()).await.unwrap();
        assert_eq!(
            next(&mut rd).await,
            None,
            "nothing is sent before admission"
        );
        drop((rd, wr));
        let (mut rd, mut wr, hello) = recv.admit().await;
        assert_eq!(hello.acked, 0);
        match next(&mut rd).await {
            Some(Frame::Batch {
                first_seq: 1,
                tuples,
                ..
            }) => assert_eq!(tuples[0].value, "a"),
            other => panic!("the refused batch must still be sent, got {other:?}"),
        }
        // Admitted and unacknowledged, then the connection drops: at-most-once drops "b".
        tx.send(batch(&["b"])).await.unwrap();
        assert!(matches!(
            next(&mut rd).await,
            Some(Frame::Batch { first_seq: 2, .. })
        ));
        ack(&mut wr, 1, false).await;
        drop((rd, wr));
        tx.send(LinkMsg::End).await.unwrap();
        let (mut rd, mut wr, hello) = recv.admit().await;
        assert_eq!(hello.acked, 1);
        assert_eq!(next(&mut rd).await, Some(Frame::Eos { last_seq: 2 }));
        ack(&mut wr, 2, true).await;
        assert_eq!(link.await.unwrap(), LinkEnd::Done);
    }

    /// War story (simulation seed 2864): a task that finished after an upstream attempt's end
    /// of stream left that upstream's restarted attempt retrying a link to nowhere forever.
    /// A finished destination holds the whole stream: the link drains its input and ends.
    #[tokio::test]
    async fn a_link_to_a_finished_task_drains_and_ends() {
        let (tx, mut recv, link, routes) = start(2, 1 << 20, true);
        tx.send(batch(&["a"])).await.unwrap();
        let (mut rd, _wr, _) = recv.admit().await;
        assert!(matches!(next(&mut rd).await, Some(Frame::Batch { .. })));
        let to = TaskPos { stage: 2, index: 0 };
        routes.send_replace(HashMap::from([(
            to,
            Dest {
                finished: true,
                ..Dest::running("r:1", 0)
            },
        )]));
        // Regenerated output keeps coming; none of it goes anywhere, and End ends the link.
        for i in 0..10 {
            tx.send(batch(&[&format!("v{i}")])).await.unwrap();
        }
        tx.send(LinkMsg::End).await.unwrap();
        assert_eq!(link.await.unwrap(), LinkEnd::Done);
        assert!(
            recv.conns.try_recv().is_err(),
            "no new connection is opened"
        );
    }

    /// War story (simulation seed 8206 of 20,000): a restarted sender connected to a receiver
    /// that already held its whole stream, ended, from an earlier attempt. The receiver said
    /// so in its first ack, before the sender had sent its own end, and never acked again; the
    /// link forgot it and waited forever. The receiver's word is kept until the end is sent.
    #[tokio::test]
    async fn an_end_acknowledged_before_it_is_sent_still_completes_the_link() {
        let (tx, mut recv, link, _routes) = start(8, 1 << 20, true);
        let (_rd, mut wr, hello) = recv.accept().await;
        assert_eq!(hello.acked, 0);
        ack(&mut wr, 2, true).await;
        // The regenerated stream: everything is at or below the receiver's end.
        tx.send(batch(&["a", "b"])).await.unwrap();
        tx.send(LinkMsg::End).await.unwrap();
        let end = tokio::time::timeout(Duration::from_secs(10), link)
            .await
            .expect("the link must end without another ack");
        assert_eq!(end.unwrap(), LinkEnd::Done);
    }
}
