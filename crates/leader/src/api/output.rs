//! A job's output stream for followers (`submit --follow`, `follow`, `run`): NDJSON of the
//! job's committed output from any line the follower asks for (`?offset=N`), so a follower
//! that lost its leader reconnects where it stopped. While the job runs, the committed output
//! is the sink task's log in the store (`runtime::log::committed_lineage`: each answer a
//! prefix of every later one, so nothing printed is ever taken back); once it ended, it is
//! the output file, which holds exactly that text. This stream is the only job data the
//! leader carries, and only for followers.

mod tail;

use super::committed::LogCursor;
use super::{error, InUse, Shared};
use crate::model::ids::JobId;
use crate::protocol::control::{JobInfo, OutputEvent};
use crate::state::lock;
use crate::Leader;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use futures::stream::{BoxStream, StreamExt};
use std::sync::Arc;
use tail::{Refused, Tail, EXPIRED, REMOVED};

/// The query of an output stream. `offset` is the byte of the sink file to start at (0 by
/// default): a follower that reconnects asks for the byte it had reached. It is taken as text
/// so that a bad value gets this API's JSON error rather than the extractor's plain text.
#[derive(serde::Deserialize)]
pub(super) struct OutputQuery {
    offset: Option<String>,
}

/// NDJSON stream of a job's output: `{"data": "<lines>"}` chunks of committed output from byte
/// `offset` on, then exactly one `{"end": <job>}`. It reads the store or the output file,
/// never a buffer the sink fills, so a slow or vanished client costs the job nothing; dropping
/// the stream frees everything. The offset must start a line and be at most what is committed
/// (else 400): offsets count the output's bytes, and since the output is UTF-8 text and every
/// chunk is whole lines, they are also the bytes of the text a follower has received.
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
    match chunks(l, id, offset).await {
        Ok(chunks) => Response::builder()
            .header("content-type", "application/x-ndjson")
            .body(Body::from_stream(chunks.map(|c| c.map(ndjson))))
            .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        Err((code, msg)) => error(code, msg),
    }
}

/// What a follower is handed, in order: whole lines of the output, then the job's final
/// status, once.
pub enum OutputChunk {
    /// Whole lines (the output's last line even without its newline), from where the previous
    /// chunk ended.
    Lines(Vec<u8>),
    /// The job's final status (boxed: it is large, and comes once).
    End(Box<JobInfo>),
}

/// A job's output from byte `offset` on as [`OutputChunk`]s: what the HTTP stream above
/// encodes as NDJSON, and what `rainstorm run`, whose leader runs in its own process, writes
/// to its stdout as it comes (no HTTP hop, no JSON either side). Refused (a status and why)
/// for an unknown job, an offset past the output or inside a line, or an output that cannot
/// be read.
pub async fn chunks(
    l: Arc<Leader>,
    id: JobId,
    offset: u64,
) -> Result<BoxStream<'static, std::io::Result<OutputChunk>>, (StatusCode, String)> {
    let (progress, commits, key, target, replaced, followers, last_word) = {
        let st = lock(&l.state);
        match st.jobs.get(&id) {
            Some(j) => (
                j.progress.clone(),
                j.commits.subscribe(),
                j.sink_key(&id),
                j.output(),
                j.output_replaced.is_some(),
                InUse::new(&j.followers),
                j.last_word.clone(),
            ),
            None => return Err((StatusCode::NOT_FOUND, format!("no job {id}"))),
        }
    };
    if replaced {
        // What is at its sink path now is another's (a later job, an upload) or nothing:
        // not this job's output. Its final status, which says so, and no lines.
        return Ok(end_only(&l, &id));
    }
    let mut tail = Tail {
        _open: InUse::new(&l.output_streams),
        _following: followers,
        last_word,
        leader: l.clone(),
        id: id.clone(),
        progress,
        commits,
        log: LogCursor::new(key, l.segments.clone()),
        target,
        offset,
        fin: None,
        done: false,
    };
    match tail.check().await {
        Ok(()) => {}
        Err(Refused::Bad(msg)) => return Err((StatusCode::BAD_REQUEST, msg)),
        // As below: an ended job whose output cannot be read still gives its final status.
        Err(Refused::Io(e)) if tail.progress.borrow().finished => {
            tracing::warn!(job = %id, offset, error = %e, "the ended job's output cannot be read; the stream is its status");
            return Ok(end_only(&l, &id));
        }
        Err(Refused::Io(e)) => {
            // The cause may name the leader's own directories: it goes to the log only.
            tracing::warn!(job = %id, offset, error = %e, "the output cannot be read");
            return Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading the output of job {id} failed (the leader's log says why)"),
            ));
        }
    }
    let stream = futures::stream::unfold(tail, |mut t| async move {
        if t.done {
            return None;
        }
        loop {
            let finished = t.progress.borrow_and_update().finished;
            let next = if finished {
                t.final_lines().await
            } else {
                t.committed_lines().await
            };
            match next {
                Ok(Some(buf)) => return Some((Ok(OutputChunk::Lines(buf)), t)),
                Ok(None) if finished => {
                    t.done = true;
                    let info = t.status(None)?;
                    return Some((Ok(OutputChunk::End(Box::new(info))), t));
                }
                Ok(None) => {}
                // The job has ended and its output cannot be read (its record says why): the
                // follower still gets the final status, instead of a broken stream it would
                // reconnect to forever.
                Err(e) if finished => {
                    tracing::warn!(job = %t.id, offset = t.offset, error = %e, "the ended job's output cannot be read; the stream ends with its status");
                    t.done = true;
                    let cut = (e.kind() == std::io::ErrorKind::NotFound).then_some(REMOVED);
                    let info = t.status(cut)?;
                    return Some((Ok(OutputChunk::End(Box::new(info))), t));
                }
                Err(e) => {
                    t.done = true;
                    return Some((Err(e), t));
                }
            }
            if t.leader.shutdown.is_cancelled() {
                // The leader is stopping, the job is not: the stream ends without a final
                // status, and the follower asks the next leader for the rest.
                return None;
            }
            let poll = t.leader.cfg.follow_poll;
            let changed = tokio::select! {
                r = t.progress.changed() => r.is_ok(),
                Ok(()) = t.commits.changed() => true,
                _ = tokio::time::sleep(poll) => true,
                _ = t.leader.shutdown.cancelled() => continue,
            };
            if !changed {
                // The job's progress went: its record was dropped (retention), or its driver
                // was stopped with the leader. Only a status that is final ends a stream: a
                // job not over (a leader stopping stops its drivers, not its jobs) has its
                // stream cut, and its follower asks the next leader. Its "pending" here was
                // taken for final, and the follower exited 1 (hostile probe).
                t.done = true;
                // Expired before this follower read the end of its output (it read slower
                // than the record's retention and the grace after it allow): it is told so,
                // not handed a stream that ends as if complete.
                let info = t.status(Some(EXPIRED))?;
                if !info.status.is_terminal() {
                    return None;
                }
                return Some((Ok(OutputChunk::End(Box::new(info))), t));
            }
        }
    });
    Ok(stream.boxed())
}

/// A stream of just the job's final status (its `End` event).
fn end_only(l: &Leader, id: &JobId) -> BoxStream<'static, std::io::Result<OutputChunk>> {
    let info = lock(&l.state).job_info(id);
    futures::stream::iter(info.map(|i| Ok(OutputChunk::End(Box::new(i))))).boxed()
}

/// A chunk as one NDJSON line of the HTTP stream (`OutputEvent`).
fn ndjson(chunk: OutputChunk) -> Bytes {
    let ev = match chunk {
        // The output is text (values are strings), so this takes the bytes as they are.
        OutputChunk::Lines(buf) => OutputEvent::Data(
            String::from_utf8(buf)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        ),
        OutputChunk::End(info) => OutputEvent::End(*info),
    };
    let mut v = serde_json::to_vec(&ev).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}
