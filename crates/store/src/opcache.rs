//! A worker's cache of operators pinned by content: `OPS_DIR/sha256/HEX`, fetched from the
//! store's `blobs/sha256/HEX` and verified against HEX before it is installed, and verified
//! again every time a task is about to run it. A cached file whose content does not match is
//! thrown away and fetched again, so a replaced or tampered copy never runs.

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
        Some(h) if h == hex => return Ok(target),
        Some(h) => {
            tracing::warn!(cached = %target.display(), want = hex, found = %h, "cached operator does not match its hash; fetching it again");
            let _ = tokio::fs::remove_file(&target).await;
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
