//! Taking a worker out of service: `rainstorm drain WORKER` (the API) or the worker's own
//! SIGTERM (the control plane). A draining worker takes no new task and every running job's
//! core moves its tasks elsewhere; once it runs nothing the worker says it left and exits.

use super::adopt::deliver;
use super::caller::same_worker;
use super::{error, Shared};
use crate::model::ids::WorkerId;
use crate::protocol::control::{Command, Known, Leave, LeavePhase, WorkerState};
use crate::state::lock;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tracing::info;

/// `POST /api/workers/{id}/drain`: the worker drains, then leaves and exits.
pub(super) async fn drain(State(l): Shared, Path(id): Path<String>) -> Response {
    let id = WorkerId(id);
    let inputs = {
        let mut st = lock(&l.state);
        match st.workers.get(&id) {
            None => return error(StatusCode::NOT_FOUND, format!("no worker {id}")),
            Some(w) if w.state != WorkerState::Alive => {
                return error(
                    StatusCode::CONFLICT,
                    format!("worker {id} is not alive (dead or left)"),
                )
            }
            Some(w) if w.draining => {
                return Json(json!({ "worker": id, "state": "draining", "already": true }))
                    .into_response()
            }
            Some(_) => {}
        }
        st.command(&id, Command::Drain);
        st.drain_worker(&id)
    };
    info!(worker = %id, "drain asked through the API");
    deliver(inputs).await;
    Json(json!({ "worker": id, "state": "draining" })).into_response()
}

/// `POST /internal/leave`: a worker says it drains, or that it left.
pub(super) async fn leave(
    State(l): Shared,
    headers: HeaderMap,
    Json(req): Json<Leave>,
) -> Response {
    if let Err(denied) = same_worker(&headers, &req.worker_id) {
        return *denied;
    }
    let (known, inputs) = {
        let mut st = lock(&l.state);
        let known = st
            .workers
            .get(&req.worker_id)
            .is_some_and(|w| w.state == WorkerState::Alive);
        let inputs = match req.phase {
            LeavePhase::Draining => st.drain_worker(&req.worker_id),
            LeavePhase::Left => st.worker_left(&req.worker_id),
        };
        (known, inputs)
    };
    if known {
        info!(worker = %req.worker_id, phase = ?req.phase, "worker leaving");
    }
    deliver(inputs).await;
    Json(Known::answer(known)).into_response()
}
