//! The store over HTTP. Public (`/api/store`, clients' `put`, `get`, `ls`): uploads and
//! downloads are streamed (a file of any size passes through a small buffer); `logs/` and
//! `blobs/` belong to the engine and are read-only here; a file a running job reads or writes
//! cannot be replaced or deleted (409). Internal (`/internal/store`, workers without direct
//! access to the store): reads anything, writes only input logs.

use super::{error, Shared};
use crate::leader::owned::reserved;
use crate::leader::Leader;
use crate::runtime::store::{clean_path, clean_prefix, StoreError};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::TryStreamExt;
use serde::Deserialize;
use serde_json::json;

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
        StoreError::BadPath(_) => error(StatusCode::BAD_REQUEST, e.to_string()),
        other => error(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

pub(super) async fn store_get(State(l): Shared, Path(path): Path<String>) -> Response {
    match l.store.open(&path).await {
        Ok(rd) => {
            let stream = tokio_util::io::ReaderStream::with_capacity(rd, 256 << 10);
            Response::builder()
                .header("content-type", "application/octet-stream")
                .body(Body::from_stream(stream))
                .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
        }
        Err(e) => store_error(e),
    }
}

/// Streams a request body into the store.
async fn put_body(l: &Leader, clean: &str, body: Body) -> Response {
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    match l.store.put_stream(clean, stream).await {
        Ok(n) => (
            StatusCode::CREATED,
            Json(json!({ "path": clean, "size": n })),
        )
            .into_response(),
        Err(e) => store_error(e),
    }
}

/// Bytes of a refused upload read and discarded before the refusal is sent: a client still
/// writing its body would otherwise see a broken pipe instead of the reason.
const DRAIN_REFUSED: usize = 64 << 20;

/// Answers a refused upload after reading (and dropping) up to [`DRAIN_REFUSED`] bytes of its
/// body, so that the client gets to read the answer.
async fn refuse_upload(body: Body, refusal: Response) -> Response {
    use futures::StreamExt;
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
            format!("{clean}: logs/ and blobs/ belong to the engine and cannot be written through the API"),
        );
        return refuse_upload(body, refusal).await;
    }
    // Held for the whole upload: a job submitted meanwhile cannot claim this path.
    let _writing = match l.claim_write(&clean) {
        Ok(g) => g,
        Err(msg) => return refuse_upload(body, error(StatusCode::CONFLICT, msg)).await,
    };
    put_body(&l, &clean, body).await
}

pub(super) async fn store_delete(State(l): Shared, Path(path): Path<String>) -> Response {
    let clean = match clean_path(&path) {
        Ok(c) => c,
        Err(e) => return store_error(e),
    };
    if reserved(&clean) {
        return error(
            StatusCode::FORBIDDEN,
            format!("{clean}: logs/ and blobs/ belong to the engine and cannot be deleted through the API"),
        );
    }
    if let Err(msg) = l.check_delete(&clean) {
        return error(StatusCode::CONFLICT, msg);
    }
    match l.store.delete_report(&clean).await {
        (removed, None) => Json(json!({ "removed": removed })).into_response(),
        (removed, Some(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({
                "error": format!("delete of {clean} stopped after {} objects: {e}", removed.len()),
                "removed": removed,
            })),
        )
            .into_response(),
    }
}

/// Workers' reads (operators, sources, logs).
pub(super) async fn internal_get(state: Shared, path: Path<String>) -> Response {
    store_get(state, path).await
}

/// Workers' listings (input logs).
pub(super) async fn internal_list(state: Shared, q: Query<PrefixQuery>) -> Response {
    store_list(state, q).await
}

/// Workers' writes: input-log segments and fences only.
pub(super) async fn internal_put(
    State(l): Shared,
    Path(path): Path<String>,
    body: Body,
) -> Response {
    let clean = match clean_path(&path) {
        Ok(c) => c,
        Err(e) => return store_error(e),
    };
    if !clean.starts_with("logs/") {
        return error(
            StatusCode::FORBIDDEN,
            format!("{clean}: workers write only input logs (logs/)"),
        );
    }
    put_body(&l, &clean, body).await
}
