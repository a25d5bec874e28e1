//! Autoscaling settings: what a job asks of the autoscaler, and how a stage's are resolved
//! ([`resolve`]; for a job's stage, `spec::autoscale_of`). This module knows no `JobSpec`, so
//! the spec can hold its types.
//!
//! A job turns autoscaling on with an `[autoscale]` table ([`AutoscaleSpec`]): the watermarks
//! `low` and `high` (input tuples per second per task) and optional bounds and delays. Each
//! operator stage inherits it, overrides part of it in its own `[stages.autoscale]` table, or
//! opts out with `autoscale = false` ([`StageAutoscale`]). A stage may autoscale on its own when
//! the job has no table, if its table gives both watermarks. The coordinator's `Scaler` takes the
//! resolved [`Autoscale`] of each stage and makes the decisions; the validator in `check` holds
//! the rules the numbers obey.

use serde::{Deserialize, Serialize};

/// The fewest tasks an autoscaled stage keeps when `min_tasks` is not given.
pub const DEFAULT_MIN_TASKS: u32 = 1;
/// The most tasks an autoscaled stage grows to when `max_tasks` is not given (or its starting
/// `tasks`, when that is more): enough to absorb a step in load on a small cluster, few enough
/// that one hot stage cannot take every slot; the cluster's free slots bound it further.
pub const DEFAULT_MAX_TASKS: u32 = 8;
/// Seconds after a rescale finished before the same stage is judged again, when not given:
/// long enough for its rates to reflect the new task count.
pub const DEFAULT_COOLDOWN_S: f64 = 5.0;
/// Seconds a stage must stay below `low` before it shrinks, when not given: a lull shorter
/// than this does not cost the job a rescale (and another one when the load comes back).
pub const DEFAULT_SCALE_DOWN_GRACE_S: f64 = 30.0;

/// The job's `[autoscale]` table as written (absent optional fields stay absent, so a job
/// round-trips unchanged; [`resolve`] fills in the defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "JobWire")]
pub struct AutoscaleSpec {
    /// LW: input tuples/s per task below which a stage shrinks (after the grace period).
    pub low: f64,
    /// HW: input tuples/s per task above which a stage grows.
    pub high: f64,
    /// The fewest tasks of each stage (default [`DEFAULT_MIN_TASKS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tasks: Option<u32>,
    /// The most tasks of each stage (default: [`DEFAULT_MAX_TASKS`] or the stage's `tasks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tasks: Option<u32>,
    /// Seconds after a rescale before the stage is judged again (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_s: Option<f64>,
    /// Seconds below `low` before a stage shrinks (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_grace_s: Option<f64>,
}

impl AutoscaleSpec {
    /// Watermarks `low` < `high` with every other setting at its default: what the course
    /// syntax's `<LW> <HW>` give.
    pub fn new(low: f64, high: f64) -> AutoscaleSpec {
        AutoscaleSpec {
            low,
            high,
            min_tasks: None,
            max_tasks: None,
            cooldown_s: None,
            scale_down_grace_s: None,
        }
    }
}

/// How a job's `autoscale` reads: a table, or the `[LW, HW]` pair jobs recorded before the
/// table existed (a leader must still load those jobs' records).
#[derive(Deserialize)]
#[serde(untagged)]
enum JobWire {
    Pair(f64, f64),
    Table(AutoscaleTable),
}

/// [`AutoscaleSpec`]'s own fields, for [`JobWire`].
#[derive(Deserialize)]
struct AutoscaleTable {
    low: f64,
    high: f64,
    #[serde(default)]
    min_tasks: Option<u32>,
    #[serde(default)]
    max_tasks: Option<u32>,
    #[serde(default)]
    cooldown_s: Option<f64>,
    #[serde(default)]
    scale_down_grace_s: Option<f64>,
}

impl From<JobWire> for AutoscaleSpec {
    fn from(w: JobWire) -> AutoscaleSpec {
        match w {
            JobWire::Pair(low, high) => AutoscaleSpec::new(low, high),
            JobWire::Table(t) => AutoscaleSpec {
                low: t.low,
                high: t.high,
                min_tasks: t.min_tasks,
                max_tasks: t.max_tasks,
                cooldown_s: t.cooldown_s,
                scale_down_grace_s: t.scale_down_grace_s,
            },
        }
    }
}

/// A stage's `[stages.autoscale]` table: each given field replaces the job's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AutoscaleOverride {
    /// Replaces the job's `low`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low: Option<f64>,
    /// Replaces the job's `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high: Option<f64>,
    /// Replaces the job's `min_tasks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tasks: Option<u32>,
    /// Replaces the job's `max_tasks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tasks: Option<u32>,
    /// Replaces the job's `cooldown_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_s: Option<f64>,
    /// Replaces the job's `scale_down_grace_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_grace_s: Option<f64>,
}

impl AutoscaleOverride {
    /// The job's table as a partial one, to lay a stage's override over.
    fn of_job(job: &AutoscaleSpec) -> AutoscaleOverride {
        AutoscaleOverride {
            low: Some(job.low),
            high: Some(job.high),
            min_tasks: job.min_tasks,
            max_tasks: job.max_tasks,
            cooldown_s: job.cooldown_s,
            scale_down_grace_s: job.scale_down_grace_s,
        }
    }

    /// `self` with every field `top` gives replaced by `top`'s.
    fn overlaid(self, top: &AutoscaleOverride) -> AutoscaleOverride {
        AutoscaleOverride {
            low: top.low.or(self.low),
            high: top.high.or(self.high),
            min_tasks: top.min_tasks.or(self.min_tasks),
            max_tasks: top.max_tasks.or(self.max_tasks),
            cooldown_s: top.cooldown_s.or(self.cooldown_s),
            scale_down_grace_s: top.scale_down_grace_s.or(self.scale_down_grace_s),
        }
    }
}

/// What a stage does about autoscaling. In a job file: no `autoscale` key (or `true`) inherits
/// the job's table, `autoscale = false` opts out, a `[stages.autoscale]` table overrides part
/// of it. JSON spells it the same way, so a stage that inherits is written as nothing at all.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "StageWire", into = "StageWire")]
pub enum StageAutoscale {
    /// The job's settings, if it has any.
    #[default]
    Inherit,
    /// Never rescaled, whatever the job says.
    Off,
    /// The job's settings with these replaced (or the stage's own, when the job has none).
    Override(AutoscaleOverride),
}

impl StageAutoscale {
    /// Whether this is the default (skipped when a spec is serialized).
    pub fn is_inherit(&self) -> bool {
        matches!(self, StageAutoscale::Inherit)
    }
}

/// [`StageAutoscale`] as the job file and JSON spell it.
#[derive(Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum StageWire {
    Flag(bool),
    Table(AutoscaleOverride),
}

impl From<StageWire> for StageAutoscale {
    fn from(w: StageWire) -> StageAutoscale {
        match w {
            StageWire::Flag(true) => StageAutoscale::Inherit,
            StageWire::Flag(false) => StageAutoscale::Off,
            StageWire::Table(t) => StageAutoscale::Override(t),
        }
    }
}

impl From<StageAutoscale> for StageWire {
    fn from(s: StageAutoscale) -> StageWire {
        match s {
            StageAutoscale::Inherit => StageWire::Flag(true),
            StageAutoscale::Off => StageWire::Flag(false),
            StageAutoscale::Override(t) => StageWire::Table(t),
        }
    }
}

/// A stage's settings, every field filled: what the autoscaler works with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Autoscale {
    /// LW, input tuples/s per task.
    pub low: f64,
    /// HW, input tuples/s per task.
    pub high: f64,
    /// The fewest tasks.
    pub min_tasks: u32,
    /// The most tasks.
    pub max_tasks: u32,
    /// Seconds after a rescale before the stage is judged again.
    pub cooldown_s: f64,
    /// Seconds below `low` before the stage shrinks.
    pub scale_down_grace_s: f64,
}

impl Autoscale {
    /// The per-task rate a rescale aims at, halfway between the watermarks, so that neither
    /// a grow nor a shrink lands next to the watermark that would undo it.
    pub fn target(&self) -> f64 {
        (self.low + self.high) / 2.0
    }

    /// The cooldown in milliseconds (the autoscaler's clock).
    pub fn cooldown_ms(&self) -> u64 {
        secs_to_ms(self.cooldown_s)
    }

    /// The scale-down grace in milliseconds.
    pub fn grace_ms(&self) -> u64 {
        secs_to_ms(self.scale_down_grace_s)
    }
}

/// Seconds to whole milliseconds; the validator keeps them finite and within ten years, and
/// anything else saturates rather than wraps.
fn secs_to_ms(s: f64) -> u64 {
    (s * 1000.0).round().clamp(0.0, u64::MAX as f64) as u64
}

/// A stage's partial settings: the job's table (if any) with the stage's override laid over
/// it, or `None` when the stage does not autoscale. The validator checks these; [`resolve`]
/// fills them in.
pub fn merged(job: Option<&AutoscaleSpec>, stage: &StageAutoscale) -> Option<AutoscaleOverride> {
    match stage {
        StageAutoscale::Off => None,
        StageAutoscale::Inherit => job.map(AutoscaleOverride::of_job),
        StageAutoscale::Override(o) => Some(
            job.map(AutoscaleOverride::of_job)
                .unwrap_or_default()
                .overlaid(o),
        ),
    }
}

/// The settings of a stage that starts with `tasks` tasks, every field filled, or `None`
/// when it does not autoscale (see `spec::autoscale_of`, the one caller a job needs). An
/// absent `max_tasks` is [`DEFAULT_MAX_TASKS`], or the stage's starting `tasks` (or
/// `min_tasks`) when either is more, so a job that starts wide is not refused for a bound it
/// never wrote. Only meaningful for settings the validator accepted.
pub fn resolve(
    job: Option<&AutoscaleSpec>,
    stage: &StageAutoscale,
    tasks: u32,
) -> Option<Autoscale> {
    let m = merged(job, stage)?;
    let min_tasks = m.min_tasks.unwrap_or(DEFAULT_MIN_TASKS);
    Some(Autoscale {
        low: m.low?,
        high: m.high?,
        min_tasks,
        max_tasks: m
            .max_tasks
            .unwrap_or_else(|| DEFAULT_MAX_TASKS.max(tasks).max(min_tasks)),
        cooldown_s: m.cooldown_s.unwrap_or(DEFAULT_COOLDOWN_S),
        scale_down_grace_s: m.scale_down_grace_s.unwrap_or(DEFAULT_SCALE_DOWN_GRACE_S),
    })
}
