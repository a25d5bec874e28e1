//! Key groups: the unit a rescale moves. A tuple's key hashes into one of [`KEY_GROUPS`]
//! groups, and a stage's [`GroupMap`] says which task owns each group. A stage has a fixed
//! number of task positions (its `max_tasks` when autoscaled); the tasks that own no group
//! stand by. Rescaling a stage changes its map; each upstream task switches maps at an output
//! number of its own ([`RouteStep`]), recorded before any output is routed by the new map,
//! so a replay routes every output exactly as it was routed the first time.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Groups per stage. A power of two well above any stage's task count, so groups spread
/// evenly and a move takes a small share of the keys.
pub const KEY_GROUPS: usize = 128;

/// Which task owns each key group of a stage (indexed by group).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMap(pub Vec<u32>);

impl GroupMap {
    /// `n` tasks (0..n), groups dealt round robin.
    pub fn even(n: u32) -> GroupMap {
        let n = n.max(1);
        GroupMap((0..KEY_GROUPS as u32).map(|g| g % n).collect())
    }

    /// The task that owns group `g`.
    pub fn owner(&self, g: usize) -> u32 {
        self.0.get(g).copied().unwrap_or(0)
    }

    /// The tasks that own at least one group.
    pub fn active(&self) -> BTreeSet<u32> {
        self.0.iter().copied().collect()
    }

    /// Groups whose owner differs in `other`.
    pub fn moved(&self, other: &GroupMap) -> Vec<usize> {
        (0..KEY_GROUPS)
            .filter(|g| self.owner(*g) != other.owner(*g))
            .collect()
    }

    /// The map with exactly the tasks `to` active, moving as few groups as it can: each task
    /// that stays keeps up to its fair share of its groups, and the rest (and every group of
    /// a task that leaves) go, lowest group first, to the tasks below their share, lowest
    /// task first. Deterministic, so a decision made twice gives one map.
    pub fn rescaled(&self, to: &BTreeSet<u32>) -> GroupMap {
        let tasks: Vec<u32> = to.iter().copied().collect();
        if tasks.is_empty() {
            return self.clone();
        }
        let n = tasks.len();
        // Fair shares: the first KEY_GROUPS % n tasks take one more.
        let share = |i: usize| KEY_GROUPS / n + usize::from(i < KEY_GROUPS % n);
        let mut kept = vec![0usize; n];
        let mut out: Vec<Option<u32>> = vec![None; KEY_GROUPS];
        for (g, slot) in out.iter_mut().enumerate() {
            if let Some(i) = tasks.iter().position(|t| *t == self.owner(g)) {
                if kept[i] < share(i) {
                    kept[i] += 1;
                    *slot = Some(tasks[i]);
                }
            }
        }
        let mut i = 0;
        for slot in out.iter_mut().filter(|s| s.is_none()) {
            while kept[i] >= share(i) {
                i += 1;
            }
            kept[i] += 1;
            *slot = Some(tasks[i]);
        }
        GroupMap(out.into_iter().map(|t| t.unwrap_or(0)).collect())
    }
}

/// From which output on an upstream task routes by a map: outputs numbered above `from`
/// (1-based, in the order the task emitted them) go by `map`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteStep {
    /// Outputs routed before this step took effect.
    pub from: u64,
    /// The map from then on.
    pub map: GroupMap,
}

/// The map in force for output number `n` (1-based) of a task whose routing history is
/// `steps` (ordered by `from`; empty: `even(tasks)`).
pub fn map_for(steps: &[RouteStep], n: u64, tasks: u32) -> std::borrow::Cow<'_, GroupMap> {
    match steps.iter().rev().find(|s| s.from < n) {
        Some(s) => std::borrow::Cow::Borrowed(&s.map),
        None => std::borrow::Cow::Owned(GroupMap::even(tasks)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(m: &GroupMap, n: u32) -> Vec<usize> {
        (0..n)
            .map(|t| m.0.iter().filter(|o| **o == t).count())
            .collect()
    }

    #[test]
    fn growing_moves_only_what_the_new_tasks_take() {
        let two = GroupMap::even(2);
        let four = two.rescaled(&(0..4).collect());
        assert_eq!(counts(&four, 4), vec![32, 32, 32, 32]);
        // Only the groups the two new tasks took moved.
        assert_eq!(two.moved(&four).len(), 64);
        assert!(two.moved(&four).iter().all(|g| four.owner(*g) >= 2));
    }

    #[test]
    fn shrinking_hands_the_leavers_groups_to_the_stayers() {
        let three = GroupMap::even(3);
        let two = three.rescaled(&[0, 1].into_iter().collect());
        assert_eq!(counts(&two, 3), vec![64, 64, 0]);
        assert!(three
            .moved(&two)
            .iter()
            .all(|g| three.owner(*g) == 2 || two.owner(*g) != three.owner(*g)));
        assert_eq!(two.active(), [0, 1].into_iter().collect());
        // A map of the same tasks is unchanged.
        assert_eq!(two.rescaled(&two.active()), two);
    }

    #[test]
    fn the_map_for_an_output_follows_its_steps() {
        let steps = vec![
            RouteStep {
                from: 0,
                map: GroupMap::even(1),
            },
            RouteStep {
                from: 10,
                map: GroupMap::even(2),
            },
        ];
        assert_eq!(*map_for(&steps, 10, 1), GroupMap::even(1));
        assert_eq!(*map_for(&steps, 11, 1), GroupMap::even(2));
        assert_eq!(*map_for(&[], 5, 3), GroupMap::even(3));
    }
}
