//! The leader's monitor: a periodic sweep that gathers what the leader last heard, asks the
//! coordinator's sweeps (`coordinator::sweep`) which workers are silent and which tasks are
//! stalled, and tells each job concerned (`WorkerLost`, `Stalled`): each job's core decides how
//! to recover. It also drops ended jobs past retention, and forgets dead workers: a
//! registration never used at once, any other after `forget_dead_after`, never one a running
//! job's task is still placed on.

use super::state::{lock, State};
use super::views::STORE_WAIT_SHOWN_MS;
use super::Leader;
use crate::coordinator::sweep::{
    silent_workers, stalled_tasks, unstarted_tasks, TaskSeen, WorkerSeen,
};
use crate::coordinator::Input;
use crate::model::ids::{JobId, TaskKey, WorkerId};
use crate::model::spec::PathMode;
use crate::protocol::control::WorkerState;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Moves forward by `lag` every time the sweep judges silence by, as far as `now`: while the
/// leader itself did not run (SIGSTOP, a stalled host or VM) it heard nobody, and blaming
/// the workers declared every one dead the moment it resumed, before it read the heartbeats
/// waiting for it, and restarted every task (hostile probe). A worker that did die meanwhile
/// is declared dead `lag` later than it would have been.
fn excuse(st: &mut State, lag: Duration, now: Instant) {
    let later = |t: Instant| (t + lag).min(now);
    for w in st.workers.values_mut() {
        w.last_seen = later(w.last_seen);
    }
    for t in st.tasks.values_mut() {
        t.progressed = later(t.progressed);
        t.start_sent = t.start_sent.map(later);
    }
}

/// Declares workers dead after the heartbeat timeout, fails their tasks (the drivers decide on
/// recovery), and drops ended jobs past retention.
pub(super) async fn monitor(leader: Arc<Leader>, stop: CancellationToken) {
    let period = (leader.cfg.heartbeat_timeout / 5)
        .clamp(Duration::from_millis(20), Duration::from_millis(500));
    let mut tick = tokio::time::interval(period);
    let mut looked = Instant::now();
    let mut swept = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut to_send = Vec::new();
        let forget: Vec<JobId>;
        let outputs: Vec<(JobId, String)>;
        let blobs: Vec<String>;
        let logs: Vec<JobId>;
        let unused: Vec<WorkerId>;
        let mut measured = Vec::new();
        {
            let mut st = lock(&leader.state);
            let now = Instant::now();
            let gap = now.duration_since(std::mem::replace(&mut swept, now));
            if gap > period + leader.cfg.heartbeat_timeout / 4 {
                let lag = gap - period;
                warn!(
                    ms = lag.as_millis() as u64,
                    "the leader did not run for a while (stopped, or its host stalled); \
                     that time counts as no worker's or task's silence"
                );
                excuse(&mut st, lag, now);
            }
            if now.duration_since(looked) >= loads::EVERY {
                looked = now;
                let now_ms = crate::job::ms_since_epoch(std::time::SystemTime::now());
                measured = loads::loads(&st, now_ms);
            }
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
                    w.dead_since = Some(now);
                    w.commands.clear();
                    w.notify.notify_one();
                }
                let lost: Vec<(TaskKey, u32)> = st
                    .tasks
                    .iter()
                    .filter(|(_, t)| t.worker == id && t.state.on_worker())
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
                    blocked: t.blocked,
                    start_sent: t.start_sent,
                    reported: t.reported,
                })
                .collect();
            let start = leader.cfg.start_timeout;
            let unstarted = unstarted_tasks(&tasks, now, start).into_iter().map(|t| {
                let cause = format!(
                    "not started: its worker did not report it within {:.0} s of its start",
                    start.as_secs_f64()
                );
                (t, cause)
            });
            let stalled = stalled_tasks(&tasks, now, stall).into_iter().map(|t| {
                let rec = st.tasks.get(&t.0);
                let store_wait = rec.map_or(0, |r| r.store_wait_ms);
                let finishing = rec.is_some_and(|r| r.finishing);
                // Inside a call to its operator with its output not held back: the
                // operator, not a peer, takes nothing.
                let operator = rec.is_some_and(|r| r.in_operator && !r.blocked);
                let cause = match store_wait {
                    // Its operator, not a peer, holds it up: every input ended and the
                    // process has neither exited nor (so far as it ends with it) closed its
                    // output (hostile probe 12).
                    _ if finishing => format!(
                        "stalled: every input ended and its operator has not finished for {:.0} s (an executable must close its output and exit once its input closes)",
                        stall.as_secs_f64()
                    ),
                    // Its own log write waits: the store, not a peer, holds it up.
                    ms if ms >= STORE_WAIT_SHOWN_MS => format!(
                        "stalled: its input-log write has waited {:.0} s for the store, and no progress for {:.0} s",
                        ms as f64 / 1000.0,
                        stall.as_secs_f64()
                    ),
                    _ if operator => format!(
                        "stalled: its operator has taken none of the input handed to it for {:.0} s, and its output is not held back (an executable must keep reading its stdin)",
                        stall.as_secs_f64()
                    ),
                    _ => format!(
                        "stalled: input waiting or output held back (a task it sends to is unreachable or takes nothing) and no progress for {:.0} s",
                        stall.as_secs_f64()
                    ),
                };
                (t, cause)
            });
            // Both are stopped and recovered like a failed attempt, by the job's core.
            for ((key, attempt), cause) in unstarted.chain(stalled).collect::<Vec<_>>() {
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
                    // A follower still reading its output keeps it, a while: a record
                    // dropped under a slow follower cut its stream short (hostile probe 13).
                    let followed = j.followers.load(std::sync::atomic::Ordering::Relaxed) > 0;
                    let grace = leader.cfg.follow_grace;
                    let keep = retention + if followed { grace } else { Duration::ZERO };
                    j.ended().is_some_and(|e| now.duration_since(e) > keep)
                })
                .map(|(id, _)| id.clone())
                .collect();
            let mut gone = Vec::new();
            for id in &expired {
                // Its followers still streaming end with its status as it was.
                if let (Some(j), Some(info)) = (st.jobs.get(id), st.job_info(id)) {
                    let _told = j.last_word.set(info).is_ok();
                }
                if let Some(j) = st.jobs.remove(id) {
                    gone.push((id.clone(), j.spec, j.output_replaced));
                }
                st.tasks.retain(|k, _| &k.job != id);
            }
            // What is left of its logs goes with its record: a sink's log kept because the
            // committed output could not be written stayed for good (`cleanup.rs`). Logs the
            // job or the leader asked to keep stay.
            logs = gone
                .iter()
                .filter(|(_, spec, _)| !(spec.keep_logs || leader.cfg.keep_logs))
                .map(|(id, _, _)| id.clone())
                .collect();
            // The operators only they ran go with them (`pins`); the jobs still known are
            // looked through only when an expired one ran some.
            let mut theirs: std::collections::BTreeSet<String> = gone
                .iter()
                .flat_map(|(_, spec, _)| crate::pins::blobs_of(spec))
                .map(str::to_string)
                .collect();
            if !theirs.is_empty() {
                for j in st.jobs.values() {
                    for b in crate::pins::blobs_of(&j.spec) {
                        theirs.remove(b);
                    }
                }
            }
            blobs = match theirs.is_empty() {
                true => Vec::new(),
                false => leader.pins.take_unused(theirs),
            };
            // A job whose own retention_s ran out takes its output with it, unless what is at
            // its sink path is not its output (an upload, a delete or a later job replaced it,
            // or the job never wrote it: hostile probe 19 saw a user's upload removed), or
            // another job the leader still knows writes (or wrote) the same file.
            outputs = gone
                .into_iter()
                .filter(|(_, spec, replaced)| {
                    spec.limits.retention_s.is_some()
                        && spec.paths == PathMode::Store
                        && replaced.is_none()
                })
                .filter(|(_, spec, _)| {
                    // As the jobs name it (`./out/x` and `out/x` are one file).
                    let sink = crate::owned::norm(spec, &spec.sink_path);
                    !st.jobs
                        .values()
                        .any(|j| crate::owned::norm(&j.spec, &j.spec.sink_path) == sink)
                })
                .map(|(id, spec, _)| (id, spec.sink_path))
                .collect();
            forget = expired;
            unused = forget_dead_workers(&mut st, now, leader.cfg.forget_dead_after);
        }
        // A registration never used is forgotten durably too: nothing can rejoin under it.
        for id in unused {
            if let Err(e) = leader.persist.remove_worker(id.clone()).await {
                warn!(worker = %id, error = %format!("{e:#}"), "could not forget an unused registration's record");
            }
        }
        for (id, path) in outputs {
            // That one object: never what is under it or beside it.
            match leader.store.delete(&path).await {
                Ok(()) => {
                    info!(job = %id, %path, "retention_s ran out: the job's output is removed")
                }
                Err(e) => {
                    warn!(job = %id, %path, error = %e, "could not remove an expired job's output")
                }
            }
        }
        for blob in &blobs {
            match leader.store.delete(blob).await {
                Ok(()) => {
                    info!(%blob, "no job the leader knows runs this operator any more: removed")
                }
                Err(e) => {
                    warn!(%blob, error = %e, "could not remove an operator no job runs any more")
                }
            }
        }
        if !blobs.is_empty() {
            leader.pins.removed(&blobs);
        }
        for id in logs {
            let prefix = format!("{}/", rainstorm_store::log::job_prefix(&id));
            let (removed, failed) = leader.store.delete_report(&prefix).await;
            match failed {
                None if removed.is_empty() => {}
                None => {
                    info!(job = %id, removed = removed.len(), "the job's record expired: its kept logs are removed")
                }
                Some(e) => warn!(job = %id, error = %e, "could not remove an expired job's logs"),
            }
        }
        for id in forget {
            if let Err(e) = leader.persist.remove_job(id.clone()).await {
                warn!(job = %id, error = %format!("{e:#}"), "could not forget an expired job's record");
            }
        }
        // A busy job skips a look rather than hold the monitor up; the next one comes soon.
        for (tx, ev) in measured {
            if tx.try_send(ev).is_err() {
                tracing::debug!("a job's inbox is full; its autoscaler skips this look");
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

/// Forgets dead workers: one whose registration was never used as soon as it is dead, any
/// other once it has been dead for `after` — but never one that a running job's task is
/// still placed on (its job is recovering that task, or waiting for a worker to place it
/// on). Returns the never-used registrations it forgot (their durable records go too).
fn forget_dead_workers(st: &mut State, now: Instant, after: Duration) -> Vec<WorkerId> {
    let due = |w: &crate::state::WorkerRec| {
        w.state == WorkerState::Dead
            && w.dead_since
                .is_some_and(|t| !w.heard || now.saturating_duration_since(t) >= after)
    };
    if !st.workers.values().any(due) {
        return Vec::new();
    }
    let placed: BTreeSet<&WorkerId> = st
        .tasks
        .iter()
        .filter(|(k, _)| st.driver_of(&k.job).is_some())
        .map(|(_, t)| &t.worker)
        .collect();
    let gone: Vec<(WorkerId, bool)> = st
        .workers
        .iter()
        .filter(|(id, w)| due(w) && !placed.contains(id))
        .map(|(id, w)| (id.clone(), w.heard))
        .collect();
    let mut unused = Vec::new();
    for (id, heard) in gone {
        st.workers.remove(&id);
        if heard {
            info!(worker = %id, "dead worker forgotten");
        } else {
            st.known_workers.remove(&id);
            unused.push(id);
        }
    }
    if !unused.is_empty() {
        // One line for however many: a flood of registrations does not flood the log.
        info!(
            count = unused.len(),
            first = %unused[0],
            "registrations never used (no heartbeat, event or command poll) forgotten once declared dead"
        );
    }
    unused
}

mod loads;

#[cfg(test)]
mod tests;
