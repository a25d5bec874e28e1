//! The leader's monitor: a periodic sweep that gathers what the leader last heard, asks the
//! coordinator's sweeps (`coordinator::sweep`) which workers are silent and which tasks are
//! stalled, and tells each job concerned (`WorkerLost`, `Stalled`): each job's core decides how
//! to recover. It also drops ended jobs past retention.

use super::state::lock;
use super::Leader;
use crate::coordinator::sweep::{
    silent_workers, stalled_tasks, unstarted_tasks, TaskSeen, WorkerSeen,
};
use crate::coordinator::Input;
use crate::model::ids::{JobId, TaskKey};
use crate::model::spec::PathMode;
use crate::protocol::control::WorkerState;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

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
        let outputs: Vec<(JobId, String)>;
        {
            let mut st = lock(&leader.state);
            let now = Instant::now();
            let seen: Vec<WorkerSeen> = st
                .workers
                .iter()
                .filter(|(_, w)| w.state == WorkerState::Alive)
                .map(|(id, w)| WorkerSeen {
                    id: id.clone(),
                    last_seen: w.last_seen,
                })
                .collect();
            for id in silent_workers(&seen, now, leader.cfg.heartbeat_timeout) {
                warn!(worker = %id, "worker missed its heartbeats; declared dead");
                if let Some(w) = st.workers.get_mut(&id) {
                    w.state = WorkerState::Dead;
                    w.commands.clear();
                    w.notify.notify_one();
                }
                let lost: Vec<(TaskKey, u32)> = st
                    .tasks
                    .iter()
                    .filter(|(_, t)| t.worker == id && !t.state.is_terminal())
                    .map(|(k, t)| (k.clone(), t.attempt))
                    .collect();
                let mut jobs = BTreeSet::new();
                for (key, attempt) in lost {
                    st.mark_failed(&key, attempt, format!("worker {id} lost"));
                    jobs.insert(key.job);
                }
                for job in jobs {
                    let input = Input::WorkerLost { worker: id.clone() };
                    to_send.extend(st.driver_of(&job).map(|tx| (tx, input)));
                }
            }
            let stall = leader.cfg.stall_timeout;
            let tasks: Vec<TaskSeen> = st
                .tasks
                .iter()
                .map(|(k, t)| TaskSeen {
                    key: k.clone(),
                    attempt: t.attempt,
                    state: t.state,
                    queued: t.queued,
                    progressed: t.progressed,
                    start_sent: t.start_sent,
                    reported: t.reported,
                })
                .collect();
            let start = leader.cfg.start_timeout;
            for (key, attempt) in unstarted_tasks(&tasks, now, start) {
                let cause = format!(
                    "not started: its worker did not report it within {:.0} s of its start",
                    start.as_secs_f64()
                );
                warn!(task = %key, attempt, "{cause}");
                st.mark_failed(&key, attempt, cause.clone());
                let input = Input::Stalled {
                    pos: key.pos,
                    attempt,
                    cause,
                };
                to_send.extend(st.driver_of(&key.job).map(|tx| (tx, input)));
            }
            for (key, attempt) in stalled_tasks(&tasks, now, stall) {
                let cause = format!(
                    "stalled: input waiting and no progress for {:.0} s",
                    stall.as_secs_f64()
                );
                warn!(task = %key, attempt, "{cause}");
                st.mark_failed(&key, attempt, cause.clone());
                let input = Input::Stalled {
                    pos: key.pos,
                    attempt,
                    cause,
                };
                to_send.extend(st.driver_of(&key.job).map(|tx| (tx, input)));
            }
            let expired: Vec<_> = st
                .jobs
                .iter()
                .filter(|(_, j)| {
                    let retention = j.spec.limits.retention().unwrap_or(leader.cfg.retention);
                    j.ended().is_some_and(|e| now.duration_since(e) > retention)
                })
                .map(|(id, _)| id.clone())
                .collect();
            let mut gone = Vec::new();
            for id in &expired {
                if let Some(j) = st.jobs.remove(id) {
                    gone.push((id.clone(), j.spec));
                }
                st.tasks.retain(|k, _| &k.job != id);
            }
            // A job whose own retention_s ran out takes its output with it, unless another
            // job the leader still knows writes (or wrote) the same file.
            outputs = gone
                .into_iter()
                .filter(|(_, spec)| {
                    spec.limits.retention_s.is_some() && spec.paths == PathMode::Store
                })
                .filter(|(_, spec)| !st.jobs.values().any(|j| j.spec.sink_path == spec.sink_path))
                .map(|(id, spec)| (id, spec.sink_path))
                .collect();
            forget = expired;
        }
        for (id, path) in outputs {
            match leader.store.delete_prefix(&path).await {
                Ok(()) => {
                    info!(job = %id, %path, "retention_s ran out: the job's output is removed")
                }
                Err(e) => {
                    warn!(job = %id, %path, error = %e, "could not remove an expired job's output")
                }
            }
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
