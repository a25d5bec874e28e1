//! The autoscaling decision: from each autoscaled stage's measured load, how many tasks it
//! should run. Pure: no I/O, no clock (the caller passes the time in ms), so the leader and
//! the simulation get the same answers from the same measurements. Carrying a decision out
//! (key groups, routers, handover) is the rescale protocol's, not this module's.
//!
//! A job's [`Scaler`] is asked about once a second ([`Scaler::decide`]) with a [`StageLoad`]
//! per autoscaled stage, and told when a rescale finished ([`Scaler::applied`]). The rules
//! (docs/decisions.md, "Autoscaling decision", says why), for a stage's `low`, `high`,
//! `min_tasks`, `max_tasks`, `cooldown_s`, `scale_down_grace_s` (`model::autoscale`):
//!
//! - With `r = rate / tasks`: above `high` the stage grows at once; below `low` at every
//!   steady look for `scale_down_grace_s` it shrinks; in between nothing ever changes.
//! - One decision of the right size (after DS2, OSDI 2018): it aims at `t = (low + high) / 2`
//!   per task, or, when its tasks are measurably busy (> 5%), at `min(t, 0.8 × r / busy)`
//!   (`r / busy` is what a task can carry), and needs `ceil(rate / aim)` tasks.
//! - Never below `min_tasks` nor above `max_tasks`; a grow adds at most the free slots (as
//!   many as they allow, saying "limited by free slots"; grows in one call share them) and
//!   never takes the job past `model::check`'s `MAX_TASKS` tasks or `MAX_LINKS` links.
//! - No decision while the stage is `settling`, nor within `cooldown_s` of its last finished
//!   rescale; either restarts the shrink grace.
//! - A grow from n of a saturated stage (busy ≥ 0.9) whose rate has not risen 10% at the
//!   first look after the cooldown is ineffective: the stage does not grow above n again until
//!   its rate rises more than 25% above the higher of its rates before and after that grow.
//! - Each decision's reason says the numbers it was made from.

use crate::model::autoscale::Autoscale;
use crate::model::spec::{autoscale_of, JobSpec};
use std::collections::BTreeMap;

/// Below this busy share a task's capacity is not inferred from it (idle: `r / busy` is noise).
pub const BUSY_KNOWN: f64 = 0.05;
/// The share of a task's measured capacity a rescale plans to use.
pub const HEADROOM: f64 = 0.8;
/// The busy share from which a stage counts as saturated before a grow.
pub const SATURATED: f64 = 0.9;
/// How much a saturated stage's rate must rise after a grow for the grow to count.
pub const EFFECTIVE_GAIN: f64 = 0.10;
/// How far above its recorded ceiling a stage's rate must rise to clear an ineffective mark.
pub const CEILING_MOVED: f64 = 0.25;

/// One autoscaled stage's measurements, as the coordinator gathers them from task reports.
#[derive(Clone, Debug, PartialEq)]
pub struct StageLoad {
    /// The stage (1..=K).
    pub stage: u32,
    /// Its active tasks now.
    pub tasks: u32,
    /// Tuples/s entering the stage, summed over its tasks, measured over a few seconds.
    pub rate: f64,
    /// Mean busy share (0..=1) of its active tasks over the same window.
    pub busy: f64,
    /// A task starting or recovering, or a rescale in flight: the rates are not the stage's.
    pub settling: bool,
    /// Its input rate is still climbing (a task's last window well above the one before):
    /// a grow waits for it to level off, so a step is met in one decision of its full size.
    pub rising: bool,
}

/// A stage should run `to` tasks instead of `from`.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleDecision {
    /// The stage (1..=K).
    pub stage: u32,
    /// Its tasks now.
    pub from: u32,
    /// The tasks it should run.
    pub to: u32,
    /// The input rate (tuples/s) the decision was made from.
    pub rate: f64,
    /// Why, with the numbers: for the job's events and the dashboard.
    pub reason: String,
}

/// What a stage looked like when a decision was made about it.
#[derive(Clone, Copy, Debug)]
struct Before {
    from: u32,
    rate: f64,
    busy: f64,
}

/// A grow that did not raise a saturated stage's rate.
#[derive(Clone, Copy, Debug)]
struct Ineffective {
    /// The stage does not grow above this (the grow's `from`).
    above: u32,
    /// The higher of the rates before and after the grow.
    ceiling: f64,
}

/// What the scaler remembers of one autoscaled stage.
#[derive(Debug)]
struct StageState {
    cfg: Autoscale,
    /// Since when (ms) every steady look found the stage below LW.
    below_since: Option<u64>,
    /// Until when (ms) the last finished rescale's cooldown lasts.
    cool_until: Option<u64>,
    /// The stage as it was when the last decision about it was returned.
    decided: Option<Before>,
    /// A finished grow whose effect the first look after its cooldown judges.
    to_judge: Option<Before>,
    /// The last grow that did not help, until the stage's rate moves past its ceiling.
    ineffective: Option<Ineffective>,
}

/// A job's autoscaling decisions; one per job, kept by its coordinator.
#[derive(Debug)]
pub struct Scaler {
    /// Every operator stage's tasks now (index = stage − 1), for the job-wide limits.
    tasks: Vec<u32>,
    /// The autoscaled stages, by stage number.
    stages: BTreeMap<u32, StageState>,
    /// Grows the last [`Scaler::decide`] wanted and the free slots held to nothing (`to`:
    /// what it would grow to with slots enough; the reason names the bound), for the job's
    /// scaling list.
    held: Vec<ScaleDecision>,
}

impl Scaler {
    /// A scaler for `spec`'s autoscaled stages (`model::spec::autoscale_of`), each at
    /// its starting task count.
    pub fn new(spec: &JobSpec) -> Scaler {
        let stages = (1..spec.sink_stage())
            .filter_map(|s| {
                let cfg = autoscale_of(spec, s)?;
                Some((
                    s,
                    StageState {
                        cfg,
                        below_since: None,
                        cool_until: None,
                        decided: None,
                        to_judge: None,
                        ineffective: None,
                    },
                ))
            })
            .collect();
        Scaler {
            tasks: spec.stages.iter().map(|s| s.tasks).collect(),
            stages,
            held: Vec::new(),
        }
    }

    /// The task count of operator stage `stage` as this scaler knows it.
    fn tasks_mut(&mut self, stage: u32) -> Option<&mut u32> {
        self.tasks.get_mut((stage as usize).checked_sub(1)?)
    }

    /// The stages this scaler decides about: the ones to measure.
    pub fn stages(&self) -> impl Iterator<Item = u32> + '_ {
        self.stages.keys().copied()
    }

    /// The task count `stage` may not grow above because a grow beyond it did not raise its
    /// rate, if it is so marked (for the job's view).
    pub fn held_at(&self, stage: u32) -> Option<u32> {
        Some(self.stages.get(&stage)?.ineffective?.above)
    }

    /// The rescales the stages of `loads` need at `now_ms`, at most one per stage. `free_slots`
    /// is how many more tasks the cluster can give this job now (free slots; the stages' own
    /// tasks keep theirs): a grow adds at most that many, and grows decided in this call
    /// share it. Loads of stages that do not autoscale are ignored. Returning a decision
    /// changes nothing but this scaler's memory of it; the stage's tasks change when the
    /// coordinator reports the rescale done with [`Scaler::applied`].
    pub fn decide(
        &mut self,
        now_ms: u64,
        loads: &[StageLoad],
        free_slots: u32,
    ) -> Vec<ScaleDecision> {
        for l in loads {
            if l.tasks > 0 && self.stages.contains_key(&l.stage) {
                if let Some(t) = self.tasks_mut(l.stage) {
                    *t = l.tasks;
                }
            }
        }
        // The counts as they will be if this call's grows are carried out.
        let mut planned = self.tasks.clone();
        let mut free = free_slots;
        let mut out = Vec::new();
        self.held.clear();
        for l in loads {
            let Some(st) = self.stages.get_mut(&l.stage) else {
                continue;
            };
            let Some((to, reason)) = st.judge(now_ms, l) else {
                continue;
            };
            let mut d = ScaleDecision {
                stage: l.stage,
                from: l.tasks,
                to,
                rate: l.rate,
                reason,
            };
            if d.to > d.from {
                // What it would grow to with slots enough: told if the slots held it.
                let room = bound_grow(d.clone(), &st.cfg, st.ineffective, u32::MAX, &planned);
                d = bound_grow(d, &st.cfg, st.ineffective, free, &planned);
                if d.to <= d.from {
                    if room.to > d.from {
                        self.held.push(ScaleDecision { to: room.to, ..d });
                    }
                    continue;
                }
                free -= d.to - d.from;
            }
            if let Some(t) = planned.get_mut(l.stage as usize - 1) {
                *t = d.to;
            }
            st.decided = Some(Before {
                from: l.tasks,
                rate: l.rate,
                busy: busy_of(l),
            });
            out.push(d);
        }
        out
    }

    /// The grows the last [`Scaler::decide`] wanted and could not make at all for want of a
    /// free slot: none is lost silently (a stage at `max_tasks` or held by an ineffective
    /// grow's mark is where its settings put it, and says nothing).
    pub fn take_held(&mut self) -> Vec<ScaleDecision> {
        std::mem::take(&mut self.held)
    }

    /// A rescale of `stage` to `to` tasks finished at `now_ms`: the cooldown starts, and a
    /// grow this scaler decided is judged at the first look after it.
    pub fn applied(&mut self, now_ms: u64, stage: u32, to: u32) {
        if let Some(t) = self.tasks_mut(stage) {
            *t = to;
        }
        let Some(st) = self.stages.get_mut(&stage) else {
            return;
        };
        st.cool_until = Some(now_ms.saturating_add(st.cfg.cooldown_ms()));
        st.below_since = None;
        st.to_judge = st.decided.take().filter(|b| to > b.from);
    }
}

/// The busy share of a load, as a number in 0..=1 (anything else counts as unknown, 0).
fn busy_of(l: &StageLoad) -> f64 {
    if l.busy.is_finite() {
        l.busy.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

impl StageState {
    /// One look at the stage: the task count it needs, if that differs from what it runs,
    /// and why (before the cluster's and the job's bounds).
    fn judge(&mut self, now: u64, l: &StageLoad) -> Option<(u32, String)> {
        if l.settling || self.cool_until.is_some_and(|until| now < until) {
            self.below_since = None;
            return None;
        }
        if l.tasks == 0 || !l.rate.is_finite() || l.rate < 0.0 {
            return None;
        }
        let busy = busy_of(l);
        if let Some(b) = self.to_judge.take() {
            if b.busy >= SATURATED && l.rate < b.rate * (1.0 + EFFECTIVE_GAIN) {
                self.ineffective = Some(Ineffective {
                    above: b.from,
                    ceiling: b.rate.max(l.rate),
                });
            }
        }
        if self
            .ineffective
            .is_some_and(|i| l.rate > i.ceiling * (1.0 + CEILING_MOVED))
        {
            self.ineffective = None;
        }
        let cfg = &self.cfg;
        let r = l.rate / f64::from(l.tasks);
        let head = format!(
            "input {}/s over {} tasks = {}/s per task",
            num(l.rate),
            l.tasks,
            num(r)
        );
        // The per-task rate to plan for, and how it was found.
        let (aim, why) = match (busy > BUSY_KNOWN && r > 0.0).then(|| r / busy) {
            Some(c) if HEADROOM * c < cfg.target() => (
                HEADROOM * c,
                format!(
                    "; busy {:.0}%: a task carries ~{}/s, aim at {:.0}% of it",
                    busy * 100.0,
                    num(c),
                    HEADROOM * 100.0
                ),
            ),
            _ => (cfg.target(), String::new()),
        };
        let need = (l.rate / aim).ceil().min(f64::from(u32::MAX)) as u32;
        let at = |n: u32| num(l.rate / f64::from(n.max(1)));
        if r > cfg.high {
            self.below_since = None;
            if l.rising {
                // Sized now, the grow would be sized by a window that is part old rate.
                return None;
            }
            let to = need.max(cfg.min_tasks);
            let text = format!(
                "{head} > HW {}{why}; need {to} at {}/s per task",
                num(cfg.high),
                at(to)
            );
            return (to > l.tasks).then_some((to, text));
        }
        if r >= cfg.low {
            self.below_since = None;
            return None;
        }
        let since = *self.below_since.get_or_insert(now);
        let below = now.saturating_sub(since);
        if below < cfg.grace_ms() {
            return None;
        }
        let to = need.clamp(cfg.min_tasks, cfg.max_tasks.max(cfg.min_tasks));
        let text = format!(
            "{head} < LW {} for {} s{why}; need {to} at {}/s per task",
            num(cfg.low),
            num(below as f64 / 1000.0),
            at(to)
        );
        (to < l.tasks).then_some((to, text))
    }
}

/// A rate or a duration for a reason: whole numbers from 100 up, else a few digits.
pub(super) fn num(x: f64) -> String {
    if x.abs() >= 100.0 || x.fract() == 0.0 {
        format!("{x:.0}")
    } else if x.abs() >= 1.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

mod bounds;
use bounds::bound_grow;

#[cfg(test)]
mod tests;
