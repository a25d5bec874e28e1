//! The door for a job's output written through the leader by its sink, closed when the job's
//! cleanup starts so that the leader is the output's last writer.

use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;

/// The leader's door for the writes of a job's output that its sink makes through the store
/// API (a worker without a store of its own uploads the output through the leader).
///
/// The rule, so that an output is whole and a late sink write cannot replace it: **once the
/// job's cleanup starts, the leader is the output's last writer.** Closing the gate (the first
/// thing cleanup does) refuses every new sink write of the output, aborts every admitted one
/// whose body is still arriving (a body that did not end is never committed), and cleanup then
/// waits until every admitted write has finished with the store before it writes what the job
/// committed. Nothing the sink sends can land after that. The gate only counts and signals:
/// it is safe to use under the state lock, and its wait is awaited outside it.
#[derive(Debug)]
pub struct OutputGate {
    /// Cancelled when the gate closes: admitted writes stop taking their body and fail.
    closed: CancellationToken,
    /// One token per admitted write, dropped when the store has finished with it.
    writes: TaskTracker,
}

/// One admitted write of a job's output: the gate waits for it until it is dropped, which the
/// writer does only once the store has finished with the write (committed or not).
#[derive(Debug)]
pub struct OutputWrite {
    /// Cancelled when the job's cleanup starts: the write must stop taking its body and fail.
    pub closed: CancellationToken,
    /// Keeps the gate's wait waiting.
    _held: TaskTrackerToken,
}

impl Default for OutputGate {
    fn default() -> Self {
        OutputGate {
            closed: CancellationToken::new(),
            writes: TaskTracker::new(),
        }
    }
}

impl OutputGate {
    /// Admits one sink write of the output, or `None` once the gate is closed (the job is
    /// ending and its output is the leader's to write).
    pub fn admit(&self) -> Option<OutputWrite> {
        // Counted before the check: a close that comes after the check waits for this write.
        let held = self.writes.token();
        (!self.closed.is_cancelled()).then(|| OutputWrite {
            closed: self.closed.clone(),
            _held: held,
        })
    }

    /// Closes the gate (no new write; admitted writes still receiving their body fail) and
    /// returns the wait for the admitted writes to finish, to be awaited outside the state
    /// lock. Closing again changes nothing and returns the same wait.
    pub fn close(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.shut_now();
        let writes = self.writes.clone();
        async move { writes.wait().await }
    }

    /// A gate closed from the start: an ended job's (restored from an earlier leader).
    pub(crate) fn shut() -> OutputGate {
        let gate = OutputGate::default();
        gate.shut_now();
        gate
    }

    fn shut_now(&self) {
        self.closed.cancel();
        self.writes.close();
    }

    /// Admitted writes not yet finished (for the log).
    pub fn in_flight(&self) -> usize {
        self.writes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_output_gate_admits_nothing_and_waits_out_the_writes_it_admitted() {
        let gate = OutputGate::default();
        let early = gate.admit().expect("an open gate admits the sink's writes");
        let done = gate.admit().expect("an open gate admits the sink's writes");
        drop(done);
        assert_eq!(gate.in_flight(), 1);
        let mut wait = Box::pin(gate.close());
        assert!(
            early.closed.is_cancelled(),
            "closing tells admitted writes to stop"
        );
        assert!(gate.admit().is_none(), "a closed gate admits nothing");
        // The wait is not over while an admitted write has not finished with the store.
        assert!(futures::poll!(wait.as_mut()).is_pending());
        drop(early);
        wait.await;
        // Closing again is harmless, and there is nothing left to wait for.
        gate.close().await;
        assert!(OutputGate::shut().admit().is_none());
    }
}
