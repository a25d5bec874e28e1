//! The source: reads the input file line by line at the configured rate and routes each line as
//! tuple `(FILE:LINE, line)` to the first stage. The file itself is the source's log: line
//! numbers are its sequence, so it never needs to log anything.

use crate::data::link::{run_link, LinkEnd, LinkSpec};
use crate::data::now_ns;
use crate::data::router::{Partition, Router};
use crate::ids::{JobId, TaskPos};
use crate::task::TaskEnv;
use crate::tuple::Tuple;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

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
            to: TaskPos { stage: 1, index: i },
            resend: spec.resend,
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
        let mut rd = tokio::io::BufReader::with_capacity(1 << 20, file);
        let mut buf = Vec::with_capacity(512);
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
            buf.clear();
            let n = rd
                .read_until(b'\n', &mut buf)
                .await
                .map_err(|e| format!("reading source {}: {e}", spec.file.display()))?;
            if n == 0 {
                break;
            }
            if buf.last() == Some(&b'\n') {
                buf.pop();
                if buf.last() == Some(&b'\r') {
                    buf.pop();
                }
            }
            line_no += 1;
            let value = match String::from_utf8(std::mem::take(&mut buf)) {
                Ok(s) => s,
                Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
            };
            let t = Tuple {
                key: format!("{}:{line_no}", spec.name),
                value,
            };
            router.push(t, now_ns()).await.map_err(|e| e.to_string())?;
            if rd.buffer().is_empty() {
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
