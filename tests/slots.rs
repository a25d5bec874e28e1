//! Capacity and drain with real processes: a job larger than the free slots waits as
//! `pending` (first come, first served) and runs when a worker joins; no worker holds more
//! operator tasks than its slots; slots come back when jobs end; a worker drained by SIGTERM
//! or `rainstorm drain` hands its tasks over mid-job, is listed `draining` then `left`, exits
//! 0, and the exactly-once output is exact.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn numbered(lines: usize) -> String {
    (1..=lines).map(|i| format!("line {i:05}\n")).collect()
}

fn status(c: &Cluster, id: &str) -> (String, String) {
    let j = c.json(&["job", id, "--json"]);
    (
        j["status"].as_str().unwrap_or_default().to_string(),
        j["pending_reason"].as_str().unwrap_or_default().to_string(),
    )
}

/// Operator tasks not ended, per worker, across every job: a task of stage 1 up to its own
/// job's last operator stage (a job of one operator stage has its sink at stage 2, and a sink
/// takes no slot: counting it as an operator made this check fail now and then, when a short
/// job's sink shared a worker with two operator tasks).
fn operator_tasks_per_worker(c: &Cluster) -> BTreeMap<String, u32> {
    let mut operators: BTreeMap<String, u64> = BTreeMap::new();
    let mut m = BTreeMap::new();
    for t in c.json(&["tasks", "--json"]).as_array().unwrap() {
        let job = t["job"].as_str().unwrap().to_string();
        let last_operator = *operators.entry(job.clone()).or_insert_with(|| {
            let j = c.json(&["job", &job, "--json"]);
            j["stages"].as_array().map_or(0, |s| s.len() as u64)
        });
        let stage = t["stage"].as_u64().unwrap();
        let live = !matches!(
            t["state"].as_str().unwrap(),
            "finished" | "failed" | "cancelled"
        );
        if live && stage >= 1 && stage <= last_operator {
            *m.entry(t["worker"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    m
}

#[test]
fn a_job_larger_than_the_free_slots_waits_pending_and_runs_when_a_worker_joins() {
    let mut c = Cluster::start(0, 5.0);
    c.worker_slots = 2;
    c.add_worker();
    c.wait_alive(1);
    let ws = c.json(&["workers", "--json"]);
    assert_eq!(ws[0]["slots"], 2, "{ws}");
    assert_eq!(ws[0]["slots_used"], 0, "{ws}");

    let input = numbered(400);
    c.file("in.txt", &input);
    c.ok(&["put", "in.txt", "in.txt"]);
    // Four operator tasks: more than the two free slots.
    let big = job_toml(
        "big",
        "in.txt",
        "big.txt",
        200.0,
        "exactly-once",
        &[(2, "identity", &[]), (2, "identity", &[])],
    );
    c.file("big.toml", &big);
    let a = c.submit("big.toml");
    let (s, why) = status(&c, &a);
    assert_eq!(s, "pending");
    // More than the cluster has in all: only a new worker can start it, and it says so.
    assert_eq!(
        why,
        "waiting for 4 free slots: 2 free on 1 worker; the live workers have 2 in all, so it \
         starts only once workers with 2 more join (or it is cancelled)"
    );
    // One task fits: it runs now, not behind a job only new workers can start (hostile
    // probe 19: such a job stopped every later one until it was cancelled).
    let small = |c: &Cluster, name: &str| {
        c.file(
            &format!("{name}.toml"),
            &job_toml(
                name,
                "in.txt",
                &format!("{name}.txt"),
                0.0,
                "exactly-once",
                &[(1, "identity", &[])],
            ),
        );
        c.submit(&format!("{name}.toml"))
    };
    let b = small(&c, "small");
    let j = c.wait_job(&b, Duration::from_secs(60));
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_eq!(status(&c, &a).0, "pending");

    // A worker with two more slots joins: the big job fits the cluster now, so it goes first
    // (first come, first served): a job submitted after it waits behind it until it starts.
    c.add_worker();
    c.wait_alive(2);
    // Counted as taking tasks once the leader has heard from it (its first heartbeat): until
    // then the big job still needs more than the workers that take tasks have.
    wait_for("both workers' heartbeats", Duration::from_secs(20), || {
        let ws = c.json(&["workers", "--json"]);
        let heard = ws
            .as_array()?
            .iter()
            .filter(|w| w["shared_conns"].is_object());
        (heard.count() >= 2).then_some(())
    });
    let d = small(&c, "after");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (sa, _) = status(&c, &a);
        let (sd, why) = status(&c, &d);
        assert!(
            !(sa == "pending" && sd != "pending"),
            "the later job started before the earlier one"
        );
        // Behind the big job while it waits, then for the slots it took.
        assert!(
            sd != "pending"
                || why.is_empty()
                || why.contains(&format!("behind {a}"))
                || (sa != "pending" && why.contains("free slot")),
            "{sa}: {why}"
        );
        for (w, n) in operator_tasks_per_worker(&c) {
            assert!(n <= 2, "worker {w} holds {n} operator tasks on 2 slots");
        }
        if sa == "succeeded" && sd == "succeeded" {
            break;
        }
        assert!(
            !["failed", "cancelled"].contains(&sa.as_str())
                && !["failed", "cancelled"].contains(&sd.as_str()),
            "{sa} {sd}\n{}",
            c.diagnose()
        );
        assert!(Instant::now() < deadline, "{}", c.diagnose());
        std::thread::sleep(Duration::from_millis(50));
    }
    let want = sorted_lines(&input);
    assert_same("big", &sorted_lines(&c.store_file("big.txt")), &want);
    assert_same("small", &sorted_lines(&c.store_file("small.txt")), &want);
    assert_same("after", &sorted_lines(&c.store_file("after.txt")), &want);
    // Every slot is free again.
    for w in c.json(&["workers", "--json"]).as_array().unwrap() {
        assert_eq!(w["slots_used"], 0, "{w}");
    }
}

/// Waits until worker `id` is listed in one of `states`; how long it took and which.
fn wait_state(c: &Cluster, id: &str, states: &[&str], limit: Duration) -> (Duration, String) {
    let t0 = Instant::now();
    let state = wait_for(&format!("worker {id} to be {states:?}"), limit, || {
        let ws = c.json(&["workers", "--json"]);
        ws.as_array()?
            .iter()
            .find(|w| w["id"] == id && states.iter().any(|s| w["state"] == *s))
            .map(|w| w["state"].as_str().unwrap_or_default().to_string())
    });
    (t0.elapsed(), state)
}

/// Waits for worker process `i` to exit; its status.
fn wait_exit(c: &mut Cluster, i: usize, limit: Duration) -> std::process::ExitStatus {
    wait_for("the drained worker to exit", limit, || {
        c.workers[i].try_wait().unwrap()
    })
}

/// A job of two identity stages of `tasks` tasks each over 3,000 lines at 500 a second, once
/// it has made progress: its id and its input.
fn running_job(c: &Cluster, tasks: u32) -> (String, String) {
    let input = numbered(3000);
    c.file("in.txt", &input);
    c.ok(&["put", "in.txt", "in.txt"]);
    let job = job_toml(
        "drained",
        "in.txt",
        "out.txt",
        500.0,
        "exactly-once",
        &[(tasks, "identity", &[]), (tasks, "identity", &[])],
    );
    c.file("job.toml", &job);
    let id = c.submit("job.toml");
    wait_for("the job to make progress", Duration::from_secs(30), || {
        (c.json(&["job", &id, "--json"])["sink_tuples"].as_u64()? > 300).then_some(())
    });
    (id, input)
}

/// The worker running the most operator tasks.
fn busiest(c: &Cluster) -> String {
    operator_tasks_per_worker(c)
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(w, _)| w)
        .unwrap()
}

/// SIGTERM on a worker while the leader does not answer (paused): the worker asks again
/// until the leader is back, its tasks running meanwhile, then drains as usual: listed
/// `left`, exit 0, and the job's tasks moved without a failure. (It stopped at once, went on
/// beating while it stopped, took new tasks from the resumed leader, and was declared dead
/// with its tasks failed; hostile probe 21.)
#[test]
fn a_worker_told_to_drain_while_the_leader_is_paused_drains_once_it_is_back() {
    let mut c = Cluster::start(3, 5.0);
    let (id, input) = running_job(&c, 2);
    let worker = busiest(&c);
    let i = c.worker_index(&worker).unwrap();
    let signal = |sig: &str, pid: u32| {
        let sent = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    let leader = c.leader_pid();
    signal("-STOP", leader);
    signal("-TERM", c.workers[i].id());
    let log = c.dir.path().join(format!("worker-{i}.log"));
    wait_for(
        "the worker to find the leader silent",
        Duration::from_secs(30),
        || {
            let text = std::fs::read_to_string(&log).ok()?;
            text.contains("asking again until the drain's timeout")
                .then_some(())
        },
    );
    assert!(
        c.workers[i].try_wait().unwrap().is_none(),
        "it stopped while its leader was away"
    );
    signal("-CONT", leader);
    let status = wait_exit(&mut c, i, Duration::from_secs(60));
    assert!(status.success(), "a drained worker exits 0: {status:?}");
    wait_state(&c, &worker, &["left"], Duration::from_secs(10));
    let j = c.wait_job(&id, Duration::from_secs(60));
    assert_eq!(j["status"], "succeeded", "{j}\n{}", c.diagnose());
    assert_eq!(j["failures"], 0, "a move is not a failure: {j}");
    assert_same(
        "paused",
        &sorted_lines(&c.store_file("out.txt")),
        &sorted_lines(&input),
    );
}

#[test]
fn drained_workers_hand_their_tasks_over_mid_job_and_the_exactly_once_output_is_exact() {
    let mut c = Cluster::start(4, 5.0);
    let (id, input) = running_job(&c, 3);
    // The worker running the most operator tasks drains by SIGTERM.
    let first = busiest(&c);
    let i = c.worker_index(&first).unwrap();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &c.workers[i].id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    // Listed as leaving at once (it may have drained and left already).
    let (took, state) = wait_state(&c, &first, &["draining", "left"], Duration::from_secs(2));
    println!("SIGTERM → listed {state} in {} ms", took.as_millis());
    let status = wait_exit(&mut c, i, Duration::from_secs(30));
    assert!(status.success(), "a drained worker exits 0: {status:?}");
    wait_state(&c, &first, &["left"], Duration::from_secs(5));

    // Another, through the CLI, while the job still runs.
    let second = busiest(&c);
    assert_ne!(second, first);
    let said = c.ok(&["drain", &second]);
    println!("{said}");
    let j = c.tasks(&id);
    assert!(j
        .iter()
        .all(|t| t["worker"] != first.as_str() || t["state"] != "running"));
    let k = c.worker_index(&second).unwrap();
    let status = wait_exit(&mut c, k, Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
    wait_state(&c, &second, &["left"], Duration::from_secs(5));
    // Neither drained worker still runs anything of the job.
    for t in c.tasks(&id) {
        let on = t["worker"].as_str().unwrap();
        if on == first || on == second {
            assert_ne!(t["state"], "running", "{t}");
        }
    }

    let j = c.wait_job(&id, Duration::from_secs(60));
    assert_eq!(j["status"], "succeeded", "{j}\n{}", c.diagnose());
    assert_eq!(j["failures"], 0, "a move is not a failure: {j}");
    let out = c.store_file("out.txt");
    assert_no_line_twice(&out);
    assert_same("drained", &sorted_lines(&out), &sorted_lines(&input));
    for w in c.json(&["workers", "--json"]).as_array().unwrap() {
        assert_eq!(w["slots_used"], 0, "{w}");
    }
    // A worker that left cannot be drained again.
    let refused = c.run(&["drain", &first]);
    assert!(!refused.status.success());
}

#[test]
fn a_draining_worker_keeps_at_most_once_tasks_and_a_second_sigterm_stops_it_at_once() {
    let mut c = Cluster::start(2, 5.0);
    let input = numbered(3000);
    c.file("in.txt", &input);
    c.ok(&["put", "in.txt", "in.txt"]);
    // At-most-once work cannot re-run, so a drain leaves it where it is: 30 s of it.
    let job = job_toml(
        "kept",
        "in.txt",
        "kept.txt",
        100.0,
        "at-most-once",
        &[(2, "identity", &[])],
    );
    c.file("job.toml", &job);
    let id = c.submit("job.toml");
    wait_for("the job to make progress", Duration::from_secs(30), || {
        (c.json(&["job", &id, "--json"])["sink_tuples"].as_u64()? > 20).then_some(())
    });
    let on = operator_tasks_per_worker(&c)
        .into_iter()
        .next()
        .map(|(w, _)| w)
        .unwrap();
    let i = c.worker_index(&on).unwrap();
    let pid = c.workers[i].id().to_string();
    let term = || {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    term();
    wait_state(&c, &on, &["draining"], Duration::from_secs(2));
    // Its task stays (and the job goes on) while it drains.
    let before = c.json(&["job", &id, "--json"])["sink_tuples"]
        .as_u64()
        .unwrap();
    wait_for(
        "the job to go on while the worker drains",
        Duration::from_secs(10),
        || (c.json(&["job", &id, "--json"])["sink_tuples"].as_u64()? > before + 20).then_some(()),
    );
    assert!(
        c.workers[i].try_wait().unwrap().is_none(),
        "it waits for its task"
    );
    let t0 = Instant::now();
    term();
    let status = wait_exit(&mut c, i, Duration::from_secs(5));
    assert!(
        !status.success(),
        "a second SIGTERM stops it at once: {status:?}"
    );
    println!("second SIGTERM → exit in {} ms", t0.elapsed().as_millis());
}

/// An autoscaled stage grows onto a worker that joined after the job was placed. Its
/// standing-by positions were all put on the two full workers, so every grow was refused
/// ("no free slot on a worker that runs a standing-by task") for the rest of the job while
/// the new worker sat idle (hostile probe 10). Now a standby task moves to the new worker, as
/// a move and not a failure, the stage grows there, and the output is exact.
#[test]
fn an_autoscaled_stage_grows_onto_a_worker_that_joined_later() {
    let mut c = Cluster::start(0, 5.0);
    c.worker_slots = 2;
    c.add_worker();
    c.add_worker();
    c.wait_alive(2);
    let input = numbered(3000);
    c.file("in.txt", &input);
    c.ok(&["put", "in.txt", "in.txt"]);
    // Four operator tasks own key groups on the four slots; the autoscaler never decides
    // (its band is wide), the grow is asked for by hand.
    let job = r#"name = "grows"
delivery = "exactly-once"
[source]
path = "in.txt"
rate = 300
[sink]
path = "out.txt"
[autoscale]
low = 1
high = 1000000
max_tasks = 3
[[stages]]
tasks = 2
op = "identity"
[[stages]]
tasks = 2
op = "identity"
"#;
    c.file("grows.toml", job);
    let id = c.submit("grows.toml");
    wait_for("the job to run", Duration::from_secs(30), || {
        (c.json(&["job", &id, "--json"])["sink_tuples"].as_u64()? > 0).then_some(())
    });
    let refused = c.run(&["scale", &id, "1", "3"]);
    assert!(!refused.status.success(), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("no free slot"),
        "{refused:?}"
    );
    c.add_worker();
    c.wait_alive(3);
    let joined = c
        .json(&["workers", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["slots_used"] == 0)
        .map(|w| w["id"].as_str().unwrap().to_string())
        .expect("the new worker");
    // The first ask moves a standby task to the new worker; a later one grows onto it.
    wait_for(
        "the grow onto the new worker",
        Duration::from_secs(30),
        || {
            let _ = c.run(&["scale", &id, "1", "3"]);
            let j = c.json(&["job", &id, "--json"]);
            let grown = j["stage_tasks"][0].as_u64() == Some(3);
            let there = c.tasks(&id).iter().any(|t| {
                t["stage"] == 1 && t["worker"] == joined.as_str() && t["state"] == "running"
            });
            (grown && there).then_some(())
        },
    );
    c.ok(&["set-rate", &id, "0"]);
    let j = c.wait_job(&id, Duration::from_secs(60));
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_eq!(j["failures"], 0, "a move is not a failure: {j}");
    assert_same(
        "grown",
        &sorted_lines(&c.store_file("out.txt")),
        &sorted_lines(&input),
    );
    for (w, n) in operator_tasks_per_worker(&c) {
        assert!(n <= 2, "worker {w} holds {n} operator tasks on 2 slots");
    }
}

/// A worker whose drain timed out with a task that had nowhere to go left the cluster, and
/// the task waits for a slot. The views said it still ran there: `tasks` listed it running on
/// the departed worker with its last rate, `workers` the departed worker with a running task
/// and a slot used (hostile probe 10). Now it is listed `waiting`, the worker that left holds
/// nothing, and once a worker with room joins the job ends exact.
#[test]
fn a_task_left_behind_by_a_drain_that_timed_out_is_listed_waiting() {
    let mut c = Cluster::start(0, 5.0);
    c.worker_slots = 2;
    c.add_worker_env(&[("RAINSTORM_DRAIN_TIMEOUT", "1")]);
    c.add_worker();
    c.wait_alive(2);
    let input = numbered(3000);
    c.file("in.txt", &input);
    c.ok(&["put", "in.txt", "in.txt"]);
    // Three operator tasks on four slots: the drained worker's cannot all move.
    let job = job_toml(
        "left-behind",
        "in.txt",
        "out.txt",
        300.0,
        "exactly-once",
        &[(2, "identity", &[]), (1, "identity", &[])],
    );
    c.file("job.toml", &job);
    let id = c.submit("job.toml");
    wait_for("the job to run", Duration::from_secs(30), || {
        (c.json(&["job", &id, "--json"])["sink_tuples"].as_u64()? > 0).then_some(())
    });
    let drained = c
        .json(&["workers", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap().to_string())
        .find(|w| c.worker_index(w) == Some(0))
        .expect("worker 0's id");
    c.ok(&["drain", &drained]);
    let status = wait_exit(&mut c, 0, Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
    wait_state(&c, &drained, &["left"], Duration::from_secs(5));
    wait_for("a task listed waiting", Duration::from_secs(10), || {
        let tasks = c.tasks(&id);
        let waiting = tasks.iter().any(|t| t["state"] == "waiting");
        let there = tasks
            .iter()
            .any(|t| t["worker"] == drained.as_str() && t["state"] == "running");
        (waiting && !there).then_some(())
    });
    let ws = c.json(&["workers", "--json"]);
    let left = ws
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == drained.as_str())
        .unwrap();
    assert_eq!(
        (&left["running_tasks"], &left["slots_used"]),
        (&0.into(), &0.into()),
        "{ws}"
    );
    let shown = c.ok(&["tasks"]);
    assert!(shown.contains("waiting"), "{shown}");
    // A worker with room joins: the task runs there, and nothing was lost.
    c.add_worker();
    c.ok(&["set-rate", &id, "0"]);
    let j = c.wait_job(&id, Duration::from_secs(60));
    assert_eq!(j["status"], "succeeded", "{j}\n{}", c.diagnose());
    assert_eq!(j["failures"], 0, "a move is not a failure: {j}");
    assert_same(
        "left behind",
        &sorted_lines(&c.store_file("out.txt")),
        &sorted_lines(&input),
    );
}
