//! How far a source attempt may route: its reach, made durable before it routes past it.
//!
//! A restarted source does not know how far its predecessors routed, yet a switch of the
//! first stage's key groups must be taken at a point no predecessor passed (a line an older
//! attempt routed by the old map must not go by the new one in a replay: docs/rescale.md §2).
//! Its receivers cannot always say, since a first-stage task keeps no log: restarted together
//! with the source it knows nothing of what its predecessor took. So the source says it
//! itself: before it routes line `n`, attempt `a` has written `reach-<a>` holding
//! `<epoch> <lines>` with `lines >= n`, and found itself unfenced after the write.
//!
//! A new attempt fences every earlier one (`fence-<a>`, as an input log does) and only then
//! reads their reaches: an older attempt either wrote its reach before the fence (then the
//! listing sees it, or a larger value written later) or sees the fence and routes nothing
//! past the reach it had. The largest reach of the epoch therefore bounds every line any
//! earlier attempt of it routed.

use crate::log::{fence_predecessors, put_then_check_fence, task_prefix, LogError};
use crate::model::ids::TaskKey;
use crate::store::Store;
use bytes::Bytes;

/// Store path of attempt `attempt`'s reach.
pub fn reach_path(key: &TaskKey, attempt: u32) -> String {
    format!("{}reach-{attempt:06}", task_prefix(key))
}

/// Why a reach could not be extended.
#[derive(Debug, thiserror::Error)]
pub enum ReachError {
    /// The store failed (after retries).
    #[error(transparent)]
    Log(#[from] LogError),
    /// A newer attempt fenced this one: it must route nothing more.
    #[error("a newer attempt of the source fenced this one")]
    Fenced,
}

/// Makes durable that attempt `attempt` of epoch `epoch` may route up to `lines` lines;
/// `Ok` only if it is not fenced after the write.
pub async fn extend(
    store: &Store,
    key: &TaskKey,
    epoch: u32,
    attempt: u32,
    lines: u64,
) -> Result<(), ReachError> {
    let body = Bytes::from(format!("{epoch} {lines}"));
    let path = reach_path(key, attempt);
    // Retried with the fence check after it, as a log commit is.
    match put_then_check_fence(
        store,
        &path,
        body,
        key,
        attempt,
        "extending the source's reach",
    )
    .await?
    {
        true => Err(ReachError::Fenced),
        false => Ok(()),
    }
}

/// Fences every attempt before `attempt` and returns the most lines any earlier attempt of
/// epoch `epoch` may have routed (0 when none wrote a reach).
pub async fn predecessors_reach(
    store: &Store,
    key: &TaskKey,
    epoch: u32,
    attempt: u32,
) -> Result<u64, LogError> {
    fence_predecessors(store, key, attempt).await?;
    let prefix = format!("{}reach-", task_prefix(key));
    let mut most = 0;
    for o in store.list(&prefix).await? {
        let Some(a) = o
            .path
            .strip_prefix(&prefix)
            .and_then(|a| a.parse::<u32>().ok())
        else {
            continue;
        };
        if a >= attempt {
            continue;
        }
        let data = store.get(&o.path).await.map_err(LogError::from)?;
        let text = String::from_utf8_lossy(&data);
        let mut words = text.split_whitespace().map(str::parse::<u64>);
        let (Some(Ok(e)), Some(Ok(lines)), None) = (words.next(), words.next(), words.next())
        else {
            return Err(LogError::Corrupt(o.path));
        };
        if e == u64::from(epoch) {
            most = most.max(lines);
        }
    }
    Ok(most)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ids::{JobId, TaskPos};

    fn source() -> TaskKey {
        TaskKey {
            job: JobId("j".into()),
            pos: TaskPos { stage: 0, index: 0 },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_that_fails_between_the_write_and_the_fence_check_is_retried() {
        let faulty = std::sync::Arc::new(crate::store::faulty::FaultyStore::default());
        let store = Store::objects(faulty.clone(), "faulty");
        let key = source();
        // The write goes through; the fence check after it fails once, then the write fails.
        faulty
            .fail_reads
            .store(1, std::sync::atomic::Ordering::Relaxed);
        extend(&store, &key, 0, 0, 100).await.unwrap();
        faulty
            .fail_puts
            .store(2, std::sync::atomic::Ordering::Relaxed);
        extend(&store, &key, 0, 0, 200).await.unwrap();
        assert_eq!(predecessors_reach(&store, &key, 0, 1).await.unwrap(), 200);
    }

    #[tokio::test]
    async fn a_restarted_source_learns_the_furthest_reach_of_its_epoch_and_fences_the_rest() {
        let (store, key) = (Store::memory(), source());
        extend(&store, &key, 0, 0, 500).await.unwrap();
        extend(&store, &key, 1, 1, 300).await.unwrap();
        extend(&store, &key, 1, 2, 200).await.unwrap();
        extend(&store, &key, 1, 2, 900).await.unwrap();
        assert_eq!(predecessors_reach(&store, &key, 1, 3).await.unwrap(), 900);
        // Epoch 0's reach does not count in epoch 1; a later attempt's own does not either.
        assert_eq!(predecessors_reach(&store, &key, 1, 2).await.unwrap(), 300);
        // Attempt 2 was fenced by attempt 3: it may not go further.
        assert!(matches!(
            extend(&store, &key, 1, 2, 1000).await,
            Err(ReachError::Fenced)
        ));
        assert_eq!(predecessors_reach(&store, &key, 1, 4).await.unwrap(), 1000);
        assert_eq!(predecessors_reach(&store, &key, 5, 6).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_damaged_reach_is_an_error_not_a_zero() {
        let (store, key) = (Store::memory(), source());
        store
            .put(&reach_path(&key, 0), Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert!(matches!(
            predecessors_reach(&store, &key, 0, 1).await,
            Err(LogError::Corrupt(_))
        ));
    }
}
