//! The source: reads the input file line by line at the configured rate and routes each line as
//! tuple `(FILE:LINE, line)` to the first stage. The file itself is the source's log: line
//! numbers are its sequence, so it never needs to log anything.

use crate::dataplane::link::{run_link, LinkEnd, LinkSpec};
use crate::dataplane::now_ns;
use crate::dataplane::router::Router;
use crate::model::ids::{JobId, TaskPos};
use crate::model::partition::Partition;
use crate::model::tuple::Tuple;
use crate::runtime::task::TaskEnv;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Turns the source file into tuples `(NAME:LINE, line)`; the one definition of what the
/// source emits, shared with first-stage replay after a crash.
pub struct SourceReader<R> {
    rd: tokio::io::BufReader<R>,
    name: String,
    line_no: u64,
    buf: Vec<u8>,
}

impl<R: tokio::io::AsyncRead + Unpin> SourceReader<R> {
    /// Reads `inner`, naming tuples after `name`.
    pub fn new(inner: R, name: &str) -> Self {
        SourceReader {
            rd: tokio::io::BufReader::with_capacity(1 << 20, inner),
            name: name.to_string(),
            line_no: 0,
            buf: Vec::with_capacity(512),
        }
    }

    /// The next tuple, or None at the end of the file.
    pub async fn next_tuple(&mut self) -> std::io::Result<Option<Tuple>> {
        self.buf.clear();
        if self.rd.read_until(b'\n', &mut self.buf).await? == 0 {
            return Ok(None);
        }
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
        }
        self.line_no += 1;
        let value = match String::from_utf8(std::mem::take(&mut self.buf)) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        Ok(Some(Tuple {
            key: format!("{}:{}", self.name, self.line_no),
            value,
        }))
    }

    /// Whether the next read would not block on the file (its buffer holds data).
    pub fn buffered(&self) -> bool {
        !self.rd.buffer().is_empty()
    }
}

/// What the source needs to know.
pub struct SourceSpec {
    /// Job.
    pub job: JobId,
    /// Local file to read.
    pub file: PathBuf,
    /// Name used in keys (`name:line`).
    pub name: String,
    /// Tuples per second; 0 = unthrottled.
    pub rate: f64,
    /// First-stage task count.
    pub downstream: u32,
    /// First-stage partitioning.
    pub partition: Partition,
    /// Re-send on reconnect (all modes but at-most-once).
    pub resend: bool,
    /// Job epoch (at-least-once restarts start the source over in a new epoch).
    pub epoch: u32,
    /// Per first-stage task: how far its link is acknowledged (first-stage recovery replays
    /// the file up to there).
    pub progress: Vec<Arc<crate::dataplane::link::LinkProgress>>,
}

/// Reads and routes the whole file, then waits until every first-stage task has acknowledged
/// the end of stream.
pub async fn run_source(
    env: TaskEnv,
    spec: SourceSpec,
    emitted: Arc<AtomicU64>,
    cancel: CancellationToken,
) -> Result<(), String> {
    let file = tokio::fs::File::open(&spec.file)
        .await
        .map_err(|e| format!("cannot open source {}: {e}", spec.file.display()))?;
    let mut links = JoinSet::new();
    let mut senders = Vec::new();
    let link_cancel = cancel.child_token();
    for i in 0..spec.downstream {
        let (tx, rx) = mpsc::channel(env.cfg.queue_batches);
        senders.push(tx);
        let ls = LinkSpec {
            job: spec.job.clone(),
            from: TaskPos { stage: 0, index: 0 },
            attempt: 0,
            to: TaskPos { stage: 1, index: i },
            resend: spec.resend,
            progress: spec.progress.get(i as usize).cloned(),
            floor: u64::from(spec.epoch) << crate::dataplane::link::EPOCH_SHIFT,
        };
        links.spawn(run_link(
            ls,
            env.cfg.clone(),
            rx,
            env.routes.watch(&spec.job),
            link_cancel.clone(),
        ));
    }
    let mut router = Router::new(senders, spec.partition.clone(), env.cfg.clone(), emitted);
    let read = async {
        let mut rd = SourceReader::new(file, &spec.name);
        let mut line_no: u64 = 0;
        let start = Instant::now();
        loop {
            if spec.rate > 0.0 {
                let due = start + Duration::from_secs_f64(line_no as f64 / spec.rate);
                if due > Instant::now() {
                    router.flush().await.map_err(|e| e.to_string())?;
                    tokio::time::sleep_until(due.into()).await;
                }
            }
            let t = match rd.next_tuple().await {
                Ok(Some(t)) => t,
                Ok(None) => break,
                Err(e) => return Err(format!("reading source {}: {e}", spec.file.display())),
            };
            line_no += 1;
            router.push(t, now_ns()).await.map_err(|e| e.to_string())?;
            if !rd.buffered() {
                router.flush().await.map_err(|e| e.to_string())?;
            }
        }
        router.finish().await.map_err(|e| e.to_string())
    };
    let res = tokio::select! {
        _ = cancel.cancelled() => Err("cancelled".to_string()),
        r = read => r,
    };
    if let Err(e) = res {
        link_cancel.cancel();
        while links.join_next().await.is_some() {}
        return Err(e);
    }
    let mut result = Ok(());
    while let Some(r) = links.join_next().await {
        match r {
            Ok(LinkEnd::Done) => {}
            Ok(LinkEnd::Cancelled) => result = Err("cancelled".to_string()),
            Err(e) => result = Err(format!("source link: {e}")),
        }
    }
    result
}
