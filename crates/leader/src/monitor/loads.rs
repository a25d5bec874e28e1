//! What the autoscaler of each running job sees every second: each autoscaled stage's input
//! rate (summed over the tasks that own key groups, each measured over its last 2 s of
//! heartbeats) and how busy those tasks are, and whether any of them is still starting.

use crate::coordinator::{Input, StageLoad};
use crate::model::ids::{TaskKey, TaskPos};
use crate::model::spec::autoscale_of;
use crate::protocol::control::TaskState;
use crate::state::State;
use tokio::sync::mpsc;

/// How often the autoscalers look.
pub(super) const EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// How long after a task of a stage, or of the stage feeding it, was restarted the stage's
/// rates are not its load: the restarted task replays its log, and its senders resend what
/// it had not acknowledged (hostile probe 18: at a steady 200/s, a worker loss read as
/// "input 1451/s" and grew the stage to its maximum). Longer than the 2 s the rates are
/// measured over.
const RECOVERING_NS: u64 = 5_000_000_000;

/// Each running autoscaled job's stage loads, addressed to its core.
pub(super) fn loads(st: &State, now_ms: u64) -> Vec<(mpsc::Sender<Input>, Input)> {
    let mut out = Vec::new();
    for (id, j) in &st.jobs {
        let Some(tx) = j.events() else { continue };
        let stages: Vec<u32> = (1..j.spec.sink_stage())
            .filter(|s| autoscale_of(&j.spec, *s).is_some())
            .collect();
        if stages.is_empty() {
            continue;
        }
        let of_stage = |stage: u32| {
            let first = TaskKey {
                job: id.clone(),
                pos: TaskPos { stage, index: 0 },
            };
            st.tasks
                .range(first..)
                .take_while(move |(k, _)| &k.job == id && k.pos.stage == stage)
                .map(|(_, t)| t)
        };
        let loads = stages
            .into_iter()
            .map(|stage| {
                let active: Vec<_> = of_stage(stage).filter(|t| !t.standby).collect();
                // A restarted attempt (not a first one) still recovering, here or upstream.
                let recovering = (stage.saturating_sub(1)..=stage)
                    .flat_map(of_stage)
                    .any(|t| t.attempt > 0 && t.meters.last.uptime_ns < RECOVERING_NS);
                let n = active.len().max(1) as f64;
                StageLoad {
                    stage,
                    tasks: active.len() as u32,
                    rate: active.iter().map(|t| t.meters.input_rate).sum(),
                    busy: active.iter().map(|t| t.meters.busy).sum::<f64>() / n,
                    settling: recovering
                        || active
                            .iter()
                            .any(|t| t.state != TaskState::Running || !t.reported),
                    rising: active.iter().any(|t| t.meters.input_rising),
                }
            })
            .collect();
        out.push((tx.clone(), Input::Loads { now_ms, loads }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobRec;
    use crate::model::autoscale::AutoscaleSpec;
    use crate::model::ids::{JobId, WorkerId};
    use crate::model::spec::{JobSpec, OperatorSpec, StageSpec};
    use crate::state::TaskRec;

    /// An autoscaled job of one `count-by` stage, its source (stage 0) and its stage's task
    /// at `attempts`, up for `up_s` seconds: whether the stage is settling.
    fn settling(attempts: (u32, u32), up_s: u64) -> bool {
        let mut spec = JobSpec::sample(vec![StageSpec::new(
            1,
            OperatorSpec::Builtin {
                name: "count-by".into(),
                args: vec!["1".into()],
            },
        )]);
        spec.autoscale = Some(AutoscaleSpec::new(100.0, 300.0));
        let mut st = State::default();
        let job = JobId("job-1".into());
        for (stage, attempt) in [(0, attempts.0), (1, attempts.1)] {
            let mut t = TaskRec::placed(
                WorkerId("w1".into()),
                attempt,
                TaskState::Running,
                &spec,
                stage,
            );
            t.reported = true;
            t.meters.last.uptime_ns = up_s * 1_000_000_000;
            let pos = TaskPos { stage, index: 0 };
            st.tasks.insert(
                TaskKey {
                    job: job.clone(),
                    pos,
                },
                t,
            );
        }
        st.add_job(job, JobRec::detached(spec));
        match loads(&st, 0).pop() {
            Some((_, Input::Loads { loads, .. })) => loads[0].settling,
            _ => panic!("no loads"),
        }
    }

    /// A restarted task, of the stage or of the one feeding it, replays and is resent what
    /// it had not acknowledged: for a while its stage's rates are not its load (hostile probe
    /// 18: a worker loss at a steady 200/s read as 1451/s and grew the stage to its maximum).
    #[test]
    fn a_stage_whose_task_or_sender_was_just_restarted_is_settling() {
        assert!(
            !settling((0, 0), 1),
            "first attempts: the rates are the load"
        );
        assert!(
            settling((0, 1), 1),
            "the stage's task restarted a second ago"
        );
        assert!(settling((2, 0), 1), "its sender (the source) restarted");
        assert!(!settling((2, 1), 6), "both restarted long enough ago");
    }
}
