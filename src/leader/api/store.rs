//! The store over HTTP, for clients (`put`, `get`, `ls`) and for remote workers, which fetch
//! operators and read and write input logs through it.

use super::{error, Shared};
use crate::runtime::store::StoreError;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

#[derive(Deserialize)]
pub(super) struct PrefixQuery {
    #[serde(default)]
    prefix: String,
}

pub(super) async fn store_list(State(l): Shared, Query(q): Query<PrefixQuery>) -> Response {
    match l.store.list(&q.prefix).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
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
    match l.store.get(&path).await {
        Ok(b) => b.into_response(),
        Err(e) => store_error(e),
    }
}

pub(super) async fn store_put(State(l): Shared, Path(path): Path<String>, body: Bytes) -> Response {
    match l.store.put(&path, body).await {
        Ok(()) => StatusCode::CREATED.into_response(),
        Err(e) => store_error(e),
    }
}

pub(super) async fn store_delete(State(l): Shared, Path(path): Path<String>) -> Response {
    match l.store.delete_prefix(&path).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => store_error(e),
    }
}
