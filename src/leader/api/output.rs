//! A job's output stream for followers (`submit --follow`, `follow`, `run`): NDJSON read from
//! the durable sink file up to what the sink has flushed, from any line the follower asks for
//! (`?offset=N`), so a follower that lost its leader reconnects where it stopped.

use super::{error, InUse, Shared};
use crate::leader::state::lock;
use crate::leader::Leader;
use crate::model::ids::JobId;
use crate::protocol::control::OutputEvent;
use crate::runtime::sink::SinkProgress;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::watch;

/// The query of an output stream. `offset` is the byte of the sink file to start at (0 by
/// default): a follower that reconnects asks for the byte it had reached. It is taken as text
/// so that a bad value gets this API's JSON error rather than the extractor's plain text.
#[derive(serde::Deserialize)]
pub(super) struct OutputQuery {
    offset: Option<String>,
}

/// NDJSON stream of a job's output: `{"data": "<lines>"}` chunks read from the durable sink
/// file from byte `offset` on, then exactly one `{"end": <job>}`. It reads the file, never a
/// buffer the sink fills, so a slow or vanished client costs the job nothing; dropping the
/// stream frees everything. The offset must start a line and be at most what is flushed
/// (else 400; for a running job, an offset within the file but past what its sink has
/// published yet waits for it): offsets count the file's bytes, and since the sink writes
/// UTF-8 text and every chunk is whole lines, they are also the bytes of the text a follower
/// has received.
pub(super) async fn output(
    State(l): Shared,
    Path(id): Path<String>,
    query: Result<Query<OutputQuery>, QueryRejection>,
) -> Response {
    let id = JobId(id);
    let offset = match query.map(|Query(q)| q.offset) {
        Ok(None) => 0,
        Ok(Some(text)) => match text.parse::<u64>() {
            Ok(n) => n,
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("offset must be a byte count (a whole number ≥ 0), not {text:?}"),
                )
            }
        },
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad query: {e}")),
    };
    let (progress, path) = {
        let st = lock(&l.state);
        match st.jobs.get(&id) {
            Some(j) => (j.progress.clone(), j.sink_file.clone()),
            None => return error(StatusCode::NOT_FOUND, format!("no job {id}")),
        }
    };
    let now = *progress.borrow();
    if offset > now.flushed {
        // A running job's sink may not have said yet how far its file is flushed (a restarted
        // leader's sink before it resumed from its commit): bytes already in the file are
        // waited for, anything past the file's end is refused.
        let on_disk = tokio::fs::metadata(&path).await.map_or(0, |m| m.len());
        if now.finished || offset > on_disk {
            let have = if now.finished { now.flushed } else { on_disk };
            return error(
                StatusCode::BAD_REQUEST,
                format!("offset {offset} is beyond the output of job {id} ({have} bytes so far)"),
            );
        }
    }
    match starts_line(&path, offset, now).await {
        Ok(true) => {}
        Ok(false) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("offset {offset} is not at the start of a line of job {id}'s output"),
            )
        }
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading the output of job {id}: {e}"),
            )
        }
    }
    let tail = Tail {
        _open: InUse::new(&l.output_streams),
        leader: l.clone(),
        id,
        progress,
        path,
        file: None,
        offset,
        chunk: CHUNK,
        done: false,
    };
    let stream = futures::stream::unfold(tail, |mut t| async move {
        if t.done {
            return None;
        }
        loop {
            let p = *t.progress.borrow_and_update();
            if p.flushed > t.offset {
                match t.next_lines(p).await {
                    Ok(Some(buf)) => {
                        let ev = OutputEvent::Data(String::from_utf8_lossy(&buf).into_owned());
                        return Some((Ok(ndjson(&ev)), t));
                    }
                    // No whole line yet (the sink publishes whole lines, so not expected):
                    // wait for more.
                    Ok(None) => {}
                    Err(e) => {
                        t.done = true;
                        return Some((Err(e), t));
                    }
                }
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

/// How much of the file one data event carries at most (unless a single line is longer).
const CHUNK: u64 = 1 << 20;

/// How long a stream waits for its job's final status once the leader is stopping.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_millis(400);

/// One follower's stream: where it is in the sink file.
struct Tail {
    leader: Arc<Leader>,
    id: JobId,
    progress: watch::Receiver<SinkProgress>,
    path: PathBuf,
    file: Option<tokio::fs::File>,
    /// The next byte of the file to hand out (always the start of a line).
    offset: u64,
    /// How much to read next (grows for a line longer than [`CHUNK`]).
    chunk: u64,
    done: bool,
    _open: InUse,
}

impl Tail {
    /// The next whole lines between `offset` and `p.flushed` (> `offset`), at most about a
    /// chunk; `None` if no line is complete yet. A finished job's file is final, so its last
    /// line is handed out even without a newline (a leader killed mid-write can leave one);
    /// waiting for the rest of it would wait forever.
    async fn next_lines(&mut self, p: SinkProgress) -> std::io::Result<Option<Vec<u8>>> {
        let f = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(tokio::fs::File::open(&self.path).await?),
        };
        loop {
            let avail = p.flushed - self.offset;
            let want = avail.min(self.chunk);
            let mut buf = vec![0u8; want as usize];
            f.seek(std::io::SeekFrom::Start(self.offset)).await?;
            f.read_exact(&mut buf).await?;
            // Only whole lines: cut after the last newline of the chunk.
            let mut cut = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            if cut == 0 {
                if want < avail {
                    // A line longer than the chunk: read a larger one.
                    self.chunk = self.chunk.saturating_mul(2);
                    continue;
                }
                if !p.finished {
                    return Ok(None);
                }
                cut = buf.len();
            }
            self.chunk = CHUNK;
            buf.truncate(cut);
            self.offset += cut as u64;
            return Ok(Some(buf));
        }
    }
}

/// Whether `offset` is where a line of the sink file starts: 0, just after a newline, or the
/// end of a finished job's output (whose last line may lack its newline).
async fn starts_line(
    path: &std::path::Path,
    offset: u64,
    p: SinkProgress,
) -> std::io::Result<bool> {
    if offset == 0 || (p.finished && offset == p.flushed) {
        return Ok(true);
    }
    let mut f = tokio::fs::File::open(path).await?;
    f.seek(std::io::SeekFrom::Start(offset - 1)).await?;
    let mut b = [0u8; 1];
    f.read_exact(&mut b).await?;
    Ok(b[0] == b'\n')
}

/// Counts a stream as open for as long as its state lives: the server drops the stream's
/// state as soon as the client goes away, whatever the stream was waiting on.
fn ndjson(ev: &OutputEvent) -> Bytes {
    let mut v = serde_json::to_vec(ev).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}
