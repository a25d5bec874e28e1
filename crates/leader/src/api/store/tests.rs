//! Unit tests of `store`.

use super::*;
use crate::job::JobRec;
use crate::model::ids::{JobId, TaskKey, TaskPos};
use crate::model::spec::{JobSpec, OperatorSpec, StageSpec};
use crate::protocol::control::JobStatus;
use crate::protocol::control::TaskState;
use crate::state::TaskRec;
use may_write::may_write;
use rainstorm_store::log::{fence_path, segment_path};

fn key(job: &str, stage: u32) -> TaskKey {
    TaskKey {
        job: JobId(job.into()),
        pos: TaskPos { stage, index: 0 },
    }
}

/// Job `job-1` running (output `o.txt`), its stage 1 placed on `w1`, its stage 2 on `w2`
/// and its sink (stage 3) on `w3`.
fn state() -> LeaderState {
    let spec = JobSpec::sample(vec![
        StageSpec {
            tasks: 1,
            operator: OperatorSpec::Builtin {
                name: "identity".into(),
                args: vec![],
            },
            autoscale: Default::default(),
            stateless: false,
        };
        2
    ]);
    let mut st = LeaderState::default();
    for (stage, w) in [(1, "w1"), (2, "w2"), (3, "w3")] {
        let rec = TaskRec::placed(WorkerId(w.into()), 0, TaskState::Running, &spec, stage);
        st.tasks.insert(key("job-1", stage), rec);
    }
    st.add_job(JobId("job-1".into()), JobRec::detached(spec));
    st
}

#[test]
fn a_bulk_delete_is_refused_whole_if_one_object_is_not_the_worker_s_own_log() {
    let st = state();
    let w1 = WorkerId("w1".into());
    let mine = key("job-1", 1);
    let own: Vec<String> = (0..3).map(|n| segment_path(&mine, 0, n)).collect();
    assert_eq!(may_delete_all(&st, Some(&w1), &own), None);
    // Another worker's segment, or the job's output, among them.
    for other in [segment_path(&key("job-1", 2), 0, 0), "o.txt".to_string()] {
        let mut paths = own.clone();
        paths.insert(1, other.clone());
        assert_eq!(may_delete_all(&st, Some(&w1), &paths), Some(other));
    }
}

#[test]
fn a_worker_writes_only_the_input_logs_of_its_own_tasks_of_running_jobs() {
    let mut st = state();
    let w1 = WorkerId("w1".into());
    let mine = key("job-1", 1);
    // Its own task's segments, manifests and fences.
    for p in [segment_path(&mine, 0, 3), fence_path(&mine, 0)] {
        assert_eq!(may_write(&st, Some(&w1), &p), Ok(WorkerWrite::Log), "{p}");
    }
    // Another worker's task, a task that does not exist, anything outside the logs.
    for p in [
        segment_path(&key("job-1", 2), 0, 0),
        segment_path(&key("job-9", 1), 0, 0),
        "in.txt".to_string(),
        "o.txt".to_string(),
        "blobs/sha256/x".to_string(),
        "logs/job-1/forged".to_string(),
    ] {
        assert!(may_write(&st, Some(&w1), &p).is_err(), "{p}");
    }
    // The job's output: only the worker that runs its sink.
    assert_eq!(
        may_write(&st, Some(&WorkerId("w3".into())), "o.txt"),
        Ok(WorkerWrite::Output(JobId("job-1".into())))
    );
    assert!(may_write(&st, Some(&WorkerId("w2".into())), "./o.txt").is_err());
    // Once the job has ended, not even its own task's log, nor its output.
    if let Some(j) = st.jobs.get_mut(&JobId("job-1".into())) {
        j.end(JobStatus::Cancelled, None, std::time::SystemTime::now());
    }
    assert!(may_write(&st, Some(&WorkerId("w3".into())), "o.txt").is_err());
    assert!(may_write(&st, Some(&w1), &segment_path(&mine, 0, 4)).is_err());
    // A leader without a secret has no registrations to tell apart: logs only.
    assert_eq!(
        may_write(&st, None, &segment_path(&mine, 0, 4)),
        Ok(WorkerWrite::Log)
    );
    assert!(may_write(&st, None, "in.txt").is_err());
}

#[test]
fn the_output_of_an_ending_job_is_refused_to_its_sink() {
    let st = state();
    let w3 = WorkerId("w3".into());
    let sink = rainstorm_store::store::claim(&key("job-1", 3), 0);
    let admitted = admit_worker_write(&st, Some(&w3), "o.txt", Some(&sink));
    assert!(
        matches!(admitted, Ok(Some(_))),
        "the sink writes the output"
    );
    assert!(matches!(
        admit_worker_write(
            &st,
            Some(&WorkerId("w1".into())),
            &segment_path(&key("job-1", 1), 0, 0),
            None
        ),
        Ok(None)
    ));
    // Cleanup started: the job is still running, but its output is the leader's to write.
    let closing = st
        .jobs
        .get(&JobId("job-1".into()))
        .map(|j| j.output.close());
    assert!(closing.is_some());
    match admit_worker_write(&st, Some(&w3), "o.txt", Some(&sink)) {
        Err(r) => assert_eq!(r.status(), StatusCode::CONFLICT),
        Ok(_) => panic!("a sink write after cleanup started was admitted"),
    }
    if let Ok(Some(w)) = admitted {
        assert!(
            w.closed.is_cancelled(),
            "the admitted write is told to stop"
        );
    }
}

#[tokio::test]
async fn an_output_body_fails_when_its_job_starts_ending_even_while_it_waits() {
    // A body whose next chunk never comes (a sink still reading its log).
    let (tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let closed = CancellationToken::new();
    let mut body = Box::pin(until_closed(Body::from_stream(rx), closed.clone()));
    let mut tx = tx;
    futures::SinkExt::send(&mut tx, Ok(Bytes::from_static(b"a\n")))
        .await
        .unwrap();
    assert_eq!(&body.next().await.unwrap().unwrap()[..], b"a\n");
    let next = tokio::spawn(async move {
        let item = body.next().await;
        (
            item.map(|r| r.map_err(|e| e.to_string())),
            body.next().await.is_none(),
        )
    });
    closed.cancel();
    let (item, ended) = next.await.unwrap();
    let err = item.expect("an error, not an end").unwrap_err();
    assert!(err.contains("ending"), "{err}");
    assert!(ended, "nothing after the error");
    drop(tx);
    // A body that ends before the close ends as it is.
    let open = CancellationToken::new();
    let whole = until_closed(Body::from("xy"), open);
    let chunks: Vec<_> = whole.collect().await;
    assert_eq!(chunks.len(), 1);
    assert_eq!(&chunks[0].as_ref().unwrap()[..], b"xy");
}

/// A job's output is written only by its current sink attempt, named by the write: a sink
/// attempt replaced on the same worker, or another job's, is refused however late it writes
/// (hostile probe 15).
#[test]
fn an_output_is_written_only_by_the_current_sink_attempt_it_names() {
    let mut st = state();
    let w3 = WorkerId("w3".into());
    let sink = key("job-1", 3);
    let named = |attempt| rainstorm_store::store::claim(&sink, attempt);
    let output = Ok(WorkerWrite::Output(JobId("job-1".into())));
    assert_eq!(
        may_write_claimed(&st, Some(&w3), "o.txt", Some(&named(0))),
        output
    );
    // No attempt named, another job's task, another stage's.
    for claim in [
        None,
        Some(rainstorm_store::store::claim(&key("job-2", 3), 0)),
        Some(rainstorm_store::store::claim(&key("job-1", 2), 0)),
    ] {
        let said = may_write_claimed(&st, Some(&w3), "o.txt", claim.as_deref());
        assert!(said.is_err(), "{claim:?}: {said:?}");
    }
    // The sink restarted on the same worker: attempt 0 is refused, attempt 1 admitted.
    if let Some(t) = st.tasks.get_mut(&sink) {
        t.attempt = 1;
    }
    let late = may_write_claimed(&st, Some(&w3), "o.txt", Some(&named(0))).unwrap_err();
    assert!(
        late.contains("current sink attempt (job-1/3.0@1)"),
        "{late}"
    );
    assert_eq!(
        may_write_claimed(&st, Some(&w3), "o.txt", Some(&named(1))),
        output
    );
    // Logs are not claimed; a leader without a secret has no registrations to tell apart.
    let log = segment_path(&key("job-1", 1), 0, 0);
    let w1 = WorkerId("w1".into());
    assert_eq!(
        may_write_claimed(&st, Some(&w1), &log, None),
        Ok(WorkerWrite::Log)
    );
    assert_eq!(may_write_claimed(&st, None, "o.txt", None), output);
}
