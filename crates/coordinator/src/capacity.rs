//! Capacity: which tasks take a worker slot, what a job needs to start, and where each task
//! goes. Slots are shared the way Flink shares them: task `i` of every operator stage forms
//! slot group `i`, and a group takes one slot on each worker it runs on, so a job needs as
//! many slots as its widest stage. A job starts only when all of its groups fit at once (and
//! no earlier job still waits: first come, first served); until then it is pending. A task
//! whose restart finds no room waits for a slot instead of over-filling a worker. Draining
//! workers take nothing new.
//!
//! Slots are never stored as counters that could leak: the leader derives what other jobs
//! hold from their tasks that have not ended, and the core derives what its own current
//! attempts hold, so a slot comes back on every way a task can end.

use super::event::{Action, Cluster, Timer};
use super::job::JobCore;
use crate::model::ids::{TaskPos, WorkerId};
use crate::model::partition::tasks_of;
use crate::model::spec::{JobSpec, StageRole};
use crate::protocol::control::Endpoint;
use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::time::Duration;

/// How soon a job or a task waiting for capacity looks again.
pub const PLACE_RETRY: Duration = Duration::from_millis(250);

/// Whether the tasks of `stage` take a slot: operator stages do. The source and the sink do
/// not: they move lines between a file and the pipeline and run no user code (see
/// `docs/decisions.md`).
pub fn takes_slot(spec: &JobSpec, stage: u32) -> bool {
    matches!(spec.role_of(stage), StageRole::Operator(_))
}

/// The slots a job holds while it runs with every group on its own worker: as many as its
/// widest operator stage has tasks.
pub fn demand(spec: &JobSpec) -> u32 {
    (0..=spec.sink_stage())
        .filter(|s| takes_slot(spec, *s))
        .map(|s| tasks_of(spec, s))
        .max()
        .unwrap_or(0)
}

/// The slot group of a task: its index (task `i` of every operator stage shares slot `i`);
/// `None` for a task that takes no slot.
pub fn group_of(spec: &JobSpec, pos: TaskPos) -> Option<u32> {
    takes_slot(spec, pos.stage).then_some(pos.index)
}

/// The slots `tasks` (running, with their positions) hold on one worker: one per slot group
/// among them.
pub fn slots_of<'a>(spec: &JobSpec, tasks: impl Iterator<Item = &'a TaskPos>) -> u32 {
    tasks
        .filter_map(|p| group_of(spec, *p))
        .collect::<BTreeSet<u32>>()
        .len() as u32
}

/// One worker that takes new tasks, as a placement sees it.
struct Spot {
    worker: WorkerId,
    at: Endpoint,
    /// Slots free for this job (`None`: not counted).
    free: Option<u32>,
    /// This job's tasks on it.
    ours: u32,
    /// The slot groups this job holds on it (a task of one of them costs no new slot).
    groups: BTreeSet<u32>,
}

/// Where a job's tasks can go now: every live, non-draining worker with the slots it has free
/// for the job, in the cluster's order of preference.
pub(super) struct Room {
    spots: Vec<Spot>,
}

impl Room {
    /// The room the job has now. With `fresh`, as if the job held nothing (an at-least-once
    /// restart places every task anew).
    pub(super) fn of(core: &JobCore, cluster: &Cluster, fresh: bool) -> Room {
        let spots = cluster
            .placeable()
            .map(|(w, at)| {
                let mine: Vec<&TaskPos> = if fresh {
                    Vec::new()
                } else {
                    core.tasks
                        .iter()
                        .filter(|(_, t)| &t.worker == w && !t.state.is_terminal())
                        .map(|(p, _)| p)
                        .collect()
                };
                let groups: BTreeSet<u32> = mine
                    .iter()
                    .filter_map(|p| group_of(&core.spec, **p))
                    .collect();
                let free = cluster.slots.as_ref().map(|m| {
                    m.get(w)
                        .copied()
                        .unwrap_or(0)
                        .saturating_sub(groups.len() as u32)
                });
                Spot {
                    worker: w.clone(),
                    at: at.clone(),
                    free,
                    ours: mine.len() as u32,
                    groups,
                }
            })
            .collect();
        Room { spots }
    }

    /// Free slots in all (`None`: not counted), and how many workers take tasks.
    pub(super) fn free(&self) -> (Option<u32>, usize) {
        let free = self
            .spots
            .iter()
            .map(|s| s.free)
            .try_fold(0u32, |acc, f| f.map(|f| acc.saturating_add(f)));
        (free, self.spots.len())
    }

    /// Takes a place for a task of slot group `group` (`None`: it takes no slot): on a
    /// worker that holds its group already, or has a free slot — the most free slots first —;
    /// a task that takes no slot where the job runs the fewest tasks (ties: the fewest of the
    /// job's tasks, then the cluster's preference). `avoid` (where the task failed) is passed
    /// over unless no other worker has room; `prefer` is taken if it has room.
    pub(super) fn take(
        &mut self,
        group: Option<u32>,
        avoid: Option<&WorkerId>,
        prefer: Option<&WorkerId>,
    ) -> Option<(WorkerId, Endpoint)> {
        let fits = |s: &Spot| match group {
            None => true,
            Some(g) => s.groups.contains(&g) || s.free != Some(0),
        };
        let chosen = match prefer.and_then(|p| self.spots.iter().position(|s| &s.worker == p)) {
            Some(i) if fits(&self.spots[i]) => Some(i),
            _ => {
                let best = |skip: Option<&WorkerId>| {
                    self.spots
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| fits(s) && Some(&s.worker) != skip)
                        .min_by_key(|(i, s)| {
                            let (holds, free) = match group {
                                None => (false, 0),
                                Some(g) => (s.groups.contains(&g), s.free.unwrap_or(u32::MAX)),
                            };
                            (Reverse(holds), Reverse(free), s.ours, *i)
                        })
                        .map(|(i, _)| i)
                };
                best(avoid).or_else(|| best(None))
            }
        }?;
        let s = &mut self.spots[chosen];
        if let Some(g) = group {
            if s.groups.insert(g) {
                s.free = s.free.map(|f| f - 1);
            }
        }
        s.ours += 1;
        Some((s.worker.clone(), s.at.clone()))
    }
}

impl JobCore {
    /// Why the job cannot start now, if it cannot: an earlier job waits, no worker takes
    /// tasks, or its slots are not free at once.
    pub(super) fn cannot_start(&self, cluster: &Cluster) -> Option<String> {
        if let Some(job) = &cluster.behind {
            return Some(format!("waiting behind {job}, submitted earlier"));
        }
        let (free, workers) = Room::of(self, cluster, true).free();
        if workers == 0 {
            return Some("waiting for a live worker".into());
        }
        let need = demand(&self.spec);
        match free {
            Some(free) if free < need => Some(format!(
                "waiting for {need} free slots: {free} free on {workers} workers"
            )),
            _ => None,
        }
    }

    /// Says (once) that the job waits, and why, and looks again soon.
    pub(super) fn wait(&mut self, reason: String, out: &mut Vec<Action>) {
        if self.waiting_reason.as_ref() != Some(&reason) {
            out.push(Action::Waiting(Some(reason.clone())));
            self.waiting_reason = Some(reason);
        }
        out.push(Action::SetTimer(Timer::Place, PLACE_RETRY));
    }

    /// Says the job no longer waits, if it did.
    pub(super) fn waited(&mut self, out: &mut Vec<Action>) {
        if self.waiting_reason.take().is_some() {
            out.push(Action::Waiting(None));
        }
    }

    /// Tasks that wait for a slot, in order.
    pub(super) fn unplaced(&self) -> Vec<TaskPos> {
        self.unplaced.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::spec::{OperatorSpec, StageSpec};

    #[test]
    fn only_operator_tasks_take_slots_and_a_job_needs_its_widest_stage() {
        let stage = |tasks| StageSpec {
            tasks,
            operator: OperatorSpec::Builtin {
                name: "identity".into(),
                args: vec![],
            },
        };
        let spec = JobSpec::sample(vec![stage(3), stage(2)]);
        assert!(!takes_slot(&spec, 0));
        assert!(takes_slot(&spec, 1));
        assert!(takes_slot(&spec, 2));
        assert!(!takes_slot(&spec, spec.sink_stage()));
        assert_eq!(demand(&spec), 3);
        assert_eq!(group_of(&spec, TaskPos { stage: 2, index: 1 }), Some(1));
        assert_eq!(group_of(&spec, TaskPos { stage: 0, index: 0 }), None);
        let running = [
            TaskPos { stage: 1, index: 0 },
            TaskPos { stage: 2, index: 0 },
            TaskPos { stage: 1, index: 2 },
            TaskPos { stage: 0, index: 0 },
        ];
        assert_eq!(slots_of(&spec, running.iter()), 2);
    }
}
