//! A job's record in the leader's state: its spec, status, counters and the handles its
//! driver and followers use. It outlives the job's tasks (retention) and is built three ways:
//! submitted, resumed after a leader restart, or restored as an ended job.

use super::persist::StoredJob;
use crate::model::ids::{JobId, TaskKey};
use crate::model::latency::LatencyHist;
use crate::model::spec::JobSpec;
use crate::protocol::control::{JobStatus, TaskState};
use crate::runtime::sink::SinkProgress;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;

/// Milliseconds since the Unix epoch (0 for a time before it): how records keep wall times.
pub fn ms_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Events a job's driver reacts to.
#[derive(Debug)]
pub enum JobEvent {
    /// An attempt reached a terminal state.
    TaskEnded {
        /// Which task.
        key: TaskKey,
        /// Which attempt.
        attempt: u32,
        /// Final state.
        state: TaskState,
        /// Cause.
        error: Option<String>,
    },
    /// The source's whole stream is acknowledged (its counters are final): a job whose sink
    /// finished may now be complete.
    SourceDone,
}

/// The leader's door for the writes of a job's output that its sink makes through the store
/// API (a worker without a store of its own uploads the output through the leader).
///
/// The rule, so that an output is whole and a late sink write cannot replace it: **once the
/// job's cleanup starts, the leader is the output's last writer.** Closing the gate (the first
/// thing cleanup does) refuses every new sink write of the output, aborts every admitted one
/// whose body is still arriving (a body that did not end is never committed), and cleanup then
/// waits until every admitted write has finished with the store before it writes what the job
/// committed. Nothing the sink sends can land after that. The gate only counts and signals:
/// it is safe to use under the state lock, and its wait is awaited outside it.
#[derive(Debug)]
pub struct OutputGate {
    /// Cancelled when the gate closes: admitted writes stop taking their body and fail.
    closed: CancellationToken,
    /// One token per admitted write, dropped when the store has finished with it.
    writes: TaskTracker,
}

/// One admitted write of a job's output: the gate waits for it until it is dropped, which the
/// writer does only once the store has finished with the write (committed or not).
#[derive(Debug)]
pub struct OutputWrite {
    /// Cancelled when the job's cleanup starts: the write must stop taking its body and fail.
    pub closed: CancellationToken,
    /// Keeps the gate's wait waiting.
    _held: TaskTrackerToken,
}

impl Default for OutputGate {
    fn default() -> Self {
        OutputGate {
            closed: CancellationToken::new(),
            writes: TaskTracker::new(),
        }
    }
}

impl OutputGate {
    /// Admits one sink write of the output, or `None` once the gate is closed (the job is
    /// ending and its output is the leader's to write).
    pub fn admit(&self) -> Option<OutputWrite> {
        // Counted before the check: a close that comes after the check waits for this write.
        let held = self.writes.token();
        (!self.closed.is_cancelled()).then(|| OutputWrite {
            closed: self.closed.clone(),
            _held: held,
        })
    }

    /// Closes the gate (no new write; admitted writes still receiving their body fail) and
    /// returns the wait for the admitted writes to finish, to be awaited outside the state
    /// lock. Closing again changes nothing and returns the same wait.
    pub fn close(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.shut_now();
        let writes = self.writes.clone();
        async move { writes.wait().await }
    }

    /// A gate closed from the start: an ended job's (restored from an earlier leader).
    fn shut() -> OutputGate {
        let gate = OutputGate::default();
        gate.shut_now();
        gate
    }

    fn shut_now(&self) {
        self.closed.cancel();
        self.writes.close();
    }

    /// Admitted writes not yet finished (for the log).
    pub fn in_flight(&self) -> usize {
        self.writes.len()
    }
}

/// A job's record; it outlives the job's tasks (retention), so its final status is always
/// deliverable.
pub struct JobRec {
    /// The spec.
    pub spec: JobSpec,
    /// Status.
    pub status: JobStatus,
    /// Failure cause.
    pub error: Option<String>,
    /// Submission time.
    pub submitted: SystemTime,
    /// Start instant.
    pub started: Instant,
    /// End instant.
    pub ended: Option<Instant>,
    /// Tuples the source emitted.
    pub source_tuples: Arc<AtomicU64>,
    /// Lines the sink wrote.
    pub sink_tuples: Arc<AtomicU64>,
    /// Latency histogram.
    pub latency: Arc<Mutex<LatencyHist>>,
    /// Failures seen.
    pub failures: u64,
    /// Restarts done.
    pub recoveries: u64,
    /// Driver's event inbox (None once the job ended).
    pub events: Option<mpsc::Sender<JobEvent>>,
    /// Cancels the job.
    pub cancel: CancellationToken,
    /// Output progress, for followers.
    pub progress: watch::Receiver<SinkProgress>,
    /// End time (wall clock, for the durable record).
    pub ended_at: Option<SystemTime>,
    /// The last failure to remove the job's leftovers, while removal is still being retried.
    pub cleanup_error: Option<String>,
    /// The job's input logs may still be in the store (see `persist::StoredJob::logs_left`).
    pub logs_left: bool,
    /// While running: its durable placement (see `persist::RunState`).
    pub run: Option<crate::leader::persist::RunState>,
    /// The door for the sink's writes of the output through the leader, closed by cleanup.
    pub output: OutputGate,
}

impl JobRec {
    /// A job's record as it is submitted: running, nothing counted yet.
    pub fn new(
        spec: JobSpec,
        events: mpsc::Sender<JobEvent>,
        cancel: CancellationToken,
        progress: watch::Receiver<SinkProgress>,
    ) -> JobRec {
        JobRec {
            spec,
            status: JobStatus::Running,
            error: None,
            submitted: SystemTime::now(),
            started: Instant::now(),
            ended: None,
            source_tuples: Arc::new(AtomicU64::new(0)),
            sink_tuples: Arc::new(AtomicU64::new(0)),
            latency: Arc::default(),
            failures: 0,
            recoveries: 0,
            events: Some(events),
            cancel,
            progress,
            ended_at: None,
            cleanup_error: None,
            logs_left: true,
            run: None,
            output: OutputGate::default(),
        }
    }

    /// The sink task of this job (stage K+1): its log is the job's committed output.
    pub fn sink_key(&self, id: &JobId) -> crate::model::ids::TaskKey {
        crate::model::ids::TaskKey {
            job: id.clone(),
            pos: crate::model::ids::TaskPos {
                stage: self.spec.stages.len() as u32 + 1,
                index: 0,
            },
        }
    }

    /// Where the job's output file goes.
    pub fn output(&self) -> crate::runtime::sink::SinkTarget {
        crate::runtime::sink::target(self.spec.paths, &self.spec.sink_path)
    }

    /// The durable record of this job.
    pub fn stored(&self, id: &JobId) -> StoredJob {
        StoredJob {
            id: id.clone(),
            spec: self.spec.clone(),
            status: self.status,
            error: self.error.clone(),
            source_tuples: self.source_tuples.load(Ordering::Relaxed),
            sink_tuples: self.sink_tuples.load(Ordering::Relaxed),
            failures: self.failures,
            recoveries: self.recoveries,
            submitted_ms: ms_since_epoch(self.submitted),
            ended_ms: self.ended_at.map(ms_since_epoch),
            cleanup_error: self.cleanup_error.clone(),
            logs_left: self.logs_left,
            run: self.run.clone(),
        }
    }

    /// A job an earlier leader was running, carried on by this one: its counters as recorded,
    /// its driver resuming from `job.run`.
    pub fn resumed(
        job: &StoredJob,
        events: mpsc::Sender<JobEvent>,
        cancel: CancellationToken,
        progress: watch::Receiver<SinkProgress>,
    ) -> JobRec {
        let mut rec = JobRec::new(job.spec.clone(), events, cancel, progress);
        rec.submitted = UNIX_EPOCH + std::time::Duration::from_millis(job.submitted_ms);
        rec.source_tuples
            .store(job.source_tuples, Ordering::Relaxed);
        rec.sink_tuples.store(job.sink_tuples, Ordering::Relaxed);
        rec.failures = job.failures;
        rec.recoveries = job.recoveries;
        rec.logs_left = job.logs_left;
        rec.run = job.run.clone();
        rec
    }

    /// A job recorded by an earlier leader, as this one shows it: ended (a job that was
    /// running is the caller's to mark failed first), nothing to drive, its output final.
    pub fn restored(job: StoredJob) -> JobRec {
        let at = |ms: u64| UNIX_EPOCH + std::time::Duration::from_millis(ms);
        let submitted = at(job.submitted_ms);
        let ended_at = at(job.ended_ms.unwrap_or(job.submitted_ms));
        // Instants of the past, as far as this process's clock reaches back.
        let ago = |t: SystemTime| {
            let d = SystemTime::now().duration_since(t).unwrap_or_default();
            Instant::now().checked_sub(d).unwrap_or_else(Instant::now)
        };
        let ended = ago(ended_at);
        let run = ended_at.duration_since(submitted).unwrap_or_default();
        let started = ended.checked_sub(run).unwrap_or(ended);
        let (_, progress) = watch::channel(SinkProgress {
            closing: true,
            finished: true,
        });
        let cancel = CancellationToken::new();
        cancel.cancel();
        // Ended: its output is final, and no sink writes it any more.
        let output = OutputGate::shut();
        JobRec {
            spec: job.spec,
            status: job.status,
            error: job.error,
            submitted,
            started,
            ended: Some(ended),
            source_tuples: Arc::new(AtomicU64::new(job.source_tuples)),
            sink_tuples: Arc::new(AtomicU64::new(job.sink_tuples)),
            latency: Arc::default(),
            failures: job.failures,
            recoveries: job.recoveries,
            events: None,
            cancel,
            progress,
            ended_at: Some(ended_at),
            cleanup_error: job.cleanup_error,
            logs_left: job.logs_left,
            run: None,
            output,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_output_gate_admits_nothing_and_waits_out_the_writes_it_admitted() {
        let gate = OutputGate::default();
        let early = gate.admit().expect("an open gate admits the sink's writes");
        let done = gate.admit().expect("an open gate admits the sink's writes");
        drop(done);
        assert_eq!(gate.in_flight(), 1);
        let mut wait = Box::pin(gate.close());
        assert!(
            early.closed.is_cancelled(),
            "closing tells admitted writes to stop"
        );
        assert!(gate.admit().is_none(), "a closed gate admits nothing");
        // The wait is not over while an admitted write has not finished with the store.
        assert!(futures::poll!(wait.as_mut()).is_pending());
        drop(early);
        wait.await;
        // Closing again is harmless, and there is nothing left to wait for.
        gate.close().await;
        assert!(OutputGate::shut().admit().is_none());
    }
}
