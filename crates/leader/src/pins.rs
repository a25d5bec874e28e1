//! Which pinned operators (`blobs/sha256/HEX`, written at submission) may be removed. A blob
//! stays while a job the leader knows (running, or ended and within its retention) names it,
//! or a submission is pinning it; once the last job naming it expires, it goes. Before, every
//! blob stayed for good: a cluster whose users edited their scripts kept one per edit
//! (hostile probe 19 counted 115 after an hour of churn), and the store's API refuses to
//! delete under `blobs/`.
//!
//! A submission holds each blob it pins ([`Pins::hold`]) from before it looks the blob up
//! until its job is recorded or refused, and a removal marks its blobs first
//! ([`Pins::take_unused`]): so a blob is never removed between a submission finding it and
//! its job naming it, and a submission that meets a removal under way waits for it to end,
//! then writes the blob again.

use crate::model::spec::{JobSpec, OperatorSpec};
use rainstorm_store::store::pinned_hash;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// The blobs submissions hold and those being removed.
#[derive(Default)]
pub struct Pins {
    state: Mutex<PinState>,
    /// Bumped when a removal ends: a submission waiting for it looks again.
    removed: watch::Sender<u64>,
}

#[derive(Default)]
struct PinState {
    /// Blob → submissions holding it.
    held: BTreeMap<String, usize>,
    /// Blobs being removed.
    removing: BTreeSet<String>,
}

/// A submission's hold on a blob, released when dropped.
pub struct Hold {
    pins: Arc<Pins>,
    blob: String,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut st = self.pins.lock();
        if let Some(n) = st.held.get_mut(&self.blob) {
            *n -= 1;
            if *n == 0 {
                st.held.remove(&self.blob);
            }
        }
    }
}

impl Pins {
    fn lock(&self) -> std::sync::MutexGuard<'_, PinState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds `blob` for a submission, once no removal of it is under way.
    pub async fn hold(self: &Arc<Self>, blob: &str) -> Hold {
        loop {
            // Subscribed before looking: a removal that ends after the look wakes the wait.
            let mut ended = self.removed.subscribe();
            {
                let mut st = self.lock();
                if !st.removing.contains(blob) {
                    *st.held.entry(blob.to_string()).or_default() += 1;
                    return Hold {
                        pins: self.clone(),
                        blob: blob.to_string(),
                    };
                }
            }
            if ended.changed().await.is_err() {
                // Never: `self` holds the sender.
                tokio::task::yield_now().await;
            }
        }
    }

    /// Of `candidates` (blobs no job the leader knows names any more), those no submission
    /// holds, marked as being removed: the caller removes them, then calls [`Pins::removed`].
    pub fn take_unused(&self, candidates: BTreeSet<String>) -> Vec<String> {
        let mut st = self.lock();
        let free: Vec<String> = candidates
            .into_iter()
            .filter(|b| !st.held.contains_key(b) && !st.removing.contains(b))
            .collect();
        st.removing.extend(free.iter().cloned());
        free
    }

    /// The removal of `blobs` ended (done or not): submissions may hold them again.
    pub fn removed(&self, blobs: &[String]) {
        {
            let mut st = self.lock();
            for b in blobs {
                st.removing.remove(b);
            }
        }
        self.removed.send_modify(|n| *n += 1);
    }
}

/// The pinned operators `spec` runs.
pub fn blobs_of(spec: &JobSpec) -> impl Iterator<Item = &str> {
    spec.stages.iter().filter_map(|st| match &st.operator {
        OperatorSpec::Exec { path, .. } if pinned_hash(path).is_some() => Some(path.as_str()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn a_held_blob_is_not_removed_and_a_removal_holds_up_a_new_hold() {
        let pins = Arc::new(Pins::default());
        let a = "blobs/sha256/a".to_string();
        let b = "blobs/sha256/b".to_string();
        let hold = pins.hold(&a).await;
        let free = pins.take_unused([a.clone(), b.clone()].into());
        assert_eq!(free, std::slice::from_ref(&b), "a submission holds a");
        // b is being removed: a submission that meets it waits for the removal to end.
        let mut waiting = Box::pin(pins.hold(&b));
        assert!(waiting.as_mut().now_or_never().is_none());
        pins.removed(&free);
        let _b = waiting.await;
        drop(hold);
        assert_eq!(pins.take_unused([a.clone(), b].into()), [a]);
    }
}
