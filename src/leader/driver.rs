//! One job's lifecycle, owned by one tokio task: place every task — the source (stage 0), the
//! operators and the sink (stage K+1) — on workers, start them, react to task ends (restart
//! under exactly-once, fail otherwise), and finish by draining — the job succeeds only when the
//! sink task reports that it holds every end of stream and wrote the output. The leader only
//! coordinates: no tuple passes through it. Whatever the outcome, cleanup stops every task of
//! the job and the record keeps its final status.
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
use crate::model::partition::tasks_of;
use crate::model::spec::JobSpec;
use crate::protocol::control::{Command, TaskState};
use crate::runtime::sink::SinkProgress;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::info;

pub(super) enum Outcome {
    Succeeded,
    Failed(String),
    Cancelled,
}

/// One job's run: everything its driver owns.
pub(super) struct JobRun {
    pub(super) leader: Arc<Leader>,
    pub(super) id: JobId,
    pub(super) spec: JobSpec,
    pub(super) routes: Placement,
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
        leader,
        id,
        spec,
        routes: Placement::default(),
        epoch: 0,
        progress,
        cancel,
        adopt_deadline: None,
    };
    let started = match resume {
        None => match run.place() {
            Ok(()) => run.persist_run().await.and_then(|()| run.launch()),
            Err(e) => Err(e),
        },
        Some(state) => match run.resume(state) {
            Ok(()) => run.persist_run().await,
            Err(e) => Err(e),
        },
    };
    let outcome = match started {
        Ok(()) => {
            info!(job = %run.id, stages = k, epoch = run.epoch, "job started");
            run.watch(&mut events).await
        }
        Err(e) => Outcome::Failed(e),
    };
    cleanup(&run.leader, &run.id, &run.spec, outcome, &run.progress).await;
}

impl JobRun {
    /// Places every task — source, operators, sink — on live workers, least loaded first.
    fn place(&mut self) -> Result<(), String> {
        let k = self.spec.stages.len() as u32;
        let mut st = lock(&self.leader.state);
        let workers = st.workers_by_load();
        if workers.is_empty() {
            return Err("no live workers to run the job".into());
        }
        let mut next = 0;
        for stage in 0..=k + 1 {
            let tasks = if stage == 0 {
                1
            } else {
                tasks_of(&self.spec, stage)
            };
            for index in 0..tasks {
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

    /// Takes over a job an earlier leader ran: its epoch and placement as recorded, and every
    /// task — source and sink included — expected back from its worker (adopted when the
    /// worker rejoins, recovered as usual if it does not).
    fn resume(&mut self, state: RunState) -> Result<(), String> {
        // A placement recorded before sources and sinks ran on workers has them on no worker.
        let k = self.spec.stages.len() as u32;
        if let Some(t) = state
            .tasks
            .iter()
            .find(|t| t.worker.is_none() && (t.pos.stage == 0 || t.pos.stage > k))
        {
            return Err(format!(
                "task {} was placed by a leader that ran sources and sinks itself; resubmit the job",
                t.pos
            ));
        }
        self.epoch = state.epoch;
        self.routes = Placement::restored(
            state.version,
            state.tasks.iter().map(|t| (t.pos, t.dest.clone())),
        );
        let mut st = lock(&self.leader.state);
        for t in &state.tasks {
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

    /// Starts the current epoch: every task, source and sink included, at its current attempt.
    pub(super) fn launch(&mut self) -> Result<(), String> {
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
        Ok(())
    }
}
