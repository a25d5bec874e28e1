//! The store over HTTP. Public (`/api/store`, clients' `put`, `get`, `ls`): uploads and
//! downloads are streamed (a file of any size passes through a small buffer); `logs/` and
//! `blobs/` belong to the engine and are read-only here; a file a running job reads or writes
//! cannot be replaced or deleted (409). Internal (`/internal/store`, workers without direct
//! access to the store): only for a live worker registration (its session key, not just the
//! cluster secret); reads anything, writes only the input logs of that worker's own tasks.

use super::control::store_caller;
use super::{error, Shared};
use crate::model::ids::WorkerId;
use crate::owned::reserved;
use crate::protocol::control::JobStatus;
use crate::state::{lock, State as LeaderState};
use crate::Leader;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::TryStreamExt;
use rainstorm_store::log::log_task;
use rainstorm_store::store::{clean_path, clean_prefix, StoreError};
use serde::Deserialize;
use serde_json::json;
use tracing::warn;

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
    // Held until the answer: a job submitted meanwhile cannot claim what is being deleted.
    let _deleting = match l.claim_delete(&clean) {
        Ok(g) => g,
        Err(msg) => return error(StatusCode::CONFLICT, msg),
    };
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

/// Workers' reads (operators, sources, logs), from a live registration.
pub(super) async fn internal_get(
    state: Shared,
    headers: HeaderMap,
    path: Path<String>,
) -> Response {
    if let Err(denied) = store_caller(&state.0, &headers) {
        return *denied;
    }
    store_get(state, path).await
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

/// Whether worker `caller` may write store path `clean`: only an object of the input log of
/// a task of a running job that the leader placed on that worker (segments, manifests, and
/// the fences a new attempt puts on its predecessors, all under the task's own prefix), or the
/// output of a running job whose sink task it runs. Without a cluster secret there are no
/// registrations to tell apart (`caller` is `None`): any task's log or running job's output.
/// `Err` says why not.
fn may_write(st: &LeaderState, caller: Option<&WorkerId>, clean: &str) -> Result<(), String> {
    let Some(key) = log_task(clean).or_else(|| output_of(st, clean)) else {
        return Err(format!(
            "{clean}: workers write only their tasks' input logs (logs/<job>/<stage>.<index>/...) and their sinks' outputs"
        ));
    };
    let Some(id) = caller else {
        return Ok(());
    };
    let running = st
        .jobs
        .get(&key.job)
        .is_some_and(|j| j.status() == JobStatus::Running);
    if running && st.tasks.get(&key).is_some_and(|t| t.worker == *id) {
        Ok(())
    } else {
        Err(format!(
            "{clean}: task {key} is not a task of a running job placed on worker {id}"
        ))
    }
}

/// The sink task of the running job whose output is store path `clean`, if any.
fn output_of(st: &LeaderState, clean: &str) -> Option<crate::model::ids::TaskKey> {
    st.jobs.iter().find_map(|(id, j)| {
        (j.status() == JobStatus::Running
            && j.spec.paths == crate::model::spec::PathMode::Store
            && clean_path(&j.spec.sink_path).is_ok_and(|p| p == clean))
        .then(|| j.sink_key(id))
    })
}

/// Workers' writes: objects of the input logs of their own tasks, from a live registration.
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
    let allowed = may_write(&lock(&l.state), caller.as_ref(), &clean);
    if let Err(msg) = allowed {
        warn!(worker = ?caller.map(|w| w.0), path = %clean, "a worker store write outside the worker's own input logs was refused");
        return error(StatusCode::FORBIDDEN, msg);
    }
    put_body(&l, &clean, body).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobRec;
    use crate::model::ids::{JobId, TaskKey, TaskPos};
    use crate::model::spec::{JobSpec, OperatorSpec, StageSpec};
    use crate::protocol::control::TaskState;
    use crate::state::TaskRec;
    use rainstorm_store::log::{fence_path, segment_path};

    fn key(job: &str, stage: u32) -> TaskKey {
        TaskKey {
            job: JobId(job.into()),
            pos: TaskPos { stage, index: 0 },
        }
    }

    /// Job `job-1` running (output `o.txt`), its stage 1 placed on `w1`, its stage 2 on `w2`
    /// and its sink (stage 3) on `w3`.
    fn state() -> LeaderState {
        let spec = JobSpec::sample(vec![
            StageSpec {
                tasks: 1,
                operator: OperatorSpec::Builtin {
                    name: "identity".into(),
                    args: vec![],
                },
            };
            2
        ]);
        let mut st = LeaderState::default();
        for (stage, w) in [(1, "w1"), (2, "w2"), (3, "w3")] {
            let rec = TaskRec::placed(WorkerId(w.into()), 0, TaskState::Running, &spec, stage);
            st.tasks.insert(key("job-1", stage), rec);
        }
        st.add_job(JobId("job-1".into()), JobRec::detached(spec));
        st
    }

    #[test]
    fn a_worker_writes_only_the_input_logs_of_its_own_tasks_of_running_jobs() {
        let mut st = state();
        let w1 = WorkerId("w1".into());
        let mine = key("job-1", 1);
        // Its own task's segments, manifests and fences.
        for p in [segment_path(&mine, 0, 3), fence_path(&mine, 0)] {
            assert_eq!(may_write(&st, Some(&w1), &p), Ok(()), "{p}");
        }
        // Another worker's task, a task that does not exist, anything outside the logs.
        for p in [
            segment_path(&key("job-1", 2), 0, 0),
            segment_path(&key("job-9", 1), 0, 0),
            "in.txt".to_string(),
            "o.txt".to_string(),
            "blobs/sha256/x".to_string(),
            "logs/job-1/forged".to_string(),
        ] {
            assert!(may_write(&st, Some(&w1), &p).is_err(), "{p}");
        }
        // The job's output: only the worker that runs its sink.
        assert_eq!(
            may_write(&st, Some(&WorkerId("w3".into())), "o.txt"),
            Ok(())
        );
        assert!(may_write(&st, Some(&WorkerId("w2".into())), "./o.txt").is_err());
        // Once the job has ended, not even its own task's log, nor its output.
        if let Some(j) = st.jobs.get_mut(&JobId("job-1".into())) {
            j.end(JobStatus::Cancelled, None, std::time::SystemTime::now());
        }
        assert!(may_write(&st, Some(&WorkerId("w3".into())), "o.txt").is_err());
        assert!(may_write(&st, Some(&w1), &segment_path(&mine, 0, 4)).is_err());
        // A leader without a secret has no registrations to tell apart: logs only.
        assert_eq!(may_write(&st, None, &segment_path(&mine, 0, 4)), Ok(()));
        assert!(may_write(&st, None, "in.txt").is_err());
    }
}
