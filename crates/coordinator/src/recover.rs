//! What a failed current attempt triggers, by delivery mode: exactly-once restarts that task
//! alone (on another live worker when there is one), at-least-once restarts the whole
//! pipeline in a new epoch, at-most-once ends the job. Every restart bumps the attempt, makes
//! the new placement durable first, then tells every worker of the job, so each link
//! reconnects to exactly the attempt that now runs.

use super::capacity::Room;
use super::event::{Action, Cluster, Outcome, Timer};
use super::job::JobCore;
use super::placement::{recovery, Recovery};
use crate::model::ids::{TaskPos, WorkerId};
use crate::protocol::control::TaskState;
use std::collections::BTreeSet;
use tracing::{info, warn};

impl JobCore {
    /// A current attempt failed (or was stopped, or lost with its worker): count it, and
    /// recover by the delivery mode's rule unless the task failed too often. Stale attempts
    /// (an earlier one, or one that already ended) change nothing.
    pub(super) fn failed(
        &mut self,
        pos: TaskPos,
        attempt: u32,
        state: TaskState,
        cause: String,
        cluster: &Cluster,
        out: &mut Vec<Action>,
    ) -> Result<(), Outcome> {
        let Some(t) = self.current_mut(pos, attempt) else {
            return Ok(());
        };
        t.state = state;
        self.failures += 1;
        self.last_failure = Some(format!("task {pos} attempt {attempt}: {cause}"));
        warn!(job = %self.id, task = %pos, attempt, %cause, "task failed");
        // Moves off a draining worker bumped the attempt without a failure.
        let moved = self.moves.get(&pos).copied().unwrap_or(0);
        if attempt.saturating_sub(moved) >= self.cfg.max_restarts {
            return Err(Outcome::Failed(format!(
                "task {pos} failed {} times; last cause: {cause}",
                attempt.saturating_sub(moved) + 1
            )));
        }
        if recovery(self.spec.delivery) != Recovery::Fail {
            self.recoveries += 1;
        }
        match recovery(self.spec.delivery) {
            Recovery::RestartTask => self.restart_task(pos, cluster, out),
            Recovery::RestartEpoch => self.restart_epoch(cluster, out, true),
            Recovery::Fail => Err(Outcome::Failed(format!(
                "task {pos} failed ({cause}); at-most-once never re-runs work, so the job ends with the output written so far"
            ))),
        }
    }

    /// Restarts one task at its next attempt, elsewhere when another worker has room; it
    /// recovers from its log (or the source file) and every peer is told where it now runs.
    /// The new placement is durable before any worker hears of it. With no free slot the
    /// task waits for one (the job says so) instead of over-filling a worker.
    pub(super) fn restart_task(
        &mut self,
        pos: TaskPos,
        cluster: &Cluster,
        out: &mut Vec<Action>,
    ) -> Result<(), Outcome> {
        self.restart_task_to(pos, None, cluster, out);
        Ok(())
    }

    /// [`restart_task`](Self::restart_task), on `prefer` if it has room for the task.
    pub(super) fn restart_task_to(
        &mut self,
        pos: TaskPos,
        prefer: Option<&WorkerId>,
        cluster: &Cluster,
        out: &mut Vec<Action>,
    ) {
        // A switch of the next stage this task had not made durably cannot be made now.
        self.restarting(pos, out);
        let (old, mut attempt) = match self.tasks.get(&pos) {
            Some(t) => (Some(t.worker.clone()), t.attempt + 1),
            None => (None, 0),
        };
        if self.unplaced.contains(&pos) {
            // Its next attempt was reserved when it began to wait.
            attempt = self.placement.get(&pos).map_or(attempt, |d| d.attempt);
        }
        let slot = self.holds_slot(pos);
        let Some((target, at)) = Room::of(self, cluster, false).take(slot, old.as_ref(), prefer)
        else {
            let why = match cluster.placeable().next() {
                None => "a live worker",
                Some(_) => "a free slot",
            };
            self.unplace(pos, attempt, cluster, out);
            self.wait(format!("task {pos} waits for {why}"), out);
            return;
        };
        self.unplaced.remove(&pos);
        self.assign(pos, target.clone(), &at, attempt, out);
        out.push(Action::Persist(self.run_state()));
        let wait = self.cfg.restart_wait(attempt);
        if wait.is_zero() {
            self.publish_routes(cluster, Some(&target), out);
            out.extend(self.start_action(pos));
        } else {
            // Peers learn the new placement now (their links wait for the attempt to start);
            // the attempt starts when the backoff expires.
            self.publish_routes(cluster, None, out);
            out.push(Action::SetTimer(Timer::Start(pos, attempt), wait));
        }
        info!(job = %self.id, task = %pos, attempt, worker = %target, wait_ms = wait.as_millis() as u64, "task restarted");
    }

    /// A task waits for a slot: its next attempt is reserved in the placement, which is made
    /// durable and published, so every earlier attempt (a zombie on a worker declared dead,
    /// say) is fenced off now, exactly as when a restart is placed at once.
    fn unplace(&mut self, pos: TaskPos, attempt: u32, cluster: &Cluster, out: &mut Vec<Action>) {
        let fresh = self.unplaced.insert(pos);
        if fresh
            || self
                .placement
                .get(&pos)
                .is_none_or(|d| d.attempt != attempt)
        {
            self.placement.reserve(pos, attempt);
            out.push(Action::Persist(self.run_state()));
            self.publish_routes(cluster, None, out);
        }
    }

    /// At-least-once: without logs a crashed task's state and its links' end-of-stream state
    /// are gone, so the whole pipeline restarts from the source in a new epoch, every task at
    /// a new attempt (on its worker if alive). Sequence numbers of the new epoch start above
    /// every old one, so stale frames are dropped as duplicates; the sink's log keeps what it
    /// committed and the new epoch appends to it. No loss; duplicates possible. A restart
    /// after a failure backs off (`backoff`); a planned one (a rescale) starts at once.
    pub(super) fn restart_epoch(
        &mut self,
        cluster: &Cluster,
        out: &mut Vec<Action>,
        backoff: bool,
    ) -> Result<(), Outcome> {
        let workers: BTreeSet<WorkerId> = self
            .tasks
            .values()
            .map(|t| t.worker.clone())
            .filter(|w| cluster.alive(w))
            .collect();
        out.push(Action::StopJob {
            workers: workers.into_iter().collect(),
        });
        let placed: Vec<(TaskPos, WorkerId, u32)> = self
            .tasks
            .iter()
            .map(|(p, t)| (*p, t.worker.clone(), t.attempt + 1))
            .collect();
        // Every task is placed anew (the job holds no slot while it restarts), on its old
        // worker when that one still takes tasks and has room.
        let mut room = Room::of(self, cluster, true);
        for (pos, worker, attempt) in placed {
            match room.take(self.holds_slot(pos), None, Some(&worker)) {
                Some((target, at)) => {
                    self.unplaced.remove(&pos);
                    self.assign(pos, target, &at, attempt, out);
                }
                None => {
                    // It waits for a slot; its old attempt is stopped with the others, and
                    // fenced off by the attempt reserved for it.
                    if let Some(t) = self.tasks.get_mut(&pos) {
                        t.state = TaskState::Cancelled;
                    }
                    self.unplaced.insert(pos);
                    self.placement.reserve(pos, attempt);
                }
            }
        }
        if let Some(pos) = self.unplaced.iter().next() {
            self.wait(format!("task {pos} waits for a free slot"), out);
        }
        self.restart_routing(out);
        self.epoch += 1;
        self.sink_done = false;
        out.push(Action::ClearTimer(Timer::Drain));
        out.push(Action::Persist(self.run_state()));
        let wait = match backoff {
            true => self.cfg.restart_wait(self.epoch),
            false => std::time::Duration::ZERO,
        };
        info!(job = %self.id, epoch = self.epoch, wait_ms = wait.as_millis() as u64, "at-least-once: restarting the pipeline from the source");
        if wait.is_zero() {
            self.launch(out);
        } else {
            let timers: Vec<Action> = self
                .tasks
                .iter()
                .filter(|(p, _)| !self.unplaced.contains(p))
                .map(|(p, t)| Action::SetTimer(Timer::Start(*p, t.attempt), wait))
                .collect();
            out.extend(timers);
        }
        Ok(())
    }

    /// The monitor found an attempt stalled: it is stopped and recovered like a failed one.
    pub(super) fn stalled(
        &mut self,
        pos: TaskPos,
        attempt: u32,
        cause: String,
        cluster: &Cluster,
        out: &mut Vec<Action>,
    ) -> Result<(), Outcome> {
        let Some(t) = self.current_mut(pos, attempt) else {
            return Ok(());
        };
        out.push(Action::Stop {
            worker: t.worker.clone(),
            pos,
            attempt,
        });
        self.failed(pos, attempt, TaskState::Failed, cause, cluster, out)
    }

    /// Fails each of these attempts (the current ones among them) with one cause.
    pub(super) fn fail_each(
        &mut self,
        attempts: Vec<(TaskPos, u32)>,
        cause: &str,
        cluster: &Cluster,
        out: &mut Vec<Action>,
    ) -> Result<(), Outcome> {
        for (pos, attempt) in attempts {
            self.failed(
                pos,
                attempt,
                TaskState::Failed,
                cause.to_string(),
                cluster,
                out,
            )?;
        }
        Ok(())
    }
}
