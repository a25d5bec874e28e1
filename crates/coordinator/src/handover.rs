//! A stage whose built-in keeps state per key (`count-by`) moves a key group's state with the
//! group: the task that loses it exports the group's state once it has taken every tuple
//! routed to it by the old map, and the task that gains it loads that state before the
//! group's first tuple by the new map (`runtime::task::takeover::handover`). The handover
//! needs no log, so it works under every delivery mode.
//!
//! What the core adds is one rule: a stage is not rescaled again until every task that lost
//! groups with its current map has handed their state over. A gaining task waits for the
//! state it takes; a losing task never waits for anything of its own move. With two moves in
//! flight at once, a task could be the losing side of one and the waiting side of the other,
//! each waiting for the other (`docs/rescale.md` §3).

use super::job::JobCore;
use crate::model::groups::KEY_GROUPS;
use crate::model::ids::TaskPos;
use crate::model::spec::StageRole;
use crate::protocol::control::TaskState;
use std::collections::BTreeSet;

impl JobCore {
    /// Whether `stage`'s key groups move with their state by handover: a built-in that keeps
    /// state per key.
    pub(super) fn hands_over(&self, stage: u32) -> bool {
        match self.spec.role_of(stage) {
            StageRole::Operator(s) => s.operator.keyed_column().is_some(),
            _ => false,
        }
    }

    /// Why `stage` cannot be rescaled yet, if a task that lost key groups with its current
    /// map has not reported their state handed over (a finished task handed everything over
    /// before it finished).
    pub(super) fn handing_over(&self, stage: u32) -> Option<String> {
        if !self.hands_over(stage) {
            return None;
        }
        let routing = self.routing_of(stage);
        let i = routing.versions.iter().rposition(|v| v.done)?;
        let (before, now) = (
            &routing.versions.get(i.checked_sub(1)?)?.map,
            &routing.versions[i],
        );
        let losers: BTreeSet<u32> = (0..KEY_GROUPS)
            .filter(|g| before.owner(*g) != now.map.owner(*g))
            .map(|g| before.owner(g))
            .collect();
        for index in losers {
            let pos = TaskPos { stage, index };
            let finished = self
                .tasks
                .get(&pos)
                .is_some_and(|t| t.state == TaskState::Finished);
            if !finished && self.handed.get(&pos).copied().unwrap_or(0) < now.version {
                return Some(format!(
                    "task {pos} has not yet handed over the state of the key groups it lost with version {}",
                    now.version
                ));
            }
        }
        None
    }
}
