//! Capacity: which tasks take a worker slot, what a job needs to start, and where each task
//! goes. A job starts only when all of its slot-taking tasks fit at once (and no earlier job
//! still waits: first come, first served); until then it is pending. A task whose restart
//! finds no free slot waits for one instead of over-filling a worker. Draining workers take
//! nothing new.
//!
//! Slots are never stored as counters that could leak: the leader derives what other jobs
//! hold from their tasks that have not ended, and the core subtracts what its own current
//! attempts hold, so a slot comes back on every way a task can end.

use super::event::{Action, Cluster, Timer};
use super::job::JobCore;
use crate::model::ids::{TaskPos, WorkerId};
use crate::model::spec::{JobSpec, StageRole};
use crate::protocol::control::Endpoint;
use std::cmp::Reverse;
use std::time::Duration;

/// How soon a job or a task waiting for capacity looks again.
pub const PLACE_RETRY: Duration = Duration::from_millis(250);

/// Whether the tasks of `stage` take a slot: operator stages do. The source and the sink do
/// not: they move lines between a file and the pipeline and run no user code (see
/// `docs/decisions.md`).
pub fn takes_slot(spec: &JobSpec, stage: u32) -> bool {
    matches!(spec.role_of(stage), StageRole::Operator(_))
}

/// The slots a job needs to start: one per operator task that owns key groups (a stage's
/// `tasks`; the rest of an autoscaled stage's `max_tasks` stand by and hold none).
pub fn demand(spec: &JobSpec) -> u32 {
    (0..=spec.sink_stage())
        .filter(|s| takes_slot(spec, *s))
        .map(|s| crate::model::partition::initial_map(spec, s).active().len() as u32)
        .sum()
}

/// One worker that takes new tasks, as a placement sees it.
struct Spot {
    worker: WorkerId,
    at: Endpoint,
    /// Slots free for this job (`None`: not counted).
    free: Option<u32>,
    /// This job's tasks on it.
    ours: u32,
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
                let mine = |slot_only: bool| -> u32 {
                    if fresh {
                        return 0;
                    }
                    core.tasks
                        .iter()
                        .filter(|(p, t)| {
                            &t.worker == w
                                && !t.state.is_terminal()
                                && (!slot_only || core.holds_slot(**p))
                        })
                        .count() as u32
                };
                let free = cluster
                    .slots
                    .as_ref()
                    .map(|m| m.get(w).copied().unwrap_or(0).saturating_sub(mine(true)));
                Spot {
                    worker: w.clone(),
                    at: at.clone(),
                    free,
                    ours: mine(false),
                }
            })
            .collect();
        Room { spots }
    }

    /// Takes a slot on `worker` if it takes tasks and has one free (or slots are not
    /// counted).
    pub(super) fn take_on(&mut self, worker: &WorkerId) -> bool {
        match self.spots.iter_mut().find(|s| &s.worker == worker) {
            Some(s) => match s.free {
                None => true,
                Some(0) => false,
                Some(n) => {
                    s.free = Some(n - 1);
                    true
                }
            },
            None => false,
        }
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

    /// Takes a place for a task: a slot-taking one on the worker with the most free slots,
    /// any other on the worker running the fewest of this job's tasks (ties: fewest of the
    /// job's tasks, then the cluster's preference). `avoid` (where the task failed) is
    /// passed over unless no other worker has room; `prefer` is taken if it has room.
    pub(super) fn take(
        &mut self,
        slot: bool,
        avoid: Option<&WorkerId>,
        prefer: Option<&WorkerId>,
    ) -> Option<(WorkerId, Endpoint)> {
        let fits = |s: &Spot| !slot || s.free != Some(0);
        let chosen = match prefer.and_then(|p| self.spots.iter().position(|s| &s.worker == p)) {
            Some(i) if fits(&self.spots[i]) => Some(i),
            _ => {
                let best = |skip: Option<&WorkerId>| {
                    self.spots
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| fits(s) && Some(&s.worker) != skip)
                        .min_by_key(|(i, s)| {
                            let free = if slot { s.free.unwrap_or(u32::MAX) } else { 0 };
                            (Reverse(free), s.ours, *i)
                        })
                        .map(|(i, _)| i)
                };
                best(avoid).or_else(|| best(None))
            }
        }?;
        let s = &mut self.spots[chosen];
        if slot {
            s.free = s.free.map(|f| f - 1);
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
            Some(free) if free < need => {
                let plural = |n: u32, one: &str, many: &str| {
                    format!("{n} {}", if n == 1 { one } else { many })
                };
                Some(format!(
                    "waiting for {}: {free} free on {}",
                    plural(need, "free slot", "free slots"),
                    plural(workers as u32, "worker", "workers")
                ))
            }
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
    fn only_operator_tasks_take_slots() {
        let stage = |tasks| StageSpec {
            tasks,
            operator: OperatorSpec::Builtin {
                name: "identity".into(),
                args: vec![],
            },
            autoscale: Default::default(),
            stateless: false,
        };
        let spec = JobSpec::sample(vec![stage(3), stage(2)]);
        assert!(!takes_slot(&spec, 0));
        assert!(takes_slot(&spec, 1));
        assert!(takes_slot(&spec, 2));
        assert!(!takes_slot(&spec, spec.sink_stage()));
        assert_eq!(demand(&spec), 5);
    }
}
