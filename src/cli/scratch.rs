//! `run`'s temporary cluster directories (`$TMPDIR/rainstorm-*`): removed when the run ends,
//! and, for a run that could not remove its own (SIGKILL, a machine that lost power), by a
//! later run.
//!
//! A run holds an exclusive `flock` on `scratch.lock` in its directory for as long as it runs;
//! the kernel releases it when the process dies, however it dies. A later run removes every
//! such directory whose lock it can take: no process holds it any more. A run that keeps its
//! directory (`--keep-logs`) lets go of the lock file first, and its directory is left alone.
//! (A probe's SIGKILLed runs left 37–64 MB each behind.)

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// The lock file whose holder is the directory's run.
const LOCK: &str = "scratch.lock";

/// The prefix of `run`'s directories under the temporary directory.
pub const PREFIX: &str = "rainstorm-";

/// Takes `file`'s exclusive lock without waiting; whether it was free.
fn try_lock(file: &File) -> bool {
    // SAFETY: flock on a descriptor this process owns; no memory is involved.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Marks `dir` as the running process's: the lock is held until the returned file is dropped
/// or the process ends. The lock is taken before the file has its name, so another run never
/// sees the named file unlocked while this one lives.
pub fn hold(dir: &Path) -> std::io::Result<File> {
    let staged = dir.join(".scratch.lock.new");
    let file = File::create(&staged)?;
    if !try_lock(&file) {
        return Err(std::io::Error::other(
            "cannot lock a file this run just made",
        ));
    }
    std::fs::rename(&staged, dir.join(LOCK))?;
    Ok(file)
}

/// Lets go of `dir` for good: it is kept, and no later run removes it.
pub fn release(dir: &Path, held: File) {
    if let Err(e) = std::fs::remove_file(dir.join(LOCK)) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not unmark a kept run directory; a later run may remove it");
    }
    drop(held);
}

/// Removes the directories under `tmp` left by runs that are gone; returns those removed.
/// Problems are logged, never fatal: this is housekeeping.
pub fn remove_abandoned(tmp: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        let ours = entry.file_name().to_string_lossy().starts_with(PREFIX)
            && entry.file_type().is_ok_and(|t| t.is_dir());
        if !ours {
            continue;
        }
        // Only a directory marked by a run; its lock free means that run is gone.
        let Ok(file) = File::open(dir.join(LOCK)) else {
            continue;
        };
        if !try_lock(&file) {
            continue;
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => removed.push(dir),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove an abandoned run directory")
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A held directory is left alone, a released (kept) one too, and one whose run is gone
    /// (its lock file's holder closed it without unmarking) is removed.
    #[test]
    fn only_directories_of_runs_that_are_gone_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let mk = |name: &str| {
            let d = tmp.path().join(name);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("data"), "x").unwrap();
            d
        };
        let live = mk("rainstorm-live");
        let _held = hold(&live).unwrap();
        let kept = mk("rainstorm-kept");
        release(&kept, hold(&kept).unwrap());
        let gone = mk("rainstorm-gone");
        drop(hold(&gone).unwrap());
        let other = mk("someone-else");
        File::create(other.join(LOCK)).unwrap();
        assert_eq!(remove_abandoned(tmp.path()), vec![gone.clone()]);
        assert!(live.is_dir() && kept.is_dir() && other.is_dir() && !gone.exists());
    }
}
