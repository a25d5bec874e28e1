//! Taking key groups over with their state, in a stage whose operator keeps state per key.
//! When a rescale gives this task a key group, the group's earlier tuples were processed by
//! other tasks. Before the first tuple of the group routed here by the new map is fed, this
//! task takes the group's state:
//!
//! - A built-in loads it from the task that lost the group, which handed it over once it had
//!   taken every tuple routed to it by the old map ([`handover`]; every delivery mode).
//! - An executable (exactly-once, or an at-least-once stage that autoscales and logs its
//!   input for this) is restarted with its state rebuilt: it is fed, with the
//!   outputs dropped (they were emitted already, by the group's earlier owners), every tuple
//!   of the group those owners took — read from their input logs, or for the first stage from
//!   the source file — in the order each owner took them.
//!
//! The owners and the tuples' bounds on every link come from the stage's routing
//! (`protocol::routing`), which the leader tells the task.
//!
//! A tuple's map is known from where it sits on its link: past the point its upstream task
//! switched to a map, it was routed by that map. A tuple of a group this task does not own by
//! the newest map it knows was routed by a newer one: it waits for the leader's word. The
//! rebuild happens at the same place in the task's input whether it runs live or replays its
//! log, so a restarted task rebuilds the same state.

mod feed;
mod group_state;
mod handover;
mod history;
pub(super) use feed::{feed, routing_changed};

use super::operator::{Operator, Stop};
use super::rebuild::{own_input, Piece, Rebuilding};
use super::TaskEnv;
use crate::model::groups::KEY_GROUPS;
use crate::model::ids::TaskKey;
use crate::model::partition::Partitioner;
use crate::model::spec::PathMode;
use crate::model::tuple::Tuple;
use crate::protocol::control::{SourceReplay, TaskState};
use crate::protocol::routing::{Inbound, StageRouting};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::sync::watch;
use tracing::info;

/// How often a rebuild looks again at an owner's log that has not caught up yet.
const LOG_POLL: Duration = Duration::from_millis(20);

/// One stretch of a group's history: owner `t` held it from map `a` up to map `b`.
type Stretch = (u32, usize, usize);

/// See the module doc.
pub(super) struct Takeover<'a> {
    env: &'a TaskEnv,
    key: TaskKey,
    partitioner: Partitioner,
    routing: watch::Receiver<Option<StageRouting>>,
    plan: StageRouting,
    /// Map indices whose gained groups this task has rebuilt.
    rebuilt: BTreeSet<usize>,
    /// The first stage's input log: the source file.
    source: Option<(PathMode, &'a SourceReplay)>,
    /// This attempt (an executable reads its own log back).
    attempt: u32,
    /// Tuples of this task's own input fed so far.
    own: u64,
    /// What an executable's process was fed so far, up to `own`'s last mark (`rebuild`).
    fed: Vec<Piece>,
    /// The attempt's status: a running task reports itself starting while it rebuilds.
    status: &'a super::TaskStatus,
    /// What a built-in hands over when it loses key groups ([`handover`]).
    hand: handover::Hand,
}

impl<'a> Takeover<'a> {
    /// The takeover of a task whose stage keeps state (`inbound`), told of later switches on
    /// `routing`.
    /// `epoch` is the job's (at-least-once restarts the pipeline in new epochs; sequence
    /// numbers start above each); `builtin` whether the operator hands its state over, and
    /// `may_lose` whether the job is at-most-once (a handover that never comes is given up).
    pub(super) fn new(
        env: &'a TaskEnv,
        key: TaskKey,
        (inbound, attempt, epoch): (&Inbound, u32, u32),
        status: &'a super::TaskStatus,
        source: Option<(PathMode, &'a SourceReplay)>,
        (builtin, may_lose): (bool, bool),
    ) -> Takeover<'a> {
        let mut t = Takeover {
            env,
            key,
            partitioner: Partitioner::new(inbound.partition.clone(), 1),
            plan: inbound.routing.clone(),
            routing: status.inbound.subscribe(),
            status,
            rebuilt: BTreeSet::new(),
            source,
            attempt,
            own: 0,
            fed: Vec::new(),
            hand: handover::Hand::new(builtin, epoch, may_lose),
        };
        t.hand.plan_changed(&t.plan, t.key.pos.index);
        t
    }

    /// Before `t` (tuple `seq` of the link from upstream task `from`) is fed: makes sure this
    /// task holds the state of its key group.
    pub(super) async fn before(
        &mut self,
        op: &mut Operator,
        from: u32,
        seq: u64,
        t: &Tuple,
    ) -> Result<(), Stop> {
        let g = self.partitioner.group(t);
        let me = self.key.pos.index;
        let seq = seq.saturating_sub(self.hand.floor());
        let mut look = self.routing.has_changed().unwrap_or(false);
        loop {
            if look {
                self.take_routing();
            }
            let v = self.map_of(from, seq);
            if self.owner(v, g) == me {
                if let Some(w) = (1..=v).rev().find(|w| self.gained(*w, g)) {
                    self.gains_upto(op, w).await?;
                }
                self.own += 1;
                return Ok(());
            }
            // Routed here by a map this task has not been told of: wait for it.
            tracing::debug!(task = %self.key, from, seq, group = g, "waiting for the stage's routing");
            look = true;
            if self.routing.changed().await.is_err() {
                return Err(Stop::Failed(
                    "a tuple of a key group this task does not own arrived, and no routing will come"
                        .into(),
                ));
            }
        }
    }

    /// Takes the routing the leader last told, if it is newer than the plan.
    fn take_routing(&mut self) {
        if let Some(r) = self.routing.borrow_and_update().clone() {
            if r.versions.len() > self.plan.versions.len() {
                self.plan = r;
                self.hand.plan_changed(&self.plan, self.key.pos.index);
            }
        }
    }

    /// Takes over the state of every group gained with maps `1..=w` not taken yet. A
    /// rebuild adds a group's history since this task last held it, and a handover hands on
    /// what this task holds, so every earlier gain must be taken first (one no tuple has
    /// asked for yet).
    async fn gains_upto(&mut self, op: &mut Operator, w: usize) -> Result<(), Stop> {
        for earlier in 1..=w {
            let any = (0..KEY_GROUPS).any(|g| self.gained(earlier, g));
            if self.rebuilt.insert(earlier) && any {
                self.rebuild(op, earlier).await?;
            }
        }
        Ok(())
    }

    /// The index of the map tuple `seq` of the link from `from` was routed by.
    fn map_of(&self, from: u32, seq: u64) -> usize {
        let me = self.key.pos.index;
        (1..self.plan.versions.len())
            .rev()
            .find(|i| seq > StageRouting::bound(self.plan.versions[*i].at.get(&from), me))
            .unwrap_or(0)
    }

    fn owner(&self, v: usize, g: usize) -> u32 {
        self.plan
            .versions
            .get(v)
            .map_or(u32::MAX, |x| x.map.owner(g))
    }

    /// Whether this task gained group `g` with map `w`.
    fn gained(&self, w: usize, g: usize) -> bool {
        let me = self.key.pos.index;
        w > 0 && self.owner(w, g) == me && self.owner(w - 1, g) != me
    }

    /// Rebuilds the state of every group this task gained with map `w`. A built-in takes the
    /// groups' history into its state; an executable is restarted and fed everything its
    /// process was fed so far, then that history (`rebuild`, `exec::history`).
    async fn rebuild(&mut self, op: &mut Operator, w: usize) -> Result<(), Stop> {
        // Recovering, as after a restart: no stall is seen, and the autoscaler waits.
        let running = self.status.state() == TaskState::Running;
        if running {
            self.status.set_state(TaskState::Starting);
        }
        let rebuilt = self.rebuild_now(op, w).await;
        if running && rebuilt.is_ok() {
            self.status.set_state(TaskState::Running);
        }
        rebuilt
    }

    /// See [`rebuild`](Self::rebuild).
    async fn rebuild_now(&mut self, op: &mut Operator, w: usize) -> Result<(), Stop> {
        // A standby position's process starts now, to be restarted with the history.
        let Operator::Exec(x) = op.started()? else {
            return self.take_handed(op, w).await;
        };
        let started = tokio::time::Instant::now();
        let tally = x.begin_history().await?;
        let mut to = Rebuilding(x, tally);
        // The process was fed, in order, what `fed` records, then its own input since.
        let mark = self.fed.iter().rev().find_map(|p| match p {
            Piece::Own(_, hi) => Some(*hi),
            Piece::Gain(_) => None,
        });
        let mark = mark.unwrap_or(0);
        self.fed.push(Piece::Own(mark, self.own));
        self.fed.push(Piece::Gain(w));
        for piece in self.fed.clone() {
            match piece {
                Piece::Own(lo, hi) => {
                    own_input(
                        self.env,
                        (&self.key, self.attempt),
                        self.source,
                        (&self.plan, &self.partitioner),
                        (lo, hi),
                        &mut to,
                    )
                    .await?
                }
                Piece::Gain(g) => self.gain_history(&mut to, g).await?,
            }
        }
        to.end().await?;
        info!(task = %self.key, map = w, own = self.own, ms = started.elapsed().as_millis() as u64, "restarted the operator with the state of the key groups it gained");
        Ok(())
    }

    /// Feeds `to` the history of every group this task gained with map `w`: each group's
    /// history since this task last held it, stretch by stretch.
    async fn gain_history(&mut self, to: &mut Rebuilding<'_>, w: usize) -> Result<(), Stop> {
        let me = self.key.pos.index;
        let mut by_history: BTreeMap<Vec<Stretch>, BTreeSet<usize>> = BTreeMap::new();
        for g in (0..KEY_GROUPS).filter(|g| self.gained(w, *g)) {
            let mut stretches: Vec<Stretch> = Vec::new();
            let mut b = w;
            while b > 0 && self.owner(b - 1, g) != me {
                let t = self.owner(b - 1, g);
                let mut a = b - 1;
                while a > 0 && self.owner(a - 1, g) == t {
                    a -= 1;
                }
                stretches.push((t, a, b));
                b = a;
            }
            stretches.reverse();
            by_history.entry(stretches).or_default().insert(g);
        }
        let started = tokio::time::Instant::now();
        let mut fed = 0u64;
        for (stretches, groups) in &by_history {
            for &(t, a, b) in stretches {
                fed += match self.source {
                    Some((paths, r)) => self.replay_source(to, (a, b), groups, paths, r).await?,
                    None => self.replay_log(to, t, (a, b), groups).await?,
                };
            }
        }
        let groups: usize = by_history.values().map(BTreeSet::len).sum();
        info!(task = %self.key, map = w, groups, tuples = fed, ms = started.elapsed().as_millis() as u64, "took key groups over with their state");
        Ok(())
    }

    fn partitioner_kind(&self) -> crate::model::partition::Partition {
        self.partitioner.partition().clone()
    }
}
