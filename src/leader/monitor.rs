//! The leader's monitor: a periodic sweep that declares silent workers dead and fails their
//! tasks, declares stalled the deepest task of a job that has input waiting and makes no
//! progress (stopping it), and drops ended jobs past retention. It only records failures; each
//! job's driver decides how to recover.

use super::state::lock;
use super::Leader;
use crate::model::ids::JobId;
use crate::protocol::control::{Command, TaskState, WorkerState};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Declares workers dead after the heartbeat timeout, fails their tasks (the drivers decide on
/// recovery), and drops ended jobs past retention.
pub(super) async fn monitor(leader: Arc<Leader>, stop: CancellationToken) {
    let period = (leader.cfg.heartbeat_timeout / 5)
        .clamp(Duration::from_millis(20), Duration::from_millis(500));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut to_send = Vec::new();
        let forget: Vec<JobId>;
        {
            let mut st = lock(&leader.state);
            let now = Instant::now();
            let dead: Vec<_> = st
                .workers
                .iter()
                .filter(|(_, w)| {
                    w.state == WorkerState::Alive
                        && now.duration_since(w.last_seen) > leader.cfg.heartbeat_timeout
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in dead {
                warn!(worker = %id, "worker missed its heartbeats; declared dead");
                if let Some(w) = st.workers.get_mut(&id) {
                    w.state = WorkerState::Dead;
                    w.commands.clear();
                    w.notify.notify_one();
                }
                let lost: Vec<_> = st
                    .tasks
                    .iter()
                    .filter(|(_, t)| t.worker == id && !t.state.is_terminal())
                    .map(|(k, t)| (k.clone(), t.attempt))
                    .collect();
                for (key, attempt) in lost {
                    to_send.extend(st.fail_task(key, attempt, format!("worker {id} lost")));
                }
            }
            let stall = leader.cfg.stall_timeout;
            let candidates: Vec<_> = st
                .tasks
                .iter()
                .filter(|(_, t)| {
                    t.state == TaskState::Running
                        && t.queued > 0
                        && now.duration_since(t.progressed) > stall
                })
                .map(|(k, t)| (k.clone(), t.attempt, t.worker.clone()))
                .collect();
            // Tasks upstream of a stalled task are only backpressured: per job, only the
            // deepest stalled stage is the culprit.
            let mut deepest: HashMap<JobId, u32> = HashMap::new();
            for (k, _, _) in &candidates {
                let d = deepest.entry(k.job.clone()).or_insert(0);
                *d = (*d).max(k.pos.stage);
            }
            let stalled: Vec<_> = candidates
                .into_iter()
                .filter(|(k, _, _)| deepest.get(&k.job) == Some(&k.pos.stage))
                .collect();
            for (key, attempt, worker) in stalled {
                let cause = format!(
                    "stalled: input waiting and no progress for {:.0} s",
                    stall.as_secs_f64()
                );
                warn!(task = %key, attempt, %worker, "{cause}");
                st.command(
                    &worker,
                    Command::StopTask {
                        key: key.clone(),
                        attempt,
                    },
                );
                to_send.extend(st.fail_task(key, attempt, cause));
            }
            let retention = leader.cfg.retention;
            let expired: Vec<_> = st
                .jobs
                .iter()
                .filter(|(_, j)| j.ended.is_some_and(|e| now.duration_since(e) > retention))
                .map(|(id, _)| id.clone())
                .collect();
            for id in &expired {
                st.jobs.remove(id);
                st.tasks.retain(|k, _| &k.job != id);
            }
            forget = expired;
        }
        for id in forget {
            if let Err(e) = leader.persist.remove_job(id.clone()).await {
                warn!(job = %id, error = %format!("{e:#}"), "could not forget an expired job's record");
            }
        }
        for (tx, ev) in to_send {
            tokio::select! {
                _ = stop.cancelled() => return,
                r = tx.send(ev) => if r.is_err() { warn!("job ended before a lost worker's task could be reported to it"); },
            }
        }
    }
}
