//! Unit tests of `persist`.

use super::*;
use crate::coordinator::routing::StageRouting;
use crate::model::groups::GroupMap;
use crate::model::ids::TaskPos;
use crate::model::spec::{Delivery, PathMode};
use crate::protocol::auth::Identity;
use crate::protocol::control::{Dest, Endpoint};
use crate::protocol::reroute::SwitchPoint;

fn key() -> PeerKey {
    Identity::from_seed([4; 32]).unwrap().public()
}

fn job(id: &str, status: JobStatus) -> StoredJob {
    StoredJob {
        id: JobId(id.into()),
        spec: JobSpec {
            name: Some("t".into()),
            delivery: Delivery::ExactlyOnce,
            source_path: "in.txt".into(),
            source_name: "in.txt".into(),
            rate: 0.0,
            sink_path: "o.txt".into(),
            stages: vec![],
            paths: PathMode::Store,
            keep_logs: false,
            autoscale: None,
            limits: Default::default(),
        },
        status,
        error: None,
        source_tuples: 3,
        sink_tuples: 2,
        failures: 1,
        recoveries: 1,
        last_failure: Some("task 1.0 attempt 0: boom".into()),
        submitted_ms: 1000,
        ended_ms: None,
        tasks: vec![],
        operator_names: Default::default(),
        cleanup_error: None,
        logs_left: true,
        output_replaced: None,
        latency: None,
        discarded: 4,
        run: Some(RunState {
            epoch: 1,
            version: 7,
            tasks: vec![PlacedTask {
                pos: TaskPos { stage: 1, index: 0 },
                worker: Some(WorkerId("w2".into())),
                dest: Dest::running(
                    &Endpoint {
                        addr: "127.0.0.1:9".into(),
                        key: key(),
                    },
                    3,
                ),
            }],
            // A rescaled stage's maps and switch points are part of the placement.
            routing: [(2, {
                let mut r = StageRouting::starting(GroupMap::even(2), 0);
                r.begin(GroupMap::even(3));
                if let Some(v) = r.pending_mut() {
                    v.at.insert(
                        0,
                        SwitchPoint {
                            outputs: 12,
                            sent: vec![5, 7, 0],
                        },
                    );
                }
                r
            })]
            .into_iter()
            .collect(),
            // Which tasks handed their lost groups' state over, for which version.
            handed: vec![(TaskPos { stage: 2, index: 1 }, 1)],
        }),
        // The job's rescales so far survive the leader too.
        scaling: vec![crate::protocol::control::ScaleInfo {
            time_ms: 1500,
            stage: 2,
            from: 2,
            to: 3,
            rate: Some(812.5),
            reason: "input 812/s over 2 tasks".into(),
            outcome: "done".into(),
            cause: None,
            took_ms: Some(40),
        }],
    }
}

#[test]
fn the_counter_and_the_records_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leader.redb");
    {
        let db = RedbJobs::open(&path, true).unwrap();
        assert_eq!(db.next_number("job").unwrap(), 1);
        assert_eq!(db.next_number("job").unwrap(), 2);
        assert_eq!(db.next_number("worker").unwrap(), 1);
        db.put_job(&job("job-1-aaaaaa", JobStatus::Running))
            .unwrap();
        db.put_job(&job("job-2-bbbbbb", JobStatus::Running))
            .unwrap();
        let mut done = job("job-1-aaaaaa", JobStatus::Succeeded);
        done.ended_ms = Some(2000);
        db.put_job(&done).unwrap();
        db.remove_job(&JobId("job-2-bbbbbb".into())).unwrap();
        let w1 = KnownWorker {
            data_addr: "127.0.0.1:7".into(),
            key: Some(key()),
        };
        db.put_worker(&WorkerId("w1".into()), &w1).unwrap();
        // A record from before worker keys: its address alone.
        let tx = db.db.begin_write().unwrap();
        tx.open_table(WORKERS)
            .unwrap()
            .insert("w0", "127.0.0.1:6")
            .unwrap();
        tx.commit().unwrap();
    }
    let db = RedbJobs::open(&path, true).unwrap();
    assert_eq!(db.next_number("job").unwrap(), 3);
    assert_eq!(db.next_number("worker").unwrap(), 2);
    let jobs = db.load_jobs().unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].status, JobStatus::Succeeded);
    assert_eq!(jobs[0].ended_ms, Some(2000));
    assert_eq!(jobs[0], job_done_expected());
    assert_eq!(
        db.load_workers().unwrap(),
        vec![
            (
                WorkerId("w0".into()),
                KnownWorker {
                    data_addr: "127.0.0.1:6".into(),
                    key: None
                }
            ),
            (
                WorkerId("w1".into()),
                KnownWorker {
                    data_addr: "127.0.0.1:7".into(),
                    key: Some(key())
                }
            )
        ]
    );
}

fn job_done_expected() -> StoredJob {
    let mut j = job("job-1-aaaaaa", JobStatus::Succeeded);
    j.ended_ms = Some(2000);
    j
}

#[test]
fn a_second_lock_on_the_same_dir_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let first = DirLock::acquire(dir.path()).unwrap();
    let err = DirLock::acquire(dir.path()).unwrap_err().to_string();
    assert!(err.contains("in use by another leader"), "{err}");
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
    drop(first);
    DirLock::acquire(dir.path()).unwrap();
}

/// A job a restarted leader carries on counts its time from its submission, as recorded, not
/// from when the new leader took it over (a probe saw 6.3 s for a job that ran 11.3 s).
#[tokio::test]
async fn a_carried_on_job_s_elapsed_time_counts_from_its_submission() {
    let mut stored = job("job-9", JobStatus::Running);
    let ten_s_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(10);
    stored.submitted_ms = ten_s_ago
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let (events, _rx) = tokio::sync::mpsc::channel(1);
    let (_tx, progress) = tokio::sync::watch::channel(Default::default());
    let cancel = tokio_util::sync::CancellationToken::new();
    let rec = crate::job::JobRec::resumed(&stored, events, cancel, progress);
    let mut st = crate::state::State::default();
    st.add_job(stored.id.clone(), rec);
    let info = st.job_info(&stored.id).unwrap();
    assert!(
        (10_000..60_000).contains(&info.elapsed_ms),
        "elapsed {} ms for a job submitted 10 s ago",
        info.elapsed_ms
    );
}

/// A scratch database (`rainstorm run`'s, commits not synced) reads back what it was given
/// while it is open, as a durable one does.
#[test]
fn a_scratch_database_reads_back_its_records_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = RedbJobs::open(&dir.path().join("leader.redb"), false).unwrap();
    assert_eq!(db.next_number("job").unwrap(), 1);
    assert_eq!(db.next_number("job").unwrap(), 2);
    db.put_job(&job("job-1-aaaaaa", JobStatus::Running))
        .unwrap();
    let mut done = job("job-1-aaaaaa", JobStatus::Succeeded);
    done.ended_ms = Some(2000);
    db.put_job(&done).unwrap();
    let jobs = db.load_jobs().unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].status, JobStatus::Succeeded);
}
