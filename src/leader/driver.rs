//! One job's lifecycle, owned by one tokio task: place tasks, start sink, tasks and source, react
//! to task ends (restart under exactly-once, fail otherwise), and finish by draining — the job
//! succeeds only when the sink has every end of stream and its file is durable. Whatever the
//! outcome, cleanup stops every task of the job and the record keeps its final status.
//!
//! Where tasks go and what each attempt is told: `placement.rs`; the loop that reacts to task
//! ends until the outcome is known: `outcome.rs`; what a failure triggers: `recovery.rs`; the
//! end: `cleanup.rs`.

use super::cleanup::cleanup;
use super::job::JobEvent;
use super::persist::{PlacedTask, RunState};
use super::placement::{assignment, Placement};
use super::state::{lock, TaskRec};
use super::Leader;
use crate::model::ids::{JobId, TaskKey, TaskPos, WorkerId};
use crate::model::partition::{partition_into, tasks_of};
use crate::model::spec::{Delivery, JobSpec, PathMode};
use crate::protocol::control::{Command, TaskState};
use crate::runtime::sink::{run_sink, CommitTarget, SinkProgress, SinkSpec, SinkTarget};
use crate::runtime::source::{run_source, SourceSpec};
use std::path::PathBuf;
use std::sync::Arc;
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

/// Where the sink of a job keeps its commit record: the leader's data dir, next to the job
/// records, so a restarted leader resumes the sink where it committed.
pub fn sink_commit_path(leader: &Leader, id: &JobId) -> PathBuf {
    leader
        .cfg
        .data_dir
        .join("sinks")
        .join(format!("{}.commit", id.0))
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
    /// A resumed job: when tasks whose worker has not rejoined count as lost.
    pub(super) adopt_deadline: Option<tokio::time::Instant>,
}

/// Runs a job to its final status: from the start, or (`resume`) from the placement an
/// earlier leader recorded, carrying on with the tasks the workers still run.
pub async fn drive(
    leader: Arc<Leader>,
    id: JobId,
    spec: JobSpec,
    mut events: mpsc::Receiver<JobEvent>,
    cancel: CancellationToken,
    progress: watch::Sender<SinkProgress>,
    resume: Option<RunState>,
) {
    let k = spec.stages.len() as u32;
    let mut run = JobRun {
        epoch_cancel: cancel.child_token(),
        leader,
        id,
        spec,
        routes: Placement::default(),
        parts: JoinSet::new(),
        epoch: 0,
        progress,
        cancel,
        adopt_deadline: None,
    };
    let started = match resume {
        None => {
            run.routes.insert(
                TaskPos { stage: 0, index: 0 },
                run.leader.data_addr.clone(),
                0,
            );
            run.routes.insert(
                TaskPos {
                    stage: k + 1,
                    index: 0,
                },
                run.leader.data_addr.clone(),
                0,
            );
            match run.place() {
                Ok(()) => run.persist_run().await.and_then(|()| run.launch()),
                Err(e) => Err(e),
            }
        }
        Some(state) => {
            run.resume(state);
            match run.persist_run().await {
                Ok(()) => run.relaunch(),
                Err(e) => Err(e),
            }
        }
    };
    let outcome = match started {
        Ok(()) => {
            info!(job = %run.id, stages = k, epoch = run.epoch, "job started");
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
                st.tasks.insert(
                    TaskKey {
                        job: self.id.clone(),
                        pos,
                    },
                    TaskRec::placed(w, 0, TaskState::Starting, &self.spec, stage),
                );
            }
        }
        Ok(())
    }

    /// Records the placement durably; called before any change of it takes effect.
    pub(super) async fn persist_run(&self) -> Result<(), String> {
        let record = {
            let mut st = lock(&self.leader.state);
            let tasks = self
                .routes
                .list()
                .into_iter()
                .map(|(pos, dest)| PlacedTask {
                    pos,
                    worker: st
                        .tasks
                        .get(&TaskKey {
                            job: self.id.clone(),
                            pos,
                        })
                        .map(|t| t.worker.clone()),
                    dest,
                })
                .collect();
            let run = RunState {
                epoch: self.epoch,
                version: self.routes.version(),
                tasks,
            };
            let j = st.jobs.get_mut(&self.id).ok_or("job record vanished")?;
            j.run = Some(run);
            j.stored(&self.id)
        };
        self.leader
            .persist
            .put_job(record)
            .await
            .map_err(|e| format!("recording the job's placement: {e:#}"))
    }

    /// Takes over a job an earlier leader ran: its epoch and placement as recorded, every
    /// task expected back from its worker (adopted when the worker rejoins), and new attempts
    /// of the source and the sink here. The sink resumes from its last commit; the source
    /// reads its file again (the first stage drops what it already holds).
    fn resume(&mut self, state: RunState) {
        let k = self.spec.stages.len() as u32;
        self.epoch = state.epoch;
        self.routes = Placement::restored(
            state.version,
            state.tasks.iter().map(|t| (t.pos, t.dest.clone())),
        );
        let mut st = lock(&self.leader.state);
        for t in &state.tasks {
            if t.pos.stage == 0 || t.pos.stage > k {
                let attempt = t.dest.attempt + 1;
                self.routes
                    .insert(t.pos, self.leader.data_addr.clone(), attempt);
                continue;
            }
            let Some(worker) = t.worker.clone() else {
                continue;
            };
            st.tasks.insert(
                TaskKey {
                    job: self.id.clone(),
                    pos: t.pos,
                },
                TaskRec::placed(
                    worker,
                    t.dest.attempt,
                    if t.dest.finished {
                        TaskState::Finished
                    } else {
                        TaskState::Starting
                    },
                    &self.spec,
                    t.pos.stage,
                ),
            );
        }
        self.adopt_deadline = Some(tokio::time::Instant::now() + self.leader.cfg.heartbeat_timeout);
        info!(job = %self.id, epoch = self.epoch, "resuming a job the previous leader ran");
    }

    /// Starts the sink and the source of a resumed job; its tasks run on already.
    fn relaunch(&mut self) -> Result<(), String> {
        self.start_sink()?;
        self.start_source();
        Ok(())
    }

    /// Tasks of a resumed job whose worker has not rejoined in time fail (and are recovered).
    pub(super) fn unadopted(&self) -> Vec<(TaskKey, u32)> {
        let st = lock(&self.leader.state);
        st.tasks
            .iter()
            .filter(|(k, t)| {
                k.job == self.id
                    && !t.state.is_terminal()
                    && !st
                        .workers
                        .get(&t.worker)
                        .is_some_and(|w| w.state == crate::protocol::control::WorkerState::Alive)
            })
            .map(|(k, t)| (k.clone(), t.attempt))
            .collect()
    }

    /// Starts the current epoch: sink, every task (at its current attempt), source.
    pub(super) fn launch(&mut self) -> Result<(), String> {
        self.start_sink()?;
        {
            let mut st = lock(&self.leader.state);
            let tasks: Vec<(TaskKey, WorkerId, u32)> = st
                .tasks
                .iter()
                .filter(|(key, _)| key.job == self.id)
                .map(|(key, t)| (key.clone(), t.worker.clone(), t.attempt))
                .collect();
            for (key, w, attempt) in tasks {
                let a = assignment(&self.spec, &key, attempt, self.epoch, &self.routes);
                st.command(&w, Command::Start(a));
            }
        }
        self.start_source();
        Ok(())
    }

    /// Publishes the placement here and starts the sink of the current epoch.
    fn start_sink(&mut self) -> Result<(), String> {
        let spec = &self.spec;
        let k = spec.stages.len() as u32;
        let sink_file = local_file(&self.leader, spec, &spec.sink_path)?;
        let (sink_count, latency) = {
            let st = lock(&self.leader.state);
            let job = st.jobs.get(&self.id).ok_or("job record vanished")?;
            (job.sink_tuples.clone(), job.latency.clone())
        };
        self.leader
            .env
            .routes
            .set_many(&self.id, self.routes.version(), &self.routes.list());
        let sink_pos = TaskPos {
            stage: k + 1,
            index: 0,
        };
        let sink = SinkSpec {
            key: TaskKey {
                job: self.id.clone(),
                pos: sink_pos,
            },
            attempt: self.routes.get(&sink_pos).map_or(0, |d| d.attempt),
            commit: Some(CommitTarget::File(sink_commit_path(&self.leader, &self.id))),
            upstream: tasks_of(spec, k),
            target: SinkTarget::File(sink_file),
            epoch: self.epoch,
            accept_gaps: spec.delivery == Delivery::AtMostOnce,
        };
        let env = self.leader.env.clone();
        self.parts.spawn(
            run_sink(
                env,
                sink,
                sink_count,
                latency,
                self.progress.clone(),
                self.epoch_cancel.clone(),
            )
            .map_part(Part::Sink),
        );
        Ok(())
    }

    /// Starts the source of the current epoch.
    fn start_source(&mut self) {
        let spec = &self.spec;
        let source_count = lock(&self.leader.state)
            .jobs
            .get(&self.id)
            .map(|j| j.source_tuples.clone())
            .unwrap_or_default();
        let source = SourceSpec {
            attempt: self
                .routes
                .get(&TaskPos { stage: 0, index: 0 })
                .map_or(0, |d| d.attempt),
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
        let env = self.leader.env.clone();
        self.parts.spawn(
            run_source(env, source, source_count, self.epoch_cancel.clone()).map_part(Part::Source),
        );
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
}
