//! How the CLI shows things: listings as aligned tables or JSON, one job's details, a job's final
//! status line (and the exit code it means), and the problems of an invalid job. Data goes to
//! stdout; status and problems go to stderr.

use crate::cli::client::{succeeded, Cancelled, Rejected};
use crate::model::check::InvalidJob;
use crate::protocol::api::JobStatus;
use crate::protocol::control::{JobInfo, ScaleInfo, TaskInfo, TaskState, WorkerInfo};
use std::process::ExitCode;

/// The JSON spelling of an enum value (`running`, `at-least-once` …).
pub(super) fn status_word<T: serde::Serialize>(v: T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Prints every problem of a refused job; returns whether `err` was one.
pub(super) fn print_problems(err: &anyhow::Error) -> bool {
    let (problems, fallback) = if let Some(InvalidJob(problems)) = err.downcast_ref() {
        (problems, None)
    } else if let Some(r) = err.downcast_ref::<Rejected>() {
        (&r.problems, Some(&r.message))
    } else {
        return false;
    };
    eprintln!("rainstorm: the job is invalid; nothing was started:");
    for p in problems {
        eprintln!("  {p}");
    }
    if let (true, Some(message)) = (problems.is_empty(), fallback) {
        eprintln!("  {message}");
    }
    true
}

/// Prints a job's final status on stderr; the exit code is 0 only if it succeeded.
pub(super) fn final_status(info: &JobInfo) -> ExitCode {
    eprintln!("rainstorm: {}", status_line(info));
    if info.discarded_tuples > 0 {
        eprintln!("rainstorm: warning: {}", discarded(info.discarded_tuples));
    }
    if succeeded(info) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// A job's final status in one line, of one form whatever the status; a failure adds its
/// cause (hostile probe 14: a failure's line had another form, the status in Rust's spelling).
pub(super) fn status_line(info: &JobInfo) -> String {
    let line = format!(
        "job {} {} ({} tuples in, {} lines out, {:.2} s)",
        info.id,
        status_word(info.status),
        info.source_tuples,
        info.sink_tuples,
        info.elapsed_ms as f64 / 1000.0
    );
    match &info.error {
        Some(e) => format!("{line}: {}", shown(e)),
        None => line,
    }
}

/// What a cancel did, in one line: the job's status now, and whether the cancel made it.
pub(super) fn cancelled(id: &str, c: &Cancelled) -> String {
    match (c.already_ended, c.status) {
        (true, Some(s)) => format!(
            "job {id} had already ended ({}); nothing to cancel",
            status_word(s)
        ),
        (_, Some(JobStatus::Cancelled)) => format!("job {id} cancelled"),
        (_, Some(s)) if s.is_terminal() => format!(
            "job {id} ended ({}) before the cancel took effect",
            status_word(s)
        ),
        _ => {
            format!("cancel of job {id} requested; it has not ended yet (see `rainstorm job {id}`)")
        }
    }
}

/// What a job's discarded tuples mean, said where its status is shown.
fn discarded(n: u64) -> String {
    format!(
        "at least {n} tuples were not processed: an operator exited 0 before its input ended, \
         and what its task was fed after that was discarded (`rainstorm tasks --json`: \
         `discarded`)"
    )
}

/// `text` as a terminal shows it safely: control characters (a newline, an escape sequence)
/// written as escapes. Job names, errors and paths are what clients sent: a name with a
/// newline could fake a table row, one with ESC could drive the terminal.
fn shown(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            c if c.is_control() => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// Prints rows under headers, each column as wide as its widest cell (every cell
/// [`shown`] safely).
fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| r.iter().map(|c| shown(c)).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

/// Prints a listing: pretty JSON, or a table with one row per item.
fn listing<T: serde::Serialize>(
    items: &[T],
    json: bool,
    headers: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(items)?);
    } else {
        table(headers, items.iter().map(row).collect());
    }
    Ok(())
}

/// `rainstorm jobs`.
pub(super) fn jobs(jobs: &[JobInfo], json: bool) -> anyhow::Result<()> {
    let headers = [
        "ID",
        "NAME",
        "STATUS",
        "DELIVERY",
        "IN",
        "OUT",
        "RESTARTS",
        "SECONDS",
        "WAITING FOR",
    ];
    listing(jobs, json, &headers, |j| {
        vec![
            j.id.to_string(),
            j.name.clone().unwrap_or_default(),
            status_word(j.status),
            j.delivery.as_str().to_string(),
            j.source_tuples.to_string(),
            j.sink_tuples.to_string(),
            j.recoveries.to_string(),
            format!("{:.1}", j.elapsed_ms as f64 / 1000.0),
            j.pending_reason.clone().unwrap_or_else(|| "-".into()),
        ]
    })
}

/// `rainstorm tasks`.
pub(super) fn tasks(tasks: &[TaskInfo], json: bool) -> anyhow::Result<()> {
    let headers = [
        "JOB", "STAGE", "TASK", "WORKER", "PID", "STATE", "ATTEMPT", "IN", "OUT", "RATE/S",
        "QUEUE", "BUSY%", "BLOCKED%", "OPERATOR",
    ];
    listing(tasks, json, &headers, |t| {
        vec![
            t.job.to_string(),
            t.stage.to_string(),
            t.task.to_string(),
            t.worker.to_string(),
            t.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            task_state(t),
            t.attempt.to_string(),
            t.tuples_in.to_string(),
            t.tuples_out.to_string(),
            format!("{:.1}", t.input_rate),
            t.queued.to_string(),
            format!("{:.0}", t.busy * 100.0),
            format!("{:.0}", t.backpressured * 100.0),
            t.operator.clone(),
        ]
    })
}

/// A task's STATE cell: a running task that owns no key group is `standby`, so the tasks a
/// rescale added or retired stand out from those doing the work.
fn task_state(t: &TaskInfo) -> String {
    match t.state {
        TaskState::Running if t.standby => "standby".into(),
        state => status_word(state),
    }
}

/// The task counts owning key groups, stage by stage (`None` from a leader that does not say).
fn stage_tasks_line(j: &JobInfo) -> Option<String> {
    let counts: Vec<String> = j.stage_tasks.iter().map(u32::to_string).collect();
    (!counts.is_empty()).then(|| format!("{} (owning key groups)", counts.join(" → ")))
}

/// One rescale on one line: when (after the job's submission), which stage, from→to, how it
/// ended and how long it took, the stage's input rate then, and why (and why not).
fn scale_line(s: &ScaleInfo, submitted_ms: u64) -> String {
    let at = s.time_ms.saturating_sub(submitted_ms) as f64 / 1000.0;
    let mut line = format!(
        "+{at:.1}s  stage {}  {}→{}  {}",
        s.stage, s.from, s.to, s.outcome
    );
    if let Some(ms) = s.took_ms {
        line.push_str(&format!(" in {ms} ms"));
    }
    if let Some(r) = s.rate {
        line.push_str(&format!("  at {r:.1} tuples/s"));
    }
    line.push_str(&format!("  {}", s.reason));
    if let Some(cause) = &s.cause {
        line.push_str(&format!(" — {cause}"));
    }
    line
}

/// `rainstorm workers`.
pub(super) fn workers(workers: &[WorkerInfo], json: bool) -> anyhow::Result<()> {
    let headers = ["ID", "ADDRESS", "STATE", "LAST HEARTBEAT", "TASKS", "SLOTS"];
    listing(workers, json, &headers, |w| {
        vec![
            w.id.to_string(),
            w.address.clone(),
            status_word(w.state),
            format!("{:.1}s", w.last_heartbeat_s),
            w.running_tasks.to_string(),
            format!("{}/{}", w.slots_used, w.slots),
        ]
    })
}

/// `rainstorm job ID`.
pub(super) fn job(j: &JobInfo, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(j)?);
        return Ok(());
    }
    println!("id:         {}", j.id);
    println!(
        "name:       {}",
        shown(j.name.as_deref().unwrap_or_default())
    );
    println!("status:     {}", status_word(j.status));
    if let Some(e) = &j.error {
        println!("error:      {}", shown(e));
    }
    println!("delivery:   {}", j.delivery.as_str());
    println!("stages:     {}", shown(&j.stages.join(" → ")));
    if let Some(tasks) = stage_tasks_line(j) {
        println!("tasks:      {tasks}");
    }
    println!("sink:       {}", shown(&j.sink));
    match j.rate {
        r if r > 0.0 => println!("rate:       {r} tuples/s"),
        _ => println!("rate:       unthrottled"),
    }
    println!("tuples:     {} in, {} out", j.source_tuples, j.sink_tuples);
    if j.discarded_tuples > 0 {
        println!("discarded:  {}", discarded(j.discarded_tuples));
    }
    println!(
        "failures:   {} seen, {} recoveries",
        j.failures, j.recoveries
    );
    if let Some(f) = &j.last_failure {
        println!("last failure: {}", shown(f));
    }
    if let Some(why) = &j.pending_reason {
        println!("waiting:    {}", shown(why));
    }
    println!("elapsed:    {:.2} s", j.elapsed_ms as f64 / 1000.0);
    if let Some(l) = &j.latency_ms {
        println!(
            "latency:    p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            l.p50, l.p99, l.max
        );
    }
    if !j.scaling.is_empty() {
        println!("scaling:    (time after submission)");
        for s in &j.scaling {
            println!("  {}", scale_line(s, j.submitted_ms));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
