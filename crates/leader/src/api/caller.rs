//! Who may reach the workers' control-plane calls that carry a body (`/internal/heartbeat`,
//! `/internal/events`, `/internal/leave`): checked on the headers alone, before a byte of the
//! body is decoded, so a stranger learns nothing of what the leader expects (probe 9 saw a 422
//! naming the fields).

use super::{bearer, error, Shared};
use crate::model::ids::WorkerId;
use crate::protocol::auth::eq_ct;
use crate::protocol::control::{Known, WORKER_HEADER};
use crate::state::lock;
use crate::Leader;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// The worker a control-plane call names in its [`WORKER_HEADER`], if any.
pub(super) fn named_worker(headers: &HeaderMap) -> Option<WorkerId> {
    headers
        .get(WORKER_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|id| WorkerId(id.to_string()))
}

/// Lets a call through only if it names its worker and proves that registration's session
/// key. A worker this leader does not know (registered with an earlier leader, say) is
/// answered `known: false` at once, which only makes it register again with the cluster
/// secret; its body is never read. A leader without a secret checks nothing.
pub(super) async fn require_worker(State(l): Shared, req: Request, next: Next) -> Response {
    if l.cfg.token.is_none() {
        return next.run(req).await;
    }
    let Some(id) = named_worker(req.headers()) else {
        return error(
            StatusCode::UNAUTHORIZED,
            format!(
                "a control-plane call names its worker ({WORKER_HEADER}) and proves its session"
            ),
        );
    };
    if !lock(&l.state).workers.contains_key(&id) {
        return Json(Known::answer(false)).into_response();
    }
    if let Err(denied) = authorize(&l, req.headers(), &id) {
        return *denied;
    }
    next.run(req).await
}

/// `Err` (400) when the body names another worker than the header the call was admitted by.
pub(super) fn same_worker(headers: &HeaderMap, body: &WorkerId) -> Result<(), Box<Response>> {
    match named_worker(headers) {
        Some(id) if &id != body => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("the body names worker {body}, the {WORKER_HEADER} header {id}"),
        ))),
        _ => Ok(()),
    }
}

/// Checks that a control-plane call comes from the registration of worker `id`: it must
/// carry the session key that registration received. `Err` is the answer to send.
pub(super) fn authorize(
    l: &Leader,
    headers: &HeaderMap,
    id: &WorkerId,
) -> Result<(), Box<Response>> {
    if l.cfg.token.is_none() {
        return Ok(());
    }
    let st = lock(&l.state);
    let Some(w) = st.workers.get(id) else {
        // A worker this leader never registered (it registered with an earlier leader, or
        // this one forgot it): the handler answers "unknown", which only makes it register
        // again, with the cluster secret.
        return Ok(());
    };
    let ok = match (w.session.as_deref(), bearer(headers)) {
        (Some(key), Some(sent)) => eq_ct(key.as_bytes(), sent.as_bytes()),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            format!("not the registration of worker {id}"),
        )))
    }
}
