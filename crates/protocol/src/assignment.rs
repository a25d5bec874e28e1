//! What a worker is told to run: one task attempt's assignment (`Command::Start`), its role,
//! and what a first-stage task replays from the source file.

use crate::dest::Route;
use crate::model::ids::TaskKey;
use crate::model::partition::Partition;
use crate::model::spec::{Delivery, OperatorSpec, PathMode};
use serde::{Deserialize, Serialize};

/// Everything a worker needs to run one task attempt.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskAssignment {
    /// Which task.
    pub key: TaskKey,
    /// Attempt number (0 first).
    pub attempt: u32,
    /// What the task is: an operator, the job's source or its sink.
    pub role: TaskRole,
    /// How to resolve an executable's path (and the source's and the sink's).
    pub paths: PathMode,
    /// Number of upstream tasks (incoming links).
    pub upstream: u32,
    /// Number of downstream tasks (outgoing links).
    pub downstream: u32,
    /// How outputs pick their downstream task.
    pub partition: Partition,
    /// Which downstream task owns each key group, from which output on (rescales).
    #[serde(default)]
    pub routing: crate::reroute::OutRouting,
    /// For a task whose stage keeps state per key group: its stage's routing, to take groups
    /// over with their state.
    #[serde(default)]
    pub inbound: Option<crate::routing::Inbound>,
    /// Delivery mode.
    pub delivery: Delivery,
    /// Current placement of the job (position, data address, attempt, the key of the worker
    /// running it).
    pub routes: Vec<Route>,
    /// Version of that placement (newer wins).
    pub routes_version: u64,
    /// Job epoch (at-least-once restarts the whole pipeline in a new epoch).
    #[serde(default)]
    pub epoch: u32,
    /// For a first-stage task that may read its input again (exactly-once, or a stage that
    /// rebuilds moved key groups from their history): where its input log, the source file,
    /// is.
    pub source_replay: Option<SourceReplay>,
    /// Whether this task (a stage ≥ 2) keeps an input log although its delivery mode would
    /// not: an at-least-once stage whose executable may keep state and which autoscales logs
    /// its input so that a key group it loses can be rebuilt by its new owner, live, rather
    /// than by restarting the pipeline. Exactly-once stages ≥ 2 and the sink always log.
    #[serde(default)]
    pub log_input: bool,
    /// For the source: how many lines earlier attempts of it already read. They were due
    /// already, so a restarted source sends them without pacing and paces only what follows
    /// (an at-least-once restart replays from the first line).
    #[serde(default)]
    pub source_caught_up: u64,
    /// The job's `commit_interval_ms`, if it gave one: a logged task writes its input log at
    /// most once per this many milliseconds (absent: the worker's own setting).
    #[serde(default)]
    pub commit_interval_ms: Option<u32>,
    /// The tasks of the stage before this one (their indices) that had finished when this
    /// attempt was started. Each ended its stream into this task, which logged the end before
    /// acknowledging it, so an exactly-once attempt's recovered log must hold every one of those
    /// ends: one missing means objects of the log are gone, and a finished task never sends
    /// again (the attempt would wait for it for ever).
    #[serde(default)]
    pub finished_upstream: Vec<u32>,
    /// Whether the task starts standing by: its stage autoscales and it owns no key group
    /// yet. An executable's process then starts only when input first comes for it.
    #[serde(default)]
    pub standby: bool,
}

/// What a task runs. The source (stage 0) and the sink (stage K+1) are placed on workers like
/// the operators, so the data path never passes through the leader.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "kebab-case")]
pub enum TaskRole {
    /// A stage's operator.
    Operator {
        /// The operator.
        operator: OperatorSpec,
    },
    /// The job's source: reads the file at a rate and feeds the first stage.
    Source {
        /// Source path (local or store path, per the assignment's path mode).
        path: String,
        /// Name used in keys (`name:line`).
        name: String,
        /// Tuples per second; 0 = unthrottled.
        rate: f64,
        /// The first stage's leading filters, applied before routing (`model::pushdown`);
        /// the first stage's replays apply the same ([`SourceReplay::filter`]).
        #[serde(default)]
        filter: Option<crate::model::pushdown::SourceFilter>,
    },
    /// The job's sink: logs what the last stage delivers, then writes the output file.
    Sink {
        /// Output path (local or store path, per the assignment's path mode).
        path: String,
    },
}

#[cfg(any(test, feature = "test-util"))]
impl TaskAssignment {
    /// An attempt 0 of task `key` as `role` for unit tests: local paths, one link each way,
    /// exactly-once, routed by key, nothing logged or replayed; callers set what they test.
    pub fn sample(key: TaskKey, role: TaskRole) -> TaskAssignment {
        TaskAssignment {
            key,
            attempt: 0,
            role,
            paths: PathMode::Local,
            upstream: 1,
            downstream: 1,
            partition: Partition::Key,
            routing: Default::default(),
            inbound: None,
            delivery: Delivery::ExactlyOnce,
            routes: Vec::new(),
            routes_version: 1,
            epoch: 0,
            source_replay: None,
            log_input: false,
            source_caught_up: 0,
            commit_interval_ms: None,
            finished_upstream: Vec::new(),
            standby: false,
        }
    }
}

impl TaskRole {
    /// The executable this task runs, if it runs one.
    pub fn exec(&self) -> Option<&str> {
        match self {
            TaskRole::Operator {
                operator: OperatorSpec::Exec { path, .. },
            } => Some(path),
            _ => None,
        }
    }
}

/// How a first-stage task regenerates input it never saw: the tuples of its partition of the
/// source file, up to what its source link says (in its Hello) is already acknowledged.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SourceReplay {
    /// Source path (local or store path, per the assignment's path mode).
    pub path: String,
    /// Name used in keys.
    pub name: String,
    /// First-stage partitioning.
    pub partition: Partition,
    /// First-stage task count.
    pub tasks: u32,
    /// The source's routing history into the first stage, by its output's number (a line
    /// the source's filter drops is no output).
    #[serde(default)]
    pub steps: Vec<crate::model::groups::RouteStep>,
    /// What the source drops before routing (`model::pushdown`): a replay reads the file
    /// through it, so its n-th line kept is the source's n-th output.
    #[serde(default)]
    pub filter: Option<crate::model::pushdown::SourceFilter>,
}
