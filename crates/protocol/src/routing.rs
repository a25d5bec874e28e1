//! The routing of a rescaled stage, as the coordinator keeps it durable and tells the stage's
//! tasks: every key-group map the stage had, in order, and where each upstream task switched
//! to it. From it come the routing history an upstream attempt starts with
//! ([`StageRouting::steps_of`]), the tasks that hold a slot ([`StageRouting::active`]), the
//! map a new rescale starts from, and, for a task that gains a key group, whose input held the
//! group before and up to which tuple of each link ([`StageRouting::bound`]).

use crate::model::groups::{GroupMap, RouteStep};
use crate::reroute::SwitchPoint;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// An upstream task that switched at this point never routes by the new map: it had ended
/// its stream (finished) before the switch, so every output it made went by the old one.
pub const NEVER: u64 = u64::MAX;

/// What a task of a stage whose key groups keep state needs to take groups over: how its
/// input is grouped, and the stage's maps and switch points (confirmed ones only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inbound {
    /// How the stage's input picks its key group.
    pub partition: crate::model::partition::Partition,
    /// The stage's routing.
    pub routing: StageRouting,
}

/// The maps of one stage that was rescaled at least once.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRouting {
    /// Every map, oldest first. The first is in force from every upstream task's start; a
    /// later one from its switch points. Only the last may be in progress.
    pub versions: Vec<RouteVersion>,
    /// The next version number (an aborted switch's number is never used again, so a late
    /// report of it cannot count for another).
    #[serde(default)]
    pub next: u32,
    /// The last switch given up: repeated to an upstream task whose worker rejoins, which may
    /// have missed the verdict.
    #[serde(default)]
    pub aborted: Option<u32>,
}

/// One key-group map of a stage and how far its switch got.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteVersion {
    /// Its number (increasing; an aborted switch's number is never used again).
    pub version: u32,
    /// Which task owns each group.
    pub map: GroupMap,
    /// Where each upstream task (by index) switched to it; empty for the first map. Written
    /// as a list of pairs: inside a tagged command, serde cannot read integer map keys back.
    #[serde(with = "pairs")]
    pub at: BTreeMap<u32, SwitchPoint>,
    /// Every upstream task switched and the switch is confirmed.
    pub done: bool,
}

impl StageRouting {
    /// A stage's routing starting from `map`, numbered `version`.
    pub fn starting(map: GroupMap, version: u32) -> StageRouting {
        StageRouting {
            versions: vec![RouteVersion {
                version,
                map,
                at: BTreeMap::new(),
                done: true,
            }],
            next: version + 1,
            aborted: None,
        }
    }

    /// Starts a switch to `map`; its version.
    pub fn begin(&mut self, map: GroupMap) -> u32 {
        let version = self
            .next
            .max(self.versions.last().map_or(0, |v| v.version + 1));
        self.next = version + 1;
        self.versions.push(RouteVersion {
            version,
            map,
            at: BTreeMap::new(),
            done: false,
        });
        version
    }

    /// The map of the last confirmed switch (or the first map).
    pub fn current(&self) -> Option<&RouteVersion> {
        self.versions.iter().rev().find(|v| v.done)
    }

    /// The switch in progress.
    pub fn pending(&self) -> Option<&RouteVersion> {
        self.versions.last().filter(|v| !v.done)
    }

    /// The switch in progress, to record points in.
    pub fn pending_mut(&mut self) -> Option<&mut RouteVersion> {
        self.versions.last_mut().filter(|v| !v.done)
    }

    /// Tasks that own a group now, or will once the switch in progress is done, or still do
    /// until it is: they hold a slot.
    pub fn active(&self) -> BTreeSet<u32> {
        let mut a = BTreeSet::new();
        if let Some(v) = self.current() {
            a.extend(v.map.active());
        }
        if let Some(v) = self.pending() {
            a.extend(v.map.active());
        }
        a
    }

    /// The routing history of upstream task `index`: the first map from its start, then each
    /// confirmed one from where it switched.
    pub fn steps_of(&self, index: u32) -> Vec<RouteStep> {
        let mut steps = Vec::new();
        for (i, v) in self.versions.iter().enumerate().filter(|(_, v)| v.done) {
            let from = if i == 0 {
                0
            } else {
                match v.at.get(&index) {
                    Some(p) => p.outputs,
                    None => NEVER,
                }
            };
            if from != NEVER {
                steps.push(RouteStep {
                    from,
                    map: v.map.clone(),
                });
            }
        }
        steps
    }

    /// Gives up the switch in progress; its number.
    pub fn abort(&mut self) -> Option<u32> {
        if self.pending().is_some() {
            self.aborted = self.versions.pop().map(|v| v.version);
            return self.aborted;
        }
        None
    }

    fn with_next(mut self, next: u32) -> StageRouting {
        self.next = self.next.max(next);
        self
    }

    /// How many tuples upstream task `from` had sent downstream task `to` when it switched
    /// at `point` (the first map: none; a task that ended before the switch: all of them).
    pub fn bound(point: Option<&SwitchPoint>, to: u32) -> u64 {
        match point {
            None => 0,
            Some(p) if p.outputs == NEVER => u64::MAX,
            Some(p) => p.sent.get(to as usize).copied().unwrap_or(0),
        }
    }

    /// The latest confirmed switch that moved anything (none: never rescaled).
    pub fn confirmed(&self) -> Option<&RouteVersion> {
        self.current().filter(|v| !v.at.is_empty())
    }

    /// The routing of a new epoch: the current map from every task's start (an at-least-once
    /// restart replays the whole pipeline from the source).
    pub fn restarted(&self) -> StageRouting {
        match self.current() {
            Some(v) => StageRouting::starting(v.map.clone(), v.version),
            None => self.clone(),
        }
        .with_next(self.next)
    }
}

/// A map with integer keys as a list of `[key, value]` pairs.
mod pairs {
    use super::SwitchPoint;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<u32, SwitchPoint>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        m.iter().collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<u32, SwitchPoint>, D::Error> {
        Ok(Vec::<(u32, SwitchPoint)>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_task_follows_the_switches_it_made() {
        let mut r = StageRouting::starting(GroupMap::even(1), 0);
        let two = GroupMap::even(1).rescaled(&(0..2).collect());
        let point = |outputs| SwitchPoint {
            outputs,
            sent: vec![],
        };
        assert_eq!(r.begin(two.clone()), 1);
        if let Some(v) = r.pending_mut() {
            v.at = [(0, point(7)), (1, point(NEVER))].into_iter().collect();
            v.done = true;
        }
        assert_eq!(r.steps_of(0).len(), 2);
        assert_eq!(r.steps_of(0)[1].from, 7);
        assert_eq!(r.steps_of(1).len(), 1, "a finished task never switched");
        assert_eq!(r.active(), [0, 1].into_iter().collect());
        assert_eq!(r.begin(GroupMap::even(1)), 2);
        assert_eq!(
            r.active(),
            [0, 1].into_iter().collect(),
            "until the switch is done"
        );
        assert_eq!(
            r.steps_of(0).len(),
            2,
            "a switch in progress is in nobody's history"
        );
        assert_eq!(r.abort(), Some(2));
        assert_eq!(
            r.begin(GroupMap::even(1)),
            3,
            "an aborted number is not used again"
        );
        r.abort();
        assert_eq!(
            r.restarted().steps_of(0),
            vec![RouteStep { from: 0, map: two }]
        );
    }
}
