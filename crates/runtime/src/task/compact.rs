//! Compaction of a logged task's own input log, beside its group-commit writer: so a long
//! job's log is a bounded number of objects, however many commits it made (`docs/
//! exactly-once.md`, "Compaction"; the format and the safety argument are in
//! `store::log::compact`).
//!
//! Size-tiered: every commit adds a level-0 object; whenever the last `fanin` objects
//! committed at least `log_compact_lag_ms` ago (the newest object aside) are of one level and
//! together at most `log_compact_bytes`, they are merged into one object of the next level.
//! The newest object is never merged, so a listing that overlapped a merge sees an object
//! beyond what it missed and knows to look again. A log of `n` commits keeps about
//! `(fanin - 1)` objects per level, `log_fanin(n)` levels, and the commits of the last lag.
//!
//! The lag (Kafka's `min.compaction.lag.ms`) is what keeps a short job from paying for a
//! bound it never needs: a job that ends within it merges nothing (its log goes with it), where
//! a fan-in of 8 at once rewrote most of a one-second job's log (6% of its wall time,
//! docs/benchmarks.md).

use super::TaskEnv;
use crate::log::compact::{compact_run, Compacted};
use crate::model::ids::TaskKey;
use bytes::Bytes;
use std::ops::Range;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A committed segment: its path, and its bytes while few are queued (the compactor reads
/// the others back from the store when it merges them).
pub(super) type Committed = (String, Option<Bytes>);

/// One object of the attempt's own log, in slot order.
struct Entry {
    path: String,
    level: u32,
    bytes: u64,
    /// A level-0 segment's bytes while it may still be merged (saves reading it back).
    data: Option<Bytes>,
    /// When the compactor was handed it (a merged object: when its newest input was).
    at: Instant,
}

/// Bytes of level-0 segments a compactor keeps to merge from memory, newest first: a
/// level-0 merge's worth of the segments the writer hands over with their bytes (8 of at
/// most 256 KiB, `logged.rs`) and the newest besides; older ones are read back when merged.
const KEEP_BYTES: u64 = 9 * 256 * 1024;

/// Merges the attempt's own committed segments as they come (see the module doc); ends when
/// the writer drops its sender. A compaction that fails is logged and left (its objects stay
/// as they were: the log is as correct, only larger); once the attempt is fenced it merges
/// nothing more.
pub(super) async fn compactor(
    env: TaskEnv,
    key: TaskKey,
    attempt: u32,
    mut rx: mpsc::Receiver<Committed>,
) {
    let (fanin, max) = (env.cfg.log_compact_fanin, env.cfg.log_compact_bytes as u64);
    let lag = Duration::from_millis(env.cfg.log_compact_lag_ms as u64);
    let mut cover: Vec<Entry> = Vec::new();
    let mut fenced = false;
    while let Some((path, data, bytes)) = rx.recv().await.map(|(p, d)| {
        let n = d.as_ref().map_or(0, |d| d.len() as u64);
        (p, d, n)
    }) {
        if fenced {
            continue;
        }
        let bytes = match (bytes, &data) {
            (n, Some(_)) => n,
            // Sent without its bytes: its size, for the merge's cap, from the store.
            (_, None) => match env.store.size(&path).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(task = %key, attempt, %path, error = %e, "input log compaction could not size a segment; it stays as it is");
                    cover.clear();
                    continue;
                }
            },
        };
        cover.push(Entry {
            path,
            level: 0,
            bytes,
            data,
            at: Instant::now(),
        });
        while let Some(run) = next_run(&cover, fanin, max, Instant::now().checked_sub(lag)) {
            let items: Vec<(String, Option<Bytes>)> = cover[run.clone()]
                .iter()
                .map(|e| (e.path.clone(), e.data.clone()))
                .collect();
            // Never closed, so a permit always comes.
            let permit = env.merges.acquire().await;
            let merged = compact_run(&env.store, &key, attempt, &items).await;
            drop(permit);
            match merged {
                Ok(Compacted::Merged { path, bytes }) => {
                    let level = cover[run.start].level + 1;
                    tracing::debug!(task = %key, attempt, %path, level, bytes, "compacted the input log");
                    let merged = Entry {
                        path,
                        level,
                        bytes,
                        data: None,
                        at: cover[run.end - 1].at,
                    };
                    cover.splice(run, [merged]);
                }
                Ok(Compacted::Fenced) => {
                    fenced = true;
                    break;
                }
                Err(e) => {
                    // The merged object may be durable already (the fence check or a read
                    // after its write failed). Merging any of its run again, or anything on
                    // both sides of it, could write a run that overlaps it without nesting —
                    // a gap in every later listing — so the compactor forgets the run and
                    // everything before it: they stay as they are, and merges go on among
                    // the newer objects (those within the lag, with it).
                    tracing::warn!(task = %key, attempt, error = %e, "input log compaction failed; its objects stay as they are");
                    cover.drain(..run.end);
                    break;
                }
            }
        }
        // Only the newest objects are merged from memory (up to KEEP_BYTES of them).
        let mut kept = 0;
        for e in cover.iter_mut().rev() {
            if let Some(d) = &e.data {
                kept += d.len() as u64;
                if kept > KEEP_BYTES {
                    e.data = None;
                }
            }
        }
    }
}

/// The run to merge next, if any: among the objects handed over at or before `ripe` (`None`:
/// none is old enough yet), the newest object aside, the oldest `fanin` of the first level
/// that has that many, if they are not too large together (else the next level's). Objects
/// come in the order they were handed over, merged ones in place of their runs, so the ripe
/// ones are a prefix and levels never rise along the cover: objects of one level lie side
/// by side, and a merge of the oldest of them puts the next level's object right after the
/// older ones of that level, whatever number of commits ripened at once. (Merging the newest
/// `fanin` of a level instead stranded the older ones between two objects of the next level
/// whenever commits ripened more than one at a time, and a one-minute job kept 105 objects
/// per task: `commits_that_come_in_bursts_still_leave_a_bounded_log`.)
fn next_run(
    cover: &[Entry],
    fanin: usize,
    max: u64,
    ripe: Option<Instant>,
) -> Option<Range<usize>> {
    if fanin < 2 {
        return None;
    }
    let end = cover[..cover.len().saturating_sub(1)]
        .iter()
        .take_while(|e| ripe.is_some_and(|r| e.at <= r))
        .count();
    let mut start = 0;
    while start + fanin <= end {
        let level = cover[start].level;
        let same = cover[start..end]
            .iter()
            .take_while(|e| e.level == level)
            .count();
        if same >= fanin {
            let run = start..start + fanin;
            let bytes: u64 = cover[run.clone()].iter().map(|e| e.bytes).sum();
            if bytes <= max {
                return Some(run);
            }
        }
        start += same;
    }
    None
}

#[cfg(test)]
mod tests;
