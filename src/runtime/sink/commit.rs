//! A committing sink's durable record — output length, lines and per-link high-water marks —
//! and where it is kept. Written only after the output is fsynced, so the record never
//! claims bytes that a crash could lose.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;

/// A committing sink's durable record: how long its output is and how far each last-stage
/// link is accepted, as of its last commit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkCommit {
    /// The job epoch the record belongs to (a record of another epoch is not resumed).
    pub epoch: u32,
    /// Committed output length in bytes (whole lines).
    pub len: u64,
    /// Committed lines (the job's `sink_tuples` after a restart).
    pub lines: u64,
    /// Per last-stage link: accepted high-water mark and whether its end was accepted.
    pub marks: Vec<(u64, bool)>,
}

impl SinkCommit {
    /// Reads a record; `Ok(None)` if there is none yet.
    pub fn read(path: &Path) -> Result<Option<SinkCommit>, String> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| format!("sink commit record {} is corrupt: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!(
                "reading sink commit record {}: {e}",
                path.display()
            )),
        }
    }

    /// Replaces the record atomically and durably: a temporary file, fsynced, renamed over
    /// the old record, and the directory fsynced.
    async fn write(&self, path: &Path) -> std::io::Result<()> {
        let body = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("tmp");
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let mut f = tokio::fs::File::create(&tmp).await?;
        f.write_all(&body).await?;
        f.sync_all().await?;
        drop(f);
        tokio::fs::rename(&tmp, path).await?;
        if let Some(dir) = path.parent() {
            tokio::fs::File::open(dir).await?.sync_all().await?;
        }
        Ok(())
    }
}

/// Where a committing sink keeps its commit record.
#[derive(Clone, Debug)]
pub enum CommitTarget {
    /// A file, replaced atomically (the leader's data dir).
    File(PathBuf),
    /// A cell in memory (the simulation, whose "crashes" keep memory).
    Memory(Arc<Mutex<Option<SinkCommit>>>),
}

impl CommitTarget {
    pub(super) fn read(&self) -> Result<Option<SinkCommit>, String> {
        match self {
            CommitTarget::File(p) => SinkCommit::read(p),
            CommitTarget::Memory(m) => Ok(m.lock().unwrap_or_else(|p| p.into_inner()).clone()),
        }
    }

    pub(super) async fn write(&self, record: &SinkCommit) -> Result<(), String> {
        match self {
            CommitTarget::File(p) => record
                .write(p)
                .await
                .map_err(|e| format!("writing sink commit record {}: {e}", p.display())),
            CommitTarget::Memory(m) => {
                // An fsync takes time: a crash can land between the output and the record.
                tokio::time::sleep(std::time::Duration::from_micros(200)).await;
                *m.lock().unwrap_or_else(|p| p.into_inner()) = Some(record.clone());
                Ok(())
            }
        }
    }
}

/// A committing sink's state between commits.
pub(super) struct Committer {
    pub(super) target: CommitTarget,
    pub(super) record: SinkCommit,
    /// Something was accepted since the last commit.
    pub(super) dirty: bool,
}

/// Uncommitted output that makes the sink commit without waiting for its inbox to run dry.
pub(super) const COMMIT_BYTES: u64 = 8 << 20;
