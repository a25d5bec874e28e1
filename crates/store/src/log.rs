//! A task's durable input log (exactly-once).
//!
//! Format: the log of task `(job, stage, index)` lives under `logs/<job>/<stage>.<index>/` as
//! immutable segments `<attempt>-<n>.seg`, each one group commit:
//! `"RSEG" | u32 record count | records | 16-byte tag`, the tag sealing everything before it
//! to the segment's store path with the cluster secret (`seal`). A record is
//! `1 | from u32 | first_seq u64 | emit_ns u64 | tuples` (only the non-duplicate tuples of a
//! batch, in the order the task consumed them) or `2 | from u32 | last_seq u64` (an end of stream).
//!
//! Invariants:
//! - A batch is acknowledged upstream only after the segment holding it is durable.
//! - Replay order = consumption order, so a deterministic operator regenerates the same outputs
//!   with the same sequence numbers.
//! - Lineage: attempt N first writes `<N>-manifest`, the exact segment list it recovered from;
//!   attempt N+1 recovers from the newest manifest plus that attempt's own segments. Segments a
//!   stale (declared-dead) attempt writes later are never part of anyone's history.
//! - Fencing: before it lists anything, attempt N writes `fence-<a>` for every earlier attempt
//!   `a`, and an attempt checks its own fence after every segment write, before it acknowledges
//!   or processes anything in it. So an older attempt that is still running (a restart queued
//!   but not yet acted on, a partitioned zombie, a restart on the same worker) can never
//!   acknowledge or process input that is missing from its successor's lineage: either its
//!   write came before the fence (then the successor's listing sees it) or it sees the fence
//!   and stops.

use crate::model::ids::TaskKey;
use crate::model::tuple::Tuple;
use crate::store::{Store, StoreError};
use bytes::Bytes;

pub mod compact;
mod manifest;
mod segment;
pub use segment::{
    decode_segment, encode_batch_record, encode_record, open_segment, seal_in_place, seal_segment,
    segment_values, segment_values_written,
};

/// The accepted tuples of one batch, as logged.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRecord {
    /// Upstream task index.
    pub from: u32,
    /// Sequence number of the first tuple.
    pub first_seq: u64,
    /// Emit time.
    pub emit_ns: u64,
    /// The tuples.
    pub tuples: Vec<Tuple>,
}

/// One logged input record.
#[derive(Debug, Clone, PartialEq)]
pub enum LogRecord {
    /// Accepted tuples of a batch.
    Batch(BatchRecord),
    /// End of stream of a link.
    Eos {
        /// Upstream task index.
        from: u32,
        /// Last sequence number.
        last_seq: u64,
    },
}

/// A log that cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A segment is damaged.
    #[error("log segment {0} is corrupt")]
    Corrupt(String),
    /// An object's tag does not match its bytes and its path under the cluster's key: it was
    /// changed, made up, or copied from elsewhere in the store, by someone without the
    /// cluster secret (or written by a cluster with another secret).
    #[error("log object {0} is not sealed by this cluster's secret (changed, copied from another task or slot, or written with another secret)")]
    Unsealed(String),
    /// Objects of a log are gone: no object holds slots `from..to` (deleted from the store).
    #[error("log {log} is missing the objects of slots {from} to {last} (deleted from the store?)", last = .to - 1)]
    Missing {
        /// The log's prefix.
        log: String,
        /// The first slot no object holds.
        from: u64,
        /// The next slot an object holds.
        to: u64,
    },
}

/// Store prefix of a task's log.
pub fn task_prefix(key: &TaskKey) -> String {
    format!("logs/{}/{}.{}/", key.job, key.pos.stage, key.pos.index)
}

/// The task whose log holds store path `path` (`logs/<job>/<stage>.<index>/<name>`, spelled
/// exactly as [`task_prefix`] spells it), if it names an object of a task's log.
pub fn log_task(path: &str) -> Option<TaskKey> {
    let mut parts = path.split('/');
    let (Some("logs"), Some(job), Some(pos), Some(name), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let (stage, index) = pos.split_once('.')?;
    let key = TaskKey {
        job: crate::model::ids::JobId(job.to_string()),
        pos: crate::model::ids::TaskPos {
            stage: stage.parse().ok()?,
            index: index.parse().ok()?,
        },
    };
    (!job.is_empty() && !name.is_empty() && format!("{}{name}", task_prefix(&key)) == path)
        .then_some(key)
}

/// Store prefix of a job's logs.
pub fn job_prefix(job: &crate::model::ids::JobId) -> String {
    format!("logs/{job}")
}

fn attempt_of(name: &str) -> Option<u32> {
    name.split('-').next()?.parse().ok()
}

/// Store path of attempt `attempt`'s fence: once it exists, that attempt may neither
/// acknowledge nor process anything it logs.
pub fn fence_path(key: &TaskKey, attempt: u32) -> String {
    format!("{}fence-{attempt:06}", task_prefix(key))
}

/// Whether attempt `attempt` has been fenced by a successor.
pub async fn fenced(store: &Store, key: &TaskKey, attempt: u32) -> Result<bool, LogError> {
    Ok(store.exists(&fence_path(key, attempt)).await?)
}

/// Recovers the segment list attempt `attempt` must replay, and records it as that attempt's
/// manifest. Fences every earlier attempt first (see the module doc). Returns segment store
/// paths in replay order.
pub async fn recover_lineage(
    store: &Store,
    key: &TaskKey,
    attempt: u32,
) -> Result<Vec<String>, LogError> {
    fence_predecessors(store, key, attempt).await?;
    // Newest earlier attempt that wrote a manifest (attempt 0 has an implicit empty one).
    let (_, lineage) = latest_lineage(store, key, attempt).await?;
    if attempt > 0 {
        let path = manifest_path(key, attempt);
        let manifest = manifest::seal(store.seal(), &path, &lineage)?;
        put_retrying(store, &path, manifest).await?;
    }
    Ok(lineage)
}

/// Starts attempt `attempt`'s log afresh: fences every earlier attempt, as
/// [`recover_lineage`] does, and records an empty manifest, so none of their segments is in
/// this attempt's lineage (nor in what [`committed_lineage`] reads from now on). For an
/// at-least-once operator's log: each attempt of it runs in a new epoch, whose upstream sends
/// everything again from the source, so what earlier epochs logged is no longer its input.
pub async fn start_lineage_afresh(
    store: &Store,
    key: &TaskKey,
    attempt: u32,
) -> Result<(), LogError> {
    fence_predecessors(store, key, attempt).await?;
    if attempt > 0 {
        let path = manifest_path(key, attempt);
        let manifest = manifest::seal(store.seal(), &path, &[])?;
        put_retrying(store, &path, manifest).await?;
    }
    Ok(())
}

/// Writes `fence-<a>` for every attempt `a` before `attempt` that has none yet: from then on
/// none of them may act on a write it makes (it checks its fence after each one).
pub async fn fence_predecessors(
    store: &Store,
    key: &TaskKey,
    attempt: u32,
) -> Result<(), LogError> {
    if attempt == 0 {
        return Ok(());
    }
    let existing: std::collections::BTreeSet<String> = store
        .list(&task_prefix(key))
        .await?
        .into_iter()
        .map(|o| o.path)
        .collect();
    for a in 0..attempt {
        let fence = fence_path(key, a);
        if !existing.contains(&fence) {
            put_retrying(store, &fence, Bytes::new()).await?;
        }
    }
    Ok(())
}

/// Tries of a log write (a commit, a source's reach, a fence or a manifest) whose store
/// answered with an error, before its attempt fails: with the backoff, about 2.5 s.
pub const WRITE_TRIES: u32 = 8;

/// How long a log write is retried while the store does not answer at all
/// ([`StoreError::Unreachable`]: the leader's store, with the leader away). It outlasts a
/// leader restart, which takes seconds: every attempt a restart failed would count against
/// its task's restarts ([`WRITE_TRIES`] alone failed every logged task of a leader restarted
/// within 3 s). A store that answers — a full disk, a refusal — still fails after
/// [`WRITE_TRIES`].
pub const WRITE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Writes `data` to `path`, then checks whether attempt `attempt` of `key` is fenced; the
/// write and the check are retried together (see [`retrying`]), so
/// a store that fails between them (a leader restarting under a cluster's store) costs a
/// retry, not the caller. `Ok(true)`: fenced, the caller must go no further. `what` names the
/// write in the retry warnings.
pub async fn put_then_check_fence(
    store: &Store,
    path: &str,
    data: Bytes,
    key: &TaskKey,
    attempt: u32,
    what: &str,
) -> Result<bool, LogError> {
    retrying(path, what, || async {
        store.put(path, data.clone()).await?;
        fenced(store, key, attempt).await
    })
    .await
}

/// Writes a fence or a manifest, retrying a failed write with backoff: both are idempotent,
/// and a store that fails a few writes in a row must not cost the attempt (every attempt it
/// costs counts against the task's restarts, and a restarted attempt meets the same store).
pub(crate) async fn put_retrying(store: &Store, path: &str, data: Bytes) -> Result<(), LogError> {
    let what = "input log recovery write";
    retrying(path, what, || async {
        Ok(store.put(path, data.clone()).await?)
    })
    .await
}

/// Runs `op` (a write of store path `path`, named `what` in the warnings) until it succeeds,
/// with backoff from 20 ms to 2 s between tries: [`WRITE_TRIES`] tries, or for
/// [`WRITE_PATIENCE`] while the store does not answer; the last error if none succeeded.
async fn retrying<T, F, Fut>(path: &str, what: &str, mut op: F) -> Result<T, LogError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, LogError>>,
{
    let mut backoff = crate::model::backoff::Backoff::new(
        std::time::Duration::from_millis(20),
        std::time::Duration::from_secs(2),
    );
    let started = tokio::time::Instant::now();
    let mut tried = 0;
    loop {
        tried += 1;
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                let unanswered = matches!(e, LogError::Store(StoreError::Unreachable(_)));
                let done = match unanswered {
                    true => started.elapsed() >= WRITE_PATIENCE,
                    false => tried >= WRITE_TRIES,
                };
                if done {
                    return Err(e);
                }
                let d = backoff.next();
                tracing::warn!(%path, error = %e, retry_in = ?d, "{what} failed; retrying");
                tokio::time::sleep(d).await;
            }
        }
    }
}

fn manifest_path(key: &TaskKey, attempt: u32) -> String {
    format!("{}{attempt:06}-manifest", task_prefix(key))
}

/// The lineage of the newest attempt below `below` that recorded a manifest (attempt 0 has an
/// implicit empty one): that manifest and the segments that attempt wrote, as listed now, with
/// the attempt's number. Its own segments are complete once that attempt stopped writing.
async fn latest_lineage(
    store: &Store,
    key: &TaskKey,
    below: u32,
) -> Result<(u32, Vec<String>), LogError> {
    let mut tries = 0;
    loop {
        tries += 1;
        match listed_lineage(store, key, below).await? {
            Ok(found) => return Ok(found),
            // A listing that overlapped a compaction: look again (see `compact`).
            Err(compact::Gap(..)) if tries < 50 => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await
            }
            Err(compact::Gap(from, to)) => {
                return Err(LogError::Missing {
                    log: task_prefix(key),
                    from,
                    to,
                })
            }
        }
    }
}

/// [`latest_lineage`] from one listing.
async fn listed_lineage(
    store: &Store,
    key: &TaskKey,
    below: u32,
) -> Result<Result<(u32, Vec<String>), compact::Gap>, LogError> {
    let prefix = task_prefix(key);
    let paths: Vec<String> = store
        .list(&prefix)
        .await?
        .into_iter()
        .map(|o| o.path)
        .collect();
    let names: Vec<&str> = paths
        .iter()
        .filter_map(|p| p.strip_prefix(&prefix))
        .collect();
    let base = names
        .iter()
        .filter(|n| n.ends_with("-manifest"))
        .filter_map(|n| attempt_of(n))
        .filter(|a| *a < below)
        .max();
    let mut lineage = match base {
        Some(a) => {
            let path = manifest_path(key, a);
            let data = store.get(&path).await?;
            manifest::open(store.seal(), &path, &prefix, &data)?
        }
        None => Vec::new(),
    };
    let base = base.unwrap_or(0);
    match compact::cover(&paths, base) {
        Ok(own) => lineage.extend(own),
        Err(gap) => return Ok(Err(gap)),
    }
    Ok(Ok((base, lineage)))
}

/// The whole history of attempt `attempt` as of now: what it recovered (its manifest) and the
/// segments it wrote since. Complete once the attempt has stopped writing.
pub async fn lineage_of(
    store: &Store,
    key: &TaskKey,
    attempt: u32,
) -> Result<Vec<String>, LogError> {
    // Every attempt but the first records its manifest before it writes a segment.
    Ok(latest_lineage(store, key, attempt.saturating_add(1))
        .await?
        .1)
}

/// What a reader may take as committed in a task's log right now, writing nothing: the
/// newest attempt that recorded a manifest, with the segments it wrote so far — provided that
/// attempt is not fenced *after* the listing, which puts every listed segment before any fence
/// and so in every successor's lineage (the writer's own argument, see the module doc). Each
/// answer is therefore a prefix of every later one. `None` while a successor is taking over
/// (ask again).
pub async fn committed_lineage(
    store: &Store,
    key: &TaskKey,
) -> Result<Option<Vec<String>>, LogError> {
    let (newest, lineage) = latest_lineage(store, key, u32::MAX).await?;
    if fenced(store, key, newest).await? {
        return Ok(None);
    }
    Ok(Some(lineage))
}

/// Whether a task's log holds any segment, as listed now. Once no attempt of the task can
/// write any more (its job ended, its output gate closed), none means nothing was ever
/// committed, whatever takeover was under way when it stopped.
pub async fn holds_segments(store: &Store, key: &TaskKey) -> Result<bool, LogError> {
    Ok(!latest_lineage(store, key, u32::MAX).await?.1.is_empty())
}

/// Name of segment `n` of an attempt.
pub fn segment_path(key: &TaskKey, attempt: u32, n: u64) -> String {
    format!("{}{attempt:06}-{n:010}.seg", task_prefix(key))
}

#[cfg(test)]
mod tests;
