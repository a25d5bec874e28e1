//! The cluster's store: source files, sink files, input logs and operators. One interface, two
//! kinds of backend: any `object_store` implementation — a local directory, an S3-compatible
//! service, or any other store a caller hands in (tests use the crate's in-memory store, the
//! simulation wraps it to inject faults and latency) — and the leader's HTTP store API (how
//! workers without direct store access reach it). Writes are whole objects, atomic and durable
//! (the local directory fsyncs the file and its directory), so logs made of immutable segments
//! work on object storage.
//!
//! This file is the interface every component sees: the [`Store`] handle, its errors, the
//! store-path rules (nothing outside the store can be named) and the public methods, each a
//! dispatch to the backend that does the work in its own file: `object` (any `object_store`,
//! with `s3` building the S3 client) and `http` (through the leader).

mod atomic;
mod blob;
mod error;
mod http;
mod nofollow;
mod object;
mod paths;
mod ranged;
mod s3;
mod url;

pub use atomic::{keep_mode_of, write_atomic, write_stream_atomic, Access};
pub use blob::{blob_path, pinned_hash, sha256_hex, BLOBS};
pub use error::StoreError;
use error::{io_err, upload_broke};
pub use http::{HttpStore, StoreSession};
pub use object::Objects;
pub use paths::{clean_path, clean_prefix};
pub use s3::{S3Location, S3UrlError};
pub use url::url_path;

/// The fault-injecting store of the tests and the simulation (it lives with the tests).
#[cfg(test)]
#[path = "../../../../tests/support/faulty_store.rs"]
pub(crate) mod faulty;

use crate::seal::SealKey;
use bytes::Bytes;
use futures::Stream;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncRead;

/// A streaming reader of an object.
pub type ObjectReader = Box<dyn AsyncRead + Send + Unpin>;

/// One listed object.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Store path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

pub use crate::client::install_crypto;

/// The store handle every component holds: where objects live, and the key that seals what
/// the engine itself writes there (its logs, `log::seal`).
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
    seal: SealKey,
    /// Whether its writes are synced ([`Store::durable`]).
    durable: bool,
}

/// Where a store's objects live.
#[derive(Clone, Debug)]
pub enum Backend {
    /// An `object_store` backend: a directory on this host or an S3-compatible service.
    Object(Arc<Objects>),
    /// The leader's store API, as a worker reaches it.
    Http(HttpStore),
}

impl From<Backend> for Store {
    fn from(backend: Backend) -> Store {
        Store {
            backend,
            seal: SealKey::default(),
            durable: true,
        }
    }
}

impl Store {
    /// This store with the engine's objects sealed by `seal` (the cluster secret's key);
    /// without it, by the key of a cluster with no secret.
    pub fn with_seal(mut self, seal: SealKey) -> Store {
        self.seal = seal;
        self
    }

    /// The key that seals and checks the engine's own objects in this store.
    pub fn seal(&self) -> &SealKey {
        &self.seal
    }

    /// A store over a local directory (created if missing), every write durable (fsynced).
    pub fn local(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        Objects::local(root.into(), true).map(|o| Backend::Object(Arc::new(o)).into())
    }

    /// A store over a local directory that lives and dies with this process (the embedded
    /// cluster of `rainstorm run`, in a temporary directory removed at its end): its writes
    /// are atomic (a temporary file renamed into place) but not fsynced. A sync guards against
    /// the machine failing, and the machine failing ends such a store's run whatever is on
    /// disk; a task restarted in the run reads what was written through the page cache. It
    /// cost about 6 ms a write on this kind of machine, on every group commit.
    pub fn local_scratch(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let store: Result<Store, _> =
            Objects::local(root.into(), false).map(|o| Backend::Object(Arc::new(o)).into());
        store.map(|s| Store {
            durable: false,
            ..s
        })
    }

    /// Whether what is written to this store is synced to disk (every store but a
    /// [`Store::local_scratch`] one): what lives and dies with a scratch store's process, as
    /// the output of `rainstorm run` does, need not be synced either.
    pub fn durable(&self) -> bool {
        self.durable
    }

    /// A store in an S3-compatible bucket. Credentials and region come from the usual AWS
    /// environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, ...);
    /// the endpoint from `loc.endpoint`, else `AWS_ENDPOINT_URL`. Plain `http://` is allowed
    /// for a loopback endpoint (or with `AWS_ALLOW_HTTP=true`).
    pub fn s3(loc: &S3Location) -> Result<Store, StoreError> {
        Objects::s3(loc).map(|o| Backend::Object(Arc::new(o)).into())
    }

    /// A store reached through the leader's HTTP API.
    pub fn http(leader: &str) -> Store {
        install_crypto();
        Backend::Http(HttpStore {
            base: leader.trim_end_matches('/').to_string(),
            client: crate::client::http_client_for(leader)
                .build()
                .unwrap_or_default(),
            session: StoreSession::default(),
            claim: None,
        })
        .into()
    }

    /// A store reached through the leader's HTTP API, proving the cluster secret (if any) as
    /// a bearer token on every request, and the worker registration bound with
    /// [`Store::bind_session`].
    pub fn http_with_token(leader: &str, token: Option<&crate::protocol::auth::Secret>) -> Store {
        Backend::Http(HttpStore {
            base: leader.trim_end_matches('/').to_string(),
            client: http::client(leader, token),
            session: StoreSession::default(),
            claim: None,
        })
        .into()
    }

    /// This store, its writes through the leader speaking for task attempt `attempt` of `key`
    /// (see `CLAIM_HEADER`): how a sink writes its job's output. Other stores are unchanged:
    /// no leader stands between them and their writers.
    pub fn claiming(&self, key: &crate::model::ids::TaskKey, attempt: u32) -> Store {
        let mut s = self.clone();
        if let Backend::Http(h) = &mut s.backend {
            h.claim = Some(claim(key, attempt));
        }
        s
    }

    /// Makes a store reached through the leader speak for worker registration `worker`
    /// (session key `key`) from now on; other stores have no use for it.
    pub fn bind_session(&self, worker: &crate::model::ids::WorkerId, key: Option<&str>) {
        if let Backend::Http(h) = &self.backend {
            h.session.bind(worker, key);
        }
    }

    /// A store over any `object_store` implementation (`url` names it in messages): how
    /// tests and the simulation bring their own (in memory, or wrapped to inject faults).
    pub fn objects(inner: Arc<dyn object_store::ObjectStore>, url: impl Into<String>) -> Store {
        Backend::Object(Arc::new(Objects {
            inner,
            root: None,
            url: url.into(),
        }))
        .into()
    }

    /// A fresh, empty in-memory store (`object_store`'s own), for tests.
    pub fn memory() -> Store {
        Store::objects(Arc::new(object_store::memory::InMemory::new()), "memory")
    }

    /// The local file behind a store path, when the store is local; refused if the path
    /// crosses a symbolic link inside the store directory (it would name a file outside it).
    pub fn local_path(&self, path: &str) -> Result<Option<PathBuf>, StoreError> {
        let clean = clean_path(path)?;
        Ok(match &self.backend {
            Backend::Object(o) => match o.root() {
                Some(r) => {
                    nofollow::check(r, &clean)?;
                    Some(r.join(clean))
                }
                None => None,
            },
            Backend::Http(..) => None,
        })
    }

    /// What the store is, for messages: its directory, its bucket (`s3://…`), or the leader it
    /// is reached through.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Object(o) => o.url.clone(),
            Backend::Http(h) => format!("the leader's, at {}", h.base),
        }
    }

    /// Whether this store is a directory on this host.
    pub fn is_local(&self) -> bool {
        matches!(&self.backend, Backend::Object(o) if o.root().is_some())
    }

    /// Writes an object atomically and durably.
    pub async fn put(&self, path: &str, data: Bytes) -> Result<(), StoreError> {
        let clean = clean_path(path)?;
        match &self.backend {
            Backend::Object(o) => o.put(&clean, data).await,
            Backend::Http(h) => http::put(h, &clean, data).await,
        }
    }

    /// Writes an object from a stream of chunks, holding at most a few chunks in memory (a
    /// large object goes up in parts); the object appears whole or not at all. Returns its size.
    pub async fn put_stream<S, E>(&self, path: &str, body: S) -> Result<u64, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let clean = clean_path(path)?;
        match &self.backend {
            Backend::Object(o) => o.put_stream(&clean, body).await,
            Backend::Http(h) => http::put_stream(h, &clean, body).await,
        }
    }

    /// Whether an object exists.
    pub async fn exists(&self, path: &str) -> Result<bool, StoreError> {
        match self.size(path).await {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The size of an object.
    pub async fn size(&self, path: &str) -> Result<u64, StoreError> {
        let clean = clean_path(path)?;
        match &self.backend {
            Backend::Object(o) => o.size(&clean).await,
            Backend::Http(h) => http::size(h, &clean).await,
        }
    }

    /// Opens an object for streaming reads (a source file of any size).
    pub async fn open(&self, path: &str) -> Result<ObjectReader, StoreError> {
        let clean = clean_path(path)?;
        match &self.backend {
            Backend::Object(o) => o.open(&clean).await,
            Backend::Http(h) => http::open(h, &clean).await,
        }
    }

    /// Reads a whole object.
    pub async fn get(&self, path: &str) -> Result<Bytes, StoreError> {
        let clean = clean_path(path)?;
        match &self.backend {
            Backend::Object(o) => o.get(&clean).await,
            Backend::Http(h) => http::get(h, &clean).await,
        }
    }

    /// Bytes `r` of an object: what a reader resuming part-way asks for (a source read through
    /// the leader goes on where it was after the leader restarts, `ranged.rs`).
    pub async fn get_range(
        &self,
        path: &str,
        r: std::ops::Range<u64>,
    ) -> Result<Bytes, StoreError> {
        let clean = clean_path(path)?;
        match &self.backend {
            Backend::Object(o) => o.get_range(&clean, r).await,
            Backend::Http(h) => http::get_range(h, &clean, r).await,
        }
    }

    /// Lists objects under a prefix (a string prefix of store paths; `""` lists everything),
    /// sorted by path. A prefix with `..` is refused: a listing never leaves the store.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let prefix = clean_prefix(prefix)?;
        match &self.backend {
            Backend::Object(o) => o.list(&prefix).await,
            Backend::Http(h) => http::list(h, &prefix).await,
        }
    }

    /// Copies an object into a local file, streaming (used to replay a large source file on a
    /// worker that reaches the store remotely).
    pub async fn fetch_to_file(&self, path: &str, target: &Path) -> Result<(), StoreError> {
        use tokio::io::AsyncWriteExt;
        let clean = clean_path(path)?;
        let local_err = |e: std::io::Error| StoreError::Io {
            path: target.display().to_string(),
            cause: e,
        };
        if let Some(dir) = target.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(local_err)?;
        }
        if let Some(src) = self.local_path(&clean)? {
            tokio::fs::copy(src, target).await.map_err(io_err(&clean))?;
            return Ok(());
        }
        let mut rd = self.open(&clean).await?;
        let mut f = tokio::fs::File::create(target).await.map_err(local_err)?;
        tokio::io::copy(&mut rd, &mut f).await.map_err(local_err)?;
        f.flush().await.map_err(local_err)
    }

    /// Deletes one object; one that is already gone is no error (a compacted input log drops
    /// the segments a merged object replaced, and a retry must not fail on its own success).
    pub async fn delete(&self, path: &str) -> Result<(), StoreError> {
        let clean = clean_path(path)?;
        let res = match &self.backend {
            Backend::Object(o) => o.delete(&clean).await,
            Backend::Http(h) => http::delete(h, &clean).await,
        };
        match res {
            Err(StoreError::NotFound(_)) => Ok(()),
            other => other,
        }
    }

    /// Deletes these objects in as few requests as the backend allows (S3: `DeleteObjects`,
    /// up to 1,000 keys a request; through the leader: one request), so a compaction that
    /// replaced a run of segments pays one request, not one per segment. Objects already gone
    /// are no error, as with [`delete`](Self::delete); a path that is not a store path
    /// deletes nothing.
    pub async fn delete_many(&self, paths: &[String]) -> Result<(), StoreError> {
        let clean = paths
            .iter()
            .map(|p| clean_path(p))
            .collect::<Result<Vec<_>, _>>()?;
        match &self.backend {
            Backend::Object(o) => o.delete_many(clean).await,
            Backend::Http(h) => http::delete_many(h, &clean).await,
        }
    }

    /// Deletes every object under a prefix (used to drop a finished job's logs).
    pub async fn delete_prefix(&self, prefix: &str) -> Result<(), StoreError> {
        match self.delete_report(prefix).await {
            (_, None) => Ok(()),
            (_, Some(e)) => Err(e),
        }
    }

    /// Deletes the object `prefix` and every object under `prefix/`; returns what it removed
    /// and, if it stopped early, why (so a failed delete can say what is already gone).
    pub async fn delete_report(&self, prefix: &str) -> (Vec<String>, Option<StoreError>) {
        let clean = match clean_path(prefix) {
            Ok(c) => c,
            Err(e) => return (Vec::new(), Some(e)),
        };
        match &self.backend {
            Backend::Object(o) => o.delete_report(&clean).await,
            Backend::Http(h) => http::delete_report(h, &clean).await,
        }
    }
}

#[cfg(test)]
mod tests;

/// How a write names the task attempt it speaks for (`CLAIM_HEADER`).
pub fn claim(key: &crate::model::ids::TaskKey, attempt: u32) -> String {
    format!("{key}@{attempt}")
}
