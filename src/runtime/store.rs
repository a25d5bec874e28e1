//! The cluster's store: source files, sink files, input logs and operators. One interface, four
//! backends: a local directory and any S3-compatible service, both through the `object_store`
//! crate; the leader's HTTP store API (how workers without direct store access reach it); and
//! memory (the deterministic simulation, which can make writes fail on purpose). Writes are
//! whole objects, atomic and durable (the local directory fsyncs the file and its directory),
//! so logs made of immutable segments work on object storage.

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
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
    /// The object store (local directory or S3) failed.
    #[error("object store, {path}: {msg}")]
    Object {
        /// Store path.
        path: String,
        /// Cause.
        msg: String,
    },
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

/// Checks a listing prefix: `""` (everything) or a string prefix of clean store paths (no `..`,
/// no `.` segment, no leading slash), so a listing can never name anything outside the store.
pub fn clean_prefix(prefix: &str) -> Result<String, StoreError> {
    let p = prefix.trim_start_matches('/');
    if p.is_empty() {
        return Ok(String::new());
    }
    let bad = p.split('/').enumerate().any(|(i, seg)| {
        seg == ".." || seg == "." || (seg.is_empty() && i + 1 < p.split('/').count())
    });
    if bad || p.contains('\\') || p.contains('\0') {
        return Err(StoreError::BadPath(prefix.to_string()));
    }
    Ok(p.to_string())
}

/// A parsed `s3://bucket/prefix` store location and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    /// Bucket.
    pub bucket: String,
    /// Key prefix inside the bucket (may be empty).
    pub prefix: String,
    /// Endpoint override (an S3-compatible service), else `AWS_ENDPOINT_URL`/`AWS_ENDPOINT`.
    pub endpoint: Option<String>,
}

impl S3Location {
    /// Parses `s3://bucket[/prefix]`.
    pub fn parse(url: &str, endpoint: Option<String>) -> Result<S3Location, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{url:?}: a store URL is s3://BUCKET[/PREFIX]"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("{url:?}: no bucket"));
        }
        let prefix = prefix.trim_matches('/').to_string();
        if !prefix.is_empty() {
            clean_path(&prefix).map_err(|e| e.to_string())?;
        }
        Ok(S3Location {
            bucket: bucket.to_string(),
            prefix,
            endpoint,
        })
    }
}

/// Installs the TLS crypto provider (ring) the HTTP clients use; call once at start-up (later
/// calls do nothing).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An `object_store` backend: a local directory (with its root, so local files can be named)
/// or an S3-compatible bucket.
#[derive(Debug)]
pub struct Objects {
    inner: Arc<dyn ObjectStore>,
    /// The directory behind a local store.
    root: Option<PathBuf>,
    /// What the store is, for messages (`/dir` or `s3://bucket/prefix`).
    pub url: String,
}

/// The store handle every component holds.
#[derive(Clone, Debug)]
pub enum Store {
    /// An `object_store` backend: a directory on this host or an S3-compatible service.
    Object(Arc<Objects>),
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

fn os_err(path: &str) -> impl FnOnce(object_store::Error) -> StoreError + '_ {
    move |e| match e {
        object_store::Error::NotFound { .. } => StoreError::NotFound(path.to_string()),
        other => StoreError::Object {
            path: path.to_string(),
            msg: other.to_string(),
        },
    }
}

fn os_path(clean: &str) -> Result<object_store::path::Path, StoreError> {
    object_store::path::Path::parse(clean).map_err(|_| StoreError::BadPath(clean.to_string()))
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

/// Objects up to this size are written with one request; larger streams go up in parts.
const SINGLE_PUT: usize = 8 << 20;

impl Store {
    /// A store over a local directory (created if missing).
    pub fn local(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(io_err("(root)"))?;
        let root = root.canonicalize().map_err(io_err("(root)"))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(&root)
            .map_err(os_err("(root)"))?
            .with_fsync(true)
            .with_automatic_cleanup(true);
        Ok(Store::Object(Arc::new(Objects {
            inner: Arc::new(fs),
            url: root.display().to_string(),
            root: Some(root),
        })))
    }

    /// A store in an S3-compatible bucket. Credentials and region come from the usual AWS
    /// environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, ...);
    /// the endpoint from `loc.endpoint`, else `AWS_ENDPOINT_URL`. Plain `http://` is allowed
    /// for a loopback endpoint (or with `AWS_ALLOW_HTTP=true`).
    pub fn s3(loc: &S3Location) -> Result<Store, StoreError> {
        use object_store::aws::AmazonS3Builder;
        install_crypto();
        let mut b = AmazonS3Builder::from_env().with_bucket_name(&loc.bucket);
        let endpoint = loc
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .or_else(|| std::env::var("AWS_ENDPOINT").ok());
        if let Some(ep) = &endpoint {
            b = b.with_endpoint(ep);
            if let Some(rest) = ep.strip_prefix("http://") {
                let host = rest.split(['/', ':']).next().unwrap_or("");
                let host = if rest.starts_with('[') {
                    rest.split(']').next().unwrap_or("").trim_start_matches('[')
                } else {
                    host
                };
                let loopback = host == "localhost"
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback());
                if loopback {
                    b = b.with_allow_http(true);
                }
            }
        }
        if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
            b = b.with_region("us-east-1");
        }
        let s3 = b.build().map_err(|e| StoreError::Object {
            path: format!("s3://{}", loc.bucket),
            msg: e.to_string(),
        })?;
        let inner: Arc<dyn ObjectStore> = if loc.prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(
                s3,
                loc.prefix.as_str(),
            ))
        };
        let url = match loc.prefix.as_str() {
            "" => format!("s3://{}", loc.bucket),
            p => format!("s3://{}/{p}", loc.bucket),
        };
        Ok(Store::Object(Arc::new(Objects {
            inner,
            root: None,
            url,
        })))
    }

    /// A store reached through the leader's HTTP API.
    pub fn http(leader: &str) -> Store {
        install_crypto();
        Store::Http(
            leader.trim_end_matches('/').to_string(),
            reqwest::Client::new(),
        )
    }

    /// A store reached through the leader's HTTP API, proving the cluster secret (if any) as
    /// a bearer token on every request.
    pub fn http_with_token(leader: &str, token: Option<&crate::protocol::auth::Secret>) -> Store {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = token {
            match reqwest::header::HeaderValue::from_str(&format!("Bearer {}", t.expose())) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    headers.insert(reqwest::header::AUTHORIZATION, v);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the cluster secret is not a valid header value")
                }
            }
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap_or_default();
        Store::Http(leader.trim_end_matches('/').to_string(), client)
    }

    /// The local file behind a store path, when the store is local.
    pub fn local_path(&self, path: &str) -> Result<Option<PathBuf>, StoreError> {
        let clean = clean_path(path)?;
        Ok(match self {
            Store::Object(o) => o.root.as_ref().map(|r| r.join(clean)),
            Store::Http(..) | Store::Memory(_) => None,
        })
    }

    /// Whether this store is a directory on this host.
    pub fn is_local(&self) -> bool {
        matches!(self, Store::Object(o) if o.root.is_some())
    }

    /// A fresh, empty in-memory store.
    pub fn memory() -> Store {
        Store::Memory(Arc::default())
    }

    /// Writes an object atomically and durably.
    pub async fn put(&self, path: &str, data: Bytes) -> Result<(), StoreError> {
        let clean = clean_path(path)?;
        match self {
            Store::Object(o) => {
                let p = os_path(&clean)?;
                o.inner
                    .put(&p, PutPayload::from(data))
                    .await
                    .map_err(os_err(&clean))?;
                Ok(())
            }
            Store::Http(base, client) => {
                let resp = client
                    .put(format!("{base}/internal/store/{clean}"))
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

    /// Writes an object from a stream of chunks, holding at most a few chunks in memory (a
    /// large object goes up in parts); the object appears whole or not at all. Returns its size.
    pub async fn put_stream<S, E>(&self, path: &str, body: S) -> Result<u64, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let clean = clean_path(path)?;
        let broke = |e: E| StoreError::Io {
            path: clean.clone(),
            source: std::io::Error::other(format!("upload broke: {e}")),
        };
        let mut body = std::pin::pin!(body);
        match self {
            Store::Object(o) => {
                let p = os_path(&clean)?;
                // Small objects: one request. Beyond SINGLE_PUT: a multipart upload.
                let mut first = Vec::new();
                let mut total = 0u64;
                let mut rest = None;
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(broke)?;
                    total += chunk.len() as u64;
                    first.push(chunk);
                    if total as usize > SINGLE_PUT {
                        rest = Some(());
                        break;
                    }
                }
                if rest.is_none() {
                    let payload: PutPayload = first.into_iter().collect();
                    o.inner.put(&p, payload).await.map_err(os_err(&clean))?;
                    return Ok(total);
                }
                let upload = o.inner.put_multipart(&p).await.map_err(os_err(&clean))?;
                let mut w = WriteMultipart::new_with_chunk_size(upload, SINGLE_PUT);
                for c in first {
                    w.put(c);
                }
                let res: Result<u64, StoreError> = async {
                    while let Some(chunk) = body.next().await {
                        let chunk = chunk.map_err(broke)?;
                        total += chunk.len() as u64;
                        w.wait_for_capacity(2).await.map_err(os_err(&clean))?;
                        w.put(chunk);
                    }
                    Ok(total)
                }
                .await;
                match res {
                    Ok(n) => {
                        w.finish().await.map_err(os_err(&clean))?;
                        Ok(n)
                    }
                    Err(e) => {
                        let _ = w.abort().await;
                        Err(e)
                    }
                }
            }
            Store::Http(base, client) => {
                let (tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
                let url = format!("{base}/internal/store/{clean}");
                let send = client.put(url).body(reqwest::Body::wrap_stream(rx)).send();
                let feed = async move {
                    let mut tx = tx;
                    let mut total = 0u64;
                    while let Some(chunk) = body.next().await {
                        let chunk = chunk.map_err(broke)?;
                        total += chunk.len() as u64;
                        if futures::SinkExt::send(&mut tx, Ok(chunk)).await.is_err() {
                            break;
                        }
                    }
                    Ok::<u64, StoreError>(total)
                };
                let (resp, total) = tokio::join!(send, feed);
                let total = total?;
                let resp = resp.map_err(|e| StoreError::Http(format!("PUT {clean}: {e}")))?;
                check(resp, &clean).await.map(|_| total)
            }
            Store::Memory(_) => {
                let mut all = Vec::new();
                while let Some(chunk) = body.next().await {
                    all.extend_from_slice(&chunk.map_err(broke)?);
                }
                let n = all.len() as u64;
                self.put(&clean, Bytes::from(all)).await.map(|_| n)
            }
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
        match self {
            Store::Object(o) => {
                let p = os_path(&clean)?;
                let m = o.inner.head(&p).await.map_err(os_err(&clean))?;
                Ok(m.size)
            }
            Store::Http(..) => self.get(&clean).await.map(|b| b.len() as u64),
            Store::Memory(m) => m
                .objects()
                .get(&clean)
                .map(|b| b.len() as u64)
                .ok_or(StoreError::NotFound(clean)),
        }
    }

    /// Opens an object for streaming reads (a source file of any size).
    pub async fn open(&self, path: &str) -> Result<ObjectReader, StoreError> {
        let clean = clean_path(path)?;
        match self {
            Store::Object(o) => {
                if let Some(root) = &o.root {
                    let f = tokio::fs::File::open(root.join(&clean))
                        .await
                        .map_err(io_err(&clean))?;
                    if f.metadata().await.is_ok_and(|m| m.is_dir()) {
                        return Err(StoreError::NotFound(clean));
                    }
                    return Ok(Box::new(f));
                }
                let p = os_path(&clean)?;
                let res = o.inner.get(&p).await.map_err(os_err(&clean))?;
                let stream = res.into_stream().map_err(std::io::Error::other);
                Ok(Box::new(tokio_util::io::StreamReader::new(stream)))
            }
            Store::Http(base, client) => {
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
            Store::Object(o) => {
                let p = os_path(&clean)?;
                let res = o.inner.get(&p).await.map_err(os_err(&clean))?;
                res.bytes().await.map_err(os_err(&clean))
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

    /// Lists objects under a prefix (a string prefix of store paths; `""` lists everything),
    /// sorted by path. A prefix with `..` is refused: a listing never leaves the store.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let prefix = clean_prefix(prefix)?;
        match self {
            Store::Object(o) => {
                // List only the deepest directory the prefix names, then filter.
                let dir_part = match prefix.rfind('/') {
                    Some(i) => &prefix[..i],
                    None => "",
                };
                let dir = match dir_part {
                    "" => None,
                    d => Some(os_path(d).map_err(|_| StoreError::BadPath(prefix.clone()))?),
                };
                let mut stream = o.inner.list(dir.as_ref());
                let mut out = Vec::new();
                while let Some(m) = stream.next().await {
                    let m = match m {
                        Ok(m) => m,
                        Err(object_store::Error::NotFound { .. }) => continue,
                        Err(e) => return Err(os_err(&prefix)(e)),
                    };
                    let path = m.location.to_string();
                    let name = path.rsplit('/').next().unwrap_or("");
                    if name.starts_with(".tmp") || !path.starts_with(&prefix) {
                        continue;
                    }
                    out.push(ObjectMeta { path, size: m.size });
                }
                out.sort_by(|a, b| a.path.cmp(&b.path));
                Ok(out)
            }
            Store::Http(base, client) => {
                let resp = client
                    .get(format!("{base}/internal/store"))
                    .query(&[("prefix", prefix.as_str())])
                    .send()
                    .await
                    .map_err(|e| StoreError::Http(format!("LIST {prefix}: {e}")))?;
                let resp = check(resp, &prefix).await?;
                resp.json()
                    .await
                    .map_err(|e| StoreError::Http(format!("LIST {prefix}: {e}")))
            }
            Store::Memory(m) => Ok(m
                .objects()
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, v)| ObjectMeta {
                    path: k.clone(),
                    size: v.len() as u64,
                })
                .collect()),
        }
    }

    /// Copies an object into a local file, streaming (used to replay a large source file on a
    /// worker that reaches the store remotely).
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
        if let Some(src) = self.local_path(&clean)? {
            tokio::fs::copy(src, target).await.map_err(io_err(&clean))?;
            return Ok(());
        }
        let mut rd = self.open(&clean).await?;
        let mut f = tokio::fs::File::create(target).await.map_err(local_err)?;
        tokio::io::copy(&mut rd, &mut f).await.map_err(local_err)?;
        f.flush().await.map_err(local_err)
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
        match self {
            Store::Object(o) => {
                let mut names: Vec<String> = match self.list(&format!("{clean}/")).await {
                    Ok(v) => v.into_iter().map(|m| m.path).collect(),
                    Err(e) => return (Vec::new(), Some(e)),
                };
                if let Ok(p) = os_path(&clean) {
                    if o.inner.head(&p).await.is_ok() {
                        names.insert(0, clean.clone());
                    }
                }
                let mut removed = Vec::new();
                for n in names {
                    let res = match os_path(&n) {
                        Ok(p) => o.inner.delete(&p).await.map_err(os_err(&n)),
                        Err(e) => Err(e),
                    };
                    match res {
                        Ok(()) | Err(StoreError::NotFound(_)) => removed.push(n),
                        Err(e) => return (removed, Some(e)),
                    }
                }
                if let Some(root) = &o.root {
                    // Empty directories left behind.
                    let dir = root.join(&clean);
                    if dir.is_dir() {
                        let _ = tokio::fs::remove_dir_all(&dir).await;
                    }
                }
                (removed, None)
            }
            Store::Http(base, client) => {
                let resp = client
                    .delete(format!("{base}/api/store/{clean}"))
                    .send()
                    .await
                    .map_err(|e| StoreError::Http(format!("DELETE {clean}: {e}")));
                match resp {
                    Ok(r) => match check(r, &clean).await {
                        Ok(r) => {
                            let v: serde_json::Value = r.json().await.unwrap_or_default();
                            let removed = v["removed"]
                                .as_array()
                                .map(|a| {
                                    a.iter()
                                        .filter_map(|s| s.as_str().map(str::to_string))
                                        .collect()
                                })
                                .unwrap_or_default();
                            (removed, None)
                        }
                        Err(e) => (Vec::new(), Some(e)),
                    },
                    Err(e) => (Vec::new(), Some(e)),
                }
            }
            Store::Memory(m) => {
                let dir = format!("{clean}/");
                let mut removed = Vec::new();
                m.objects().retain(|k, _| {
                    let gone = *k == clean || k.starts_with(&dir);
                    if gone {
                        removed.push(k.clone());
                    }
                    !gone
                });
                (removed, None)
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
        .get(format!("{base}/internal/store/{clean}"))
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

/// SHA-256 of bytes, as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Where an operator's content lives once pinned by its SHA-256: an immutable store object.
pub const BLOBS: &str = "blobs/sha256/";

/// The store path of content with SHA-256 `hex`.
pub fn blob_path(hex: &str) -> String {
    format!("{BLOBS}{hex}")
}

/// The SHA-256 a store path pins, if it is a content-addressed path.
pub fn pinned_hash(path: &str) -> Option<&str> {
    let h = path.strip_prefix(BLOBS)?;
    (h.len() == 64
        && h.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    .then_some(h)
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
        let (mut removed, err) = store.delete_report("a").await;
        removed.sort();
        assert!(err.is_none());
        assert_eq!(removed, ["a/b/one", "a/two"]);
        assert!(matches!(
            store.get("a/two").await,
            Err(StoreError::NotFound(_))
        ));
        assert!(!dir.path().join("a").exists());
        assert!(clean_path("../etc/passwd").is_err());
        assert_eq!(clean_path("/x/./y").unwrap(), "x/y");
    }

    #[tokio::test]
    async fn store_listing_cannot_escape_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::local(dir.path().join("store")).unwrap();
        std::fs::write(dir.path().join("secret"), b"x").unwrap();
        for p in ["../", "../../etc/", "a/../../", "./..", "a/./b"] {
            assert!(
                matches!(store.list(p).await, Err(StoreError::BadPath(_))),
                "{p}"
            );
        }
        assert!(store.list("").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn streamed_put_writes_whole_objects_small_and_large() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::local(dir.path()).unwrap();
        let chunk = Bytes::from(vec![7u8; 1 << 20]);
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            (0..20).map(|_| Ok(chunk.clone())).collect();
        let n = store
            .put_stream("big/file", futures::stream::iter(chunks))
            .await
            .unwrap();
        assert_eq!(n, 20 << 20);
        assert_eq!(store.size("big/file").await.unwrap(), 20 << 20);
        let small: Vec<Result<Bytes, std::io::Error>> = vec![Ok(Bytes::from_static(b"hi"))];
        store
            .put_stream("small", futures::stream::iter(small))
            .await
            .unwrap();
        assert_eq!(&store.get("small").await.unwrap()[..], b"hi");
        let names: Vec<_> = store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.path)
            .collect();
        assert_eq!(names, ["big/file", "small"]);
    }

    #[test]
    fn s3_urls_parse() {
        let l = S3Location::parse("s3://bkt/some/prefix/", None).unwrap();
        assert_eq!(
            (l.bucket.as_str(), l.prefix.as_str()),
            ("bkt", "some/prefix")
        );
        assert!(S3Location::parse("s3://", None).is_err());
        assert!(S3Location::parse("/dir", None).is_err());
        assert!(S3Location::parse("s3://b/../x", None).is_err());
        assert_eq!(
            pinned_hash(&blob_path(&sha256_hex(b"x"))).map(str::len),
            Some(64)
        );
        assert_eq!(pinned_hash("blobs/sha256/xyz"), None);
    }
}
