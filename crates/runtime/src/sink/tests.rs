//! Unit tests of the sink's output.

use super::*;
use crate::log::segment_path;
use crate::model::ids::{JobId, TaskKey, TaskPos};
use crate::model::partition::Partition;
use crate::protocol::control::TaskRole;
use crate::store::Store;
use bytes::Bytes;
use std::sync::Arc;

fn env(store: Store, work_dir: &std::path::Path) -> TaskEnv {
    let cfg = crate::dataplane::DataConfig::default();
    TaskEnv {
        registry: Arc::new(crate::dataplane::inbound::Registry::default()),
        routes: Arc::new(crate::dataplane::routes::Routes::default()),
        slots: crate::dataplane::link::LinkSlots::new(cfg.max_conns),
        merges: crate::env::merge_budget(),
        commit_clock: crate::commit_clock::CommitClock::anchored(tokio::time::Instant::now()),
        spool: true,
        cfg,
        store,
        work_dir: work_dir.to_path_buf(),
        net: Arc::new(crate::dataplane::transport::Tcp),
        launcher: Arc::new(crate::exec::OsLauncher),
        identity: crate::protocol::auth::Identity::from_seed([3; 32]).unwrap(),
    }
}

fn sink(out: &str) -> TaskAssignment {
    let key = TaskKey {
        job: JobId("lost".into()),
        pos: TaskPos { stage: 2, index: 0 },
    };
    TaskAssignment {
        downstream: 0,
        partition: Partition::ValueOnly,
        log_input: true,
        ..TaskAssignment::sample(key, TaskRole::Sink { path: out.into() })
    }
}

/// A segment of `path` holding one line, sealed for it.
fn segment(store: &Store, path: &str, line: &str) -> Bytes {
    crate::test_log::segment(store.seal(), path, "", &[line])
}

/// A sink whose newest commits were deleted from the store behind its back (after its last
/// commit, so the listing shows no gap) writes no output and fails for good, saying so; with
/// its log whole, the same sink writes every line.
#[tokio::test]
async fn a_sink_whose_newest_commits_were_deleted_writes_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.txt");
    let a = sink(out.to_str().unwrap());
    for lose in [false, true] {
        let store = Store::memory();
        let env = env(store.clone(), dir.path());
        let spool = Spool::create(dir.path(), &a.key, 0, false).await.unwrap();
        for n in 0..3 {
            let path = segment_path(&a.key, 0, n);
            let seg = segment(&store, &path, &format!("line {n}"));
            store.put(&path, seg.clone()).await.unwrap();
            spool.append(&path, &seg).await;
        }
        if lose {
            store.delete(&segment_path(&a.key, 0, 2)).await.unwrap();
        }
        let _ = std::fs::remove_file(&out);
        let written = write_output(&env, &a, out.to_str().unwrap(), Some(&spool)).await;
        match lose {
            false => {
                written.unwrap();
                let text = std::fs::read_to_string(&out).unwrap();
                assert_eq!(text, "line 0\nline 1\nline 2\n");
            }
            true => {
                let e = written.unwrap_err();
                assert!(matches!(e, OutputError::Lost { made: 3, found: 2 }), "{e}");
                assert!(e.to_string().contains("deleted from the store"), "{e}");
                assert!(!out.exists(), "a truncated output was written");
            }
        }
    }
}
