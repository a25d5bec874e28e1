//! A job's record in the leader's state: its spec, status, counters and the handles its
//! driver and followers use. It outlives the job's tasks (retention) and is built three ways:
//! submitted, resumed after a leader restart, or restored as an ended job.

pub use super::gate::{OutputGate, OutputWrite};
use super::persist::StoredJob;
use crate::coordinator::record::RunState;
use crate::coordinator::Input;
use crate::model::ids::{JobId, TaskKey};
use crate::model::latency::SinkLatency;
use crate::model::spec::JobSpec;
use crate::protocol::control::JobStatus;
use rainstorm_store::output::SinkProgress;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Milliseconds since the Unix epoch (0 for a time before it): how records keep wall times.
pub fn ms_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A job's rescales as the leader saw them (recorded by `scaling.rs`, which holds the rules).
#[derive(Clone, Debug, Default)]
pub struct Scaling {
    /// The latest rescales, oldest first (a bounded number): the job's `scaling` list.
    pub list: Vec<crate::protocol::control::ScaleInfo>,
    /// Rescales of the list that ended, by stage and outcome (`done`, `aborted`, `refused`),
    /// counted past the list's bound: a Prometheus counter must never fall while the leader
    /// runs, and a count taken from the list would as its oldest entries go, or as an
    /// `in-progress` one ends.
    pub ended: BTreeMap<(u32, &'static str), u64>,
}

/// A job's record; it outlives the job's tasks (retention), so its final status is always
/// deliverable.
pub struct JobRec {
    /// The spec.
    pub spec: JobSpec,
    /// Running (with what only a running job has) or ended (with what only an ended one has).
    pub phase: Phase,
    /// Submission time.
    pub submitted: SystemTime,
    /// Start instant.
    pub started: Instant,
    /// Tuples the source emitted: the most any attempt did (a restarted source counts from
    /// its first line again).
    pub source_tuples: Arc<AtomicU64>,
    /// The most lines any source attempt read: a restarted source sends these unpaced.
    pub source_read: Arc<AtomicU64>,
    /// Lines the sink wrote.
    pub sink_tuples: Arc<AtomicU64>,
    /// Latency histogram.
    pub latency: Arc<Mutex<SinkLatency>>,
    /// The latency summary its record held, for an ended job a restarted leader restored.
    pub latency_at_end: Option<crate::model::latency::Latency>,
    /// Its tasks as they were at its end, once it has ended (see `StoredJob::tasks`).
    pub tasks_at_end: Vec<crate::protocol::control::TaskInfo>,
    /// See `StoredJob::operator_names`.
    pub operator_names: BTreeMap<String, String>,
    /// Failures seen.
    pub failures: u64,
    /// Restarts done.
    pub recoveries: u64,
    /// The latest failure of a current attempt: which, and why (the job's core says).
    pub last_failure: Option<String>,
    /// Why the job, or some of its tasks, wait for capacity (its core says).
    pub waiting: Option<String>,
    /// Cancels the job.
    pub cancel: CancellationToken,
    /// Output progress, for followers.
    pub progress: watch::Receiver<SinkProgress>,
    /// The last failure to remove the job's leftovers, while removal is still being retried.
    pub cleanup_error: Option<String>,
    /// The job's input logs may still be in the store (see `persist::StoredJob::logs_left`).
    pub logs_left: bool,
    /// What wrote over or removed its output since it ended (`JobInfo::output_replaced`).
    pub output_replaced: Option<String>,
    /// Tuples its executables discarded after exiting 0 early, as its tasks had reported when
    /// it ended (recorded then; while it runs, the view sums its tasks' reports).
    pub discarded: u64,
    /// The door for the sink's writes of the output through the leader, closed by cleanup.
    pub output: OutputGate,
    /// Its rescales: the `scaling` list (oldest first) and how many ended each way.
    pub scaling: Scaling,
    /// The sink's latest group commit as its worker reported it (attempt, commits): each new
    /// one wakes the job's followers (`api/output.rs`), which otherwise look every poll.
    pub commits: watch::Sender<(u32, u64)>,
    /// Output streams of this job open now: its record (and an output its `retention_s`
    /// removes) waits for them to finish, a while (`LeaderConfig::follow_grace`).
    pub followers: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// The job's status as its record expired, for followers still streaming it then: their
    /// streams end with it (the record is gone), saying what they did not read.
    pub last_word: std::sync::Arc<std::sync::OnceLock<crate::protocol::control::JobInfo>>,
}

/// Where a job is in its life: what a running job has (a driver to tell, a placement) and
/// what an ended one has (a final status, a cause, an end time) are never both present.
pub enum Phase {
    /// Its driver runs it.
    Running {
        /// The driver's inbox.
        events: mpsc::Sender<Input>,
        /// Its durable placement once made (see `persist::RunState`).
        run: Option<RunState>,
    },
    /// It has its final status.
    Ended {
        /// `Succeeded`, `Failed` or `Cancelled`.
        status: JobStatus,
        /// Why it failed.
        error: Option<String>,
        /// When it ended (this process's clock).
        at: Instant,
        /// When it ended (wall clock, for the durable record).
        at_wall: SystemTime,
    },
}

impl JobRec {
    /// Its status: `Running`, or the final one.
    pub fn status(&self) -> JobStatus {
        match &self.phase {
            // Never placed and waiting: pending.
            Phase::Running { run: None, .. } if self.waiting.is_some() => JobStatus::Pending,
            Phase::Running { .. } => JobStatus::Running,
            Phase::Ended { status, .. } => *status,
        }
    }

    /// Why it failed, once it has.
    pub fn error(&self) -> Option<&str> {
        match &self.phase {
            Phase::Ended { error, .. } => error.as_deref(),
            Phase::Running { .. } => None,
        }
    }

    /// When it ended, if it has.
    pub fn ended(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Ended { at, .. } => Some(*at),
            Phase::Running { .. } => None,
        }
    }

    /// Its driver's inbox while it runs.
    pub fn events(&self) -> Option<&mpsc::Sender<Input>> {
        match &self.phase {
            Phase::Running { events, .. } => Some(events),
            Phase::Ended { .. } => None,
        }
    }

    /// Whether it runs and was never placed: pending, or not yet looked at by its driver.
    pub fn unplaced(&self) -> bool {
        matches!(self.phase, Phase::Running { run: None, .. })
    }

    /// Records its placement (a running job only).
    pub fn set_run(&mut self, placement: RunState) {
        if let Phase::Running { run, .. } = &mut self.phase {
            *run = Some(placement);
        }
    }

    /// Records its end: from here on it has no driver and no placement.
    pub fn end(&mut self, status: JobStatus, error: Option<String>, at_wall: SystemTime) {
        self.phase = Phase::Ended {
            status,
            error,
            at: Instant::now(),
            at_wall,
        };
    }
}

impl JobRec {
    /// A job's record as it is submitted: running, nothing counted yet.
    pub fn new(
        spec: JobSpec,
        events: mpsc::Sender<Input>,
        cancel: CancellationToken,
        progress: watch::Receiver<SinkProgress>,
    ) -> JobRec {
        JobRec {
            spec,
            phase: Phase::Running { events, run: None },
            submitted: SystemTime::now(),
            started: Instant::now(),
            source_tuples: Arc::new(AtomicU64::new(0)),
            source_read: Arc::new(AtomicU64::new(0)),
            sink_tuples: Arc::new(AtomicU64::new(0)),
            latency: Arc::default(),
            latency_at_end: None,
            tasks_at_end: Vec::new(),
            operator_names: BTreeMap::new(),
            failures: 0,
            recoveries: 0,
            last_failure: None,
            waiting: None,
            cancel,
            progress,
            cleanup_error: None,
            logs_left: true,
            output_replaced: None,
            discarded: 0,
            output: OutputGate::default(),
            scaling: Default::default(),
            commits: watch::Sender::new((0, 0)),
            followers: Default::default(),
            last_word: Default::default(),
        }
    }

    /// Its latency summary: from its sink's reports, or the one its record held (a job that
    /// ended before this leader started).
    pub fn latency_summary(&self) -> Option<crate::model::latency::Latency> {
        let live = self
            .latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .summary();
        live.summary().or_else(|| self.latency_at_end.clone())
    }

    /// The sink task of this job (stage K+1): its log is the job's committed output.
    pub fn sink_key(&self, id: &JobId) -> TaskKey {
        sink_key(id, &self.spec)
    }

    /// Where the job's output file goes.
    pub fn output(&self) -> rainstorm_store::output::SinkTarget {
        rainstorm_store::output::target(self.spec.paths, &self.spec.sink_path)
    }

    /// The durable record of this job.
    pub fn stored(&self, id: &JobId) -> StoredJob {
        StoredJob {
            id: id.clone(),
            spec: self.spec.clone(),
            // A pending job is stored as running without a placement: a restarted leader
            // starts it (and it waits again if it still does not fit).
            status: match self.status() {
                JobStatus::Pending => JobStatus::Running,
                s => s,
            },
            error: self.error().map(str::to_string),
            source_tuples: self.source_tuples.load(Ordering::Relaxed),
            sink_tuples: self.sink_tuples.load(Ordering::Relaxed),
            failures: self.failures,
            recoveries: self.recoveries,
            last_failure: self.last_failure.clone(),
            submitted_ms: ms_since_epoch(self.submitted),
            ended_ms: match &self.phase {
                Phase::Ended { at_wall, .. } => Some(ms_since_epoch(*at_wall)),
                Phase::Running { .. } => None,
            },
            cleanup_error: self.cleanup_error.clone(),
            logs_left: self.logs_left,
            output_replaced: self.output_replaced.clone(),
            run: match &self.phase {
                Phase::Running { run, .. } => run.clone(),
                Phase::Ended { .. } => None,
            },
            latency: self.latency_summary(),
            scaling: self.scaling.list.clone(),
            discarded: self.discarded,
            tasks: self.tasks_at_end.clone(),
            operator_names: self.operator_names.clone(),
        }
    }

    /// A job an earlier leader was running, carried on by this one: its counters as recorded,
    /// its driver resuming from `job.run`.
    pub fn resumed(
        job: &StoredJob,
        events: mpsc::Sender<Input>,
        cancel: CancellationToken,
        progress: watch::Receiver<SinkProgress>,
    ) -> JobRec {
        let mut rec = JobRec::new(job.spec.clone(), events, cancel, progress);
        rec.submitted = UNIX_EPOCH + std::time::Duration::from_millis(job.submitted_ms);
        // Its time counts from its submission, not from when this leader took it over.
        rec.started = instant_of(rec.submitted);
        rec.source_tuples
            .store(job.source_tuples, Ordering::Relaxed);
        rec.sink_tuples.store(job.sink_tuples, Ordering::Relaxed);
        rec.failures = job.failures;
        rec.recoveries = job.recoveries;
        rec.last_failure = job.last_failure.clone();
        rec.logs_left = job.logs_left;
        rec.discarded = job.discarded;
        rec.scaling = Scaling::restored(job.scaling.clone(), true);
        rec.operator_names = job.operator_names.clone();
        if let Some(run) = &job.run {
            rec.set_run(run.clone());
        }
        rec
    }

    /// A job recorded by an earlier leader, as this one shows it: ended (a job that was
    /// running is the caller's to mark failed first), nothing to drive, its output final.
    pub fn restored(job: StoredJob) -> JobRec {
        let at = |ms: u64| UNIX_EPOCH + std::time::Duration::from_millis(ms);
        let submitted = at(job.submitted_ms);
        let ended_at = at(job.ended_ms.unwrap_or(job.submitted_ms));
        let ended = instant_of(ended_at);
        let run = ended_at.duration_since(submitted).unwrap_or_default();
        let started = ended.checked_sub(run).unwrap_or(ended);
        let (_, progress) = watch::channel(SinkProgress {
            closing: true,
            finished: true,
        });
        let cancel = CancellationToken::new();
        cancel.cancel();
        JobRec {
            spec: job.spec,
            phase: Phase::Ended {
                status: job.status,
                error: job.error,
                at: ended,
                at_wall: ended_at,
            },
            submitted,
            started,
            source_tuples: Arc::new(AtomicU64::new(job.source_tuples)),
            source_read: Arc::new(AtomicU64::new(job.source_tuples)),
            sink_tuples: Arc::new(AtomicU64::new(job.sink_tuples)),
            latency: Arc::default(),
            latency_at_end: job.latency.clone(),
            // Its tasks ended with it: none still runs, whatever state it was last seen in.
            tasks_at_end: job
                .tasks
                .into_iter()
                .map(crate::protocol::control::TaskInfo::ended)
                .collect(),
            operator_names: job.operator_names,
            failures: job.failures,
            recoveries: job.recoveries,
            last_failure: job.last_failure.clone(),
            waiting: None,
            cancel,
            progress,
            cleanup_error: job.cleanup_error,
            logs_left: job.logs_left,
            output_replaced: job.output_replaced.clone(),
            discarded: job.discarded,
            // Ended: its output is final, and no sink writes it any more.
            output: OutputGate::shut(),
            scaling: Scaling::restored(job.scaling, false),
            commits: watch::Sender::new((0, 0)),
            followers: Default::default(),
            last_word: Default::default(),
        }
    }
}

/// The sink task of job `id` with spec `spec` (stage K+1, its only task).
pub fn sink_key(id: &JobId, spec: &JobSpec) -> TaskKey {
    TaskKey {
        job: id.clone(),
        pos: crate::model::ids::TaskPos {
            stage: spec.sink_stage(),
            index: 0,
        },
    }
}

#[cfg(test)]
impl JobRec {
    /// A running job's record for unit tests, with no driver or follower behind it.
    pub(crate) fn detached(spec: JobSpec) -> JobRec {
        let (tx, _) = mpsc::channel(1);
        let (_, progress) = watch::channel(SinkProgress::default());
        JobRec::new(spec, tx, CancellationToken::new(), progress)
    }
}

/// The instant of wall-clock time `t` in the past, as far as this process's clock reaches back
/// (records keep wall-clock times; durations are measured on instants).
fn instant_of(t: SystemTime) -> Instant {
    let d = SystemTime::now().duration_since(t).unwrap_or_default();
    Instant::now().checked_sub(d).unwrap_or_else(Instant::now)
}
