//! Unit tests of `commands`.

use super::{announce_start, exited, READ_REPORT_GAP};
use crate::model::ids::{JobId, TaskKey, TaskPos};
use crate::protocol::control::{TaskAssignment, TaskRole, TaskState};
use crate::runtime::task::TaskStatus;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A running source's lines read reach the leader within a tenth of a second, not at the
/// next heartbeat: the sink reports at each commit, and "tuples in" read below "out".
#[tokio::test(start_paused = true)]
async fn a_running_source_reports_its_lines_read_between_heartbeats() {
    let key = TaskKey {
        job: JobId("job-1".into()),
        pos: TaskPos { stage: 0, index: 0 },
    };
    let role = TaskRole::Source {
        path: "in.txt".into(),
        name: "in.txt".into(),
        rate: 100.0,
        filter: None,
    };
    let a = TaskAssignment {
        upstream: 0,
        ..TaskAssignment::sample(key, role)
    };
    let status = Arc::new(TaskStatus::of(&a));
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let announcing = tokio::spawn(announce_start(a, status.clone(), tx));
    status.set_state(TaskState::Running);
    let started = rx.recv().await.expect("its start is reported");
    assert_eq!(started.tuples_in, 0);
    for read in [120u64, 250] {
        status.source.lines.store(read, Ordering::Relaxed);
        let told = tokio::time::timeout(READ_REPORT_GAP * 2, rx.recv())
            .await
            .expect("its lines read are reported before a heartbeat would")
            .expect("the reporter lives");
        assert_eq!(told.tuples_in, read);
    }
    // Nothing new read: nothing more said.
    let quiet = tokio::time::timeout(READ_REPORT_GAP * 5, rx.recv()).await;
    assert!(quiet.is_err(), "{quiet:?}");
    status.set_state(TaskState::Cancelled);
    tokio::time::timeout(READ_REPORT_GAP * 3, announcing)
        .await
        .expect("it stops with its attempt")
        .expect("no panic");
}
use std::time::{Duration, Instant};

/// A kill-task that reached an operator drained but not reaped would signal a zombie and
/// report the kill done; the worker tells such a process from a live one.
#[test]
fn an_exited_process_not_yet_reaped_is_told_from_a_live_one() {
    let mut live = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    assert!(!exited(live.id()), "a sleeping process is alive");
    let mut done = std::process::Command::new("true").spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !exited(done.id()) {
        assert!(Instant::now() < deadline, "`true` never became a zombie");
        std::thread::sleep(Duration::from_millis(5));
    }
    done.wait().unwrap();
    assert!(!exited(done.id()), "a reaped pid is no zombie of ours");
    live.kill().unwrap();
    live.wait().unwrap();
}
