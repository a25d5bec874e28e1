//! Unit tests of `logged`.

use super::*;
use crate::dataplane::inbound::Registry;
use crate::dataplane::routes::Routes;
use crate::dataplane::transport::Tcp;
use crate::faulty::FaultyStore;
use crate::log::fence_path;
use crate::log::WRITE_TRIES;
use crate::model::hist::Hist;
use crate::model::ids::{JobId, TaskPos};
use crate::store::Store;
use std::sync::atomic::Ordering;

fn env(mem: &Arc<FaultyStore>) -> TaskEnv {
    TaskEnv {
        registry: Arc::new(Registry::default()),
        routes: Arc::new(Routes::default()),
        cfg: Default::default(),
        store: Store::objects(mem.clone(), "faulty"),
        work_dir: std::env::temp_dir(),
        net: Arc::new(Tcp),
        launcher: Arc::new(crate::exec::OsLauncher),
        identity: crate::protocol::auth::Identity::from_seed([5; 32]).unwrap(),
        slots: crate::dataplane::link::LinkSlots::new(64),
        merges: crate::env::merge_budget(),
        commit_clock: crate::commit_clock::CommitClock::anchored(tokio::time::Instant::now()),
        spool: false,
    }
}

fn key() -> TaskKey {
    TaskKey {
        job: JobId("j".into()),
        pos: TaskPos { stage: 2, index: 0 },
    }
}

/// Logs one batch of one tuple on link 0 with a writer for `attempt`; returns what the
/// writer returned and the link's ack afterwards.
async fn log_one(mem: &Arc<FaultyStore>, attempt: u32) -> (Result<(), Stop>, (u64, bool)) {
    let (res, ack, _) = log_one_timed(mem, attempt).await;
    (res, ack)
}

/// [`log_one`], with the commit durations the writer recorded.
async fn log_one_timed(
    mem: &Arc<FaultyStore>,
    attempt: u32,
) -> (Result<(), Stop>, (u64, bool), Option<Hist>) {
    let acks = Arc::new(AckBoard::default());
    let (tx, rx) = mpsc::channel(4);
    let (feed_tx, mut feed_rx) = mpsc::channel(4);
    let mut intake = LogIntake { tx, sink: false };
    let batch = Accepted {
        from: 0,
        first_seq: 1,
        last_seq: 1,
        emit_ns: 0,
        tuples: vec![Tuple::new("k", "v")],
    };
    intake.fresh(batch).await.unwrap();
    drop(intake);
    let commits = AtomicHist::default();
    let meter = CommitMeter {
        commits: &commits,
        working: None,
        spool: None,
        latency: None,
        waiting: None,
    };
    let res = log_writer(env(mem), key(), attempt, acks.clone(), rx, feed_tx, meter).await;
    if res.is_ok() {
        assert!(feed_rx.recv().await.is_some(), "logged input is released");
    }
    let (upto, eos, _, _) = *acks.subscribe(0).borrow();
    let ack = (upto, eos);
    (res, ack, commits.snapshot())
}

#[tokio::test(start_paused = true)]
async fn a_commit_is_timed_from_its_first_try_until_it_is_durable() {
    let mem = Arc::new(FaultyStore::default());
    mem.fail_puts.store(3, Ordering::Relaxed);
    let (res, _, commits) = log_one_timed(&mem, 0).await;
    assert!(res.is_ok(), "{res:?}");
    let commits = commits.expect("the commit was timed");
    assert_eq!(commits.count(), 1);
    // Three retries after 20, 40 and 80 ms at least (the backoff's first delays).
    assert!(commits.sum_us >= 140_000, "{commits:?}");
    let le = commits.cumulative();
    assert_eq!(le.last(), Some(&(u64::MAX, 1)));
    assert_eq!(
        le.iter()
            .find(|(_, n)| *n == 1)
            .map(|(b, _)| *b >= commits.sum_us),
        Some(true),
        "the sample sits in the first bucket that holds it: {le:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_log_write_is_retried() {
    let mem = Arc::new(FaultyStore::default());
    mem.fail_puts.store(WRITE_TRIES - 1, Ordering::Relaxed);
    let (res, ack) = log_one(&mem, 0).await;
    assert!(res.is_ok(), "{res:?}");
    assert_eq!(ack, (1, false), "acknowledged once durable");
}

#[tokio::test(start_paused = true)]
async fn a_log_write_that_keeps_failing_fails_the_task_with_the_store_error() {
    let mem = Arc::new(FaultyStore::default());
    mem.fail_puts.store(WRITE_TRIES, Ordering::Relaxed);
    let (res, ack) = log_one(&mem, 0).await;
    match res {
        Err(Stop::Failed(cause)) => {
            assert!(cause.contains("injected write failure"), "{cause}")
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(ack, (0, false), "nothing acknowledged");
}

#[tokio::test(start_paused = true)]
async fn a_fenced_attempt_acknowledges_and_processes_nothing() {
    let mem = Arc::new(FaultyStore::default());
    Store::objects(mem.clone(), "faulty")
        .put(&fence_path(&key(), 0), bytes::Bytes::new())
        .await
        .unwrap();
    let (res, ack) = log_one(&mem, 0).await;
    assert!(
        matches!(res, Err(Stop::Failed(ref c)) if c.contains("fenced")),
        "{res:?}"
    );
    assert_eq!(ack, (0, false));
}

/// A log writer on a memory store whose commits wait 10 s after the previous one, with its
/// input, what it releases to feed, and its acks.
#[allow(clippy::type_complexity)]
fn slow_committer<'a>(
    stage: u32,
    window_bytes: usize,
    commits: &'a AtomicHist,
    sink: Option<&'a TaskStatus>,
) -> (
    impl std::future::Future<Output = Result<(), Stop>> + 'a,
    mpsc::Sender<Logged>,
    mpsc::Receiver<Released>,
    Arc<AckBoard>,
) {
    let mem = Arc::new(FaultyStore::default());
    let mut env = env(&mem);
    env.cfg.log_commit_ms = 10_000;
    env.cfg.window_bytes = window_bytes;
    let acks = Arc::new(AckBoard::default());
    let (tx, rx) = mpsc::channel(4);
    let (feed_tx, feed_rx) = mpsc::channel(4);
    let meter = CommitMeter {
        commits,
        working: None,
        spool: None,
        latency: sink,
        waiting: None,
    };
    let mut k = key();
    k.pos.stage = stage;
    let writer = log_writer(env, k, 0, acks.clone(), rx, feed_tx, meter);
    (writer, tx, feed_rx, acks)
}

/// One tuple on link 0 with sequence number `seq`.
fn one(seq: u64) -> Accepted {
    Accepted {
        from: 0,
        first_seq: seq,
        last_seq: seq,
        emit_ns: 0,
        tuples: vec![Tuple::new("k", "v")],
    }
}

#[tokio::test(start_paused = true)]
async fn a_link_end_is_committed_at_once_not_at_the_next_interval() {
    let commits = AtomicHist::default();
    let (writer, tx, mut feed_rx, acks) = slow_committer(2, 64 * 1024, &commits, None);
    let batch = one;
    let driver = async {
        let mut intake = LogIntake { tx, sink: false };
        intake.fresh(batch(1)).await.unwrap();
        assert!(feed_rx.recv().await.is_some(), "the first commit goes out");
        // The next commit may not start for 10 s after the first, unless its link ended.
        let began = tokio::time::Instant::now();
        intake.fresh(batch(2)).await.unwrap();
        intake.ended(0, 2).await.unwrap();
        let mut ack = acks.subscribe(0);
        ack.wait_for(|a| a.1).await.unwrap();
        drop(intake);
        began.elapsed()
    };
    let (res, waited) = tokio::join!(writer, driver);
    assert!(res.is_ok(), "{res:?}");
    assert!(
        waited < Duration::from_secs(1),
        "the end of the link waited {waited:?} for the commit interval"
    );
}

#[tokio::test(start_paused = true)]
async fn a_link_that_sent_half_its_window_is_committed_at_once_not_at_the_next_interval() {
    let commits = AtomicHist::default();
    let (writer, tx, mut feed_rx, acks) = slow_committer(2, 64 * 1024, &commits, None);
    // One tuple of `bytes` value bytes on link `from`.
    let batch = |from: u32, seq: u64, bytes: usize| Accepted {
        from,
        first_seq: seq,
        last_seq: seq,
        emit_ns: 0,
        tuples: vec![Tuple::new("k", "v".repeat(bytes).as_str())],
    };
    let driver = async {
        let mut intake = LogIntake { tx, sink: false };
        intake.fresh(batch(0, 1, 10)).await.unwrap();
        assert!(feed_rx.recv().await.is_some(), "the first commit goes out");
        let began = tokio::time::Instant::now();
        // Two links each sent under half their window: the commit waits for the interval.
        intake.fresh(batch(0, 2, 20_000)).await.unwrap();
        intake.fresh(batch(1, 1, 20_000)).await.unwrap();
        let early = tokio::time::timeout(Duration::from_secs(5), feed_rx.recv()).await;
        assert!(early.is_err(), "committed before the interval");
        // Link 0 reaches half its window: the commit goes out at once, acknowledging both.
        intake.fresh(batch(0, 3, 20_000)).await.unwrap();
        let mut ack = acks.subscribe(0);
        ack.wait_for(|a| a.0 == 3).await.unwrap();
        assert_eq!(acks.subscribe(1).borrow().0, 1);
        drop(intake);
        began.elapsed()
    };
    let (res, waited) = tokio::join!(writer, driver);
    assert!(res.is_ok(), "{res:?}");
    assert!(
        waited < Duration::from_secs(6),
        "a link at half its window waited {waited:?} for the commit interval"
    );
}

#[tokio::test(start_paused = true)]
async fn a_sink_takes_a_batch_s_latency_when_its_commit_is_durable_not_when_it_arrives() {
    let commits = AtomicHist::default();
    let status = TaskStatus::default();
    let (writer, tx, _feed_rx, acks) = slow_committer(2, 64 * 1024, &commits, Some(&status));
    let batch = |seq: u64, n: usize| Accepted {
        from: 0,
        first_seq: seq,
        last_seq: seq + n as u64 - 1,
        emit_ns: crate::dataplane::now_ns(),
        tuples: vec![Tuple::new("k", "v"); n],
    };
    let recorded = || status.e2e.snapshot().map_or(0, |h| h.count());
    let driver = async {
        let mut intake = LogIntake { tx, sink: true };
        intake.fresh(batch(1, 1)).await.unwrap();
        let mut ack = acks.subscribe(0);
        ack.wait_for(|a| a.0 == 1).await.unwrap();
        assert_eq!(recorded(), 1, "the first commit's batch");
        // The next commit waits out the 10 s interval: its lines are not output before it.
        intake.fresh(batch(2, 3)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(recorded(), 1, "latency taken before the lines were durable");
        ack.wait_for(|a| a.0 == 4).await.unwrap();
        assert_eq!(recorded(), 4);
        let api = status.latency.lock().unwrap().clone().unwrap();
        assert!(api.summary().is_some());
        drop(intake);
    };
    let (res, ()) = tokio::join!(writer, driver);
    assert!(res.is_ok(), "{res:?}");
}

/// A commit's tuples are fed as emitted when its oldest one was, so an executable's output,
/// stamped with what its latest input was fed with, is charged the commit's whole wait (as a
/// built-in's router batch is, by its oldest tuple).
#[tokio::test]
async fn an_executable_s_output_is_charged_the_wait_of_its_commit_s_oldest_input() {
    use crate::dataplane::link::LinkMsg;
    use crate::dataplane::meter::SendMeter;
    use crate::dataplane::reroute::Switchboard;
    use crate::dataplane::router::Router;
    use crate::exec::{ExecOperator, Launch, OsLauncher};
    use crate::model::partition::Partition;

    let launched = OsLauncher.launch(std::path::Path::new("cat"), &[]).unwrap();
    let (link_tx, mut link_rx) = mpsc::channel(8);
    let router = Router::new(
        vec![link_tx],
        Partition::Key,
        Arc::new(Switchboard::new(Vec::new(), 1, false)),
        Default::default(),
        Arc::new(std::sync::atomic::AtomicU64::new(0)),
        Arc::new(SendMeter::default()),
    );
    let mut op = Operator::Exec(ExecOperator::start(launched, router));
    // One commit of three batches from three links, emitted 100, 300 and 200 ns after epoch.
    let fed = |from: u32, emit_ns: u64| Fed {
        from,
        first_seq: 1,
        tuples: vec![Tuple::new(format!("k{from}"), "v")],
        emit_ns,
        ended: false,
    };
    let (tx, rx) = mpsc::channel(1);
    tx.send(vec![fed(0, 100), fed(1, 300), fed(2, 200)])
        .await
        .unwrap();
    let working = Stopwatch::default();
    let cancel = CancellationToken::new();
    let output = async move {
        let got = link_rx.recv().await;
        drop(tx);
        got
    };
    let (fed_all, got) = tokio::join!(feed(&mut op, rx, &working, None, &cancel), output);
    fed_all.unwrap();
    let Some(LinkMsg::Batch(first)) = got else {
        panic!("no batch from the operator's output");
    };
    assert_eq!(first.emit_ns, 100, "the first output's stamp");
    op.abort().await;
}

/// Commits go out on the commit clock's ticks, each stage just after the one before it: a
/// stage-2 task and a stage-3 task of one process, both past their first commit, commit
/// their next batches at the same tick of the interval, the later stage its offset after.
#[tokio::test(start_paused = true)]
async fn the_stages_of_a_job_commit_on_one_grid_each_just_after_the_one_before() {
    // Both writers' clocks are anchored now (the paused clock does not move in between).
    let t0 = tokio::time::Instant::now();
    let commits = AtomicHist::default();
    // A writer at `stage` (10 s interval): when its second commit released its batch.
    let second_commit = |stage: u32, late: Duration| {
        let (writer, tx, mut feed_rx, _acks) = slow_committer(stage, 64 * 1024, &commits, None);
        let driver = async move {
            let mut intake = LogIntake { tx, sink: false };
            // The first commit has no write before it to wait for.
            intake.fresh(one(1)).await.unwrap();
            feed_rx.recv().await.unwrap();
            tokio::time::sleep(late).await;
            intake.fresh(one(2)).await.unwrap();
            feed_rx.recv().await.unwrap();
            t0.elapsed()
        };
        async move {
            let (res, at) = tokio::join!(writer, driver);
            res.unwrap();
            at
        }
    };
    // Whenever their batches came, the next tick after half an interval is the one.
    let (two, three) = tokio::join!(
        second_commit(2, Duration::from_millis(700)),
        second_commit(3, Duration::from_millis(4_900)),
    );
    assert_eq!(two, Duration::from_secs(10));
    assert_eq!(three, Duration::from_millis(10_010));
}

/// A write the store keeps waiting is timed on the task's status while it waits (its reports
/// carry it, and the job says the store holds it up), and not once it is written.
#[tokio::test(start_paused = true)]
async fn a_write_the_store_keeps_waiting_is_timed_while_it_waits() {
    let mem = Arc::new(FaultyStore::default());
    mem.latency_us.store(20_000_000, Ordering::Relaxed);
    let status = super::super::TaskStatus::default();
    let acks = Arc::new(AckBoard::default());
    let (tx, rx) = mpsc::channel(4);
    let (feed_tx, mut feed_rx) = mpsc::channel(4);
    let commits = AtomicHist::default();
    let meter = CommitMeter {
        commits: &commits,
        working: None,
        spool: None,
        latency: None,
        waiting: Some((&status.store_wait, &status.started)),
    };
    let writer = log_writer(env(&mem), key(), 0, acks, rx, feed_tx, meter);
    let watch = async {
        let mut intake = LogIntake { tx, sink: false };
        intake.fresh(one(1)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let waited = status.store_wait.waited(&status.started);
        assert!(waited >= Duration::from_secs(4), "{waited:?}");
        assert!(feed_rx.recv().await.is_some(), "written in the end");
        assert_eq!(status.store_wait.waited(&status.started), Duration::ZERO);
        drop(intake);
    };
    let (res, ()) = tokio::join!(writer, watch);
    assert!(res.is_ok(), "{res:?}");
}
