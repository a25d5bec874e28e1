//! One job's lifecycle, owned by one tokio task: place tasks, start sink, tasks and source, react
//! to task ends (restart under exactly-once, fail otherwise), and finish by draining — the job
//! succeeds only when the sink has every end of stream and its file is durable. Whatever the
//! outcome, cleanup stops every task of the job and the record keeps its final status.

use super::sink::{run_sink, SinkProgress, SinkSpec};
use super::source::{run_source, SourceSpec};
use super::state::{lock, JobEvent, TaskRec};
use super::Leader;
use crate::data::link::LinkProgress;
use crate::data::router::Partition;
use crate::ids::{JobId, TaskKey, TaskPos, WorkerId};
use crate::ops::builtin::Builtin;
use crate::proto::{Command, JobStatus, SourceReplay, TaskAssignment, TaskState};
use crate::spec::{Delivery, JobSpec, OperatorSpec, PathMode};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
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

/// How tuples entering `stage` (1-based; K+1 = sink) pick their task.
pub fn partition_into(spec: &JobSpec, stage: u32) -> Partition {
    match spec.stages.get(stage as usize - 1).map(|s| &s.operator) {
        Some(OperatorSpec::Builtin { name, args }) => match Builtin::routing_column(name, args) {
            Some(c) => Partition::Column(c),
            None => Partition::Key,
        },
        _ => Partition::Key,
    }
}

fn tasks_of(spec: &JobSpec, stage: u32) -> u32 {
    spec.stages
        .get(stage as usize - 1)
        .map(|s| s.tasks)
        .unwrap_or(1)
}

fn assignment(
    spec: &JobSpec,
    key: &TaskKey,
    attempt: u32,
    routes: &Placement,
    source: &[Arc<LinkProgress>],
) -> TaskAssignment {
    let stage = key.pos.stage;
    let source_replay =
        (stage == 1 && attempt > 0 && spec.delivery == Delivery::ExactlyOnce).then(|| {
            let p = source
                .get(key.pos.index as usize)
                .cloned()
                .unwrap_or_default();
            SourceReplay {
                path: spec.source_path.clone(),
                name: spec.source_name.clone(),
                partition: partition_into(spec, 1),
                tasks: tasks_of(spec, 1),
                upto: p.acked.load(Ordering::Relaxed),
                ended: p.eos.load(Ordering::Relaxed),
            }
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
    }
}

/// Where a job's tasks run, versioned so that workers apply placements in order.
#[derive(Default)]
pub struct Placement {
    table: BTreeMap<TaskPos, String>,
    version: u64,
}

impl Placement {
    fn insert(&mut self, pos: TaskPos, addr: String) {
        self.table.insert(pos, addr);
        self.version += 1;
    }

    fn list(&self) -> Vec<(TaskPos, String)> {
        self.table.iter().map(|(p, a)| (*p, a.clone())).collect()
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
            .ok_or_else(|| "the store has no local files".to_string()),
    }
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
    routes.insert(TaskPos { stage: 0, index: 0 }, leader.data_addr.clone());
    routes.insert(
        TaskPos {
            stage: k + 1,
            index: 0,
        },
        leader.data_addr.clone(),
    );
    let mut parts = JoinSet::new();
    let parts_cancel = cancel.child_token();
    let source: Vec<Arc<LinkProgress>> = (0..tasks_of(&spec, 1)).map(|_| Arc::default()).collect();
    let mut outcome = start(
        &leader,
        &id,
        &spec,
        &mut routes,
        &mut parts,
        &parts_cancel,
        &progress,
        &source,
    );
    if outcome.is_none() {
        info!(job = %id, stages = k, "job started");
        outcome = Some(
            watch_job(
                &leader,
                &id,
                &spec,
                &mut routes,
                &mut events,
                &mut parts,
                &cancel,
                &source,
            )
            .await,
        );
    }
    let outcome = outcome.unwrap_or(Outcome::Failed("not started".into()));
    parts_cancel.cancel();
    while let Some(r) = parts.join_next().await {
        if let Err(e) = r {
            warn!(job = %id, error = %e, "source/sink task panicked");
        }
    }
    cleanup(&leader, &id, &spec, outcome, &progress).await;
}

#[allow(clippy::too_many_arguments)]
fn start(
    leader: &Arc<Leader>,
    id: &JobId,
    spec: &JobSpec,
    routes: &mut Placement,
    parts: &mut JoinSet<Part>,
    parts_cancel: &CancellationToken,
    progress: &watch::Sender<SinkProgress>,
    source_progress: &[Arc<LinkProgress>],
) -> Option<Outcome> {
    let k = spec.stages.len() as u32;
    let (source_file, sink_file) = match (
        local_file(leader, spec, &spec.source_path),
        local_file(leader, spec, &spec.sink_path),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return Some(Outcome::Failed(e)),
    };
    let (source_count, sink_count, latency) = {
        let mut st = lock(&leader.state);
        let workers = st.workers_by_load();
        if workers.is_empty() {
            return Some(Outcome::Failed("no live workers to run the job".into()));
        }
        let mut next = 0;
        for stage in 1..=k {
            for index in 0..tasks_of(spec, stage) {
                let w = workers[next % workers.len()].clone();
                next += 1;
                let pos = TaskPos { stage, index };
                if let Some(rec) = st.workers.get(&w) {
                    routes.insert(pos, rec.data_addr.clone());
                }
                let now = Instant::now();
                st.tasks.insert(
                    TaskKey {
                        job: id.clone(),
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
                        operator: spec.stages[stage as usize - 1].operator.describe(),
                        progressed: now,
                    },
                );
            }
        }
        let job = st.jobs.get(id)?;
        (
            job.source_tuples.clone(),
            job.sink_tuples.clone(),
            job.latency.clone(),
        )
    };
    leader
        .env
        .routes
        .set_many(id, routes.version, &routes.list());
    let sink = SinkSpec {
        key: TaskKey {
            job: id.clone(),
            pos: TaskPos {
                stage: k + 1,
                index: 0,
            },
        },
        upstream: tasks_of(spec, k),
        file: sink_file,
    };
    parts.spawn(
        run_sink(
            leader.env.clone(),
            sink,
            sink_count,
            latency,
            progress.clone(),
            parts_cancel.clone(),
        )
        .map_part(Part::Sink),
    );
    {
        let mut st = lock(&leader.state);
        let keys: Vec<(TaskKey, WorkerId)> = st
            .tasks
            .iter()
            .filter(|(key, _)| &key.job == id)
            .map(|(key, t)| (key.clone(), t.worker.clone()))
            .collect();
        for (key, w) in keys {
            let a = assignment(spec, &key, 0, routes, source_progress);
            st.command(&w, Command::Start(a));
        }
    }
    let source = SourceSpec {
        job: id.clone(),
        file: source_file,
        name: spec.source_name.clone(),
        rate: spec.rate,
        downstream: tasks_of(spec, 1),
        partition: partition_into(spec, 1),
        resend: spec.delivery != Delivery::AtMostOnce,
        progress: source_progress.to_vec(),
    };
    parts.spawn(
        run_source(
            leader.env.clone(),
            source,
            source_count,
            parts_cancel.clone(),
        )
        .map_part(Part::Source),
    );
    None
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

#[allow(clippy::too_many_arguments)]
async fn watch_job(
    leader: &Arc<Leader>,
    id: &JobId,
    spec: &JobSpec,
    routes: &mut Placement,
    events: &mut mpsc::Receiver<JobEvent>,
    parts: &mut JoinSet<Part>,
    cancel: &CancellationToken,
    source: &[Arc<LinkProgress>],
) -> Outcome {
    let mut sink_done = false;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    loop {
        if sink_done {
            let all_finished = lock(&leader.state)
                .tasks
                .iter()
                .filter(|(k, _)| &k.job == id)
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
            _ = cancel.cancelled() => return Outcome::Cancelled,
            _ = deadline => {
                // Every tuple is durable in the sink; a task that has not reported its end is
                // stopped by cleanup. The output is complete, so the job succeeded.
                warn!(job = %id, "some tasks did not report their end after the sink completed");
                return Outcome::Succeeded;
            }
            Some(part) = parts.join_next(), if !parts.is_empty() => match part {
                Ok(Part::Sink(Ok(()))) => {
                    sink_done = true;
                    drain_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(10));
                }
                Ok(Part::Sink(Err(e))) => return Outcome::Failed(format!("sink: {e}")),
                Ok(Part::Source(Ok(()))) => info!(job = %id, "source finished"),
                Ok(Part::Source(Err(e))) => return Outcome::Failed(format!("source: {e}")),
                Err(e) => return Outcome::Failed(format!("source/sink task panicked: {e}")),
            },
            Some(ev) = events.recv() => {
                let JobEvent::TaskEnded { key, attempt, state, error } = ev;
                if state == TaskState::Finished {
                    continue;
                }
                let cause = error.unwrap_or_else(|| format!("task {}", if state == TaskState::Cancelled { "stopped" } else { "failed" }));
                warn!(job = %id, task = %key.pos, attempt, %cause, "task failed");
                let restarts = {
                    let mut st = lock(&leader.state);
                    if let Some(j) = st.jobs.get_mut(id) {
                        j.failures += 1;
                    }
                    st.tasks.get(&key).map(|t| t.attempt).unwrap_or(0)
                };
                if spec.delivery != Delivery::ExactlyOnce {
                    return Outcome::Failed(format!(
                        "task {} failed ({cause}); {} jobs do not recover tasks",
                        key.pos,
                        spec.delivery.as_str()
                    ));
                }
                if restarts >= leader.cfg.max_restarts {
                    return Outcome::Failed(format!(
                        "task {} failed {} times; last cause: {cause}",
                        key.pos,
                        restarts + 1
                    ));
                }
                if let Err(e) = restart(leader, id, spec, &key, attempt, routes, source) {
                    return Outcome::Failed(e);
                }
            }
        }
    }
}

fn restart(
    leader: &Arc<Leader>,
    id: &JobId,
    spec: &JobSpec,
    key: &TaskKey,
    attempt: u32,
    routes: &mut Placement,
    source: &[Arc<LinkProgress>],
) -> Result<(), String> {
    let mut st = lock(&leader.state);
    let workers = st.workers_by_load();
    let old = st.tasks.get(key).map(|t| t.worker.clone());
    // Prefer another worker than the one that just failed it, if there is one.
    let target = workers
        .iter()
        .find(|w| Some(*w) != old.as_ref())
        .or_else(|| workers.first())
        .cloned()
        .ok_or_else(|| format!("task {} failed and no live worker can take it", key.pos))?;
    let addr = st
        .workers
        .get(&target)
        .map(|w| w.data_addr.clone())
        .ok_or_else(|| "worker vanished".to_string())?;
    routes.insert(key.pos, addr);
    let next = attempt + 1;
    if let Some(t) = st.tasks.get_mut(key) {
        t.attempt = next;
        t.worker = target.clone();
        t.state = TaskState::Starting;
        t.pid = None;
        t.progressed = Instant::now();
    }
    if let Some(j) = st.jobs.get_mut(id) {
        j.recoveries += 1;
    }
    let list = routes.list();
    leader.env.routes.set_many(id, routes.version, &list);
    let involved: std::collections::BTreeSet<WorkerId> = st
        .tasks
        .iter()
        .filter(|(k, _)| &k.job == id)
        .map(|(_, t)| t.worker.clone())
        .collect();
    for w in involved {
        if w != target {
            st.command(
                &w,
                Command::Routes {
                    job: id.clone(),
                    routes: list.clone(),
                    version: routes.version,
                },
            );
        }
    }
    st.command(
        &target,
        Command::Start(assignment(spec, key, next, routes, source)),
    );
    info!(job = %id, task = %key.pos, attempt = next, worker = %target, "task restarted");
    Ok(())
}

async fn cleanup(
    leader: &Arc<Leader>,
    id: &JobId,
    spec: &JobSpec,
    outcome: Outcome,
    progress: &watch::Sender<SinkProgress>,
) {
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
            .delete_prefix(&crate::log::job_prefix(id))
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
