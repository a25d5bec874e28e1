//! Which store a cluster uses: the leader keeps a random id in its store at
//! [`CLUSTER_MARKER`], and a worker with a store of its own (an S3 bucket) reads it there and
//! names it when it registers. A worker pointed at another bucket or prefix, or one whose
//! credentials cannot read the store, is refused before it takes any task: its tasks would
//! write logs and outputs where the leader and the other workers never look (a job that
//! "succeeded" with its output missing), or fail one by one.

use crate::store::{Store, StoreError};
use bytes::Bytes;

/// The marker's path: under `cluster/`, which belongs to the engine (clients can neither write
/// nor delete there, nor name it as a sink).
pub const CLUSTER_MARKER: &str = "cluster/id";

/// The cluster's id as the leader's store holds it, written first if it is not there yet
/// (`fresh` is the id to write then). What is read back is what counts, so two leaders that
/// create it at once end up naming the same one.
pub async fn ensure(store: &Store, fresh: &str) -> Result<String, StoreError> {
    match read(store).await? {
        Some(id) => Ok(id),
        None => {
            match store
                .put(CLUSTER_MARKER, Bytes::from(fresh.to_string()))
                .await
            {
                // A write "not found" is the store's root missing: an S3 bucket that does not
                // exist (which said only "cluster/id: not found in the store").
                Err(StoreError::NotFound(p)) => Err(StoreError::Object {
                    path: p,
                    msg: "the store does not exist: is the bucket's name right, and is it \
                          created?"
                        .into(),
                }),
                other => other,
            }?;
            Ok(read(store).await?.unwrap_or_else(|| fresh.to_string()))
        }
    }
}

/// The cluster id `store` holds, `None` if it holds none.
pub async fn read(store: &Store) -> Result<Option<String>, StoreError> {
    match store.get(CLUSTER_MARKER).await {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).trim().to_string())),
        Err(StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}
