//! The leader's cluster state: workers, jobs and tasks. One `std::sync::Mutex` guards it; it is
//! never held across `.await` or I/O — every user copies what it needs out and releases it.
//! Resource accounting (which worker runs what) is derived from task records, never kept twice.

use crate::leader::persist::StoredJob;
use crate::model::ids::{JobId, TaskKey, WorkerId};
use crate::model::spec::JobSpec;
use crate::protocol::control::{
    Command, JobInfo, JobStatus, TaskInfo, TaskState, WorkerInfo, WorkerState,
};
use crate::runtime::sink::{LatencyHist, SinkProgress};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

/// A worker as the leader tracks it.
pub struct WorkerRec {
    /// Data address.
    pub data_addr: String,
    /// Last heartbeat (or registration).
    pub last_seen: Instant,
    /// Liveness.
    pub state: WorkerState,
    /// Commands not yet acknowledged by the worker, numbered: a command stays queued until a
    /// later poll says it arrived (`after`), so a lost poll response loses nothing.
    pub commands: VecDeque<(u64, Command)>,
    /// Number of the next command.
    pub next_command: u64,
    /// Highest command number handed to the worker so far.
    pub delivered: u64,
    /// Wakes the worker's pending poll.
    pub notify: Arc<Notify>,
    /// The key this registration proves on every later control-plane call (none in a
    /// cluster without a secret).
    pub session: Option<String>,
}

/// A task as the leader tracks it (its current attempt).
#[derive(Clone)]
pub struct TaskRec {
    /// Worker running the current attempt.
    pub worker: WorkerId,
    /// Current attempt.
    pub attempt: u32,
    /// Operator pid.
    pub pid: Option<u32>,
    /// State of the current attempt.
    pub state: TaskState,
    /// Counters.
    pub tuples_in: u64,
    /// Counters.
    pub tuples_out: u64,
    /// Recent input rate.
    pub rate: f64,
    /// When counters were last updated.
    pub sampled: Instant,
    /// Last failure.
    pub error: Option<String>,
    /// Operator description.
    pub operator: String,
    /// When input last advanced, or last had nothing pending (stall detection).
    pub progressed: Instant,
    /// Input batches waiting for the task, per its last heartbeat.
    pub queued: u32,
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
    /// Local path of the sink file.
    pub sink_file: std::path::PathBuf,
    /// End time (wall clock, for the durable record).
    pub ended_at: Option<SystemTime>,
    /// The last failure to remove the job's leftovers, while removal is still being retried.
    pub cleanup_error: Option<String>,
    /// The job's input logs may still be in the store (see `persist::StoredJob::logs_left`).
    pub logs_left: bool,
    /// While running: its durable placement (see `persist::RunState`).
    pub run: Option<crate::leader::persist::RunState>,
}

/// Everything the leader knows.
#[derive(Default)]
pub struct State {
    /// Workers by id.
    pub workers: BTreeMap<WorkerId, WorkerRec>,
    /// Jobs by id.
    pub jobs: BTreeMap<JobId, JobRec>,
    /// Tasks by key.
    pub tasks: BTreeMap<TaskKey, TaskRec>,
    /// What running jobs read and write, and uploads in progress.
    pub files: crate::leader::owned::Files,
    /// Every worker identity handed out on this data dir (durable), by id: a worker that
    /// lost its leader rejoins under one of these.
    pub known_workers: BTreeMap<WorkerId, String>,
}

fn ms_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl JobRec {
    /// A job's record as it is submitted: running, nothing counted yet.
    pub fn new(
        spec: JobSpec,
        events: mpsc::Sender<JobEvent>,
        cancel: CancellationToken,
        progress: watch::Receiver<SinkProgress>,
        sink_file: std::path::PathBuf,
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
            sink_file,
            ended_at: None,
            cleanup_error: None,
            logs_left: true,
            run: None,
        }
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
        sink_file: std::path::PathBuf,
    ) -> JobRec {
        let mut rec = JobRec::new(job.spec.clone(), events, cancel, progress, sink_file);
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
    /// running is the caller's to mark failed first), nothing to drive, its output complete up
    /// to `flushed` bytes of `sink_file`.
    pub fn restored(job: StoredJob, sink_file: std::path::PathBuf, flushed: u64) -> JobRec {
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
            flushed,
            finished: true,
        });
        let cancel = CancellationToken::new();
        cancel.cancel();
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
            sink_file,
            ended_at: Some(ended_at),
            cleanup_error: job.cleanup_error,
            logs_left: job.logs_left,
            run: None,
        }
    }
}

impl State {
    /// Records a job under the id the leader reserved for it (`Leader::new_job_id`).
    pub fn add_job(&mut self, id: JobId, rec: JobRec) {
        self.jobs.insert(id, rec);
    }

    /// Records a newly registered worker, alive and with no commands, under the id the
    /// leader took for it (`wN`, from the durable counter).
    pub fn add_worker(&mut self, id: WorkerId, data_addr: String, session: Option<String>) {
        let rec = WorkerRec {
            data_addr,
            last_seen: Instant::now(),
            state: WorkerState::Alive,
            commands: VecDeque::new(),
            next_command: 0,
            delivered: 0,
            notify: Arc::new(Notify::new()),
            session,
        };
        self.workers.insert(id, rec);
    }

    /// Applies a worker's report about one of its attempts: counters, pid (only an executable
    /// operator's), state and error, if it is the current attempt of a task placed on that
    /// worker and not already ended. Returns the event for the job's driver when the report
    /// says the attempt ended.
    pub fn take_report(
        &mut self,
        worker: &WorkerId,
        r: crate::protocol::control::TaskReport,
    ) -> Option<(mpsc::Sender<JobEvent>, JobEvent)> {
        let pid = reported_pid(&self.jobs, &r.key, r.pid);
        let t = self.tasks.get_mut(&r.key)?;
        if t.attempt != r.attempt || t.worker != *worker || t.state.is_terminal() {
            return None;
        }
        t.tuples_in = r.tuples_in;
        t.tuples_out = r.tuples_out;
        t.pid = pid.or(t.pid);
        t.state = r.state;
        if r.error.is_some() {
            t.error = r.error.clone();
        }
        if !r.state.is_terminal() {
            return None;
        }
        if r.state == TaskState::Finished {
            t.rate = 0.0;
        }
        let tx = self.jobs.get(&r.key.job).and_then(|j| j.events.clone())?;
        Some((
            tx,
            JobEvent::TaskEnded {
                key: r.key,
                attempt: r.attempt,
                state: r.state,
                error: r.error,
            },
        ))
    }

    /// Records a task attempt as failed and returns the event for its job's driver (if the
    /// job still runs).
    pub fn fail_task(
        &mut self,
        key: TaskKey,
        attempt: u32,
        cause: String,
    ) -> Option<(mpsc::Sender<JobEvent>, JobEvent)> {
        if let Some(t) = self.tasks.get_mut(&key) {
            t.state = TaskState::Failed;
            t.error = Some(cause.clone());
        }
        let tx = self.jobs.get(&key.job).and_then(|j| j.events.clone())?;
        Some((
            tx,
            JobEvent::TaskEnded {
                key,
                attempt,
                state: TaskState::Failed,
                error: Some(cause),
            },
        ))
    }

    /// Queues a command for a worker and wakes its poll.
    pub fn command(&mut self, worker: &WorkerId, cmd: Command) {
        if let Some(w) = self.workers.get_mut(worker) {
            if w.state == WorkerState::Alive {
                w.next_command += 1;
                w.commands.push_back((w.next_command, cmd));
                w.notify.notify_one();
            }
        }
    }

    /// Live workers, least loaded first (load derived from task records).
    pub fn workers_by_load(&self) -> Vec<WorkerId> {
        let mut load: BTreeMap<&WorkerId, usize> = self
            .workers
            .iter()
            .filter(|(_, w)| w.state == WorkerState::Alive)
            .map(|(id, _)| (id, 0))
            .collect();
        for t in self.tasks.values() {
            if !t.state.is_terminal() {
                if let Some(n) = load.get_mut(&t.worker) {
                    *n += 1;
                }
            }
        }
        let mut v: Vec<(usize, &WorkerId)> = load.into_iter().map(|(w, n)| (n, w)).collect();
        v.sort();
        v.into_iter().map(|(_, w)| w.clone()).collect()
    }

    /// Running tasks of a worker.
    pub fn running_on(&self, worker: &WorkerId) -> u32 {
        self.tasks
            .values()
            .filter(|t| &t.worker == worker && !t.state.is_terminal())
            .count() as u32
    }

    /// Public view of a job.
    pub fn job_info(&self, id: &JobId) -> Option<JobInfo> {
        let j = self.jobs.get(id)?;
        let elapsed = j
            .ended
            .unwrap_or_else(Instant::now)
            .duration_since(j.started);
        Some(JobInfo {
            id: id.clone(),
            name: j.spec.name.clone(),
            status: j.status,
            error: j.error.clone(),
            delivery: j.spec.delivery,
            stages: j
                .spec
                .stages
                .iter()
                .map(|s| format!("{}×{}", s.tasks, s.operator.describe()))
                .collect(),
            sink: j.spec.sink_path.clone(),
            source_tuples: j.source_tuples.load(Ordering::Relaxed),
            sink_tuples: j.sink_tuples.load(Ordering::Relaxed),
            failures: j.failures,
            recoveries: j.recoveries,
            submitted_ms: ms_since_epoch(j.submitted),
            elapsed_ms: elapsed.as_millis() as u64,
            latency_ms: j
                .latency
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .summary(),
            cleanup_error: j.cleanup_error.clone(),
        })
    }

    /// Public view of all jobs, oldest first.
    pub fn jobs_info(&self) -> Vec<JobInfo> {
        let mut v: Vec<JobInfo> = self
            .jobs
            .keys()
            .filter_map(|id| self.job_info(id))
            .collect();
        v.sort_by_key(|j| (j.submitted_ms, j.id.0.len(), j.id.0.clone()));
        v
    }

    /// Public view of tasks.
    pub fn tasks_info(&self) -> Vec<TaskInfo> {
        let mut v: Vec<TaskInfo> = self
            .tasks
            .iter()
            .map(|(k, t)| TaskInfo {
                job: k.job.clone(),
                stage: k.pos.stage,
                task: k.pos.index,
                worker: t.worker.clone(),
                pid: t.pid,
                state: t.state,
                attempt: t.attempt,
                restarts: t.attempt,
                tuples_in: t.tuples_in,
                tuples_out: t.tuples_out,
                input_rate: (t.rate * 10.0).round() / 10.0,
                operator: t.operator.clone(),
                error: t.error.clone(),
            })
            .collect();
        v.sort_by_key(|t| (t.job.0.len(), t.job.0.clone(), t.stage, t.task));
        v
    }

    /// Public view of workers.
    pub fn workers_info(&self) -> Vec<WorkerInfo> {
        let now = Instant::now();
        let mut v: Vec<WorkerInfo> = self
            .workers
            .iter()
            .map(|(id, w)| WorkerInfo {
                id: id.clone(),
                address: w.data_addr.clone(),
                state: w.state,
                last_heartbeat_s: (now.duration_since(w.last_seen).as_secs_f64() * 10.0).round()
                    / 10.0,
                running_tasks: self.running_on(id),
            })
            .collect();
        v.sort_by_key(|w| (w.id.0.len(), w.id.0.clone()));
        v
    }
}

/// A pid a worker reports for a task, if it can be an operator process: the task runs an
/// executable, and the pid names one process (not 0, 1 or a group). Anything else is ignored,
/// so a report can never make `kill-task` aim at a group or at the worker itself.
pub fn reported_pid(
    jobs: &BTreeMap<JobId, JobRec>,
    key: &TaskKey,
    pid: Option<u32>,
) -> Option<u32> {
    let pid = pid.filter(|p| *p > 1 && *p <= i32::MAX as u32)?;
    let stage = (key.pos.stage as usize).checked_sub(1)?;
    let exec = jobs
        .get(&key.job)
        .and_then(|j| j.spec.stages.get(stage))
        .is_some_and(|s| matches!(s.operator, crate::model::spec::OperatorSpec::Exec { .. }));
    exec.then_some(pid)
}

/// Shared handle to the state.
pub type SharedState = Arc<Mutex<State>>;

/// Locks the state, recovering from a poisoned lock (a panicking holder cannot leave the
/// maps half-updated: every mutation is a single insert/remove/assignment).
pub fn lock(s: &SharedState) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ids::TaskPos;
    use crate::model::spec::{Delivery, OperatorSpec, PathMode, StageSpec};

    fn jobs() -> BTreeMap<JobId, JobRec> {
        let stage = |operator| StageSpec { tasks: 1, operator };
        let spec = JobSpec {
            name: None,
            delivery: Delivery::ExactlyOnce,
            source_path: "in.txt".into(),
            source_name: "in.txt".into(),
            rate: 0.0,
            sink_path: "o.txt".into(),
            stages: vec![
                stage(OperatorSpec::Builtin {
                    name: "identity".into(),
                    args: vec![],
                }),
                stage(OperatorSpec::Exec {
                    path: "ops/op.sh".into(),
                    args: vec![],
                }),
            ],
            paths: PathMode::Store,
            keep_logs: false,
            autoscale: None,
        };
        let (tx, _) = mpsc::channel(1);
        let (_, progress) = watch::channel(SinkProgress::default());
        let rec = JobRec::new(spec, tx, CancellationToken::new(), progress, "o.txt".into());
        BTreeMap::from([(JobId("job-1".into()), rec)])
    }

    fn key(stage: u32) -> TaskKey {
        TaskKey {
            job: JobId("job-1".into()),
            pos: TaskPos { stage, index: 0 },
        }
    }

    #[test]
    fn a_forged_pid_for_a_builtin_task_or_a_pid_naming_a_group_is_ignored() {
        let jobs = jobs();
        // Stage 1 is a built-in: it has no process, whatever a report says.
        assert_eq!(reported_pid(&jobs, &key(1), Some(0)), None);
        assert_eq!(reported_pid(&jobs, &key(1), Some(4242)), None);
        // Stage 2 runs an executable: only a pid naming one process counts.
        for bad in [0, 1, u32::MAX, i32::MAX as u32 + 1] {
            assert_eq!(reported_pid(&jobs, &key(2), Some(bad)), None, "{bad}");
        }
        assert_eq!(reported_pid(&jobs, &key(2), Some(4242)), Some(4242));
        // Source, sink and unknown jobs have no operator process.
        assert_eq!(reported_pid(&jobs, &key(0), Some(4242)), None);
        assert_eq!(reported_pid(&jobs, &key(3), Some(4242)), None);
    }
}
