//! The end of a job, whatever the outcome: every task of it is stopped, its routes and (unless
//! kept) its input logs are removed, and its record keeps the final status for followers.

use super::driver::Outcome;
use super::state::lock;
use super::Leader;
use crate::model::ids::{JobId, WorkerId};
use crate::model::spec::JobSpec;
use crate::protocol::control::{Command, JobStatus, TaskState};
use crate::runtime::sink::SinkProgress;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;
use tracing::{info, warn};

/// Stops the job's tasks, removes what it leaves behind and records its final status.
pub(super) async fn cleanup(
    leader: &Arc<Leader>,
    id: &JobId,
    spec: &JobSpec,
    outcome: Outcome,
    progress: &watch::Sender<SinkProgress>,
) {
    // A store that is not a local directory gets the sink file now (a failed upload fails
    // a job that had succeeded).
    let outcome = match (leader.publish_sink(spec).await, outcome) {
        (Err(e), Outcome::Succeeded) => Outcome::Failed(e),
        (_, o) => o,
    };
    let (status, error) = match outcome {
        Outcome::Succeeded => (JobStatus::Succeeded, None),
        Outcome::Failed(e) => (JobStatus::Failed, Some(e)),
        Outcome::Cancelled => (JobStatus::Cancelled, None),
    };
    {
        let mut st = lock(&leader.state);
        let workers: std::collections::BTreeSet<WorkerId> = st
            .tasks
            .iter()
            .filter(|(k, _)| &k.job == id)
            .map(|(_, t)| t.worker.clone())
            .collect();
        for w in workers {
            st.command(&w, Command::StopJob { job: id.clone() });
        }
        for (_, t) in st.tasks.iter_mut().filter(|(k, _)| &k.job == id) {
            if !t.state.is_terminal() {
                t.state = TaskState::Cancelled;
            }
        }
    }
    leader.env.routes.remove(id);
    if !spec.keep_logs && !leader.cfg.keep_logs {
        if let Err(e) = leader
            .store
            .delete_prefix(&crate::runtime::log::job_prefix(id))
            .await
        {
            warn!(job = %id, error = %e, "could not delete the job's input logs");
        }
    }
    {
        let mut st = lock(&leader.state);
        if let Some(j) = st.jobs.get_mut(id) {
            j.status = status;
            j.error = error.clone();
            j.ended = Some(Instant::now());
            j.events = None;
        }
    }
    progress.send_modify(|p| p.finished = true);
    match &error {
        None => info!(job = %id, status = ?status, "job ended"),
        Some(e) => warn!(job = %id, error = %e, "job failed"),
    }
}
