//! The leader's HTTP surface, on one address: every route and which audience's file serves it.
//! Clients: the job API (`jobs`), a job's output stream (`output`) and the store (`store`,
//! also used by remote workers); workers: the control plane (`control`, `/internal/*`);
//! operators: Prometheus metrics (`metrics`) and the dashboard (`leader::dashboard`).

mod control;
mod jobs;
mod metrics;
mod output;
mod store;

use super::Leader;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;

type Shared = State<Arc<Leader>>;

/// An error answer: `{"error": msg}` with `status`.
fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

/// Builds the router.
pub fn router(leader: Arc<Leader>) -> Router {
    Router::new()
        .route("/", get(super::dashboard::page))
        .route("/metrics", get(metrics::metrics))
        .route("/api/jobs", post(jobs::submit).get(jobs::list_jobs))
        .route("/api/jobs/{id}", get(jobs::get_job))
        .route("/api/jobs/{id}/cancel", post(jobs::cancel_job))
        .route("/api/jobs/{id}/output", get(output::output))
        .route("/api/tasks", get(jobs::list_tasks))
        .route("/api/workers", get(jobs::list_workers))
        .route("/api/kill-task", post(jobs::kill_task))
        .route("/api/store", get(store::store_list))
        .route(
            "/api/store/{*path}",
            get(store::store_get)
                .put(store::store_put)
                .delete(store::store_delete),
        )
        .route("/internal/register", post(control::register))
        .route("/internal/heartbeat", post(control::heartbeat))
        .route("/internal/events", post(control::events))
        .route("/internal/commands/{id}", get(control::commands))
        .layer(axum::extract::DefaultBodyLimit::max(4 << 30))
        .with_state(leader)
}
