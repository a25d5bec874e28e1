//! Prometheus metrics (`/metrics`) in the OpenMetrics text format, encoded by the
//! `prometheus-client` crate (which escapes label values): workers by state, jobs by status,
//! per-job counters and end-to-end latency, per-stage task counts, input rates and rescales,
//! and per-task counters, gauges and histograms from the meters workers report (bytes, busy
//! and back-pressured time, queue depth, input-log commit times, restarts).
//!
//! A scrape copies what it shows out of the state under the lock — plain numbers, label
//! strings and small histograms — and encodes after releasing it, so a scrape never holds the
//! lock for longer than the copy, however many series it encodes.

use super::Shared;
use crate::model::hist::Hist;
use crate::protocol::control::{JobStatus, WorkerState};
use crate::protocol::meters::TaskMeters;
use crate::state::{lock, State};
use axum::extract::State as Extract;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;

/// The OpenMetrics text format's content type.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub(super) async fn metrics(Extract(l): Shared) -> Response {
    let snap = {
        let st = lock(&l.state);
        Snapshot::take(&st)
    };
    let snap = Snapshot {
        polls_waiting: l.waiting_polls.load(Ordering::Relaxed),
        output_streams: l.output_streams.load(Ordering::Relaxed),
        follower_cache_bytes: l.segments.held() as i64,
        store_requests: l.worker_store_requests.load(Ordering::Relaxed),
        ..snap
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snap));
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::warn!(error = %e, "encoding /metrics failed");
        return super::error(StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed");
    }
    ([("content-type", OPENMETRICS)], out).into_response()
}

/// What one scrape shows, copied out of the state.
#[derive(Debug, Default)]
struct Snapshot {
    /// Workers by state (`alive`, `draining`, `dead`, `left`).
    workers_by_state: Vec<(&'static str, u64)>,
    /// Each worker that is alive or draining: its id, slots and slots in use.
    slots: Vec<(String, u32, u32)>,
    /// Each live worker whose links share connections or run in memory: its id, TCP
    /// connections, streams on them, links in memory.
    shared: Vec<(String, u64, u64, u64)>,
    polls_waiting: i64,
    output_streams: i64,
    follower_cache_bytes: i64,
    store_requests: u64,
    jobs_by_status: Vec<(&'static str, u64)>,
    jobs: Vec<JobSample>,
    stages: Vec<StageSample>,
    /// Rescales that ended: job, stage, outcome, how many.
    rescales: Vec<(String, u32, &'static str, u64)>,
    tasks: Vec<TaskSample>,
}

/// One operator stage's numbers.
#[derive(Debug)]
struct StageSample {
    job: String,
    stage: u32,
    /// Tasks owning key groups.
    tasks: u32,
    /// Tuples per second into its tasks that own key groups.
    input_rate: f64,
}

/// One job's numbers.
#[derive(Debug)]
struct JobSample {
    id: String,
    name: String,
    status: &'static str,
    source_tuples: u64,
    sink_tuples: u64,
    recoveries: u64,
    failures: u64,
    /// Its sink's end-to-end latency histogram (every sink attempt's tuples).
    latency: Option<Hist>,
}

/// One task's numbers (its current attempt's).
#[derive(Debug)]
struct TaskSample {
    /// job, stage, task, worker.
    labels: [(&'static str, String); 4],
    operator: String,
    restarts: u32,
    tuples_in: u64,
    tuples_out: u64,
    queued: u32,
    meters: TaskMeters,
}

fn status_label(s: JobStatus) -> &'static str {
    match s {
        JobStatus::Pending => "pending",
        JobStatus::Running => "running",
        JobStatus::Succeeded => "succeeded",
        JobStatus::Failed => "failed",
        JobStatus::Cancelled => "cancelled",
    }
}

impl Snapshot {
    /// Copies the state's numbers (the caller holds the lock only for this).
    fn take(st: &State) -> Snapshot {
        let workers = st.workers_info();
        let workers_by_state = [
            ("alive", WorkerState::Alive),
            ("draining", WorkerState::Draining),
            ("dead", WorkerState::Dead),
            ("left", WorkerState::Left),
        ]
        .into_iter()
        .map(|(label, s)| {
            (
                label,
                workers.iter().filter(|w| w.state == s).count() as u64,
            )
        })
        .collect();
        let slots = workers
            .iter()
            .filter(|w| matches!(w.state, WorkerState::Alive | WorkerState::Draining))
            .map(|w| (w.id.0.clone(), w.slots, w.slots_used))
            .collect();
        let shared = workers
            .iter()
            .filter(|w| matches!(w.state, WorkerState::Alive | WorkerState::Draining))
            .filter_map(|w| Some((w.id.0.clone(), w.shared_conns?)))
            .map(|(id, c)| (id, c.sessions, c.streams, c.local))
            .collect();
        let jobs_by_status = [
            JobStatus::Pending,
            JobStatus::Running,
            JobStatus::Succeeded,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ]
        .into_iter()
        .map(|s| {
            let n = st.jobs.values().filter(|j| j.status() == s).count() as u64;
            (status_label(s), n)
        })
        .collect();
        let jobs = st
            .jobs
            .iter()
            .map(|(id, j)| JobSample {
                id: id.0.clone(),
                name: j.spec.name.clone().unwrap_or_default(),
                status: status_label(j.status()),
                source_tuples: j.source_tuples.load(Ordering::Relaxed),
                sink_tuples: j.sink_tuples.load(Ordering::Relaxed),
                recoveries: j.recoveries,
                failures: j.failures,
                latency: Some(
                    j.latency
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .prometheus(),
                )
                .filter(|h| h.count() > 0),
            })
            .collect();
        let stages = st
            .jobs
            .iter()
            .flat_map(|(id, j)| {
                let tasks = st.stage_tasks(id, j);
                (1..).zip(tasks).map(move |(stage, tasks)| StageSample {
                    job: id.0.clone(),
                    stage,
                    tasks,
                    input_rate: st.stage_input_rate(id, stage),
                })
            })
            .collect();
        let rescales = st
            .jobs
            .iter()
            .flat_map(|(id, j)| {
                j.scaling
                    .ended
                    .iter()
                    .map(|((stage, outcome), n)| (id.0.clone(), *stage, *outcome, *n))
            })
            .collect();
        let tasks = st
            .tasks
            .iter()
            .map(|(k, t)| TaskSample {
                labels: [
                    ("job", k.job.0.clone()),
                    ("stage", k.pos.stage.to_string()),
                    ("task", k.pos.index.to_string()),
                    ("worker", t.worker.0.clone()),
                ],
                operator: t.operator.clone(),
                restarts: t.attempt,
                tuples_in: t.tuples_in,
                tuples_out: t.tuples_out,
                queued: t.queued,
                meters: t.meters.last.clone(),
            })
            .collect();
        Snapshot {
            workers_by_state,
            slots,
            shared,
            jobs_by_status,
            jobs,
            stages,
            rescales,
            tasks,
            ..Default::default()
        }
    }
}

mod encode;

#[cfg(test)]
mod tests;
