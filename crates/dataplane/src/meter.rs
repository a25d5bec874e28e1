//! Cheap meters for the data path: a stopwatch that accumulates the time spent in some state
//! (processing, blocked on a full queue) and what a router measures of its sends. They are
//! started and stopped once per batch, never per tuple, and read by heartbeats from another
//! task: a reading includes the interval in progress, so a task blocked for a minute shows it
//! while it is still blocked.

use crate::model::ids::TaskPos;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::time::Instant;

/// Accumulated time in one state, plus the interval in progress if the state holds now. The
/// tokio clock, so that tests on a paused clock measure virtual time. Several holders may be
/// in the state at once (a task inside a call to its operator, and the writer of that
/// operator's stdin): the state holds while any of them is in it.
#[derive(Debug, Default)]
pub struct Stopwatch {
    /// Time of the intervals that ended, ns; the start of the one in progress; and how many
    /// guards hold it.
    inner: Mutex<(u64, Option<Instant>, u32)>,
}

impl Stopwatch {
    /// Starts an interval, or joins the one in progress; it ends when the last guard is
    /// dropped (on every exit path, a cancelled future's included).
    pub fn run(&self) -> Running<'_> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.2 == 0 {
            g.1 = Some(Instant::now());
        }
        g.2 += 1;
        Running(self)
    }

    /// Total time so far, ns, the interval in progress included.
    pub fn read_ns(&self) -> u64 {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0 + g.1.map_or(0, |s| s.elapsed().as_nanos() as u64)
    }

    /// Whether an interval is in progress now: for a task's working time, that it is inside
    /// a call to its operator or its operator has input it has not taken, which a hung
    /// operator never leaves.
    pub fn is_running(&self) -> bool {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.1.is_some()
    }

    fn stop(&self) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.2 = g.2.saturating_sub(1);
        if g.2 == 0 {
            if let Some(s) = g.1.take() {
                g.0 += s.elapsed().as_nanos() as u64;
            }
        }
    }
}

/// A holder of a [`Stopwatch`]'s interval; dropping the last one ends the interval.
#[must_use = "the interval ends when this is dropped"]
pub struct Running<'a>(&'a Stopwatch);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// What a router measures of its output, shared with whoever reports it.
#[derive(Debug, Default)]
pub struct SendMeter {
    /// Key and value bytes of the batches handed to links.
    pub bytes: AtomicU64,
    /// Time spent waiting for room in a full link queue (back-pressure from downstream).
    pub blocked: Stopwatch,
    /// Since when each link without a connection has tried to reach its receiver.
    unreached: std::sync::Mutex<std::collections::BTreeMap<TaskPos, tokio::time::Instant>>,
}

impl SendMeter {
    /// Bytes handed to links so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The link to `to` has no connection and tries to make one (from now, unless it has
    /// been trying since earlier).
    pub fn unreached(&self, to: TaskPos) {
        let mut m = self.unreached.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(to).or_insert_with(tokio::time::Instant::now);
    }

    /// The link to `to` is connected again, or ended.
    pub fn reached(&self, to: TaskPos) {
        let mut m = self.unreached.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(&to);
    }

    /// The receiver this task's links have tried to reach longest, and for how long: a
    /// worker-to-worker cut, named in the job's views before the stall detector acts.
    pub fn longest_unreached(&self) -> Option<(TaskPos, std::time::Duration)> {
        let m = self.unreached.lock().unwrap_or_else(|p| p.into_inner());
        m.iter()
            .min_by_key(|(_, since)| **since)
            .map(|(to, since)| (*to, since.elapsed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn the_receiver_tried_longest_is_the_one_reported_until_it_is_reached() {
        let m = SendMeter::default();
        let (a, b) = (
            TaskPos { stage: 2, index: 0 },
            TaskPos { stage: 2, index: 1 },
        );
        assert_eq!(m.longest_unreached(), None);
        m.unreached(a);
        tokio::time::sleep(Duration::from_secs(3)).await;
        m.unreached(b);
        m.unreached(a); // still trying: counted from the first try
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(m.longest_unreached(), Some((a, Duration::from_secs(4))));
        m.reached(a);
        assert_eq!(m.longest_unreached(), Some((b, Duration::from_secs(1))));
        m.reached(b);
        assert_eq!(m.longest_unreached(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopwatch_counts_intervals_and_the_one_in_progress() {
        let w = Stopwatch::default();
        {
            let _r = w.run();
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(w.read_ns(), 2_000_000_000);
        let outer = w.run();
        let inner = w.run();
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(inner);
        assert_eq!(w.read_ns(), 3_000_000_000, "in progress, inner guard inert");
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(outer);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(w.read_ns(), 4_000_000_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopwatch_runs_while_any_holder_holds_it() {
        // A task and its operator's stdin writer: the first to start is not always the last
        // to stop, and the interval must last until the last one does (a task waiting for
        // its operator to finish is inside it after the writer is done).
        let w = Stopwatch::default();
        let writer = w.run();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let task = w.run();
        drop(writer);
        assert!(w.is_running(), "the task still holds it");
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(task);
        assert!(!w.is_running());
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(w.read_ns(), 3_000_000_000);
    }
}
