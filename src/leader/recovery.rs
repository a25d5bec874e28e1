//! What a task failure triggers, by delivery mode: exactly-once restarts that task alone (on
//! another live worker when there is one), at-least-once restarts the whole pipeline in a new
//! epoch. Both bump attempts and push the new placement to every worker of the job, so every
//! link reconnects to exactly the attempt that now runs.

use super::driver::JobRun;
use super::placement::assignment;
use super::state::lock;
use crate::model::ids::{TaskKey, WorkerId};
use crate::protocol::control::{Command, TaskState};
use std::time::Instant;
use tracing::info;

impl JobRun {
    /// Picks a live worker for a task, preferring another than `avoid`; records the move.
    pub(super) fn move_task(
        &mut self,
        st: &mut super::state::State,
        key: &TaskKey,
        avoid: Option<&WorkerId>,
    ) -> Result<WorkerId, String> {
        let workers = st.workers_by_load();
        let target = workers
            .iter()
            .find(|w| Some(*w) != avoid)
            .or_else(|| workers.first())
            .cloned()
            .ok_or_else(|| format!("task {} failed and no live worker can take it", key.pos))?;
        let addr = st
            .workers
            .get(&target)
            .map(|w| w.data_addr.clone())
            .ok_or_else(|| "worker vanished".to_string())?;
        let attempt = st.tasks.get(key).map_or(0, |t| t.attempt + 1);
        self.routes.insert(key.pos, addr, attempt);
        if let Some(t) = st.tasks.get_mut(key) {
            t.attempt = attempt;
            t.worker = target.clone();
            t.state = TaskState::Starting;
            t.pid = None;
            t.done = false;
            t.progressed = Instant::now();
        }
        Ok(target)
    }

    /// Exactly-once: restarts one task elsewhere; it recovers from its log (or the source
    /// file) and every peer is told where it now runs.
    /// The new placement is durable before any worker hears of it.
    pub(super) async fn restart_task(&mut self, key: &TaskKey, attempt: u32) -> Result<(), String> {
        let leader = self.leader.clone();
        let target = {
            let mut st = lock(&leader.state);
            let old = st.tasks.get(key).map(|t| t.worker.clone());
            let target = self.move_task(&mut st, key, old.as_ref())?;
            if let Some(j) = st.jobs.get_mut(&self.id) {
                j.recoveries += 1;
            }
            target
        };
        self.persist_run().await?;
        let mut st = lock(&leader.state);
        self.publish_routes(&mut st, Some(&target));
        let a = assignment(&self.spec, key, attempt + 1, self.epoch, &self.routes);
        st.command(&target, Command::Start(a));
        info!(job = %self.id, task = %key.pos, attempt = attempt + 1, worker = %target, "task restarted");
        Ok(())
    }

    /// Tells every worker of the job but `skip` (which gets the placement with its Start
    /// command) where each task runs now.
    pub(super) fn publish_routes(&self, st: &mut super::state::State, skip: Option<&WorkerId>) {
        let list = self.routes.list();
        let version = self.routes.version();
        let involved: std::collections::BTreeSet<WorkerId> = st
            .tasks
            .iter()
            .filter(|(k, _)| k.job == self.id)
            .map(|(_, t)| t.worker.clone())
            .collect();
        for w in involved.into_iter().filter(|w| Some(w) != skip) {
            st.command(
                &w,
                Command::Routes {
                    job: self.id.clone(),
                    routes: list.clone(),
                    version,
                },
            );
        }
    }

    /// Marks a finished task in the placement, so a restarted upstream attempt knows there is
    /// nothing left to deliver to it (instead of waiting forever for it to come back).
    pub(super) async fn task_finished(
        &mut self,
        key: &TaskKey,
        attempt: u32,
    ) -> Result<(), String> {
        if self.routes.finish(key.pos, attempt) {
            self.persist_run().await?;
            let leader = self.leader.clone();
            let mut st = lock(&leader.state);
            self.publish_routes(&mut st, None);
        }
        Ok(())
    }

    /// At-least-once: without logs a crashed task's state and its links' end-of-stream state
    /// are gone, so the whole pipeline restarts from the source in a new epoch. Sequence
    /// numbers of the new epoch start above every old one, so stale frames are dropped as
    /// duplicates; the sink's log keeps what it committed and the new epoch appends to it. No loss; duplicates possible.
    pub(super) async fn restart_epoch(&mut self) -> Result<(), String> {
        let leader = self.leader.clone();
        {
            let mut st = lock(&leader.state);
            let workers: std::collections::BTreeSet<WorkerId> = st
                .tasks
                .iter()
                .filter(|(k, _)| k.job == self.id)
                .map(|(_, t)| t.worker.clone())
                .collect();
            for w in workers {
                st.command(
                    &w,
                    Command::StopJob {
                        job: self.id.clone(),
                    },
                );
            }
            let keys: Vec<(TaskKey, WorkerId)> = st
                .tasks
                .iter()
                .filter(|(k, _)| k.job == self.id)
                .map(|(k, t)| (k.clone(), t.worker.clone()))
                .collect();
            for (key, worker) in keys {
                let alive = st
                    .workers
                    .get(&worker)
                    .is_some_and(|w| w.state == crate::protocol::control::WorkerState::Alive);
                if alive {
                    if let Some(t) = st.tasks.get_mut(&key) {
                        t.attempt += 1;
                        t.state = TaskState::Starting;
                        t.pid = None;
                        t.done = false;
                        let addr = st
                            .workers
                            .get(&worker)
                            .map(|w| w.data_addr.clone())
                            .unwrap_or_default();
                        let attempt = st.tasks.get(&key).map_or(0, |t| t.attempt);
                        self.routes.insert(key.pos, addr, attempt);
                    }
                } else {
                    self.move_task(&mut st, &key, Some(&worker))?;
                }
            }
            if let Some(j) = st.jobs.get_mut(&self.id) {
                j.recoveries += 1;
            }
        }
        self.epoch += 1;
        self.persist_run().await?;
        info!(job = %self.id, epoch = self.epoch, "at-least-once: restarting the pipeline from the source");
        self.launch()
    }
}
