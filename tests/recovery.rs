//! Exactly-once through crashes: operator processes SIGKILLed with `kill-task` in every stage,
//! whole workers SIGKILLed or SIGSTOPped, restarts after the upstream finished, repeated
//! failures, and a chaos test. Every run's output is compared with an independent reference.
//! Kills are triggered by observed progress, never by timers.

mod common;
use common::*;
use serde_json::Value;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(120);

fn job_progress(c: &Cluster, id: &str) -> Value {
    c.json(&["job", id, "--json"])
}

/// Waits until the job's source has emitted at least `n` tuples.
fn wait_source(c: &Cluster, id: &str, n: u64) {
    wait_for(&format!("job {id} to emit {n} tuples"), LONG, || {
        let j = job_progress(c, id);
        (j["source_tuples"].as_u64()? >= n || j["status"] != "running").then_some(())
    });
}

/// A running task of `stage` with a pid and some input, if any.
fn running_task(c: &Cluster, id: &str, stage: u64) -> Option<Value> {
    c.tasks(id).into_iter().find(|t| {
        t["stage"] == stage
            && t["state"] == "running"
            && t["pid"].is_u64()
            && t["tuples_in"].as_u64() > Some(0)
    })
}

/// A task of `stage` whose operator process lives, running or still recovering.
fn live_task(c: &Cluster, id: &str, stage: u64) -> Option<Value> {
    c.tasks(id).into_iter().find(|t| {
        t["stage"] == stage
            && (t["state"] == "running" || t["state"] == "starting")
            && t["pid"].is_u64()
    })
}

/// SIGKILLs the operator of a running task of `stage`. The listing can be a moment old (the
/// task may have just ended or been restarted), and kill-task refuses a pid that is no longer
/// a live operator, so a refused kill is retried on a fresh listing.
fn kill_task(c: &Cluster, id: &str, stage: u64) -> Value {
    kill_matching(c, id, stage, running_task)
}

/// Like [`kill_task`], for the first task of `stage` that `pick` finds.
fn kill_matching(
    c: &Cluster,
    id: &str,
    stage: u64,
    pick: fn(&Cluster, &str, u64) -> Option<Value>,
) -> Value {
    let deadline = std::time::Instant::now() + LONG;
    loop {
        if let Some(t) = pick(c, id, stage) {
            let pid = t["pid"].as_u64().unwrap_or(0).to_string();
            let worker = t["worker"].as_str().unwrap_or("").to_string();
            let out = c.run(&["kill-task", &worker, &pid]);
            if out.status.success() {
                return t;
            }
            let err = String::from_utf8_lossy(&out.stderr);
            let status = c.json(&["job", id, "--json"])["status"].clone();
            assert_eq!(
                status, "running",
                "the job ended before a task could be killed: {err}"
            );
            assert!(
                err.contains("no operator process"),
                "kill-task failed for another reason: {err}"
            );
        }
        let status = c.json(&["job", id, "--json"])["status"].clone();
        assert!(
            status == "running" && std::time::Instant::now() < deadline,
            "no running task of stage {stage} to kill while the job ran ({status}) within {LONG:?}\n{}",
            c.diagnose()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn setup(c: &Cluster, rows: usize, seed: u64) -> (Signs, std::path::PathBuf) {
    let signs = Signs::generate(rows, seed);
    signs.write(&c.dir.path().join("signs.csv"));
    let ops = install_ops(c.dir.path());
    c.ok(&["put", "signs.csv", "signs.csv"]);
    (signs, ops)
}

fn check_output(c: &Cluster, id: &str, sink: &str, want: &[String]) -> Value {
    let j = c.wait_job(id, LONG);
    assert_eq!(
        j["status"],
        "succeeded",
        "job {id}: {j}\n{}",
        c.leader_log()
    );
    assert_same(
        &format!("job {id} output"),
        &sorted_lines(&c.store_file(sink)),
        want,
    );
    j
}

/// kill-task in the first, middle and last stage of an executable stateful pipeline.
#[test]
fn kill_task_in_first_middle_and_last_stage_keeps_output_exact() {
    let c = Cluster::start(3, 5.0);
    let (signs, ops) = setup(&c, 12000, 21);
    let op = |n: &str| ops.join(n).to_str().unwrap().to_string();
    let job = job_toml(
        "three-stage",
        "signs.csv",
        "out/three.txt",
        3000.0,
        "exactly-once",
        &[
            (
                3,
                &op("filter.py"),
                &["7", "Punched Telespar", "--key-col", "9"],
            ),
            (3, &op("count.py"), &["9"]),
            (2, &op("keyby.py"), &["1"]),
        ],
    );
    c.file("three.toml", &job);
    let id = c.submit("three.toml");
    wait_source(&c, &id, 2000);
    kill_task(&c, &id, 1);
    wait_source(&c, &id, 5000);
    let killed = kill_task(&c, &id, 2);
    wait_source(&c, &id, 8000);
    kill_task(&c, &id, 3);
    let j = check_output(&c, &id, "out/three.txt", &signs.app2());
    assert!(j["failures"].as_u64().unwrap() >= 3, "{j}");
    assert!(j["recoveries"].as_u64().unwrap() >= 3, "{j}");
    let again = c
        .tasks(&id)
        .into_iter()
        .find(|t| t["stage"] == killed["stage"] && t["task"] == killed["task"])
        .unwrap();
    assert!(again["attempt"].as_u64().unwrap() >= 1, "{again}");
    assert_ne!(again["pid"], killed["pid"]);
}

/// A whole worker SIGKILLed while it runs tasks of several stages, including the built-in
/// stateful count-by: the leader declares it dead and the tasks recover from their logs.
#[test]
fn sigkilled_worker_is_declared_dead_and_its_builtin_stateful_tasks_recover() {
    let mut c = Cluster::start(4, 1.5);
    let (signs, _) = setup(&c, 16000, 22);
    let job = job_toml(
        "app2",
        "signs.csv",
        "out/app2.txt",
        4000.0,
        "exactly-once",
        &[
            (4, "filter", &["Punched Telespar"]),
            (4, "count-by", &["9"]),
        ],
    );
    c.file("app2.toml", &job);
    let id = c.submit("app2.toml");
    wait_source(&c, &id, 4000);
    // The worker running a count-by task that has state.
    let victim = wait_for("a count-by task with state", LONG, || {
        c.tasks(&id)
            .into_iter()
            .find(|t| t["stage"] == 2 && t["tuples_in"].as_u64() > Some(0))
    });
    let worker_id = victim["worker"].as_str().unwrap().to_string();
    let index = c.worker_index(&worker_id).expect("the victim's process");
    c.kill_worker(index);
    wait_for(
        "the dead worker to be declared dead",
        Duration::from_secs(15),
        || {
            let ws = c.json(&["workers", "--json"]);
            let w = ws
                .as_array()?
                .iter()
                .find(|w| w["id"] == worker_id.as_str())?
                .clone();
            (w["state"] == "dead").then_some(())
        },
    );
    let j = check_output(&c, &id, "out/app2.txt", &signs.app2());
    assert!(j["recoveries"].as_u64().unwrap() >= 1, "{j}");
    assert!(c
        .tasks(&id)
        .iter()
        .all(|t| t["worker"] != worker_id.as_str()));
    // A dead worker gets no new tasks.
    let id2 = c.submit("app2.toml");
    check_output(&c, &id2, "out/app2.txt", &signs.app2());
    assert!(c
        .tasks(&id2)
        .iter()
        .all(|t| t["worker"] != worker_id.as_str()));
}

/// A chain ending in a count keeps its state in the chain's last step: the worker running a
/// task of it with counts is SIGKILLed, and the task rebuilds its counts (filter and count
/// replayed from the source, as a first stage does) to give the exact output.
#[test]
fn a_chained_count_on_a_killed_worker_recovers_its_counts_exactly() {
    let mut c = Cluster::start(3, 1.5);
    let (signs, _) = setup(&c, 12000, 23);
    let job = job_toml(
        "chained",
        "signs.csv",
        "out/chained.txt",
        4000.0,
        "exactly-once",
        &[],
    ) + &chain_stage(
        3,
        &[
            ("filter", &["Punched Telespar"]),
            ("identity", &[]),
            ("count-by", &["9"]),
        ],
    ) + &chain_stage(2, &[("identity", &[])]);
    c.file("chained.toml", &job);
    let id = c.submit("chained.toml");
    wait_source(&c, &id, 4000);
    let victim = wait_for("a chained count task with state", LONG, || {
        c.tasks(&id).into_iter().find(|t| {
            t["stage"] == 1 && t["tuples_out"].as_u64() > Some(0) && t["worker"].is_string()
        })
    });
    let worker_id = victim["worker"].as_str().unwrap_or_default().to_string();
    let index = c.worker_index(&worker_id).expect("the victim's process");
    c.kill_worker(index);
    let j = check_output(&c, &id, "out/chained.txt", &signs.app2());
    assert!(j["recoveries"].as_u64().unwrap_or(0) >= 1, "{j}");
    assert!(c
        .tasks(&id)
        .iter()
        .all(|t| t["worker"] != worker_id.as_str()));
}

/// War story: "a restarted task waited forever: the previous stage finished signal had been
/// sent before it existed". The end of stream is recorded state, recovered from the log.
#[test]
fn lost_signal_task_restarted_after_its_upstream_finished_still_finishes() {
    let c = Cluster::start(2, 5.0);
    let (signs, _) = setup(&c, 8000, 23);
    let slow = write_exec(&c.dir.path().join("slow.py"), &slow_echo(0.0005));
    let job = job_toml(
        "lost-signal",
        "signs.csv",
        "out/lost.txt",
        0.0,
        "exactly-once",
        &[(2, "identity", &[]), (1, slow.to_str().unwrap(), &[])],
    );
    c.file("lost.toml", &job);
    let id = c.submit("lost.toml");
    wait_for("stage 1 to finish while stage 2 still works", LONG, || {
        let ts = c.tasks(&id);
        let s1_done = ts
            .iter()
            .filter(|t| t["stage"] == 1)
            .all(|t| t["state"] == "finished");
        let s2_busy = ts
            .iter()
            .any(|t| t["stage"] == 2 && t["state"] == "running");
        (s1_done && s2_busy).then_some(())
    });
    kill_task(&c, &id, 2);
    let want = signs.all_lines();
    check_output(&c, &id, "out/lost.txt", &want);
}

/// The same task killed again and again, once while it is still recovering from its log.
#[test]
fn repeated_failures_of_one_task_and_a_failure_during_recovery() {
    let c = Cluster::start(3, 5.0);
    let (signs, ops) = setup(&c, 12000, 24);
    let op = |n: &str| ops.join(n).to_str().unwrap().to_string();
    let job = job_toml(
        "repeat",
        "signs.csv",
        "out/repeat.txt",
        500.0,
        "exactly-once",
        &[
            (
                2,
                &op("filter.py"),
                &["7", "Punched Telespar", "--key-col", "9"],
            ),
            (1, &op("count.py"), &["9"]),
        ],
    );
    c.file("repeat.toml", &job);
    let id = c.submit("repeat.toml");
    for (i, at) in [2500u64, 5000, 7500].iter().enumerate() {
        wait_source(&c, &id, *at);
        // Running or still replaying its log: either way a failure of this one task. (A
        // replay can take seconds on a loaded machine; waiting for `running` could miss the
        // job's end.)
        let t = kill_matching(&c, &id, 2, live_task);
        if i == 1 {
            // Kill the replacement as soon as its process exists: it is replaying its log.
            let next = wait_for("the replacement's process", LONG, || {
                c.tasks(&id)
                    .into_iter()
                    .find(|x| x["stage"] == 2 && x["pid"].is_u64() && x["pid"] != t["pid"])
            });
            let pid = next["pid"].as_u64().unwrap().to_string();
            let out = c.run(&["kill-task", next["worker"].as_str().unwrap(), &pid]);
            // It may already have been replaced or finished replaying; both are fine.
            let _ = out;
        }
    }
    let j = check_output(&c, &id, "out/repeat.txt", &signs.app2());
    assert!(j["recoveries"].as_u64().unwrap() >= 3, "{j}");
}

/// A worker that is only slow (SIGSTOP past the heartbeat timeout, then SIGCONT): it is
/// replaced, comes back as a stale attempt, and no duplicate reaches the output.
#[test]
fn slow_worker_stopped_then_continued_causes_no_duplicates() {
    let c = Cluster::start(3, 1.0);
    let (signs, _) = setup(&c, 12000, 25);
    let job = job_toml(
        "stop-cont",
        "signs.csv",
        "out/stop.txt",
        3000.0,
        "exactly-once",
        &[
            (3, "filter", &["Punched Telespar"]),
            (3, "count-by", &["9"]),
        ],
    );
    c.file("stop.toml", &job);
    let id = c.submit("stop.toml");
    wait_source(&c, &id, 3000);
    let pid = c.workers[1].id() as i32;
    // SAFETY: signalling a child process we own.
    unsafe { libc_kill(pid, 19) };
    wait_for(
        "a worker to be declared dead",
        Duration::from_secs(15),
        || {
            let ws = c.json(&["workers", "--json"]);
            ws.as_array()?
                .iter()
                .any(|w| w["state"] == "dead")
                .then_some(())
        },
    );
    unsafe { libc_kill(pid, 18) };
    check_output(&c, &id, "out/stop.txt", &signs.app2());
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Chaos: several rounds of a rate-limited stateful job, with operator processes and whole
/// workers killed at random points of progress; every round must be exact.
#[test]
fn chaos_random_task_and_worker_kills_every_round_exact() {
    let rounds: u64 = std::env::var("RAINSTORM_CHAOS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let mut c = Cluster::start(4, 1.5);
    let (signs, ops) = setup(&c, 10000, 26);
    let op = |n: &str| ops.join(n).to_str().unwrap().to_string();
    let exec_job = job_toml(
        "chaos-exec",
        "signs.csv",
        "out/chaos.txt",
        4000.0,
        "exactly-once",
        &[
            (
                3,
                &op("filter.py"),
                &["7", "Punched Telespar", "--key-col", "9"],
            ),
            (3, &op("count.py"), &["9"]),
        ],
    );
    let builtin_job = job_toml(
        "chaos-builtin",
        "signs.csv",
        "out/chaos.txt",
        4000.0,
        "exactly-once",
        &[
            (3, "filter", &["Punched Telespar"]),
            (3, "count-by", &["9"]),
        ],
    );
    c.file("chaos-exec.toml", &exec_job);
    c.file("chaos-builtin.toml", &builtin_job);
    let mut rng = Rng::new(
        std::env::var("RAINSTORM_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(99),
    );
    for round in 0..rounds {
        let file = if round % 2 == 0 {
            "chaos-exec.toml"
        } else {
            "chaos-builtin.toml"
        };
        let id = c.submit(file);
        let mut points: Vec<u64> = (0..3).map(|_| 500 + rng.below(9000)).collect();
        points.sort();
        for (k, at) in points.into_iter().enumerate() {
            wait_source(&c, &id, at);
            if job_progress(&c, &id)["status"] != "running" {
                break;
            }
            if k == 1 {
                // Kill a whole worker that runs something, then replace it.
                let ws = c.json(&["workers", "--json"]);
                let busy: Vec<String> = ws
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|w| w["state"] == "alive" && w["running_tasks"].as_u64() > Some(0))
                    .map(|w| w["id"].as_str().unwrap().to_string())
                    .collect();
                if let Some(victim) = busy.get(rng.below(busy.len().max(1) as u64) as usize) {
                    if let Some(i) = c.worker_index(victim) {
                        c.kill_worker(i);
                        c.add_worker();
                    }
                }
            } else if file == "chaos-exec.toml" {
                let stage = 1 + rng.below(2);
                if let Some(t) = running_task(&c, &id, stage) {
                    let pid = t["pid"].as_u64().unwrap().to_string();
                    // The task may end between listing and killing; that is not an error here.
                    let _ = c.run(&["kill-task", t["worker"].as_str().unwrap(), &pid]);
                }
            }
        }
        check_output(&c, &id, "out/chaos.txt", &signs.app2());
        eprintln!("chaos round {round} ({file}) exact");
    }
}

/// The first stage's log is the source file: a first-stage task killed after the source
/// finished replays its partition of the file and still sees the (recorded) end of stream.
#[test]
fn first_stage_task_killed_after_the_source_finished_replays_the_file() {
    let c = Cluster::start(2, 5.0);
    let (signs, _) = setup(&c, 8000, 27);
    let slow = write_exec(&c.dir.path().join("slow.py"), &slow_echo(0.002));
    let job = job_toml(
        "first-stage",
        "signs.csv",
        "out/first.txt",
        0.0,
        "exactly-once",
        &[(2, slow.to_str().unwrap(), &[]), (2, "identity", &[])],
    );
    c.file("first.toml", &job);
    let id = c.submit("first.toml");
    wait_for(
        "the source to finish while stage 1 still works",
        LONG,
        || {
            let finished = c
                .worker_logs()
                .lines()
                .any(|l| l.contains("source finished") && l.contains(&id));
            let busy = c
                .tasks(&id)
                .iter()
                .any(|t| t["stage"] == 1 && t["state"] == "running");
            (finished && busy).then_some(())
        },
    );
    kill_task(&c, &id, 1);
    let want = signs.all_lines();
    let j = check_output(&c, &id, "out/first.txt", &want);
    assert!(j["recoveries"].as_u64().unwrap() >= 1, "{j}");
    let replayed = c
        .worker_logs()
        .lines()
        .any(|l| l.contains("recovered from the source file") && l.contains("ended=true"));
    assert!(
        replayed,
        "the replacement did not replay the source file with its end of stream"
    );
}

fn counts(lines: &[String]) -> std::collections::HashMap<&str, usize> {
    let mut m = std::collections::HashMap::new();
    for l in lines {
        *m.entry(l.as_str()).or_default() += 1;
    }
    m
}

/// At-least-once: a crash restarts the pipeline from the source in a new epoch; nothing is
/// lost, duplicates are allowed. (It used to lose a line now and then: a new epoch's sender
/// could reach a receiver of the old epoch that was not stopped yet, which acknowledged and
/// then dropped it. Receivers are now fenced by attempt and epoch; docs/exactly-once.md.)
#[test]
fn at_least_once_loses_nothing_through_a_kill() {
    let c = Cluster::start(3, 5.0);
    let (signs, ops) = setup(&c, 12000, 28);
    let op = |n: &str| ops.join(n).to_str().unwrap().to_string();
    let job = job_toml(
        "alo",
        "signs.csv",
        "out/alo.txt",
        1500.0,
        "at-least-once",
        &[
            (
                2,
                &op("filter.py"),
                &["7", "Punched Telespar", "--key-col", "9"],
            ),
            (2, &op("count.py"), &["9"]),
        ],
    );
    c.file("alo.toml", &job);
    let id = c.submit("alo.toml");
    wait_source(&c, &id, 5000);
    kill_task(&c, &id, 2);
    let j = c.wait_job(&id, LONG);
    assert_eq!(j["status"], "succeeded", "{j}");
    assert!(j["recoveries"].as_u64().unwrap() >= 1, "{j}");
    let got = sorted_lines(&c.store_file("out/alo.txt"));
    let want = signs.app2();
    let have = counts(&got);
    let lost: Vec<&str> = counts(&want)
        .into_iter()
        .filter(|(line, n)| have.get(line).copied().unwrap_or(0) < *n)
        .map(|(line, _)| line)
        .collect();
    assert!(
        lost.is_empty(),
        "lost {lost:?} under at-least-once; job {j}\n{}",
        c.leader_log()
    );
}

/// At-most-once never re-runs work: a crash fails the job, and nothing is duplicated.
#[test]
fn at_most_once_never_duplicates() {
    let c = Cluster::start(2, 5.0);
    let (signs, ops) = setup(&c, 12000, 29);
    let op = |n: &str| ops.join(n).to_str().unwrap().to_string();
    let job = job_toml(
        "amo",
        "signs.csv",
        "out/amo.txt",
        1500.0,
        "at-most-once",
        &[
            (
                2,
                &op("filter.py"),
                &["7", "Punched Telespar", "--key-col", "9"],
            ),
            (2, &op("count.py"), &["9"]),
        ],
    );
    c.file("amo.toml", &job);
    let id = c.submit("amo.toml");
    wait_source(&c, &id, 5000);
    kill_task(&c, &id, 2);
    let j = c.wait_job(&id, LONG);
    assert_eq!(j["status"], "failed", "{j}");
    assert!(j["error"].as_str().unwrap().contains("at-most-once"), "{j}");
    let got = sorted_lines(&c.store_file("out/amo.txt"));
    let want = counts(&signs.app2())
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect::<std::collections::HashMap<_, _>>();
    for (line, n) in counts(&got) {
        assert!(
            n <= *want.get(line).unwrap_or(&0),
            "{line:?} appeared {n} times under at-most-once"
        );
    }
}

/// War story: "a process hung for hours with no error". Liveness is observed: a task with
/// input waiting and no progress is declared stalled, stopped and restarted.
#[test]
fn stalled_task_is_detected_and_restarted() {
    // Enough input that the hung operator cannot take all of it (about 650 KB per task):
    // the task waits inside a write to it. With 6,000 rows all of a task's input could fit
    // in the operator's pipe and the task's writer, and the stall was then, rightly, the one
    // after the last input (the suite's CI met it). Its output is not held back: the
    // operator, not a peer, is named.
    stall_case(
        20000,
        30,
        "stall",
        "its operator has taken none of the input handed to it",
    );
}

/// A hung operator that already received all its input (so its inbox is empty) is a stall too:
/// the task is draining, which is pending work. The stall names the operator, not a peer
/// (hostile probe 12: a process that closed its output and never exited was blamed on "a
/// task it sends to").
#[test]
fn a_task_stalled_after_its_last_input_is_detected_and_restarted() {
    // So little input that all of it fits in the operator's pipe: the hang comes after the
    // last input, while the operator should be draining, with nothing left in the inbox.
    stall_case(
        100,
        31,
        "stall-drain",
        "every input ended and its operator has not finished",
    );
}

/// A job whose operator hangs on its first attempt (a marker file makes later attempts
/// behave): the stall must be detected and the task restarted, with exact output.
/// `cause`: what the leader's stall warning says.
fn stall_case(rows: usize, seed: u64, name: &str, cause: &str) {
    let c = Cluster::start_with(2, 5.0, &["--stall-timeout", "8"]);
    let (signs, _) = setup(&c, rows, seed);
    let marker = c.dir.path().join("hung-once");
    let op = write_exec(
        &c.dir.path().join("hang_once.py"),
        &format!(
            "#!/usr/bin/env python3\nimport os, sys, time\nfirst = False\ntry:\n    fd = os.open({:?}, os.O_CREAT | os.O_EXCL)\n    first = True\nexcept FileExistsError:\n    pass\nfor line in sys.stdin:\n    while first:\n        time.sleep(3600)\n    sys.stdout.write(line)\nsys.stdout.flush()\n",
            marker.to_str().unwrap()
        ),
    );
    let sink = format!("out/{name}.txt");
    let job = job_toml(
        name,
        "signs.csv",
        &sink,
        0.0,
        "exactly-once",
        &[(2, op.to_str().unwrap(), &[])],
    );
    c.file(&format!("{name}.toml"), &job);
    let id = c.submit(&format!("{name}.toml"));
    let j = check_output(&c, &id, &sink, &signs.all_lines());
    assert!(j["recoveries"].as_u64().unwrap() >= 1, "{j}");
    let log = c.leader_log();
    assert!(log.contains("stalled"), "no stall reported");
    assert!(log.contains(cause), "the stall does not say {cause:?}");
}

/// The source and the sink are tasks on workers like any other, so the leader carries no
/// tuple and a worker dying under either is recovered like any task: SIGKILL the worker that
/// runs the sink, then the one that runs the source, and the output is still exact — in the
/// output file and for a follower attached all along, which prints every line exactly once.
#[test]
fn workers_running_the_sink_and_then_the_source_die_and_the_output_is_exact() {
    let mut c = Cluster::start(4, 1.5);
    let (signs, _) = setup(&c, 12000, 31);
    let job = job_toml(
        "edges",
        "signs.csv",
        "out/edges.txt",
        // Slow enough that the source still reads after the sink's worker was killed and
        // its sink moved, on a machine running the whole suite (at 2,500 lines/s it once had
        // read every line before the sink held any output).
        1200.0,
        "exactly-once",
        &[
            (3, "filter", &["Punched Telespar"]),
            (2, "count-by", &["9"]),
        ],
    );
    c.file("edges.toml", &job);
    let id = c.submit("edges.toml");
    // The leader has no data plane: the only port it listens on is its API's.
    let api: u16 = c.url.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(listening_ports(c.leader_pid()), vec![api]);
    let follower = Follower::start(&c, &["follow", &id], "follow.log");
    let on_worker = |c: &Cluster, stage: u64| {
        let t = c.tasks(&id).into_iter().find(|t| t["stage"] == stage)?;
        let w = t["worker"].as_str()?.to_string();
        (t["state"] == "running").then_some((w, t))
    };
    // The sink holds some output: kill the worker it runs on.
    let (sink_worker, _) = wait_for("the sink to hold output", LONG, || {
        on_worker(&c, 3).filter(|(_, t)| t["tuples_in"].as_u64() > Some(0))
    });
    let source = c.tasks(&id).into_iter().find(|t| t["stage"] == 0);
    assert_eq!(source.map(|t| t["operator"].clone()), Some("source".into()));
    c.kill_worker(c.worker_index(&sink_worker).expect("the sink's worker"));
    let (new_sink, _) = wait_for("the sink to run again elsewhere", LONG, || {
        on_worker(&c, 3).filter(|(w, t)| *w != sink_worker && t["attempt"].as_u64() >= Some(1))
    });
    assert_ne!(new_sink, sink_worker);
    // Then the source, wherever it runs now, while it still reads.
    let (source_worker, _) = wait_for("the source to run", LONG, || on_worker(&c, 0));
    let j = job_progress(&c, &id);
    assert!(
        j["source_tuples"].as_u64() < Some(signs.rows.len() as u64),
        "the source finished before it could be killed: {j}"
    );
    c.kill_worker(c.worker_index(&source_worker).expect("the source's worker"));
    let j = check_output(&c, &id, "out/edges.txt", &signs.app2());
    assert!(j["recoveries"].as_u64() >= Some(2), "{j}");
    // The job's counters come from the source and sink tasks' reports.
    assert_eq!(
        j["sink_tuples"].as_u64(),
        Some(signs.app2().len() as u64),
        "{j}"
    );
    assert_eq!(
        j["source_tuples"].as_u64(),
        Some(signs.all_lines().len() as u64),
        "{j}"
    );
    // Without a store of their own, workers reach the leader's (the one way job data passes
    // through it besides followers); with S3 they do not (`tests/s3.rs`).
    assert!(c.metric("rainstorm_worker_store_requests_total") > Some(0));
    let (status, printed, log) = follower.finish(LONG);
    assert!(status.success(), "the follower failed: {log}");
    assert_no_line_twice(&printed);
    assert_same_text(
        "what the follower printed",
        &printed,
        &c.store_file("out/edges.txt"),
    );
}

/// A running exactly-once app2 job of executables (filter → count, 2 tasks each, 400 lines/s)
/// on one worker whose logs are never compacted, so a test finds each segment where it was
/// written: the cluster, the reference, the job's id and the store directory of its logs.
fn slow_logged_job(name: &str, seed: u64) -> (Cluster, Signs, String, std::path::PathBuf) {
    let mut c = Cluster::start(0, 5.0);
    c.add_worker_env(&[("RAINSTORM_LOG_COMPACT_FANIN", "0")]);
    c.wait_alive(1);
    let (signs, ops) = setup(&c, 4000, seed);
    let op = |n: &str| ops.join(n).to_str().unwrap().to_string();
    let job = job_toml(
        name,
        "signs.csv",
        &format!("out/{name}.txt"),
        400.0,
        "exactly-once",
        &[
            (
                2,
                &op("filter.py"),
                &["7", "Punched Telespar", "--key-col", "9"],
            ),
            (2, &op("count.py"), &["9"]),
        ],
    );
    c.file(&format!("{name}.toml"), &job);
    let id = c.submit(&format!("{name}.toml"));
    let logs = c.dir.path().join("leader/store/logs").join(&id);
    (c, signs, id, logs)
}

/// The first count task (2.0), running with input.
fn first_count(c: &Cluster, id: &str, stage: u64) -> Option<Value> {
    running_task(c, id, stage).filter(|t| t["task"] == 0)
}

/// Waits (from now) for job `id` (named `name` by [`slow_logged_job`]) to fail within 30 s
/// with a cause that names `says`, and checks that whatever output it left holds only lines
/// of the reference.
fn fails_at_once_saying(c: &Cluster, signs: &Signs, id: &str, name: &str, says: &str) {
    let started = std::time::Instant::now();
    let j = c.wait_job(id, LONG);
    let took = started.elapsed();
    assert_eq!(j["status"], "failed", "{j}\n{}", c.diagnose());
    let why = j["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("cannot recover") && why.contains(says),
        "{why}"
    );
    assert!(took < Duration::from_secs(30), "failed after {took:?}");
    let want: std::collections::HashSet<String> = signs.app2().into_iter().collect();
    let sink = format!("out/{name}.txt");
    for line in sorted_lines(&c.store_file(&sink)) {
        assert!(
            want.contains(&line),
            "a line the reference does not have: {line:?}"
        );
    }
}

/// Someone who can write to the store but lacks the cluster secret copies another task's
/// valid log segment over one of a running count's. When that count restarts (its process
/// killed), its replay refuses the segment, "not sealed by this cluster's secret", and the
/// job fails at once saying so: before, the copy was replayed as the count's own input (wrong
/// output, a hostile probe), and then, once refused, retried through every restart (some
/// 2.5 minutes, a later probe). Whatever output the failed job leaves is the reference's.
#[test]
fn a_log_segment_copied_from_another_task_fails_the_job_at_once_with_no_wrong_line() {
    let (c, signs, id, logs) = slow_logged_job("tamper", 17);
    let seg = |i: u32| logs.join(format!("2.{i}")).join("000000-0000000000.seg");
    wait_for("both counts' first log segments", LONG, || {
        (seg(0).exists() && seg(1).exists()).then_some(())
    });
    std::fs::copy(seg(1), seg(0)).unwrap();
    kill_matching(&c, &id, 2, first_count);
    fails_at_once_saying(
        &c,
        &signs,
        &id,
        "tamper",
        "not sealed by this cluster's secret",
    );
}

/// A count's log loses an object that said what it recovered (its attempt's manifest,
/// deleted from the store): its next attempt recovers less than its upstream knows it
/// acknowledged. That reads the same on every attempt, so the job fails at once saying so
/// (a probe saw "protocol violation", and restarts until the last).
#[test]
fn a_log_missing_what_it_acknowledged_fails_the_job_at_once_saying_so() {
    let (c, signs, id, logs) = slow_logged_job("lose", 23);
    let log = logs.join("2.0");
    wait_for("the count's first segment", LONG, || {
        log.join("000000-0000000000.seg").exists().then_some(())
    });
    kill_matching(&c, &id, 2, first_count);
    // Its second attempt recovered (its manifest) and committed input of its own.
    wait_for("the second attempt's first segment", LONG, || {
        log.join("000001-0000000000.seg").exists().then_some(())
    });
    let second = |c: &Cluster, id: &str, stage: u64| {
        running_task(c, id, stage).filter(|t| t["task"] == 0 && t["attempt"] == 1)
    };
    std::fs::remove_file(log.join("000001-manifest")).unwrap();
    kill_matching(&c, &id, 2, second);
    fails_at_once_saying(&c, &signs, &id, "lose", "holds less than was acknowledged");
}
