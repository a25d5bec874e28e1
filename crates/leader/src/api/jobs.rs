//! The public job API, for clients and the dashboard: submit, list, show and cancel jobs, list
//! tasks and workers, and kill an operator process (failure injection).

use super::{error, ApiJson, Shared};
use crate::coordinator::Input;
use crate::model::ids::JobId;
use crate::model::spec::JobSpec;
use crate::protocol::control::{Command, KillRequest, WorkerState};
use crate::state::lock;
use crate::SubmitError;
use axum::extract::{FromRequest, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tracing::info;

pub(super) async fn submit(State(l): Shared, req: axum::extract::Request) -> Response {
    // A job file as it is written (`content-type: application/toml`), or the `JobSpec` JSON
    // `rainstorm submit` sends.
    let toml = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/toml") || t.starts_with("text/x-toml"));
    let spec = if toml {
        match job_file(req).await {
            Ok(spec) => spec,
            Err(refused) => return refused,
        }
    } else {
        match ApiJson::<JobSpec>::from_request(req, &()).await {
            Ok(ApiJson(spec)) => spec,
            Err(refused) => return refused,
        }
    };
    // Paths on the API are store paths: local paths are only for `rainstorm run`, which
    // submits in-process on the machine it runs on.
    if spec.paths != crate::model::spec::PathMode::Store {
        let problem = crate::model::check::Problem::new(
            "paths",
            "local",
            "the API takes store paths only; local paths are for `rainstorm run`",
        );
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": format!("invalid job: {problem}"), "problems": [problem] })),
        )
            .into_response();
    }
    match l.submit(spec).await {
        Err(SubmitError::Conflict(e)) => error(StatusCode::CONFLICT, e.to_string()),
        Ok(id) => (StatusCode::CREATED, Json(json!({ "id": id }))).into_response(),
        Err(SubmitError::Invalid(problems)) => (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": format!("invalid job: {}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")),
                "problems": problems,
            })),
        )
            .into_response(),
        Err(SubmitError::Internal(msg)) => error(StatusCode::INTERNAL_SERVER_ERROR, msg),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// A job file posted as the body: the job, or a 400 listing every problem of its text (the
/// files it names are checked by the submission, as for JSON).
async fn job_file(req: axum::extract::Request) -> Result<JobSpec, Response> {
    let invalid = |problems: Vec<crate::model::check::Problem>| {
        let said: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        let body =
            json!({ "error": format!("invalid job: {}", said.join("; ")), "problems": problems });
        (StatusCode::BAD_REQUEST, Json(body)).into_response()
    };
    let bytes = axum::body::Bytes::from_request(req, &())
        .await
        .map_err(|r| error(r.status(), r.body_text()))?;
    let Ok(text) = std::str::from_utf8(&bytes) else {
        let p = crate::model::check::Problem::new("body", "", "a job file is UTF-8 text");
        return Err(invalid(vec![p]));
    };
    match crate::model::jobfile::parse_job_toml_checked(text) {
        Ok((spec, problems)) if problems.is_empty() => Ok(spec),
        Ok((_, problems)) => Err(invalid(problems)),
        Err(crate::model::check::InvalidJob(problems)) => Err(invalid(problems)),
    }
}

pub(super) async fn list_jobs(State(l): Shared) -> Response {
    Json(lock(&l.state).jobs_info()).into_response()
}

pub(super) async fn get_job(State(l): Shared, Path(id): Path<String>) -> Response {
    match lock(&l.state).job_info(&JobId(id.clone())) {
        Some(j) => Json(j).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no job {id}")),
    }
}

pub(super) async fn cancel_job(State(l): Shared, Path(id): Path<String>) -> Response {
    let job = JobId(id.clone());
    let (mut progress, already_ended) = {
        let st = lock(&l.state);
        let Some(j) = st.jobs.get(&job) else {
            return error(StatusCode::NOT_FOUND, format!("no job {id}"));
        };
        // A job that had ended keeps its status: the answer says so, rather than "cancelled".
        let already_ended = j.status().is_terminal();
        j.cancel.cancel();
        (j.progress.clone(), already_ended)
    };
    info!(job = %id, "cancel requested");
    // Answered once the job's end is durable (its record is written before `finished`): a
    // cancel acknowledged is a cancel a leader stopped or killed next cannot lose. A leader
    // stopping now stops its drivers, not its jobs, and a cancel answered before its job's
    // end was recorded was carried on by the next leader to a success (hostile probe).
    let ended = tokio::select! {
        r = tokio::time::timeout(CANCEL_RECORDED, progress.wait_for(|p| p.finished)) => {
            matches!(r, Ok(Ok(_)))
        }
        _ = l.shutdown.cancelled() => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the leader is stopping and job {id}'s cancel was not recorded; cancel it again once a leader answers"),
            );
        }
    };
    let status = lock(&l.state).jobs.get(&job).map(|j| j.status());
    let code = if ended {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let body = json!({ "id": id, "status": status, "already_ended": already_ended });
    (code, Json(body)).into_response()
}

/// How long a cancel waits for its job's end to be recorded before it answers "accepted"
/// (a sink's output write in flight ends within one store operation).
const CANCEL_RECORDED: std::time::Duration = std::time::Duration::from_secs(10);

/// Body of `POST /api/jobs/{id}/rate`.
#[derive(serde::Deserialize)]
pub(super) struct RateRequest {
    rate: f64,
}

/// `POST /api/jobs/{id}/rate` (`rainstorm set-rate`): the job's source paces by the new rate
/// from now on, and so does any later attempt of it.
pub(super) async fn set_rate(
    State(l): Shared,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<RateRequest>,
) -> Response {
    // The job file's rule: a rate too small to tell from a stop (5e-324 was taken) is refused.
    if !crate::model::check::rate_ok(req.rate) {
        let range = crate::model::check::RATE;
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "rate {} is not a number of tuples per second: 0 (unthrottled), or {} to {}",
                // 1e-300 in full is 300 digits.
                match req.rate.abs() {
                    a if (1e-3..1e12).contains(&a) => req.rate.to_string(),
                    _ => format!("{:e}", req.rate),
                },
                range.start(),
                range.end()
            ),
        );
    }
    let tx = {
        let st = lock(&l.state);
        match st.jobs.get(&JobId(id.clone())) {
            None => return error(StatusCode::NOT_FOUND, format!("no job {id}")),
            Some(j) => match j.events() {
                Some(tx) => tx.clone(),
                None => {
                    return error(
                        StatusCode::CONFLICT,
                        format!("job {id} has ended ({:?})", j.status()),
                    )
                }
            },
        }
    };
    if tx.send(Input::SetRate(req.rate)).await.is_err() {
        return error(StatusCode::CONFLICT, format!("job {id} has ended"));
    }
    info!(job = %id, rate = req.rate, "rate change requested");
    Json(json!({ "id": id, "rate": req.rate })).into_response()
}

/// Body of `POST /api/jobs/{id}/scale`.
#[derive(serde::Deserialize)]
pub(super) struct ScaleRequest {
    stage: u32,
    tasks: u32,
}

/// `POST /api/jobs/{id}/scale` (`rainstorm scale`): rescale one stage of a running job to
/// `tasks` tasks, moving key groups live. The job's core decides whether it can now; the
/// outcome shows in the job's `scaling` list.
pub(super) async fn scale(
    State(l): Shared,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ScaleRequest>,
) -> Response {
    let tx = {
        let st = lock(&l.state);
        let Some(j) = st.jobs.get(&JobId(id.clone())) else {
            return error(StatusCode::NOT_FOUND, format!("no job {id}"));
        };
        // An ended job is told so whatever was asked of it (the stage and count are
        // checked against a job that can still change).
        let Some(tx) = j.events().cloned() else {
            let why = format!("job {id} has ended ({:?})", j.status());
            return error(StatusCode::CONFLICT, why);
        };
        let stages = j.spec.stages.len() as u32;
        if req.stage == 0 || req.stage > stages {
            let why = format!("job {id} has stages 1 to {stages}, not {}", req.stage);
            return error(StatusCode::BAD_REQUEST, why);
        }
        let most = crate::model::partition::tasks_of(&j.spec, req.stage);
        if req.tasks == 0 || req.tasks > most {
            let why = format!(
                "stage {} can run 1 to {most} tasks (its max_tasks), not {}",
                req.stage, req.tasks
            );
            return error(StatusCode::BAD_REQUEST, why);
        }
        tx
    };
    let input = Input::Scale(crate::coordinator::rescale::ScaleRequest {
        stage: req.stage,
        tasks: req.tasks,
        reason: "requested".into(),
        rate: None,
    });
    if tx.send(input).await.is_err() {
        return error(StatusCode::CONFLICT, format!("job {id} has ended"));
    }
    info!(job = %id, stage = req.stage, tasks = req.tasks, "rescale requested");
    let body = json!({ "id": id, "stage": req.stage, "tasks": req.tasks, "status": "requested" });
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

pub(super) async fn list_tasks(State(l): Shared) -> Response {
    Json(lock(&l.state).tasks_info()).into_response()
}

pub(super) async fn list_workers(State(l): Shared) -> Response {
    Json(lock(&l.state).workers_info()).into_response()
}

pub(super) async fn kill_task(State(l): Shared, ApiJson(req): ApiJson<KillRequest>) -> Response {
    if req.pid <= 1 || req.pid > i32::MAX as u32 {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "pid {} names no single process; kill-task only signals an operator process",
                req.pid
            ),
        );
    }
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
        .map(|(k, t)| (k.clone(), t.attempt));
    let Some((task, attempt)) = task else {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "worker {} runs no operator process with pid {}",
                req.worker, req.pid
            ),
        );
    };
    st.command(&req.worker, Command::Kill { pid: req.pid });
    info!(worker = %req.worker, task = %task, attempt, reported_pid = req.pid, "kill-task sent to the worker");
    // The pid is the worker's word, not the leader's knowledge: the answer names the task
    // attempt and the worker, and the pid only as that worker reported it. The worker checks
    // it against its own running operators before it signals anything.
    Json(json!({
        "worker": req.worker,
        "task": task.to_string(),
        "attempt": attempt,
        "reported_pid": req.pid,
        "reported_by": req.worker,
        "message": format!(
            "asked worker {w} to kill the operator of task {task} attempt {attempt} \
             (pid {pid} as reported by {w}; the worker signals it only if it is one of its \
             running operators)",
            w = req.worker,
            pid = req.pid,
        ),
    }))
    .into_response()
}
