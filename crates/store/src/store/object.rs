//! The `object_store` backend: a directory on this host (`LocalFileSystem`, every write fsynced
//! unless the store is scratch)
//! or any S3-compatible bucket (`--store s3://bucket/prefix`, built in `s3.rs`). Both speak the
//! same `ObjectStore` interface, so every operation is written once, here; the one difference
//! is that a local store knows its root directory (local paths for `rainstorm run`, plain file
//! reads for sources).

use super::ranged::{ranged_reader, RANGE_BYTES};
use super::{io_err, upload_broke};
use super::{ObjectMeta, ObjectReader, StoreError};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An `object_store` backend: a local directory (with its root, so local files can be named)
/// or an S3-compatible bucket.
#[derive(Debug)]
pub struct Objects {
    pub(super) inner: Arc<dyn ObjectStore>,
    /// The directory behind a local store.
    pub(super) root: Option<PathBuf>,
    /// What the store is, for messages (`/dir` or `s3://bucket/prefix`).
    pub url: String,
}

fn os_err(path: &str) -> impl FnOnce(object_store::Error) -> StoreError + '_ {
    move |e| match e {
        object_store::Error::NotFound { .. } => StoreError::NotFound(path.to_string()),
        // The local file system's errors come as `Generic` around the I/O error, their text
        // naming the file's local path: a path under a file used as a folder names nothing,
        // as a missing one does, and any other I/O error is kept as its kind and code alone
        // ("No space left on device"), the store path in front, so no message a client may
        // see names the store's directory.
        other if io_cause(&other).is_some() => match io_cause(&other) {
            Some(io) if super::error::names_nothing(io) => StoreError::NotFound(path.to_string()),
            Some(io) => StoreError::Io {
                path: path.to_string(),
                cause: match io.raw_os_error() {
                    Some(code) => std::io::Error::from_raw_os_error(code),
                    None => std::io::Error::from(io.kind()),
                },
            },
            None => StoreError::Object {
                path: path.to_string(),
                msg: other.to_string(),
            },
        },
        other => StoreError::Object {
            path: path.to_string(),
            msg: other.to_string(),
        },
    }
}

/// The I/O error behind an object store error, if one is in its chain.
fn io_cause(e: &object_store::Error) -> Option<&std::io::Error> {
    let mut at: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = at {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        at = err.source();
    }
    None
}

fn os_path(clean: &str) -> Result<object_store::path::Path, StoreError> {
    object_store::path::Path::parse(clean).map_err(|_| StoreError::BadPath(clean.to_string()))
}

/// Objects up to this size are written with one request; larger streams go up in parts.
const SINGLE_PUT: usize = 8 << 20;

impl Objects {
    /// A local directory (created if missing); every write fsynced if `sync`.
    pub(super) fn local(root: PathBuf, sync: bool) -> Result<Objects, StoreError> {
        std::fs::create_dir_all(&root).map_err(io_err("(root)"))?;
        let root = root.canonicalize().map_err(io_err("(root)"))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(&root)
            .map_err(os_err("(root)"))?
            .with_fsync(sync)
            .with_automatic_cleanup(true);
        Ok(Objects {
            inner: Arc::new(fs),
            url: root.display().to_string(),
            root: Some(root),
        })
    }

    /// The directory behind a local store.
    pub(super) fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    pub(super) async fn put(&self, clean: &str, data: Bytes) -> Result<(), StoreError> {
        let p = os_path(clean)?;
        self.no_symlink(clean).await?;
        self.inner
            .put(&p, PutPayload::from(data))
            .await
            .map_err(os_err(clean))?;
        Ok(())
    }

    /// A local store streams into a temporary file renamed into place (memory stays at one
    /// chunk whatever the size). S3, small objects: one request; beyond `SINGLE_PUT`: a
    /// multipart upload holding at most a few parts in memory, aborted if the body breaks.
    pub(super) async fn put_stream<S, E>(&self, clean: &str, body: S) -> Result<u64, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        if let Some(root) = &self.root {
            self.no_symlink(clean).await?;
            return super::write_stream_atomic(
                &root.join(clean),
                clean,
                body,
                super::Access::Private,
            )
            .await;
        }
        let mut body = std::pin::pin!(body);
        let p = os_path(clean)?;
        let mut first = Vec::new();
        let mut total = 0u64;
        let mut rest = None;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| upload_broke(clean, e))?;
            total += chunk.len() as u64;
            first.push(chunk);
            if total as usize > SINGLE_PUT {
                rest = Some(());
                break;
            }
        }
        if rest.is_none() {
            let payload: PutPayload = first.into_iter().collect();
            self.inner.put(&p, payload).await.map_err(os_err(clean))?;
            return Ok(total);
        }
        let upload = self.inner.put_multipart(&p).await.map_err(os_err(clean))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, SINGLE_PUT);
        for c in first {
            w.put(c);
        }
        let res: Result<u64, StoreError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| upload_broke(clean, e))?;
                total += chunk.len() as u64;
                w.wait_for_capacity(2).await.map_err(os_err(clean))?;
                w.put(chunk);
            }
            Ok(total)
        }
        .await;
        match res {
            Ok(n) => {
                w.finish().await.map_err(os_err(clean))?;
                Ok(n)
            }
            Err(e) => {
                // Nothing was committed either way; an upload left unaborted only costs the
                // bucket's stored parts until its lifecycle rule removes them.
                if let Err(abort) = w.abort().await {
                    tracing::warn!(path = %clean, error = %abort, "could not abort a broken multipart upload");
                }
                Err(e)
            }
        }
    }

    pub(super) async fn size(&self, clean: &str) -> Result<u64, StoreError> {
        let p = os_path(clean)?;
        self.no_symlink(clean).await?;
        let m = self.inner.head(&p).await.map_err(os_err(clean))?;
        Ok(m.size)
    }

    /// A local file is read directly; an S3 object in ranged GETs (`ranged.rs`).
    pub(super) async fn open(&self, clean: &str) -> Result<ObjectReader, StoreError> {
        if let Some(root) = &self.root {
            self.no_symlink(clean).await?;
            // The last component is checked again by the open itself.
            let f = tokio::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(root.join(clean))
                .await
                .map_err(|e| match e.raw_os_error() {
                    Some(libc::ELOOP) => StoreError::Symlink(clean.to_string()),
                    _ => io_err(clean)(e),
                })?;
            if f.metadata().await.is_ok_and(|m| m.is_dir()) {
                return Err(StoreError::NotFound(clean.to_string()));
            }
            return Ok(Box::new(f));
        }
        let p = os_path(clean)?;
        let size = self.size(clean).await?;
        let inner = self.inner.clone();
        let name = clean.to_string();
        Ok(ranged_reader(
            clean.to_string(),
            size,
            RANGE_BYTES,
            move |r| {
                let (inner, p, name) = (inner.clone(), p.clone(), name.clone());
                async move { inner.get_range(&p, r).await.map_err(os_err(&name)) }
            },
        ))
    }

    /// Bytes `r` of an object (`r` within its size).
    pub(super) async fn get_range(
        &self,
        clean: &str,
        r: std::ops::Range<u64>,
    ) -> Result<Bytes, StoreError> {
        let p = os_path(clean)?;
        self.no_symlink(clean).await?;
        self.inner.get_range(&p, r).await.map_err(os_err(clean))
    }

    pub(super) async fn get(&self, clean: &str) -> Result<Bytes, StoreError> {
        let p = os_path(clean)?;
        self.no_symlink(clean).await?;
        let res = self.inner.get(&p).await.map_err(os_err(clean))?;
        res.bytes().await.map_err(os_err(clean))
    }

    /// Lists only the deepest directory `prefix` (already clean) names, then filters; skips
    /// the local store's temporary files.
    pub(super) async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let dir = match dir_part {
            "" => None,
            d => Some(os_path(d).map_err(|_| StoreError::BadPath(prefix.to_string()))?),
        };
        let mut stream = self.inner.list(dir.as_ref());
        let mut out = Vec::new();
        while let Some(m) = stream.next().await {
            let m = match m {
                Ok(m) => m,
                Err(object_store::Error::NotFound { .. }) => continue,
                // A folder that is a file (or was removed while listed) holds nothing.
                Err(e) => match os_err(prefix)(e) {
                    StoreError::NotFound(_) => continue,
                    other => return Err(other),
                },
            };
            let path = m.location.to_string();
            let name = path.rsplit('/').next().unwrap_or("");
            if name.starts_with(".tmp") || !path.starts_with(prefix) {
                continue;
            }
            out.push(ObjectMeta { path, size: m.size });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        self.unlinked(out, prefix).await
    }

    /// Deletes one object.
    pub(super) async fn delete(&self, clean: &str) -> Result<(), StoreError> {
        let p = os_path(clean)?;
        self.no_symlink(clean).await?;
        self.inner.delete(&p).await.map_err(os_err(clean))
    }

    /// Deletes `clean` objects with the backend's bulk delete; one already gone is no error.
    pub(super) async fn delete_many(&self, clean: Vec<String>) -> Result<(), StoreError> {
        let mut located = Vec::with_capacity(clean.len());
        for c in &clean {
            self.no_symlink(c).await?;
            located.push(os_path(c)?);
        }
        let first = clean.first().cloned().unwrap_or_default();
        let mut gone = self
            .inner
            .delete_stream(futures::stream::iter(located.into_iter().map(Ok)).boxed());
        while let Some(r) = gone.next().await {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(os_err(&first)(e)),
            }
        }
        Ok(())
    }

    /// Deletes `clean` and everything under `clean/`, [`DELETES_AT_ONCE`] objects at a time,
    /// and says exactly which are gone, so a failure can say what was removed; a local store's
    /// empty directories go too.
    pub(super) async fn delete_report(&self, clean: &str) -> (Vec<String>, Option<StoreError>) {
        if let Err(e) = self.no_symlink(clean).await {
            return (Vec::new(), Some(e));
        }
        let mut names: Vec<String> = match self.list(&format!("{clean}/")).await {
            Ok(v) => v.into_iter().map(|m| m.path).collect(),
            Err(e) => return (Vec::new(), Some(e)),
        };
        if let Ok(p) = os_path(clean) {
            if self.inner.head(&p).await.is_ok() {
                names.insert(0, clean.to_string());
            }
        }
        let mut results = futures::stream::iter(names)
            .map(|n| async move {
                let res = match os_path(&n) {
                    Ok(p) => self.inner.delete(&p).await.map_err(os_err(&n)),
                    Err(e) => Err(e),
                };
                (n, res)
            })
            .buffer_unordered(DELETES_AT_ONCE);
        let (mut removed, mut failed) = (Vec::new(), None);
        while let Some((n, res)) = results.next().await {
            match res {
                Ok(()) | Err(StoreError::NotFound(_)) => removed.push(n),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        drop(results);
        if failed.is_some() {
            return (removed, failed);
        }
        if let Some(root) = &self.root {
            let dir = root.join(clean);
            if dir.is_dir() {
                // Only empty directories can be left (every object in them is deleted).
                if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not remove the emptied directories");
                }
            }
        }
        (removed, None)
    }
}

/// Deletes in flight at once when a prefix is removed: a job's logs are tens of objects, each a
/// round trip to a bucket (or a blocking unlink on a local disk); one at a time, the end of
/// every job waited for all of them in a row.
const DELETES_AT_ONCE: usize = 16;

#[cfg(test)]
mod tests;
