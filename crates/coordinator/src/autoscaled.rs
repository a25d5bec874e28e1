//! A job's autoscaler at work: the loads the leader measures come in every second, the
//! [`Scaler`](super::autoscale::Scaler) decides, and each decision becomes a rescale like
//! one a user asks for. A rescale that cannot start now (a restarted upstream task, no free
//! slot) starts the stage's cooldown, so the same refusal is not repeated every second, and
//! is listed once until its cause changes.

use super::autoscale::StageLoad;
use super::event::{Action, Cluster, ScaleNote, ScalePhase};
use super::job::JobCore;
use super::rescale::ScaleRequest;
use crate::model::ids::TaskPos;
use crate::model::partition::tasks_of;
use tracing::info;

impl JobCore {
    /// The stages' loads at `now_ms` (ms since the Unix epoch, the leader's clock).
    pub(super) fn loads(
        &mut self,
        now_ms: u64,
        mut loads: Vec<StageLoad>,
        cluster: &Cluster,
        out: &mut Vec<Action>,
    ) {
        self.now_ms = now_ms;
        if !self.placed || self.sink_done {
            return;
        }
        for l in &mut loads {
            l.tasks = self.active_tasks(l.stage);
            let r = self.routing_of(l.stage);
            let waiting = (l.stage - 1..=l.stage).any(|s| {
                (0..tasks_of(&self.spec, s))
                    .any(|index| self.unplaced.contains(&TaskPos { stage: s, index }))
            });
            let handing = self.handing_over(l.stage).is_some();
            l.settling |= r.pending().is_some() || waiting || handing;
        }
        let (free, _) = super::capacity::Room::of(self, cluster, false).free();
        let decisions = self.scaler.decide(now_ms, &loads, free.unwrap_or(u32::MAX));
        // A grow held to nothing is listed once, like a refusal, until its cause changes (a
        // stage at its limit said nothing of why it did not grow; hostile probe 18).
        for h in self.scaler.take_held() {
            let bound = h
                .reason
                .split("; limited by ")
                .find(|b| b.starts_with("free slots"));
            let why = format!("held by {}", bound.unwrap_or("free slots"));
            self.note_refused(h.stage, h.from, h.to, h.reason, Some(h.rate), why, out);
        }
        for d in decisions {
            let req = ScaleRequest {
                stage: d.stage,
                tasks: d.to,
                reason: d.reason,
                rate: Some(d.rate),
            };
            info!(job = %self.id, stage = d.stage, from = d.from, to = d.to, rate = d.rate, reason = %req.reason, "autoscaler decided");
            if let Err(why) = self.try_scale(&req, cluster, out) {
                self.scaler.applied(now_ms, d.stage, d.from);
                self.note_refused(d.stage, d.from, d.to, req.reason, req.rate, why, out);
            } else {
                self.refused.remove(&d.stage);
            }
        }
    }

    /// Lists a rescale of `stage` the autoscaler wanted and could not make, once until its
    /// cause `why` changes.
    #[allow(clippy::too_many_arguments)]
    fn note_refused(
        &mut self,
        stage: u32,
        from: u32,
        to: u32,
        reason: String,
        rate: Option<f64>,
        why: String,
        out: &mut Vec<Action>,
    ) {
        if self.refused.get(&stage) == Some(&why) {
            return;
        }
        self.refused.insert(stage, why.clone());
        info!(job = %self.id, stage, %why, "autoscaler's rescale refused");
        out.push(Action::Scaling(ScaleNote {
            stage,
            version: 0,
            from,
            to,
            reason,
            rate,
            phase: ScalePhase::Refused(why),
        }));
    }

    /// A rescale of `stage` ended with `tasks` tasks owning key groups: its cooldown starts.
    pub(super) fn rescaled(&mut self, stage: u32, tasks: u32) {
        self.scaler.applied(self.now_ms, stage, tasks);
    }
}
