//! What a running job's driver reacts to, until the job's outcome is known: task ends
//! (restart under exactly-once, fail otherwise), the sink task's end (then a short drain for
//! the other tasks' own reports), cancellation, and tasks a restarted leader never got back.
//! The source never finishes (it serves restarted first-stage tasks until the job ends): what
//! is waited for is its report that its whole stream is acknowledged.

use super::driver::{JobRun, Outcome};
use super::job::JobEvent;
use super::placement::{recovery, Recovery};
use super::state::lock;
use crate::protocol::control::TaskState;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{info, warn};

impl JobRun {
    /// Runs the job until its outcome is known.
    pub(super) async fn watch(&mut self, events: &mut mpsc::Receiver<JobEvent>) -> Outcome {
        let mut sink_done = false;
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        // Failures the driver finds itself (tasks of a resumed job nobody brought back).
        let mut found: std::collections::VecDeque<JobEvent> = Default::default();
        loop {
            if sink_done {
                // Every task finished but the source, which serves on once its whole stream
                // is acknowledged: then its counters are final too.
                let all_finished = lock(&self.leader.state)
                    .tasks
                    .iter()
                    .filter(|(k, _)| k.job == self.id)
                    .all(|(k, t)| {
                        if k.pos.stage == 0 {
                            t.done
                        } else {
                            t.state == TaskState::Finished
                        }
                    });
                if all_finished {
                    return Outcome::Succeeded;
                }
            }
            let ev = match found.pop_front() {
                Some(ev) => ev,
                None => {
                    let deadline = async {
                        match drain_deadline {
                            Some(d) => tokio::time::sleep_until(d).await,
                            None => std::future::pending().await,
                        }
                    };
                    let adopt = async {
                        match self.adopt_deadline {
                            Some(d) => tokio::time::sleep_until(d).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        biased;
                        _ = self.cancel.cancelled() => return Outcome::Cancelled,
                        _ = deadline => {
                            // Every tuple is durable in the sink; a task that has not reported its end
                            // is stopped by cleanup. The output is complete, so the job succeeded.
                            warn!(job = %self.id, "some tasks did not report their end after the sink completed");
                            return Outcome::Succeeded;
                        }
                        _ = adopt => {
                            self.adopt_deadline = None;
                            for (key, attempt) in self.unadopted() {
                                found.push_back(JobEvent::TaskEnded {
                                    key,
                                    attempt,
                                    state: TaskState::Failed,
                                    error: Some("its worker did not rejoin the restarted leader".into()),
                                });
                            }
                            continue;
                        }
                        Some(ev) = events.recv() => ev,
                    }
                }
            };
            let JobEvent::TaskEnded {
                key,
                attempt,
                state,
                error,
            } = ev
            else {
                continue; // the source is done: look again whether the job is complete
            };
            if state == TaskState::Finished {
                if let Err(e) = self.task_finished(&key, attempt).await {
                    return Outcome::Failed(e);
                }
                let current = lock(&self.leader.state).tasks.get(&key).map(|t| t.attempt);
                if key.pos.stage == self.spec.stages.len() as u32 + 1 && current == Some(attempt) {
                    // The sink holds every end of stream and wrote the output.
                    info!(job = %self.id, "sink finished");
                    sink_done = true;
                    drain_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(10));
                }
                continue;
            }
            let current = lock(&self.leader.state).tasks.get(&key).map(|t| t.attempt);
            if current != Some(attempt) {
                continue; // a stale attempt (an earlier epoch's, stopped on purpose)
            }
            let cause = error.unwrap_or_else(|| {
                format!(
                    "task {}",
                    if state == TaskState::Cancelled {
                        "stopped"
                    } else {
                        "failed"
                    }
                )
            });
            warn!(job = %self.id, task = %key.pos, attempt, %cause, "task failed");
            {
                let mut st = lock(&self.leader.state);
                if let Some(j) = st.jobs.get_mut(&self.id) {
                    j.failures += 1;
                }
            }
            if attempt >= self.leader.cfg.max_restarts {
                return Outcome::Failed(format!(
                    "task {} failed {} times; last cause: {cause}",
                    key.pos,
                    attempt + 1
                ));
            }
            let res = match recovery(self.spec.delivery) {
                Recovery::RestartTask => self.restart_task(&key, attempt).await,
                Recovery::RestartEpoch => {
                    sink_done = false;
                    drain_deadline = None;
                    self.restart_epoch().await
                }
                Recovery::Fail => Err(format!(
                    "task {} failed ({cause}); at-most-once never re-runs work, so the job ends with the output written so far",
                    key.pos
                )),
            };
            if let Err(e) = res {
                return Outcome::Failed(e);
            }
        }
    }
}
