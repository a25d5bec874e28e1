//! A built-in's key-group state handed from the task that loses the groups to the task that
//! gains them (every delivery mode; `docs/rescale.md` §3).
//!
//! **The losing side.** Once the switch to map `i` is confirmed, this task knows, for every
//! upstream link, the last tuple routed to it by the old map (`StageRouting::bound`). When it
//! has fed every one of them (or the link ended), no tuple of the groups it loses will ever
//! reach it again, so their state is final: it takes them out of its operator and writes them
//! to its own log's folder in the store, named for the version ([`handover_path`]). Any
//! attempt that gets there writes the same state (the same tuples of each group, fed in each
//! link's order), so a restarted attempt writes it again harmlessly. It then reports the
//! version as handed over; the leader rescales the stage again only once every losing task
//! has (`coordinator::handover`), so this side never waits on anything of its own move.
//!
//! **The gaining side.** Before the first tuple of a gained group is fed, the task reads the
//! state of the groups it gained with map `w` from each task that lost them with `w`,
//! waiting until it is written, and loads it into its operator.
//!
//! **A losing task that finished first.** A task can take its last tuple and see every link
//! end before the leader's word of the switch reaches it. So a task that hands state over
//! writes, as it finishes, everything it still holds, with the newest map it knew
//! ([`final_path`]). A gaining task takes a group from that when the losing task knew it held
//! the group; if it did not know (it gained the group with a map it never heard of, so no
//! tuple of the group ever reached it), the group's state is what that earlier move handed
//! to it, and the gaining task looks there.
//!
//! The object is `GroupState` (`group_state.rs`): the format periodic snapshots of built-in
//! state will use.

use super::group_state::{final_path, handover_path, GroupState, FORMAT};
use super::Takeover;
use crate::model::groups::KEY_GROUPS;
use crate::model::ids::{TaskKey, TaskPos};
use crate::model::partition::group_of;
use crate::protocol::routing::StageRouting;
use crate::store::StoreError;
use crate::task::operator::{Operator, Stop};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tracing::info;

/// How often a gaining task looks again for state not written yet.
const POLL: Duration = Duration::from_millis(5);

/// Tries of a handover write or read that failed before the task fails.
const TRIES: u32 = 5;

/// At-most-once, how long a gaining task waits for state before it goes on without it: a
/// batch lost on a link (which at-most-once allows) can keep the losing task from ever
/// feeding its last old-map tuple, and the moved keys must not wait for the job's end.
const AT_MOST_ONCE_PATIENCE: Duration = Duration::from_secs(10);

/// What a gaining task found of a losing task's state.
enum Found {
    /// The groups it lost with the version asked for.
    Moved(GroupState),
    /// Everything it held when it finished, knowing maps up to this version.
    Final(GroupState),
}

/// The losing side's bookkeeping.
pub(super) struct Hand {
    /// Whether the operator hands state over (a built-in; an executable is rebuilt instead).
    on: bool,
    /// The epoch (at-least-once restarts the pipeline in new ones).
    epoch: u32,
    /// At-most-once: state that does not come is given up after a while.
    may_lose: bool,
    /// Per upstream link, the last tuple fed (relative to `floor`).
    fed: Vec<u64>,
    /// Upstream links that ended.
    ended: BTreeSet<u32>,
    /// The next map (index into the plan) with which this task loses groups and has not
    /// handed them over.
    owed: Option<usize>,
    /// Maps up to this index are handed over.
    done: usize,
}

impl Hand {
    pub(super) fn new(on: bool, epoch: u32, may_lose: bool) -> Hand {
        Hand {
            on,
            epoch,
            may_lose,
            fed: Vec::new(),
            ended: BTreeSet::new(),
            owed: None,
            done: 0,
        }
    }

    /// Where the epoch's sequence numbers start.
    pub(super) fn floor(&self) -> u64 {
        u64::from(self.epoch) << crate::dataplane::link::EPOCH_SHIFT
    }

    /// The plan grew: finds the next map with which task `me` loses groups.
    pub(super) fn plan_changed(&mut self, plan: &StageRouting, me: u32) {
        if !self.on {
            return;
        }
        let owner = |i: usize, g: usize| plan.versions[i].map.owner(g);
        self.owed = (self.done + 1..plan.versions.len())
            .find(|i| (0..KEY_GROUPS).any(|g| owner(i - 1, g) == me && owner(*i, g) != me));
    }

    /// Whether every tuple map `i` routed here by the maps before it was fed.
    fn passed(&self, plan: &StageRouting, i: usize, me: u32) -> bool {
        plan.versions[i].at.iter().all(|(u, point)| {
            let bound = StageRouting::bound(Some(point), me);
            self.ended.contains(u)
                || (bound != u64::MAX && self.fed.get(*u as usize).copied().unwrap_or(0) >= bound)
        })
    }
}

impl Takeover<'_> {
    /// After tuple `seq` of link `from` was fed: hands over what is now final.
    pub(in crate::task) async fn fed(
        &mut self,
        op: &mut Operator,
        from: u32,
        seq: u64,
    ) -> Result<(), Stop> {
        if !self.hand.on {
            return Ok(());
        }
        let seq = seq.saturating_sub(self.hand.floor());
        let i = from as usize;
        if self.hand.fed.len() <= i {
            self.hand.fed.resize(i + 1, 0);
        }
        self.hand.fed[i] = self.hand.fed[i].max(seq);
        if self.hand.owed.is_some() {
            self.hand_over(op).await?;
        }
        Ok(())
    }

    /// Link `from` ended: hands over what is now final.
    pub(in crate::task) async fn ended(
        &mut self,
        op: &mut Operator,
        from: u32,
    ) -> Result<(), Stop> {
        if self.hand.on && self.hand.ended.insert(from) {
            self.hand_over(op).await?;
        }
        Ok(())
    }

    /// Resolves when the leader told a newer routing (then call [`Takeover::refresh`], outside
    /// any race: a handover must not be dropped halfway).
    pub(in crate::task) async fn routing_changed(&mut self) {
        if !self.hand.on || self.routing.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Takes a newer routing and hands over what it made final (a task that took its last
    /// tuple of the moving groups before the switch was confirmed hears of it only here).
    /// Cheap when nothing changed: the receive loop calls it whenever its inbox runs dry.
    pub(in crate::task) async fn refresh(&mut self, op: &mut Operator) -> Result<(), Stop> {
        if !self.hand.on {
            return Ok(());
        }
        let newer = self
            .routing
            .borrow()
            .as_ref()
            .is_some_and(|r| r.versions.len() > self.plan.versions.len());
        if newer {
            self.take_routing();
        }
        if self.hand.owed.is_some() {
            self.hand_over(op).await?;
        }
        Ok(())
    }

    /// Hands over, in order, every loss whose old-map tuples were all fed.
    async fn hand_over(&mut self, op: &mut Operator) -> Result<(), Stop> {
        let me = self.key.pos.index;
        while let Some(i) = self.hand.owed {
            if !self.hand.passed(&self.plan, i, me) {
                return Ok(());
            }
            // What this task hands on includes every group it gained before.
            self.gains_upto(op, i - 1).await?;
            let groups: BTreeSet<usize> = (0..KEY_GROUPS)
                .filter(|g| self.owner(i - 1, *g) == me && self.owner(i, *g) != me)
                .collect();
            // What it emitted for the groups reaches the next stage before anything their
            // next owner emits: that one waits for this state.
            op.settle().await?;
            let Operator::Builtin(b, ..) = op else {
                return Err(Stop::Failed("only a built-in hands its state over".into()));
            };
            let version = self.plan.versions[i].version;
            let state = GroupState {
                format: FORMAT,
                version,
                from: me,
                groups: groups.iter().map(|g| *g as u32).collect(),
                counts: b.export(&groups),
            };
            self.write_state(&handover_path(&self.key, version), &state)
                .await?;
            // Dropped only once written: a write that fails fails the attempt, and a new one
            // rebuilds the state to hand over.
            if let Operator::Builtin(b, ..) = op {
                b.forget(&groups);
            }
            info!(task = %self.key, version, groups = groups.len(), entries = state.counts.len(), "handed key groups' state over");
            self.hand.done = i;
            self.status.handed.fetch_max(version, Ordering::Relaxed);
            self.hand.plan_changed(&self.plan, me);
        }
        Ok(())
    }

    /// Every input ended: takes over every gain not taken yet, then writes everything this
    /// task still holds, with the newest version it knew (see the module doc).
    pub(in crate::task) async fn finish(&mut self, op: &mut Operator) -> Result<(), Stop> {
        if !self.hand.on {
            return Ok(());
        }
        self.take_routing();
        self.hand_over(op).await?;
        self.gains_upto(op, self.plan.versions.len() - 1).await?;
        let Operator::Builtin(b, ..) = op else {
            return Err(Stop::Failed("only a built-in hands its state over".into()));
        };
        let all: BTreeSet<usize> = (0..KEY_GROUPS).collect();
        let state = GroupState {
            format: FORMAT,
            version: self.plan.versions.last().map_or(0, |v| v.version),
            from: self.key.pos.index,
            groups: Vec::new(),
            counts: b.export(&all),
        };
        self.write_state(&final_path(&self.key, self.hand.epoch), &state)
            .await
    }

    /// Writes `state` to `path`, trying a failed write again a few times.
    async fn write_state(&self, path: &str, state: &GroupState) -> Result<(), Stop> {
        let body = serde_json::to_vec(state)
            .map_err(|e| Stop::Failed(format!("encoding handed-over state: {e}")))?;
        let body = Bytes::from(body);
        let mut tries = 0;
        while let Err(e) = self.env.store.put(path, body.clone()).await {
            tries += 1;
            if tries >= TRIES {
                return Err(Stop::Failed(format!("handing state over to {path}: {e}")));
            }
            tracing::warn!(task = %self.key, %path, error = %e, "a handover write failed; trying again");
            tokio::time::sleep(POLL * 4 * tries).await;
        }
        Ok(())
    }

    /// Loads the state of every group this task gained with map `w` from the tasks that
    /// handed it over, waiting for each to be written.
    pub(super) async fn take_handed(&mut self, op: &mut Operator, w: usize) -> Result<(), Stop> {
        let started = tokio::time::Instant::now();
        let mut found: BTreeMap<(u32, usize), Found> = BTreeMap::new();
        let mut state: Vec<(String, u64)> = Vec::new();
        let mut groups = 0usize;
        for g in (0..KEY_GROUPS).filter(|g| self.gained(w, *g)) {
            groups += 1;
            let mut at = w;
            let counts = loop {
                let t = self.owner(at - 1, g);
                if let std::collections::btree_map::Entry::Vacant(e) = found.entry((t, at)) {
                    e.insert(self.read_handed(t, at).await?);
                }
                match &found[&(t, at)] {
                    Found::Moved(s) => break &s.counts,
                    Found::Final(s) => {
                        // The move with which `t` last gained the group before `at`.
                        let since = (1..at)
                            .rev()
                            .find(|x| self.owner(*x - 1, g) != t)
                            .unwrap_or(0);
                        if since == 0 || self.plan.versions[since].version <= s.version {
                            break &s.counts;
                        }
                        // `t` never heard of that move: it held what the move handed it.
                        at = since;
                    }
                }
            };
            state.extend(counts.iter().filter(|(k, _)| group_of(k) == g).cloned());
        }
        let Operator::Builtin(b, ..) = op else {
            return Err(Stop::Failed(
                "only a built-in takes handed-over state".into(),
            ));
        };
        let entries = state.len();
        b.import(state);
        let version = self.plan.versions[w].version;
        info!(task = %self.key, map = w, version, groups, entries, ms = started.elapsed().as_millis() as u64, "took key groups over with the state handed over");
        Ok(())
    }

    /// What task `t` handed over of the groups it lost with map `at`, or everything it held
    /// when it finished if it finished first; waits until either is written.
    async fn read_handed(&self, t: u32, at: usize) -> Result<Found, Stop> {
        let owner = TaskKey {
            job: self.key.job.clone(),
            pos: TaskPos {
                stage: self.key.pos.stage,
                index: t,
            },
        };
        let version = self.plan.versions[at].version;
        let moved = handover_path(&owner, version);
        let last = final_path(&owner, self.hand.epoch);
        let since = tokio::time::Instant::now();
        // The move's state, checked to be the one asked for.
        let checked = |s: GroupState| {
            if s.version != version || s.from != t {
                return Err(Stop::Failed(format!(
                    "{moved} holds version {} from task {}, not version {version} from task {t}",
                    s.version, s.from
                )));
            }
            Ok(Found::Moved(s))
        };
        loop {
            if let Some(s) = self.read_state(&moved).await? {
                return checked(s);
            }
            if let Some(s) = self.read_state(&last).await? {
                // A task writes its move's state before its final state: one that handed the
                // groups over and then finished may have written both between the two reads
                // above, and its final state no longer holds them (a running count started
                // again from 1 in a real-process run). Look at the move's state again before
                // trusting the final one.
                if let Some(m) = self.read_state(&moved).await? {
                    return checked(m);
                }
                return Ok(Found::Final(s));
            }
            if self.hand.may_lose && since.elapsed() >= AT_MOST_ONCE_PATIENCE {
                tracing::warn!(task = %self.key, from = t, version, "at-most-once: the state of key groups this task gained did not come; their counts start again");
                let none = GroupState {
                    format: FORMAT,
                    version,
                    from: t,
                    groups: Vec::new(),
                    counts: Vec::new(),
                };
                return Ok(Found::Moved(none));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The state at `path`, if written; a failed read is tried again a few times.
    async fn read_state(&self, path: &str) -> Result<Option<GroupState>, Stop> {
        let mut tries = 0;
        loop {
            match self.env.store.get(path).await {
                Ok(data) => {
                    let s: GroupState = serde_json::from_slice(&data)
                        .map_err(|e| Stop::Failed(format!("reading {path}: {e}")))?;
                    if s.format != FORMAT {
                        return Err(Stop::Failed(format!(
                            "{path} holds state format {}, not {FORMAT}",
                            s.format
                        )));
                    }
                    return Ok(Some(s));
                }
                Err(StoreError::NotFound(_)) => return Ok(None),
                Err(e) => {
                    tries += 1;
                    if tries >= TRIES {
                        return Err(Stop::Failed(format!(
                            "reading handed-over state {path}: {e}"
                        )));
                    }
                    tracing::warn!(task = %self.key, %path, error = %e, "a handover read failed; trying again");
                    tokio::time::sleep(POLL * 4 * tries).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
