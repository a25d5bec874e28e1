//! Unit tests of `state`.

use super::*;
use crate::model::ids::TaskPos;
use crate::model::spec::{JobSpec, OperatorSpec, StageSpec};

fn jobs() -> BTreeMap<JobId, JobRec> {
    let stage = |operator| StageSpec {
        tasks: 1,
        operator,
        autoscale: Default::default(),
        stateless: false,
    };
    let spec = JobSpec::sample(vec![
        stage(OperatorSpec::Builtin {
            name: "identity".into(),
            args: vec![],
        }),
        stage(OperatorSpec::Exec {
            path: "ops/op.sh".into(),
            args: vec![],
        }),
    ]);
    let rec = JobRec::detached(spec);
    BTreeMap::from([(JobId("job-1".into()), rec)])
}

fn key(stage: u32) -> TaskKey {
    TaskKey {
        job: JobId("job-1".into()),
        pos: TaskPos { stage, index: 0 },
    }
}

/// A running attempt's report with nothing counted yet.
fn running(key: TaskKey, attempt: u32) -> crate::protocol::control::TaskReport {
    crate::protocol::control::TaskReport {
        key,
        attempt,
        pid: None,
        state: TaskState::Running,
        tuples_in: 0,
        tuples_out: 0,
        error: None,
        unrecoverable: false,
        queued: 0,
        latency: None,
        done: false,
        meters: Default::default(),
        switched: None,
        handed: 0,
        commits: 0,
        discarded: 0,
        store_wait_ms: 0,
        finishing: false,
        in_operator: false,
        unreached: None,
    }
}

#[test]
fn a_forged_pid_for_a_builtin_task_or_a_pid_naming_a_group_is_ignored() {
    let jobs = jobs();
    // Stage 1 is a built-in: it has no process, whatever a report says.
    assert_eq!(reported_pid(&jobs, &key(1), Some(0)), None);
    assert_eq!(reported_pid(&jobs, &key(1), Some(4242)), None);
    // Stage 2 runs an executable: only a pid naming one process counts.
    for bad in [0, 1, u32::MAX, i32::MAX as u32 + 1] {
        assert_eq!(reported_pid(&jobs, &key(2), Some(bad)), None, "{bad}");
    }
    assert_eq!(reported_pid(&jobs, &key(2), Some(4242)), Some(4242));
    // Source, sink and unknown jobs have no operator process.
    assert_eq!(reported_pid(&jobs, &key(0), Some(4242)), None);
    assert_eq!(reported_pid(&jobs, &key(3), Some(4242)), None);
}

/// A job's tuples in are the most any attempt of its source read: a restarted source counts
/// from its first line again (a probe saw a succeeded job report 65,442 of 200,000 lines).
/// They are the lines it read (its tuples in), not the fewer it routed past the first
/// stage's filter pushed into it (its tuples out).
#[test]
fn a_restarted_source_does_not_lower_the_job_s_tuples_in() {
    let jobs = jobs();
    let report = |attempt, read: u64| crate::protocol::control::TaskReport {
        tuples_in: read,
        tuples_out: read / 3,
        ..running(key(0), attempt)
    };
    let tuples_in = || {
        jobs[&JobId("job-1".into())]
            .source_tuples
            .load(Ordering::Relaxed)
    };
    job_counters(&jobs, &report(0, 200_000));
    assert_eq!(tuples_in(), 200_000);
    job_counters(&jobs, &report(1, 65_442));
    assert_eq!(tuples_in(), 200_000);
    job_counters(&jobs, &report(1, 200_000));
    assert_eq!(tuples_in(), 200_000);
    // The sink's lines out likewise: a new attempt that has not replayed yet holds 0.
    let sink = |attempt, tuples_in| crate::protocol::control::TaskReport {
        key: key(3),
        tuples_in,
        ..report(attempt, 0)
    };
    let lines_out = || {
        jobs[&JobId("job-1".into())]
            .sink_tuples
            .load(Ordering::Relaxed)
    };
    job_counters(&jobs, &sink(0, 5_000));
    job_counters(&jobs, &sink(1, 0));
    assert_eq!(lines_out(), 5_000);
}

#[test]
fn a_registration_challenge_is_good_once_and_only_for_a_while() {
    let mut c = Challenges::default();
    let t0 = Instant::now();
    c.issue("aa".into(), t0);
    c.issue("bb".into(), t0);
    assert!(!c.take("cc", t0), "never handed out");
    assert!(c.take("aa", t0));
    assert!(!c.take("aa", t0), "spent");
    assert!(!c.take("bb", t0 + CHALLENGE_TTL), "expired");
    for i in 0..CHALLENGES_KEPT + 10 {
        c.issue(format!("{i}"), t0);
    }
    assert!(c.0.len() <= CHALLENGES_KEPT, "bounded");
    assert!(!c.take("0", t0), "the oldest were forgotten");
    assert!(c.take(&format!("{}", CHALLENGES_KEPT + 9), t0));
}

/// A sink's report of a group commit its job's followers have not seen wakes them, once; the
/// same report again, another task's, or no commit at all does not.
#[test]
fn a_sink_s_new_commit_wakes_its_followers_once() {
    let jobs = jobs();
    let mut seen = jobs[&JobId("job-1".into())].commits.subscribe();
    let report = |stage, attempt, commits| crate::protocol::control::TaskReport {
        commits,
        ..running(key(stage), attempt)
    };
    sink_committed(&jobs, &report(3, 0, 0));
    assert!(!seen.has_changed().unwrap(), "no commit yet");
    sink_committed(&jobs, &report(3, 0, 1));
    assert!(seen.has_changed().unwrap());
    seen.mark_unchanged();
    sink_committed(&jobs, &report(3, 0, 1));
    sink_committed(&jobs, &report(2, 0, 7));
    assert!(
        !seen.has_changed().unwrap(),
        "seen already, or not the sink"
    );
    // A new attempt counts its commits from 1 again: still new.
    sink_committed(&jobs, &report(3, 1, 1));
    assert!(seen.has_changed().unwrap());
}

/// A cancelled job's source reports what it read last after the job's end: its tuples in
/// take it (a probe's cancelled jobs kept 1,060 in for 1,155 lines out), while its lines out
/// stay its output's.
#[test]
fn a_source_s_last_count_after_a_cancel_still_counts_but_lines_out_stay_final() {
    let mut jobs = jobs();
    let id = JobId("job-1".into());
    let report = |stage: u32, n: u64| crate::protocol::control::TaskReport {
        tuples_in: n,
        state: TaskState::Cancelled,
        ..running(key(stage), 0)
    };
    job_counters(&jobs, &report(0, 1_060));
    job_counters(&jobs, &report(3, 1_155));
    if let Some(j) = jobs.get_mut(&id) {
        j.end(
            crate::protocol::control::JobStatus::Cancelled,
            None,
            std::time::SystemTime::now(),
        );
    }
    job_counters(&jobs, &report(0, 1_201));
    job_counters(&jobs, &report(3, 9_999));
    let j = &jobs[&id];
    assert_eq!(j.source_tuples.load(Ordering::Relaxed), 1_201);
    assert_eq!(j.sink_tuples.load(Ordering::Relaxed), 1_155);
}

/// A running job of one `identity` stage (its driver's inbox kept open in `State`'s record,
/// the receiver returned so it stays open), with no task placed yet.
fn running_job() -> (
    State,
    JobSpec,
    JobId,
    tokio::sync::mpsc::Receiver<crate::coordinator::Input>,
) {
    let spec = JobSpec::sample(vec![StageSpec {
        tasks: 1,
        operator: OperatorSpec::Builtin {
            name: "identity".into(),
            args: vec![],
        },
        autoscale: Default::default(),
        stateless: false,
    }]);
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let (_, progress) = tokio::sync::watch::channel(Default::default());
    let job = JobId("job-1".into());
    let mut st = State::default();
    st.add_job(
        job.clone(),
        JobRec::new(
            spec.clone(),
            tx,
            tokio_util::sync::CancellationToken::new(),
            progress,
        ),
    );
    (st, spec, job, rx)
}

/// A job whose task's input-log write waits for the store says so in its views at once (a
/// store outage froze a job with no reason shown until the stall detector's 60 s, which then
/// blamed a peer; hostile probe 9), and stops saying so once the write went through.
#[test]
fn a_task_waiting_for_the_store_is_the_job_s_waiting_reason() {
    let (mut st, spec, job, _rx) = running_job();
    let w = WorkerId("w1".into());
    st.tasks.insert(
        key(2),
        TaskRec::placed(w.clone(), 0, TaskState::Running, &spec, 2),
    );
    let waiting = |ms| crate::protocol::control::TaskReport {
        store_wait_ms: ms,
        finishing: false,
        in_operator: false,
        ..running(key(2), 0)
    };
    let reason = |st: &State| st.job_info(&job).and_then(|j| j.pending_reason);
    st.take_report(&w, waiting(1_000), Instant::now());
    assert_eq!(
        reason(&st),
        None,
        "a slow write is not a wait worth showing"
    );
    st.take_report(&w, waiting(12_400), Instant::now());
    assert_eq!(
        reason(&st).as_deref(),
        Some("task 2.0 has waited 12 s for the store to take its input-log write")
    );
    let shown = st.tasks_info();
    assert_eq!(shown[0].store_wait_s, 12.4);
    st.take_report(&w, waiting(0), Instant::now());
    assert_eq!(reason(&st), None);
}

/// A task whose links cannot reach a task they send to (a cut between two workers) is the
/// job's waiting reason once it has tried for 2 s, naming both tasks and the receiver's
/// worker; the stall detector's reason came only after a minute.
#[test]
fn a_task_that_cannot_reach_its_receiver_is_the_job_s_waiting_reason() {
    let (mut st, spec, job, _rx) = running_job();
    let (w1, w2) = (WorkerId("w1".into()), WorkerId("w2".into()));
    st.tasks.insert(
        key(1),
        TaskRec::placed(w1.clone(), 0, TaskState::Running, &spec, 1),
    );
    st.tasks
        .insert(key(2), TaskRec::placed(w2, 0, TaskState::Running, &spec, 2));
    let cut = |ms| crate::protocol::control::TaskReport {
        unreached: Some((TaskPos { stage: 2, index: 0 }, ms)),
        ..running(key(1), 0)
    };
    let reason = |st: &State| st.job_info(&job).and_then(|j| j.pending_reason);
    st.take_report(&w1, cut(300), Instant::now());
    assert_eq!(reason(&st), None, "a connection being made is no wait");
    st.take_report(&w1, cut(7_200), Instant::now());
    assert_eq!(
        reason(&st).as_deref(),
        Some("task 1.0 has tried for 7 s to reach task 2.0 on worker w2")
    );
    st.take_report(
        &w1,
        crate::protocol::control::TaskReport {
            unreached: None,
            ..running(key(1), 0)
        },
        Instant::now(),
    );
    assert_eq!(reason(&st), None);
}
