//! Compaction of a logged task's own input log, beside its group-commit writer: so a long
//! job's log is a bounded number of objects, however many commits it made (`docs/
//! exactly-once.md`, "Compaction"; the format and the safety argument are in
//! `store::log::compact`).
//!
//! Size-tiered: every commit adds a level-0 object; whenever the `fanin` objects before the
//! newest are of one level and together at most `log_compact_bytes`, they are merged into one
//! object of the next level. The newest object is never merged, so a listing that overlapped
//! a merge sees an object beyond what it missed and knows to look again. A log of `n` commits
//! keeps about `(fanin - 1)` objects per level, `log_fanin(n)` levels.

use super::TaskEnv;
use crate::log::compact::{compact_run, Compacted};
use crate::model::ids::TaskKey;
use bytes::Bytes;
use std::ops::Range;
use tokio::sync::mpsc;

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
}

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
        });
        while let Some(run) = next_run(&cover, fanin, max) {
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
                    };
                    cover.splice(run, [merged]);
                }
                Ok(Compacted::Fenced) => {
                    fenced = true;
                    break;
                }
                Err(e) => {
                    // The merged object may be durable already (the fence check or a read
                    // after its write failed). Merging any of these objects again could write
                    // a run that overlaps it without nesting — a gap in every later listing —
                    // so the compactor forgets them: they stay as they are, and merges go on
                    // from the next segment.
                    tracing::warn!(task = %key, attempt, error = %e, "input log compaction failed; its objects stay as they are");
                    cover.clear();
                    break;
                }
            }
        }
        // Only the newest objects can still be merged from memory.
        let old = cover.len().saturating_sub(fanin + 1);
        for e in &mut cover[..old] {
            e.data = None;
        }
    }
}

/// The run to merge next, if any: the `fanin` objects before the newest, when they are of
/// one level and not too large together.
fn next_run(cover: &[Entry], fanin: usize, max: u64) -> Option<Range<usize>> {
    if fanin < 2 || cover.len() < fanin + 1 {
        return None;
    }
    let end = cover.len() - 1;
    let run = end - fanin..end;
    let level = cover[run.start].level;
    let same = cover[run.clone()].iter().all(|e| e.level == level);
    let bytes: u64 = cover[run.clone()].iter().map(|e| e.bytes).sum();
    (same && bytes <= max).then_some(run)
}

#[cfg(test)]
mod tests;
