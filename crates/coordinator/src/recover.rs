//! What a failed current attempt triggers, by delivery mode: exactly-once restarts that task
//! alone (on another live worker when there is one), at-least-once restarts the whole
//! pipeline in a new epoch, at-most-once ends the job. Every restart bumps the attempt, makes
//! the new placement durable first, then tells every worker of the job, so each link
//! reconnects to exactly the attempt that now runs.

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
        if attempt >= self.cfg.max_restarts {
            return Err(Outcome::Failed(format!(
                "task {pos} failed {} times; last cause: {cause}",
                attempt + 1
            )));
        }
        match recovery(self.spec.delivery) {
            Recovery::RestartTask => self.restart_task(pos, cluster, out),
            Recovery::RestartEpoch => self.restart_epoch(cluster, out),
            Recovery::Fail => Err(Outcome::Failed(format!(
                "task {pos} failed ({cause}); at-most-once never re-runs work, so the job ends with the output written so far"
            ))),
        }
    }

    /// Exactly-once: restarts one task elsewhere; it recovers from its log (or the source
    /// file) and every peer is told where it now runs. The new placement is durable before
    /// any worker hears of it.
    fn restart_task(
        &mut self,
        pos: TaskPos,
        cluster: &Cluster,
        out: &mut Vec<Action>,
    ) -> Result<(), Outcome> {
        let (old, attempt) = match self.tasks.get(&pos) {
            Some(t) => (Some(t.worker.clone()), t.attempt + 1),
            None => (None, 0),
        };
        let Some((target, at)) = cluster.pick(old.as_ref()).cloned() else {
            return Err(Outcome::Failed(format!(
                "task {pos} failed and no live worker can take it"
            )));
        };
        self.assign(pos, target.clone(), &at, attempt, out);
        self.recoveries += 1;
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
        Ok(())
    }

    /// At-least-once: without logs a crashed task's state and its links' end-of-stream state
    /// are gone, so the whole pipeline restarts from the source in a new epoch, every task at
    /// a new attempt (on its worker if alive). Sequence numbers of the new epoch start above
    /// every old one, so stale frames are dropped as duplicates; the sink's log keeps what it
    /// committed and the new epoch appends to it. No loss; duplicates possible.
    fn restart_epoch(&mut self, cluster: &Cluster, out: &mut Vec<Action>) -> Result<(), Outcome> {
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
        for (pos, worker, attempt) in placed {
            let (target, at) = match cluster.endpoint(&worker) {
                Some(at) => (worker, at.clone()),
                None => match cluster.pick(Some(&worker)) {
                    Some((w, at)) => (w.clone(), at.clone()),
                    None => {
                        return Err(Outcome::Failed(format!(
                            "task {pos} failed and no live worker can take it"
                        )))
                    }
                },
            };
            self.assign(pos, target, &at, attempt, out);
        }
        self.recoveries += 1;
        self.epoch += 1;
        self.sink_done = false;
        out.push(Action::ClearTimer(Timer::Drain));
        out.push(Action::Persist(self.run_state()));
        let wait = self.cfg.restart_wait(self.epoch);
        info!(job = %self.id, epoch = self.epoch, wait_ms = wait.as_millis() as u64, "at-least-once: restarting the pipeline from the source");
        if wait.is_zero() {
            self.launch(out);
        } else {
            let timers: Vec<Action> = self
                .tasks
                .iter()
                .map(|(p, t)| Action::SetTimer(Timer::Start(*p, t.attempt), wait))
                .collect();
            out.extend(timers);
        }
        Ok(())
    }
}
