//! One job's core: its placement, epoch and every task's current attempt, and the rules that
//! turn an input into actions — placement and launch, adoption after a leader restart,
//! finished tasks, completion, cancellation. What a failure triggers is in `recover.rs`.

use super::config::CoreConfig;
use super::event::{Action, Cluster, Input, Outcome, Timer};
use super::placement::{assignment, Placement};
use super::record::{PlacedTask, RunState};
use crate::model::ids::{JobId, TaskKey, TaskPos, WorkerId};
use crate::model::spec::JobSpec;
use crate::protocol::control::{Endpoint, TaskState};
use std::collections::{BTreeMap, BTreeSet};
use tracing::{info, warn};

/// A task as the core tracks it: its current attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreTask {
    /// The worker running the current attempt.
    pub worker: WorkerId,
    /// The current attempt.
    pub attempt: u32,
    /// What the core knows of it: `Starting` until it ends, then how it ended.
    pub state: TaskState,
    /// A source whose current attempt reported its whole stream acknowledged.
    pub done: bool,
    /// Restored from a resumed placement and not yet reported back by its worker.
    pub adopting: bool,
}

/// One job's coordinator: see the module doc of [`crate::coordinator`].
pub struct JobCore {
    pub(super) id: JobId,
    pub(super) spec: JobSpec,
    pub(super) cfg: CoreConfig,
    pub(super) placement: Placement,
    pub(super) epoch: u32,
    pub(super) tasks: BTreeMap<TaskPos, CoreTask>,
    /// The sink's current attempt finished: the job completes once the others report.
    pub(super) sink_done: bool,
    pub(super) ended: bool,
    pub(super) failures: u64,
    pub(super) recoveries: u64,
    pub(super) last_failure: Option<String>,
    /// Whether the job's tasks were placed (a pending job's were not).
    pub(super) placed: bool,
    /// Why the job waits for capacity, as last said.
    pub(super) waiting_reason: Option<String>,
    /// Tasks whose restart found no free slot: they wait for one.
    pub(super) unplaced: BTreeSet<TaskPos>,
    /// Times each task moved off a draining worker (restarts that are not failures).
    pub(super) moves: BTreeMap<TaskPos, u32>,
    /// Tasks a drain left on each draining worker for want of room elsewhere (as last said).
    pub(super) drain_kept: BTreeMap<WorkerId, usize>,
    /// The key-group maps of the stages rescaled so far.
    pub(super) routing: BTreeMap<u32, super::routing::StageRouting>,
    /// The autoscaler of its autoscaled stages.
    pub(super) scaler: super::autoscale::Scaler,
    /// The leader's clock as the latest loads gave it, ms since the Unix epoch.
    pub(super) now_ms: u64,
    /// The autoscaler's last refused rescale of each stage, listed once.
    pub(super) refused: BTreeMap<u32, String>,
    /// The latest routing version each task handed key groups' state over for (`handover`).
    pub(super) handed: BTreeMap<TaskPos, u32>,
}

impl JobCore {
    /// A job's core before its first input ([`Input::Start`] or [`Input::Resume`]).
    pub fn new(id: JobId, spec: JobSpec, cfg: CoreConfig) -> JobCore {
        let scaler = super::autoscale::Scaler::new(&spec);
        JobCore {
            id,
            spec,
            cfg,
            placement: Placement::default(),
            epoch: 0,
            tasks: BTreeMap::new(),
            sink_done: false,
            ended: false,
            failures: 0,
            recoveries: 0,
            last_failure: None,
            placed: false,
            waiting_reason: None,
            unplaced: BTreeSet::new(),
            moves: BTreeMap::new(),
            drain_kept: BTreeMap::new(),
            routing: BTreeMap::new(),
            scaler,
            now_ms: 0,
            refused: BTreeMap::new(),
            handed: BTreeMap::new(),
        }
    }

    /// Decides what `input` calls for, given the live workers; once the job has ended, nothing.
    pub fn handle(&mut self, input: Input, cluster: &Cluster) -> Vec<Action> {
        if self.ended {
            return Vec::new();
        }
        let mut out = Vec::new();
        let res = match input {
            Input::Start => {
                self.arm_timeout(&mut out);
                self.start(cluster, &mut out)
            }
            Input::Resume(run) => self.resume(run, &mut out),
            Input::TaskEnded {
                pos,
                attempt,
                state,
                error,
                unrecoverable,
            } => match unrecoverable && state == TaskState::Failed {
                true if self.current_mut(pos, attempt).is_some() => Err(Outcome::Failed(format!(
                    "task {pos} attempt {attempt} cannot recover, so it is not restarted: {}",
                    error.as_deref().unwrap_or("task failed")
                ))),
                _ => self.ended_attempt(pos, attempt, state, error, cluster, &mut out),
            },
            Input::SourceDone { attempt } => {
                if let Some(t) = self.current_mut(TaskPos { stage: 0, index: 0 }, attempt) {
                    t.done = true;
                }
                Ok(())
            }
            Input::WorkerLost { worker } => {
                let lost = self.running_on(&worker);
                self.fail_each(lost, &format!("worker {worker} lost"), cluster, &mut out)
            }
            Input::WorkerDraining { worker } => {
                self.drain_worker(&worker, cluster, &mut out, false)
            }
            Input::DrainEnded { worker } => self.drain_worker(&worker, cluster, &mut out, true),
            Input::Stalled {
                pos,
                attempt,
                cause,
            } => self.stalled(pos, attempt, cause, cluster, &mut out),
            Input::Rejoined { worker, reports } => {
                self.rejoined(worker, reports, cluster, &mut out)
            }
            Input::Timer(Timer::Adopt) => {
                let lost: Vec<(TaskPos, u32)> = self
                    .tasks
                    .iter()
                    .filter(|(_, t)| t.adopting && !cluster.alive(&t.worker))
                    .map(|(p, t)| (*p, t.attempt))
                    .collect();
                let cause = "its worker did not rejoin the restarted leader";
                self.fail_each(lost, cause, cluster, &mut out)
            }
            Input::Timer(Timer::Drain) => {
                if self.sink_done {
                    // Every tuple is durable in the sink and the output is written; a task
                    // that has not reported its end is stopped when the job ends.
                    warn!(job = %self.id, "some tasks did not report their end after the sink completed");
                    Err(Outcome::Succeeded)
                } else {
                    Ok(())
                }
            }
            Input::Timer(Timer::Place) => self.place_waiting(cluster, &mut out),
            Input::Timer(Timer::Start(pos, attempt)) => {
                if self.current_mut(pos, attempt).is_some() {
                    out.extend(self.start_action(pos));
                }
                Ok(())
            }
            Input::Timer(Timer::Timeout) => match self.cfg.timeout {
                Some((limit, _)) => Err(Outcome::Failed(format!(
                    "timed out: the job ran longer than its timeout_s = {} s",
                    limit.as_secs_f64()
                ))),
                None => Ok(()),
            },
            Input::SetRate(rate) => {
                self.set_rate(rate, cluster, &mut out);
                Ok(())
            }
            Input::Scale(req) => {
                self.scale(req, cluster, &mut out);
                Ok(())
            }
            Input::Loads { now_ms, loads } => {
                self.loads(now_ms, loads, cluster, &mut out);
                Ok(())
            }
            Input::Switched {
                pos,
                attempt,
                report,
            } => {
                self.switched(pos, attempt, report, &mut out);
                Ok(())
            }
            Input::HandedOver { pos, version } => {
                let v = self.handed.entry(pos).or_default();
                *v = (*v).max(version);
                Ok(())
            }
            Input::Timer(Timer::Switch(stage)) => {
                self.abort_switch(stage, "not every upstream task switched in time", &mut out);
                Ok(())
            }
            Input::Cancel => Err(Outcome::Cancelled),
            Input::Abort(cause) => Err(Outcome::Failed(cause)),
        };
        let end = match res {
            Err(outcome) => Some(outcome),
            Ok(()) => self.complete().then_some(Outcome::Succeeded),
        };
        if let Some(outcome) = end {
            self.ended = true;
            out.push(Action::End(outcome));
        }
        out
    }

    /// The durable form of the placement.
    pub fn run_state(&self) -> RunState {
        RunState {
            epoch: self.epoch,
            version: self.placement.version(),
            tasks: self
                .placement
                .list()
                .into_iter()
                .map(|(pos, dest)| PlacedTask {
                    pos,
                    worker: self.tasks.get(&pos).map(|t| t.worker.clone()),
                    dest,
                })
                .collect(),
            routing: self.routing.clone(),
            handed: self.handed.iter().map(|(p, v)| (*p, *v)).collect(),
        }
    }

    /// The job completes when the sink finished and every other task reported its end — the
    /// source, which serves restarted first-stage tasks until the job ends, by reporting its
    /// whole stream acknowledged.
    fn complete(&self) -> bool {
        self.sink_done
            && self.tasks.iter().all(|(pos, t)| match pos.stage {
                0 => t.done,
                _ => t.state == TaskState::Finished,
            })
    }

    /// The task at `pos` if `attempt` is its current attempt and it has not ended.
    pub(super) fn current_mut(&mut self, pos: TaskPos, attempt: u32) -> Option<&mut CoreTask> {
        self.tasks
            .get_mut(&pos)
            .filter(|t| t.attempt == attempt && !t.state.is_terminal())
    }

    /// Current attempts on `worker` that have not ended.
    pub(super) fn running_on(&self, worker: &WorkerId) -> Vec<(TaskPos, u32)> {
        self.tasks
            .iter()
            .filter(|(_, t)| &t.worker == worker && !t.state.is_terminal())
            .map(|(p, t)| (*p, t.attempt))
            .collect()
    }

    pub(super) fn key(&self, pos: TaskPos) -> TaskKey {
        TaskKey {
            job: self.id.clone(),
            pos,
        }
    }

    /// Records a task's (new) current attempt, in the core and for the executor.
    pub(super) fn assign(
        &mut self,
        pos: TaskPos,
        worker: WorkerId,
        at: &Endpoint,
        attempt: u32,
        out: &mut Vec<Action>,
    ) {
        self.placement.insert(pos, at, attempt);
        self.tasks.insert(
            pos,
            CoreTask {
                worker: worker.clone(),
                attempt,
                state: TaskState::Starting,
                done: false,
                adopting: false,
            },
        );
        out.push(Action::Assign {
            pos,
            worker,
            attempt,
            state: TaskState::Starting,
        });
    }

    /// The Start command of a task's current attempt.
    pub(super) fn start_action(&self, pos: TaskPos) -> Option<Action> {
        let t = self.tasks.get(&pos)?;
        let mut a = assignment(
            &self.spec,
            &self.key(pos),
            t.attempt,
            self.epoch,
            &self.placement,
        );
        a.routing.steps = self.steps_of(pos);
        a.inbound = self.inbound_of(pos.stage);
        a.standby = crate::capacity::takes_slot(&self.spec, pos.stage) && !self.holds_slot(pos);
        if let Some(up) = pos.stage.checked_sub(1) {
            a.finished_upstream = self
                .tasks
                .iter()
                .filter(|(p, t)| p.stage == up && t.state == TaskState::Finished)
                .map(|(p, _)| p.index)
                .collect();
        }
        if let Some(r) = a.source_replay.as_mut() {
            r.steps = self.steps_of(TaskPos { stage: 0, index: 0 });
        }
        Some(Action::Start {
            worker: t.worker.clone(),
            assignment: Box::new(a),
        })
    }

    /// Tells every live worker of the job but `skip` (which gets the placement with its Start
    /// command) where each task runs now.
    pub(super) fn publish_routes(
        &self,
        cluster: &Cluster,
        skip: Option<&WorkerId>,
        out: &mut Vec<Action>,
    ) {
        let workers: BTreeSet<&WorkerId> = self
            .tasks
            .values()
            .map(|t| &t.worker)
            .filter(|w| Some(*w) != skip && cluster.alive(w))
            .collect();
        if workers.is_empty() {
            return;
        }
        out.push(Action::Routes {
            workers: workers.into_iter().cloned().collect(),
            version: self.placement.version(),
            routes: self.placement.list(),
        });
    }

    /// An attempt ended: a finished one is marked in the placement (a restarted upstream
    /// learns it has nothing left to deliver to it) and, if it is the sink, the job drains;
    /// a failed current one is recovered by the delivery mode's rule.
    pub(super) fn ended_attempt(
        &mut self,
        pos: TaskPos,
        attempt: u32,
        state: TaskState,
        error: Option<String>,
        cluster: &Cluster,
        out: &mut Vec<Action>,
    ) -> Result<(), Outcome> {
        if state != TaskState::Finished {
            let cause = error.unwrap_or_else(|| match state {
                TaskState::Cancelled => "task stopped".to_string(),
                _ => "task failed".to_string(),
            });
            return self.failed(pos, attempt, state, cause, cluster, out);
        }
        if self.placement.finish(pos, attempt) {
            out.push(Action::Persist(self.run_state()));
            self.publish_routes(cluster, None, out);
        }
        let sink = pos.stage == self.spec.sink_stage();
        let Some(t) = self.current_mut(pos, attempt) else {
            return Ok(());
        };
        t.state = TaskState::Finished;
        t.adopting = false;
        if sink {
            info!(job = %self.id, "sink finished");
            self.sink_done = true;
            out.push(Action::SetTimer(Timer::Drain, self.cfg.drain_after));
        }
        Ok(())
    }
}
