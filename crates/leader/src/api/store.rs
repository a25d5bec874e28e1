//! The store over HTTP. Public (`/api/store`, clients' `put`, `get`, `ls`): uploads and
//! downloads are streamed (a file of any size passes through a small buffer); `logs/` and
//! `blobs/` (and `cluster/`) belong to the engine and are read-only here; a file a running job reads or writes
//! cannot be replaced or deleted (409). Internal (`/internal/store`, workers without direct
//! access to the store): only for a live worker registration (its session key, not just the
//! cluster secret); reads anything, writes only the input logs of that worker's own tasks and
//! the output of a job whose sink it runs (and deletes only those logs' objects, one at a time
//! or in bulk, `POST /internal/store`), the latter only until the job's cleanup starts
//! (`job::OutputGate`). Every upload is whole or absent: only a body that ended properly is
//! committed.

use super::control::store_caller;
use super::{error, Shared};
use crate::job::OutputWrite;
use crate::model::ids::WorkerId;
use crate::owned::reserved;
use crate::protocol::control::OBJECT_SIZE_HEADER;
use crate::state::{lock, State as LeaderState};
use crate::Leader;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use rainstorm_store::store::{clean_path, clean_prefix, StoreError};
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::warn;

mod may_write;
use may_write::{may_delete_all, may_write_claimed, WorkerWrite};

#[derive(Deserialize)]
pub(super) struct PrefixQuery {
    #[serde(default)]
    prefix: String,
}

pub(super) async fn store_list(State(l): Shared, Query(q): Query<PrefixQuery>) -> Response {
    if let Err(e) = clean_prefix(&q.prefix) {
        return store_error(e);
    }
    match l.store.list(&q.prefix).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => store_error(e),
    }
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::NotFound(_) => error(StatusCode::NOT_FOUND, e.to_string()),
        StoreError::BadPath(_) | StoreError::BadByte { .. } => {
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        StoreError::Symlink(_) => error(StatusCode::FORBIDDEN, e.to_string()),
        other => error(StatusCode::INTERNAL_SERVER_ERROR, store_failure(&other)),
    }
}

/// What a client is told of a store failure: an I/O error's store path and kind ("No space
/// left on device"), which name no local path; not an object store's own words (the local
/// store's name its directory on the leader's host), which go to the leader's log.
pub(super) fn store_failure(e: &StoreError) -> String {
    warn!(error = %e, "a store request failed");
    match e {
        StoreError::Object { path, .. } => {
            format!("{path}: the store failed (the leader's log says why)")
        }
        StoreError::Io { .. } => e.to_string(),
        _ => "the store failed (the leader's log says why)".to_string(),
    }
}

pub(super) async fn store_get(
    State(l): Shared,
    headers: HeaderMap,
    Path(path): Path<String>,
) -> Response {
    if let Some(range) = headers.get(axum::http::header::RANGE) {
        match super::ranged::answer(&l.store, &path, range).await {
            Ok(Some(partial)) => return partial,
            Ok(None) => {}
            Err(e) => return store_error(e),
        }
    }
    match l.store.open(&path).await {
        Ok(rd) => {
            let stream = tokio_util::io::ReaderStream::with_capacity(rd, 256 << 10);
            let mut resp = Response::builder().header("content-type", "application/octet-stream");
            // For a HEAD (axum answers it with this handler, without the body): the size.
            match l.store.size(&path).await {
                Ok(n) => resp = resp.header(OBJECT_SIZE_HEADER, n),
                Err(e) => {
                    tracing::debug!(%path, error = %e, "cannot size a store object being read")
                }
            }
            resp.body(Body::from_stream(stream))
                .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
        }
        Err(e) => store_error(e),
    }
}

/// Streams a request body into the store: committed only if the body ended properly (a body
/// that broke part-way is an error, and the store commits nothing on a body error).
///
/// The write runs on a task of its own, so it runs to its end even if the client goes away
/// mid-request (its body then fails, and nothing is committed); `hold` (an upload's claim on
/// its path, a sink's admission through its job's output gate) is released only once the
/// store has finished with the write, never while a commit could still be under way.
async fn put_body<S>(l: &Leader, clean: &str, body: S, hold: impl Send + 'static) -> Response
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    let store = l.store.clone();
    let path = clean.to_string();
    let write = tokio::spawn(async move {
        let written = store.put_stream(&path, body).await;
        drop(hold);
        written
    });
    match write.await {
        Ok(Ok(n)) => (
            StatusCode::CREATED,
            Json(json!({ "path": clean, "size": n })),
        )
            .into_response(),
        Ok(Err(e)) => {
            warn!(path = %clean, error = %e, "a store upload failed; nothing was written");
            store_error(e)
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{clean}: the store write stopped: {e}"),
        ),
    }
}

/// Why a sink's write of its job's output is refused or stopped once the job is ending.
fn ending(clean: &str) -> String {
    format!("{clean}: the job is ending; the leader writes its output from what the job committed")
}

/// A request body as a stream of chunks (a transport error is an error of the stream).
fn body_stream(body: Body) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
    body.into_data_stream().map_err(std::io::Error::other)
}

/// A request body that fails as soon as `closed` is cancelled (the job whose output it is
/// started ending), even while it waits for the client's next chunk, so the store's write
/// stops and commits nothing. A body that already ended is not affected: its write is the
/// one the gate waits for.
fn until_closed(
    body: Body,
    closed: CancellationToken,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let body = Box::pin(body_stream(body));
    futures::stream::unfold(Some((body, closed)), |state| async move {
        let (mut body, closed) = state?;
        tokio::select! {
            biased;
            _ = closed.cancelled() => Some((
                Err(std::io::Error::other("the job is ending")),
                None,
            )),
            chunk = body.next() => chunk.map(|c| (c, Some((body, closed)))),
        }
    })
}

/// Bytes of a refused upload read and discarded before the refusal is sent: a client still
/// writing its body would otherwise see a broken pipe instead of the reason.
const DRAIN_REFUSED: usize = 64 << 20;

/// Answers a refused upload after reading (and dropping) up to [`DRAIN_REFUSED`] bytes of its
/// body, so that the client gets to read the answer.
async fn refuse_upload(body: Body, refusal: Response) -> Response {
    let mut stream = body.into_data_stream();
    let mut seen = 0usize;
    while seen < DRAIN_REFUSED {
        match stream.next().await {
            Some(Ok(chunk)) => seen += chunk.len(),
            _ => break,
        }
    }
    refusal
}

pub(super) async fn store_put(State(l): Shared, Path(path): Path<String>, body: Body) -> Response {
    let clean = match clean_path(&path) {
        Ok(c) => c,
        Err(e) => return refuse_upload(body, store_error(e)).await,
    };
    if reserved(&clean) {
        let refusal = error(
            StatusCode::FORBIDDEN,
            format!("{clean}: logs/, blobs/ and cluster/ belong to the engine and cannot be written through the API"),
        );
        return refuse_upload(body, refusal).await;
    }
    // Held for the whole upload: a job submitted meanwhile cannot claim this path.
    let writing = match l.claim_write(&clean) {
        Ok(g) => g,
        Err(e) => return refuse_upload(body, error(StatusCode::CONFLICT, e.to_string())).await,
    };
    let answer = put_body(&l, &clean, body_stream(body), writing).await;
    if answer.status().is_success() {
        let replaced = lock(&l.state).replace_outputs(|sink| sink == clean, None, "an upload");
        l.record_replaced(replaced).await;
    }
    answer
}

pub(super) async fn store_delete(State(l): Shared, Path(path): Path<String>) -> Response {
    let clean = match clean_path(&path) {
        Ok(c) => c,
        Err(e) => return store_error(e),
    };
    if reserved(&clean) {
        return error(
            StatusCode::FORBIDDEN,
            format!("{clean}: logs/, blobs/ and cluster/ belong to the engine and cannot be deleted through the API"),
        );
    }
    // Held until the answer: a job submitted meanwhile cannot claim what is being deleted.
    let _deleting = match l.claim_delete(&clean) {
        Ok(g) => g,
        Err(e) => return error(StatusCode::CONFLICT, e.to_string()),
    };
    let (removed, failed) = l.store.delete_report(&clean).await;
    let replaced =
        lock(&l.state).replace_outputs(|sink| removed.iter().any(|r| r == sink), None, "a delete");
    l.record_replaced(replaced).await;
    match (removed, failed) {
        (removed, None) => Json(json!({ "removed": removed })).into_response(),
        (removed, Some(e @ StoreError::Symlink(_))) if removed.is_empty() => store_error(e),
        (removed, Some(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({
                "error": format!("delete of {clean} stopped after {} objects: {}", removed.len(), store_failure(&e)),
                "removed": removed,
            })),
        )
            .into_response(),
    }
}

/// Workers' reads (operators, sources, logs), from a live registration.
pub(super) async fn internal_get(
    state: Shared,
    headers: HeaderMap,
    path: Path<String>,
) -> Response {
    if let Err(denied) = store_caller(&state.0, &headers) {
        return *denied;
    }
    store_get(state, headers, path).await
}

/// Workers' listings (input logs), from a live registration.
pub(super) async fn internal_list(
    state: Shared,
    headers: HeaderMap,
    q: Query<PrefixQuery>,
) -> Response {
    if let Err(denied) = store_caller(&state.0, &headers) {
        return *denied;
    }
    store_list(state, q).await
}

/// Admits a worker's store write: `Ok(None)` for a log object, `Ok(Some(_))` for a job's
/// output (the admission, held until the store has finished with the write), `Err` the
/// refusal to send — 403 for a write the worker may not make, 409 for the output of a job
/// that is ending (its cleanup writes the output; see `job::OutputGate`).
fn admit_worker_write(
    st: &LeaderState,
    caller: Option<&WorkerId>,
    clean: &str,
    claim: Option<&str>,
) -> Result<Option<OutputWrite>, Box<Response>> {
    match may_write_claimed(st, caller, clean, claim) {
        Ok(WorkerWrite::Log) => Ok(None),
        Ok(WorkerWrite::Output(job)) => st
            .jobs
            .get(&job)
            .and_then(|j| j.output.admit())
            .map(Some)
            .ok_or_else(|| {
                Box::new(error(
                    StatusCode::CONFLICT,
                    format!("job {job}: {}", ending(clean)),
                ))
            }),
        Err(msg) => {
            warn!(worker = ?caller.map(|w| &w.0), path = %clean, "a worker store write outside the worker's own input logs and outputs was refused");
            Err(Box::new(error(StatusCode::FORBIDDEN, msg)))
        }
    }
}

/// Workers' deletes: only objects of the input logs of their own tasks (a task compacting
/// its log drops the segments a merged object replaced), from a live registration.
pub(super) async fn internal_delete(
    State(l): Shared,
    headers: HeaderMap,
    Path(path): Path<String>,
) -> Response {
    delete_own_logs(&l, &headers, std::slice::from_ref(&path)).await
}

/// A worker's bulk delete: `{"delete": [paths]}`.
#[derive(Deserialize)]
pub(super) struct DeleteMany {
    delete: Vec<String>,
}

/// Workers' bulk deletes (`POST /internal/store`): every path must be an object of the input
/// log of one of the worker's own tasks, or nothing is deleted (a compaction drops the run of
/// segments a merged object replaced in one request, `Store::delete_many`).
pub(super) async fn internal_delete_many(
    State(l): Shared,
    headers: HeaderMap,
    Json(body): Json<DeleteMany>,
) -> Response {
    delete_own_logs(&l, &headers, &body.delete).await
}

/// Deletes `paths` for the worker the request comes from, if every one is an object of the
/// input log of one of its own tasks; otherwise deletes nothing (403).
async fn delete_own_logs(l: &Leader, headers: &HeaderMap, paths: &[String]) -> Response {
    let caller = match store_caller(l, headers) {
        Ok(c) => c,
        Err(denied) => return *denied,
    };
    let mut clean = Vec::with_capacity(paths.len());
    for path in paths {
        match clean_path(path) {
            Ok(c) => clean.push(c),
            Err(e) => return store_error(e),
        }
    }
    let refused = may_delete_all(&lock(&l.state), caller.as_ref(), &clean);
    if let Some(c) = refused {
        warn!(worker = ?caller.map(|w| w.0), path = %c, "a worker delete outside the worker's own input logs was refused; nothing was deleted");
        return error(
            StatusCode::FORBIDDEN,
            format!("{c}: workers delete only objects of their own tasks' input logs (nothing was deleted)"),
        );
    }
    match l.store.delete_many(&clean).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => store_error(e),
    }
}

/// Workers' writes: objects of the input logs of their own tasks, and their sinks' outputs
/// (through the job's output gate), from a live registration.
pub(super) async fn internal_put(
    State(l): Shared,
    headers: HeaderMap,
    Path(path): Path<String>,
    body: Body,
) -> Response {
    let caller = match store_caller(&l, &headers) {
        Ok(c) => c,
        Err(denied) => return *denied,
    };
    let clean = match clean_path(&path) {
        Ok(c) => c,
        Err(e) => return store_error(e),
    };
    let claim = (headers.get(crate::protocol::control::CLAIM_HEADER)).and_then(|v| v.to_str().ok());
    let admitted = admit_worker_write(&lock(&l.state), caller.as_ref(), &clean, claim);
    match admitted {
        Ok(None) => put_body(&l, &clean, body_stream(body), ()).await,
        Ok(Some(output)) => {
            let closed = output.closed.clone();
            let answer = put_body(&l, &clean, until_closed(body, closed.clone()), output).await;
            if closed.is_cancelled() && !answer.status().is_success() {
                // Stopped by the job's end, not by a fault: say so.
                return error(StatusCode::CONFLICT, ending(&clean));
            }
            answer
        }
        Err(refusal) => *refusal,
    }
}

#[cfg(test)]
mod tests;
