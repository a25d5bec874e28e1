//! Leaving the cluster without losing work: a draining worker tells the leader, which moves
//! its tasks elsewhere; once it runs nothing it delivers its last task ends and says it left.
//! The session loop (`session.rs`) decides when; this is what it says to the leader.

use super::link::LeaderLink;
use super::lock_tasks;
use super::state::Worker;
use crate::protocol::control::{LeavePhase, TaskReport};
use tracing::{info, warn};

impl Worker {
    /// Starts draining: tells the leader, which moves this worker's tasks; the deadline of
    /// the drain, or `None` (stop at once) when the leader cannot be told.
    pub(super) async fn start_drain(&self, link: &LeaderLink) -> Option<tokio::time::Instant> {
        match link.post_leave(LeavePhase::Draining).await {
            Ok(true) => {
                info!(tasks = lock_tasks(&self.tasks).len(), timeout_s = self.cfg.drain_timeout.as_secs_f64(), "draining: the leader moves this worker's tasks, then it leaves (signal again to stop at once)");
                Some(tokio::time::Instant::now() + self.cfg.drain_timeout)
            }
            Ok(false) => {
                warn!("the leader no longer knows this worker; stopping at once");
                None
            }
            Err(e) => {
                warn!(error = %e, "could not tell the leader this worker drains; stopping at once");
                None
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
