//! The leader's HTTP surface, on one address: every route and which audience's file serves it.
//! Clients: the job API (`jobs`), a job's output stream (`output`) and the store (`store`,
//! also used by remote workers); workers: the control plane (`control`, `/internal/*`);
//! operators: Prometheus metrics (`metrics`) and the dashboard (`leader::dashboard`).

mod adopt;
mod caller;
mod committed;
mod control;
mod data_addr;
mod drain;
mod jobs;
mod metrics;
mod output;

pub use output::{chunks as output_chunks, OutputChunk};
mod ranged;
mod store;
mod store_id;

use super::Leader;
use axum::extract::State;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;

type Shared = State<Arc<Leader>>;

/// The largest request body outside store uploads (which are streamed).
pub const BODY_LIMIT: usize = 4 << 20;

/// Counts itself in a gauge while it lives (an open output stream, a parked command poll):
/// dropped on every exit, so a client that goes away can never leave the count high.
struct InUse(std::sync::Arc<std::sync::atomic::AtomicI64>);

impl InUse {
    fn new(count: &std::sync::Arc<std::sync::atomic::AtomicI64>) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        InUse(count.clone())
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// An error answer: `{"error": msg}` with `status`.
fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

/// A JSON request body decoded as `T`. A body that is not one is answered with the API's JSON
/// error (`{"error": …, "problems": [{"field": "body", …}]}`) and the decoder's reason, not
/// the extractor's plain text, so every client reads every refusal the same way.
struct ApiJson<T>(T);

impl<T, S> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Response> {
        let (parts, body) = req.into_parts();
        let again = |body| axum::extract::Request::from_parts(parts.clone(), body);
        let bytes = match axum::body::Bytes::from_request(again(body), state).await {
            Ok(b) => b,
            Err(rejection) => return Err(bad_body(rejection.status(), rejection.body_text())),
        };
        // The content type and the JSON's syntax, refused as axum's extractor words it.
        let checked = again(axum::body::Body::from(bytes.clone()));
        if let Err(rejection) = Json::<serde_json::Value>::from_request(checked, state).await {
            return Err(bad_body(rejection.status(), rejection.body_text()));
        }
        // Decoded from the text itself, not a parsed map: a field named twice is refused
        // (`duplicate field`), where a map keeps the last and a request read by eye, or by a
        // proxy, on its first would do something else (hostile probe: `"stage":2,…,"stage":1`).
        // Every field the request names must mean something, as in a job file: a misspelt
        // one (`taskz`, `delivry`) would otherwise be dropped and its default run instead.
        let mut unknown = Vec::new();
        let mut note = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
        let mut text = serde_json::Deserializer::from_slice(&bytes);
        let fields = serde_ignored::Deserializer::new(&mut text, &mut note);
        let t: T = serde_path_to_error::deserialize(fields).map_err(|e| {
            let why = format!(
                "Failed to deserialize the JSON body into the target type: {}: {}",
                e.path(),
                e.inner()
            );
            bad_body(StatusCode::UNPROCESSABLE_ENTITY, why)
        })?;
        if unknown.is_empty() {
            return Ok(ApiJson(t));
        }
        let problems: Vec<_> = unknown
            .iter()
            .map(|f| crate::model::check::Problem::new(f.as_str(), "", "unknown field"))
            .collect();
        let answer = json!({
            "error": format!("unknown field(s) in the request body: {}", unknown.join(", ")),
            "problems": problems,
        });
        Err((StatusCode::BAD_REQUEST, Json(answer)).into_response())
    }
}

/// The answer to a body that is not the JSON a route takes: the API's error, with a problem
/// naming the body.
fn bad_body(status: StatusCode, why: String) -> Response {
    let problem = crate::model::check::Problem::new("body", "", why.clone());
    let answer = json!({ "error": format!("bad request body: {why}"), "problems": [problem] });
    (status, Json(answer)).into_response()
}

/// The bearer token of a request, if it sent one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Whether a request proves a credential: the cluster secret, or the session key of a worker
/// registered now (a leader without a secret listens on loopback only and trusts everyone
/// there). The HTTP server never closes such a request to make room for another connection.
pub(crate) fn vouched(l: &Leader, headers: &HeaderMap) -> bool {
    let Some(secret) = &l.cfg.token else {
        return true;
    };
    let Some(sent) = bearer(headers) else {
        return false;
    };
    secret.matches(sent)
        || crate::state::lock(&l.state).workers.values().any(|w| {
            w.session
                .as_deref()
                .is_some_and(|key| crate::protocol::auth::eq_ct(key.as_bytes(), sent.as_bytes()))
        })
}

/// What a request without a bearer token is told.
const NO_SECRET: &str = "this leader requires the cluster secret: send `Authorization: Bearer \
     <secret>` (the CLI reads it from --token-file or RAINSTORM_TOKEN)";

/// What a request with another secret is told.
const WRONG_SECRET: &str = "the secret sent is not this cluster's: check --token-file or \
     RAINSTORM_TOKEN (the CLI sends it as `Authorization: Bearer <secret>`)";

/// The public API's door: every request must carry the cluster secret as a bearer token
/// (a leader without a secret listens on loopback only, and lets loopback callers in).
async fn require_secret(
    State(l): Shared,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(secret) = &l.cfg.token {
        match bearer(req.headers()) {
            Some(t) if secret.matches(t) => {}
            // Said apart, so a user knows which to fix: it tells a caller nothing it did not
            // know (whether it sent a token), and nothing of the secret.
            Some(_) => return error(StatusCode::UNAUTHORIZED, WRONG_SECRET),
            None => return error(StatusCode::UNAUTHORIZED, NO_SECRET),
        }
    }
    next.run(req).await
}

/// Builds the router.
pub fn router(leader: Arc<Leader>) -> Router {
    let public = Router::new()
        .route("/metrics", get(metrics::metrics))
        .route("/api/jobs", post(jobs::submit).get(jobs::list_jobs))
        .route("/api/jobs/{id}", get(jobs::get_job))
        .route("/api/jobs/{id}/cancel", post(jobs::cancel_job))
        .route("/api/jobs/{id}/rate", post(jobs::set_rate))
        .route("/api/jobs/{id}/scale", post(jobs::scale))
        .route("/api/jobs/{id}/output", get(output::output))
        .route("/api/tasks", get(jobs::list_tasks))
        .route("/api/workers", get(jobs::list_workers))
        .route("/api/kill-task", post(jobs::kill_task))
        .route("/api/workers/{id}/drain", post(drain::drain))
        .route("/api/store", get(store::store_list))
        .route(
            "/api/store/{*path}",
            get(store::store_get)
                .put(store::store_put)
                .delete(store::store_delete)
                // Uploads are streamed to the store: no body limit.
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            leader.clone(),
            require_secret,
        ));
    // The control plane checks its callers itself: registration proves the secret and the
    // worker's own key (over a fresh challenge), and every later call proves the session key
    // that registration handed out.
    // Calls with a body name their worker in a header and prove its session before the body
    // is read (`caller.rs`).
    let sessions = Router::new()
        .route("/internal/heartbeat", post(control::heartbeat))
        .route("/internal/leave", post(drain::leave))
        .route("/internal/events", post(control::events))
        .route_layer(axum::middleware::from_fn_with_state(
            leader.clone(),
            caller::require_worker,
        ));
    let internal = Router::new()
        .route("/internal/challenge", post(control::challenge))
        .route("/internal/register", post(control::register))
        .route("/internal/commands/{id}", get(control::commands))
        .merge(sessions);
    // Workers without a store of their own reach the leader's through these: every request
    // proves the cluster secret and, checked by each handler, a live worker registration.
    let worker_store = Router::new()
        .route(
            "/internal/store",
            get(store::internal_list).post(store::internal_delete_many),
        )
        .route(
            "/internal/store/{*path}",
            get(store::internal_get)
                .put(store::internal_put)
                .delete(store::internal_delete)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            leader.clone(),
            require_secret,
        ));
    Router::new()
        .route("/", get(super::dashboard::page))
        .route(
            super::dashboard::SCRIPT_ROUTE,
            get(super::dashboard::script),
        )
        .route(super::dashboard::STYLE_ROUTE, get(super::dashboard::style))
        .merge(public)
        .merge(internal)
        .merge(worker_store)
        // Every other body (job submissions, control messages) is small: 413 beyond 4 MiB.
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(leader)
}
