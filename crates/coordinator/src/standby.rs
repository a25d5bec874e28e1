//! Standing-by tasks follow the free slots. A stage that autoscales places all its task
//! positions when the job starts, those owning no key group standing by where they were put.
//! A grow activates standby tasks on workers with a free slot; a worker that joined later
//! held none of them, so a stage whose standby tasks all sat on full workers could never
//! grow onto it (hostile probe 10: "no free slot on a worker that runs a standing-by task"
//! for the rest of the job, the new worker idle). Before a grow, a standby task that cannot
//! take a slot where it is moves to a worker that has one, as a drain moves a task: a new
//! attempt there, not counted as a restart. Only under exactly-once, where one task restarts
//! alone; and the grow itself waits for the next decision (the autoscaler's next look, or the
//! user's next `scale`), so no task restarts in the step that switches maps.

use super::capacity::Room;
use super::event::{Action, Cluster};
use super::job::JobCore;
use super::placement::{recovery, Recovery};
use crate::model::ids::{TaskPos, WorkerId};
use crate::model::partition::tasks_of;
use crate::protocol::control::TaskState;
use std::collections::BTreeSet;
use tracing::info;

impl JobCore {
    /// Moves the current attempt `attempt` of task `pos` (stopped on its worker) to a new
    /// attempt, on `prefer` if it has room: a move, not counted as a failure (a drain's, or a
    /// standby task's toward a free slot). False if `attempt` is not the current one.
    pub(super) fn move_task(
        &mut self,
        pos: TaskPos,
        attempt: u32,
        prefer: Option<&WorkerId>,
        cluster: &Cluster,
        out: &mut Vec<Action>,
    ) -> bool {
        let Some(t) = self.current_mut(pos, attempt) else {
            return false;
        };
        t.state = TaskState::Cancelled;
        out.push(Action::Stop {
            worker: t.worker.clone(),
            pos,
            attempt,
        });
        *self.moves.entry(pos).or_default() += 1;
        self.restart_task_to(pos, prefer, cluster, out);
        true
    }

    /// The tasks of `stage` that stand by and could own key groups: placed, not ended, not
    /// in `active`; in position order, with their worker and attempt.
    pub(super) fn standing_by(
        &self,
        stage: u32,
        active: &BTreeSet<u32>,
    ) -> Vec<(TaskPos, WorkerId, u32)> {
        (0..tasks_of(&self.spec, stage))
            .map(|index| TaskPos { stage, index })
            .filter(|pos| !active.contains(&pos.index) && !self.unplaced.contains(pos))
            .filter_map(|pos| {
                let t = self.tasks.get(&pos)?;
                (!t.state.is_terminal()).then(|| (pos, t.worker.clone(), t.attempt))
            })
            .collect()
    }

    /// Moves standby tasks of `stage` from workers without a free slot to workers with one,
    /// as many as a grow from `active` to `want` tasks needs beyond the standby tasks that
    /// can take a slot where they are. Returns how many moved.
    pub(super) fn bring_standby_to_room(
        &mut self,
        stage: u32,
        active: &BTreeSet<u32>,
        want: usize,
        cluster: &Cluster,
        out: &mut Vec<Action>,
    ) -> usize {
        // A standby task moves as a task restart; only exactly-once restarts one task alone
        // (at-least-once restarts the pipeline, at-most-once none).
        if recovery(self.spec.delivery) != Recovery::RestartTask {
            return 0;
        }
        let mut short = want.saturating_sub(active.len());
        let mut room = Room::of(self, cluster, false);
        let mut stuck = Vec::new();
        for (pos, worker, attempt) in self.standing_by(stage, active) {
            if short == 0 {
                break;
            }
            if room.take_on(&worker) {
                short -= 1;
            } else {
                stuck.push((pos, worker, attempt));
            }
        }
        let mut moved = 0;
        for (pos, from, attempt) in stuck {
            if short == 0 {
                break;
            }
            let Some((to, _)) = room.take(true, Some(&from), None) else {
                break;
            };
            if to == from {
                break;
            }
            if !self.move_task(pos, attempt, Some(&to), cluster, out) {
                continue;
            }
            info!(job = %self.id, task = %pos, attempt, %from, %to, "moved a standing-by task to a worker with a free slot");
            short -= 1;
            moved += 1;
        }
        moved
    }
}
