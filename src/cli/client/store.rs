//! The store's files through the leader: upload, download, listing, and the cluster-mode
//! upload of a job's local executables and source before submission.

use super::Client;
use crate::model::spec::{JobSpec, OperatorSpec};
use crate::runtime::store::{clean_path, url_path, ObjectMeta};
use anyhow::Context;
use reqwest::Method;
use std::path::Path;

/// The largest local file compared with its store copy before submission (operators are
/// scripts and small programs; a larger one is uploaded).
const SAME_UP_TO: u64 = 64 << 20;

impl Client {
    /// Uploads a local file to the store, streaming it (a file of any size).
    pub async fn put(&self, local: &Path, remote: &str) -> anyhow::Result<()> {
        let file = tokio::fs::File::open(local)
            .await
            .with_context(|| format!("reading {}", local.display()))?;
        let remote = clean_path(remote)?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
            file,
            256 << 10,
        ));
        let req = self.request(Method::PUT, &format!("/api/store/{}", url_path(&remote)));
        let resp = match req.body(body).send().await {
            Ok(resp) => resp,
            // The leader answers a refused upload after reading at most its first 64 MiB;
            // a client still sending the rest finds the connection closed.
            Err(e) if cut_off(&e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "the leader at {} closed the connection during the upload of {remote}: it \
                     does so when it refuses an upload larger than 64 MiB (to a path a running \
                     job reads or writes, or to the engine's own; `rainstorm jobs` shows what \
                     runs), or when it stops",
                    self.base
                )))
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("cannot reach the leader at {}", self.base)))
            }
        };
        if !resp.status().is_success() {
            return Err(super::refusal(resp).await);
        }
        Ok(())
    }

    /// Downloads a store file, streaming it to `local` (written whole or not at all).
    pub async fn get(&self, remote: &str, local: &Path) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt;
        let remote = clean_path(remote)?;
        let req = self.request(Method::GET, &format!("/api/store/{}", url_path(&remote)));
        let mut resp = self.send(req).await?;
        let dir = match local.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(d) => {
                tokio::fs::create_dir_all(d).await?;
                d.to_path_buf()
            }
            None => std::path::PathBuf::from("."),
        };
        let tmp = tempfile::NamedTempFile::new_in(&dir)
            .with_context(|| format!("writing into {}", dir.display()))?;
        let mut f = tokio::fs::File::from_std(tmp.reopen()?);
        while let Some(chunk) = resp.chunk().await.context("download broke")? {
            f.write_all(&chunk).await?;
        }
        f.flush().await?;
        drop(f);
        tmp.persist(local)
            .map(drop)
            .with_context(|| format!("writing {}", local.display()))
    }

    /// Lists store files under a prefix.
    pub async fn ls(&self, prefix: &str) -> anyhow::Result<Vec<ObjectMeta>> {
        let req = self.request(Method::GET, "/api/store");
        self.call(req.query(&[("prefix", prefix)])).await
    }

    /// Cluster mode convenience, like Hadoop's `-file`: executables (and a source) named by a
    /// local path that exists here are uploaded to the same store path before submission.
    /// Returns the store paths it created (none was there before), for
    /// [`Client::remove_uploads`] to take back if the job is refused.
    pub async fn upload_local_inputs(&self, spec: &JobSpec) -> anyhow::Result<Vec<String>> {
        let mut paths: Vec<&str> = spec
            .stages
            .iter()
            .filter_map(|s| match &s.operator {
                OperatorSpec::Exec { path, .. } if !Path::new(path).is_absolute() => {
                    Some(path.as_str())
                }
                _ => None,
            })
            .collect();
        let source_in_store = self
            .ls(&spec.source_path)
            .await?
            .iter()
            .any(|o| Some(o.path.as_str()) == clean_path(&spec.source_path).ok().as_deref());
        if !source_in_store {
            paths.push(&spec.source_path);
        }
        let mut created = Vec::new();
        for p in paths {
            let local = Path::new(p);
            if !local.is_file() {
                continue;
            }
            let clean = clean_path(p)?;
            let before = self.ls(&clean).await?.into_iter().any(|o| o.path == clean);
            if self.same_in_store(local, p).await? {
                // A running job may read it (an upload over it would be refused): nothing
                // to send anyway.
                eprintln!("rainstorm: {p} in the store is the same file; not uploaded again");
                continue;
            }
            eprintln!("rainstorm: uploading {p} to the store");
            self.put(local, p).await?;
            if !before {
                created.push(clean);
            }
        }
        Ok(created)
    }

    /// Deletes what [`Client::upload_local_inputs`] created for a job the leader refused: a
    /// refused submission changes nothing (a probe's refused job left its source, a secret
    /// file, in the store). A path another job reads meanwhile is refused by the store and
    /// stays; each failure is said, none hides the refusal.
    pub async fn remove_uploads(&self, created: &[String]) {
        for p in created {
            let req = self.request(Method::DELETE, &format!("/api/store/{}", url_path(p)));
            match self.send(req).await {
                Ok(_) => eprintln!("rainstorm: removed {p} from the store (uploaded for this job)"),
                Err(e) => eprintln!("rainstorm: {p} stays in the store: {e:#}"),
            }
        }
    }

    /// Whether store path `remote` holds exactly the bytes of `local` (compared only up to
    /// [`SAME_UP_TO`] bytes: a larger file is uploaded again). Submitting a job a second
    /// time while the first runs must not re-upload its operators: the store refuses a write
    /// over a file a running job reads.
    async fn same_in_store(&self, local: &Path, remote: &str) -> anyhow::Result<bool> {
        let len = tokio::fs::metadata(local)
            .await
            .with_context(|| format!("reading {}", local.display()))?
            .len();
        let clean = clean_path(remote)?;
        let listed = self.ls(&clean).await?;
        let stored = listed.iter().find(|o| o.path == clean).map(|o| o.size);
        if stored != Some(len) || len > SAME_UP_TO {
            return Ok(false);
        }
        let mine = tokio::fs::read(local)
            .await
            .with_context(|| format!("reading {}", local.display()))?;
        let req = self.request(Method::GET, &format!("/api/store/{}", url_path(&clean)));
        let theirs = self
            .send(req)
            .await?
            .bytes()
            .await
            .context("reading it back")?;
        Ok(theirs.as_ref() == mine.as_slice())
    }
}

/// Whether a request failed because the leader closed the connection while its body was being
/// sent (a broken pipe or a reset, after it connected).
fn cut_off(e: &reqwest::Error) -> bool {
    if e.is_connect() {
        return false;
    }
    let mut at: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = at {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::{BrokenPipe, ConnectionReset};
            return matches!(io.kind(), BrokenPipe | ConnectionReset);
        }
        at = err.source();
    }
    false
}
