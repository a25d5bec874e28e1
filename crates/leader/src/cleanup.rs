//! The end of a job, whatever the outcome: the job's output gate is closed (from then on the
//! leader is the output's last writer, see `job::OutputGate`), every task of it is stopped, a
//! job that did not succeed gets what it committed as its output, and its record keeps the
//! final status for followers, durably (written before it is visible). Then, off the job's
//! end, (unless kept) its input logs are removed in the background; a failed removal is
//! retried with backoff and shown on the job (`cleanup_error`). At start-up, the records of
//! an earlier leader on the same data dir are loaded here too.

use super::job::JobRec;
use super::state::lock;
use super::Leader;
use crate::coordinator::Outcome;
use crate::model::backoff::Backoff;
use crate::model::ids::{JobId, WorkerId};
use crate::model::spec::JobSpec;
use crate::protocol::control::{Command, JobStatus, TaskState};
use rainstorm_store::output::SinkProgress;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tracing::{info, warn};

mod logs;
use logs::{remove_in_background, trim_to_sink_log};

/// Stops the job's tasks, removes what it leaves behind and records its final status.
pub(super) async fn cleanup(
    leader: &Arc<Leader>,
    id: &JobId,
    spec: &JobSpec,
    outcome: Outcome,
    progress: &watch::Sender<SinkProgress>,
) {
    // Followers stop reading the sink's log before anything removes it.
    progress.send_modify(|p| p.closing = true);
    let succeeded = matches!(outcome, Outcome::Succeeded);
    let (status, error) = match outcome {
        Outcome::Succeeded => (JobStatus::Succeeded, None),
        Outcome::Failed(e) => (JobStatus::Failed, Some(e)),
        Outcome::Cancelled => (JobStatus::Cancelled, None),
    };
    // From here on the leader is the output's last writer (`job::OutputGate`): no sink write
    // of it is taken any more, and those admitted are aborted unless their body has ended.
    let sink_writes = {
        let mut st = lock(&leader.state);
        let closing = st
            .jobs
            .get(id)
            .map(|j| (j.output.in_flight(), j.output.close()));
        let workers: std::collections::BTreeSet<WorkerId> = st
            .tasks
            .iter()
            .filter(|(k, _)| &k.job == id)
            .map(|(_, t)| t.worker.clone())
            .collect();
        for w in workers {
            st.command(&w, Command::StopJob { job: id.clone() });
        }
        for (_, t) in st.tasks.iter_mut().filter(|(k, _)| &k.job == id) {
            if !t.state.is_terminal() {
                // A succeeded job's tasks still up (the source, serving acks to the end)
                // finished their work; any other job's were stopped.
                t.state = if succeeded {
                    TaskState::Finished
                } else {
                    TaskState::Cancelled
                };
            }
            // An ended job moves nothing: no gauge or view keeps its last rates or queues.
            t.queued = 0;
            t.meters.stop();
        }
        closing
    };
    if let Some((in_flight, finished)) = sink_writes {
        if in_flight > 0 {
            info!(job = %id, in_flight, "waiting for the sink's output writes in flight to stop");
        }
        // Each stops at its next chunk or ends its commit: one store operation at most.
        finished.await;
    }
    // A succeeded job's sink wrote the output; any other end keeps what was committed. If
    // that cannot be written, the sink's log is the only copy of it: kept, and the job says
    // where.
    // A sink that failed for good has a log that is not whole (objects of it are gone or
    // forged): what it holds is not what the job committed, so nothing is written from it
    // (it wrote a shortened output over a whole one).
    let log_broken = {
        let st = lock(&leader.state);
        st.jobs
            .get(id)
            .and_then(|j| st.tasks.get(&j.sink_key(id)))
            .is_some_and(|t| t.unrecoverable)
    };
    let (lines_out, unwritten, nothing) = match (succeeded, log_broken) {
        (true, _) => (None, None, false),
        (false, true) => (None, Some("the sink's log is not whole".to_string()), false),
        (false, false) => match write_committed_output(leader, id).await {
            Ok(Committed::Lines(lines)) => (lines, None, false),
            Ok(Committed::Nothing) => (Some(0), None, true),
            Err(why) => (None, Some(why), false),
        },
    };
    // It wrote its output: ended jobs that wrote there before no longer have theirs there.
    if unwritten.is_none() && !nothing {
        let sink = crate::owned::norm(spec, &spec.sink_path);
        let replaced =
            lock(&leader.state).replace_outputs(|s| s == sink, Some(id), &format!("job {id}"));
        leader.record_replaced(replaced).await;
    }
    let sink_key = super::job::sink_key(id, spec);
    let error = match (error, &unwritten) {
        (e, Some(why)) => Some(format!(
            "{}the output it committed could not be written ({why}); the output stays as it was and the sink's log is kept under {}{}",
            e.map(|e| format!("{e}; ")).unwrap_or_default(),
            rainstorm_store::log::task_prefix(&sink_key),
            match leader.cfg.scratch {
                true => " (`rainstorm run` removes it when it exits: run the job again with --keep-logs to keep it)",
                false => "",
            },
        )),
        (e, None) => e,
    };
    // The logs are removed once the end is visible, not before: nothing reads them after it
    // (followers read the output file), and their removal (tens of store requests) would only
    // delay the end. Until it is done the record says they are left, so a restarted leader
    // carries it on.
    let keep = spec.keep_logs || leader.cfg.keep_logs || unwritten.is_some();
    // Whatever is at its sink path then is not its output: its followers print none of it
    // (`api/output.rs`).
    let not_its_output = match (&unwritten, nothing) {
        (Some(_), _) => Some(
            "its output was not written: what is at its sink path is not this job's".to_string(),
        ),
        // It committed no line: what is at its sink path (another job's output) stays.
        (None, true) => Some(
            "it committed nothing, so it wrote no output: what is at its sink path is not this job's"
                .to_string(),
        ),
        (None, false) => None,
    };
    // The final status is durable before it is visible.
    let now = SystemTime::now();
    let (discarded, tasks, record) = {
        let st = lock(&leader.state);
        let discarded = st.discarded(id);
        // Its tasks as they are now, recorded with its end (a restarted leader shows them).
        let tasks: Vec<_> = st
            .tasks_info()
            .into_iter()
            .filter(|t| t.job == *id)
            .collect();
        (
            discarded,
            tasks.clone(),
            st.jobs.get(id).map(|j| {
                // Its lines out are the output's, whatever the sink last reported (a job stopped
                // between two of its reports).
                if let Some(n) = lines_out {
                    j.sink_tuples.store(n, std::sync::atomic::Ordering::Relaxed);
                }
                let mut r = j.stored(id);
                r.status = status;
                r.error = error.clone();
                r.ended_ms = Some(ms(now));
                r.logs_left = !keep;
                r.run = None;
                if not_its_output.is_some() {
                    r.output_replaced = not_its_output.clone();
                }
                r.cleanup_error = None;
                r.discarded = r.discarded.max(discarded);
                r.tasks = tasks;
                r
            }),
        )
    };
    let recorded = match record {
        Some(r) => match leader.persist.put_job(r).await {
            Ok(()) => true,
            Err(e) => {
                warn!(job = %id, error = %format!("{e:#}"), "could not record the job's end");
                false
            }
        },
        None => false,
    };
    if !recorded {
        warn!(job = %id, "the job's end is not durable; a restarted leader will see it as running");
    }
    {
        let mut st = lock(&leader.state);
        if let Some(j) = st.jobs.get_mut(id) {
            if let Some(n) = lines_out {
                // Again, under the lock that ends it: no report lands after this.
                j.sink_tuples.store(n, std::sync::atomic::Ordering::Relaxed);
            }
            j.end(status, error.clone(), now);
            j.tasks_at_end = tasks;
            j.logs_left = !keep;
            j.discarded = j.discarded.max(discarded);
            if not_its_output.is_some() {
                j.output_replaced = not_its_output.clone();
            }
            j.cleanup_error = None;
        }
    }
    progress.send_modify(|p| {
        p.closing = true;
        p.finished = true;
    });
    // Its followers read the output file from now on: the text of its log goes.
    leader
        .segments
        .forget_under(&format!("{}/", rainstorm_store::log::job_prefix(id)));
    match &error {
        None => info!(job = %id, status = ?status, "job ended"),
        Some(e) => warn!(job = %id, status = ?status, error = %e, "job ended with an error"),
    }
    if !keep {
        remove_in_background(leader, id.clone());
    } else if unwritten.is_some() && !(spec.keep_logs || leader.cfg.keep_logs) {
        // Only the sink's log holds what the job committed: the other stages' logs are of no
        // use to anyone now (a probe's full store kept 26 MB of them for good).
        trim_to_sink_log(leader, id.clone(), sink_key);
    }
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What a job that did not succeed had committed, as its output.
enum Committed {
    /// Written to its sink path: this many lines (none if its record went meanwhile).
    Lines(Option<u64>),
    /// No line: its sink never committed (a job cancelled before it started, or failed before
    /// its sink's first commit). Nothing is written: an empty output written over the file at
    /// its sink path destroyed an earlier job's output (hostile probe 19).
    Nothing,
}

/// Writes what the sink of a job that did not succeed had committed as its output (an
/// at-most-once job that failed, a cancelled one): the same text a follower saw, whole lines.
/// A sink that is being taken over is waited for briefly. Called once the job's output gate
/// is closed and the sink's writes have finished, so no sink write can land over it. Says why
/// if the output could not be written (it then stays as it was, and the caller keeps the log).
async fn write_committed_output(leader: &Leader, id: &JobId) -> Result<Committed, String> {
    let (key, target, reported) = match lock(&leader.state).jobs.get(id) {
        Some(j) => (j.sink_key(id), j.output(), *j.commits.borrow()),
        None => return Ok(Committed::Lines(None)),
    };
    let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(500));
    let mut last = String::from("the sink's log stayed in a takeover");
    for _ in 0..20 {
        match rainstorm_store::log::committed_lineage(&leader.store, &key).await {
            Ok(Some(lineage)) if lineage.is_empty() => return Ok(Committed::Nothing),
            Ok(Some(lineage)) => {
                // The store's listing cannot show a lost tail; the commits the sink's worker
                // reported can (a cancel just after its newest objects were deleted wrote a
                // shortened output over a whole one).
                let (attempt, commits) = reported;
                let held: u64 = lineage
                    .iter()
                    .filter_map(|p| rainstorm_store::log::compact::span(p))
                    .filter(|(a, _, _)| *a == attempt)
                    .map(|(_, f, l)| (l - f).saturating_add(1))
                    .sum();
                if held < commits {
                    let why = format!("the sink's log holds {held} of the {commits} group commits its attempt {attempt} made: objects of it were deleted from the store");
                    warn!(job = %id, error = %why, "the committed output is not written; the output stays as it was");
                    return Err(why);
                }
                match rainstorm_store::output::assemble(&leader.store, &lineage, &target).await {
                    Ok(written) => {
                        info!(job = %id, bytes = written.bytes, lines = written.lines, "wrote the output the job had committed");
                        return Ok(Committed::Lines(Some(written.lines)));
                    }
                    // An object compacted away since the listing, or a store hiccup: list
                    // again (the output is replaced whole or not at all).
                    Err(e) => {
                        warn!(job = %id, error = %e, "could not write the job's committed output; trying again");
                        last = e.to_string();
                        tokio::time::sleep(backoff.next()).await
                    }
                }
            }
            // A takeover under way. No attempt can write any more (the gate is closed): a log
            // without a segment committed nothing, and no takeover will ever end to say so (an
            // at-least-once job failing at once waited 8.5 s, then said its output could not
            // be written).
            Ok(None) => match rainstorm_store::log::holds_segments(&leader.store, &key).await {
                Ok(false) => return Ok(Committed::Nothing),
                Ok(true) => tokio::time::sleep(backoff.next()).await,
                Err(e) => {
                    warn!(job = %id, error = %e, "could not read the sink's log; the output stays as it was");
                    return Err(format!("reading the sink's log: {e}"));
                }
            },
            Err(e) => {
                warn!(job = %id, error = %e, "could not read the sink's log; the output stays as it was");
                return Err(format!("reading the sink's log: {e}"));
            }
        }
    }
    warn!(job = %id, error = %last, "the committed output could not be written; the output stays as it was and the sink's log is kept");
    Err(last)
}

/// Loads what an earlier leader on this data dir left: the worker identities it handed out,
/// ended jobs as they ended, and running jobs to be carried on (their drivers are returned,
/// to be spawned): from their recorded placement, or, never placed (pending, or submitted
/// just before the leader went away), from the start, in their turn; and resumes removing
/// the input logs of every ended job that may still have some.
///
/// A job without a recorded placement never had a task started: every start is sent after
/// the placement it belongs to is durable (`driver.rs`, `Action::Persist`), so starting it
/// afresh runs it once. Before, such a job was recorded as failed, and a job waiting for
/// capacity was lost to a leader restart (hostile probe).
pub(super) async fn restore_jobs(leader: &Arc<Leader>) -> anyhow::Result<Vec<super::NewJob>> {
    let workers = leader.persist.load_workers().await?;
    // An identity recorded without a key cannot be proved: its worker gets a new one.
    let keyed = workers.into_iter().filter_map(|(id, w)| Some((id, w.key?)));
    lock(&leader.state).known_workers.extend(keyed);
    let jobs = leader.persist.load_jobs().await?;
    let mut leftovers = Vec::new();
    let mut resumed = Vec::new();
    for job in jobs {
        if job.status == JobStatus::Running {
            let (ev_tx, ev_rx) = tokio::sync::mpsc::channel(256);
            let cancel = tokio_util::sync::CancellationToken::new();
            let (progress_tx, progress_rx) = watch::channel(SinkProgress::default());
            let rec = JobRec::resumed(&job, ev_tx, cancel.clone(), progress_rx);
            let id = job.id.clone();
            {
                let mut st = lock(&leader.state);
                if let Err(e) = st.claim_files(&id, super::owned::job_files(&job.spec, &[])) {
                    warn!(job = %id, error = %e, "a resumed job's files overlap another's");
                }
                st.add_job(id.clone(), rec);
            }
            match job.run {
                Some(_) => info!(job = %id, "the previous leader ran this job; carrying it on"),
                None => {
                    info!(job = %id, "the previous leader had not started this job; starting it")
                }
            }
            resumed.push((id, job.spec, ev_rx, cancel, progress_tx, job.run));
            continue;
        }
        if job.logs_left {
            leftovers.push(job.id.clone());
        }
        let id = job.id.clone();
        let rec = JobRec::restored(job);
        lock(&leader.state).add_job(id, rec);
    }
    if !leftovers.is_empty() {
        info!(
            jobs = leftovers.len(),
            "removing input logs earlier jobs left"
        );
    }
    for id in leftovers {
        remove_in_background(leader, id);
    }
    Ok(resumed)
}
