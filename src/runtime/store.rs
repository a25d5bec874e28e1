//! The cluster's store: source files, sink files and input logs. One interface, three backends:
//! a local directory (the embedded default, and the leader's own view), the leader's HTTP
//! store API (how workers on other hosts reach it), and memory (the deterministic simulation,
//! which can make writes fail on purpose). Writes are whole objects, atomic and
//! durable (temp file, fsync, rename), so logs made of immutable segments work on object storage.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncRead;

/// A streaming reader of an object.
pub type ObjectReader = Box<dyn AsyncRead + Send + Unpin>;

/// A store failure, with whether retrying can help.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist.
    #[error("{0}: not found in the store")]
    NotFound(String),
    /// The path is not a valid store path.
    #[error("{0:?} is not a valid store path (relative, no '..')")]
    BadPath(String),
    /// Local I/O failed.
    #[error("store i/o on {path}: {source}")]
    Io {
        /// Store path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The leader's store API failed.
    #[error("store request {0}")]
    Http(String),
}

/// One listed object.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Store path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

/// Checks and normalises a store path (`a/b/c`, no leading slash, no `..`).
pub fn clean_path(path: &str) -> Result<String, StoreError> {
    let p = Path::new(path.trim_start_matches('/'));
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => return Err(StoreError::BadPath(path.to_string())),
        }
    }
    if parts.is_empty() {
        return Err(StoreError::BadPath(path.to_string()));
    }
    Ok(parts.join("/"))
}

/// The store handle every component holds.
#[derive(Clone, Debug)]
pub enum Store {
    /// A directory on this host.
    Local(PathBuf),
    /// The leader's store API at this base URL.
    Http(String, reqwest::Client),
    /// Objects in memory (simulation and tests).
    Memory(Arc<MemStore>),
}

/// An in-memory store whose writes can be made to fail, so the simulation can exercise the
/// input log's retries and its give-up path deterministically.
#[derive(Debug, Default)]
pub struct MemStore {
    objects: Mutex<BTreeMap<String, Bytes>>,
    /// Puts still to fail (each failed put decrements it).
    pub fail_puts: AtomicU32,
}

impl MemStore {
    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Bytes>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn io_err(path: &str) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            StoreError::NotFound(path.to_string())
        } else {
            StoreError::Io {
                path: path.to_string(),
                source,
            }
        }
    }
}

/// Writes `data` to `target` atomically and durably: temp file, fsync, rename, fsync directory.
pub fn write_atomic(target: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(target).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<ObjectMeta>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let ft = entry.file_type()?;
        let path = entry.path();
        if ft.is_dir() {
            walk(root, &path, out)?;
        } else if ft.is_file() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with(".tmp") {
                continue;
            }
            let rel = path.strip_prefix(root).unwrap_or(&path);
            out.push(ObjectMeta {
                path: rel.to_string_lossy().into_owned(),
                size: entry.metadata()?.len(),
            });
        }
    }
    Ok(())
}

impl Store {
    /// A store over a local directory (created if missing).
    pub fn local(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(io_err("(root)"))?;
        Ok(Store::Local(root))
    }

    /// A store reached through the leader's HTTP API.
    pub fn http(leader: &str) -> Store {
        Store::Http(
            leader.trim_end_matches('/').to_string(),
            reqwest::Client::new(),
        )
    }

    /// The local file behind a store path, when the store is local.
    pub fn local_path(&self, path: &str) -> Result<Option<PathBuf>, StoreError> {
        let clean = clean_path(path)?;
        Ok(match self {
            Store::Local(root) => Some(root.join(clean)),
            Store::Http(..) | Store::Memory(_) => None,
        })
    }

    /// A fresh, empty in-memory store.
    pub fn memory() -> Store {
        Store::Memory(Arc::default())
    }

    /// Writes an object atomically and durably.
    pub async fn put(&self, path: &str, data: Bytes) -> Result<(), StoreError> {
        let clean = clean_path(path)?;
        match self {
            Store::Local(root) => {
                let target = root.join(&clean);
                tokio::task::spawn_blocking(move || write_atomic(&target, &data))
                    .await
                    .map_err(|e| StoreError::Http(format!("blocking task: {e}")))?
                    .map_err(io_err(&clean))
            }
            Store::Http(base, client) => {
                let resp = client
                    .put(format!("{base}/api/store/{clean}"))
                    .body(data)
                    .send()
                    .await
                    .map_err(|e| StoreError::Http(format!("PUT {clean}: {e}")))?;
                check(resp, &clean).await.map(|_| ())
            }
            Store::Memory(m) => {
                let fail = m
                    .fail_puts
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok();
                if fail {
                    return Err(StoreError::Io {
                        path: clean,
                        source: std::io::Error::other("injected write failure"),
                    });
                }
                m.objects().insert(clean, data);
                Ok(())
            }
        }
    }

    /// Whether an object exists.
    pub async fn exists(&self, path: &str) -> Result<bool, StoreError> {
        match self.get(path).await {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Opens an object for streaming reads (a source file of any size).
    pub async fn open(&self, path: &str) -> Result<ObjectReader, StoreError> {
        let clean = clean_path(path)?;
        match self {
            Store::Local(root) => {
                let f = tokio::fs::File::open(root.join(&clean))
                    .await
                    .map_err(io_err(&clean))?;
                Ok(Box::new(f))
            }
            Store::Http(base, client) => {
                use futures::TryStreamExt;
                let resp = http_get(base, client, &clean).await?;
                let stream = resp.bytes_stream().map_err(std::io::Error::other);
                Ok(Box::new(tokio_util::io::StreamReader::new(stream)))
            }
            Store::Memory(_) => Ok(Box::new(std::io::Cursor::new(self.get(&clean).await?))),
        }
    }

    /// Reads a whole object.
    pub async fn get(&self, path: &str) -> Result<Bytes, StoreError> {
        let clean = clean_path(path)?;
        match self {
            Store::Local(root) => {
                let target = root.join(&clean);
                tokio::fs::read(&target)
                    .await
                    .map(Bytes::from)
                    .map_err(io_err(&clean))
            }
            Store::Http(base, client) => {
                let resp = http_get(base, client, &clean).await?;
                resp.bytes()
                    .await
                    .map_err(|e| StoreError::Http(format!("GET {clean}: {e}")))
            }
            Store::Memory(m) => m
                .objects()
                .get(&clean)
                .cloned()
                .ok_or(StoreError::NotFound(clean)),
        }
    }

    /// Lists objects under a prefix (a path prefix; `""` lists everything), sorted by path.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        match self {
            Store::Local(root) => {
                let root = root.clone();
                let prefix = prefix.trim_start_matches('/').to_string();
                tokio::task::spawn_blocking(move || {
                    // Walk only the deepest directory the prefix names.
                    let dir_part = match prefix.rfind('/') {
                        Some(i) => &prefix[..i],
                        None => "",
                    };
                    let mut out = Vec::new();
                    walk(&root, &root.join(dir_part), &mut out).map_err(io_err(&prefix))?;
                    out.retain(|o| o.path.starts_with(&prefix));
                    out.sort_by(|a, b| a.path.cmp(&b.path));
                    Ok(out)
                })
                .await
                .map_err(|e| StoreError::Http(format!("blocking task: {e}")))?
            }
            Store::Http(base, client) => {
                let resp = client
                    .get(format!("{base}/api/store"))
                    .query(&[("prefix", prefix)])
                    .send()
                    .await
                    .map_err(|e| StoreError::Http(format!("LIST {prefix}: {e}")))?;
                let resp = check(resp, prefix).await?;
                resp.json()
                    .await
                    .map_err(|e| StoreError::Http(format!("LIST {prefix}: {e}")))
            }
            Store::Memory(m) => {
                let prefix = prefix.trim_start_matches('/');
                Ok(m.objects()
                    .range(prefix.to_string()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(k, v)| ObjectMeta {
                        path: k.clone(),
                        size: v.len() as u64,
                    })
                    .collect())
            }
        }
    }

    /// Copies an object into a local file, streaming (used to replay a large source file on a
    /// worker that reaches the store over HTTP).
    pub async fn fetch_to_file(&self, path: &str, target: &Path) -> Result<(), StoreError> {
        use tokio::io::AsyncWriteExt;
        let clean = clean_path(path)?;
        let local_err = |e: std::io::Error| StoreError::Io {
            path: target.display().to_string(),
            source: e,
        };
        if let Some(dir) = target.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(local_err)?;
        }
        match self {
            Store::Local(root) => {
                tokio::fs::copy(root.join(&clean), target)
                    .await
                    .map_err(io_err(&clean))?;
                Ok(())
            }
            Store::Http(base, client) => {
                let mut resp = http_get(base, client, &clean).await?;
                let mut f = tokio::fs::File::create(target).await.map_err(local_err)?;
                while let Some(chunk) = resp
                    .chunk()
                    .await
                    .map_err(|e| StoreError::Http(format!("GET {clean}: {e}")))?
                {
                    f.write_all(&chunk).await.map_err(local_err)?;
                }
                f.flush().await.map_err(local_err)
            }
            Store::Memory(_) => {
                let data = self.get(&clean).await?;
                tokio::fs::write(target, data).await.map_err(local_err)
            }
        }
    }

    /// Deletes every object under a prefix (used to drop a finished job's logs).
    pub async fn delete_prefix(&self, prefix: &str) -> Result<(), StoreError> {
        let clean = clean_path(prefix)?;
        match self {
            Store::Local(root) => {
                let dir = root.join(&clean);
                match tokio::fs::remove_dir_all(&dir).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(io_err(&clean)(e)),
                }
            }
            Store::Http(base, client) => {
                let resp = client
                    .delete(format!("{base}/api/store/{clean}"))
                    .send()
                    .await
                    .map_err(|e| StoreError::Http(format!("DELETE {clean}: {e}")))?;
                check(resp, &clean).await.map(|_| ())
            }
            Store::Memory(m) => {
                let dir = format!("{clean}/");
                m.objects()
                    .retain(|k, _| *k != clean && !k.starts_with(&dir));
                Ok(())
            }
        }
    }
}

/// GETs an object from the leader's store API, mapping transport and status errors.
async fn http_get(
    base: &str,
    client: &reqwest::Client,
    clean: &str,
) -> Result<reqwest::Response, StoreError> {
    let resp = client
        .get(format!("{base}/api/store/{clean}"))
        .send()
        .await
        .map_err(|e| StoreError::Http(format!("GET {clean}: {e}")))?;
    check(resp, clean).await
}

async fn check(resp: reqwest::Response, path: &str) -> Result<reqwest::Response, StoreError> {
    match resp.status() {
        s if s.is_success() => Ok(resp),
        reqwest::StatusCode::NOT_FOUND => Err(StoreError::NotFound(path.to_string())),
        s => {
            let body = resp.text().await.unwrap_or_default();
            Err(StoreError::Http(format!("{path}: {s}: {body}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_put_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::local(dir.path()).unwrap();
        store
            .put("a/b/one", Bytes::from_static(b"1"))
            .await
            .unwrap();
        store.put("a/two", Bytes::from_static(b"22")).await.unwrap();
        store.put("c", Bytes::from_static(b"")).await.unwrap();
        assert_eq!(&store.get("a/b/one").await.unwrap()[..], b"1");
        let all: Vec<_> = store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.path)
            .collect();
        assert_eq!(all, ["a/b/one", "a/two", "c"]);
        let a: Vec<_> = store
            .list("a/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.path)
            .collect();
        assert_eq!(a, ["a/b/one", "a/two"]);
        store.delete_prefix("a").await.unwrap();
        assert!(matches!(
            store.get("a/two").await,
            Err(StoreError::NotFound(_))
        ));
        assert!(clean_path("../etc/passwd").is_err());
        assert_eq!(clean_path("/x/./y").unwrap(), "x/y");
    }
}
