//! A switch of key-group maps in progress and how it ends: upstream points made durable
//! and confirmed once all are in, or aborted when an upstream task restarts before its point
//! is durable, when it takes too long, or when the leader restarts; verdicts repeated to a
//! worker that rejoins; and the routing of a new epoch.

use super::event::{Action, ScaleNote, ScalePhase, Timer};
use super::job::JobCore;
use crate::model::ids::{TaskPos, WorkerId};
use crate::model::partition::tasks_of;
use crate::protocol::reroute::SwitchReport;
use tracing::{info, warn};

impl JobCore {
    /// An upstream task reported where it switched: made durable, and once every upstream
    /// task has, the switch is confirmed.
    pub(super) fn switched(
        &mut self,
        pos: TaskPos,
        attempt: u32,
        report: SwitchReport,
        out: &mut Vec<Action>,
    ) {
        if self.current_mut(pos, attempt).is_none() {
            return;
        }
        let stage = pos.stage + 1;
        let Some(v) = self.routing.get_mut(&stage).and_then(|r| r.pending_mut()) else {
            return;
        };
        if v.version != report.version || v.at.contains_key(&pos.index) {
            return;
        }
        tracing::debug!(job = %self.id, task = %pos, attempt, version = report.version, outputs = report.point.outputs, sent = ?report.point.sent, "upstream task switched");
        v.at.insert(pos.index, report.point);
        out.push(Action::Persist(self.run_state()));
        self.settle_switch(stage, out);
    }

    /// Confirms the switch of `stage` once every upstream point is durable.
    pub(super) fn settle_switch(&mut self, stage: u32, out: &mut Vec<Action>) {
        let upstream = tasks_of(&self.spec, stage - 1) as usize;
        let Some(v) = self.routing.get_mut(&stage).and_then(|r| r.pending_mut()) else {
            return;
        };
        if v.at.len() < upstream {
            return;
        }
        v.done = true;
        let (version, to) = (v.version, v.map.active().len() as u32);
        self.verdict(stage, version, true, out);
        self.publish_inbound(stage, None, out);
        self.rescaled(stage, to);
        out.push(Action::Scaling(ScaleNote {
            stage,
            version,
            from: 0,
            to,
            reason: String::new(),
            rate: None,
            phase: ScalePhase::Done,
        }));
        info!(job = %self.id, stage, version, tasks = to, "rescale done: every upstream task switched");
    }

    /// A switch ended either way: made durable, then every upstream attempt told the
    /// verdict; its timer cleared and the standby tasks told again.
    fn verdict(&self, stage: u32, version: u32, confirm: bool, out: &mut Vec<Action>) {
        out.push(Action::Persist(self.run_state()));
        for (pos, worker, attempt) in self.upstream_attempts(stage) {
            out.push(Action::Rerouted {
                worker,
                pos,
                attempt,
                version,
                confirm,
            });
        }
        out.push(Action::ClearTimer(Timer::Switch(stage)));
        out.push(self.standby_action());
    }

    /// Gives up the switch of `stage` in progress, if any: every upstream task routes what
    /// it held by the old map.
    pub(super) fn abort_switch(&mut self, stage: u32, why: &str, out: &mut Vec<Action>) {
        let Some(version) = self.routing.get_mut(&stage).and_then(|r| r.abort()) else {
            return;
        };
        warn!(job = %self.id, stage, version, %why, "rescale aborted");
        self.verdict(stage, version, false, out);
        let tasks = self.active_tasks(stage);
        self.rescaled(stage, tasks);
        out.push(Action::Scaling(ScaleNote {
            stage,
            version,
            from: 0,
            to: 0,
            reason: String::new(),
            rate: None,
            phase: ScalePhase::Aborted(why.to_string()),
        }));
    }

    /// A task gets a new attempt: a switch of the next stage in progress is aborted (its new
    /// attempt starts from the confirmed maps, and replays by the old map; so must every
    /// other).
    pub(super) fn restarting(&mut self, pos: TaskPos, out: &mut Vec<Action>) {
        let stage = pos.stage + 1;
        // Even a point already recorded: the new attempt starts from the confirmed maps only
        // and would never make this switch (seed 12921 hung on a tuple routed past it).
        let pending = self.routing.get(&stage).and_then(|r| r.pending()).is_some();
        if pending {
            self.abort_switch(stage, &format!("upstream task {pos} restarted"), out);
        }
    }

    /// Every switch in progress is aborted (a resumed job: its upstream tasks may hold
    /// outputs for a verdict the earlier leader never gave).
    pub(super) fn abort_all_switches(&mut self, why: &str, out: &mut Vec<Action>) {
        let stages: Vec<u32> = self.routing.keys().copied().collect();
        for stage in stages {
            self.abort_switch(stage, why, out);
        }
    }

    /// The verdicts a worker may have missed (it rejoined): the latest confirmed switch of
    /// every stage, for the upstream attempts it runs. A verdict repeated changes nothing.
    pub(super) fn resend_verdicts(&self, worker: &WorkerId, out: &mut Vec<Action>) {
        let stages: Vec<u32> = self.routing.keys().copied().collect();
        for stage in stages {
            self.publish_inbound(stage, Some(worker), out);
        }
        for (stage, r) in &self.routing {
            let verdicts = r
                .confirmed()
                .map(|v| (v.version, true))
                .into_iter()
                .chain(r.aborted.map(|v| (v, false)));
            for (version, confirm) in verdicts {
                for (pos, w, attempt) in self.upstream_attempts(*stage) {
                    if &w == worker {
                        out.push(Action::Rerouted {
                            worker: w,
                            pos,
                            attempt,
                            version,
                            confirm,
                        });
                    }
                }
            }
        }
    }

    /// An at-least-once restart replays everything from the source: every stage routes by
    /// its current map from the start.
    pub(super) fn restart_routing(&mut self, out: &mut Vec<Action>) {
        self.abort_all_switches("the pipeline restarted", out);
        for r in self.routing.values_mut() {
            *r = r.restarted();
        }
    }
}
