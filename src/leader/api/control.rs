//! The workers' control plane (`/internal/*`): registration, heartbeats, task events, and the
//! long-poll through which a worker receives its numbered commands.

use super::{error, Shared};
use crate::leader::state::{lock, reported_pid, JobEvent};
use crate::model::ids::WorkerId;
use crate::protocol::control::{
    Command, Events, Heartbeat, Known, RegisterRequest, RegisterResponse, TaskState, WorkerState,
    PROTOCOL_VERSION,
};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use std::time::{Duration, Instant};
use tracing::{info, warn};

pub(super) async fn register(State(l): Shared, Json(req): Json<RegisterRequest>) -> Response {
    if req.version != PROTOCOL_VERSION {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "protocol version {} unsupported; leader speaks {PROTOCOL_VERSION}",
                req.version
            ),
        );
    }
    let id = lock(&l.state).add_worker(req.data_addr.clone());
    info!(worker = %id, data = %req.data_addr, pid = req.pid, "worker joined");
    Json(RegisterResponse {
        worker_id: id,
        heartbeat_ms: l.cfg.heartbeat_interval.as_millis() as u64,
    })
    .into_response()
}

pub(super) async fn heartbeat(State(l): Shared, Json(hb): Json<Heartbeat>) -> Response {
    let mut st = lock(&l.state);
    let now = Instant::now();
    match st.workers.get_mut(&hb.worker_id) {
        Some(w) if w.state == WorkerState::Alive => w.last_seen = now,
        _ => return Json(Known { known: false }).into_response(),
    }
    for r in hb.tasks {
        let pid = reported_pid(&st.jobs, &r.key, r.pid);
        if let Some(t) = st.tasks.get_mut(&r.key) {
            if t.attempt != r.attempt || t.worker != hb.worker_id || t.state.is_terminal() {
                continue;
            }
            let dt = now.duration_since(t.sampled).as_secs_f64();
            if dt > 0.05 {
                let inst = r.tuples_in.saturating_sub(t.tuples_in) as f64 / dt;
                t.rate = if t.rate == 0.0 {
                    inst
                } else {
                    0.5 * t.rate + 0.5 * inst
                };
                t.sampled = now;
            }
            if r.tuples_in != t.tuples_in || r.queued == 0 || r.state != TaskState::Running {
                t.progressed = now;
            }
            t.queued = r.queued;
            t.tuples_in = r.tuples_in;
            t.tuples_out = r.tuples_out;
            t.pid = pid.or(t.pid);
            if !r.state.is_terminal() {
                t.state = r.state;
            }
        }
    }
    Json(Known { known: true }).into_response()
}

pub(super) async fn events(State(l): Shared, Json(ev): Json<Events>) -> Response {
    let mut to_send = Vec::new();
    {
        let mut st = lock(&l.state);
        match st.workers.get(&ev.worker_id) {
            Some(w) if w.state == WorkerState::Alive => {}
            _ => return Json(Known { known: false }).into_response(),
        }
        for r in ev.reports {
            let pid = reported_pid(&st.jobs, &r.key, r.pid);
            let Some(t) = st.tasks.get_mut(&r.key) else {
                continue;
            };
            if t.attempt != r.attempt || t.worker != ev.worker_id || t.state.is_terminal() {
                continue;
            }
            t.tuples_in = r.tuples_in;
            t.tuples_out = r.tuples_out;
            t.pid = pid.or(t.pid);
            t.state = r.state;
            if r.error.is_some() {
                t.error = r.error.clone();
            }
            if r.state.is_terminal() {
                if r.state == TaskState::Finished {
                    t.rate = 0.0;
                }
                if let Some(tx) = st.jobs.get(&r.key.job).and_then(|j| j.events.clone()) {
                    to_send.push((
                        tx,
                        JobEvent::TaskEnded {
                            key: r.key,
                            attempt: r.attempt,
                            state: r.state,
                            error: r.error,
                        },
                    ));
                }
            }
        }
    }
    for (tx, e) in to_send {
        if tx.send(e).await.is_err() {
            warn!("task event for a job that already ended; dropped");
        }
    }
    Json(Known { known: true }).into_response()
}

#[derive(Deserialize)]
pub(super) struct WaitQuery {
    #[serde(default)]
    wait_ms: u64,
    /// The worker has handled every command numbered up to this.
    #[serde(default)]
    after: u64,
}

pub(super) async fn commands(
    State(l): Shared,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> Response {
    let id = WorkerId(id);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(q.wait_ms.min(30_000));
    loop {
        let notify = {
            let mut st = lock(&l.state);
            let Some(w) = st.workers.get_mut(&id) else {
                return error(StatusCode::NOT_FOUND, format!("unknown worker {id}"));
            };
            if w.state != WorkerState::Alive {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("worker {id} was declared dead"),
                );
            }
            while w.commands.front().is_some_and(|(n, _)| *n <= q.after) {
                w.commands.pop_front();
            }
            if !w.commands.is_empty() {
                let cmds: Vec<(u64, Command)> = w.commands.iter().cloned().collect();
                return Json(cmds).into_response();
            }
            w.notify.clone()
        };
        // `notify_one` stores a permit, so a command queued between the check and this wait
        // is not missed.
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep_until(deadline) => return Json(Vec::<(u64, Command)>::new()).into_response(),
        }
    }
}
