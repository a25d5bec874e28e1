//! Removing an ended job's input logs: all of them once it ended (retried until done, and by
//! the next leader if this one stops first), or all but its sink's when that log is the only
//! copy of the output it committed.

use super::super::state::lock;
use super::super::Leader;
use crate::model::backoff::Backoff;
use crate::model::ids::{JobId, TaskKey};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// Removes a job's input logs (`logs/<id>/`).
async fn remove_logs(leader: &Leader, id: &JobId) -> Result<(), String> {
    let prefix = format!("{}/", rainstorm_store::log::job_prefix(id));
    leader
        .store
        .delete_prefix(&prefix)
        .await
        .map_err(|e| e.to_string())
}

/// Updates a job's record (in memory, then durably) after a removal attempt.
async fn record_removal(leader: &Leader, id: &JobId, result: &Result<(), String>) {
    let record = {
        let mut st = lock(&leader.state);
        let Some(j) = st.jobs.get_mut(id) else {
            return;
        };
        j.logs_left = result.is_err();
        j.cleanup_error = result.as_ref().err().cloned();
        j.stored(id)
    };
    if let Err(e) = leader.persist.put_job(record).await {
        warn!(job = %id, error = %format!("{e:#}"), "could not record the removal of the job's logs");
    }
}

/// First delay and cap of the removal retries.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_CAP: Duration = Duration::from_secs(30);

/// Removes an ended job's logs in the background, retrying with backoff until it succeeds or
/// the leader stops (the record keeps `logs_left`, so the next leader carries on). Every
/// failure is logged and kept in the job record (`cleanup_error`); the leader's stop waits
/// for an attempt in progress (`Leader::cleanups`).
pub(super) fn remove_in_background(leader: &Arc<Leader>, id: JobId) {
    let l = leader.clone();
    let task = async move {
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_CAP);
        let mut last: Option<String> = None;
        for attempt in 1u64.. {
            if attempt > 1 {
                tokio::select! {
                    _ = l.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next()) => {}
                }
            }
            let result = remove_logs(&l, &id).await;
            match &result {
                Ok(()) => debug!(job = %id, attempt, "the job's input logs are removed"),
                Err(e) => {
                    warn!(job = %id, attempt, error = %e, "could not delete the job's input logs; retrying")
                }
            }
            let changed = result.as_ref().err() != last.as_ref();
            if changed || result.is_ok() {
                record_removal(&l, &id, &result).await;
            }
            match result {
                Ok(()) => return,
                Err(e) => last = Some(e),
            }
        }
    };
    spawn_cleanup(leader, task);
}

/// Removes, in the background, every log of an ended job but its sink's (`keep`): once,
/// logged if it fails (what is left is only larger, not wrong).
pub(super) fn trim_to_sink_log(leader: &Arc<Leader>, id: JobId, keep: TaskKey) {
    let l = leader.clone();
    let task = async move {
        let kept = rainstorm_store::log::task_prefix(&keep);
        let all = format!("{}/", rainstorm_store::log::job_prefix(&id));
        let others: Vec<String> = match l.store.list(&all).await {
            Ok(objects) => objects
                .into_iter()
                .map(|o| o.path)
                .filter(|p| !p.starts_with(&kept))
                .collect(),
            Err(e) => {
                warn!(job = %id, error = %e, "could not list the job's logs to keep only its sink's");
                return;
            }
        };
        match l.store.delete_many(&others).await {
            Ok(()) => {
                info!(job = %id, removed = others.len(), kept = %kept, "removed the job's logs but its sink's, which holds its committed output")
            }
            Err(e) => {
                warn!(job = %id, error = %e, "could not remove the job's logs but its sink's")
            }
        }
    };
    spawn_cleanup(leader, task);
}

/// Runs `task` in the leader's set of cleanups, which its stop waits for.
fn spawn_cleanup(leader: &Leader, task: impl std::future::Future<Output = ()> + Send + 'static) {
    spawn_into(&leader.cleanups, task);
}

/// Spawns `task` into `set`, taking those that ended out of it first: the leader's set held
/// one per job ever ended, for its life (hostile review, probe 20).
fn spawn_into(
    set: &std::sync::Mutex<tokio::task::JoinSet<()>>,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let mut set = set.lock().unwrap_or_else(|p| p.into_inner());
    while let Some(done) = set.try_join_next() {
        if let Err(e) = done {
            warn!(error = %e, "a removal of a job's logs panicked");
        }
    }
    set.spawn(task);
}

#[cfg(test)]
mod tests {
    use super::spawn_into;

    #[tokio::test]
    async fn cleanups_that_ended_leave_the_set() {
        let set = std::sync::Mutex::new(tokio::task::JoinSet::new());
        let (_hold, blocked) = tokio::sync::oneshot::channel::<()>();
        spawn_into(&set, async move {
            let _ = blocked.await;
        });
        for _ in 0..100 {
            spawn_into(&set, async {});
            // The runtime runs the quick one before the next is spawned.
            tokio::task::yield_now().await;
        }
        let left = set.lock().unwrap().len();
        assert!(left <= 2, "{left} cleanups kept");
    }
}
