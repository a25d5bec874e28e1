use super::*;
use serde_json::json;

fn task(state: &str, standby: bool) -> TaskInfo {
    serde_json::from_value(json!({
        "job": "job-1", "stage": 1, "task": 0, "worker": "w1", "pid": null, "state": state,
        "attempt": 0, "standby": standby, "restarts": 0, "tuples_in": 0, "tuples_out": 0,
        "input_rate": 0.0, "operator": "identity", "error": null
    }))
    .unwrap()
}

fn scale(outcome: &str, took_ms: Option<u64>, rate: Option<f64>, cause: Option<&str>) -> ScaleInfo {
    ScaleInfo {
        time_ms: 1_012_345,
        stage: 2,
        from: 1,
        to: 4,
        rate,
        reason: "input 600.0/s per task above HW 150".into(),
        outcome: outcome.into(),
        cause: cause.map(str::to_string),
        took_ms,
    }
}

#[test]
fn a_running_task_that_owns_no_key_group_shows_as_standby() {
    assert_eq!(task_state(&task("running", true)), "standby");
    assert_eq!(task_state(&task("running", false)), "running");
    // Any other state is the state: a standby task that failed shows as failed.
    assert_eq!(task_state(&task("failed", true)), "failed");
    assert_eq!(task_state(&task("starting", true)), "starting");
}

#[test]
fn the_task_counts_owning_key_groups_are_listed_stage_by_stage() {
    let mut j: JobInfo = serde_json::from_value(json!({
        "id": "job-1", "name": null, "status": "running", "error": null,
        "delivery": "exactly-once", "stages": ["1×identity", "2×count-by 1"], "sink": "out.txt",
        "source_tuples": 0, "sink_tuples": 0, "failures": 0, "recoveries": 0,
        "submitted_ms": 0, "elapsed_ms": 0, "latency_ms": null
    }))
    .unwrap();
    assert_eq!(stage_tasks_line(&j), None, "a leader that does not say");
    j.stage_tasks = vec![4, 2];
    assert_eq!(
        stage_tasks_line(&j).as_deref(),
        Some("4 → 2 (owning key groups)")
    );
}

#[test]
fn a_rescale_is_one_line_with_its_time_outcome_duration_rate_and_reason() {
    let done = scale("done", Some(312), Some(600.04), None);
    assert_eq!(
        scale_line(&done, 1_000_000),
        "+12.3s  stage 2  1→4  done in 312 ms  at 600.0 tuples/s  input 600.0/s per task above HW 150"
    );
    let refused = ScaleInfo {
        reason: "requested".into(),
        ..scale("refused", None, None, Some("2 free slots, 3 needed"))
    };
    assert_eq!(
        scale_line(&refused, 1_000_000),
        "+12.3s  stage 2  1→4  refused  requested — 2 free slots, 3 needed"
    );
    // A rescale this leader saw start before the job's submission time it knows (a clock
    // step) does not underflow.
    assert!(scale_line(&done, 2_000_000).starts_with("+0.0s  "));
}

/// A probe named a job `x\n<fake row>` and `\x1b[2J…`: what clients sent is shown escaped,
/// one line, no terminal control.
#[test]
fn what_clients_sent_is_shown_without_control_characters() {
    assert_eq!(shown("app1"), "app1");
    assert_eq!(shown("a\nb"), "a\\nb");
    assert_eq!(shown("\u{1b}[2Jgone"), "\\u{1b}[2Jgone");
    assert_eq!(shown("tab\there"), "tab\\there");
    assert_eq!(shown("ünï"), "ünï");
}

fn ended(status: &str, error: Option<&str>) -> JobInfo {
    serde_json::from_value(json!({
        "id": "job-7", "name": null, "status": status, "error": error,
        "delivery": "exactly-once", "stages": ["1×identity"], "sink": "out.txt",
        "source_tuples": 120, "sink_tuples": 80, "failures": 0, "recoveries": 0,
        "submitted_ms": 0, "elapsed_ms": 2500, "latency_ms": null
    }))
    .unwrap()
}

/// A failed job's line has the form of every other, its cause after it, with control
/// characters escaped (it had Rust's spelling of the status: `job-7 Failed: …`).
#[test]
fn a_final_status_has_one_form_and_a_failure_adds_its_cause() {
    assert_eq!(
        status_line(&ended("succeeded", None)),
        "job job-7 succeeded (120 tuples in, 80 lines out, 2.50 s)"
    );
    assert_eq!(
        status_line(&ended("failed", Some("operator exited 3\n\u{1b}[2J"))),
        "job job-7 failed (120 tuples in, 80 lines out, 2.50 s): operator exited 3\\n\\u{1b}[2J"
    );
}

/// A cancel says what it did: cancelled, found the job ended, or could not wait for its end.
#[test]
fn a_cancel_says_whether_it_ended_the_job() {
    let said = |status, already_ended| {
        let c = Cancelled {
            status,
            already_ended,
        };
        cancelled("job-7", &c)
    };
    assert_eq!(
        said(Some(JobStatus::Cancelled), false),
        "job job-7 cancelled"
    );
    assert_eq!(
        said(Some(JobStatus::Succeeded), true),
        "job job-7 had already ended (succeeded); nothing to cancel"
    );
    assert_eq!(
        said(Some(JobStatus::Failed), false),
        "job job-7 ended (failed) before the cancel took effect"
    );
    assert!(said(Some(JobStatus::Running), false).contains("has not ended yet"));
    assert!(said(None, false).contains("requested"));
}
