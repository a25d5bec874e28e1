//! The monitor's decisions, as pure functions of what the leader last heard and the time now:
//! which workers are silent past the heartbeat timeout, and which tasks are stalled. The
//! leader's monitor gathers the facts, calls these, and tells each job's core
//! ([`crate::Input::WorkerLost`], [`crate::Input::Stalled`]).

use crate::model::ids::{JobId, TaskKey, WorkerId};
use crate::protocol::control::TaskState;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What the monitor knows of a live worker.
#[derive(Clone, Debug)]
pub struct WorkerSeen {
    /// The worker.
    pub id: WorkerId,
    /// When it last heartbeat (or registered).
    pub last_seen: Instant,
}

/// Workers silent for longer than `timeout` at `now`: they are dead.
pub fn silent_workers(workers: &[WorkerSeen], now: Instant, timeout: Duration) -> Vec<WorkerId> {
    workers
        .iter()
        .filter(|w| now.saturating_duration_since(w.last_seen) > timeout)
        .map(|w| w.id.clone())
        .collect()
}

/// What the monitor knows of a task's current attempt.
#[derive(Clone, Debug)]
pub struct TaskSeen {
    /// The task.
    pub key: TaskKey,
    /// Its current attempt.
    pub attempt: u32,
    /// Its state.
    pub state: TaskState,
    /// Input batches waiting for it, per its last heartbeat.
    pub queued: u32,
    /// When its input last advanced, or last had nothing pending.
    pub progressed: Instant,
    /// Its output is held back (a full link): work pending, like input waiting.
    pub blocked: bool,
    /// When its Start command was sent (none while it is expected back, or held back).
    pub start_sent: Option<Instant>,
    /// Whether its worker has reported it at all.
    pub reported: bool,
}

/// Attempts whose start was sent longer than `timeout` ago at `now` and which their worker
/// has never reported: the start never arrived (a lost command, a worker that dropped it), and
/// without a deadline the task would stay `starting` and its job would never end.
pub fn unstarted_tasks(tasks: &[TaskSeen], now: Instant, timeout: Duration) -> Vec<(TaskKey, u32)> {
    tasks
        .iter()
        .filter(|t| {
            t.state == TaskState::Starting
                && !t.reported
                && t.start_sent
                    .is_some_and(|s| now.saturating_duration_since(s) > timeout)
        })
        .map(|t| (t.key.clone(), t.attempt))
        .collect()
}

/// Running tasks with work pending — input waiting, or output held back by a full link — and
/// no progress for longer than `stall` at `now` (a task that cannot reach the one it sends to
/// has an empty inbox: without the second, its job waited forever, silently). Tasks
/// upstream of a stalled task are only backpressured: per job, only the deepest stalled stage
/// is the culprit. So are tasks upstream of a task that cannot take input yet (starting,
/// recovering its log, waiting for a free slot, failed and about to restart): the job already
/// handles that cause (its start deadline, its restarts), and restarting the tasks it holds
/// back would only spend their restarts — and take the slot it waits for.
pub fn stalled_tasks(tasks: &[TaskSeen], now: Instant, stall: Duration) -> Vec<(TaskKey, u32)> {
    let mut not_taking: BTreeMap<&JobId, u32> = BTreeMap::new();
    for t in tasks.iter().filter(|t| {
        matches!(
            t.state,
            TaskState::Starting | TaskState::Failed | TaskState::Cancelled | TaskState::Waiting
        )
    }) {
        let d = not_taking.entry(&t.key.job).or_insert(0);
        *d = (*d).max(t.key.pos.stage);
    }
    let candidates: Vec<&TaskSeen> = tasks
        .iter()
        .filter(|t| {
            t.state == TaskState::Running
                && (t.queued > 0 || t.blocked)
                && now.saturating_duration_since(t.progressed) > stall
                && not_taking
                    .get(&t.key.job)
                    .is_none_or(|s| *s <= t.key.pos.stage)
        })
        .collect();
    let mut deepest: BTreeMap<&JobId, u32> = BTreeMap::new();
    for t in &candidates {
        let d = deepest.entry(&t.key.job).or_insert(0);
        *d = (*d).max(t.key.pos.stage);
    }
    candidates
        .iter()
        .filter(|t| deepest.get(&t.key.job) == Some(&t.key.pos.stage))
        .map(|t| (t.key.clone(), t.attempt))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ids::TaskPos;

    fn seen(job: &str, stage: u32, queued: u32, idle: u64, now: Instant) -> TaskSeen {
        TaskSeen {
            key: TaskKey {
                job: JobId(job.into()),
                pos: TaskPos { stage, index: 0 },
            },
            attempt: 0,
            state: TaskState::Running,
            queued,
            progressed: now - Duration::from_secs(idle),
            blocked: false,
            start_sent: None,
            reported: true,
        }
    }

    /// A task that cannot send — its downstream unreachable, its links never connecting —
    /// takes nothing more, so its inbox reads empty: its held-back output is what makes it
    /// stalled, not idle. (A partition between two workers wedged a job silently.)
    #[test]
    fn a_task_whose_output_is_held_back_without_progress_is_stalled() {
        let now = Instant::now() + Duration::from_secs(100);
        let blocked = |job: &str, stage: u32, idle: u64| TaskSeen {
            blocked: true,
            ..seen(job, stage, 0, idle, now)
        };
        let tasks = [
            blocked("cut", 0, 90),
            blocked("cut", 1, 90),
            seen("cut", 2, 0, 90, now), // idle: nothing reaches it
            blocked("slow", 1, 10),     // held back, but it moved within the timeout
            seen("idle", 1, 0, 90, now),
        ];
        let stalled = stalled_tasks(&tasks, now, Duration::from_secs(60));
        let got: Vec<String> = stalled.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(
            got,
            ["cut/1.0"],
            "the deepest held-back stage is the culprit"
        );
    }

    #[test]
    fn a_start_never_reported_past_the_timeout_is_a_failed_start() {
        let now = Instant::now() + Duration::from_secs(100);
        let starting = |job: &str, sent: Option<u64>, reported: bool| TaskSeen {
            state: TaskState::Starting,
            start_sent: sent.map(|ago| now - Duration::from_secs(ago)),
            reported,
            ..seen(job, 1, 0, 0, now)
        };
        let tasks = [
            starting("lost", Some(40), false),
            starting("recent", Some(10), false),
            starting("replaying", Some(40), true), // reported: its worker has it
            starting("adopting", None, false),     // expected back: the adopt timer's job
        ];
        let got = unstarted_tasks(&tasks, now, Duration::from_secs(30));
        let got: Vec<String> = got.iter().map(|(k, _)| k.job.0.clone()).collect();
        assert_eq!(got, ["lost"]);
    }

    #[test]
    fn only_the_deepest_stalled_stage_of_a_job_is_the_culprit() {
        let now = Instant::now() + Duration::from_secs(100);
        let tasks = [
            seen("a", 1, 3, 90, now),
            seen("a", 2, 3, 90, now),
            seen("a", 3, 0, 90, now), // nothing waiting: idle, not stalled
            seen("b", 1, 3, 90, now),
            seen("b", 2, 3, 5, now), // progressed recently
        ];
        let stalled = stalled_tasks(&tasks, now, Duration::from_secs(60));
        let got: Vec<String> = stalled.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(got, ["a/2.0", "b/1.0"]);
    }

    /// War story (hostile probe): a sink waiting for a free slot held its upstream task back;
    /// the monitor took that task for stalled and restarted it until the job failed, each
    /// restart taking the very slot the sink waited for.
    #[test]
    fn a_task_held_back_by_one_that_cannot_take_input_yet_is_not_stalled() {
        let now = Instant::now() + Duration::from_secs(100);
        let state = |t: TaskSeen, state: TaskState| TaskSeen { state, ..t };
        // Waiting: for a free slot or a live worker (hostile probe 18: after a worker loss on
        // a full cluster, the source held back by it was restarted until the job failed).
        for waiting in [
            TaskState::Starting,
            TaskState::Failed,
            TaskState::Cancelled,
            TaskState::Waiting,
        ] {
            let tasks = [
                seen("a", 1, 3, 90, now),
                seen("a", 2, 3, 90, now),
                state(seen("a", 3, 0, 90, now), waiting),
                // Downstream of the one that waits, a task with input and no progress is
                // still a stall.
                seen("b", 1, 3, 90, now),
                state(seen("b", 2, 0, 90, now), waiting),
                seen("b", 3, 3, 90, now),
            ];
            let stalled = stalled_tasks(&tasks, now, Duration::from_secs(60));
            let got: Vec<String> = stalled.iter().map(|(k, _)| k.to_string()).collect();
            assert_eq!(got, ["b/3.0"], "{waiting:?}");
        }
    }

    #[test]
    fn a_worker_is_dead_only_past_the_timeout() {
        let now = Instant::now() + Duration::from_secs(100);
        let w = |id: &str, ago: u64| WorkerSeen {
            id: WorkerId(id.into()),
            last_seen: now - Duration::from_secs(ago),
        };
        let dead = silent_workers(&[w("w1", 4), w("w2", 6)], now, Duration::from_secs(5));
        assert_eq!(dead, [WorkerId("w2".into())]);
    }
}
