//! One job's lifecycle, owned by one tokio task: place tasks, start sink, tasks and source, react
//! to task ends (restart under exactly-once, fail otherwise), and finish by draining — the job
//! succeeds only when the sink has every end of stream and its file is durable. Whatever the
//! outcome, cleanup stops every task of the job and the record keeps its final status.

use super::state::{lock, JobEvent, TaskRec};
use super::Leader;
use crate::model::ids::{JobId, TaskKey, TaskPos, WorkerId};
use crate::model::partition::{partition_into, tasks_of};
use crate::model::spec::{Delivery, JobSpec, PathMode};
use crate::protocol::control::{Command, JobStatus, SourceReplay, TaskAssignment, TaskState};
use crate::runtime::sink::{run_sink, SinkProgress, SinkSpec, SinkTarget};
use crate::runtime::source::{run_source, SourceSpec};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

enum Part {
    Sink(Result<(), String>),
    Source(Result<(), String>),
}

enum Outcome {
    Succeeded,
    Failed(String),
    Cancelled,
}

/// What happens when a task attempt fails, by delivery mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Exactly-once: that task alone restarts (elsewhere if possible) and recovers from its
    /// input log, or in the first stage from the source file.
    RestartTask,
    /// At-least-once: the whole pipeline restarts from the source in a new epoch.
    RestartEpoch,
    /// At-most-once: nothing is ever re-run; the job fails with the output written so far.
    Fail,
}

/// The recovery rule of a delivery mode (the driver and the simulation both follow it).
pub fn recovery(delivery: Delivery) -> Recovery {
    match delivery {
        Delivery::ExactlyOnce => Recovery::RestartTask,
        Delivery::AtLeastOnce => Recovery::RestartEpoch,
        Delivery::AtMostOnce => Recovery::Fail,
    }
}

/// Everything a worker needs to run attempt `attempt` of `key` in `epoch`.
pub fn assignment(
    spec: &JobSpec,
    key: &TaskKey,
    attempt: u32,
    epoch: u32,
    routes: &Placement,
) -> TaskAssignment {
    let stage = key.pos.stage;
    // The first stage's input log is the source file: a first-stage task under exactly-once
    // regenerates from it whatever its source link holds acknowledged (the link says how far
    // in its Hello), so every attempt is told where the file is.
    let source_replay =
        (stage == 1 && spec.delivery == Delivery::ExactlyOnce).then(|| SourceReplay {
            path: spec.source_path.clone(),
            name: spec.source_name.clone(),
            partition: partition_into(spec, 1),
            tasks: tasks_of(spec, 1),
        });
    TaskAssignment {
        key: key.clone(),
        attempt,
        operator: spec.stages[stage as usize - 1].operator.clone(),
        paths: spec.paths,
        upstream: if stage == 1 {
            1
        } else {
            tasks_of(spec, stage - 1)
        },
        downstream: tasks_of(spec, stage + 1),
        partition: partition_into(spec, stage + 1),
        delivery: spec.delivery,
        routes: routes.list(),
        routes_version: routes.version,
        source_replay,
        epoch,
    }
}

/// Where a job's tasks run, versioned so that workers apply placements in order.
#[derive(Default)]
pub struct Placement {
    table: BTreeMap<TaskPos, (String, u32)>,
    version: u64,
}

impl Placement {
    /// Records that attempt `attempt` of the task at `pos` runs at `addr` (a new version).
    pub fn insert(&mut self, pos: TaskPos, addr: String, attempt: u32) {
        self.table.insert(pos, (addr, attempt));
        self.version += 1;
    }

    /// The version of the placement (newer wins on workers).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The placement in the list form control messages carry.
    pub fn list(&self) -> Vec<crate::dataplane::routes::Route> {
        self.table
            .iter()
            .map(|(p, (a, n))| (*p, a.clone(), *n))
            .collect()
    }
}

/// Local path of a job path on the leader.
pub fn local_file(leader: &Leader, spec: &JobSpec, path: &str) -> Result<PathBuf, String> {
    match spec.paths {
        PathMode::Local => Ok(PathBuf::from(path)),
        PathMode::Store => leader
            .store
            .local_path(path)
            .map_err(|e| e.to_string())?
            .map_or_else(|| leader.staged_file(path), Ok),
    }
}

/// One job's run: everything its driver owns.
struct JobRun {
    leader: Arc<Leader>,
    id: JobId,
    spec: JobSpec,
    routes: Placement,
    /// Source and sink of the current epoch.
    parts: JoinSet<Part>,
    /// Cancels the current epoch's source and sink.
    epoch_cancel: CancellationToken,
    epoch: u32,
    progress: watch::Sender<SinkProgress>,
    cancel: CancellationToken,
}

/// Runs a job to its final status.
pub async fn drive(
    leader: Arc<Leader>,
    id: JobId,
    spec: JobSpec,
    mut events: mpsc::Receiver<JobEvent>,
    cancel: CancellationToken,
    progress: watch::Sender<SinkProgress>,
) {
    let k = spec.stages.len() as u32;
    let mut routes = Placement::default();
    routes.insert(TaskPos { stage: 0, index: 0 }, leader.data_addr.clone(), 0);
    routes.insert(
        TaskPos {
            stage: k + 1,
            index: 0,
        },
        leader.data_addr.clone(),
        0,
    );
    let mut run = JobRun {
        epoch_cancel: cancel.child_token(),
        leader,
        id,
        spec,
        routes,
        parts: JoinSet::new(),
        epoch: 0,
        progress,
        cancel,
    };
    let outcome = match run.place().and_then(|()| run.launch()) {
        Ok(()) => {
            info!(job = %run.id, stages = k, "job started");
            run.watch(&mut events).await
        }
        Err(e) => Outcome::Failed(e),
    };
    run.stop_epoch().await;
    cleanup(&run.leader, &run.id, &run.spec, outcome, &run.progress).await;
}

trait MapPart: std::future::Future<Output = Result<(), String>> + Sized {
    fn map_part(
        self,
        f: fn(Result<(), String>) -> Part,
    ) -> impl std::future::Future<Output = Part> {
        async move { f(self.await) }
    }
}
impl<F: std::future::Future<Output = Result<(), String>>> MapPart for F {}

impl JobRun {
    /// Places every task on live workers, least loaded first.
    fn place(&mut self) -> Result<(), String> {
        let k = self.spec.stages.len() as u32;
        let mut st = lock(&self.leader.state);
        let workers = st.workers_by_load();
        if workers.is_empty() {
            return Err("no live workers to run the job".into());
        }
        let mut next = 0;
        for stage in 1..=k {
            for index in 0..tasks_of(&self.spec, stage) {
                let w = workers[next % workers.len()].clone();
                next += 1;
                let pos = TaskPos { stage, index };
                if let Some(rec) = st.workers.get(&w) {
                    self.routes.insert(pos, rec.data_addr.clone(), 0);
                }
                let now = Instant::now();
                st.tasks.insert(
                    TaskKey {
                        job: self.id.clone(),
                        pos,
                    },
                    TaskRec {
                        worker: w,
                        attempt: 0,
                        pid: None,
                        state: TaskState::Starting,
                        tuples_in: 0,
                        tuples_out: 0,
                        rate: 0.0,
                        sampled: now,
                        error: None,
                        operator: self.spec.stages[stage as usize - 1].operator.describe(),
                        progressed: now,
                        queued: 0,
                    },
                );
            }
        }
        Ok(())
    }

    /// Starts the current epoch: sink, every task (at its current attempt), source.
    fn launch(&mut self) -> Result<(), String> {
        let spec = &self.spec;
        let k = spec.stages.len() as u32;
        let sink_file = local_file(&self.leader, spec, &spec.sink_path)?;
        let (source_count, sink_count, latency) = {
            let st = lock(&self.leader.state);
            let job = st.jobs.get(&self.id).ok_or("job record vanished")?;
            (
                job.source_tuples.clone(),
                job.sink_tuples.clone(),
                job.latency.clone(),
            )
        };
        self.leader
            .env
            .routes
            .set_many(&self.id, self.routes.version, &self.routes.list());
        let sink = SinkSpec {
            key: TaskKey {
                job: self.id.clone(),
                pos: TaskPos {
                    stage: k + 1,
                    index: 0,
                },
            },
            upstream: tasks_of(spec, k),
            target: SinkTarget::File(sink_file),
            epoch: self.epoch,
            accept_gaps: spec.delivery == Delivery::AtMostOnce,
        };
        let env = self.leader.env.clone();
        self.parts.spawn(
            run_sink(
                env.clone(),
                sink,
                sink_count,
                latency,
                self.progress.clone(),
                self.epoch_cancel.clone(),
            )
            .map_part(Part::Sink),
        );
        {
            let mut st = lock(&self.leader.state);
            let tasks: Vec<(TaskKey, WorkerId, u32)> = st
                .tasks
                .iter()
                .filter(|(key, _)| key.job == self.id)
                .map(|(key, t)| (key.clone(), t.worker.clone(), t.attempt))
                .collect();
            for (key, w, attempt) in tasks {
                let a = assignment(spec, &key, attempt, self.epoch, &self.routes);
                st.command(&w, Command::Start(a));
            }
        }
        let source = SourceSpec {
            job: self.id.clone(),
            path: spec.source_path.clone(),
            paths: spec.paths,
            name: spec.source_name.clone(),
            rate: spec.rate,
            downstream: tasks_of(spec, 1),
            partition: partition_into(spec, 1),
            resend: spec.delivery != Delivery::AtMostOnce,
            epoch: self.epoch,
        };
        self.parts.spawn(
            run_source(env, source, source_count, self.epoch_cancel.clone()).map_part(Part::Source),
        );
        Ok(())
    }

    /// Stops the current epoch's source and sink and waits for them.
    async fn stop_epoch(&mut self) {
        self.epoch_cancel.cancel();
        while let Some(r) = self.parts.join_next().await {
            if let Err(e) = r {
                warn!(job = %self.id, error = %e, "source/sink task panicked");
            }
        }
    }

    async fn watch(&mut self, events: &mut mpsc::Receiver<JobEvent>) -> Outcome {
        let mut sink_done = false;
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        loop {
            if sink_done {
                let all_finished = lock(&self.leader.state)
                    .tasks
                    .iter()
                    .filter(|(k, _)| k.job == self.id)
                    .all(|(_, t)| t.state == TaskState::Finished);
                if all_finished {
                    return Outcome::Succeeded;
                }
            }
            let deadline = async {
                match drain_deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Outcome::Cancelled,
                _ = deadline => {
                    // Every tuple is durable in the sink; a task that has not reported its end
                    // is stopped by cleanup. The output is complete, so the job succeeded.
                    warn!(job = %self.id, "some tasks did not report their end after the sink completed");
                    return Outcome::Succeeded;
                }
                Some(part) = self.parts.join_next(), if !self.parts.is_empty() => match part {
                    Ok(Part::Sink(Ok(()))) => {
                        sink_done = true;
                        drain_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(10));
                    }
                    _ if self.cancel.is_cancelled() => return Outcome::Cancelled,
                    Ok(Part::Sink(Err(e))) => return Outcome::Failed(format!("sink: {e}")),
                    Ok(Part::Source(Ok(()))) => info!(job = %self.id, "source finished"),
                    Ok(Part::Source(Err(e))) => return Outcome::Failed(format!("source: {e}")),
                    Err(e) => return Outcome::Failed(format!("source/sink task panicked: {e}")),
                },
                Some(ev) = events.recv() => {
                    let JobEvent::TaskEnded { key, attempt, state, error } = ev;
                    if state == TaskState::Finished {
                        continue;
                    }
                    let current = lock(&self.leader.state).tasks.get(&key).map(|t| t.attempt);
                    if current != Some(attempt) {
                        continue; // a stale attempt (an earlier epoch's, stopped on purpose)
                    }
                    let cause = error.unwrap_or_else(|| format!("task {}", if state == TaskState::Cancelled { "stopped" } else { "failed" }));
                    warn!(job = %self.id, task = %key.pos, attempt, %cause, "task failed");
                    {
                        let mut st = lock(&self.leader.state);
                        if let Some(j) = st.jobs.get_mut(&self.id) {
                            j.failures += 1;
                        }
                    }
                    if attempt >= self.leader.cfg.max_restarts {
                        return Outcome::Failed(format!("task {} failed {} times; last cause: {cause}", key.pos, attempt + 1));
                    }
                    let res = match recovery(self.spec.delivery) {
                        Recovery::RestartTask => self.restart_task(&key, attempt),
                        Recovery::RestartEpoch => {
                            sink_done = false;
                            drain_deadline = None;
                            self.restart_epoch().await
                        }
                        Recovery::Fail => Err(format!(
                            "task {} failed ({cause}); at-most-once never re-runs work, so the job ends with the output written so far",
                            key.pos
                        )),
                    };
                    if let Err(e) = res {
                        return Outcome::Failed(e);
                    }
                }
            }
        }
    }

    /// Picks a live worker for a task, preferring another than `avoid`; records the move.
    fn move_task(
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
            t.progressed = Instant::now();
        }
        Ok(target)
    }

    /// Exactly-once: restarts one task elsewhere; it recovers from its log (or the source
    /// file) and every peer is told where it now runs.
    fn restart_task(&mut self, key: &TaskKey, attempt: u32) -> Result<(), String> {
        let leader = self.leader.clone();
        let mut st = lock(&leader.state);
        let old = st.tasks.get(key).map(|t| t.worker.clone());
        let target = self.move_task(&mut st, key, old.as_ref())?;
        if let Some(j) = st.jobs.get_mut(&self.id) {
            j.recoveries += 1;
        }
        let list = self.routes.list();
        leader
            .env
            .routes
            .set_many(&self.id, self.routes.version, &list);
        let involved: std::collections::BTreeSet<WorkerId> = st
            .tasks
            .iter()
            .filter(|(k, _)| k.job == self.id)
            .map(|(_, t)| t.worker.clone())
            .collect();
        for w in involved.into_iter().filter(|w| *w != target) {
            st.command(
                &w,
                Command::Routes {
                    job: self.id.clone(),
                    routes: list.clone(),
                    version: self.routes.version,
                },
            );
        }
        let a = assignment(&self.spec, key, attempt + 1, self.epoch, &self.routes);
        st.command(&target, Command::Start(a));
        info!(job = %self.id, task = %key.pos, attempt = attempt + 1, worker = %target, "task restarted");
        Ok(())
    }

    /// At-least-once: without logs a crashed task's state and its links' end-of-stream state
    /// are gone, so the whole pipeline restarts from the source in a new epoch. Sequence
    /// numbers of the new epoch start above every old one, so stale frames are dropped as
    /// duplicates; the sink keeps what it wrote and appends. No loss; duplicates possible.
    async fn restart_epoch(&mut self) -> Result<(), String> {
        self.stop_epoch().await;
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
        self.epoch_cancel = self.cancel.child_token();
        info!(job = %self.id, epoch = self.epoch, "at-least-once: restarting the pipeline from the source");
        self.launch()
    }
}

async fn cleanup(
    leader: &Arc<Leader>,
    id: &JobId,
    spec: &JobSpec,
    outcome: Outcome,
    progress: &watch::Sender<SinkProgress>,
) {
    // A store that is not a local directory gets the sink file now (a failed upload fails
    // a job that had succeeded).
    let outcome = match (leader.publish_sink(spec).await, outcome) {
        (Err(e), Outcome::Succeeded) => Outcome::Failed(e),
        (_, o) => o,
    };
    let (status, error) = match outcome {
        Outcome::Succeeded => (JobStatus::Succeeded, None),
        Outcome::Failed(e) => (JobStatus::Failed, Some(e)),
        Outcome::Cancelled => (JobStatus::Cancelled, None),
    };
    {
        let mut st = lock(&leader.state);
        let workers: std::collections::BTreeSet<WorkerId> = st
            .tasks
            .iter()
            .filter(|(k, _)| &k.job == id)
            .map(|(_, t)| t.worker.clone())
            .collect();
        for w in workers {
            st.command(&w, Command::StopJob { job: id.clone() });
        }
        for (_, t) in st.tasks.iter_mut().filter(|(k, _)| &k.job == id) {
            if !t.state.is_terminal() {
                t.state = TaskState::Cancelled;
            }
        }
    }
    leader.env.routes.remove(id);
    if !spec.keep_logs && !leader.cfg.keep_logs {
        if let Err(e) = leader
            .store
            .delete_prefix(&crate::runtime::log::job_prefix(id))
            .await
        {
            warn!(job = %id, error = %e, "could not delete the job's input logs");
        }
    }
    {
        let mut st = lock(&leader.state);
        if let Some(j) = st.jobs.get_mut(id) {
            j.status = status;
            j.error = error.clone();
            j.ended = Some(Instant::now());
            j.events = None;
        }
    }
    progress.send_modify(|p| p.finished = true);
    match &error {
        None => info!(job = %id, status = ?status, "job ended"),
        Some(e) => warn!(job = %id, error = %e, "job failed"),
    }
}
