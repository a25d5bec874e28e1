//! The public views of the leader's state — jobs, tasks and workers as the API, the CLI and
//! the dashboard show them — built from the records under one short lock.

use super::job::{ms_since_epoch, JobRec};
use super::state::{State, TaskRec};
use crate::model::ids::{JobId, TaskKey, TaskPos};
use crate::protocol::control::{JobInfo, JobStatus, TaskInfo, WorkerInfo, WorkerState};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// How long an input-log write must have waited for the store before the job's views say
/// so (and the stall detector names the store as the cause): longer than a busy store's slow
/// write, far shorter than the stall timeout.
pub(crate) const STORE_WAIT_SHOWN_MS: u64 = 2_000;

impl State {
    /// Public view of a job.
    pub fn job_info(&self, id: &JobId) -> Option<JobInfo> {
        let j = self.jobs.get(id)?;
        let elapsed = j
            .ended()
            .unwrap_or_else(Instant::now)
            .duration_since(j.started);
        let (source_bytes, source_read_bytes) = self.source_read(id, j);
        let stage_tasks = self.stage_tasks(id, j);
        Some(JobInfo {
            id: id.clone(),
            name: j.spec.name.clone(),
            status: j.status(),
            error: j.error().map(str::to_string),
            delivery: j.spec.delivery,
            // Each stage with the tasks owning its key groups now (a rescale changes it; the
            // count submitted showed beside the current one confused a probe).
            stages: j
                .spec
                .stages
                .iter()
                .zip(&stage_tasks)
                .map(|(s, n)| format!("{n}×{}", j.shown_operator(&s.operator.describe())))
                .collect(),
            sink: j.spec.sink_path.clone(),
            source_tuples: j.source_tuples.load(Ordering::Relaxed),
            sink_tuples: j.sink_tuples.load(Ordering::Relaxed),
            failures: j.failures,
            recoveries: j.recoveries,
            last_failure: j.last_failure.clone(),
            pending_reason: j.events().and_then(|_| {
                j.waiting
                    .clone()
                    .or_else(|| self.store_waiting(id))
                    .or_else(|| self.unreaching(id))
            }),
            rate: j.spec.rate,
            submitted_ms: ms_since_epoch(j.submitted),
            elapsed_ms: elapsed.as_millis() as u64,
            latency_ms: j.latency_summary(),
            cleanup_error: j.cleanup_error.clone(),
            output_replaced: j.output_replaced.clone(),
            source_bytes,
            source_read_bytes,
            stage_tasks,
            scaling: j.scaling.list.clone(),
            discarded_tuples: self.discarded(id).max(j.discarded),
        })
    }

    /// Tuples the current attempts of a job's tasks reported discarded (their executables
    /// exited 0 early), summed.
    pub fn discarded(&self, id: &JobId) -> u64 {
        (self.tasks.iter())
            .filter(|(k, _)| &k.job == id)
            .map(|(_, t)| t.discarded)
            .sum()
    }

    /// The source file's size and how much of it the source's current attempt has read, as
    /// that attempt last reported: a source whose stream is acknowledged has read it all.
    fn source_read(&self, id: &JobId, j: &JobRec) -> (Option<u64>, Option<u64>) {
        let key = TaskKey {
            job: id.clone(),
            pos: TaskPos { stage: 0, index: 0 },
        };
        let Some(t) = self.tasks.get(&key) else {
            return (None, None);
        };
        let size = t.meters.last.source_size;
        let read = match size {
            Some(size) if t.done || j.status() == JobStatus::Succeeded => size,
            Some(size) => t.meters.last.source_read.min(size),
            None => t.meters.last.source_read,
        };
        (size, Some(read))
    }

    /// The task records of one stage of a job, in task order.
    fn stage_records<'a>(
        &'a self,
        id: &'a JobId,
        stage: u32,
    ) -> impl Iterator<Item = &'a TaskRec> + 'a {
        let first = TaskKey {
            job: id.clone(),
            pos: TaskPos { stage, index: 0 },
        };
        self.tasks
            .range(first..)
            .take_while(move |(k, _)| k.job == *id && k.pos.stage == stage)
            .map(|(_, t)| t)
    }

    /// Which of a running job's tasks has waited longest for the store to take an input-log
    /// write, once that is [`STORE_WAIT_SHOWN_MS`] or more: a frozen job says why at once.
    fn store_waiting(&self, id: &JobId) -> Option<String> {
        let (key, t) = self
            .tasks
            .iter()
            .filter(|(k, t)| &k.job == id && t.state.on_worker())
            .max_by_key(|(_, t)| t.store_wait_ms)?;
        (t.store_wait_ms >= STORE_WAIT_SHOWN_MS).then(|| {
            format!(
                "task {}.{} has waited {:.0} s for the store to take its input-log write",
                key.pos.stage,
                key.pos.index,
                t.store_wait_ms as f64 / 1000.0
            )
        })
    }

    /// Which of a running job's tasks has tried longest to reach a task it sends to, once
    /// that is [`STORE_WAIT_SHOWN_MS`] or more: a cut between two workers (or a receiver that
    /// does not come back) is named at once, not after the stall detector's minute.
    fn unreaching(&self, id: &JobId) -> Option<String> {
        let (key, (to, ms)) = self
            .tasks
            .iter()
            .filter(|(k, t)| &k.job == id && t.state.on_worker())
            .filter_map(|(k, t)| Some((k, t.unreached?)))
            .max_by_key(|(_, (_, ms))| *ms)?;
        (ms >= STORE_WAIT_SHOWN_MS).then(|| {
            let at = self
                .tasks
                .get(&TaskKey {
                    job: id.clone(),
                    pos: to,
                })
                .filter(|r| r.state.on_worker())
                .map(|r| format!(" on worker {}", r.worker))
                .unwrap_or_default();
            format!(
                "task {}.{} has tried for {:.0} s to reach task {}.{}{at}",
                key.pos.stage,
                key.pos.index,
                ms as f64 / 1000.0,
                to.stage,
                to.index
            )
        })
    }

    /// Each stage's tasks that own key groups (all of a stage's tasks but those standing by;
    /// before any is placed, the count it starts with).
    pub(crate) fn stage_tasks(&self, id: &JobId, j: &JobRec) -> Vec<u32> {
        (1..=j.spec.stages.len() as u32)
            .map(|stage| {
                let mut any = false;
                let n = self
                    .stage_records(id, stage)
                    .inspect(|_| any = true)
                    .filter(|t| !t.standby)
                    .count() as u32;
                if any {
                    n
                } else {
                    j.spec.stages[stage as usize - 1].tasks
                }
            })
            .collect()
    }

    /// Tuples per second into one stage of a job: the recent input rates of its tasks that own
    /// key groups (a standby task takes none), one decimal.
    pub(crate) fn stage_input_rate(&self, id: &JobId, stage: u32) -> f64 {
        let rate: f64 = self
            .stage_records(id, stage)
            .filter(|t| !t.standby)
            .map(|t| t.meters.input_rate)
            .sum();
        // An empty sum of floats is -0.0, which a scrape would show as "-0.0".
        round1(rate) + 0.0
    }

    /// Public view of all jobs, oldest first.
    pub fn jobs_info(&self) -> Vec<JobInfo> {
        let mut v: Vec<JobInfo> = self
            .jobs
            .keys()
            .filter_map(|id| self.job_info(id))
            .collect();
        v.sort_by_key(|j| (j.submitted_ms, j.id.0.len(), j.id.0.clone()));
        v
    }

    /// Public view of tasks.
    pub fn tasks_info(&self) -> Vec<TaskInfo> {
        let mut v: Vec<TaskInfo> = self
            .tasks
            .iter()
            .map(|(k, t)| TaskInfo {
                job: k.job.clone(),
                stage: k.pos.stage,
                task: k.pos.index,
                worker: t.worker.clone(),
                pid: t.pid,
                state: t.state,
                attempt: t.attempt,
                standby: t.standby,
                restarts: t.attempt,
                tuples_in: t.tuples_in,
                tuples_out: t.tuples_out,
                input_rate: (t.meters.input_rate * 10.0).round() / 10.0,
                operator: match self.jobs.get(&k.job) {
                    Some(j) => j.shown_operator(&t.operator),
                    None => t.operator.clone(),
                },
                error: t.error.clone(),
                queued: t.queued,
                bytes_in: t.meters.last.bytes_in,
                bytes_out: t.meters.last.bytes_out,
                output_rate: round1(t.meters.output_rate),
                busy: round3(t.meters.busy),
                backpressured: round3(t.meters.backpressured),
                idle: round3(t.meters.idle()),
                busy_s: round3(t.meters.last.busy_ns as f64 / 1e9),
                backpressured_s: round3(t.meters.last.backpressure_ns as f64 / 1e9),
                uptime_s: round3(t.meters.last.uptime_ns as f64 / 1e9),
                discarded: t.discarded,
                store_wait_s: round3(t.store_wait_ms as f64 / 1000.0),
            })
            .collect();
        // An ended job a restarted leader restored has no task records: its tasks as they
        // were at its end.
        let live: std::collections::BTreeSet<&JobId> = self.tasks.keys().map(|k| &k.job).collect();
        for (id, j) in &self.jobs {
            if !live.contains(id) {
                v.extend(j.tasks_at_end.iter().cloned());
            }
        }
        v.sort_by_key(|t| (t.job.0.len(), t.job.0.clone(), t.stage, t.task));
        v
    }

    /// Public view of workers.
    pub fn workers_info(&self) -> Vec<WorkerInfo> {
        let now = Instant::now();
        let mut v: Vec<WorkerInfo> = self
            .workers
            .iter()
            .map(|(id, w)| WorkerInfo {
                id: id.clone(),
                address: w.data_addr.clone(),
                state: match (w.state, w.left, w.draining) {
                    (WorkerState::Dead, true, _) => WorkerState::Left,
                    (WorkerState::Alive, _, true) => WorkerState::Draining,
                    (state, _, _) => state,
                },
                last_heartbeat_s: (now.duration_since(w.last_seen).as_secs_f64() * 10.0).round()
                    / 10.0,
                running_tasks: self.running_on(id),
                data_conns: w.data_conns,
                slots: w.slots,
                slots_used: self.slots_held(id, None),
                // A worker that is gone holds no connection, whatever it last said.
                shared_conns: w.shared_conns.filter(|_| w.state == WorkerState::Alive),
                clock_offset_ms: (w.clock_offset_ns as f64 / 1e5).round() / 10.0,
            })
            .collect();
        v.sort_by_key(|w| (w.id.0.len(), w.id.0.clone()));
        v
    }
}

/// One decimal (rates).
fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Three decimals (shares, seconds).
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Each operator [`crate::Leader::pin_operators`] pinned: its pinned path, and the path it was
/// submitted as (`submitted`, the spec before pinning), for listings.
pub(crate) fn pinned_names(
    submitted: &crate::model::spec::JobSpec,
    pinned: &crate::model::spec::JobSpec,
) -> std::collections::BTreeMap<String, String> {
    (pinned.stages.iter().zip(&submitted.stages))
        .filter_map(|(now, then)| match (&now.operator, &then.operator) {
            (
                crate::model::spec::OperatorSpec::Exec { path: blob, .. },
                crate::model::spec::OperatorSpec::Exec { path: named, .. },
            ) if blob != named => Some((blob.clone(), named.clone())),
            _ => None,
        })
        .collect()
}

impl crate::job::JobRec {
    /// An operator's description as listings show it: a pinned operator under the path it
    /// was submitted as, with the start of the hash it was pinned by (`x/op.sh
    /// [sha256:3ed58d1c2a4b]`), not as its `blobs/sha256/…` store path (a probe's newcomer
    /// could not tell the stages apart).
    pub fn shown_operator(&self, described: &str) -> String {
        let mut shown = described.to_string();
        for (blob, named) in &self.operator_names {
            let hash = rainstorm_store::store::pinned_hash(blob).unwrap_or_default();
            let short = hash.get(..12).unwrap_or(hash);
            shown = shown.replace(blob.as_str(), &format!("{named} [sha256:{short}]"));
        }
        shown
    }
}
