//! A worker's cache of operators pinned by content: `OPS_DIR/sha256/HEX`, fetched from the
//! store's `blobs/sha256/HEX` and verified against HEX before it is installed, and verified
//! again every time a task is about to run it. A cached file whose content does not match is
//! thrown away and fetched again, so a replaced or tampered copy never runs.
//!
//! The cache is bounded ([`prune`]): a copy is touched whenever it is run, and beyond
//! [`KEEP_UNUSED`] copies no live task runs, the least recently run go (hostile probe 19: a
//! worker kept every operator it had ever run, one per edit of a user's script).

use crate::store::{blob_path, Store};
use std::path::{Path, PathBuf};

/// The SHA-256 (hex) of a local file.
fn file_hash(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Why a pinned operator could not be had: not in the store, unreadable, or its content
/// does not match its hash (the message says which). `fetch` turns it into
/// `ExecUnavailable::Fetch`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FetchFailed(pub String);

/// The local executable for the operator with SHA-256 `hex`: the cached copy if its content
/// matches, else a fresh copy from the store, verified before it is installed.
pub async fn fetch_pinned(
    store: &Store,
    hex: &str,
    ops_dir: &Path,
) -> Result<PathBuf, FetchFailed> {
    fetch(store, hex, ops_dir).await.map_err(FetchFailed)
}

async fn fetch(store: &Store, hex: &str, ops_dir: &Path) -> Result<PathBuf, String> {
    let target = ops_dir.join("sha256").join(hex);
    let t = target.clone();
    let cached = tokio::task::spawn_blocking(move || file_hash(&t).ok())
        .await
        .map_err(|e| e.to_string())?;
    match cached {
        Some(h) if h == hex => {
            // Run now: the last to go when the cache is pruned.
            let t = target.clone();
            let touched = tokio::task::spawn_blocking(move || {
                std::fs::File::options()
                    .append(true)
                    .open(&t)?
                    .set_modified(std::time::SystemTime::now())
            })
            .await;
            if let Ok(Err(e)) | Err(e) = touched.map_err(std::io::Error::other) {
                tracing::debug!(cached = %target.display(), error = %e, "could not mark a cached operator as run");
            }
            return Ok(target);
        }
        Some(h) => {
            tracing::warn!(cached = %target.display(), want = hex, found = %h, "cached operator does not match its hash; fetching it again");
            if let Err(e) = tokio::fs::remove_file(&target).await {
                tracing::warn!(cached = %target.display(), error = %e, "could not remove a cached operator that does not match its hash");
            }
        }
        None => {}
    }
    // Streamed to a hidden file next to the target (an operator of any size costs one
    // buffer), verified, then renamed into place: a half-fetched or wrong file never runs.
    // Unique per fetch: two tasks may fetch the same operator at once.
    static FETCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = FETCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = target.with_file_name(format!(".fetch-{hex}-{}-{n}", std::process::id()));
    store
        .fetch_to_file(&blob_path(hex), &tmp)
        .await
        .map_err(|e| format!("fetching operator sha256:{hex}: {e}"))?;
    let (t, final_path, want) = (tmp.clone(), target.clone(), hex.to_string());
    let installed = tokio::task::spawn_blocking(move || -> std::io::Result<Option<String>> {
        use std::os::unix::fs::PermissionsExt;
        let got = file_hash(&t)?;
        if got != want {
            std::fs::remove_file(&t)?;
            return Ok(Some(got));
        }
        std::fs::File::open(&t)?.sync_all()?;
        std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&t, &final_path)?;
        Ok(None)
    })
    .await
    .map_err(|e| e.to_string())?;
    match installed {
        Ok(None) => Ok(target),
        Ok(Some(got)) => Err(format!(
            "operator sha256:{hex} from the store has sha256:{got}; refusing to run it"
        )),
        Err(e) => {
            if let Err(rm) = tokio::fs::remove_file(&tmp).await {
                tracing::debug!(tmp = %tmp.display(), error = %rm, "no temporary operator file to remove");
            }
            Err(format!("installing operator {}: {e}", target.display()))
        }
    }
}

/// How many cached operators no live task runs a worker keeps (the most recently run).
pub const KEEP_UNUSED: usize = 16;

/// Removes the cached operators of `ops_dir` beyond the [`KEEP_UNUSED`] most recently run
/// that are not in `live` (the hashes the worker's tasks run, which may start their process
/// again); returns the hashes removed. Blocking: run it off the runtime's threads.
pub fn prune(ops_dir: &Path, live: &std::collections::BTreeSet<String>) -> Vec<String> {
    let dir = ops_dir.join("sha256");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut unused: Vec<(std::time::SystemTime, String)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            // Fetches in progress are hidden files; only installed copies are pruned.
            let installed = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
            let run = e.metadata().and_then(|m| m.modified()).ok()?;
            (installed && !live.contains(&name)).then_some((run, name))
        })
        .collect();
    unused.sort_by(|a, b| b.cmp(a));
    let mut removed = Vec::new();
    for (_, name) in unused.into_iter().skip(KEEP_UNUSED) {
        match std::fs::remove_file(dir.join(&name)) {
            Ok(()) => removed.push(name),
            Err(e) => {
                tracing::warn!(operator = %name, error = %e, "could not remove a cached operator no task runs")
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sha256_hex;
    use bytes::Bytes;

    #[tokio::test]
    async fn a_cached_operator_whose_hash_mismatches_is_refetched() {
        let store = Store::memory();
        let dir = tempfile::tempdir().unwrap();
        let v1 = Bytes::from_static(b"#!/bin/sh\necho v1\n");
        let hex = sha256_hex(&v1);
        store.put(&blob_path(&hex), v1.clone()).await.unwrap();
        let p = fetch_pinned(&store, &hex, dir.path()).await.unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), v1);
        // Someone replaces the cached copy: it is thrown away and fetched again.
        std::fs::write(&p, b"#!/bin/sh\necho stale\n").unwrap();
        let again = fetch_pinned(&store, &hex, dir.path()).await.unwrap();
        assert_eq!(std::fs::read(&again).unwrap(), v1);
    }

    #[test]
    fn the_cache_keeps_what_runs_and_the_most_recently_run() {
        let dir = tempfile::tempdir().unwrap();
        let sha = dir.path().join("sha256");
        std::fs::create_dir_all(&sha).unwrap();
        let t0 = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let names: Vec<String> = (0..KEEP_UNUSED + 5).map(|i| format!("{i:064x}")).collect();
        for (i, n) in names.iter().enumerate() {
            let f = std::fs::File::create(sha.join(n)).unwrap();
            f.set_modified(t0 + std::time::Duration::from_secs(i as u64))
                .unwrap();
        }
        std::fs::write(sha.join(".fetch-x-1-0"), b"half").unwrap();
        // The oldest one runs in a live task: it stays; the next four oldest go.
        let live = [names[0].clone()].into();
        let mut removed = prune(dir.path(), &live);
        removed.sort();
        assert_eq!(removed, names[1..5].to_vec());
        assert!(sha.join(&names[0]).exists() && sha.join(".fetch-x-1-0").exists());
        assert_eq!(std::fs::read_dir(&sha).unwrap().count(), KEEP_UNUSED + 2);
    }

    #[tokio::test]
    async fn an_operator_whose_stored_content_mismatches_its_hash_is_refused() {
        let store = Store::memory();
        let dir = tempfile::tempdir().unwrap();
        let hex = sha256_hex(b"the real one");
        store
            .put(&blob_path(&hex), Bytes::from_static(b"an impostor"))
            .await
            .unwrap();
        let err = fetch_pinned(&store, &hex, dir.path()).await.unwrap_err();
        assert!(err.0.contains("refusing to run it"), "{err}");
        assert!(!dir.path().join("sha256").join(&hex).exists());
        let left: Vec<_> = std::fs::read_dir(dir.path().join("sha256"))
            .unwrap()
            .collect();
        assert!(
            left.is_empty(),
            "a refused download leaves nothing: {left:?}"
        );
    }
}
