//! The sink: dedups what the last stage delivers, writes each value as a line, publishes how
//! far the file is flushed (for clients following the job), and completes only when every
//! last-stage task delivered its end of stream and the file is fsynced.
//!
//! A committing sink (one given a commit record path) survives its own restart: it commits
//! its output and its per-link high-water marks together — fsync the output, then atomically
//! replace the record (output length, marks) — and acknowledges only what is committed. A
//! restarted sink truncates the output to the committed length and starts from the committed
//! marks; the last-stage links re-send everything after them. Followers see committed bytes
//! only, so nothing they printed is ever rewritten.

use crate::dataplane::acceptance::{Acceptance, Gaps};
use crate::dataplane::inbound::AckBoard;
use crate::dataplane::link::EPOCH_SHIFT;
use crate::dataplane::now_ns;
use crate::model::ids::TaskKey;
use crate::runtime::task::operator::Stop;
use crate::runtime::task::receive::{receive, Accepted, Intake};
use crate::runtime::task::TaskEnv;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Progress of a job's output, followed by streaming clients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkProgress {
    /// Bytes of the sink file that are flushed (always whole lines).
    pub flushed: u64,
    /// The job reached a final status; nothing more will be written.
    pub finished: bool,
}

/// Log-scale latency histogram (5% buckets from 1 µs), cheap to update per batch.
#[derive(Default)]
pub struct LatencyHist {
    buckets: Vec<u64>,
    max_us: u64,
    count: u64,
}

const GROWTH: f64 = 1.05;

impl LatencyHist {
    /// Records `n` tuples that took `us` microseconds.
    pub fn record(&mut self, us: u64, n: u64) {
        let b = ((us.max(1) as f64).ln() / GROWTH.ln()) as usize;
        if self.buckets.len() <= b {
            self.buckets.resize(b + 1, 0);
        }
        self.buckets[b] += n;
        self.count += n;
        self.max_us = self.max_us.max(us);
    }

    /// p50, p99 and max in milliseconds, if anything was recorded.
    pub fn summary(&self) -> Option<crate::protocol::control::Latency> {
        if self.count == 0 {
            return None;
        }
        let q = |p: f64| {
            let target = (self.count as f64 * p).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, c) in self.buckets.iter().enumerate() {
                seen += c;
                if seen >= target {
                    return (GROWTH.powi(i as i32 + 1) / 1000.0).min(self.max_us as f64 / 1000.0);
                }
            }
            self.max_us as f64 / 1000.0
        };
        Some(crate::protocol::control::Latency {
            p50: q(0.5),
            p99: q(0.99),
            max: self.max_us as f64 / 1000.0,
        })
    }
}

/// Where the sink writes: a file, or memory (the simulation).
#[derive(Clone, Debug)]
pub enum SinkTarget {
    /// A local file (created with its directories).
    File(PathBuf),
    /// A buffer in memory.
    Memory(Arc<Mutex<Vec<u8>>>),
}

/// The open output of a sink.
enum Out {
    File(tokio::io::BufWriter<tokio::fs::File>),
    Memory(Arc<Mutex<Vec<u8>>>),
}

impl Out {
    /// Opens the target: a resumed sink truncates it to its committed length, epoch 0
    /// truncates it, a later at-least-once epoch appends to what earlier epochs wrote (ending
    /// a half-written line first). Returns the output and its current length.
    async fn open(
        target: &SinkTarget,
        epoch: u32,
        resume: Option<u64>,
    ) -> std::io::Result<(Out, u64)> {
        if let Some(len) = resume {
            return Out::resume(target, len).await;
        }
        match target {
            SinkTarget::Memory(buf) => {
                let mut b = buf.lock().unwrap_or_else(|p| p.into_inner());
                if epoch == 0 {
                    b.clear();
                } else if b.last().is_some_and(|c| *c != b'\n') {
                    b.push(b'\n');
                }
                Ok((Out::Memory(buf.clone()), b.len() as u64))
            }
            SinkTarget::File(path) => {
                if let Some(dir) = path.parent() {
                    tokio::fs::create_dir_all(dir).await?;
                }
                let mut file = if epoch == 0 {
                    tokio::fs::File::create(path).await?
                } else {
                    tokio::fs::OpenOptions::new()
                        .append(true)
                        .open(path)
                        .await?
                };
                let mut len = file.metadata().await?.len();
                if len > 0 && !ends_with_newline(path, len).await? {
                    // A cancelled epoch may have left half a line: end it, so the next line
                    // is not glued onto it.
                    file.write_all(b"\n").await?;
                    len += 1;
                }
                Ok((
                    Out::File(tokio::io::BufWriter::with_capacity(1 << 20, file)),
                    len,
                ))
            }
        }
    }

    /// Reopens the target cut back to `len`, its committed length: whatever was written after
    /// the last commit is written again (by the re-sent input), never kept twice.
    async fn resume(target: &SinkTarget, len: u64) -> std::io::Result<(Out, u64)> {
        match target {
            SinkTarget::Memory(buf) => {
                let mut b = buf.lock().unwrap_or_else(|p| p.into_inner());
                b.truncate(len as usize);
                Ok((Out::Memory(buf.clone()), b.len() as u64))
            }
            SinkTarget::File(path) => {
                let file = tokio::fs::OpenOptions::new().write(true).open(path).await?;
                let have = file.metadata().await?.len();
                if have < len {
                    return Err(std::io::Error::other(format!(
                        "{} holds {have} bytes but {len} were committed",
                        path.display()
                    )));
                }
                file.set_len(len).await?;
                file.sync_all().await?;
                drop(file);
                let file = tokio::fs::OpenOptions::new()
                    .append(true)
                    .open(path)
                    .await?;
                Ok((
                    Out::File(tokio::io::BufWriter::with_capacity(1 << 20, file)),
                    len,
                ))
            }
        }
    }

    async fn write_line(&mut self, value: &str) -> std::io::Result<()> {
        match self {
            Out::File(f) => {
                f.write_all(value.as_bytes()).await?;
                f.write_all(b"\n").await
            }
            Out::Memory(b) => {
                let mut b = b.lock().unwrap_or_else(|p| p.into_inner());
                b.extend_from_slice(value.as_bytes());
                b.push(b'\n');
                Ok(())
            }
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Out::File(f) => f.flush().await,
            Out::Memory(_) => Ok(()),
        }
    }

    async fn sync(&mut self) -> std::io::Result<()> {
        self.flush().await?;
        match self {
            Out::File(f) => f.get_ref().sync_all().await,
            Out::Memory(_) => Ok(()),
        }
    }
}

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
    fn read(&self) -> Result<Option<SinkCommit>, String> {
        match self {
            CommitTarget::File(p) => SinkCommit::read(p),
            CommitTarget::Memory(m) => Ok(m.lock().unwrap_or_else(|p| p.into_inner()).clone()),
        }
    }

    async fn write(&self, record: &SinkCommit) -> Result<(), String> {
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
struct Committer {
    target: CommitTarget,
    record: SinkCommit,
    /// Something was accepted since the last commit.
    dirty: bool,
}

/// Uncommitted output that makes the sink commit without waiting for its inbox to run dry.
const COMMIT_BYTES: u64 = 8 << 20;

async fn ends_with_newline(path: &std::path::Path, len: u64) -> std::io::Result<bool> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut f = tokio::fs::File::open(path).await?;
    f.seek(std::io::SeekFrom::Start(len - 1)).await?;
    let mut b = [0u8; 1];
    f.read_exact(&mut b).await?;
    Ok(b[0] == b'\n')
}

/// What the sink needs.
pub struct SinkSpec {
    /// The sink's own task key (stage K+1, index 0).
    pub key: TaskKey,
    /// Last-stage task count.
    pub upstream: u32,
    /// Where to write.
    pub target: SinkTarget,
    /// Job epoch (a later epoch appends to what earlier ones wrote).
    pub epoch: u32,
    /// At-most-once: gaps are accepted (its senders never re-send).
    pub accept_gaps: bool,
    /// The sink's attempt (a sink restarted with its leader is a new attempt).
    pub attempt: u32,
    /// Where a committing sink keeps its commit record (see the module doc); `None`: the
    /// sink acknowledges on accept and cannot be resumed.
    pub commit: Option<CommitTarget>,
}

/// The sink as a receiver: writes each accepted value as a line.
struct SinkIntake<'a> {
    out: Out,
    bytes: u64,
    flushed: u64,
    lines: u64,
    commit: Option<Committer>,
    acks: &'a AckBoard,
    written: &'a AtomicU64,
    latency: &'a Mutex<LatencyHist>,
    progress: &'a watch::Sender<SinkProgress>,
    what: String,
}

impl SinkIntake<'_> {
    fn fail(&self, e: std::io::Error) -> Stop {
        Stop::Failed(format!("writing sink {}: {e}", self.what))
    }

    /// Commits output and marks together, then acknowledges and publishes what is committed.
    async fn commit(&mut self) -> Result<(), Stop> {
        let Some(c) = self.commit.as_mut().filter(|c| c.dirty) else {
            return Ok(());
        };
        if let Err(e) = self.out.sync().await {
            return Err(Stop::Failed(format!("syncing sink {}: {e}", self.what)));
        }
        c.record.len = self.bytes;
        c.record.lines = self.lines;
        c.target.write(&c.record).await.map_err(Stop::Failed)?;
        c.dirty = false;
        for (i, (upto, eos)) in c.record.marks.iter().enumerate() {
            self.acks.set(i as u32, *upto, *eos);
        }
        self.flushed = self.bytes;
        let flushed = self.flushed;
        self.progress.send_modify(|p| p.flushed = flushed);
        Ok(())
    }

    fn mark(&mut self, from: u32, upto: u64, eos: bool) {
        if let Some(c) = self.commit.as_mut() {
            if let Some(m) = c.record.marks.get_mut(from as usize) {
                *m = (upto, eos || m.1);
                c.dirty = true;
            }
        }
    }
}

impl Intake for SinkIntake<'_> {
    async fn fresh(&mut self, batch: Accepted) -> Result<(), Stop> {
        let Accepted {
            from,
            last_seq,
            emit_ns,
            tuples,
            ..
        } = batch;
        for t in &tuples {
            self.out
                .write_line(&t.value)
                .await
                .map_err(|e| self.fail(e))?;
            self.bytes += t.value.len() as u64 + 1;
        }
        let fresh = tuples.len() as u64;
        self.lines += fresh;
        self.mark(from, last_seq, false);
        self.written.fetch_add(fresh, Ordering::Relaxed);
        let lat_us = now_ns().saturating_sub(emit_ns) / 1000;
        self.latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(lat_us, fresh);
        if self
            .commit
            .as_ref()
            .is_some_and(|c| self.bytes.saturating_sub(c.record.len) >= COMMIT_BYTES)
        {
            self.commit().await?;
        }
        Ok(())
    }

    async fn ended(&mut self, from: u32, last_seq: u64) -> Result<(), Stop> {
        self.mark(from, last_seq, true);
        Ok(())
    }

    async fn idle(&mut self) -> Result<(), Stop> {
        if self.commit.is_some() {
            return self.commit().await;
        }
        if self.bytes != self.flushed {
            self.out.flush().await.map_err(|e| self.fail(e))?;
            self.flushed = self.bytes;
            let flushed = self.flushed;
            self.progress.send_modify(|p| p.flushed = flushed);
        }
        Ok(())
    }

    fn acks_on_accept(&self) -> bool {
        self.commit.is_none()
    }
}

/// Runs the sink until every upstream link ended and the output is durable.
pub async fn run_sink(
    env: TaskEnv,
    spec: SinkSpec,
    written: Arc<AtomicU64>,
    latency: Arc<Mutex<LatencyHist>>,
    progress: watch::Sender<SinkProgress>,
    cancel: CancellationToken,
) -> Result<(), String> {
    let what = match &spec.target {
        SinkTarget::File(p) => p.display().to_string(),
        SinkTarget::Memory(_) => "(memory)".to_string(),
    };
    // A record of this epoch means this sink is resumed; any other is an earlier epoch's.
    let resumed = match &spec.commit {
        Some(t) => t
            .read()?
            .filter(|c| c.epoch == spec.epoch && c.marks.len() == spec.upstream as usize),
        None => None,
    };
    let (out, bytes) = Out::open(&spec.target, spec.epoch, resumed.as_ref().map(|c| c.len))
        .await
        .map_err(|e| format!("opening sink {what}: {e}"))?;
    let Some((mut inbox, acks, _registration)) = env.registry.register(
        spec.key.clone(),
        spec.attempt,
        spec.epoch,
        env.cfg.queue_batches,
    ) else {
        return Err("a newer sink of this job is registered".into());
    };
    let gaps = if spec.accept_gaps {
        Gaps::Accept
    } else {
        Gaps::Refuse
    };
    let floor = u64::from(spec.epoch) << EPOCH_SHIFT;
    let mut acc = Acceptance::new(spec.upstream, floor, gaps, false);
    let commit = spec.commit.as_ref().map(|target| {
        let record = resumed.clone().unwrap_or_else(|| SinkCommit {
            epoch: spec.epoch,
            len: bytes,
            lines: 0,
            marks: vec![(floor, false); spec.upstream as usize],
        });
        for (i, (upto, eos)) in record.marks.iter().enumerate() {
            if *eos {
                acc.replay_end(i as u32, *upto);
            } else {
                acc.advance(i as u32, *upto);
            }
            acks.set(i as u32, *upto, *eos);
        }
        Committer {
            target: target.clone(),
            record,
            dirty: resumed.is_none(),
        }
    });
    let lines = resumed.as_ref().map_or(0, |c| c.lines);
    if let Some(c) = &resumed {
        written.store(c.lines, Ordering::Relaxed);
        tracing::info!(sink = %spec.key, bytes = c.len, lines = c.lines, "sink resumed from its last commit");
    }
    progress.send_modify(|p| p.flushed = bytes);
    let mut intake = SinkIntake {
        out,
        bytes,
        flushed: bytes,
        lines,
        commit,
        acks: &acks,
        written: &written,
        latency: &latency,
        progress: &progress,
        what,
    };
    let tuples_in = AtomicU64::new(0);
    let res = receive(
        &spec.key,
        &mut inbox,
        &mut acc,
        &mut intake,
        &acks,
        &tuples_in,
        &cancel,
    )
    .await;
    if let Err(e) = res {
        // tokio file writes finish on a blocking thread even after their future is gone;
        // wait for them, so that a later epoch appending to this file can never be
        // overwritten by a write of this one landing late.
        if let Err(fe) = intake.out.flush().await {
            tracing::warn!(sink = %spec.key, error = %fe, "flushing a stopped sink failed");
        }
        return Err(e.to_string());
    }
    // The ends of stream are acknowledged once committed.
    intake.commit().await.map_err(|e| e.to_string())?;
    intake
        .out
        .sync()
        .await
        .map_err(|e| format!("syncing sink {}: {e}", intake.what))?;
    let bytes = intake.bytes;
    progress.send_modify(|p| p.flushed = bytes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::LatencyHist;

    #[test]
    fn latency_quantiles() {
        let mut h = LatencyHist::default();
        assert!(h.summary().is_none());
        for us in 1..=1000u64 {
            h.record(us * 10, 1);
        }
        let s = h.summary().unwrap();
        assert!((s.p50 - 5.0).abs() < 0.5, "{s:?}");
        assert!((s.p99 - 9.9).abs() < 0.6, "{s:?}");
        assert_eq!(s.max, 10.0);
    }
}
