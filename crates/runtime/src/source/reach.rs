//! The source's reach kept ahead of what it routes (`store::reach`): extended in the
//! background when half of it is used, so a store write is rarely waited for. A reach counts
//! the source's outputs, the lines it routed: with a filter pushed into it
//! (`model::pushdown`) those are fewer than the lines it read, and its switch points and its
//! first stage's replays count outputs too.

use crate::model::ids::TaskKey;
use crate::reach::{extend, ReachError};
use crate::store::Store;
use tokio_util::task::AbortOnDropHandle;

/// Lines of one extension when the source is not paced: the whole catch-up of a restarted
/// attempt runs unpaced anyway.
const UNPACED_LINES: u64 = 1 << 20;

/// How many lines one extension adds at `rate` lines per second: about a second's worth, so
/// a restarted source's switch waits past its predecessors' reach at most that long.
fn chunk(rate: f64) -> u64 {
    if rate > 0.0 {
        (rate.ceil() as u64).clamp(16, UNPACED_LINES)
    } else {
        UNPACED_LINES
    }
}

/// See the module doc.
pub(super) struct Reach {
    store: Store,
    key: TaskKey,
    epoch: u32,
    attempt: u32,
    /// Outputs (lines routed) this attempt may route: durable, and it was not fenced after.
    granted: u64,
    /// An extension being written, to this many lines.
    pending: Option<(u64, AbortOnDropHandle<Result<(), ReachError>>)>,
}

impl Reach {
    /// Attempt `attempt` (of epoch `epoch`) of source `key`, with no reach yet.
    pub(super) fn new(store: Store, key: TaskKey, epoch: u32, attempt: u32) -> Reach {
        Reach {
            store,
            key,
            epoch,
            attempt,
            granted: 0,
            pending: None,
        }
    }

    /// Returns once output `n` (the `n`th line routed) may be routed (waiting for an extension only when the reach is
    /// used up), and starts the next extension when half of the reach is used.
    pub(super) async fn admit(&mut self, n: u64, rate: f64) -> Result<(), String> {
        let done = self.pending.as_ref().is_some_and(|(_, h)| h.is_finished());
        if done || (n > self.granted && self.pending.is_some()) {
            self.settle().await?;
        }
        let step = chunk(rate);
        if n > self.granted {
            self.start(n - 1 + step);
            self.settle().await?;
        }
        if self.pending.is_none() && n + step / 2 > self.granted {
            self.start(self.granted + step);
        }
        Ok(())
    }

    fn start(&mut self, lines: u64) {
        let (store, key, epoch, attempt) = (
            self.store.clone(),
            self.key.clone(),
            self.epoch,
            self.attempt,
        );
        let write = tokio::spawn(async move { extend(&store, &key, epoch, attempt, lines).await });
        self.pending = Some((lines, AbortOnDropHandle::new(write)));
    }

    /// Waits for the extension in flight.
    async fn settle(&mut self) -> Result<(), String> {
        let Some((lines, handle)) = self.pending.take() else {
            return Ok(());
        };
        match handle.await {
            Ok(Ok(())) => {
                self.granted = self.granted.max(lines);
                Ok(())
            }
            Ok(Err(e)) => Err(format!("extending the source's reach to line {lines}: {e}")),
            Err(e) => Err(format!("extending the source's reach to line {lines}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ids::{JobId, TaskPos};
    use crate::reach::predecessors_reach;

    #[tokio::test]
    async fn the_reach_stays_ahead_of_every_line_routed() {
        let key = TaskKey {
            job: JobId("j".into()),
            pos: TaskPos { stage: 0, index: 0 },
        };
        let store = Store::memory();
        let mut r = Reach::new(store.clone(), key.clone(), 2, 3);
        for n in 1..=100 {
            r.admit(n, 10.0).await.unwrap();
            assert!(
                r.granted >= n,
                "line {n} routed past the reach {}",
                r.granted
            );
        }
        // What a successor reads covers every line routed, and not by more than the chunks.
        let seen = predecessors_reach(&store, &key, 2, 4).await.unwrap();
        assert!((100..=100 + 2 * chunk(10.0)).contains(&seen), "{seen}");
        // Fenced now: the next extension fails, and the source with it.
        let mut failed = None;
        for n in 101..=200 {
            if let Err(e) = r.admit(n, 10.0).await {
                failed = Some(n);
                assert!(e.contains("fenced"), "{e}");
                break;
            }
        }
        let failed = failed.expect("a fenced source stops");
        assert!(
            failed <= seen + 1,
            "line {failed} admitted past the reach {seen} read"
        );
    }
}
