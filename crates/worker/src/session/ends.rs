//! How a worker's attempts end: the report of one whose supervisor returned, and every
//! attempt stopped at once when the worker leaves or starts afresh.

use super::super::link::LeaderLink;
use super::super::lock_tasks;
use super::super::report::report;
use super::super::state::{Attempts, Ended, Worker};
use super::super::Running;
use crate::dataplane::routes::Routes;
use crate::model::ids::TaskKey;
use crate::protocol::control::{TaskReport, TaskState};
use crate::runtime::task::TaskEnd;
use std::collections::HashMap;
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
                let r = self.forget(&k)?;
                let mut rep = report(&r.assignment, &r.status);
                rep.state = TaskState::Failed;
                rep.error = Some(format!("task supervisor panicked: {e}"));
                return Some(rep);
            }
        };
        let r = self.forget(&k)?;
        let mut rep = report(&r.assignment, &r.status);
        if failure.is_some() {
            rep.error = failure;
        }
        Some(rep)
    }

    /// Removes an ended attempt from the table (see [`forget_attempt`]).
    fn forget(&self, k: &(TaskKey, u32)) -> Option<Running> {
        forget_attempt(&mut lock_tasks(&self.tasks), &self.env.routes, k)
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
            if let Err(e) = link.post_last_events(reports).await {
                warn!(error = %e, "could not report stopped tasks to the leader");
            }
        }
        while running.join_next().await.is_some() {}
        let mut tasks = lock_tasks(&self.tasks);
        for ((key, _), _) in tasks.drain() {
            self.env.routes.remove(&key.job);
        }
    }
}

/// Removes an ended attempt from `tasks`; with the last of its job's attempts here, the job's
/// route table goes too. The leader tells only the workers of a job's current attempts that
/// it ended: one an attempt moved away from (a restart, a drain, a rescale) kept the table
/// for the life of the process (hostile review, probe 20).
fn forget_attempt(
    tasks: &mut HashMap<(TaskKey, u32), Running>,
    routes: &Routes,
    k: &(TaskKey, u32),
) -> Option<Running> {
    let r = tasks.remove(k)?;
    let job = &k.0.job;
    if !tasks.keys().any(|(key, _)| &key.job == job) {
        routes.remove(job);
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ids::{JobId, TaskPos};
    use crate::protocol::control::{TaskAssignment, TaskRole};
    use crate::runtime::task::TaskStatus;

    fn attempt(job: &str, index: u32) -> ((TaskKey, u32), Running) {
        let key = TaskKey {
            job: JobId(job.into()),
            pos: TaskPos { stage: 1, index },
        };
        let assignment = TaskAssignment::sample(key.clone(), TaskRole::Sink { path: "o".into() });
        let status = std::sync::Arc::new(TaskStatus::of(&assignment));
        let r = Running {
            assignment,
            status,
            cancel: Default::default(),
        };
        ((key, 0), r)
    }

    #[test]
    fn a_job_s_routes_go_with_its_last_attempt_here() {
        let routes = Routes::default();
        let mut tasks = HashMap::new();
        for (job, i) in [("a", 0), ("a", 1), ("b", 0)] {
            let (k, r) = attempt(job, i);
            routes.set_many(&k.0.job, 1, &[]);
            tasks.insert(k, r);
        }
        let a = JobId("a".into());
        let b = JobId("b".into());
        assert!(forget_attempt(&mut tasks, &routes, &attempt("a", 0).0).is_some());
        assert!(
            routes.snapshot(&a).is_some(),
            "another attempt of a is still here"
        );
        assert!(forget_attempt(&mut tasks, &routes, &attempt("a", 1).0).is_some());
        assert!(routes.snapshot(&a).is_none(), "a's last attempt here ended");
        assert!(routes.snapshot(&b).is_some());
        assert!(forget_attempt(&mut tasks, &routes, &attempt("a", 1).0).is_none());
    }
}
