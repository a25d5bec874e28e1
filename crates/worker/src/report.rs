//! What a worker tells the leader about its tasks: periodic heartbeats (counters, queue depth,
//! non-terminal states; the answer says whether the leader still knows this worker) and events
//! (a pid once an operator runs, each attempt's terminal state), which are retried until the
//! leader has them.

use super::link::LeaderLink;
use super::{lock_tasks, pause, TaskTable};
use crate::dataplane::inbound::Registry;
use crate::model::backoff::Backoff;
use crate::protocol::control::{
    Events, Heartbeat, Known, Leave, LeavePhase, TaskAssignment, TaskReport,
};
use crate::runtime::task::TaskStatus;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::warn;

/// An attempt's report as of now.
pub(super) fn report(a: &TaskAssignment, s: &TaskStatus) -> TaskReport {
    let pid = s.pid.load(Ordering::Relaxed);
    TaskReport {
        key: a.key.clone(),
        attempt: a.attempt,
        pid: (pid != 0).then_some(pid),
        state: s.state(),
        tuples_in: s.accepted(),
        tuples_out: s.tuples_out.load(Ordering::Relaxed),
        error: s.error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        unrecoverable: s.unrecoverable.load(Ordering::Relaxed),
        queued: 0,
        latency: s.latency.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        done: s.done.load(Ordering::Relaxed),
        meters: s.meters(),
        switched: s.board.last(),
        handed: s.handed.load(Ordering::Relaxed),
        commits: *s.commits.borrow(),
        discarded: s.discarded.load(Ordering::Relaxed),
        store_wait_ms: s.store_wait.waited(&s.started).as_millis() as u64,
        finishing: s.finishing.load(Ordering::Relaxed),
        in_operator: in_operator(s),
        unreached: s
            .sent
            .longest_unreached()
            .map(|(to, d)| (to, d.as_millis() as u64)),
    }
}

impl LeaderLink {
    /// Posts `body` to the leader's control plane at `path` and reads its `Known` answer:
    /// `Ok(false)` when the leader does not know this worker (nothing was taken).
    async fn post_known(
        &self,
        path: &str,
        body: &impl serde::Serialize,
        deadline: Option<Duration>,
    ) -> reqwest::Result<bool> {
        let mut req = self.request(reqwest::Method::POST, path).json(body);
        if let Some(d) = deadline {
            req = req.timeout(d);
        }
        let known: Known = req.send().await?.error_for_status()?.json().await?;
        Ok(known.known)
    }

    /// Sends one batch of events to the leader (once; the caller decides about retrying).
    /// Delivers reports; `Ok(false)` when the leader does not know this worker (nothing
    /// was taken).
    pub(super) async fn post_events(&self, reports: Vec<TaskReport>) -> reqwest::Result<bool> {
        let ev = Events {
            worker_id: self.id.clone(),
            reports,
        };
        self.post_known("/internal/events", &ev, None).await
    }

    /// [`post_events`](Self::post_events) with a short deadline: the reports of a worker
    /// that stops must not keep it waiting on a leader that does not answer.
    pub(super) async fn post_last_events(&self, reports: Vec<TaskReport>) -> reqwest::Result<bool> {
        let ev = Events {
            worker_id: self.id.clone(),
            reports,
        };
        self.post_known("/internal/events", &ev, Some(Duration::from_secs(5)))
            .await
    }

    /// Tells the leader this worker drains or left; `Ok(false)` when the leader does not
    /// know it. A short deadline: a drain must not hang on a leader that is gone.
    pub(super) async fn post_leave(&self, phase: LeavePhase) -> reqwest::Result<bool> {
        let req = Leave {
            worker_id: self.id.clone(),
            phase,
        };
        let deadline = Some(Duration::from_secs(5));
        self.post_known("/internal/leave", &req, deadline).await
    }
}

/// An attempt's pending work, for the leader's stall detector: the batches waiting in its
/// inbox, plus one while its operator drains after the last input or while its operator has
/// input it has not taken (see [`in_operator`]). An operator that never finishes, or never
/// takes the input it was handed, is a stall even once every tuple has left the inbox for the
/// task's own buffers (an exactly-once task's log writer and feeder hold several commits).
fn pending(inbox: u32, s: &TaskStatus) -> u32 {
    let draining = s.draining.load(Ordering::Relaxed);
    inbox + u32::from(draining || in_operator(s))
}

/// Whether the task's operator holds it up: the task is inside a call to it, or its
/// executable's stdin writer has input the process has not taken (the task itself may be
/// waiting for input meanwhile): both run the task's working time.
fn in_operator(s: &TaskStatus) -> bool {
    s.working.is_running()
}

/// Applies a measured correction of this host's clock to the leader's, saying so when it
/// changes by more than a second (a clock that far off is worth an operator's look).
fn set_clock_offset(off: i64) {
    let before = crate::dataplane::clock::offset_ns();
    if (off - before).unsigned_abs() > 1_000_000_000 {
        warn!(
            offset_ms = off / 1_000_000,
            "this host's clock differs from the leader's; emit times and latencies are taken in the leader's time"
        );
    }
    crate::dataplane::clock::set_offset_ns(off);
}

/// Heartbeats every `every_ms` until the session ends; an answer `known: false` ends it.
pub(super) async fn heartbeats(
    link: LeaderLink,
    every_ms: u64,
    tasks: TaskTable,
    registry: Arc<Registry>,
    net: Arc<dyn crate::dataplane::transport::Network>,
) {
    let session = &link.session;
    let mut tick = tokio::time::interval(Duration::from_millis(every_ms.max(10)));
    // This host's clock against the leader's, measured on every heartbeat: emit times are
    // stamped in the leader's time (`dataplane::clock`).
    let mut clock = crate::dataplane::clock::ClockSync::default();
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if session.run_until_cancelled(tick.tick()).await.is_none() {
            return;
        }
        let reports: Vec<TaskReport> = lock_tasks(&tasks)
            .values()
            .map(|r| {
                let mut rep = report(&r.assignment, &r.status);
                let inbox = registry
                    .get(&r.assignment.key)
                    .map(|h| (h.tx.max_capacity() - h.tx.capacity()) as u32)
                    .unwrap_or(0);
                rep.queued = pending(inbox, &r.status);
                rep
            })
            .collect();
        let hb = Heartbeat {
            worker_id: link.id.clone(),
            tasks: reports,
            data: net.shared(),
            clock_offset_ns: crate::dataplane::clock::offset_ns(),
        };
        let req = link
            .request(reqwest::Method::POST, "/internal/heartbeat")
            .timeout(Duration::from_secs(5))
            .json(&hb)
            .send();
        let sent = crate::dataplane::clock::wall_ns();
        let Some(res) = session.run_until_cancelled(req).await else {
            return;
        };
        let came = crate::dataplane::clock::wall_ns();
        match res {
            Ok(r) => match r.json::<Known>().await {
                Ok(k) if !k.known => {
                    session.cancel();
                    return;
                }
                Ok(k) => {
                    if let Some(off) = clock.sample(sent, came, k.leader_ns) {
                        set_clock_offset(off);
                    }
                }
                Err(e) => warn!(error = %e, "bad heartbeat answer"),
            },
            Err(e) => warn!(error = %e, "heartbeat failed"),
        }
    }
}

/// Sends the reports queued on `rx` as they come (whatever is queued goes in one batch),
/// retrying each batch with backoff until the leader has it or the session ends.
pub(super) async fn send_events(
    link: LeaderLink,
    mut rx: mpsc::Receiver<TaskReport>,
) -> (mpsc::Receiver<TaskReport>, Vec<TaskReport>) {
    let session = &link.session;
    let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
    while let Some(Some(first)) = session.run_until_cancelled(rx.recv()).await {
        let mut reports = vec![first];
        while let Ok(r) = rx.try_recv() {
            reports.push(r);
        }
        backoff.reset();
        loop {
            let post = link.post_events(reports.clone());
            match session.run_until_cancelled(post).await {
                None => return (rx, reports),
                Some(Ok(true)) => break,
                Some(Ok(false)) => {
                    // The leader does not know this worker: the reports go with the rejoin.
                    session.cancel();
                    return (rx, reports);
                }
                Some(Err(e)) => warn!(error = %e, "reporting task events failed; retrying"),
            }
            if !pause(session, backoff.next()).await {
                return (rx, reports);
            }
        }
    }
    (rx, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task waiting inside a write to an operator that takes nothing, its inbox empty, has
    /// work pending. (It had none: a hung operator whose task had passed every tuple to its
    /// log writer and feeder was never declared stalled.)
    #[test]
    fn a_task_inside_a_call_to_its_operator_has_work_pending_with_an_empty_inbox() {
        let s = TaskStatus::default();
        assert_eq!(pending(0, &s), 0, "an idle task has no pending work");
        assert_eq!(pending(3, &s), 3);
        let feeding = s.working.run();
        assert_eq!(
            pending(0, &s),
            1,
            "a task inside its operator has pending work"
        );
        drop(feeding);
        assert_eq!(pending(0, &s), 0);
        s.draining.store(true, Ordering::Relaxed);
        assert_eq!(pending(2, &s), 3);
    }
}
