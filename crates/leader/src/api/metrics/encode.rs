//! Encoding a [`Snapshot`] with `prometheus-client`: one family per metric, counters and
//! gauges as constants, histograms from the workers' fixed buckets. Runs after the state lock
//! is released.

use super::{JobSample, Snapshot, StageSample, TaskSample};
use crate::model::hist::Hist;
use crate::protocol::meters::TaskMeters;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use std::fmt::Error;

/// Writes one family of counters or gauges: its descriptor, then one sample per label set.
fn family<L, M>(
    enc: &mut DescriptorEncoder,
    (name, help): (&str, &str),
    samples: impl IntoIterator<Item = (L, M)>,
) -> Result<(), Error>
where
    L: EncodeLabelSet,
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

/// A label set built per sample.
type Labels = Vec<(&'static str, String)>;

/// A counter family read off a sample: name, help, value.
type Field<T> = (&'static str, &'static str, fn(&T) -> u64);

/// An info sample: no labels of the family's own, the info's as its labels.
fn info(labels: Labels) -> (Labels, Info<Labels>) {
    (Vec::new(), Info::new(labels))
}

/// Writes one family of histograms (seconds) from histograms of microseconds.
fn histograms<'a, L: EncodeLabelSet + 'a>(
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

/// A gauge family with one sample per worker, labelled `worker`.
fn per_worker<'a>(
    enc: &mut DescriptorEncoder,
    what: (&str, &str),
    samples: impl Iterator<Item = (&'a String, i64)>,
) -> Result<(), Error> {
    let samples = samples.map(|(w, v)| (vec![("worker", w.as_str())], gauge(v)));
    family(enc, what, samples)
}

/// Counter names carry no `_total`: the encoder appends it to every counter's samples.
impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), Error> {
        let e = &mut enc;
        let none = || Vec::<(&str, &str)>::new();
        let workers = self
            .workers_by_state
            .iter()
            .map(|(state, n)| (vec![("state", *state)], gauge(*n as i64)));
        family(e, ("rainstorm_workers", "Workers by state."), workers)?;
        let slots = self.slots.iter();
        per_worker(
            e,
            (
                "rainstorm_worker_slots",
                "Operator tasks a live worker runs at once (--slots).",
            ),
            slots.clone().map(|(w, total, _)| (w, i64::from(*total))),
        )?;
        per_worker(
            e,
            (
                "rainstorm_worker_slots_used",
                "Slots of a live worker the tasks of running jobs hold.",
            ),
            slots.map(|(w, _, used)| (w, i64::from(*used))),
        )?;
        let shared = self.shared.iter();
        per_worker(
            e,
            (
                "rainstorm_worker_data_sessions",
                "TCP connections a live worker's links share to other workers (multiplexed).",
            ),
            shared.clone().map(|(w, n, _, _)| (w, *n as i64)),
        )?;
        per_worker(
            e,
            (
                "rainstorm_worker_data_streams",
                "Links a live worker has open over its shared connections.",
            ),
            shared.clone().map(|(w, _, n, _)| (w, *n as i64)),
        )?;
        per_worker(
            e,
            (
                "rainstorm_worker_data_local_links",
                "Links a live worker has open in memory to tasks of its own process (no TCP).",
            ),
            shared.map(|(w, _, _, n)| (w, *n as i64)),
        )?;
        // The leader's own gauges.
        for (name, help, value) in [
            (
                "rainstorm_command_polls_waiting",
                "Worker command polls parked at the leader, waiting for a command.",
                self.polls_waiting,
            ),
            (
                "rainstorm_output_streams",
                "Job output streams being served to followers.",
                self.output_streams,
            ),
            (
                "rainstorm_follower_cache_bytes",
                "Bytes of sink-log text the leader keeps for followers, shared by all of them.",
                self.follower_cache_bytes,
            ),
        ] {
            family(e, (name, help), [(none(), gauge(value))])?;
        }
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
        self.encode_stages(e)?;
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
        let per_job: [Field<JobSample>; 4] = [
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

    fn encode_stages(&self, e: &mut DescriptorEncoder) -> Result<(), Error> {
        let labels = |s: &StageSample| vec![("job", s.job.clone()), ("stage", s.stage.to_string())];
        let tasks = self
            .stages
            .iter()
            .map(|s| (labels(s), gauge(i64::from(s.tasks))));
        family(
            e,
            (
                "rainstorm_stage_tasks",
                "Tasks of an operator stage that own key groups (an autoscaled stage's others stand by).",
            ),
            tasks,
        )?;
        let rates = self
            .stages
            .iter()
            .map(|s| (labels(s), ConstGauge::new(s.input_rate)));
        family(
            e,
            (
                "rainstorm_stage_input_rate",
                "Tuples per second into an operator stage, recent (its tasks that own key groups).",
            ),
            rates,
        )?;
        let rescales = self.rescales.iter().map(|(job, stage, outcome, n)| {
            let labels: Labels = vec![
                ("job", job.clone()),
                ("stage", stage.to_string()),
                ("outcome", outcome.to_string()),
            ];
            (labels, counter(*n))
        });
        family(
            e,
            (
                "rainstorm_rescales",
                "Rescales of a stage that ended, by outcome (done, aborted, refused).",
            ),
            rescales,
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
        let per_task: [Field<TaskSample>; 5] = [
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
        let times: [Field<TaskMeters>; 2] = [
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
