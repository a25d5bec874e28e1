//! Unit tests of `adopt`.

use super::*;
use crate::job::JobRec;
use crate::model::ids::{TaskKey, TaskPos};
use crate::model::spec::{JobSpec, OperatorSpec, StageSpec};
use crate::protocol::control::{TaskReport, TaskState};
use crate::state::{State, TaskRec};

/// A job whose stage 1 is a `count-by`, its task 1.0 running on `w1`, its driver's inbox kept.
fn running() -> (State, tokio::sync::mpsc::Receiver<Input>, TaskKey) {
    let spec = JobSpec::sample(vec![StageSpec {
        tasks: 1,
        operator: OperatorSpec::Builtin {
            name: "count-by".into(),
            args: vec!["1".into()],
        },
        autoscale: Default::default(),
        stateless: false,
    }]);
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let (_, progress) = tokio::sync::watch::channel(Default::default());
    let job = JobId("job-1".into());
    let mut st = State::default();
    let rec = JobRec::new(
        spec.clone(),
        tx,
        tokio_util::sync::CancellationToken::new(),
        progress,
    );
    st.add_job(job.clone(), rec);
    let key = TaskKey {
        job,
        pos: TaskPos { stage: 1, index: 0 },
    };
    let w = WorkerId("w1".into());
    st.tasks.insert(
        key.clone(),
        TaskRec::placed(w, 0, TaskState::Running, &spec, 1),
    );
    (st, rx, key)
}

fn report(key: &TaskKey, handed: u32) -> TaskReport {
    TaskReport {
        key: key.clone(),
        attempt: 0,
        pid: None,
        state: TaskState::Running,
        tuples_in: 5,
        tuples_out: 5,
        error: None,
        unrecoverable: false,
        queued: 0,
        latency: None,
        done: false,
        meters: Default::default(),
        switched: None,
        handed,
        commits: 0,
        discarded: 0,
        store_wait_ms: 0,
        finishing: false,
        in_operator: false,
        unreached: None,
    }
}

/// A key group's state handed over while the leader was away reaches the restarted leader's
/// core with the rejoin, after it: the report that says so is applied there, so when it is
/// repeated it is no longer new. (It was dropped: the stage could never be rescaled again.)
#[test]
fn what_a_rejoining_task_reports_reaches_the_core_after_the_rejoin() {
    let (mut st, _rx, key) = running();
    let w = WorkerId("w1".into());
    let inputs = adopt(&mut st, &w, vec![report(&key, 1)]);
    let kinds: Vec<String> = inputs
        .iter()
        .map(|(_, i)| match i {
            Input::Rejoined { reports, .. } => format!("rejoined {}", reports.len()),
            Input::HandedOver { pos, version } => format!("handed {pos} {version}"),
            _ => "other".into(),
        })
        .collect();
    assert_eq!(kinds, ["rejoined 1", "handed 1.0 1"]);
    // The same report again, as every later one repeats it, is not new.
    assert!(st
        .take_report(&w, report(&key, 1), Instant::now())
        .is_none());
}
