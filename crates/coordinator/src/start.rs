//! Starting a job and keeping it placed: the first placement (once the job fits; pending
//! until then), the start of every task, the job's time limit, tasks that wait for a slot,
//! and moving tasks off a draining worker.

use super::capacity::{takes_slot, Room};
use super::event::{Action, Cluster, Outcome, Timer};
use super::job::JobCore;
use super::placement::{recovery, Recovery};
use crate::model::ids::{TaskPos, WorkerId};
use crate::model::partition::tasks_of;
use tracing::info;

impl JobCore {
    /// Places every task once the job fits — its operator tasks on the workers with the
    /// most free slots, the source and sink beside them — makes the placement durable, then
    /// starts every task. A job that does not fit yet waits (pending) and looks again.
    pub(super) fn start(
        &mut self,
        cluster: &Cluster,
        out: &mut Vec<Action>,
    ) -> Result<(), Outcome> {
        if let Some(reason) = self.cannot_start(cluster) {
            self.wait(reason, out);
            return Ok(());
        }
        self.waited(out);
        let mut room = Room::of(self, cluster, true);
        let sink = self.spec.sink_stage();
        // Slot-taking tasks first, so they spread by free slots; the source and sink then
        // go where the job has the fewest tasks.
        let stages = (0..=sink)
            .filter(|s| takes_slot(&self.spec, *s))
            .chain((0..=sink).filter(|s| !takes_slot(&self.spec, *s)));
        let positions: Vec<TaskPos> = stages
            .flat_map(|stage| {
                (0..tasks_of(&self.spec, stage)).map(move |index| TaskPos { stage, index })
            })
            .collect();
        for pos in positions {
            let Some((w, at)) = room.take(self.holds_slot(pos), None, None) else {
                return Err(Outcome::Failed(format!(
                    "task {pos} found no room the start counted on"
                )));
            };
            self.assign(pos, w, &at, 0, out);
        }
        self.placed = true;
        out.push(Action::Persist(self.run_state()));
        out.push(self.standby_action());
        self.launch(out);
        info!(job = %self.id, stages = self.spec.stages.len(), epoch = self.epoch, "job started");
        Ok(())
    }

    /// Sets the job's time limit, if it has one.
    pub(super) fn arm_timeout(&self, out: &mut Vec<Action>) {
        if let Some((_, left)) = self.cfg.timeout {
            out.push(Action::SetTimer(Timer::Timeout, left));
        }
    }

    /// Starts every task of the current epoch at its current attempt (but those waiting for
    /// a slot).
    pub(super) fn launch(&self, out: &mut Vec<Action>) {
        out.extend(
            self.tasks
                .keys()
                .filter(|p| !self.unplaced.contains(p))
                .filter_map(|p| self.start_action(*p)),
        );
    }

    /// Capacity may have freed up: start a pending job, or place the tasks that wait for a
    /// slot.
    pub(super) fn place_waiting(
        &mut self,
        cluster: &Cluster,
        out: &mut Vec<Action>,
    ) -> Result<(), Outcome> {
        if !self.placed {
            return self.start(cluster, out);
        }
        for pos in self.unplaced() {
            self.restart_task(pos, cluster, out)?;
        }
        // Tasks a drain left where they were for want of room elsewhere: room may have come.
        for worker in &cluster.draining {
            self.drain_worker(worker, cluster, out, false)?;
        }
        if self.unplaced.is_empty() {
            self.waited(out);
        }
        Ok(())
    }

    /// The source's rate changes: the spec every later source attempt is assigned from, made
    /// durable with the placement (a placed job), and the running source told.
    pub(super) fn set_rate(&mut self, rate: f64, cluster: &Cluster, out: &mut Vec<Action>) {
        self.spec.rate = rate;
        if !self.placed {
            return;
        }
        out.push(Action::Persist(self.run_state()));
        let source = TaskPos { stage: 0, index: 0 };
        if let Some(t) = self.tasks.get(&source) {
            if !t.state.is_terminal() && cluster.alive(&t.worker) {
                out.push(Action::SetRate {
                    worker: t.worker.clone(),
                    rate,
                });
            }
        }
        info!(job = %self.id, rate, "source rate changed");
    }

    /// A worker drains: its tasks move elsewhere by the delivery mode's restart path, which
    /// exactly-once already proves, but a move is not a failure (it counts toward neither
    /// the failures nor `max_restarts`). At-most-once tasks cannot re-run: they stay until
    /// they end, and the worker leaves after.
    ///
    /// A task moves only when there is room for it elsewhere now (a free slot, for one that
    /// takes a slot; another worker, for any): one stopped with nowhere to go stalled its
    /// job until a worker joined. The rest keep running where they are and are looked at
    /// again with the tasks that wait for a slot ([`Timer::Place`]); the worker leaves once
    /// it runs nothing, or when its drain times out: then (`forced`) every task still there
    /// moves, waiting for a slot if none is free ([`Input::DrainEnded`]).
    pub(super) fn drain_worker(
        &mut self,
        worker: &WorkerId,
        cluster: &Cluster,
        out: &mut Vec<Action>,
        forced: bool,
    ) -> Result<(), Outcome> {
        let here = self.running_on(worker);
        if here.is_empty() {
            self.drain_kept.remove(worker);
            return Ok(());
        }
        match recovery(self.spec.delivery) {
            Recovery::Fail if forced => {
                self.fail_each(here, &format!("worker {worker} left"), cluster, out)
            }
            Recovery::Fail => {
                info!(job = %self.id, %worker, tasks = here.len(), "at-most-once tasks stay on the draining worker until they end");
                Ok(())
            }
            Recovery::RestartTask => {
                let (mut free, workers) = Room::of(self, cluster, false).free();
                let mut kept = 0;
                for (pos, attempt) in here {
                    let slot = self.holds_slot(pos);
                    if !forced && (workers == 0 || (slot && free == Some(0))) {
                        kept += 1;
                        continue;
                    }
                    if slot {
                        free = free.map(|f| f.saturating_sub(1));
                    }
                    if self.move_task(pos, attempt, None, cluster, out) {
                        info!(job = %self.id, task = %pos, attempt, %worker, "moved a task off a draining worker");
                    }
                }
                self.keep_draining(worker, kept, out);
                Ok(())
            }
            Recovery::RestartEpoch => {
                let (free, workers) = Room::of(self, cluster, true).free();
                let short = free.is_some_and(|f| f < super::capacity::demand(&self.spec));
                if !forced && (workers == 0 || short) {
                    self.keep_draining(worker, here.len(), out);
                    return Ok(());
                }
                for pos in self.tasks.keys() {
                    *self.moves.entry(*pos).or_default() += 1;
                }
                info!(job = %self.id, %worker, "a worker drains: restarting the at-least-once pipeline without it");
                self.restart_epoch(cluster, out, true)
            }
        }
    }

    /// `kept` tasks stay on draining `worker` for want of room elsewhere: said once per
    /// count, and looked at again soon.
    fn keep_draining(&mut self, worker: &WorkerId, kept: usize, out: &mut Vec<Action>) {
        let said = self.drain_kept.insert(worker.clone(), kept);
        if kept == 0 {
            self.drain_kept.remove(worker);
            return;
        }
        if said != Some(kept) {
            info!(job = %self.id, %worker, tasks = kept, "tasks stay on the draining worker until there is room for them elsewhere");
        }
        out.push(Action::SetTimer(Timer::Place, super::capacity::PLACE_RETRY));
    }
}
