//! Leaving the cluster without losing work: a draining worker tells the leader, which moves
//! its tasks elsewhere; once it runs nothing it delivers its last task ends and says it left.
//! The session loop (`session.rs`) decides when; this is what it says to the leader.

use super::link::LeaderLink;
use super::lock_tasks;
use super::state::Worker;
use crate::model::backoff::Backoff;
use crate::protocol::control::{LeavePhase, TaskReport};
use std::time::Duration;
use tracing::{info, warn};

impl Worker {
    /// Starts draining: tells the leader, which moves this worker's tasks; the deadline of
    /// the drain, or `None` (stop at once) when the leader cannot be told. A leader that does
    /// not answer is asked again, with backoff, until the drain's own timeout: its tasks run
    /// on meanwhile, and a leader back in time moves them as a drain's moves. (It stopped at
    /// once: with the leader paused, the worker went on beating while it stopped, took new
    /// tasks from the resumed leader, and was declared dead, its tasks failed; probe 21.)
    pub(super) async fn start_drain(&self, link: &LeaderLink) -> Option<tokio::time::Instant> {
        let deadline = tokio::time::Instant::now() + self.cfg.drain_timeout;
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
        let mut said = false;
        loop {
            match link.post_leave(LeavePhase::Draining).await {
                Ok(true) => {
                    info!(tasks = lock_tasks(&self.tasks).len(), timeout_s = self.cfg.drain_timeout.as_secs_f64(), "draining: the leader moves this worker's tasks, then it leaves (signal again to stop at once)");
                    return Some(deadline);
                }
                Ok(false) => {
                    warn!("the leader no longer knows this worker; stopping at once");
                    return None;
                }
                Err(e) => {
                    let pause = backoff.next();
                    if tokio::time::Instant::now() + pause >= deadline {
                        warn!(error = %e, "could not tell the leader this worker drains within the drain's timeout; stopping at once");
                        return None;
                    }
                    if !said {
                        said = true;
                        warn!(error = %e, timeout_s = self.cfg.drain_timeout.as_secs_f64(), "could not tell the leader this worker drains; asking again until the drain's timeout, its tasks running meanwhile (signal again to stop at once)");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = link.session.cancelled() => return None,
                    }
                }
            }
        }
    }

    /// Drained: delivers the last task ends, then tells the leader this worker left.
    pub(super) async fn leave(&self, link: &LeaderLink, last: Vec<TaskReport>) {
        if !last.is_empty() {
            if let Err(e) = link.post_events(last).await {
                warn!(error = %e, "could not deliver the last task ends before leaving");
            }
        }
        match link.post_leave(LeavePhase::Left).await {
            Ok(_) => info!("drained: left the cluster"),
            Err(e) => {
                warn!(error = %e, "drained, but could not tell the leader; it will find this worker silent")
            }
        }
    }
}
