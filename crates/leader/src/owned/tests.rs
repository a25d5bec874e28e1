//! Unit tests of `owned`.

use super::*;
use crate::job::JobRec;
use crate::model::spec::{Delivery, StageSpec};
use rainstorm_store::output::SinkProgress;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

fn spec(source: &str, sink: &str) -> JobSpec {
    JobSpec {
        name: None,
        delivery: Delivery::ExactlyOnce,
        source_path: source.into(),
        source_name: source.into(),
        rate: 0.0,
        sink_path: sink.into(),
        stages: vec![StageSpec {
            tasks: 1,
            operator: OperatorSpec::Exec {
                path: "ops/op.sh".into(),
                args: vec![],
            },
            autoscale: Default::default(),
            stateless: false,
        }],
        paths: PathMode::Store,
        keep_logs: false,
        autoscale: None,
        limits: Default::default(),
    }
}

/// Claims the files of a job as `Leader::submit` does, and records it running.
fn submit(st: &mut State, id: &str, source: &str, sink: &str) -> Result<(), FileConflict> {
    let spec = spec(source, sink);
    let id = JobId(id.into());
    st.claim_files(&id, job_files(&spec, &[]))?;
    let (tx, _) = mpsc::channel(1);
    let (_, progress) = watch::channel(SinkProgress::default());
    let rec = JobRec::new(spec, tx, CancellationToken::new(), progress);
    st.add_job(id, rec);
    Ok(())
}

#[test]
fn a_job_submitted_while_a_delete_runs_cannot_claim_what_it_deletes() {
    let mut st = State::default();
    submit(&mut st, "job-1", "a/in.txt", "out/a.txt").unwrap();
    // A delete of anything a running job uses is refused and holds nothing.
    for busy in ["a", "a/in.txt", "out", "ops/op.sh", "ops"] {
        let err = st.begin_delete(busy).unwrap_err().0;
        assert!(
            err.contains("job-1") && err.contains("nothing was deleted"),
            "{err}"
        );
    }
    assert!(st.files.deleting.is_empty());
    // While `b` is being deleted, no job may read or write anything under it.
    st.begin_delete("b").unwrap();
    for (source, sink) in [
        ("b/in.txt", "out/x.txt"),
        ("c.txt", "b/out.txt"),
        ("b", "out/y.txt"),
    ] {
        let err = submit(&mut st, "job-2", source, sink).unwrap_err().0;
        assert!(err.contains("being deleted"), "{source} -> {sink}: {err}");
    }
    assert!(!st.jobs.contains_key(&JobId("job-2".into())));
    // A path that merely shares the prefix's letters is not under it.
    submit(&mut st, "job-3", "bb/in.txt", "out/z.txt").unwrap();
    // Once the delete is over, the path is free again.
    st.end_delete("b");
    submit(&mut st, "job-2", "b/in.txt", "out/x.txt").unwrap();
    // And the next delete of it is refused: a running job reads it now.
    assert!(st.begin_delete("b").is_err());
}

#[test]
fn a_file_cannot_be_put_where_a_running_job_s_output_needs_a_folder() {
    let mut st = State::default();
    submit(&mut st, "job-1", "in.csv", "res/x/v1.txt").unwrap();
    // An upload that would make the sink's folder a file, or the sink a folder: refused.
    for clash in ["res/x", "res", "res/x/v1.txt/y", "res/x/v1.txt"] {
        let err = st.begin_write(clash).unwrap_err().0;
        assert!(err.contains("job-1"), "{clash}: {err}");
    }
    assert!(
        st.files.writing.is_empty(),
        "a refused upload holds nothing"
    );
    // Beside it is fine.
    for fine in ["res/xy", "res/x/other.txt", "out/x"] {
        st.begin_write(fine).unwrap();
    }
    // No other job may write where it would be a folder of the sink, or under it, or read it.
    for (source, sink) in [
        ("a.csv", "res/x"),
        ("a.csv", "res/x/v1.txt/z"),
        ("res/x/v1.txt", "out/b.txt"),
    ] {
        let err = submit(&mut st, "job-2", source, sink).unwrap_err().0;
        assert!(err.contains("job-1"), "{source} -> {sink}: {err}");
    }
    // Nor write under a path being uploaded.
    let err = submit(&mut st, "job-2", "a.csv", "out/x/y.txt")
        .unwrap_err()
        .0;
    assert!(err.contains("being uploaded"), "{err}");
    submit(&mut st, "job-2", "a.csv", "res/x/v2.txt").unwrap();
}

/// A job being submitted holds the files it reads from before they are checked: a delete of
/// one is refused until the job claims them (or is refused), so a job is never accepted on a
/// source deleted between its check and its claim (a probe's concurrent submits).
#[test]
fn a_delete_is_refused_while_a_job_being_submitted_reads_the_file() {
    let mut st = State::default();
    let reads = job_files(&spec("shared/src.txt", "out/a.txt"), &[]).reads;
    st.files.submitting.insert(7, reads);
    for busy in ["shared/src.txt", "shared", "ops/op.sh"] {
        let err = st.begin_delete(busy).unwrap_err().0;
        assert!(
            err.contains("being submitted") && err.contains("nothing was deleted"),
            "{err}"
        );
    }
    // Its sink is not read: deleting what is there now changes nothing the check saw.
    st.begin_delete("out/a.txt").unwrap();
    st.end_delete("out/a.txt");
    st.files.submitting.remove(&7);
    st.begin_delete("shared").unwrap();
}
