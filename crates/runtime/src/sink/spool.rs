//! The sink's spool: the text of every segment of its lineage, in order, in one local file
//! the attempt appends to as it goes — the segments it replayed from its predecessors, then
//! each segment it commits. When the job ends the output is this one file streamed out, not
//! every segment read back from the store (through the leader, for a worker without a store
//! of its own): the output is there within moments of the last commit, however long the job.
//!
//! It is a cache, never the truth: the output is written from it only if the segments it
//! holds are exactly the attempt's committed lineage as the store lists it at the end; any
//! write error, or any difference, and the output is assembled from the store as before.
//! Nothing in it needs to survive the attempt (a new attempt builds its own while it
//! replays), so it is not synced while it grows, and goes with its attempt — unless the
//! output is a local file on the same filesystem: the spool is then synced once and renamed
//! into place ([`Spool::move_if`]), the output without a copy.

use super::segment_text_written;
use crate::model::ids::TaskKey;
use bytes::Bytes;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// One sink attempt's spool file and the segments it holds.
pub struct Spool {
    path: PathBuf,
    state: tokio::sync::Mutex<State>,
    /// Whether it is synced before it is moved into place as the output, and the output's
    /// directory after (not for the output of a scratch store's run, `Store::durable`).
    sync: bool,
}

/// What the spool holds so far; `file` is `None` once a write failed (it is then unused).
struct State {
    file: Option<tokio::fs::File>,
    segments: Vec<String>,
    /// The output it replaced lies at its path (`put_in_place`): removed in the background.
    displaced: bool,
}

/// A file name made only of safe characters, whatever an id holds.
fn safe(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c,
            _ => '_',
        })
        .collect()
}

impl Spool {
    /// A fresh spool for attempt `attempt` of the sink `key`, under `work_dir/spool`, synced
    /// before it becomes the output if `sync`; `None` (logged) when the file cannot be made:
    /// the output is then assembled from the store.
    pub async fn create(work_dir: &Path, key: &TaskKey, attempt: u32, sync: bool) -> Option<Spool> {
        // Unique per process and per spool, whatever else shares the directory (another
        // attempt of the same task, another worker given the same data dir by mistake).
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = work_dir.join("spool");
        let name = format!(
            "{}-{}-{}-{attempt}-{}-{n}.txt",
            safe(&key.job.0),
            key.pos.stage,
            key.pos.index,
            std::process::id()
        );
        let path = dir.join(name);
        let made = async {
            tokio::fs::create_dir_all(&dir).await?;
            tokio::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .open(&path)
                .await
        };
        match made.await {
            Ok(file) => Some(Spool {
                path,
                state: tokio::sync::Mutex::new(State {
                    file: Some(file),
                    segments: Vec::new(),
                    displaced: false,
                }),
                sync,
            }),
            Err(e) => {
                tracing::warn!(sink = %key, path = %path.display(), error = %e, "no output spool; the output will be assembled from the store");
                None
            }
        }
    }

    /// Appends the text of segment `name` (its committed bytes `data`: written by this sink,
    /// or replayed and checked already, so its tag is not checked again). A failure leaves the
    /// spool unused, logged; the sink goes on.
    pub async fn append(&self, name: &str, data: &Bytes) {
        let mut st = self.state.lock().await;
        let Some(file) = st.file.as_mut() else {
            return;
        };
        let written = match segment_text_written(name, data.clone()) {
            Ok(text) => file.write_all(&text).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match written {
            Ok(()) => st.segments.push(name.to_string()),
            Err(e) => {
                tracing::warn!(spool = %self.path.display(), segment = name, error = %e, "the output spool failed; the output will be assembled from the store");
                st.file = None;
            }
        }
    }

    /// `Some((made, found))` when `lineage`, the sink's log as the store lists it, holds fewer
    /// group commits (`found`) than this spool took in (`made`): its newest objects were
    /// deleted (slots, not objects, are counted: compaction changes only the latter). A
    /// spool whose write failed took in a prefix, which proves less but never too much.
    pub async fn lost(&self, lineage: &[String]) -> Option<(u64, u64)> {
        let slots = |l: &[String]| l.iter().map(|p| crate::log::compact::slots(p)).sum::<u64>();
        let made = slots(&self.state.lock().await.segments);
        let found = slots(lineage);
        (found < made).then_some((made, found))
    }

    /// The spool's text as a stream, if it holds exactly `lineage` (and is intact): the same
    /// group commits in the same order, however the log has been compacted since.
    pub async fn body_if(
        &self,
        lineage: &[String],
    ) -> Option<tokio_util::io::ReaderStream<tokio::fs::File>> {
        let mut st = self.state.lock().await;
        if !crate::log::compact::same_slots(&st.segments, lineage) {
            return None;
        }
        let file = st.file.as_mut()?;
        if let Err(e) = file.flush().await {
            tracing::warn!(spool = %self.path.display(), error = %e, "flushing the output spool failed");
            return None;
        }
        match tokio::fs::File::open(&self.path).await {
            Ok(f) => Some(tokio_util::io::ReaderStream::with_capacity(f, 1 << 20)),
            Err(e) => {
                tracing::warn!(spool = %self.path.display(), error = %e, "reopening the output spool failed");
                None
            }
        }
    }
}

impl Spool {
    /// Moves the spool into place as the output file `target` when it holds exactly `lineage`
    /// and both are on one filesystem: one rename instead of a copy of the whole output (a
    /// 150 MB output took a third of a second to copy). `None` when it cannot (a different
    /// lineage, a spool whose write failed, another filesystem): nothing changed then, and
    /// the caller streams the output instead. `Some(Err)` when the output is in place but its
    /// directory could not be synced, which a retry repairs as any failed write.
    pub async fn move_if(&self, lineage: &[String], target: &Path) -> Option<std::io::Result<u64>> {
        let mut st = self.state.lock().await;
        if !crate::log::compact::same_slots(&st.segments, lineage) {
            return None;
        }
        let file = st.file.as_mut()?;
        // As a copy would: every byte on disk before the rename makes it the output (and
        // `flush` reports a failed background write, `sync_all` would not).
        let sync = self.sync;
        let synced = async {
            file.flush().await?;
            if sync {
                file.sync_all().await?;
            }
            Ok::<u64, std::io::Error>(file.metadata().await?.len())
        };
        let len = match synced.await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(spool = %self.path.display(), error = %e, "syncing the output spool failed; streaming the output instead");
                return None;
            }
        };
        let (from, to) = (self.path.clone(), target.to_path_buf());
        let moved = tokio::task::spawn_blocking(move || {
            let dir = to
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf();
            std::fs::create_dir_all(&dir)?;
            crate::store::keep_mode_of(&to, &from)?;
            let displaced = put_in_place(&from, &to)?;
            Ok::<_, std::io::Error>((dir, displaced))
        })
        .await;
        let dir = match moved {
            Ok(Ok((dir, displaced))) => {
                st.displaced = displaced;
                dir
            }
            Ok(Err(e)) => {
                if e.kind() != std::io::ErrorKind::CrossesDevices {
                    tracing::warn!(spool = %self.path.display(), target = %target.display(), error = %e, "moving the output spool into place failed; streaming the output instead");
                }
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "moving the output spool into place panicked; streaming the output instead");
                return None;
            }
        };
        // It is the output now, no longer this attempt's spool.
        st.file = None;
        if !self.sync {
            return Some(Ok(len));
        }
        let synced = tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        Some(synced.map(|()| len))
    }
}

/// Puts the file `from` at `to`; returns whether the file that was at `to` now lies at
/// `from`. Over a regular file the two are exchanged (Linux's `renameat2(RENAME_EXCHANGE)`),
/// atomically as a rename: a rename over a file makes ext4 write the new file's data out
/// first and free the old one's blocks on the spot (`auto_da_alloc`), some 6 ms for app1's
/// 7.7 MB output on the job's way to its end; exchanged, the old output is removed off that
/// way. Anything else (no file there, another system or filesystem) is a plain rename.
fn put_in_place(from: &Path, to: &Path) -> std::io::Result<bool> {
    #[cfg(target_os = "linux")]
    if std::fs::symlink_metadata(to).is_ok_and(|m| m.is_file()) {
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes());
        let (f, t) = (c(from)?, c(to)?);
        // SAFETY: two NUL-terminated paths that outlive the call, which only reads them.
        let done = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                f.as_ptr(),
                libc::AT_FDCWD,
                t.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if done == 0 {
            return Ok(true);
        }
        // A kernel or filesystem without it: the rename below.
    }
    std::fs::rename(from, to)?;
    Ok(false)
}

/// Removes the spool files under `work_dir/spool` that processes no longer running left: a
/// worker killed while it ran a sink left its spool, a copy of the output committed so far,
/// for good, one file per kill (hostile probe 11). A spool's name ends with the id of the
/// process that made it; one whose process lives (this one, or another worker given the same
/// data dir by mistake) stays. Returns how many went; a failure is logged.
pub fn remove_orphans(work_dir: &Path) -> usize {
    let dir = work_dir.join("spool");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return 0,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot look for spools left by earlier processes");
            return 0;
        }
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = maker_of(&name) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(spool = %entry.path().display(), error = %e, "could not remove a spool left by an earlier process")
            }
        }
    }
    if removed > 0 {
        tracing::info!(dir = %dir.display(), removed, "removed output spools that earlier processes left");
    }
    removed
}

/// The id of the process that made spool file `name` (`…-PID-N.txt`), if it is one.
fn maker_of(name: &str) -> Option<u32> {
    let stem = name.strip_suffix(".txt")?;
    let (rest, n) = stem.rsplit_once('-')?;
    n.parse::<u64>().ok()?;
    rest.rsplit_once('-')?.1.parse().ok()
}

impl Drop for Spool {
    /// The attempt is over, however it ended: the file goes (one unlink; a spool is never
    /// read after its attempt). An output it replaced, left at its path, is removed on the
    /// runtime's blocking pool (freeing a large file's blocks takes milliseconds; the
    /// runtime's shutdown waits for that pool): nothing waits for it.
    fn drop(&mut self) {
        let path = std::mem::take(&mut self.path);
        let remove = move || {
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(spool = %path.display(), error = %e, "could not remove the output spool");
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) if self.state.get_mut().displaced => drop(rt.spawn_blocking(remove)),
            _ => remove(),
        }
    }
}

#[cfg(test)]
mod tests;
