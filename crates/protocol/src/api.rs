//! What the public API answers (and the CLI and dashboard show): job, task and worker views,
//! statuses, `kill-task` requests and the events of a job's output stream. Re-exported by
//! `control`, where the control-plane messages are.

use crate::model::ids::{JobId, WorkerId};
use crate::model::spec::Delivery;
use serde::{Deserialize, Serialize};

/// Lifecycle of a task, as reported by its worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Placed, not yet processing (recovering its log counts as starting).
    Starting,
    /// Processing.
    Running,
    /// Ended after its end of stream was acknowledged downstream.
    Finished,
    /// Ended by a failure (operator crash, kill-task, lost worker).
    Failed,
    /// Stopped because its job was cancelled or ended.
    Cancelled,
    /// Its last attempt was stopped and the next one waits for a free slot or a live worker
    /// (the leader's view: no worker runs it and it holds no slot).
    Waiting,
}

impl TaskState {
    /// Whether no more reports will follow.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Finished | TaskState::Failed | TaskState::Cancelled
        )
    }

    /// Whether an attempt of the task is on a worker now: not ended, not waiting for room.
    pub fn on_worker(self) -> bool {
        !self.is_terminal() && self != TaskState::Waiting
    }
}

/// Final or current status of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Accepted, waiting for capacity (see `pending_reason`); first come, first served.
    Pending,
    /// Validated and running.
    Running,
    /// Every tuple reached the sink, which is durable.
    Succeeded,
    /// Failed; see `error`.
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

impl JobStatus {
    /// Whether the status is final.
    pub fn is_terminal(self) -> bool {
        !matches!(self, JobStatus::Running | JobStatus::Pending)
    }
}

pub use crate::model::latency::Latency;

/// A job as the public API shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobInfo {
    /// Id.
    pub id: JobId,
    /// Name from the job file.
    pub name: Option<String>,
    /// Status.
    pub status: JobStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// Delivery mode.
    pub delivery: Delivery,
    /// Stages, described: `N×operator`, N the tasks owning its key groups now.
    pub stages: Vec<String>,
    /// Sink path.
    pub sink: String,
    /// Tuples the source emitted.
    pub source_tuples: u64,
    /// Lines the sink wrote.
    pub sink_tuples: u64,
    /// Task failures seen.
    pub failures: u64,
    /// Task restarts done.
    pub recoveries: u64,
    /// The latest task failure: which attempt and why (while a job keeps restarting a task,
    /// this is what to look at).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    /// The source's rate, tuples per second (0: unthrottled); `set-rate` changes it.
    #[serde(default)]
    pub rate: f64,
    /// Why the job (`pending`), or some of its tasks, wait: for capacity, or for a store that
    /// does not take their input-log writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_reason: Option<String>,
    /// Submission time, ms since the Unix epoch.
    pub submitted_ms: u64,
    /// Run time so far or in total, ms.
    pub elapsed_ms: u64,
    /// Latency, once tuples reached the sink.
    pub latency_ms: Option<Latency>,
    /// Why the job's leftovers (input logs) could not be removed yet; removal is retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_error: Option<String>,
    /// An ended job's output file was written over or removed since it ended (by another
    /// job, an upload or a delete): what is there now is not this job's output, and a
    /// follower is not shown it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_replaced: Option<String>,
    /// The source file's size, bytes, as its task found it (unknown before the source
    /// reported, or from a leader or worker that does not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_bytes: Option<u64>,
    /// Bytes of the source file read by its current attempt (at most `source_bytes`): with
    /// it, the share of the input done, which `follow` shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_read_bytes: Option<u64>,
    /// Each stage's tasks owning key groups now (autoscaled stages change it).
    #[serde(default)]
    pub stage_tasks: Vec<u32>,
    /// Every rescale decided for the job, oldest first.
    #[serde(default)]
    pub scaling: Vec<ScaleInfo>,
    /// Tuples its executables were fed after they exited 0 before their input ended, and
    /// discarded (the operator protocol lets an operator stop early, like `head`), as the
    /// current attempts of its tasks last reported: not 0 means part of the input was not
    /// processed.
    #[serde(default)]
    pub discarded_tuples: u64,
}

/// One rescale of a stage, as `rainstorm job ID --json` lists it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ScaleInfo {
    /// When it was decided, ms since the Unix epoch.
    pub time_ms: u64,
    /// The stage (1-based).
    pub stage: u32,
    /// Tasks before.
    pub from: u32,
    /// Tasks asked for (or, done, reached).
    pub to: u32,
    /// The stage's measured input rate when decided, tuples/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Why it was decided.
    pub reason: String,
    /// `in-progress`, `done`, `aborted` or `refused`.
    pub outcome: String,
    /// Why it was aborted or refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// How long the move took, from the decision until every upstream task switched, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took_ms: Option<u64>,
}

/// A task as `rainstorm tasks` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TaskInfo {
    /// Job id.
    pub job: JobId,
    /// Stage (1-based; source and sink are not listed).
    pub stage: u32,
    /// Task index in its stage.
    pub task: u32,
    /// Worker running (or last running) it.
    pub worker: WorkerId,
    /// Operator process id as the worker running it reports it (null for built-ins): the
    /// worker's word, which `kill-task` passes back to that worker only.
    pub pid: Option<u32>,
    /// State.
    pub state: TaskState,
    /// Attempt number (0 = never restarted).
    pub attempt: u32,
    /// It owns no key group: an autoscaled stage's task kept ready, holding no slot.
    #[serde(default)]
    pub standby: bool,
    /// Restarts so far.
    pub restarts: u32,
    /// Tuples accepted.
    pub tuples_in: u64,
    /// Tuples emitted.
    pub tuples_out: u64,
    /// Input tuples per second, recent.
    pub input_rate: f64,
    /// The operator.
    pub operator: String,
    /// Last failure.
    pub error: Option<String>,
    /// Input batches waiting in the task's inbox (plus one while it drains).
    #[serde(default)]
    pub queued: u32,
    /// Key and value bytes accepted by the current attempt.
    #[serde(default)]
    pub bytes_in: u64,
    /// Key and value bytes emitted by the current attempt.
    #[serde(default)]
    pub bytes_out: u64,
    /// Output tuples per second, recent.
    #[serde(default)]
    pub output_rate: f64,
    /// Share of recent time spent processing (0–1): a stage whose tasks are busy while the
    /// stages before it are back-pressured is the bottleneck.
    #[serde(default)]
    pub busy: f64,
    /// Share of recent time blocked handing output downstream (0–1).
    #[serde(default)]
    pub backpressured: f64,
    /// Share of recent time waiting for input (0–1).
    #[serde(default)]
    pub idle: f64,
    /// Busy time of the current attempt, seconds.
    #[serde(default)]
    pub busy_s: f64,
    /// Back-pressured time of the current attempt, seconds.
    #[serde(default)]
    pub backpressured_s: f64,
    /// Age of the current attempt as its worker last reported it, seconds.
    #[serde(default)]
    pub uptime_s: f64,
    /// Tuples fed after its executable exited 0 before its input ended: discarded.
    #[serde(default)]
    pub discarded: u64,
    /// How long its input-log write in progress has waited for the store, in seconds (0:
    /// none waits).
    #[serde(default)]
    pub store_wait_s: f64,
}

impl TaskInfo {
    /// The task as shown once its job has ended (a restarted leader shows it so): stopped,
    /// with no process and no rate.
    pub fn ended(mut self) -> TaskInfo {
        if !self.state.is_terminal() {
            self.state = TaskState::Cancelled;
        }
        self.pid = None;
        self.queued = 0;
        self.input_rate = 0.0;
        self.output_rate = 0.0;
        self
    }
}

/// Liveness of a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Heartbeating.
    Alive,
    /// Missed heartbeats past the timeout.
    Dead,
    /// Takes no new task; its tasks move to other workers before it leaves.
    Draining,
    /// Drained and gone.
    Left,
}

/// A worker as `rainstorm workers` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Id.
    pub id: WorkerId,
    /// Data address.
    pub address: String,
    /// Liveness.
    pub state: WorkerState,
    /// Seconds since its last heartbeat.
    pub last_heartbeat_s: f64,
    /// Tasks running on it.
    pub running_tasks: u32,
    /// The data connections it holds at most, each way (what the link rule counts with).
    #[serde(default)]
    pub data_conns: u64,
    /// How many operator tasks it runs at once.
    #[serde(default)]
    pub slots: u32,
    /// How many of them running jobs' tasks hold now.
    #[serde(default)]
    pub slots_used: u32,
    /// Its links' shared TCP connections to other workers and the streams on them, as its
    /// last heartbeat said (absent: it opens a connection per link, or has not said yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_conns: Option<DataConns>,
    /// How far its clock is behind the leader's, ms (negative: ahead), as it measured it; it
    /// stamps emit times in the leader's time, so latency across hosts stays right.
    #[serde(default)]
    pub clock_offset_ms: f64,
}

/// A worker's outgoing data connections when its links share them (multiplexed): how many
/// TCP connections carry how many links, and how many links need none, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataConns {
    /// TCP connections (sessions) to other processes.
    pub sessions: u64,
    /// Links' streams open on them.
    pub streams: u64,
    /// Links open in memory to a listener of the same process (`dataplane::local`): no TCP
    /// connection at all.
    #[serde(default)]
    pub local: u64,
}

/// Request of `rainstorm kill-task`.
#[derive(Debug, Serialize, Deserialize)]
pub struct KillRequest {
    /// Worker id.
    pub worker: WorkerId,
    /// Operator process id.
    pub pid: u32,
}

/// One event of a job's output stream (NDJSON).
// The one `End` of a stream carries the job's record; boxing it would save nothing that
// matters on a path that serializes every event anyway.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputEvent {
    /// A chunk of complete output lines.
    Data(String),
    /// The final status; always the last event.
    End(JobInfo),
}
