//! Where a task attempt's time goes: a task blocked by its downstream is back-pressured, not
//! busy; a slow operator is busy, not back-pressured. Real task attempts (`run_task`) on a
//! paused clock, their input handed straight to their inbox, their downstream a route that
//! never appears (so its link never takes a batch). And what a failed operator's failure
//! says: its exit and its last stderr lines.

use super::*;
use crate::dataplane::inbound::{ConnCtl, Registry};
use crate::dataplane::routes::Routes;
use crate::dataplane::transport::Tcp;
use crate::exec::{ExecError, Launch, Launched, OperatorProcess};
use crate::faulty::FaultyStore;
use crate::model::ids::{JobId, TaskKey, TaskPos};
use crate::model::partition::Partition;
use crate::model::tuple::Tuple;
use crate::protocol::meters::TaskMeters;
use crate::store::Store;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const SECOND: u64 = 1_000_000_000;
const ZERO: Duration = Duration::ZERO;

pub(super) fn env(cfg: crate::dataplane::DataConfig, launcher: Arc<dyn Launch>) -> TaskEnv {
    TaskEnv {
        registry: Arc::new(Registry::default()),
        routes: Arc::new(Routes::default()),
        slots: crate::dataplane::link::LinkSlots::new(cfg.max_conns),
        merges: crate::env::merge_budget(),
        commit_clock: crate::commit_clock::CommitClock::anchored(tokio::time::Instant::now()),
        spool: true,
        cfg,
        store: Store::objects(Arc::new(FaultyStore::default()), "faulty"),
        work_dir: std::env::temp_dir(),
        net: Arc::new(Tcp),
        launcher,
        identity: crate::protocol::auth::Identity::from_seed([7; 32]).unwrap(),
    }
}

fn key() -> TaskKey {
    TaskKey {
        job: JobId("meters".into()),
        pos: TaskPos { stage: 1, index: 0 },
    }
}

/// Stage 1 of 1 under at-least-once: one upstream link, one downstream task.
fn assignment(operator: OperatorSpec) -> TaskAssignment {
    TaskAssignment {
        delivery: Delivery::AtLeastOnce,
        ..TaskAssignment::sample(key(), TaskRole::Operator { operator })
    }
}

/// An attempt's upstream link 0, connected: hands batches straight to its inbox.
struct Upstream {
    inbox: tokio::sync::mpsc::Sender<Inbound>,
    conn: ConnCtl,
}

impl Upstream {
    /// Sends `n` tuples numbered from `first_seq`.
    async fn batch(&self, first_seq: u64, n: usize) {
        let tuples = (0..n as u64)
            .map(|i| {
                let s = first_seq + i;
                Tuple::new(format!("f:{s}"), format!("line {s}"))
            })
            .collect();
        let batch = Inbound::Batch {
            conn: self.conn.clone(),
            from: 0,
            first_seq,
            emit_ns: 0,
            tuples,
        };
        // An attempt that already ended (its operator failed) has dropped its inbox; the
        // test reads how it ended from its task.
        let _ended = self.inbox.send(batch).await.is_err();
    }
}

/// Starts the attempt and connects its upstream link 0; returns the attempt's status, its
/// cancel token, its task and the link — none if the attempt ended before it could be
/// connected (an operator that fails at once; its registration goes with it).
async fn start(
    env: TaskEnv,
    a: TaskAssignment,
    exec: Option<PathBuf>,
) -> (
    Arc<TaskStatus>,
    CancellationToken,
    tokio::task::JoinHandle<TaskEnd>,
    Option<Upstream>,
) {
    let status = Arc::new(TaskStatus::default());
    let cancel = CancellationToken::new();
    let registry = env.registry.clone();
    let run = tokio::spawn(run_task(env, a, exec, status.clone(), cancel.clone()));
    let inbox = loop {
        if let Some(h) = registry.get(&key()) {
            break h.tx;
        }
        if run.is_finished() {
            return (status, cancel, run, None);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let conn = ConnCtl::default();
    let connected = Inbound::Connected {
        from: 0,
        acked: 0,
        eos_acked: false,
        conn: conn.clone(),
    };
    if inbox.send(connected).await.is_err() {
        // Ended just now (see above).
        return (status, cancel, run, None);
    }
    (status, cancel, run, Some(Upstream { inbox, conn }))
}

/// Starts the attempt and hands its inbox one batch of `n` tuples on link 0; returns the
/// attempt's status, its cancel token and its task.
async fn start_with_input(
    env: TaskEnv,
    a: TaskAssignment,
    exec: Option<PathBuf>,
    n: usize,
) -> (
    Arc<TaskStatus>,
    CancellationToken,
    tokio::task::JoinHandle<TaskEnd>,
) {
    let (status, cancel, run, upstream) = start(env, a, exec).await;
    if let Some(upstream) = upstream {
        upstream.batch(1, n).await;
    }
    (status, cancel, run)
}

/// Waits (virtual time) until the attempt has emitted `n` tuples.
async fn wait_emitted(status: &TaskStatus, n: u64) {
    for _ in 0..100_000 {
        if status.tuples_out.load(Ordering::Relaxed) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the task never emitted {n} tuples");
}

async fn stop(cancel: CancellationToken, run: tokio::task::JoinHandle<TaskEnd>) {
    cancel.cancel();
    assert_eq!(run.await.unwrap(), TaskEnd::Cancelled);
}

#[tokio::test(start_paused = true)]
async fn a_task_whose_downstream_takes_nothing_is_backpressured_not_busy() {
    // One tuple per batch and one batch of room: the second output waits for room.
    let cfg = crate::dataplane::DataConfig {
        batch_tuples: 1,
        queue_batches: 1,
        ..Default::default()
    };
    let identity = OperatorSpec::Builtin {
        name: "identity".into(),
        args: Vec::new(),
    };
    let env = env(cfg, Arc::new(crate::exec::OsLauncher));
    let (status, cancel, run) = start_with_input(env, assignment(identity), None, 5).await;
    wait_emitted(&status, 2).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let m: TaskMeters = status.meters();
    assert!(m.backpressure_ns >= 10 * SECOND, "{m:?}");
    assert!(
        m.busy_ns < SECOND / 100,
        "blocked time is not busy time: {m:?}"
    );
    assert!(m.uptime_ns >= m.backpressure_ns, "{m:?}");
    assert_eq!(status.tuples_in.load(Ordering::Relaxed), 5);
    // "f:0".."f:4" and "line 0".."line 4": 3 + 6 bytes each.
    assert_eq!(m.bytes_in, 45, "{m:?}");
    assert_eq!(
        m.bytes_out, 9,
        "only the first batch left the router: {m:?}"
    );
    stop(cancel, run).await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_operator_is_busy_not_backpressured() {
    let slow = OperatorSpec::Exec {
        path: "slow".into(),
        args: Vec::new(),
    };
    let env = env(
        Default::default(),
        Arc::new(SlowEcho(Duration::from_secs(1))),
    );
    let exec = Some(PathBuf::from("slow"));
    let (status, cancel, run) = start_with_input(env, assignment(slow), exec, 5).await;
    wait_emitted(&status, 5).await;
    let m = status.meters();
    // Feeding waits on the operator's full stdin while it works through its input: the last
    // line or so still fits in the pipe, the rest is the operator's time.
    assert!(m.busy_ns >= 3 * SECOND, "{m:?}");
    assert_eq!(m.backpressure_ns, 0, "{m:?}");
    assert_eq!((m.bytes_in, m.bytes_out), (45, 45), "{m:?}");
    stop(cancel, run).await;
}

#[tokio::test(start_paused = true)]
async fn a_logged_task_commits_at_its_job_s_interval_not_its_worker_s() {
    // The worker would commit as soon as nothing more is queued; the job says once a minute.
    let cfg = crate::dataplane::DataConfig {
        log_commit_ms: 0,
        ..Default::default()
    };
    let identity = OperatorSpec::Builtin {
        name: "identity".into(),
        args: Vec::new(),
    };
    let mut a = assignment(identity);
    a.log_input = true;
    a.commit_interval_ms = Some(60_000);
    let (status, cancel, run, upstream) = start(env(cfg, Arc::new(SlowEcho(ZERO))), a, None).await;
    let upstream = upstream.expect("the attempt is running");
    // The first commit has no write before it to wait for.
    upstream.batch(1, 1).await;
    wait_emitted(&status, 1).await;
    let first = tokio::time::Instant::now();
    upstream.batch(2, 1).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        status.tuples_out.load(Ordering::Relaxed),
        1,
        "fed before its commit"
    );
    wait_emitted(&status, 2).await;
    let waited = first.elapsed();
    assert!(
        (Duration::from_secs(59)..Duration::from_secs(61)).contains(&waited),
        "the second commit came {waited:?} after the first"
    );
    stop(cancel, run).await;
}

#[tokio::test]
async fn a_failed_operator_quotes_its_last_five_stderr_lines_in_the_failure() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("fail.sh");
    // 40 lines in a burst (over the log's 20 a second), then exit 3.
    std::fs::write(
        &script,
        "#!/bin/sh\ni=0\nwhile [ $i -lt 40 ]; do echo \"err $i\" >&2; i=$((i+1)); done\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let fail = OperatorSpec::Exec {
        path: "fail.sh".into(),
        args: Vec::new(),
    };
    let env = env(Default::default(), Arc::new(crate::exec::OsLauncher));
    let (_status, _cancel, run) = start_with_input(env, assignment(fail), Some(script), 5).await;
    let end = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the attempt ends")
        .unwrap();
    let TaskEnd::Failed(why) = end else {
        panic!("the attempt failed: {end:?}");
    };
    assert!(
        why.ends_with(
            "exited with code 3; last stderr: \"err 35\" | \"err 36\" | \"err 37\" | \"err 38\" | \"err 39\""
        ),
        "{why}"
    );
    assert!(!why.contains("err 34"), "{why}");
}

/// An executable stand-in that echoes each line after working on it for a while, reading its
/// stdin through a one-byte pipe (so whoever feeds it waits while it works).
struct SlowEcho(Duration);

impl Launch for SlowEcho {
    fn launch(&self, _path: &Path, _args: &[String]) -> Result<Launched, ExecError> {
        let per_line = self.0;
        let (stdin_w, stdin_r) = tokio::io::duplex(1);
        let (mut stdout_w, stdout_r) = tokio::io::duplex(1 << 16);
        let task = tokio::spawn(async move {
            let mut rd = BufReader::new(stdin_r);
            let mut line = String::new();
            while rd.read_line(&mut line).await.is_ok_and(|n| n > 0) {
                tokio::time::sleep(per_line).await;
                if stdout_w.write_all(line.as_bytes()).await.is_err() {
                    return;
                }
                line.clear();
            }
        });
        Ok(Launched {
            process: Box::new(StandIn(Some(task))),
            stdin: Box::new(stdin_w),
            stdout: Box::new(stdout_r),
        })
    }
}

/// Counts the processes `SlowEcho` starts.
struct Counted(SlowEcho, Arc<std::sync::atomic::AtomicUsize>);

impl Launch for Counted {
    fn launch(&self, path: &Path, args: &[String]) -> Result<Launched, ExecError> {
        self.1.fetch_add(1, Ordering::Relaxed);
        self.0.launch(path, args)
    }
}

/// A task that starts standing by (its stage autoscales, it owns no key group) runs no
/// process until input comes for it: hostile probe 10 counted 80 idle operator processes of
/// standby positions on 6 slots. Its first tuple starts the process, which then works as
/// any other.
#[tokio::test(start_paused = true)]
async fn a_standby_executable_starts_its_process_with_its_first_input() {
    let echo = OperatorSpec::Exec {
        path: "echo".into(),
        args: Vec::new(),
    };
    let launches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let env = env(
        Default::default(),
        Arc::new(Counted(SlowEcho(ZERO), launches.clone())),
    );
    let mut a = assignment(echo);
    a.standby = true;
    let (status, cancel, run, upstream) = start(env, a, Some(PathBuf::from("echo"))).await;
    let upstream = upstream.expect("the attempt is running");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        launches.load(Ordering::Relaxed),
        0,
        "no process while it stands by"
    );
    assert!(!run.is_finished());
    upstream.batch(1, 3).await;
    wait_emitted(&status, 3).await;
    assert_eq!(launches.load(Ordering::Relaxed), 1);
    stop(cancel, run).await;
}

/// A stand-in's task in the place of a process (exit 0 once it returned).
struct StandIn(Option<tokio::task::JoinHandle<()>>);

impl OperatorProcess for StandIn {
    fn pid(&self) -> u32 {
        0
    }

    fn wait(
        &mut self,
    ) -> futures::future::BoxFuture<'_, std::io::Result<std::process::ExitStatus>> {
        Box::pin(async move {
            if let Some(t) = self.0.as_mut() {
                t.await.map_err(std::io::Error::other)?;
                self.0 = None;
            }
            Ok(std::process::ExitStatus::from_raw(0))
        })
    }

    fn kill(&mut self) -> futures::future::BoxFuture<'_, std::io::Result<()>> {
        Box::pin(async move {
            if let Some(t) = self.0.take() {
                t.abort();
            }
            Ok(())
        })
    }
}

/// A restarted exactly-once sink whose upstream task had finished must find that task's end
/// in its log: a log that lost it (objects deleted behind the store's back) fails the
/// attempt for good, where it waited for ever for a task that never sends again (a hostile
/// probe's job stayed running ten minutes). With the end in the log, it recovers.
#[tokio::test]
async fn a_restarted_receiver_whose_finished_upstream_s_end_is_not_in_its_log_fails_for_good() {
    use crate::dataplane::acceptance::{Acceptance, Gaps};
    use crate::log::{encode_record, seal_segment, segment_path, LogRecord};
    let sink_key = TaskKey {
        job: JobId("lost-end".into()),
        pos: TaskPos { stage: 2, index: 0 },
    };
    for logged_end in [false, true] {
        let env = env(Default::default(), Arc::new(crate::exec::OsLauncher));
        if logged_end {
            // Attempt 0 logged the end of link 0 before it acknowledged it.
            let path = segment_path(&sink_key, 0, 0);
            let mut body = bytes::BytesMut::new();
            encode_record(
                &mut body,
                &LogRecord::Eos {
                    from: 0,
                    last_seq: 0,
                },
            );
            let seg = seal_segment(&body, 1, env.store.seal(), &path);
            env.store.put(&path, seg).await.unwrap();
        }
        let a = TaskAssignment {
            key: sink_key.clone(),
            attempt: 1,
            role: TaskRole::Sink {
                path: "out.txt".into(),
            },
            delivery: Delivery::ExactlyOnce,
            downstream: 0,
            partition: Partition::ValueOnly,
            finished_upstream: vec![0],
            ..assignment(OperatorSpec::Builtin {
                name: "identity".into(),
                args: vec![],
            })
        };
        let status = TaskStatus::of(&a);
        let mut op = Operator::Sink(None);
        let mut acc = Acceptance::new(a.upstream, 0, Gaps::Refuse, false);
        let res = replay::replay_log(&env, &a, &mut op, &mut acc, &status, None).await;
        match (logged_end, res) {
            (true, Ok(())) => assert!(acc.ended(0)),
            (false, Err(Stop::Unrecoverable(e))) => {
                assert!(e.contains("no end of the stream from task 1.0"), "{e}")
            }
            (_, other) => panic!("logged end {logged_end}: {:?}", other.err()),
        }
    }
}

/// A source that is gone when its attempt opens it fails the job at once: every attempt would
/// find it gone (hostile probe 22: 21 restarts, 2.5 minutes, on a store wiped under a job).
#[tokio::test]
async fn a_source_that_is_gone_fails_for_good() {
    let key = TaskKey {
        job: JobId("gone".into()),
        pos: TaskPos { stage: 0, index: 0 },
    };
    let role = TaskRole::Source {
        path: "/nonexistent/rainstorm/in.txt".into(),
        name: "in.txt".into(),
        rate: 0.0,
        filter: None,
    };
    let a = TaskAssignment {
        upstream: 0,
        ..TaskAssignment::sample(key, role)
    };
    let env = env(Default::default(), Arc::new(crate::exec::OsLauncher));
    let status = Arc::new(TaskStatus::of(&a));
    let end = run_task(env, a, None, status, CancellationToken::new()).await;
    match end {
        TaskEnd::Unrecoverable(why) => assert!(why.contains("cannot open source"), "{why}"),
        other => panic!("{other:?}"),
    }
}
