//! Ends of task attempts on their way to the report queue. The session loop must never wait
//! for room in that queue inside one of its branches: while the leader is away the queue
//! fills with progress reports, and a loop waiting there hears neither commands, nor
//! shutdown, nor the end of its session (whose reporter no longer reads the queue), so the
//! worker never rejoined (hostile review, probe 20). The loop pushes each end here instead,
//! and a branch of its own moves them into the queue as room appears.

use crate::protocol::control::TaskReport;
use std::collections::VecDeque;
use tokio::sync::mpsc;

/// Ends not queued yet, oldest first.
#[derive(Default)]
pub(super) struct Outbox(VecDeque<TaskReport>);

/// The report queue's reader is gone (the session ended).
#[derive(Debug)]
pub(super) struct Closed;

impl Outbox {
    /// Adds an end, to go after those before it.
    pub(super) fn push(&mut self, end: TaskReport) {
        self.0.push_back(end);
    }

    /// Moves the oldest end into `queue` once it has room; never resolves while there is
    /// none to move (a `select!` branch that waits until there is). Cancel-safe: the end
    /// leaves only with a slot reserved for it.
    pub(super) async fn send_next(
        &mut self,
        queue: &mpsc::Sender<TaskReport>,
    ) -> Result<(), Closed> {
        if self.0.is_empty() {
            return std::future::pending().await;
        }
        let permit = queue.reserve().await.map_err(|_| Closed)?;
        if let Some(end) = self.0.pop_front() {
            permit.send(end);
        }
        Ok(())
    }

    /// The ends never queued, oldest first.
    pub(super) fn into_unsent(self) -> Vec<TaskReport> {
        self.0.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn end(i: u32) -> TaskReport {
        use crate::model::ids::{JobId, TaskKey, TaskPos};
        use crate::protocol::control::{TaskAssignment, TaskRole};
        let key = TaskKey {
            job: JobId("job-1".into()),
            pos: TaskPos { stage: 1, index: i },
        };
        let role = TaskRole::Sink { path: "out".into() };
        let a = TaskAssignment::sample(key, role);
        crate::report::report(&a, &crate::runtime::task::TaskStatus::of(&a))
    }

    #[tokio::test]
    async fn an_end_waits_for_room_without_holding_anything_up() {
        let (tx, mut rx) = mpsc::channel(1);
        tx.send(end(0)).await.unwrap();
        let mut out = Outbox::default();
        assert!(
            out.send_next(&tx).now_or_never().is_none(),
            "nothing to send"
        );
        out.push(end(1));
        out.push(end(2));
        // The queue is full: the branch waits, and dropping the wait loses nothing.
        assert!(out.send_next(&tx).now_or_never().is_none());
        assert_eq!(rx.recv().await.unwrap().key.pos.index, 0);
        out.send_next(&tx).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().key.pos.index, 1);
        // The session ends: what is left goes to the next one, in order.
        drop(rx);
        assert!(out.send_next(&tx).await.is_err());
        let left: Vec<u32> = out.into_unsent().iter().map(|r| r.key.pos.index).collect();
        assert_eq!(left, [2]);
    }
}
