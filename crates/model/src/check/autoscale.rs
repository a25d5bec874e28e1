//! The rules an autoscaled job's numbers obey: watermarks finite, at least 0 and `low <
//! high`; `min_tasks` and `max_tasks` a stage's possible task counts with `min_tasks ≤
//! max_tasks`; delays finite seconds; and each autoscaled stage starting within its bounds.
//! A job-level value is reported once, as `autoscale.FIELD`; a stage's own value as
//! `stages[N].autoscale.FIELD`. A rule between two fields is reported where a stage changed one
//! of them, so an inherited mistake is not repeated for every stage. Whether a stage's operator
//! can move its state is not judged here (the rescale protocol decides that).

use super::{stage_field, Problem, RATE, TASKS};
use crate::autoscale::{merged, AutoscaleOverride, StageAutoscale};
use crate::limits::MAX_SECONDS;
use crate::spec::{autoscale_of, JobSpec};

/// The given fields of a (partial) autoscale table, each judged alone, with the field prefix
/// they are reported under (`autoscale.` or `stages[N].autoscale.`).
fn field_problems(prefix: &str, o: &AutoscaleOverride, out: &mut Vec<Problem>) {
    for (name, v) in [("low", o.low), ("high", o.high)] {
        if let Some(v) = v.filter(|v| !rate_ok(*v)) {
            out.push(Problem::new(
                format!("{prefix}{name}"),
                v,
                format!(
                    "must be a number of input tuples/s per task from 0 to {}",
                    RATE.end()
                ),
            ));
        }
    }
    for (name, v) in [("min_tasks", o.min_tasks), ("max_tasks", o.max_tasks)] {
        if let Some(v) = v.filter(|v| !TASKS.contains(v)) {
            out.push(Problem::new(
                format!("{prefix}{name}"),
                v,
                format!(
                    "must be an integer from {} to {} (a stage's task counts)",
                    TASKS.start(),
                    TASKS.end()
                ),
            ));
        }
    }
    for (name, v) in [
        ("cooldown_s", o.cooldown_s),
        ("scale_down_grace_s", o.scale_down_grace_s),
    ] {
        if let Some(v) = v.filter(|v| !secs_ok(*v)) {
            out.push(Problem::new(
                format!("{prefix}{name}"),
                v,
                format!("must be a number of seconds from 0 to {MAX_SECONDS}"),
            ));
        }
    }
}

fn rate_ok(v: f64) -> bool {
    v.is_finite() && (0.0..=*RATE.end()).contains(&v)
}

fn secs_ok(v: f64) -> bool {
    v.is_finite() && (0.0..=MAX_SECONDS).contains(&v)
}

/// The rules between fields, on the merged settings `m`, reported under `prefix` for the
/// fields `own` (the table being checked) gives; a rule neither of whose fields `own` gives
/// is not its to report.
fn pair_problems(prefix: &str, m: &AutoscaleOverride, own: &AutoscaleOverride) -> Vec<Problem> {
    let mut out = Vec::new();
    if let (Some(low), Some(high)) = (m.low, m.high) {
        if rate_ok(low) && rate_ok(high) && low >= high {
            let problem = if own.low.is_some() {
                Problem::new(
                    format!("{prefix}low"),
                    low,
                    format!(
                        "must be below high ({high}): a stage shrinks below low and grows above high"
                    ),
                )
            } else {
                Problem::new(
                    format!("{prefix}high"),
                    high,
                    format!(
                        "must be above low ({low}): a stage shrinks below low and grows above high"
                    ),
                )
            };
            if own.low.is_some() || own.high.is_some() {
                out.push(problem);
            }
        }
    }
    if let (Some(min), Some(max)) = (m.min_tasks, m.max_tasks) {
        let valid = TASKS.contains(&min) && TASKS.contains(&max);
        if valid && min > max && (own.min_tasks.is_some() || own.max_tasks.is_some()) {
            out.push(if own.min_tasks.is_some() {
                Problem::new(
                    format!("{prefix}min_tasks"),
                    min,
                    format!("must be at most max_tasks ({max})"),
                )
            } else {
                Problem::new(
                    format!("{prefix}max_tasks"),
                    max,
                    format!("must be at least min_tasks ({min})"),
                )
            });
        }
    }
    out
}

/// The problems of the job's `[autoscale]` table.
pub(super) fn job_problems(spec: &JobSpec) -> Vec<Problem> {
    let Some(job) = &spec.autoscale else {
        return Vec::new();
    };
    let own = AutoscaleOverride {
        low: Some(job.low),
        high: Some(job.high),
        min_tasks: job.min_tasks,
        max_tasks: job.max_tasks,
        cooldown_s: job.cooldown_s,
        scale_down_grace_s: job.scale_down_grace_s,
    };
    let mut out = Vec::new();
    field_problems("autoscale.", &own, &mut out);
    out.extend(pair_problems("autoscale.", &own, &own));
    out
}

/// The autoscale problems of stage `i` (0-based): its own table, and its starting `tasks`
/// against the bounds it autoscales within.
pub(super) fn stage_problems(spec: &JobSpec, i: usize) -> Vec<Problem> {
    let mut out = Vec::new();
    let Some(st) = spec.stages.get(i) else {
        return out;
    };
    let prefix = format!("{}.", stage_field(i, "autoscale"));
    if let StageAutoscale::Override(own) = &st.autoscale {
        field_problems(&prefix, own, &mut out);
        if spec.autoscale.is_none() {
            for (name, v) in [("low", own.low), ("high", own.high)] {
                if v.is_none() {
                    out.push(Problem::new(
                        format!("{prefix}{name}"),
                        "(missing)",
                        "the job has no [autoscale] table, so a stage that autoscales gives \
                         both low and high (input tuples/s per task)",
                    ));
                }
            }
        }
        if let Some(m) = merged(spec.autoscale.as_ref(), &st.autoscale) {
            out.extend(pair_problems(&prefix, &m, own));
        }
    }
    // The starting count against the bounds, once the bounds themselves are sound (a stage
    // whose `tasks` is out of every range is reported as that alone).
    let sound = merged(spec.autoscale.as_ref(), &st.autoscale).is_some_and(|m| {
        let bound_ok = |v: Option<u32>| v.is_none_or(|v| TASKS.contains(&v));
        bound_ok(m.min_tasks)
            && bound_ok(m.max_tasks)
            && m.min_tasks.unwrap_or(1) <= m.max_tasks.unwrap_or(*TASKS.end())
    });
    if sound && TASKS.contains(&st.tasks) {
        if let Some(a) = autoscale_of(spec, i as u32 + 1) {
            if !(a.min_tasks..=a.max_tasks).contains(&st.tasks) {
                out.push(Problem::new(
                    stage_field(i, "tasks"),
                    st.tasks,
                    format!(
                        "the stage autoscales between min_tasks {} and max_tasks {}, so the \
                         tasks it starts with must lie within them",
                        a.min_tasks, a.max_tasks
                    ),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
