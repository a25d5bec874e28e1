//! Atomic, durable writes of local files: a temporary file beside the target, fsynced, renamed
//! over it, and the directory fsynced, so a reader sees the old file or the whole new one.

use super::{io_err, upload_broke, StoreError};
use bytes::Bytes;
use futures::Stream;
use std::path::Path;

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

/// Gives `file`, about to replace `target`, the permissions of the regular file at `target`
/// (none there: `file`'s stay): a job's output replaced by its next run keeps the mode its
/// owner gave it, as a shell redirect or `sort -o` into it would.
pub fn keep_mode_of(target: &Path, file: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(target) {
        Ok(m) if m.is_file() => std::fs::set_permissions(file, m.permissions()),
        _ => Ok(()),
    }
}

/// Who may read a file [`write_stream_atomic`] writes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    /// The owner only (an object of a local store).
    Private,
    /// As any file a process creates (0666 less the umask), or the mode of the file it
    /// replaces ([`keep_mode_of`]): a job's output, which its user reads like any file.
    Output,
}

/// Streams `body` into the local file `target` (`name` is what errors call it): a hidden
/// temporary file in the target's directory (skipped by listings), fsynced, then renamed over
/// the target and the directory fsynced, so a reader sees the old file or the whole new one,
/// never a part. A broken body leaves nothing behind (the temporary file is removed when
/// dropped). Memory stays at one chunk whatever the size. The local store's uploads and a
/// sink's local output file are written this way; `access` says who may read the file.
pub async fn write_stream_atomic<S, E>(
    target: &Path,
    name: &str,
    body: S,
    access: Access,
) -> Result<u64, StoreError>
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: std::fmt::Display,
{
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    let target = target.to_path_buf();
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let tmp = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            let mut b = tempfile::Builder::new();
            if access == Access::Output {
                use std::os::unix::fs::PermissionsExt;
                b.permissions(std::fs::Permissions::from_mode(0o666));
            }
            b.tempfile_in(&dir)
        })
        .await
        .map_err(|e| io_err(name)(std::io::Error::other(e)))?
        .map_err(io_err(name))?
    };
    let (file, tmp_path) = tmp.into_parts();
    let mut out = tokio::fs::File::from_std(file);
    let mut body = std::pin::pin!(body);
    let mut total = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| upload_broke(name, e))?;
        out.write_all(&chunk).await.map_err(io_err(name))?;
        total += chunk.len() as u64;
    }
    // tokio's File writes in the background and keeps a failed write's error for the next
    // operation: `sync_all` does not report it, `flush` does. Without this a full disk
    // (ENOSPC) or an I/O error commits a truncated file as if it were whole.
    out.flush().await.map_err(io_err(name))?;
    out.sync_all().await.map_err(io_err(name))?;
    drop(out);
    tokio::task::spawn_blocking(move || {
        if access == Access::Output {
            keep_mode_of(&target, &tmp_path)?;
        }
        tmp_path.persist(&target).map_err(|e| e.error)?;
        std::fs::File::open(&dir)?.sync_all()
    })
    .await
    .map_err(|e| io_err(name)(std::io::Error::other(e)))?
    .map_err(io_err(name))?;
    Ok(total)
}
