//! Rescaling a stage that keeps state under at-least-once when the stage does not autoscale
//! (a manual `rainstorm scale`): no input log holds a moved group's history, so the stage
//! takes its new map and the whole pipeline restarts from the source in a new epoch, as after
//! a crash (every key's state is rebuilt from its first tuple; the sink keeps what it
//! committed, so lines may repeat, none is lost). An autoscaled stage logs its input and
//! rebuilds moved groups live, as under exactly-once (`placement::rebuilds_from_history`).
//! The other rescales switch live (`rescale`, `switch`).

use super::event::{Action, Cluster, ScalePhase};
use super::job::JobCore;
use super::placement::rebuilds_from_history;
use super::rescale::ScaleRequest;
use super::routing::StageRouting;
use crate::model::groups::GroupMap;
use crate::model::spec::Delivery;
use tracing::info;

impl JobCore {
    /// Whether a rescale of `stage` restarts the pipeline: an executable that may keep state,
    /// under at-least-once in a stage that does not autoscale, keeps no log to rebuild a
    /// moved group's state from (a built-in hands its state over instead, `handover`).
    pub(super) fn by_restart(&self, stage: u32) -> bool {
        self.keeps_state(stage)
            && !self.hands_over(stage)
            && self.spec.delivery == Delivery::AtLeastOnce
            && !rebuilds_from_history(&self.spec, stage)
    }

    /// At-least-once, a stage that keeps state: the stage takes `map` and the whole pipeline
    /// restarts from the source in a new epoch, as after a crash (every key's state is
    /// rebuilt from its first tuple; the sink keeps what it committed, so lines may repeat,
    /// none is lost). Planned, so without the failure back-off.
    pub(super) fn restart_rescale(
        &mut self,
        req: &ScaleRequest,
        map: GroupMap,
        from: u32,
        cluster: &Cluster,
        out: &mut Vec<Action>,
    ) -> Result<(), String> {
        let version = self.routing_of(req.stage).next;
        let to = map.active().len() as u32;
        self.routing
            .insert(req.stage, StageRouting::starting(map, version));
        info!(job = %self.id, stage = req.stage, from, to, version, reason = %req.reason, "rescaling a stage that keeps state under at-least-once: restarting the pipeline from the source");
        let note = |phase| Action::Scaling(req.note(phase, from, to, version));
        out.push(note(ScalePhase::Started));
        if let Err(outcome) = self.restart_epoch(cluster, out, false) {
            return Err(format!("the pipeline could not restart: {outcome:?}"));
        }
        out.push(self.standby_action());
        out.push(note(ScalePhase::Done));
        Ok(())
    }
}
