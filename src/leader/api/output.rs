//! A job's output stream for followers (`submit --follow`, `run`): NDJSON read from the durable
//! sink file up to what the sink has flushed.

use super::{error, Shared};
use crate::leader::state::lock;
use crate::leader::Leader;
use crate::model::ids::JobId;
use crate::protocol::control::OutputEvent;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// NDJSON stream of a job's output: `{"data": "<lines>"}` chunks read from the durable sink
/// file, then exactly one `{"end": <job>}`. It reads the file, never a buffer the sink fills,
/// so a slow or vanished client costs the job nothing; dropping the stream frees everything.
pub(super) async fn output(State(l): Shared, Path(id): Path<String>) -> Response {
    let id = JobId(id);
    let (progress, file) = {
        let st = lock(&l.state);
        match st.jobs.get(&id) {
            Some(j) => (j.progress.clone(), j.sink_file.clone()),
            None => return error(StatusCode::NOT_FOUND, format!("no job {id}")),
        }
    };
    struct Tail {
        leader: Arc<Leader>,
        id: JobId,
        progress: tokio::sync::watch::Receiver<crate::runtime::sink::SinkProgress>,
        path: std::path::PathBuf,
        file: Option<tokio::fs::File>,
        offset: u64,
        chunk: u64,
        done: bool,
        _open: OpenStream,
    }
    let tail = Tail {
        _open: OpenStream::new(&l.output_streams),
        leader: l.clone(),
        id,
        progress,
        path: file,
        file: None,
        offset: 0,
        chunk: 1 << 20,
        done: false,
    };
    let stream = futures::stream::unfold(tail, |mut t| async move {
        if t.done {
            return None;
        }
        loop {
            let p = *t.progress.borrow_and_update();
            if p.flushed > t.offset {
                if t.file.is_none() {
                    match tokio::fs::File::open(&t.path).await {
                        Ok(f) => t.file = Some(f),
                        Err(e) => {
                            t.done = true;
                            return Some((Err(e), t));
                        }
                    }
                }
                let f = t.file.as_mut()?;
                let want = (p.flushed - t.offset).min(t.chunk) as usize;
                let mut buf = vec![0u8; want];
                let res = async {
                    f.seek(std::io::SeekFrom::Start(t.offset)).await?;
                    f.read_exact(&mut buf).await
                }
                .await;
                if let Err(e) = res {
                    t.done = true;
                    return Some((Err(e), t));
                }
                // Only whole lines: cut after the last newline of the chunk.
                let cut = buf
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map(|i| i + 1)
                    .unwrap_or(0);
                if cut == 0 {
                    // A line longer than the chunk: read a larger chunk next time.
                    t.chunk *= 2;
                    continue;
                }
                t.chunk = 1 << 20;
                buf.truncate(cut);
                t.offset += cut as u64;
                let ev = OutputEvent::Data(String::from_utf8_lossy(&buf).into_owned());
                return Some((Ok(ndjson(&ev)), t));
            }
            if p.finished {
                t.done = true;
                let info = lock(&t.leader.state).job_info(&t.id)?;
                return Some((Ok(ndjson(&OutputEvent::End(info))), t));
            }
            let changed = if t.leader.shutdown.is_cancelled() {
                // The leader is stopping and cancelling the job: give its driver a moment to
                // record the end, but never hold the server's stop for long.
                tokio::time::timeout(STOP_GRACE, t.progress.changed())
                    .await
                    .is_ok_and(|r| r.is_ok())
            } else {
                tokio::select! {
                    r = t.progress.changed() => r.is_ok(),
                    _ = t.leader.shutdown.cancelled() => continue,
                }
            };
            if !changed {
                // The job record was dropped (retention), or the leader is stopping: end
                // with what we know.
                t.done = true;
                let info = lock(&t.leader.state).job_info(&t.id)?;
                return Some((Ok(ndjson(&OutputEvent::End(info))), t));
            }
        }
    });
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// How long a stream waits for its job's final status once the leader is stopping.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_millis(400);

/// Counts a stream as open for as long as its state lives: the server drops the stream's
/// state as soon as the client goes away, whatever the stream was waiting on.
struct OpenStream(Arc<AtomicI64>);

impl OpenStream {
    fn new(count: &Arc<AtomicI64>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        OpenStream(count.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn ndjson(ev: &OutputEvent) -> Bytes {
    let mut v = serde_json::to_vec(ev).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}
