//! Prometheus metrics (`/metrics`): workers by state, jobs by status, and per-job and per-task
//! counters, as text.

use super::Shared;
use crate::protocol::control::{JobInfo, JobStatus, WorkerState};
use crate::state::lock;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

/// Writes one metric family: its HELP and TYPE lines, then one sample per (labels, value).
fn family<V: std::fmt::Display>(
    out: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    samples: impl IntoIterator<Item = (String, V)>,
) {
    use std::fmt::Write;
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

pub(super) async fn metrics(State(l): Shared) -> Response {
    let (workers, alive, job_counts, jobs, tasks) = {
        let st = lock(&l.state);
        let alive = st
            .workers
            .values()
            .filter(|w| w.state == WorkerState::Alive)
            .count();
        let job_counts: Vec<(String, usize)> = [
            JobStatus::Running,
            JobStatus::Succeeded,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ]
        .into_iter()
        .map(|s| {
            let n = st.jobs.values().filter(|j| j.status() == s).count();
            (format!("status=\"{}\"", format!("{s:?}").to_lowercase()), n)
        })
        .collect();
        (
            st.workers.len(),
            alive,
            job_counts,
            st.jobs_info(),
            st.tasks_info(),
        )
    };
    let mut out = String::new();
    family(
        &mut out,
        "rainstorm_workers",
        "Workers by state.",
        "gauge",
        [
            ("state=\"alive\"".to_string(), alive),
            ("state=\"dead\"".to_string(), workers - alive),
        ],
    );
    family(
        &mut out,
        "rainstorm_command_polls_waiting",
        "Worker command polls parked at the leader, waiting for a command.",
        "gauge",
        [(
            String::new(),
            l.waiting_polls.load(std::sync::atomic::Ordering::Relaxed),
        )],
    );
    family(
        &mut out,
        "rainstorm_output_streams",
        "Job output streams being served to followers.",
        "gauge",
        [(
            String::new(),
            l.output_streams.load(std::sync::atomic::Ordering::Relaxed),
        )],
    );
    family(
        &mut out,
        "rainstorm_worker_store_requests_total",
        "Store requests workers made through the leader (workers with a store of their own make none).",
        "counter",
        [(
            String::new(),
            l.worker_store_requests
                .load(std::sync::atomic::Ordering::Relaxed),
        )],
    );
    family(
        &mut out,
        "rainstorm_jobs",
        "Jobs by status.",
        "gauge",
        job_counts,
    );
    let per_job = [
        (
            "rainstorm_job_source_tuples_total",
            "Tuples emitted by a job's source.",
            (|j| j.source_tuples) as fn(&JobInfo) -> u64,
        ),
        (
            "rainstorm_job_sink_tuples_total",
            "Lines written by a job's sink.",
            |j| j.sink_tuples,
        ),
        (
            "rainstorm_job_recoveries_total",
            "Task restarts of a job.",
            |j| j.recoveries,
        ),
    ];
    for (name, help, value) in per_job {
        let samples = jobs.iter().map(|j| (format!("job=\"{}\"", j.id), value(j)));
        family(&mut out, name, help, "counter", samples);
    }
    let samples = tasks.iter().map(|t| {
        let labels = format!(
            "job=\"{}\",stage=\"{}\",task=\"{}\",worker=\"{}\"",
            t.job, t.stage, t.task, t.worker
        );
        (labels, t.tuples_in)
    });
    family(
        &mut out,
        "rainstorm_task_tuples_in_total",
        "Tuples accepted by a task.",
        "counter",
        samples,
    );
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}
