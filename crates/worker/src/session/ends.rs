//! How a worker's attempts end: the report of one whose supervisor returned, and every
//! attempt stopped at once when the worker leaves or starts afresh.

use super::super::link::LeaderLink;
use super::super::lock_tasks;
use super::super::report::report;
use super::super::state::{Attempts, Ended, Worker};
use crate::protocol::control::{TaskReport, TaskState};
use crate::runtime::task::TaskEnd;
use tokio::task::JoinSet;
use tracing::{info, warn};

impl Worker {
    /// The report of an attempt whose supervisor returned (or panicked), removing it from the
    /// table; `None` if it was no longer there.
    pub(super) fn ended(
        &self,
        done: Result<(tokio::task::Id, Ended), tokio::task::JoinError>,
        attempts: &mut Attempts,
    ) -> Option<TaskReport> {
        let (k, failure) = match done {
            Ok((tid, (k, outcome))) => {
                attempts.ids.remove(&tid);
                info!(task = %k.0, attempt = k.1, outcome = ?outcome, "task ended");
                match outcome {
                    TaskEnd::Failed(e) | TaskEnd::Unrecoverable(e) => (k, Some(e)),
                    _ => (k, None),
                }
            }
            Err(e) => {
                // A panicked supervisor still reports: the attempt it ran is failed.
                warn!(error = %e, "task supervisor panicked");
                let k = attempts.ids.remove(&e.id())?;
                let r = lock_tasks(&self.tasks).remove(&k)?;
                let mut rep = report(&r.assignment, &r.status);
                rep.state = TaskState::Failed;
                rep.error = Some(format!("task supervisor panicked: {e}"));
                return Some(rep);
            }
        };
        let r = lock_tasks(&self.tasks).remove(&k)?;
        let mut rep = report(&r.assignment, &r.status);
        if failure.is_some() {
            rep.error = failure;
        }
        Some(rep)
    }

    /// Stops every attempt and waits for them; with a `link` (a graceful exit), reports what
    /// was still running as failed.
    pub(super) async fn stop_all(&self, running: &mut JoinSet<Ended>, link: Option<&LeaderLink>) {
        let reports: Vec<TaskReport> = lock_tasks(&self.tasks)
            .values()
            .map(|r| {
                r.cancel.cancel();
                let mut rep = report(&r.assignment, &r.status);
                rep.state = TaskState::Failed;
                rep.error = Some("worker shutting down".into());
                rep
            })
            .collect();
        if let Some(link) = link.filter(|_| !reports.is_empty()) {
            if let Err(e) = link.post_events(reports).await {
                warn!(error = %e, "could not report stopped tasks to the leader");
            }
        }
        while running.join_next().await.is_some() {}
        lock_tasks(&self.tasks).clear();
    }
}
