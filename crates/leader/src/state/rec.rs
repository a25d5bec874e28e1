//! A task as the leader's state records it: its current attempt, where it runs, what its
//! worker last reported, and whether it holds a slot.

use crate::model::ids::WorkerId;
use crate::model::spec::StageRole;
use crate::protocol::control::TaskState;
use std::time::Instant;

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
    /// Last failure.
    pub error: Option<String>,
    /// Operator description.
    pub operator: String,
    /// When input last advanced, or last had nothing pending (stall detection).
    pub progressed: Instant,
    /// Input batches waiting for the task, per its last heartbeat.
    pub queued: u32,
    /// A source whose current attempt reported its whole stream acknowledged.
    pub done: bool,
    /// When the current attempt's Start command was queued for its worker (none for an
    /// attempt expected back after a leader restart, or one whose start is held back).
    pub start_sent: Option<Instant>,
    /// Whether the worker has reported the current attempt at all (a start that never
    /// arrived leaves this false).
    pub reported: bool,
    /// Bytes, busy and back-pressured time and histograms of the current attempt, and the
    /// shares and rates derived from them (`/metrics`, the task views).
    pub meters: crate::meters::Meters,
    /// It owns no key group (an autoscaled stage's spare): it holds no slot.
    pub standby: bool,
    /// The latest switch of its outputs the job's core was told of (its version).
    pub switched: Option<u32>,
    /// The latest routing version whose lost key groups' state it handed over, as the job's
    /// core was told.
    pub handed: u32,
    /// Tuples its current attempt's executable was fed after it exited 0 early: discarded.
    pub discarded: u64,
    /// Its output was held back for most of the time between its last two reports (see
    /// `State::take_report`): pending work the stall detector counts like a full inbox.
    pub blocked: bool,
    /// How long its current attempt's input-log write in progress had waited for the store,
    /// per its last report, in ms (0: none waits).
    pub store_wait_ms: u64,
    /// Its current attempt waited for its operator to finish after its last input, per its
    /// last report.
    pub finishing: bool,
    /// Its current attempt was inside a call to its operator, per its last report.
    pub in_operator: bool,
    /// The receiver its links had tried longest to reach, and for how many ms, per its last
    /// report.
    pub unreached: Option<(crate::model::ids::TaskPos, u64)>,
    /// Its current attempt failed in a way no restart mends (`TaskReport::unrecoverable`): for
    /// the sink, a log that is not whole, from which no output is written (`cleanup.rs`).
    pub unrecoverable: bool,
}

impl TaskRec {
    /// Its next attempt, `attempt`, waits for a free slot or a live worker: nothing of the
    /// last one is shown as current (its reports, which name the older attempt, are ignored).
    pub fn wait_for_room(&mut self, attempt: u32) {
        if self.state == TaskState::Waiting && self.attempt == attempt {
            return;
        }
        self.attempt = attempt;
        self.state = TaskState::Waiting;
        self.pid = None;
        self.queued = 0;
        self.start_sent = None;
        self.reported = false;
        self.blocked = false;
        self.store_wait_ms = 0;
        self.finishing = false;
        self.in_operator = false;
        self.unreached = None;
        self.meters.stop();
    }

    /// A task just placed (or expected back from its worker): no counters, no pid yet.
    pub fn placed(
        worker: WorkerId,
        attempt: u32,
        state: TaskState,
        spec: &crate::model::spec::JobSpec,
        stage: u32,
    ) -> TaskRec {
        let now = Instant::now();
        TaskRec {
            worker,
            attempt,
            pid: None,
            state,
            tuples_in: 0,
            tuples_out: 0,
            error: None,
            operator: match spec.role_of(stage) {
                StageRole::Source => "source".to_string(),
                StageRole::Sink => "sink".to_string(),
                StageRole::Operator(s) => s.operator.describe(),
            },
            progressed: now,
            queued: 0,
            done: false,
            start_sent: None,
            reported: false,
            meters: Default::default(),
            standby: false,
            switched: None,
            handed: 0,
            discarded: 0,
            unrecoverable: false,
            blocked: false,
            store_wait_ms: 0,
            finishing: false,
            in_operator: false,
            unreached: None,
        }
    }
}

/// A pid a worker reports for a task, if it can be an operator process: the task runs an
/// executable, and the pid names one process (not 0, 1 or a group). Anything else is ignored,
/// so a report can never make `kill-task` aim at a group or at the worker itself.
pub fn reported_pid(
    jobs: &std::collections::BTreeMap<crate::model::ids::JobId, crate::job::JobRec>,
    key: &crate::model::ids::TaskKey,
    pid: Option<u32>,
) -> Option<u32> {
    let pid = pid.filter(|p| *p > 1 && *p <= i32::MAX as u32)?;
    let exec = jobs.get(&key.job).is_some_and(|j| {
        matches!(
            j.spec.role_of(key.pos.stage),
            StageRole::Operator(s) if matches!(s.operator, crate::model::spec::OperatorSpec::Exec { .. })
        )
    });
    exec.then_some(pid)
}
