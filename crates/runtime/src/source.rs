//! The source: reads the input file line by line at the configured rate and routes each line as
//! tuple `(FILE:LINE, line)` to the first stage. The file itself is the source's log: line
//! numbers are its sequence, so it never needs to log anything.

use crate::dataplane::now_ns;
use crate::env::TaskEnv;
use crate::links::{self, Outgoing};
use crate::model::ids::{JobId, TaskPos};
use crate::model::partition::Partition;
use crate::model::spec::PathMode;
use crate::store::ObjectReader;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod reach;
mod read_ahead;
mod reader;

pub use reader::SourceReader;

/// Opens a job's source for reading: a local path in embedded runs, a store object otherwise.
pub async fn open_source(
    env: &TaskEnv,
    paths: PathMode,
    path: &str,
) -> Result<ObjectReader, String> {
    match paths {
        PathMode::Local => match tokio::fs::File::open(path).await {
            Ok(f) => Ok(read_ahead::read_ahead(f.into_std().await)),
            Err(e) => Err(format!("cannot open source {path}: {e}")),
        },
        PathMode::Store => env
            .store
            .open(path)
            .await
            .map_err(|e| format!("cannot open source {path}: {e}")),
    }
}

/// Whether a source that could not be opened is not there at all (as opposed to unreadable
/// for now: a store that does not answer, a permission).
async fn source_gone(env: &TaskEnv, paths: PathMode, path: &str) -> bool {
    match paths {
        PathMode::Local => tokio::fs::metadata(path)
            .await
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound),
        PathMode::Store => env.store.exists(path).await.is_ok_and(|there| !there),
    }
}

/// Opens the source file as a first-stage replay must read it: through the source's
/// pushed-down filter (`model::pushdown`), so its n-th line is the source's n-th output.
pub async fn open_replay(
    env: &TaskEnv,
    paths: PathMode,
    r: &crate::protocol::control::SourceReplay,
) -> Result<SourceReader<ObjectReader>, String> {
    let filter = r
        .filter
        .as_ref()
        .map(|f| f.compile())
        .transpose()
        .map_err(|e| format!("the source's filter: {e}"))?;
    let file = open_source(env, paths, &r.path).await?;
    Ok(SourceReader::new(file, &r.name).filtered(filter))
}

/// How far a source has read its file, shared with the reports of its attempt; and its
/// rate, which `rainstorm set-rate` changes while it runs.
#[derive(Debug)]
pub struct SourceRead {
    /// Bytes read so far (see [`SourceReader::consumed`]).
    pub bytes: AtomicU64,
    /// Lines read so far, those the pushed-down filter dropped included: the source's
    /// tuples in (see [`SourceReader::lines`]).
    pub lines: AtomicU64,
    /// The file's size, once looked up.
    pub size: std::sync::OnceLock<u64>,
    /// Tuples per second (0: unthrottled); the running source paces by the latest value.
    pub rate: tokio::sync::watch::Sender<f64>,
}

impl Default for SourceRead {
    fn default() -> Self {
        SourceRead {
            bytes: AtomicU64::new(0),
            lines: AtomicU64::new(0),
            size: std::sync::OnceLock::new(),
            rate: tokio::sync::watch::Sender::new(0.0),
        }
    }
}

/// Where a source's pacing counts from: a new rate starts counting anew from the line it
/// reached, so a change applies at once and the lines before it keep the old pace.
/// Lines an earlier attempt read (`caught_up`) were due already: they go at once, and the
/// pace counts from the first line past them.
struct Pace {
    since: Instant,
    from_line: u64,
    rate: f64,
    caught_up: u64,
}

impl Pace {
    /// When line `line_no` is due, if the source is paced; a changed rate re-bases first.
    fn due(&mut self, line_no: u64, rate: f64) -> Option<Instant> {
        if line_no < self.caught_up {
            self.since = Instant::now();
            self.from_line = line_no + 1;
            return None;
        }
        if rate != self.rate {
            self.since = Instant::now();
            self.from_line = line_no;
            self.rate = rate;
        }
        if rate <= 0.0 {
            return None;
        }
        let ahead = (line_no - self.from_line) as f64 / rate;
        let due = self.since + Duration::from_secs_f64(ahead.min(1e9));
        let now = Instant::now();
        if now.saturating_duration_since(due) > MAX_LAG {
            // Held back longer than jitter explains (back-pressure, a store pause): the
            // backlog is not rushed through; the pace resumes from here.
            self.since = now;
            self.from_line = line_no;
            return Some(now);
        }
        Some(due)
    }
}

/// How far behind its pace a source may fall and still catch up (a burst of at most this
/// long's worth of lines). Beyond it the pace counts anew from the line reached, as a token
/// bucket of this size would: a source paused by back-pressure or a store outage goes on at
/// its rate, not as fast as it can (hostile probe 9).
const MAX_LAG: Duration = Duration::from_secs(1);

/// The size of a job's source, for progress only: a failed look-up is logged, not fatal.
async fn source_size(env: &TaskEnv, paths: PathMode, path: &str) -> Option<u64> {
    let size = match paths {
        PathMode::Local => tokio::fs::metadata(path)
            .await
            .map(|m| m.len())
            .map_err(|e| e.to_string()),
        PathMode::Store => env.store.size(path).await.map_err(|e| e.to_string()),
    };
    size.map_err(|e| tracing::debug!(source = path, error = %e, "cannot size the source"))
        .ok()
}

/// What the source needs to know.
pub struct SourceSpec {
    /// Job.
    pub job: JobId,
    /// Source path (local or store path, per `paths`).
    pub path: String,
    /// How to resolve `path`.
    pub paths: PathMode,
    /// Name used in keys (`name:line`).
    pub name: String,
    /// First-stage task count.
    pub downstream: u32,
    /// First-stage partitioning.
    pub partition: Partition,
    /// Which first-stage task owns each key group (and a switch in progress).
    pub board: Arc<crate::dataplane::reroute::Switchboard>,
    /// Re-send on reconnect (all modes but at-most-once).
    pub resend: bool,
    /// Job epoch (at-least-once restarts start the source over in a new epoch).
    pub epoch: u32,
    /// The source's attempt (a source restarted with its leader is a new attempt; receivers
    /// fence off older ones).
    pub attempt: u32,
    /// Where it counts how far it has read (reported with its meters).
    pub read: Arc<SourceRead>,
    /// Lines earlier attempts already read: sent at once, pacing starts after them.
    pub caught_up: u64,
    /// The first stage's filters pushed into the source (`model::pushdown`): lines they drop
    /// are not routed.
    pub filter: Option<crate::model::pushdown::LineFilter>,
}

/// Lines stamped with one reading of the clock at most (unpaced, some tens of microseconds).
const STAMP_EVERY: u64 = 64;

/// Why a source stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum SourceEnd {
    /// Cancelled before its whole stream was acknowledged.
    Cancelled,
    /// It could not read or deliver its stream.
    Failed(String),
    /// Its file cannot be carried whatever the attempt (a line longer than a tuple may be):
    /// the job fails at once rather than after every restart.
    Unrecoverable(String),
}

/// Reads and routes the whole file, waits until every first-stage task has acknowledged the
/// end of stream, then keeps its links serving until cancelled: a first-stage task restarted
/// later learns from them how far its input was acknowledged (and regenerates it from the
/// file). Calls `on_done` when the whole stream is acknowledged (its count is then final).
/// Counts what it routes on `emitted` and `meter`.
/// Returns `Ok` once cancelled after a complete read, `Err` on a failure before.
pub async fn run_source(
    env: TaskEnv,
    spec: SourceSpec,
    emitted: Arc<AtomicU64>,
    meter: Arc<crate::dataplane::meter::SendMeter>,
    on_done: impl FnOnce(),
    cancel: CancellationToken,
) -> Result<(), SourceEnd> {
    let file = match open_source(&env, spec.paths, &spec.path).await {
        Ok(file) => file,
        // Gone (it was there at submission): every attempt would find it gone, and the job
        // fails at once, saying so, not after every restart (2.5 minutes on a store wiped
        // under a job; hostile probe 22).
        Err(e) if source_gone(&env, spec.paths, &spec.path).await => {
            return Err(SourceEnd::Unrecoverable(format!(
                "{e}; it was there when the job was submitted"
            )))
        }
        Err(e) => return Err(SourceEnd::Failed(e)),
    };
    if let Some(size) = source_size(&env, spec.paths, &spec.path).await {
        // Set once per attempt; a second set cannot happen and would change nothing.
        let _ = spec.read.size.set(size);
    }
    let (done_tx, mut done_rx) = mpsc::channel(spec.downstream.max(1) as usize);
    let (mut router, mut links) = links::spawn(
        &env,
        Outgoing {
            job: spec.job.clone(),
            from: TaskPos { stage: 0, index: 0 },
            attempt: spec.attempt,
            epoch: spec.epoch,
            downstream: spec.downstream,
            partition: spec.partition.clone(),
            board: spec.board.clone(),
            resend: spec.resend,
            linger: true,
            done: Some(done_tx),
        },
        emitted,
        meter,
        &cancel,
    );
    let key = crate::model::ids::TaskKey {
        job: spec.job.clone(),
        pos: TaskPos { stage: 0, index: 0 },
    };
    let mut reach = reach::Reach::new(env.store.clone(), key.clone(), spec.epoch, spec.attempt);
    // Set when the read failed in a way every attempt would (see `SourceEnd::Unrecoverable`).
    let deterministic = std::sync::atomic::AtomicBool::new(false);
    let read = async {
        if spec.attempt > spec.epoch {
            // A restarted attempt: a switch waits until it routed as far as its predecessors
            // may have (`store::reach`).
            let r = crate::reach::predecessors_reach(&env.store, &key, spec.epoch, spec.attempt)
                .await
                .map_err(|e| format!("reading the earlier attempts' reach: {e}"))?;
            tracing::debug!(job = %spec.job, attempt = spec.attempt, lines = r, "the source's predecessors routed at most this far");
            spec.board.reach(r);
        }
        let mut rd = SourceReader::new(file, &spec.name).filtered(spec.filter);
        // Lines routed: the source's outputs, which its switch points and reach count (a
        // line the pushed-down filter drops is read, paced and counted as read, not routed).
        let mut outputs: u64 = 0;
        let mut rate = spec.read.rate.subscribe();
        let mut pace = Pace {
            since: Instant::now(),
            from_line: 0,
            rate: *rate.borrow_and_update(),
            caught_up: spec.caught_up,
        };
        // Lines are stamped with their emit time for the latency the sink measures; the clock
        // is read every few lines (microseconds apart unpaced) and after every wait.
        let mut stamp = now_ns();
        loop {
            let line = match rd.next_line().await {
                Ok(Some(l)) => l,
                Ok(None) => break,
                Err(e) => {
                    deterministic.store(reader::is_line_too_long(&e), Ordering::Relaxed);
                    return Err(format!("reading source {}: {e}", spec.path));
                }
            };
            if outputs.is_multiple_of(STAMP_EVERY) {
                stamp = now_ns();
            }
            // Paced by lines read: the line is due where its number puts it.
            let now_rate = loop {
                let now_rate = *rate.borrow_and_update();
                let Some(due) = pace.due(line.number - 1, now_rate) else {
                    break now_rate;
                };
                if due <= Instant::now() {
                    break now_rate;
                }
                router.flush().await.map_err(|e| e.to_string())?;
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    // A new rate: pace by it from here (a dropped sender never happens
                    // while the attempt's status lives; then the old pace holds).
                    Ok(()) = rate.changed() => continue,
                }
                stamp = now_ns();
                break now_rate;
            };
            outputs += 1;
            reach.admit(outputs, now_rate).await?;
            let routed = router.push_hashed_pair(line.key, line.key_hash, &line.value, stamp);
            routed.await.map_err(|e| e.to_string())?;
            spec.read.bytes.store(rd.consumed(), Ordering::Relaxed);
            spec.read.lines.store(rd.lines(), Ordering::Relaxed);
            if !rd.buffered() {
                router.flush().await.map_err(|e| e.to_string())?;
            }
        }
        spec.read.bytes.store(rd.consumed(), Ordering::Relaxed);
        spec.read.lines.store(rd.lines(), Ordering::Relaxed);
        // Every line is routed: no predecessor routed more, whatever its reach.
        spec.board.reach(0);
        router.finish().await.map_err(|e| e.to_string())?;
        for _ in 0..spec.downstream {
            if done_rx.recv().await.is_none() {
                return Err("source links stopped".to_string());
            }
        }
        Ok(())
    };
    let res = tokio::select! {
        _ = cancel.cancelled() => Err(SourceEnd::Cancelled),
        r = read => r.map_err(|e| match deterministic.load(Ordering::Relaxed) {
            true => SourceEnd::Unrecoverable(e),
            false => SourceEnd::Failed(e),
        }),
    };
    if res.is_ok() {
        tracing::info!(job = %spec.job, "source finished: every first-stage task acknowledged its end");
        on_done();
        cancel.cancelled().await;
    }
    links.stop().await;
    res
}

#[cfg(test)]
mod tests;
