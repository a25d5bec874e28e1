//! The sink: dedups what the last stage delivers, writes each value as a line, publishes how
//! far the file is flushed (for clients following the job), and completes only when every
//! last-stage task delivered its end of stream and the file is fsynced.

use crate::dataplane::inbound::Inbound;
use crate::dataplane::input::{Accepted, InputState};
use crate::dataplane::now_ns;
use crate::model::ids::TaskKey;
use crate::runtime::task::TaskEnv;
use std::path::PathBuf;
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
    /// Local file to write.
    pub file: PathBuf,
    /// Job epoch (a later epoch appends to what earlier ones wrote).
    pub epoch: u32,
    /// At-most-once: an end of stream is final even if tuples before it never came.
    pub accept_gaps: bool,
}

/// Runs the sink until every upstream link ended and the file is durable.
pub async fn run_sink(
    env: TaskEnv,
    spec: SinkSpec,
    written: Arc<AtomicU64>,
    latency: Arc<Mutex<LatencyHist>>,
    progress: watch::Sender<SinkProgress>,
    cancel: CancellationToken,
) -> Result<(), String> {
    let (mut inbox, acks, _registration) = env
        .registry
        .register(spec.key.clone(), env.cfg.queue_batches);
    let fail =
        |what: &str, e: std::io::Error| format!("{what} sink file {}: {e}", spec.file.display());
    if let Some(dir) = spec.file.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| fail("creating the directory of", e))?;
    }
    // A later at-least-once epoch appends: what earlier epochs wrote stays.
    let file = if spec.epoch == 0 {
        tokio::fs::File::create(&spec.file)
            .await
            .map_err(|e| fail("creating", e))?
    } else {
        tokio::fs::OpenOptions::new()
            .append(true)
            .open(&spec.file)
            .await
            .map_err(|e| fail("reopening", e))?
    };
    let mut bytes: u64 = file.metadata().await.map_err(|e| fail("reading", e))?.len();
    let mut file = file;
    if bytes > 0
        && !ends_with_newline(&spec.file, bytes)
            .await
            .map_err(|e| fail("reading", e))?
    {
        // A cancelled epoch may have left half a line: end it, so the next line is not glued
        // onto it.
        file.write_all(b"\n")
            .await
            .map_err(|e| fail("writing", e))?;
        bytes += 1;
    }
    let mut flushed: u64 = bytes;
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let floor = u64::from(spec.epoch) << crate::dataplane::link::EPOCH_SHIFT;
    let mut input = InputState::with_floor(spec.upstream, floor);
    while !input.all_ended() {
        let msg = match inbox.try_recv() {
            Ok(m) => m,
            Err(_) => {
                if bytes != flushed {
                    out.flush().await.map_err(|e| fail("writing", e))?;
                    flushed = bytes;
                    progress.send_modify(|p| p.flushed = flushed);
                }
                tokio::select! {
                    _ = cancel.cancelled() => {
                        // tokio file writes finish on a blocking thread even after their future
                        // is gone; wait for them, so that a later epoch appending to this file
                        // can never be overwritten by a write of this one landing late.
                        if let Err(e) = out.flush().await {
                            tracing::warn!(sink = %spec.key, error = %e, "flushing a cancelled sink failed");
                        }
                        return Err("cancelled".into());
                    }
                    m = inbox.recv() => match m {
                        Some(m) => m,
                        None => return Err("sink inbox closed".into()),
                    },
                }
            }
        };
        match msg {
            Inbound::Batch {
                from,
                first_seq,
                emit_ns,
                mut tuples,
            } => {
                match input.accept(from, first_seq, &mut tuples) {
                    Accepted::UnknownLink => {
                        tracing::warn!(sink = %spec.key, from, "batch from an unknown upstream task; dropped");
                        continue;
                    }
                    Accepted::Duplicate => {}
                    Accepted::Fresh { .. } => {
                        for t in &tuples {
                            out.write_all(t.value.as_bytes())
                                .await
                                .map_err(|e| fail("writing", e))?;
                            out.write_all(b"\n").await.map_err(|e| fail("writing", e))?;
                            bytes += t.value.len() as u64 + 1;
                        }
                        let fresh = tuples.len() as u64;
                        written.fetch_add(fresh, Ordering::Relaxed);
                        let lat_us = now_ns().saturating_sub(emit_ns) / 1000;
                        latency
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .record(lat_us, fresh);
                    }
                }
                acks.set(from, input.hwm(from), input.ended(from));
            }
            Inbound::Eos { from, last_seq } => {
                // An end of stream from an earlier epoch is stale: ignore it.
                if input.end_with(from, last_seq, spec.accept_gaps) || input.ended(from) {
                    acks.set(from, input.hwm(from), true);
                }
            }
        }
    }
    out.flush().await.map_err(|e| fail("writing", e))?;
    out.get_ref()
        .sync_all()
        .await
        .map_err(|e| fail("syncing", e))?;
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
