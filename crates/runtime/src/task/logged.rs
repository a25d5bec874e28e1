//! Exactly-once input for stages ≥ 2: accepted input is appended to the task's input log by a
//! group-commit writer, acknowledged only once durable, and fed to the operator only after
//! that. So every output a task emits derives from durably logged input, and a replacement
//! that replays the log regenerates exactly what was emitted — whatever order unlogged input
//! arrives in after the crash.
//!
//! A segment write that fails is retried with backoff; one that keeps failing fails this task
//! with the store's error. After every write the writer checks its attempt's fence (see
//! `runtime::log`): a fenced attempt acknowledges and processes nothing more.

use super::operator::{Operator, Stop};
use super::receive::{Accepted, Intake};
use super::{TaskEnv, TaskStatus};
use crate::dataplane::inbound::AckBoard;
use crate::dataplane::meter::Stopwatch;
use crate::log::{
    encode_batch_record, encode_record, open_segment, put_then_check_fence, seal_in_place,
    segment_path, LogRecord,
};
use crate::model::hist::AtomicHist;
use crate::model::ids::TaskKey;
use crate::model::tuple::Tuple;
use bytes::BytesMut;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A unit of accepted input on its way through the log: the ack it releases once durable
/// and the tuples it holds, which the writer encodes straight into the segment (one copy)
/// and, unless they only needed logging, feeds afterwards.
pub(super) struct Logged {
    mark: (u32, u64, bool),
    tuples: Vec<Tuple>,
    /// Whether the tuples go on to the operator (not at a sink: its log is its output).
    feed: bool,
    emit_ns: u64,
}

impl Logged {
    /// Appends this unit's record to a segment under construction.
    fn encode(&self, body: &mut BytesMut) {
        let (from, last, ended) = self.mark;
        if ended {
            encode_record(
                body,
                &LogRecord::Eos {
                    from,
                    last_seq: last,
                },
            );
        } else {
            let first = last + 1 - self.tuples.len() as u64;
            encode_batch_record(body, from, first, self.emit_ns, &self.tuples);
        }
    }
}

/// Tuples released to the operator by one group commit.
pub(super) type Released = Vec<Fed>;

/// Tuples the log made durable, to feed: from which upstream link, from which sequence
/// number, and when they were emitted.
pub(super) struct Fed {
    from: u32,
    first_seq: u64,
    tuples: Vec<Tuple>,
    emit_ns: u64,
    /// The link ended behind these tuples.
    ended: bool,
}

/// The receive side: accepted input goes to the log writer.
pub(super) struct LogIntake {
    pub(super) tx: mpsc::Sender<Logged>,
    /// At a sink: its log is its output, so nothing is fed on and its tuples are dropped
    /// once encoded.
    pub(super) sink: bool,
}

/// What the log writer tells besides the log: each segment write's duration, from its first
/// try until it is durable (fence checked) and its input can be acknowledged; for a sink,
/// whose work is its log, the time writing as working time, the spool each committed
/// segment's text goes to, and the status whose latency histograms it keeps.
pub(super) struct CommitMeter<'a> {
    pub(super) commits: &'a AtomicHist,
    pub(super) working: Option<&'a Stopwatch>,
    pub(super) spool: Option<&'a crate::sink::Spool>,
    /// A sink's status: each batch's end-to-end latency is taken when the write that holds
    /// it is durable — when its lines are output (visible to a follower, in the output file
    /// at the end) — not when it arrives, which would leave the sink's commit out.
    pub(super) latency: Option<&'a TaskStatus>,
    /// Where the write in progress is timed, and the attempt's clock (its status's).
    pub(super) waiting: Option<(&'a super::status::StoreWait, &'a super::status::Started)>,
}

/// Records, at a sink, the end-to-end latency of the batches a durable write held: from each
/// batch's emit time (its oldest tuple's) to now, for each of its tuples.
fn record_latency(status: &TaskStatus, batches: &[(u64, u64)]) {
    let now = crate::dataplane::now_ns();
    let mut hist = status.latency.lock().unwrap_or_else(|p| p.into_inner());
    let hist = hist.get_or_insert_with(Default::default);
    for &(emit_ns, n) in batches {
        let us = now.saturating_sub(emit_ns) / 1000;
        status.e2e.record(us, n);
        hist.record(us, n);
    }
}

fn gone() -> Stop {
    Stop::Failed("input log writer stopped".into())
}

impl Intake for LogIntake {
    async fn fresh(&mut self, batch: Accepted) -> Result<(), Stop> {
        let l = Logged {
            mark: (batch.from, batch.last_seq, false),
            tuples: batch.tuples,
            feed: !self.sink,
            emit_ns: batch.emit_ns,
        };
        self.tx.send(l).await.map_err(|_| gone())
    }

    async fn ended(&mut self, from: u32, last_seq: u64) -> Result<(), Stop> {
        let l = Logged {
            mark: (from, last_seq, true),
            tuples: Vec::new(),
            feed: !self.sink,
            emit_ns: 0,
        };
        self.tx.send(l).await.map_err(|_| gone())
    }

    async fn idle(&mut self) -> Result<(), Stop> {
        Ok(())
    }

    fn acks_on_accept(&self) -> bool {
        false
    }
}

/// Group commit: records queue while the previous segment is being written; each segment
/// write acknowledges everything it holds and only then releases its tuples to the feeder.
pub(super) async fn log_writer(
    env: TaskEnv,
    key: TaskKey,
    attempt: u32,
    acks: Arc<AckBoard>,
    mut rx: mpsc::Receiver<Logged>,
    feed: mpsc::Sender<Released>,
    meter: CommitMeter<'_>,
) -> Result<(), Stop> {
    // Compaction runs beside the writer, joined with it: it has merged what it will before
    // the writer returns (a sink writes its output from its lineage only after that).
    let (compact_tx, compact_rx) = mpsc::channel(COMPACT_QUEUE);
    let compact_tx = (env.cfg.log_compact_fanin >= 2).then_some(compact_tx);
    let compacting = super::compact::compactor(env.clone(), key.clone(), attempt, compact_rx);
    let writing = async move {
        const SEGMENT_BYTES: usize = 4 * 1024 * 1024;
        let mut n: u64 = 0;
        // Each segment is built in place in a buffer of its own (it is handed to the store
        // and the compactor), sized like the one before.
        let mut cap = 64 * 1024;
        let every = Duration::from_millis(env.cfg.log_commit_ms as u64);
        let pressing = (env.cfg.window_bytes / 2).max(1);
        let mut last_write: Option<tokio::time::Instant> = None;
        while let Some(first) = rx.recv().await {
            let mut body = BytesMut::with_capacity(cap);
            open_segment(&mut body);
            let mut marks = Vec::new();
            let mut released = Vec::new();
            // A sink's batches in this commit: emit time and tuple count.
            let mut output: Vec<(u64, u64)> = Vec::new();
            // Bytes of this commit from each upstream link.
            let mut from_link: Vec<usize> = Vec::new();
            // Whether the commit goes out as soon as nothing more is queued rather than at
            // the next interval: a link ended in it (the rest of its input is known to be
            // nothing), or a link sent half its window in it (its sender stops at a full
            // window until this commit acknowledges it, so waiting out the interval would
            // only idle both; the commit is large then, so writes stay bounded by bytes).
            let mut now = false;
            let mut take = |l: Logged, body: &mut BytesMut| {
                let before = body.len();
                l.encode(body);
                marks.push(l.mark);
                let (from, last, ended) = l.mark;
                let link = from as usize;
                if from_link.len() <= link {
                    from_link.resize(link + 1, 0);
                }
                from_link[link] += body.len() - before;
                let pressed = from_link[link] >= pressing;
                if meter.latency.is_some() && !l.tuples.is_empty() {
                    output.push((l.emit_ns, l.tuples.len() as u64));
                }
                let tuples = if l.feed { l.tuples } else { Vec::new() };
                if !tuples.is_empty() || ended {
                    released.push(Fed {
                        from,
                        first_seq: last + 1 - tuples.len() as u64,
                        tuples,
                        emit_ns: l.emit_ns,
                        ended,
                    });
                }
                ended || pressed
            };
            now |= take(first, &mut body);
            // Wait for more records at least the linger, and until the commit clock's next tick
            // at least half an interval after the previous write: store writes are bounded by
            // time, not by traffic, and the stages of a job commit one just after the other
            // (`commit_clock`). An input link's end is not waited behind (it comes once per
            // link): the job's last tuples would otherwise wait an interval in every logged
            // stage.
            let mut linger =
                tokio::time::Instant::now() + Duration::from_micros(env.cfg.log_linger_us as u64);
            if let Some(at) = last_write {
                let tick = env.commit_clock.tick(at + every / 2, every, key.pos.stage);
                linger = linger.max(tick);
            }
            while body.len() < SEGMENT_BYTES {
                match rx.try_recv() {
                    Ok(l) => now |= take(l, &mut body),
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                    Err(mpsc::error::TryRecvError::Empty) if now => break,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        match tokio::time::timeout_at(linger, rx.recv()).await {
                            Ok(Some(l)) => now |= take(l, &mut body),
                            Ok(None) | Err(_) => break,
                        }
                    }
                }
            }
            cap = (body.len() + body.len() / 8).clamp(64 * 1024, SEGMENT_BYTES + (1 << 20));
            let path = segment_path(&key, attempt, n);
            let seg = seal_in_place(body, marks.len() as u32, env.store.seal(), &path);
            let began = tokio::time::Instant::now();
            last_write = Some(began);
            let working = meter.working.map(Stopwatch::run);
            if let Some((w, started)) = meter.waiting {
                w.begin(started);
            }
            let written = put_then_check_fence(
                &env.store,
                &path,
                seg.clone(),
                &key,
                attempt,
                "input log write",
            )
            .await;
            if let Some((w, _)) = meter.waiting {
                w.end();
            }
            let is_fenced = match written {
                Ok(f) => f,
                Err(e) => {
                    return Err(Stop::Failed(format!(
                        "input log: writing {path} failed; last error: {e}"
                    )))
                }
            };
            drop(working);
            meter.commits.record(began.elapsed().as_micros() as u64, 1);
            if is_fenced {
                return Err(Stop::Failed(format!(
                    "attempt {attempt} is fenced: a newer attempt of this task took over its log"
                )));
            }
            n += 1;
            if let Some(status) = meter.latency {
                record_latency(status, &output);
                status.commits.send_replace(n);
            }
            if let Some(s) = meter.spool {
                s.append(&path, &seg).await;
            }
            if let Some(c) = &compact_tx {
                // A segment goes to the compactor with its bytes only if it is small and few
                // are queued: the compactor keeps what it is given until it merges (up to a
                // fan-in of them), so a fast writer's large segments would hold tens of
                // megabytes per task; those it reads back from the store instead.
                let keep = seg.len() <= COMPACT_KEEP_BYTES
                    && c.capacity() + COMPACT_WITH_DATA > COMPACT_QUEUE;
                let data = keep.then(|| seg.clone());
                if c.send((path.clone(), data)).await.is_err() {
                    tracing::warn!(task = %key, attempt, "input log compaction stopped; the log grows by a segment a commit");
                }
            }
            for (from, upto, eos) in &marks {
                acks.set(*from, *upto, *eos);
            }
            if !released.is_empty() && feed.send(released).await.is_err() {
                // The feeder only stops on an error, which its own future reports.
                return Ok(());
            }
        }
        Ok(())
    };
    let (res, ()) = tokio::join!(writing, compacting);
    res
}

/// Committed segments queued for the compactor before the writer waits for it.
const COMPACT_QUEUE: usize = 64;

/// Of those, how many may carry their bytes (a level-0 merge's worth, fan-in 8).
const COMPACT_WITH_DATA: usize = 8;

/// The largest segment handed to the compactor with its bytes (a rate-limited task's
/// segments are far smaller, so its merges need no reads; docs/benchmarks.md, 20M lines).
const COMPACT_KEEP_BYTES: usize = 256 * 1024;

/// Feeds the operator what the log writer released; ends when the writer does.
pub(super) async fn feed(
    op: &mut Operator,
    mut rx: mpsc::Receiver<Released>,
    working: &Stopwatch,
    mut takeover: Option<&mut super::takeover::Takeover<'_>>,
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    loop {
        let group = match rx.try_recv() {
            Ok(g) => g,
            Err(mpsc::error::TryRecvError::Disconnected) => return Ok(()),
            Err(mpsc::error::TryRecvError::Empty) => {
                let flushing = working.run();
                op.idle().await?;
                drop(flushing);
                let changed = super::takeover::routing_changed(takeover.as_deref_mut());
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return Err(Stop::Cancelled),
                    e = op.died() => return Err(e),
                    g = rx.recv() => match g {
                        Some(g) => g,
                        None => return Ok(()),
                    },
                    () = changed => {
                        if let Some(k) = takeover.as_deref_mut() {
                            k.refresh(op).await?;
                        }
                        continue;
                    }
                }
            }
        };
        let _feeding = working.run();
        // Every tuple of a commit is fed as emitted when its oldest one was: the commit held
        // them all until it was durable, and an output cannot say which of them it came from
        // (an executable's is stamped with what its latest input was fed with).
        let emit_ns = (group.iter())
            .filter(|f| !f.tuples.is_empty())
            .map(|f| f.emit_ns)
            .min()
            .unwrap_or(0);
        for fed in group {
            for (i, t) in fed.tuples.into_iter().enumerate() {
                let at = (fed.from, fed.first_seq + i as u64);
                super::takeover::feed(op, takeover.as_deref_mut(), at, t, emit_ns).await?;
            }
            if let (true, Some(k)) = (fed.ended, takeover.as_deref_mut()) {
                k.ended(op, fed.from).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests;
