//! Rescaling a stage while the job runs: which tasks own key groups, the two-phase switch of
//! every upstream task to the new map, and what a failure, a timeout or a leader restart does
//! to a switch in progress. The protocol and why it loses and doubles nothing are in
//! `docs/rescale.md`.
//!
//! Phase one: the new map is made durable as a version in progress and every upstream task is
//! asked to switch ([`Action::Reroute`]). Each records its point, holds back the outputs it
//! would route differently, and reports the point ([`crate::Input::Switched`]), which is made
//! durable. Phase two, once every point is durable: each is confirmed ([`Action::Rerouted`]).
//! An upstream task that restarts before its point is durable, a switch that takes longer
//! than [`SWITCH_TIMEOUT`], and a leader restart abort it instead: nothing was routed by the
//! new map yet, so every replay still routes by the old one.

use super::capacity::{takes_slot, Room};
use super::event::{Action, Cluster, ScaleNote, ScalePhase, Timer};
use super::job::JobCore;
use super::placement::rebuilds_from_history;
use super::routing::{StageRouting, NEVER};
use crate::model::ids::{TaskPos, WorkerId};
use crate::model::partition::{initial_map, partition_into, tasks_of};
use crate::model::spec::{Delivery, StageRole};
use crate::protocol::control::TaskState;
use crate::protocol::reroute::{PendingRoute, SwitchPoint};
use crate::protocol::routing::Inbound;
use std::collections::BTreeSet;
use std::time::Duration;
use tracing::info;

/// A switch whose points are not all durable by then is aborted (an upstream attempt that
/// never got the command, say); the next decision starts afresh.
pub const SWITCH_TIMEOUT: Duration = Duration::from_secs(10);

/// A request to rescale a stage.
#[derive(Clone, Debug)]
pub struct ScaleRequest {
    /// The stage (1..=K).
    pub stage: u32,
    /// Tasks it should run.
    pub tasks: u32,
    /// Why (the autoscaler's numbers, or "requested").
    pub reason: String,
    /// The stage's input rate when decided (tuples/s), if measured.
    pub rate: Option<f64>,
}

impl ScaleRequest {
    /// What the job's `scaling` list says of this request at `phase`: a move of the stage
    /// from `from` to `to` tasks with routing `version`.
    pub(super) fn note(&self, phase: ScalePhase, from: u32, to: u32, version: u32) -> ScaleNote {
        ScaleNote {
            stage: self.stage,
            version,
            from,
            to,
            reason: self.reason.clone(),
            rate: self.rate,
            phase,
        }
    }
}

impl JobCore {
    /// The routing of `stage` (its first map if it was never rescaled).
    pub(super) fn routing_of(&self, stage: u32) -> StageRouting {
        self.routing
            .get(&stage)
            .cloned()
            .unwrap_or_else(|| StageRouting::starting(initial_map(&self.spec, stage), 0))
    }

    /// Whether the task at `pos` holds a slot: an operator task that owns key groups (or
    /// will, or still does until a switch in progress is done). The others stand by.
    pub fn holds_slot(&self, pos: TaskPos) -> bool {
        if !takes_slot(&self.spec, pos.stage) {
            return false;
        }
        match self.routing.get(&pos.stage) {
            Some(r) => r.active().contains(&pos.index),
            None => initial_map(&self.spec, pos.stage)
                .active()
                .contains(&pos.index),
        }
    }

    /// Tasks that stand by (own no key group), for the executor's slot accounting.
    pub(super) fn standby_action(&self) -> Action {
        let standby = self
            .tasks
            .keys()
            .filter(|p| takes_slot(&self.spec, p.stage) && !self.holds_slot(**p))
            .copied()
            .collect();
        Action::Standby(standby)
    }

    /// Whether the operator of `stage` keeps state per key group: a keyed built-in
    /// (`count-by`), or an executable (which may).
    pub(super) fn keeps_state(&self, stage: u32) -> bool {
        match self.spec.role_of(stage) {
            // Unless the user said it keeps none, an executable may keep state per key.
            StageRole::Operator(s) if s.operator.is_exec() => !s.stateless,
            StageRole::Operator(s) => s.operator.keyed_column().is_some(),
            _ => false,
        }
    }

    /// Why the keys of `stage` cannot move with their state, if they cannot. A built-in hands
    /// a group's state to its new owner in every mode (`handover`). An executable is restarted
    /// with the state rebuilt from the group's logged input under exactly-once, and under
    /// at-least-once when the stage autoscales (it logs its input for that,
    /// [`rebuilds_from_history`]); an at-least-once stage that does not autoscale restarts the
    /// pipeline from the source with the new map ([`restart_rescale`](Self::restart_rescale));
    /// at-most-once replays nothing.
    fn stateful(&self, stage: u32) -> Option<String> {
        if !self.keeps_state(stage)
            || self.hands_over(stage)
            || self.spec.delivery != Delivery::AtMostOnce
        {
            return None;
        }
        Some(format!(
            "stage {stage} keeps state per key, which at-most-once never replays to rebuild"
        ))
    }

    /// What a task of `stage` is told to take key groups over with their state (a built-in
    /// that keeps state, or an executable that may and whose groups are rebuilt from their
    /// history, [`rebuilds_from_history`]): the stage's confirmed routing.
    pub(super) fn inbound_of(&self, stage: u32) -> Option<Inbound> {
        // Only a stage whose keys can move with their state: every tuple it takes is checked
        // against the routing.
        if !rebuilds_from_history(&self.spec, stage) && !self.hands_over(stage) {
            return None;
        }
        let mut routing = self.routing_of(stage);
        if routing.pending().is_some() {
            routing.versions.pop();
        }
        Some(Inbound {
            partition: partition_into(&self.spec, stage),
            routing,
        })
    }

    /// Tells the workers of `stage`'s tasks its routing, after a switch was confirmed.
    pub(super) fn publish_inbound(
        &self,
        stage: u32,
        only: Option<&WorkerId>,
        out: &mut Vec<Action>,
    ) {
        let Some(inbound) = self.inbound_of(stage) else {
            return;
        };
        let workers: BTreeSet<WorkerId> = self
            .tasks
            .iter()
            .filter(|(p, t)| p.stage == stage && !t.state.is_terminal())
            .map(|(_, t)| t.worker.clone())
            .filter(|w| only.is_none_or(|o| o == w))
            .collect();
        if !workers.is_empty() && inbound.routing.versions.len() > 1 {
            out.push(Action::Inbound {
                workers: workers.into_iter().collect(),
                stage,
                routing: inbound.routing,
            });
        }
    }

    /// Starts rescaling a stage, or says why not.
    pub(super) fn scale(&mut self, req: ScaleRequest, cluster: &Cluster, out: &mut Vec<Action>) {
        if let Err(why) = self.try_scale(&req, cluster, out) {
            info!(job = %self.id, stage = req.stage, to = req.tasks, %why, "rescale refused");
            let from = self.active_tasks(req.stage);
            let note = req.note(ScalePhase::Refused(why), from, req.tasks, 0);
            out.push(Action::Scaling(note));
        }
    }

    /// The tasks of `stage` that own key groups now.
    pub(super) fn active_tasks(&self, stage: u32) -> u32 {
        let routing = self.routing_of(stage);
        routing.current().map_or(0, |v| v.map.active().len() as u32)
    }

    /// Starts rescaling a stage; why not, if it cannot now.
    pub(super) fn try_scale(
        &mut self,
        req: &ScaleRequest,
        cluster: &Cluster,
        out: &mut Vec<Action>,
    ) -> Result<(), String> {
        let routing = self.routing_of(req.stage);
        let active = routing
            .current()
            .map(|v| v.map.active())
            .unwrap_or_default();
        let from = active.len() as u32;
        if let Some(why) = self.cannot_rescale(req, &routing) {
            return Err(why);
        }
        if req.tasks as usize > active.len() {
            let moved =
                self.bring_standby_to_room(req.stage, &active, req.tasks as usize, cluster, out);
            // The grow waits for a later decision: a task restarted in the same step as the
            // switch of maps it is to gain groups by wedged seeds of the simulation.
            if moved > 0 {
                return Err(format!(
                    "{moved} standing-by task(s) moved to workers with a free slot; the stage grows once asked again"
                ));
            }
        }
        let target = self.target_tasks(req.stage, &active, req.tasks, cluster)?;
        // A grow the free slots cut short goes ahead as far as they allow, and says so (a
        // probe's `scale … 6` was reported "2 → 4 done" and nothing more).
        let cut;
        let req = if (target.len() as u32) < req.tasks && target.len() > active.len() {
            cut = ScaleRequest {
                reason: format!("{}; {} asked, limited by free slots", req.reason, req.tasks),
                ..req.clone()
            };
            &cut
        } else {
            req
        };
        let map = match routing.current() {
            Some(v) => v.map.rescaled(&target),
            None => return Err("the stage has no map".into()),
        };
        if self.by_restart(req.stage) {
            return self.restart_rescale(req, map, from, cluster, out);
        }
        let mut routing = routing;
        let version = routing.begin(map.clone());
        // Upstream tasks whose stream has ended route nothing more: their outputs all went
        // by the old map.
        let upstream = req.stage - 1;
        let ended: Vec<u32> = (0..tasks_of(&self.spec, upstream))
            .filter(|i| {
                self.stream_ended(TaskPos {
                    stage: upstream,
                    index: *i,
                })
            })
            .collect();
        if let Some(v) = routing.pending_mut() {
            for i in ended {
                v.at.insert(
                    i,
                    SwitchPoint {
                        outputs: NEVER,
                        sent: Vec::new(),
                    },
                );
            }
        }
        self.routing.insert(req.stage, routing);
        let to = target.len() as u32;
        info!(job = %self.id, stage = req.stage, from, to, version, reason = %req.reason, "rescaling a stage");
        out.push(Action::Persist(self.run_state()));
        out.push(self.standby_action());
        out.push(Action::Scaling(req.note(
            ScalePhase::Started,
            from,
            to,
            version,
        )));
        for (pos, worker, attempt) in self.upstream_attempts(req.stage) {
            let switched = self.routing[&req.stage]
                .pending()
                .is_some_and(|v| v.at.contains_key(&pos.index));
            if !switched {
                let route = PendingRoute {
                    version,
                    map: map.clone(),
                };
                out.push(Action::Reroute {
                    worker,
                    pos,
                    attempt,
                    route,
                });
            }
        }
        out.push(Action::SetTimer(Timer::Switch(req.stage), SWITCH_TIMEOUT));
        self.settle_switch(req.stage, out);
        Ok(())
    }

    /// Why `req` cannot start now, if it cannot.
    fn cannot_rescale(&self, req: &ScaleRequest, routing: &StageRouting) -> Option<String> {
        let positions = tasks_of(&self.spec, req.stage);
        if req.stage == 0 || req.stage > self.spec.stages.len() as u32 {
            return Some(format!("stage {} is not an operator stage", req.stage));
        }
        if req.tasks == 0 || req.tasks > positions {
            return Some(format!(
                "stage {} can run 1 to {positions} tasks (its max_tasks)",
                req.stage
            ));
        }
        if let Some(why) = self.stateful(req.stage) {
            return Some(format!("{why}: its keys cannot move with their state yet"));
        }
        if !self.placed || self.sink_done {
            return Some("the job is not running".into());
        }
        if routing.pending().is_some() {
            return Some(format!("stage {} is already being rescaled", req.stage));
        }
        if let Some(why) = self.handing_over(req.stage) {
            return Some(why);
        }
        if self.by_restart(req.stage) {
            // Every task restarts: how far upstream attempts got does not matter.
            return None;
        }
        let upstream = req.stage - 1;
        let positions = (0..tasks_of(&self.spec, upstream)).map(|index| TaskPos {
            stage: upstream,
            index,
        });
        // A restarted upstream attempt defers its switch until it has routed, on every link,
        // as far as the receiver holds, and a restarted source also as far as its
        // predecessors' durable reach (`dataplane::reroute`, `store::reach`).
        positions
            .into_iter()
            .find(|p| self.unplaced.contains(p) || !self.tasks.contains_key(p))
            .map(|p| format!("upstream task {p} waits to be placed"))
    }

    /// The tasks that own groups after a rescale to `tasks`: the lowest-numbered of the
    /// active ones when it shrinks; when it grows, the active ones and the lowest-numbered
    /// standing-by tasks whose worker takes tasks and has a free slot.
    fn target_tasks(
        &self,
        stage: u32,
        active: &BTreeSet<u32>,
        tasks: u32,
        cluster: &Cluster,
    ) -> Result<BTreeSet<u32>, String> {
        let want = tasks as usize;
        if want == active.len() {
            return Err(format!("stage {stage} already runs {tasks} tasks"));
        }
        if want < active.len() {
            return Ok(active.iter().take(want).copied().collect());
        }
        let mut room = Room::of(self, cluster, false);
        let mut target = active.clone();
        for (pos, worker, _) in self.standing_by(stage, active) {
            if target.len() == want {
                break;
            }
            if room.take_on(&worker) {
                target.insert(pos.index);
            }
        }
        if target.len() == active.len() {
            return Err("no free slot on a worker that runs a standing-by task".into());
        }
        Ok(target)
    }

    /// Whether the task at `pos` has ended its stream (it routes nothing more).
    fn stream_ended(&self, pos: TaskPos) -> bool {
        self.tasks
            .get(&pos)
            .is_some_and(|t| t.state == TaskState::Finished || (pos.stage == 0 && t.done))
    }

    /// The current, unended attempts of the tasks feeding `stage`.
    pub(super) fn upstream_attempts(&self, stage: u32) -> Vec<(TaskPos, WorkerId, u32)> {
        let upstream = stage.saturating_sub(1);
        self.tasks
            .iter()
            .filter(|(p, t)| p.stage == upstream && !t.state.is_terminal())
            .map(|(p, t)| (*p, t.worker.clone(), t.attempt))
            .collect()
    }

    /// The routing history upstream task `pos` starts with (for the stage after it).
    pub(super) fn steps_of(&self, pos: TaskPos) -> Vec<crate::model::groups::RouteStep> {
        self.routing_of(pos.stage + 1).steps_of(pos.index)
    }
}
