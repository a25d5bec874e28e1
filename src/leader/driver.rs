//! One job's lifecycle, owned by one tokio task: place tasks, start sink, tasks and source, react
//! to task ends (restart under exactly-once, fail otherwise), and finish by draining — the job
//! succeeds only when the sink has every end of stream and its file is durable. Whatever the
//! outcome, cleanup stops every task of the job and the record keeps its final status.
//!
//! Where tasks go and what each attempt is told: `placement.rs`; what a failure triggers:
//! `recovery.rs`; the end: `cleanup.rs`.

use super::cleanup::cleanup;
use super::placement::{assignment, recovery, Placement, Recovery};
use super::state::{lock, JobEvent, TaskRec};
use super::Leader;
use crate::model::ids::{JobId, TaskKey, TaskPos, WorkerId};
use crate::model::partition::{partition_into, tasks_of};
use crate::model::spec::{Delivery, JobSpec, PathMode};
use crate::protocol::control::{Command, TaskState};
use crate::runtime::sink::{run_sink, SinkProgress, SinkSpec, SinkTarget};
use crate::runtime::source::{run_source, SourceSpec};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub(super) enum Part {
    Sink(Result<(), String>),
    Source(Result<(), String>),
}

pub(super) enum Outcome {
    Succeeded,
    Failed(String),
    Cancelled,
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
pub(super) struct JobRun {
    pub(super) leader: Arc<Leader>,
    pub(super) id: JobId,
    pub(super) spec: JobSpec,
    pub(super) routes: Placement,
    /// Source and sink of the current epoch.
    pub(super) parts: JoinSet<Part>,
    /// Cancels the current epoch's source and sink.
    pub(super) epoch_cancel: CancellationToken,
    pub(super) epoch: u32,
    pub(super) progress: watch::Sender<SinkProgress>,
    pub(super) cancel: CancellationToken,
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
    pub(super) fn launch(&mut self) -> Result<(), String> {
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
            .set_many(&self.id, self.routes.version(), &self.routes.list());
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
    pub(super) async fn stop_epoch(&mut self) {
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
                        self.task_finished(&key, attempt);
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
}
