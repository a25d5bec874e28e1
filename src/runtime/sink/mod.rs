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

mod commit;
mod latency;
mod output;

pub use commit::{CommitTarget, SinkCommit};
use commit::{Committer, COMMIT_BYTES};
pub use latency::LatencyHist;
use output::Out;
pub use output::SinkTarget;

use crate::dataplane::acceptance::{Acceptance, Gaps};
use crate::dataplane::inbound::AckBoard;
use crate::dataplane::link::EPOCH_SHIFT;
use crate::dataplane::now_ns;
use crate::model::ids::TaskKey;
use crate::runtime::task::operator::Stop;
use crate::runtime::task::receive::{receive, Accepted, Intake};
use crate::runtime::task::TaskEnv;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
