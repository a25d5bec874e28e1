//! The sink: dedups what the last stage delivers, writes each value as a line, publishes how
//! far the file is flushed (for clients following the job), and completes only when every
//! last-stage task delivered its end of stream and the file is fsynced.

use crate::dataplane::acceptance::{Acceptance, Gaps};
use crate::dataplane::link::EPOCH_SHIFT;
use crate::dataplane::now_ns;
use crate::model::ids::TaskKey;
use crate::model::tuple::Tuple;
use crate::runtime::task::operator::Stop;
use crate::runtime::task::receive::{receive, Intake};
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
    /// Opens the target: epoch 0 truncates, a later at-least-once epoch appends to what
    /// earlier epochs wrote (ending a half-written line first). Returns the output and its
    /// current length.
    async fn open(target: &SinkTarget, epoch: u32) -> std::io::Result<(Out, u64)> {
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
}

/// The sink as a receiver: writes each accepted value as a line.
struct SinkIntake<'a> {
    out: Out,
    bytes: u64,
    flushed: u64,
    written: &'a AtomicU64,
    latency: &'a Mutex<LatencyHist>,
    progress: &'a watch::Sender<SinkProgress>,
    what: String,
}

impl SinkIntake<'_> {
    fn fail(&self, e: std::io::Error) -> Stop {
        Stop::Failed(format!("writing sink {}: {e}", self.what))
    }
}

impl Intake for SinkIntake<'_> {
    async fn fresh(
        &mut self,
        _from: u32,
        _first_seq: u64,
        _last_seq: u64,
        emit_ns: u64,
        tuples: Vec<Tuple>,
    ) -> Result<(), Stop> {
        for t in &tuples {
            self.out
                .write_line(&t.value)
                .await
                .map_err(|e| self.fail(e))?;
            self.bytes += t.value.len() as u64 + 1;
        }
        let fresh = tuples.len() as u64;
        self.written.fetch_add(fresh, Ordering::Relaxed);
        let lat_us = now_ns().saturating_sub(emit_ns) / 1000;
        self.latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(lat_us, fresh);
        Ok(())
    }

    async fn ended(&mut self, _from: u32, _last_seq: u64) -> Result<(), Stop> {
        Ok(())
    }

    async fn idle(&mut self) -> Result<(), Stop> {
        if self.bytes != self.flushed {
            self.out.flush().await.map_err(|e| self.fail(e))?;
            self.flushed = self.bytes;
            let flushed = self.flushed;
            self.progress.send_modify(|p| p.flushed = flushed);
        }
        Ok(())
    }

    fn acks_on_accept(&self) -> bool {
        true
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
    let Some((mut inbox, acks, _registration)) =
        env.registry
            .register(spec.key.clone(), 0, spec.epoch, env.cfg.queue_batches)
    else {
        return Err("a newer sink of this job is registered".into());
    };
    let what = match &spec.target {
        SinkTarget::File(p) => p.display().to_string(),
        SinkTarget::Memory(_) => "(memory)".to_string(),
    };
    let (out, bytes) = Out::open(&spec.target, spec.epoch)
        .await
        .map_err(|e| format!("opening sink {what}: {e}"))?;
    let mut intake = SinkIntake {
        out,
        bytes,
        flushed: bytes,
        written: &written,
        latency: &latency,
        progress: &progress,
        what,
    };
    let gaps = if spec.accept_gaps {
        Gaps::Accept
    } else {
        Gaps::Refuse
    };
    let floor = u64::from(spec.epoch) << EPOCH_SHIFT;
    let mut acc = Acceptance::new(spec.upstream, floor, gaps, false);
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
