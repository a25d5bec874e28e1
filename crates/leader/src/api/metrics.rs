//! Prometheus metrics (`/metrics`) in the OpenMetrics text format, encoded by the
//! `prometheus-client` crate (which escapes label values): workers by state, jobs by status,
//! per-job counters and end-to-end latency, and per-task counters, gauges and histograms from
//! the meters workers report (bytes, busy and back-pressured time, queue depth, input-log
//! commit times, restarts).
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
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::fmt::Error;
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
    workers_alive: u64,
    workers_dead: u64,
    polls_waiting: i64,
    output_streams: i64,
    store_requests: u64,
    jobs_by_status: Vec<(&'static str, u64)>,
    jobs: Vec<JobSample>,
    tasks: Vec<TaskSample>,
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
    /// Its sink's end-to-end latency histogram (current sink attempt).
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
        JobStatus::Running => "running",
        JobStatus::Succeeded => "succeeded",
        JobStatus::Failed => "failed",
        JobStatus::Cancelled => "cancelled",
    }
}

impl Snapshot {
    /// Copies the state's numbers (the caller holds the lock only for this).
    fn take(st: &State) -> Snapshot {
        let alive = st
            .workers
            .values()
            .filter(|w| w.state == WorkerState::Alive)
            .count() as u64;
        let jobs_by_status = [
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
                latency: st
                    .tasks
                    .get(&j.sink_key(id))
                    .and_then(|t| t.meters.last.latency.clone()),
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
            workers_alive: alive,
            workers_dead: st.workers.len() as u64 - alive,
            jobs_by_status,
            jobs,
            tasks,
            ..Default::default()
        }
    }
}

/// Writes one family of counters or gauges: its descriptor, then one sample per label set.
fn family<L, M>(
    enc: &mut DescriptorEncoder,
    (name, help): (&str, &str),
    samples: impl IntoIterator<Item = (L, M)>,
) -> Result<(), Error>
where
    L: prometheus_client::encoding::EncodeLabelSet,
    M: EncodeMetric + TypedNew,
{
    let mut fam = enc.encode_descriptor(name, help, None, M::TYPE)?;
    for (labels, metric) in samples {
        metric.encode(fam.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A metric type known before any sample exists (so an empty family still has its type).
trait TypedNew {
    const TYPE: MetricType;
}

impl<N> TypedNew for ConstCounter<N> {
    const TYPE: MetricType = MetricType::Counter;
}

impl<N> TypedNew for ConstGauge<N> {
    const TYPE: MetricType = MetricType::Gauge;
}

impl<S> TypedNew for Info<S> {
    const TYPE: MetricType = MetricType::Info;
}

/// An info sample: no labels of the family's own, the info's as its labels.
fn info(
    labels: Vec<(&'static str, String)>,
) -> (
    Vec<(&'static str, String)>,
    Info<Vec<(&'static str, String)>>,
) {
    (Vec::new(), Info::new(labels))
}

/// Writes one family of histograms (seconds) from histograms of microseconds.
fn histograms<'a, L: prometheus_client::encoding::EncodeLabelSet + 'a>(
    enc: &mut DescriptorEncoder,
    (name, help): (&str, &str),
    samples: impl IntoIterator<Item = (L, &'a Hist)>,
) -> Result<(), Error> {
    let mut fam = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in samples {
        // The encoder wants each bucket's own count; it accumulates them itself.
        let mut below = 0;
        let buckets: Vec<(f64, u64)> = h
            .cumulative()
            .into_iter()
            .map(|(le_us, n)| {
                let own = n - below;
                below = n;
                let le = match le_us {
                    u64::MAX => f64::INFINITY,
                    us => us as f64 / 1e6,
                };
                (le, own)
            })
            .collect();
        fam.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
            h.sum_us as f64 / 1e6,
            h.count(),
            &buckets,
            None,
        )?;
    }
    Ok(())
}

fn counter(v: u64) -> ConstCounter<u64> {
    ConstCounter::new(v)
}

fn seconds(ns: u64) -> ConstCounter<f64> {
    ConstCounter::new(ns as f64 / 1e9)
}

fn gauge(v: i64) -> ConstGauge<i64> {
    ConstGauge::new(v)
}

/// Counter names carry no `_total`: the encoder appends it to every counter's samples.
impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), Error> {
        let e = &mut enc;
        let none = || Vec::<(&str, &str)>::new();
        let workers = [
            (vec![("state", "alive")], gauge(self.workers_alive as i64)),
            (vec![("state", "dead")], gauge(self.workers_dead as i64)),
        ];
        family(e, ("rainstorm_workers", "Workers by state."), workers)?;
        family(
            e,
            (
                "rainstorm_command_polls_waiting",
                "Worker command polls parked at the leader, waiting for a command.",
            ),
            [(none(), gauge(self.polls_waiting))],
        )?;
        family(
            e,
            (
                "rainstorm_output_streams",
                "Job output streams being served to followers.",
            ),
            [(none(), gauge(self.output_streams))],
        )?;
        family(
            e,
            (
                "rainstorm_worker_store_requests",
                "Store requests workers made through the leader (workers with a store of their own make none).",
            ),
            [(none(), counter(self.store_requests))],
        )?;
        let by_status = self
            .jobs_by_status
            .iter()
            .map(|(s, n)| (vec![("status", *s)], gauge(*n as i64)));
        family(e, ("rainstorm_jobs", "Jobs by status."), by_status)?;
        self.encode_jobs(e)?;
        self.encode_tasks(e)
    }
}

impl Snapshot {
    fn encode_jobs(&self, e: &mut DescriptorEncoder) -> Result<(), Error> {
        let job = |j: &JobSample| [("job", j.id.clone())];
        let infos = self.jobs.iter().map(|j| {
            info(vec![
                ("job", j.id.clone()),
                ("name", j.name.clone()),
                ("status", j.status.to_string()),
            ])
        });
        family(
            e,
            (
                "rainstorm_job",
                "One series per job (rainstorm_job_info, always 1): its name and status as labels.",
            ),
            infos,
        )?;
        let per_job: [(&str, &str, fn(&JobSample) -> u64); 4] = [
            (
                "rainstorm_job_source_tuples",
                "Tuples emitted by a job's source.",
                |j| j.source_tuples,
            ),
            (
                "rainstorm_job_sink_tuples",
                "Lines written by a job's sink.",
                |j| j.sink_tuples,
            ),
            ("rainstorm_job_recoveries", "Task restarts of a job.", |j| {
                j.recoveries
            }),
            ("rainstorm_job_failures", "Task failures of a job.", |j| {
                j.failures
            }),
        ];
        for (name, help, value) in per_job {
            let samples = self.jobs.iter().map(|j| (job(j), counter(value(j))));
            family(e, (name, help), samples)?;
        }
        let latency = self
            .jobs
            .iter()
            .filter_map(|j| j.latency.as_ref().map(|h| (job(j), h)));
        histograms(
            e,
            (
                "rainstorm_job_end_to_end_latency_seconds",
                "Time from the source's emit to the sink's accept, per tuple.",
            ),
            latency,
        )
    }

    fn encode_tasks(&self, e: &mut DescriptorEncoder) -> Result<(), Error> {
        let tasks = &self.tasks;
        let infos = tasks.iter().map(|t| {
            let mut labels = t.labels.to_vec();
            labels.push(("operator", t.operator.clone()));
            info(labels)
        });
        family(
            e,
            (
                "rainstorm_task",
                "One series per task (rainstorm_task_info, always 1): its operator as a label.",
            ),
            infos,
        )?;
        let per_task: [(&str, &str, fn(&TaskSample) -> u64); 5] = [
            (
                "rainstorm_task_tuples_in",
                "Tuples accepted by a task (its current attempt).",
                |t| t.tuples_in,
            ),
            (
                "rainstorm_task_tuples_out",
                "Tuples emitted by a task (its current attempt).",
                |t| t.tuples_out,
            ),
            (
                "rainstorm_task_bytes_in",
                "Key and value bytes accepted by a task (its current attempt).",
                |t| t.meters.bytes_in,
            ),
            (
                "rainstorm_task_bytes_out",
                "Key and value bytes emitted by a task (its current attempt).",
                |t| t.meters.bytes_out,
            ),
            (
                "rainstorm_task_restarts",
                "Restarts of a task (its attempt number).",
                |t| u64::from(t.restarts),
            ),
        ];
        for (name, help, value) in per_task {
            let samples = tasks
                .iter()
                .map(|t| (t.labels.as_slice(), counter(value(t))));
            family(e, (name, help), samples)?;
        }
        let times: [(&str, &str, fn(&TaskMeters) -> u64); 2] = [
            (
                "rainstorm_task_busy_seconds",
                "Time a task spent processing input (feeding its operator, the operator working; a sink: writing its log).",
                |m| m.busy_ns,
            ),
            (
                "rainstorm_task_backpressure_seconds",
                "Time a task spent blocked handing output downstream (a full link queue).",
                |m| m.backpressure_ns,
            ),
        ];
        for (name, help, value) in times {
            let samples = tasks
                .iter()
                .map(|t| (t.labels.as_slice(), seconds(value(&t.meters))));
            family(e, (name, help), samples)?;
        }
        let queued = tasks
            .iter()
            .map(|t| (t.labels.as_slice(), gauge(i64::from(t.queued))));
        family(
            e,
            (
                "rainstorm_task_queue_depth",
                "Input batches waiting in a task's inbox (plus one while it drains).",
            ),
            queued,
        )?;
        let commits = tasks.iter().filter_map(|t| {
            t.meters
                .log_commit
                .as_ref()
                .map(|h| (t.labels.as_slice(), h))
        });
        histograms(
            e,
            (
                "rainstorm_task_log_commit_seconds",
                "Durations of a task's input-log commits (a segment write, retries included).",
            ),
            commits,
        )
    }
}
