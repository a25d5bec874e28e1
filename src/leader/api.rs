//! The leader's HTTP surface: the public JSON API (jobs, tasks, workers, store, output streams,
//! metrics, dashboard) and the workers' control plane (`/internal/*`), on one address.

use super::state::{lock, JobEvent, WorkerRec};
use super::{Leader, SubmitError};
use crate::model::ids::{JobId, WorkerId};
use crate::model::spec::JobSpec;
use crate::protocol::control::{
    Events, Heartbeat, JobStatus, KillRequest, Known, OutputEvent, RegisterRequest,
    RegisterResponse, TaskState, WorkerState, PROTOCOL_VERSION,
};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::Notify;
use tracing::{info, warn};

type Shared = State<Arc<Leader>>;

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

/// Builds the router.
pub fn router(leader: Arc<Leader>) -> Router {
    Router::new()
        .route("/", get(super::dashboard::page))
        .route("/metrics", get(metrics))
        .route("/api/jobs", post(submit).get(list_jobs))
        .route("/api/jobs/{id}", get(get_job))
        .route("/api/jobs/{id}/cancel", post(cancel_job))
        .route("/api/jobs/{id}/output", get(output))
        .route("/api/tasks", get(list_tasks))
        .route("/api/workers", get(list_workers))
        .route("/api/kill-task", post(kill_task))
        .route("/api/store", get(store_list))
        .route(
            "/api/store/{*path}",
            get(store_get).put(store_put).delete(store_delete),
        )
        .route("/internal/register", post(register))
        .route("/internal/heartbeat", post(heartbeat))
        .route("/internal/events", post(events))
        .route("/internal/commands/{id}", get(commands))
        .layer(axum::extract::DefaultBodyLimit::max(4 << 30))
        .with_state(leader)
}

async fn submit(State(l): Shared, Json(spec): Json<JobSpec>) -> Response {
    match l.submit(spec).await {
        Ok(id) => (StatusCode::CREATED, Json(json!({ "id": id }))).into_response(),
        Err(SubmitError::Invalid(problems)) => (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": format!("invalid job: {}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")),
                "problems": problems,
            })),
        )
            .into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn list_jobs(State(l): Shared) -> Response {
    Json(lock(&l.state).jobs_info()).into_response()
}

async fn get_job(State(l): Shared, Path(id): Path<String>) -> Response {
    match lock(&l.state).job_info(&JobId(id.clone())) {
        Some(j) => Json(j).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no job {id}")),
    }
}

async fn cancel_job(State(l): Shared, Path(id): Path<String>) -> Response {
    let st = lock(&l.state);
    match st.jobs.get(&JobId(id.clone())) {
        Some(j) => {
            j.cancel.cancel();
            info!(job = %id, "cancel requested");
            Json(json!({ "id": id, "status": j.status })).into_response()
        }
        None => error(StatusCode::NOT_FOUND, format!("no job {id}")),
    }
}

async fn list_tasks(State(l): Shared) -> Response {
    Json(lock(&l.state).tasks_info()).into_response()
}

async fn list_workers(State(l): Shared) -> Response {
    Json(lock(&l.state).workers_info()).into_response()
}

async fn kill_task(State(l): Shared, Json(req): Json<KillRequest>) -> Response {
    let mut st = lock(&l.state);
    match st.workers.get(&req.worker) {
        None => return error(StatusCode::NOT_FOUND, format!("no worker {}", req.worker)),
        Some(w) if w.state != WorkerState::Alive => {
            return error(
                StatusCode::CONFLICT,
                format!("worker {} is dead", req.worker),
            )
        }
        Some(_) => {}
    }
    let task = st
        .tasks
        .iter()
        .find(|(_, t)| t.worker == req.worker && t.pid == Some(req.pid) && !t.state.is_terminal())
        .map(|(k, _)| k.clone());
    let Some(task) = task else {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "worker {} runs no operator process with pid {}",
                req.worker, req.pid
            ),
        );
    };
    st.command(
        &req.worker,
        crate::protocol::control::Command::Kill { pid: req.pid },
    );
    Json(json!({ "worker": req.worker, "pid": req.pid, "task": task.to_string() })).into_response()
}

/// NDJSON stream of a job's output: `{"data": "<lines>"}` chunks read from the durable sink
/// file, then exactly one `{"end": <job>}`. It reads the file, never a buffer the sink fills,
/// so a slow or vanished client costs the job nothing; dropping the stream frees everything.
async fn output(State(l): Shared, Path(id): Path<String>) -> Response {
    let id = JobId(id);
    let (progress, file) = {
        let st = lock(&l.state);
        match st.jobs.get(&id) {
            Some(j) => (j.progress.clone(), j.sink_file.clone()),
            None => return error(StatusCode::NOT_FOUND, format!("no job {id}")),
        }
    };
    struct Tail {
        leader: Arc<Leader>,
        id: JobId,
        progress: tokio::sync::watch::Receiver<crate::runtime::sink::SinkProgress>,
        path: std::path::PathBuf,
        file: Option<tokio::fs::File>,
        offset: u64,
        chunk: u64,
        done: bool,
    }
    let tail = Tail {
        leader: l.clone(),
        id,
        progress,
        path: file,
        file: None,
        offset: 0,
        chunk: 1 << 20,
        done: false,
    };
    let stream = futures::stream::unfold(tail, |mut t| async move {
        if t.done {
            return None;
        }
        loop {
            let p = *t.progress.borrow_and_update();
            if p.flushed > t.offset {
                if t.file.is_none() {
                    match tokio::fs::File::open(&t.path).await {
                        Ok(f) => t.file = Some(f),
                        Err(e) => {
                            t.done = true;
                            return Some((Err(e), t));
                        }
                    }
                }
                let f = t.file.as_mut()?;
                let want = (p.flushed - t.offset).min(t.chunk) as usize;
                let mut buf = vec![0u8; want];
                let res = async {
                    f.seek(std::io::SeekFrom::Start(t.offset)).await?;
                    f.read_exact(&mut buf).await
                }
                .await;
                if let Err(e) = res {
                    t.done = true;
                    return Some((Err(e), t));
                }
                // Only whole lines: cut after the last newline of the chunk.
                let cut = buf
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map(|i| i + 1)
                    .unwrap_or(0);
                if cut == 0 {
                    // A line longer than the chunk: read a larger chunk next time.
                    t.chunk *= 2;
                    continue;
                }
                t.chunk = 1 << 20;
                buf.truncate(cut);
                t.offset += cut as u64;
                let ev = OutputEvent::Data(String::from_utf8_lossy(&buf).into_owned());
                return Some((Ok(ndjson(&ev)), t));
            }
            if p.finished {
                t.done = true;
                let info = lock(&t.leader.state).job_info(&t.id)?;
                return Some((Ok(ndjson(&OutputEvent::End(info))), t));
            }
            if t.progress.changed().await.is_err() {
                // The job record was dropped (retention): end with what we know.
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

fn ndjson(ev: &OutputEvent) -> Bytes {
    let mut v = serde_json::to_vec(ev).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

#[derive(Deserialize)]
struct PrefixQuery {
    #[serde(default)]
    prefix: String,
}

async fn store_list(State(l): Shared, Query(q): Query<PrefixQuery>) -> Response {
    match l.store.list(&q.prefix).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn store_error(e: crate::runtime::store::StoreError) -> Response {
    use crate::runtime::store::StoreError;
    match e {
        StoreError::NotFound(_) => error(StatusCode::NOT_FOUND, e.to_string()),
        StoreError::BadPath(_) => error(StatusCode::BAD_REQUEST, e.to_string()),
        other => error(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

async fn store_get(State(l): Shared, Path(path): Path<String>) -> Response {
    match l.store.get(&path).await {
        Ok(b) => b.into_response(),
        Err(e) => store_error(e),
    }
}

async fn store_put(State(l): Shared, Path(path): Path<String>, body: Bytes) -> Response {
    match l.store.put(&path, body).await {
        Ok(()) => StatusCode::CREATED.into_response(),
        Err(e) => store_error(e),
    }
}

async fn store_delete(State(l): Shared, Path(path): Path<String>) -> Response {
    match l.store.delete_prefix(&path).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => store_error(e),
    }
}

async fn register(State(l): Shared, Json(req): Json<RegisterRequest>) -> Response {
    if req.version != PROTOCOL_VERSION {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "protocol version {} unsupported; leader speaks {PROTOCOL_VERSION}",
                req.version
            ),
        );
    }
    let mut st = lock(&l.state);
    st.next_worker += 1;
    let id = WorkerId(format!("w{}", st.next_worker));
    st.workers.insert(
        id.clone(),
        WorkerRec {
            data_addr: req.data_addr.clone(),
            last_seen: Instant::now(),
            state: WorkerState::Alive,
            commands: VecDeque::new(),
            next_command: 0,
            notify: Arc::new(Notify::new()),
        },
    );
    info!(worker = %id, data = %req.data_addr, pid = req.pid, "worker joined");
    Json(RegisterResponse {
        worker_id: id,
        heartbeat_ms: l.cfg.heartbeat_interval.as_millis() as u64,
    })
    .into_response()
}

async fn heartbeat(State(l): Shared, Json(hb): Json<Heartbeat>) -> Response {
    let mut st = lock(&l.state);
    let now = Instant::now();
    match st.workers.get_mut(&hb.worker_id) {
        Some(w) if w.state == WorkerState::Alive => w.last_seen = now,
        _ => return Json(Known { known: false }).into_response(),
    }
    for r in hb.tasks {
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
            t.pid = r.pid.or(t.pid);
            if !r.state.is_terminal() {
                t.state = r.state;
            }
        }
    }
    Json(Known { known: true }).into_response()
}

async fn events(State(l): Shared, Json(ev): Json<Events>) -> Response {
    let mut to_send = Vec::new();
    {
        let mut st = lock(&l.state);
        match st.workers.get(&ev.worker_id) {
            Some(w) if w.state == WorkerState::Alive => {}
            _ => return Json(Known { known: false }).into_response(),
        }
        for r in ev.reports {
            let Some(t) = st.tasks.get_mut(&r.key) else {
                continue;
            };
            if t.attempt != r.attempt || t.worker != ev.worker_id || t.state.is_terminal() {
                continue;
            }
            t.tuples_in = r.tuples_in;
            t.tuples_out = r.tuples_out;
            t.pid = r.pid.or(t.pid);
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
struct WaitQuery {
    #[serde(default)]
    wait_ms: u64,
    /// The worker has handled every command numbered up to this.
    #[serde(default)]
    after: u64,
}

async fn commands(
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
                let cmds: Vec<(u64, crate::protocol::control::Command)> =
                    w.commands.iter().cloned().collect();
                return Json(cmds).into_response();
            }
            w.notify.clone()
        };
        // `notify_one` stores a permit, so a command queued between the check and this wait
        // is not missed.
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep_until(deadline) => return Json(Vec::<(u64, crate::protocol::control::Command)>::new()).into_response(),
        }
    }
}

async fn metrics(State(l): Shared) -> Response {
    use std::fmt::Write;
    let st = lock(&l.state);
    let mut out = String::new();
    let alive = st
        .workers
        .values()
        .filter(|w| w.state == WorkerState::Alive)
        .count();
    let _ = writeln!(
        out,
        "# HELP rainstorm_workers Workers by state.\n# TYPE rainstorm_workers gauge"
    );
    let _ = writeln!(out, "rainstorm_workers{{state=\"alive\"}} {alive}");
    let _ = writeln!(
        out,
        "rainstorm_workers{{state=\"dead\"}} {}",
        st.workers.len() - alive
    );
    let _ = writeln!(
        out,
        "# HELP rainstorm_jobs Jobs by status.\n# TYPE rainstorm_jobs gauge"
    );
    for s in [
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ] {
        let n = st.jobs.values().filter(|j| j.status == s).count();
        let _ = writeln!(
            out,
            "rainstorm_jobs{{status=\"{}\"}} {n}",
            format!("{s:?}").to_lowercase()
        );
    }
    let _ = writeln!(out, "# HELP rainstorm_job_source_tuples_total Tuples emitted by a job's source.\n# TYPE rainstorm_job_source_tuples_total counter");
    for j in st.jobs_info() {
        let _ = writeln!(
            out,
            "rainstorm_job_source_tuples_total{{job=\"{}\"}} {}",
            j.id, j.source_tuples
        );
    }
    let _ = writeln!(out, "# HELP rainstorm_job_sink_tuples_total Lines written by a job's sink.\n# TYPE rainstorm_job_sink_tuples_total counter");
    for j in st.jobs_info() {
        let _ = writeln!(
            out,
            "rainstorm_job_sink_tuples_total{{job=\"{}\"}} {}",
            j.id, j.sink_tuples
        );
    }
    let _ = writeln!(out, "# HELP rainstorm_job_recoveries_total Task restarts of a job.\n# TYPE rainstorm_job_recoveries_total counter");
    for j in st.jobs_info() {
        let _ = writeln!(
            out,
            "rainstorm_job_recoveries_total{{job=\"{}\"}} {}",
            j.id, j.recoveries
        );
    }
    let _ = writeln!(out, "# HELP rainstorm_task_tuples_in_total Tuples accepted by a task.\n# TYPE rainstorm_task_tuples_in_total counter");
    for t in st.tasks_info() {
        let _ = writeln!(
            out,
            "rainstorm_task_tuples_in_total{{job=\"{}\",stage=\"{}\",task=\"{}\",worker=\"{}\"}} {}",
            t.job, t.stage, t.task, t.worker, t.tuples_in
        );
    }
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}
