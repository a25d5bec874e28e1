//! How far a grow may go: the stage's `max_tasks`, an ineffective grow's mark, the free slots
//! and the job-wide limits, each bound that cut it named in the reason.

use super::{num, Ineffective, ScaleDecision};
use crate::model::autoscale::Autoscale;
use crate::model::check::{links_of, MAX_LINKS, MAX_TASKS, TASKS};

/// A grow held to the stage's `max_tasks`, an ineffective grow's mark, the free slots and the
/// job-wide limits, each bound that cut it named in the reason.
pub(super) fn bound_grow(
    mut d: ScaleDecision,
    cfg: &Autoscale,
    ineffective: Option<Ineffective>,
    free: u32,
    planned: &[u32],
) -> ScaleDecision {
    fn cut(d: &mut ScaleDecision, bound: u32, why: String) {
        if d.to > bound {
            d.to = bound;
            d.reason.push_str(&format!("; limited by {why} to {bound}"));
        }
    }
    let from = d.from;
    cut(
        &mut d,
        cfg.max_tasks,
        format!("max_tasks {}", cfg.max_tasks),
    );
    if let Some(i) = ineffective {
        cut(
            &mut d,
            i.above.max(from),
            format!(
                "an earlier grow above {} that did not raise the rate past {}/s",
                i.above,
                num(i.ceiling)
            ),
        );
    }
    cut(
        &mut d,
        from.saturating_add(free),
        format!("free slots ({free} free)"),
    );
    let room = job_room(planned, d.stage as usize - 1, d.to);
    cut(
        &mut d,
        room,
        format!("the job's limits ({MAX_TASKS} tasks, {MAX_LINKS} data links)"),
    );
    d
}

/// The most tasks (up to `want`) stage index `i` may run with the other stages as `planned`,
/// within a stage's and a job's limits.
fn job_room(planned: &[u32], i: usize, want: u32) -> u32 {
    let mut counts = planned.to_vec();
    let Some(now) = counts.get(i).copied() else {
        return 0;
    };
    let mut m = want.min(*TASKS.end());
    while m > now {
        counts[i] = m;
        let tasks: u64 = counts.iter().map(|&t| u64::from(t)).sum();
        if tasks <= MAX_TASKS && links_of(&counts) <= MAX_LINKS {
            break;
        }
        m -= 1;
    }
    m.max(now)
}
