//! A rejoining worker's attempts, taken back: each report applied to its task's record, each
//! running job's core told (`Input::Rejoined`), and inputs handed to the jobs' drivers.

use crate::coordinator::{Input, Reported};
use crate::model::ids::{JobId, WorkerId};
use crate::protocol::control::Command;
use std::collections::BTreeMap;
use std::time::Instant;
use tracing::warn;

/// Takes back the attempts a rejoining worker reports. Each report updates its task's record
/// (the one place reports are applied); what follows is each job's core's decision
/// (`Input::Rejoined`: carry on, stop a stale attempt, recover a task the worker lost, send
/// it the placement). An attempt still running for a job that has ended is stopped here:
/// there is no job left to decide.
pub(super) fn adopt(
    st: &mut crate::state::State,
    id: &WorkerId,
    reports: Vec<crate::protocol::control::TaskReport>,
) -> Vec<(tokio::sync::mpsc::Sender<Input>, Input)> {
    let now = Instant::now();
    let mut by_job: BTreeMap<JobId, Vec<Reported>> = BTreeMap::new();
    // What a report says besides its state — a switch of maps made, a key group's state
    // handed over, a source done — follows the rejoin: a report applied here is not new again
    // when it is repeated, so an input not passed on now would never reach the core.
    let mut after = Vec::new();
    // Every running job with a task placed on this worker hears of the rejoin, even one whose
    // tasks the worker no longer reports (it lost them).
    for (k, t) in st.tasks.iter() {
        if &t.worker == id && st.driver_of(&k.job).is_some() {
            by_job.entry(k.job.clone()).or_default();
        }
    }
    for r in reports {
        if st.driver_of(&r.key.job).is_none() {
            if !r.state.is_terminal() {
                let stop = Command::StopTask {
                    key: r.key.clone(),
                    attempt: r.attempt,
                };
                st.command(id, stop);
            }
            continue;
        }
        by_job.entry(r.key.job.clone()).or_default().push(Reported {
            pos: r.key.pos,
            attempt: r.attempt,
            state: r.state,
            error: r.error.clone(),
        });
        let key = r.key.clone();
        match st.take_report(id, r, now) {
            // The job's core gets the end with the rejoin.
            Some((_, Input::TaskEnded { .. })) | None => {}
            Some(other) => after.push(other),
        }
        if let Some(t) = st.tasks.get_mut(&key) {
            t.progressed = now;
        }
    }
    let mut inputs: Vec<_> = by_job
        .into_iter()
        .filter_map(|(job, reports)| {
            let input = Input::Rejoined {
                worker: id.clone(),
                reports,
            };
            st.driver_of(&job).map(|tx| (tx, input))
        })
        .collect();
    // After the rejoin, which makes the attempts current again in their cores.
    inputs.extend(after);
    inputs
}

#[cfg(test)]
mod tests;

/// Hands inputs to their jobs' drivers.
pub(super) async fn deliver(inputs: Vec<(tokio::sync::mpsc::Sender<Input>, Input)>) {
    for (tx, input) in inputs {
        if tx.send(input).await.is_err() {
            warn!("task event for a job that already ended; dropped");
        }
    }
}
