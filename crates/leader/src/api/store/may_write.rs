//! What a worker may write or delete in the store through the leader: objects of its own
//! tasks' input logs, and the output of a running job whose sink it runs.

use crate::model::ids::{JobId, WorkerId};
use crate::state::State as LeaderState;
use rainstorm_store::log::log_task;
use rainstorm_store::store::clean_path;

/// What a worker's store write is, once allowed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum WorkerWrite {
    /// An object of a task's input log.
    Log,
    /// The output of this running job, written by its sink: admitted through the job's
    /// output gate (`job::OutputGate`).
    Output(JobId),
}

/// Whether worker `caller` may write store path `clean`: only an object of the input log of
/// a task of a running job that the leader placed on that worker (segments, manifests, and
/// the fences a new attempt puts on its predecessors, all under the task's own prefix), or the
/// output of a running job whose sink task it runs. Without a cluster secret there are no
/// registrations to tell apart (`caller` is `None`): any task's log or running job's output.
/// `Err` says why not.
pub(super) fn may_write(
    st: &LeaderState,
    caller: Option<&WorkerId>,
    clean: &str,
) -> Result<WorkerWrite, String> {
    let (key, what) = match log_task(clean) {
        Some(key) => (key, WorkerWrite::Log),
        None => match output_of(st, clean) {
            Some(key) => {
                let job = key.job.clone();
                (key, WorkerWrite::Output(job))
            }
            None => {
                return Err(format!(
                    "{clean}: workers write only their tasks' input logs (logs/<job>/<stage>.<index>/...) and their sinks' outputs"
                ))
            }
        },
    };
    let Some(id) = caller else {
        return Ok(what);
    };
    let running = st
        .jobs
        .get(&key.job)
        .is_some_and(|j| !j.status().is_terminal());
    if running && st.tasks.get(&key).is_some_and(|t| t.worker == *id) {
        Ok(what)
    } else {
        Err(format!(
            "{clean}: task {key} is not a task of a running job placed on worker {id}"
        ))
    }
}

/// [`may_write`], and for a job's output also the attempt the write speaks for (`claim`, the
/// `CLAIM_HEADER`): with registrations to tell apart, an output is written only by its job's
/// current sink attempt. A sink attempt that was replaced on the same worker (the worker
/// paused past its heartbeat timeout and rejoined, and the sink placed there again) and that
/// passed its fence check just before, would otherwise land its shorter output over its
/// successor's, or over the output of a later job with the same sink path (hostile probe 15).
pub(super) fn may_write_claimed(
    st: &LeaderState,
    caller: Option<&WorkerId>,
    clean: &str,
    claim: Option<&str>,
) -> Result<WorkerWrite, String> {
    let what = may_write(st, caller, clean)?;
    let WorkerWrite::Output(job) = &what else {
        return Ok(what);
    };
    if caller.is_none() {
        return Ok(what);
    }
    let Some(j) = st.jobs.get(job) else {
        return Err(format!("{clean}: no job {job}"));
    };
    let key = j.sink_key(job);
    let current = st.tasks.get(&key).map(|t| t.attempt);
    match (claim, current) {
        (Some(c), Some(a)) if c == rainstorm_store::store::claim(&key, a) => Ok(what),
        (c, _) => Err(format!(
            "{clean}: the output of job {job} is written by its current sink attempt ({}), not by {}",
            current.map_or("none".to_string(), |a| rainstorm_store::store::claim(&key, a)),
            c.unwrap_or("a write that names no attempt")
        )),
    }
}

/// The sink task of the running job whose output is store path `clean`, if any.
fn output_of(st: &LeaderState, clean: &str) -> Option<crate::model::ids::TaskKey> {
    st.jobs.iter().find_map(|(id, j)| {
        (!j.status().is_terminal()
            && j.spec.paths == crate::model::spec::PathMode::Store
            && clean_path(&j.spec.sink_path).is_ok_and(|p| p == clean))
        .then(|| j.sink_key(id))
    })
}

/// The first of `clean` that worker `caller` may not delete (workers delete only objects of
/// their own tasks' input logs), if any: a bulk delete with one is refused whole.
pub(super) fn may_delete_all(
    st: &LeaderState,
    caller: Option<&WorkerId>,
    clean: &[String],
) -> Option<String> {
    clean
        .iter()
        .find(|c| may_write(st, caller, c) != Ok(WorkerWrite::Log))
        .cloned()
}
