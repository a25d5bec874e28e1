//! What a job's core is told ([`Input`]), what it sees of the cluster ([`Cluster`]) and what it
//! asks its executor to do ([`Action`]).

use super::record::RunState;
use crate::model::ids::{TaskPos, WorkerId};
use crate::protocol::control::{Endpoint, Route, TaskAssignment, TaskState};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Something a job's core reacts to.
#[derive(Clone, Debug)]
pub enum Input {
    /// A new job: place every task and start them.
    Start,
    /// A restarted leader carries on a job an earlier one ran, from its durable placement:
    /// every task is expected back from its worker.
    Resume(RunState),
    /// An attempt reached a terminal state (as its worker reported it).
    TaskEnded {
        /// Which task.
        pos: TaskPos,
        /// Which attempt.
        attempt: u32,
        /// Its final state.
        state: TaskState,
        /// Why it failed.
        error: Option<String>,
        /// The failure is one no restart can mend (its input log is damaged, gone, or not
        /// sealed by this cluster): the job fails at once rather than after every restart.
        unrecoverable: bool,
    },
    /// The source's attempt reported its whole stream acknowledged (its counters are final).
    SourceDone {
        /// Which attempt of the source.
        attempt: u32,
    },
    /// The monitor declared this worker dead: whatever ran there is lost.
    WorkerLost {
        /// The worker.
        worker: WorkerId,
    },
    /// This worker is draining: it takes no new task, and the tasks it runs move to other
    /// workers (stopped and restarted from their logs under exactly-once, a new epoch under
    /// at-least-once); a move is not a failure. At-most-once tasks, which can never re-run,
    /// stay until they end.
    WorkerDraining {
        /// The worker.
        worker: WorkerId,
    },
    /// A draining worker left with tasks still on it (its drain timed out before there was
    /// room for them elsewhere): they move now, as a drain's moves (not failures), waiting for
    /// a slot if none is free. At-most-once tasks on it are lost, as with [`Input::WorkerLost`].
    DrainEnded {
        /// The worker.
        worker: WorkerId,
    },
    /// The monitor found this attempt stalled (input waiting, no progress).
    Stalled {
        /// Which task.
        pos: TaskPos,
        /// Which attempt.
        attempt: u32,
        /// What the monitor saw.
        cause: String,
    },
    /// A worker rejoined under its old identity, reporting the attempts of this job it runs
    /// or ran since it lost the leader.
    Rejoined {
        /// The worker.
        worker: WorkerId,
        /// Its attempts of this job.
        reports: Vec<Reported>,
    },
    /// A timer the core set has expired.
    Timer(Timer),
    /// The user changed the source's rate (`rainstorm set-rate`).
    SetRate(f64),
    /// Rescale a stage (`rainstorm scale`).
    Scale(crate::rescale::ScaleRequest),
    /// The autoscaled stages' measured loads (every second or so), at `now_ms` on the
    /// leader's clock: the autoscaler decides from them.
    Loads {
        /// ms since the Unix epoch.
        now_ms: u64,
        /// One per autoscaled stage.
        loads: Vec<crate::autoscale::StageLoad>,
    },
    /// An upstream attempt switched its outputs to a stage's new map, at this point.
    Switched {
        /// Which task.
        pos: TaskPos,
        /// Which attempt.
        attempt: u32,
        /// The version and the point.
        report: crate::protocol::reroute::SwitchReport,
    },
    /// A task handed over the state of the key groups it lost with its stage's routing
    /// `version` (a stage whose built-in keeps state): the stage may be rescaled again.
    HandedOver {
        /// Which task.
        pos: TaskPos,
        /// The version.
        version: u32,
    },
    /// The user cancelled the job.
    Cancel,
    /// The executor could not carry out an action (the placement could not be made
    /// durable): the job cannot go on safely.
    Abort(String),
}

/// One attempt a rejoining worker reports.
#[derive(Clone, Debug)]
pub struct Reported {
    /// Which task.
    pub pos: TaskPos,
    /// Which attempt.
    pub attempt: u32,
    /// Its state on the worker.
    pub state: TaskState,
    /// Why it failed.
    pub error: Option<String>,
}

/// The core's timers; setting one replaces an earlier deadline of the same kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// The sink finished: the other tasks have this long to report their own ends.
    Drain,
    /// A resumed job: tasks whose worker has not rejoined by then are lost.
    Adopt,
    /// The job's time limit (`timeout_s`) is reached: it fails.
    Timeout,
    /// Capacity may have freed up: try again to place a job that waits for slots, or tasks
    /// whose restart found none.
    Place,
    /// A rescale of this stage has not had every upstream point by now: it is aborted.
    Switch(u32),
    /// A restart held back by the restart backoff: start this attempt of this task now (if
    /// it is still the task's current attempt).
    Start(TaskPos, u32),
}

/// How a job ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The sink holds every end of stream and wrote the output.
    Succeeded,
    /// The job cannot go on; the cause.
    Failed(String),
    /// The user cancelled it.
    Cancelled,
}

/// What the core asks its executor to do, in order. A [`Action::Persist`] is durable before
/// any later action of the same step takes effect.
#[derive(Clone, Debug)]
pub enum Action {
    /// The task's current attempt is now `attempt`, on `worker`, in `state` (the executor's
    /// view of tasks follows; reports of other attempts are stale).
    Assign {
        /// Which task.
        pos: TaskPos,
        /// Where it runs.
        worker: WorkerId,
        /// Its current attempt.
        attempt: u32,
        /// `Starting` for a new attempt or one expected back, `Finished` for one that was.
        state: TaskState,
    },
    /// Make the placement durable (a restarted leader resumes from it).
    Persist(RunState),
    /// Start an attempt on a worker.
    Start {
        /// The worker.
        worker: WorkerId,
        /// What it runs.
        assignment: Box<TaskAssignment>,
    },
    /// Stop one attempt.
    Stop {
        /// The worker running it.
        worker: WorkerId,
        /// Which task.
        pos: TaskPos,
        /// Which attempt.
        attempt: u32,
    },
    /// Stop every attempt of the job on these workers.
    StopJob {
        /// The workers.
        workers: Vec<WorkerId>,
    },
    /// Tell these workers where each task of the job runs now.
    Routes {
        /// The workers.
        workers: Vec<WorkerId>,
        /// The placement's version (workers apply only newer ones).
        version: u64,
        /// The placement.
        routes: Vec<Route>,
    },
    /// The source, running on `worker`, paces by `rate` from now on.
    SetRate {
        /// The worker running the source's current attempt.
        worker: WorkerId,
        /// Tuples per second (0: unthrottled).
        rate: f64,
    },
    /// Switch this upstream attempt's outputs to a new key-group map of the next stage.
    Reroute {
        /// The worker running it.
        worker: WorkerId,
        /// Which task.
        pos: TaskPos,
        /// Which attempt.
        attempt: u32,
        /// The version and its map.
        route: crate::protocol::reroute::PendingRoute,
    },
    /// The verdict on a switch: confirmed (every point is durable) or aborted.
    Rerouted {
        /// The worker running it.
        worker: WorkerId,
        /// Which task.
        pos: TaskPos,
        /// Which attempt.
        attempt: u32,
        /// The next stage's routing version.
        version: u32,
        /// Confirmed or aborted.
        confirm: bool,
    },
    /// Tell these workers a stage's routing after a switch was confirmed: its tasks take over
    /// the state of the key groups they gained.
    Inbound {
        /// The workers running the stage's tasks.
        workers: Vec<WorkerId>,
        /// The stage.
        stage: u32,
        /// Its routing (confirmed switches only).
        routing: crate::routing::StageRouting,
    },
    /// The operator tasks that own no key group now: they hold no slot.
    Standby(BTreeSet<TaskPos>),
    /// A rescale started, finished, was aborted or refused (for the job's `scaling` list).
    Scaling(ScaleNote),
    /// The job waits for capacity (why), or (`None`) no longer does.
    Waiting(Option<String>),
    /// Call back with [`Input::Timer`] after this long (replacing that timer's deadline).
    SetTimer(Timer, Duration),
    /// Forget a timer.
    ClearTimer(Timer),
    /// The job's outcome is known: stop its tasks and record it.
    End(Outcome),
}

/// One step of a rescale, as the job's `scaling` list shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleNote {
    /// The stage.
    pub stage: u32,
    /// The routing version (0 for a refusal).
    pub version: u32,
    /// Tasks before (0 when not known here: the executor keeps the started note).
    pub from: u32,
    /// Tasks after.
    pub to: u32,
    /// Why it was decided.
    pub reason: String,
    /// The stage's input rate when decided (tuples/s).
    pub rate: Option<f64>,
    /// How far it got.
    pub phase: ScalePhase,
}

/// How far a rescale got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScalePhase {
    /// Upstream tasks were asked to switch.
    Started,
    /// Every upstream task switched.
    Done,
    /// Given up (why); the stage keeps its tasks.
    Aborted(String),
    /// Not started (why).
    Refused(String),
}

/// What the core sees of the cluster when it decides: the live workers, in the order it
/// should prefer them (the leader: least loaded first), with their data addresses and keys
/// (a placement names, for each attempt, the key its Hellos must be signed with); which of
/// them take new tasks and how many slots each has free for this job.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    /// Live workers in preference order, with their data addresses and keys (draining ones
    /// included: they still take commands).
    pub workers: Vec<(WorkerId, Endpoint)>,
    /// Slots each worker has free for this job: its total less what the tasks of *other*
    /// running jobs hold (the core subtracts its own). `None`: capacity is not counted.
    pub slots: Option<BTreeMap<WorkerId, u32>>,
    /// Live workers that take no new task.
    pub draining: BTreeSet<WorkerId>,
    /// An earlier job still waits for capacity (its id): a new job waits behind it, so jobs
    /// start first come, first served.
    pub behind: Option<String>,
}

impl Cluster {
    /// Whether `worker` is alive.
    pub fn alive(&self, worker: &WorkerId) -> bool {
        self.workers.iter().any(|(w, _)| w == worker)
    }

    /// The data address and key of a live worker.
    pub fn endpoint(&self, worker: &WorkerId) -> Option<&Endpoint> {
        self.workers
            .iter()
            .find(|(w, _)| w == worker)
            .map(|(_, e)| e)
    }

    /// Live workers that take new tasks, in preference order.
    pub fn placeable(&self) -> impl Iterator<Item = &(WorkerId, Endpoint)> {
        self.workers
            .iter()
            .filter(|(w, _)| !self.draining.contains(w))
    }
}
