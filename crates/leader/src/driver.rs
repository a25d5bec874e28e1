//! One job's driver, owned by one tokio task: it feeds the job's coordinator core
//! ([`crate::coordinator::JobCore`]) its inputs — the start or resume, task ends and the
//! monitor's findings from the job's inbox, its timers, a cancel — and carries out the actions
//! the core returns: the task records the API shows, the durable placement, worker commands.
//! Every decision is the core's; this file only executes them. Whatever the outcome,
//! `cleanup.rs` stops every task of the job and the record keeps the final status.

use super::cleanup::cleanup;
use super::state::{lock, State, TaskRec};
use super::Leader;
use crate::coordinator::record::RunState;
use crate::coordinator::{Action, Cluster, CoreConfig, Input, JobCore, Outcome, Timer};
use crate::model::ids::{JobId, TaskKey};
use crate::model::spec::JobSpec;
use crate::protocol::control::{Command, Endpoint};
use rainstorm_store::output::SinkProgress;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Once a job's sink finished, how long its other tasks have to report their own ends.
const DRAIN: Duration = Duration::from_secs(10);

mod record;

/// Runs a job to its final status: from the start, or (`resume`) from the placement an
/// earlier leader recorded, carrying on with the tasks the workers still run.
pub async fn drive(
    leader: Arc<Leader>,
    id: JobId,
    spec: JobSpec,
    mut events: mpsc::Receiver<Input>,
    cancel: CancellationToken,
    progress: watch::Sender<SinkProgress>,
    resume: Option<RunState>,
) {
    // A resumed job's time limit counts from its submission, not from this leader's start.
    let submitted = lock(&leader.state).jobs.get(&id).map(|j| j.submitted);
    let ran = submitted
        .and_then(|s| SystemTime::now().duration_since(s).ok())
        .unwrap_or_default();
    let cfg = CoreConfig {
        max_restarts: spec.limits.max_restarts.unwrap_or(leader.cfg.max_restarts),
        adopt_after: leader.cfg.heartbeat_timeout,
        drain_after: DRAIN,
        restart_delay: leader.cfg.restart_delay,
        restart_delay_max: leader.cfg.restart_delay_max,
        timeout: spec
            .limits
            .timeout()
            .map(|limit| (limit, limit.saturating_sub(ran))),
    };
    let mut core = JobCore::new(id.clone(), spec.clone(), cfg);
    let before = lock(&leader.state)
        .jobs
        .get(&id)
        .map_or((0, 0), |j| (j.failures, j.recoveries));
    let mut run = Executor {
        leader: leader.clone(),
        id: id.clone(),
        spec: spec.clone(),
        timers: BTreeMap::new(),
        before,
    };
    let mut input = match resume {
        None => Input::Start,
        Some(state) => Input::Resume(state),
    };
    let outcome = loop {
        if let Some(outcome) = run.step(&mut core, input).await {
            break outcome;
        }
        input = run.next_input(&mut events, &cancel).await;
    };
    cleanup(&leader, &id, &spec, outcome, &progress).await;
}

/// What carries out one job's core's actions.
struct Executor {
    leader: Arc<Leader>,
    id: JobId,
    spec: JobSpec,
    /// The core's timers and when each expires.
    timers: BTreeMap<Timer, tokio::time::Instant>,
    /// Failures and restarts an earlier leader counted (a resumed job's core counts anew).
    before: (u64, u64),
}

impl Executor {
    /// The next input: a cancel first, then an expired timer, then the job's inbox.
    async fn next_input(
        &mut self,
        events: &mut mpsc::Receiver<Input>,
        cancel: &CancellationToken,
    ) -> Input {
        let first = self
            .timers
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(t, at)| (*t, *at));
        let timer = async {
            match first {
                Some((t, at)) => {
                    tokio::time::sleep_until(at).await;
                    t
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Input::Cancel,
            t = timer => {
                self.timers.remove(&t);
                Input::Timer(t)
            }
            ev = events.recv() => ev.unwrap_or(Input::Cancel),
        }
    }

    /// Hands `input` to the core and carries out its actions, in order; the job's outcome
    /// once the core decided it.
    async fn step(&mut self, core: &mut JobCore, input: Input) -> Option<Outcome> {
        let mut actions = self.decide(core, input);
        let mut i = 0;
        let mut rescale_ended = false;
        while i < actions.len() {
            let action = actions[i].clone();
            i += 1;
            match action {
                Action::Scaling(note) => {
                    rescale_ended |= !matches!(note.phase, crate::coordinator::ScalePhase::Started);
                    self.command(Action::Scaling(note));
                }
                Action::Persist(run) => {
                    if let Err(e) = self.persist(run).await {
                        // Nothing after an undurable placement may take effect.
                        actions = self.decide(core, Input::Abort(e));
                        i = 0;
                    }
                }
                Action::SetTimer(t, after) => {
                    self.timers.insert(t, tokio::time::Instant::now() + after);
                }
                Action::ClearTimer(t) => {
                    self.timers.remove(&t);
                }
                Action::End(outcome) => {
                    self.counters(core);
                    return Some(outcome);
                }
                other => self.command(other),
            }
        }
        if rescale_ended {
            // The job's `scaling` list outlives a leader restart as of its last ended rescale.
            self.persist_record().await;
        }
        self.counters(core);
        None
    }

    /// What the core sees, read under the state lock `st`: the live workers, least loaded
    /// first; the slots each has free for this job (other running jobs' tasks subtracted);
    /// which drain; and the earliest other job still pending, if it was submitted first.
    fn cluster(&self, st: &State) -> Cluster {
        let workers = st
            .workers_by_load()
            .into_iter()
            .filter_map(|w| {
                let r = st.workers.get(&w)?;
                let at = Endpoint {
                    addr: r.data_addr.clone(),
                    key: r.key,
                };
                Some((w, at))
            })
            .collect::<Vec<_>>();
        let slots = workers
            .iter()
            .filter_map(|(w, _)| {
                let r = st.workers.get(w)?;
                Some((
                    w.clone(),
                    r.slots.saturating_sub(st.slots_held(w, Some(&self.id))),
                ))
            })
            .collect();
        // Draining workers take no new task, and neither does a registration never used
        // since it was made (no command poll, no heartbeat): a flood of registrations that
        // never ask for work does not attract any.
        let draining: std::collections::BTreeSet<crate::model::ids::WorkerId> = workers
            .iter()
            .filter(|(w, _)| st.workers.get(w).is_some_and(|r| r.draining || !r.heard))
            .map(|(w, _)| w.clone())
            .collect();
        let mine = st
            .jobs
            .get(&self.id)
            .map(|j| (j.submitted, self.id.clone()));
        // Slots of the workers that take tasks, free or not.
        let all: u32 = workers
            .iter()
            .filter(|(w, _)| !draining.contains(w))
            .filter_map(|(w, _)| st.workers.get(w).map(|r| r.slots))
            .sum();
        let behind = st
            .jobs
            .iter()
            // An earlier job not placed yet (pending, or its driver has not decided yet)
            // goes first, unless only new workers can start it (probe 19: it held up all).
            .filter(|(id, j)| **id != self.id && j.unplaced())
            .filter(|(_, j)| crate::coordinator::capacity::demand(&j.spec) <= all)
            .map(|(id, j)| (j.submitted, id.clone()))
            .filter(|earlier| mine.as_ref().is_some_and(|m| earlier < m))
            .min()
            .map(|(_, id)| id.0);
        Cluster {
            workers,
            slots: Some(slots),
            draining,
            behind,
        }
    }

    /// Hands `input` to the core with the cluster as it is now and records the attempts it
    /// assigns, under one hold of the state lock: two jobs deciding at once never both count
    /// on the same free slot.
    fn decide(&self, core: &mut JobCore, input: Input) -> Vec<Action> {
        let mut st = lock(&self.leader.state);
        let cluster = self.cluster(&st);
        let actions = core.handle(input, &cluster);
        // The counters first: a Persist among these actions records them.
        self.count(&mut st, core);
        for a in &actions {
            match a {
                Action::Assign { .. } => self.assign(&mut st, a),
                Action::Waiting(why) => {
                    let why = why.as_ref().map(|w| beyond_capacity(&st, &self.id, w));
                    if let Some(j) = st.jobs.get_mut(&self.id) {
                        j.waiting = why;
                    }
                }
                // The job's record takes the new rate before the Persist that follows.
                Action::SetRate { rate, .. } => {
                    if let Some(j) = st.jobs.get_mut(&self.id) {
                        j.spec.rate = *rate;
                    }
                }
                Action::Standby(_) | Action::Scaling(_) => {
                    crate::scaling::decided(&mut st, &self.id, a)
                }
                _ => {}
            }
        }
        actions
    }

    /// Records a task's new current attempt ([`Action::Assign`]) in the task records.
    fn assign(&self, st: &mut State, action: &Action) {
        let Action::Assign {
            pos,
            worker,
            attempt,
            state,
        } = action
        else {
            return;
        };
        let key = TaskKey {
            job: self.id.clone(),
            pos: *pos,
        };
        match st.tasks.get_mut(&key) {
            Some(t) => {
                t.worker = worker.clone();
                t.attempt = *attempt;
                t.state = *state;
                t.pid = None;
                t.done = false;
                t.progressed = Instant::now();
                t.start_sent = None;
                t.reported = false;
                t.store_wait_ms = 0;
                t.finishing = false;
                t.in_operator = false;
                t.unreached = None;
            }
            None => {
                let rec = TaskRec::placed(worker.clone(), *attempt, *state, &self.spec, pos.stage);
                st.tasks.insert(key, rec);
            }
        }
    }

    /// Carries out an action that touches the task records or workers' command queues.
    fn command(&self, action: Action) {
        let key = |pos| TaskKey {
            job: self.id.clone(),
            pos,
        };
        let mut st = lock(&self.leader.state);
        match action {
            // Recorded when decided (`decide`); the job's wait, likewise.
            Action::Assign { .. } | Action::Waiting(_) => {}
            Action::Start {
                worker,
                mut assignment,
            } => {
                if assignment.key.pos.stage == 0 {
                    if let Some(j) = st.jobs.get(&self.id) {
                        assignment.source_caught_up =
                            j.source_read.load(std::sync::atomic::Ordering::Relaxed);
                    }
                }
                if let Some(t) = st.tasks.get_mut(&assignment.key) {
                    if t.attempt == assignment.attempt {
                        t.start_sent = Some(Instant::now());
                    }
                }
                st.command(&worker, Command::Start(*assignment));
            }
            Action::Stop {
                worker,
                pos,
                attempt,
            } => st.command(
                &worker,
                Command::StopTask {
                    key: key(pos),
                    attempt,
                },
            ),
            a @ (Action::Reroute { .. } | Action::Rerouted { .. } | Action::Inbound { .. }) => {
                crate::scaling::command(&mut st, &self.id, a)
            }
            // Recorded when decided (`decide`).
            Action::Standby(_) | Action::Scaling(_) => {}
            Action::SetRate { worker, rate } => st.command(
                &worker,
                Command::SetRate {
                    job: self.id.clone(),
                    rate,
                },
            ),
            Action::StopJob { workers } => {
                for w in workers {
                    st.command(
                        &w,
                        Command::StopJob {
                            job: self.id.clone(),
                        },
                    );
                }
            }
            Action::Routes {
                workers,
                version,
                routes,
            } => {
                for w in workers {
                    let cmd = Command::Routes {
                        job: self.id.clone(),
                        routes: routes.clone(),
                        version,
                    };
                    st.command(&w, cmd);
                }
            }
            Action::Persist(_) | Action::SetTimer(..) | Action::ClearTimer(_) | Action::End(_) => {}
        }
    }
}

/// A wait's reason, told when the job needs more slots than every worker that takes tasks
/// has in all, free or not: only more workers can start it (a probe's job waited on with no
/// hint that it never could).
fn beyond_capacity(st: &State, id: &JobId, why: &str) -> String {
    let Some(j) = st.jobs.get(id) else {
        return why.to_string();
    };
    let need = crate::coordinator::capacity::demand(&j.spec);
    let total: u32 = (st.workers.values())
        .filter(|w| {
            w.state == crate::protocol::control::WorkerState::Alive && !w.draining && w.heard
        })
        .map(|w| w.slots)
        .sum();
    if total == 0 || need <= total {
        return why.to_string();
    }
    format!(
        "{why}; the live workers have {total} in all, so it starts only once workers with {} \
         more join (or it is cancelled)",
        need - total
    )
}
