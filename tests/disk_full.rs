//! A full disk under the leader's store. A hostile probe saw jobs fail with a misleading "log
//! segment … manifest is corrupt", or restart dozens of times a minute: a write that hit
//! ENOSPC was committed as an empty file (tokio's `File` keeps a background write's error for
//! the next operation, and `sync_all` does not report it), and restarts followed each other
//! with no pause. The store's tmpfs needs root to mount; without it the test says so and
//! skips.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A small tmpfs mounted over a directory, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }

    /// Fills the file system: writes `name` until the disk is full.
    fn fill(&self, name: &str) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.join(name)).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).and_then(|_| f.flush()).is_ok() {}
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn numbered(lines: usize) -> String {
    (1..=lines).map(|i| format!("line {i:05}\n")).collect()
}

#[test]
fn a_full_store_fails_the_job_saying_so_and_the_next_job_runs_once_space_is_back() {
    let c = Cluster::start_with(
        2,
        5.0,
        &[
            "--max-restarts",
            "3",
            "--restart-delay",
            "0.05",
            "--restart-delay-max",
            "0.2",
        ],
    );
    let store = c.dir.path().join("leader").join("store");
    let Some(disk) = Tmpfs::mount(&store, "2m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let lines = 2000;
    c.file("in.txt", &numbered(lines));
    c.ok(&["put", "in.txt", "in.txt"]);
    let stages: &[(u32, &str, &[&str])] = &[(2, "identity", &[]), (2, "identity", &[])];
    c.file(
        "a.toml",
        &job_toml("a", "in.txt", "a.txt", 0.0, "exactly-once", stages),
    );
    c.file(
        "b.toml",
        &job_toml("b", "in.txt", "b.txt", 0.0, "exactly-once", stages),
    );
    disk.fill(".filler");
    let id = c.submit("a.toml");
    let j = c.wait_job(&id, Duration::from_secs(120));
    assert_eq!(j["status"], "failed", "{j}\n{}", c.diagnose());
    let error = j["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("No space left on device") && !error.contains("corrupt"),
        "the job's cause names the full disk: {j}\n{}",
        c.diagnose()
    );
    std::fs::remove_file(store.join(".filler")).unwrap();
    let id = c.submit("b.toml");
    let j = c.wait_job(&id, Duration::from_secs(120));
    assert_eq!(j["status"], "succeeded", "{j}\n{}", c.diagnose());
    assert_same(
        "the output",
        &sorted_lines(&c.store_file("b.txt")),
        &sorted_lines(&numbered(lines)),
    );
}
