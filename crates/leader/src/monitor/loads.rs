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
        let loads = stages
            .into_iter()
            .map(|stage| {
                let first = TaskKey {
                    job: id.clone(),
                    pos: TaskPos { stage, index: 0 },
                };
                let active: Vec<_> = st
                    .tasks
                    .range(first..)
                    .take_while(|(k, _)| &k.job == id && k.pos.stage == stage)
                    .map(|(_, t)| t)
                    .filter(|t| !t.standby)
                    .collect();
                let n = active.len().max(1) as f64;
                StageLoad {
                    stage,
                    tasks: active.len() as u32,
                    rate: active.iter().map(|t| t.meters.input_rate).sum(),
                    busy: active.iter().map(|t| t.meters.busy).sum::<f64>() / n,
                    settling: active
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
