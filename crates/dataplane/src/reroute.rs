//! The switchboard of one task attempt's outputs: which downstream task owns each key group,
//! from which output on, and a switch to a new map in progress. The router asks it where each
//! output goes; the worker's command handler asks it to switch (`reroute`) and then tells it
//! the leader's verdict (`decide`). One lock orders both, so the point a switch is recorded at
//! is exact: no output is routed between reading the counters and holding back what moves.
//!
//! The protocol is in `protocol::reroute` and `docs/rescale.md`.

use crate::model::groups::{map_for, GroupMap, RouteStep};
use crate::protocol::reroute::{PendingRoute, SwitchPoint, SwitchReport};
use std::sync::{Mutex, MutexGuard};
use tokio::sync::watch;

/// Where an output goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// To this downstream task.
    To(usize),
    /// Nowhere yet: its group moves in a switch the leader has not decided. The router holds
    /// it and routes it once the switch is decided.
    Hold,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    Waiting,
    Confirmed,
    Aborted,
}

struct Pending {
    route: PendingRoute,
    point: SwitchPoint,
    decision: Decision,
    /// Tasks that gain a group in this switch: every output for them waits, so each link
    /// still carries its outputs in output order (as a replay will send them).
    gainers: Vec<bool>,
    /// Tasks that lose a group and one of whose outputs (of a moving group) waits: every
    /// later output for them waits too. Should the switch be aborted, the held outputs go
    /// to them after all, and a replay (which routes by the old map) sends each link's
    /// outputs in output order; so no later output may overtake a held one on that link.
    blocked: Vec<bool>,
}

struct Board {
    /// The maps in force and from which output (this attempt's history, then its switches).
    steps: Vec<RouteStep>,
    /// How many of `steps` are in force.
    applied: usize,
    cur: GroupMap,
    routed: u64,
    sent: Vec<u64>,
    pending: Option<Pending>,
    last: Option<SwitchReport>,
    /// The newest switch aborted before it was asked for here (its verdict overtook it): it
    /// is never made.
    aborted: u32,
    /// A restarted attempt: what its predecessors routed is not known here, so a switch waits
    /// until it has routed, on every link, as far as the receiver got before it took this
    /// attempt's connection (`floors`).
    restarted: bool,
    /// Per link: how far the receiver got (unknown until it said).
    floors: Vec<Option<u64>>,
    /// A switch asked for before this attempt caught up with its predecessors, or while the
    /// router still held outputs of the previous switch.
    deferred: Option<PendingRoute>,
    /// Outputs the router holds, not yet routed: a new switch's point is taken only once
    /// they are (its counts of tuples sent per link must include them).
    held: u64,
    /// A restarted source: how many outputs its predecessors may have routed (their reach,
    /// `store::reach`), which a switch waits to pass; `None` until it is read.
    reach: Option<Option<u64>>,
}

impl Board {
    /// Whether a switch's point can be taken now: no output of the previous switch is still
    /// held, and every output any earlier attempt may have routed was routed here too (on
    /// each link, at least as far as the receiver got before it took this attempt's
    /// connection).
    fn caught_up(&self) -> bool {
        let floors = || {
            self.floors
                .iter()
                .zip(&self.sent)
                .all(|(f, s)| f.is_some_and(|f| *s >= f))
        };
        let reach = match self.reach {
            None => true,
            Some(r) => r.is_some_and(|r| self.routed >= r),
        };
        self.held == 0 && (!self.restarted || floors()) && reach
    }

    /// Makes the switch `route` at the point reached now.
    fn switch(&mut self, route: PendingRoute) -> SwitchReport {
        let point = SwitchPoint {
            outputs: self.routed,
            sent: self.sent.clone(),
        };
        let report = SwitchReport {
            version: route.version,
            point: point.clone(),
        };
        let mut gainers = vec![false; self.sent.len()];
        for g in self.cur.moved(&route.map) {
            if let Some(x) = gainers.get_mut(route.map.owner(g) as usize) {
                *x = true;
            }
        }
        let blocked = vec![false; gainers.len()];
        self.pending = Some(Pending {
            route,
            point,
            decision: Decision::Waiting,
            gainers,
            blocked,
        });
        self.last = Some(report.clone());
        report
    }

    /// Makes a deferred switch once this attempt has caught up.
    fn catch_up(&mut self) {
        if self.deferred.is_some() && self.pending.is_none() && self.caught_up() {
            if let Some(route) = self.deferred.take() {
                self.switch(route);
            }
        }
    }

    /// Puts in force every step that starts at or before output `n`.
    fn advance(&mut self, n: u64) {
        while let Some(s) = self.steps.get(self.applied).filter(|s| s.from < n) {
            self.cur = s.map.clone();
            self.applied += 1;
        }
    }

    /// Applies a decided switch: confirmed, its map takes over from its point on.
    fn settle(&mut self) {
        let decided = self
            .pending
            .as_ref()
            .is_some_and(|p| p.decision != Decision::Waiting);
        if !decided {
            return;
        }
        if let Some(p) = self.pending.take() {
            if p.decision == Decision::Confirmed {
                self.steps.push(RouteStep {
                    from: p.point.outputs,
                    map: p.route.map,
                });
                self.advance(self.routed + 1);
            }
        }
    }
}

/// See the module doc.
pub struct Switchboard {
    board: Mutex<Board>,
    decided: watch::Sender<u64>,
}

impl Default for Switchboard {
    /// A switchboard with no downstream task (a sink's).
    fn default() -> Switchboard {
        Switchboard::new(Vec::new(), 0, false)
    }
}

impl Switchboard {
    /// The switchboard of an attempt with `downstream` tasks whose routing history is
    /// `steps`; a `restarted` attempt switches maps only once it caught up with its
    /// predecessors (see [`Switchboard::floor`]).
    pub fn new(steps: Vec<RouteStep>, downstream: u32, restarted: bool) -> Switchboard {
        let cur = map_for(&steps, 1, downstream).into_owned();
        let mut board = Board {
            steps,
            applied: 0,
            cur,
            routed: 0,
            sent: vec![0; downstream as usize],
            pending: None,
            last: None,
            aborted: 0,
            restarted: false,
            floors: vec![None; downstream as usize],
            deferred: None,
            held: 0,
            reach: None,
        };
        board.advance(1);
        board.restarted = restarted;
        Switchboard {
            board: Mutex::new(board),
            decided: watch::Sender::new(0),
        }
    }

    /// The switchboard of a restarted source: a switch also waits until it has routed as
    /// many outputs as its predecessors may have (told by [`Switchboard::reach`]). Its
    /// first-stage receivers cannot always say how far those got: one restarted with it
    /// keeps no log of what its predecessor took.
    pub fn with_reach(self) -> Switchboard {
        self.lock().reach = Some(None);
        self
    }

    /// A restarted source's predecessors routed at most `outputs` outputs (or this attempt
    /// has routed all it ever will: pass 0).
    pub fn reach(&self, outputs: u64) {
        let mut b = self.lock();
        if b.reach.is_some() {
            b.reach = Some(Some(outputs));
        }
        b.catch_up();
    }

    fn lock(&self) -> MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the next output, of key group `g`, goes (it is counted either way). While the
    /// router still `holds` outputs, a verdict that has come is not applied yet: the held
    /// outputs go first (`route_held`), so no later output overtakes them on their link.
    pub fn route(&self, g: usize, holds: bool) -> Verdict {
        let mut b = self.lock();
        if !holds {
            b.settle();
        }
        b.catch_up();
        let n = b.routed + 1;
        b.advance(n);
        b.routed = n;
        let old = b.cur.owner(g) as usize;
        if let Some(p) = &mut b.pending {
            let to = p.route.map.owner(g) as usize;
            let moving = to != old;
            let wait = |v: &Vec<bool>, i: usize| v.get(i) == Some(&true);
            if moving || wait(&p.gainers, to) || wait(&p.blocked, old) {
                if let Some(x) = p.blocked.get_mut(old).filter(|_| moving) {
                    *x = true;
                }
                b.held += 1;
                return Verdict::Hold;
            }
        }
        let to = b.cur.owner(g) as usize;
        if let Some(c) = b.sent.get_mut(to) {
            *c += 1;
        }
        Verdict::To(to)
    }

    /// Where a held output of group `g` goes, once its switch is decided (`None`: still
    /// undecided). It was counted when it was held.
    pub fn route_held(&self, g: usize) -> Option<usize> {
        let mut b = self.lock();
        b.settle();
        if b.pending.is_some() {
            return None;
        }
        let to = b.cur.owner(g) as usize;
        if let Some(c) = b.sent.get_mut(to) {
            *c += 1;
        }
        b.held = b.held.saturating_sub(1);
        b.catch_up();
        Some(to)
    }

    /// Whether a switch waits for the leader's verdict.
    pub fn undecided(&self) -> bool {
        let mut b = self.lock();
        b.settle();
        b.pending.is_some()
    }

    /// A receiver that sees every verdict (its value counts them).
    pub fn verdicts(&self) -> watch::Receiver<u64> {
        self.decided.subscribe()
    }

    /// Waits until no switch waits for a verdict.
    pub async fn wait_decided(&self) {
        let mut rx = self.decided.subscribe();
        while self.undecided() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Switches to `route` at the point reached now and returns that point to report; the
    /// same answer again for a switch already made (a repeated command). `None` while
    /// another switch waits for its verdict.
    pub fn reroute(&self, route: PendingRoute) -> Option<SwitchReport> {
        let mut b = self.lock();
        b.settle();
        if let Some(last) = b.last.as_ref().filter(|l| l.version >= route.version) {
            return Some(last.clone());
        }
        if b.pending.is_some() || route.version <= b.aborted {
            return None;
        }
        if !b.caught_up() {
            // Made once this attempt has routed as far as its predecessors did; reported
            // then (with the attempt's next report).
            b.deferred = Some(route);
            return None;
        }
        Some(b.switch(route))
    }

    /// The receiver on link `to` held `seen` tuples of it before it took this attempt's
    /// connection (it takes nothing from an older attempt after that).
    pub fn floor(&self, to: usize, seen: u64) {
        let mut b = self.lock();
        if let Some(f) = b.floors.get_mut(to) {
            *f = Some(f.map_or(seen, |f| f.max(seen)));
        }
        b.catch_up();
    }

    /// The leader's verdict on switch `version`: confirmed (held outputs go by the new map)
    /// or aborted (by the old one). Nothing for another version.
    pub fn decide(&self, version: u32, confirm: bool) {
        let mut b = self.lock();
        match b.pending.as_mut() {
            Some(p) if p.route.version == version => {
                p.decision = if confirm {
                    Decision::Confirmed
                } else {
                    Decision::Aborted
                };
            }
            _ => {
                if !confirm {
                    b.aborted = b.aborted.max(version);
                    if b.deferred.as_ref().is_some_and(|d| d.version <= version) {
                        b.deferred = None;
                    }
                }
                return;
            }
        }
        if !confirm {
            // An aborted switch is not reported as made.
            b.last = None;
        }
        drop(b);
        self.decided.send_modify(|n| *n += 1);
    }

    /// The latest switch made, for the attempt's reports.
    pub fn last(&self) -> Option<SwitchReport> {
        self.lock().last.clone()
    }
}

#[cfg(test)]
mod tests;
