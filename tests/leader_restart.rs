//! The leader as a process that stops, dies and comes back (issue 11): one leader per data
//! dir, a prompt SIGTERM, durable job records across a SIGKILL and restart, and job ids that
//! are never reused.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A job over `signs.csv` that runs for a long time (rate-limited), on built-in operators.
fn slow_job(c: &Cluster, name: &str, sink: &str, rate: f64) -> String {
    let toml = job_toml(
        name,
        "signs.csv",
        sink,
        rate,
        "exactly-once",
        &[
            (2, "filter", &["Punched Telespar"]),
            (2, "count-by", &["9"]),
        ],
    );
    c.file(&format!("{name}.toml"), &toml);
    c.submit(&format!("{name}.toml"))
}

fn jobs(c: &Cluster) -> Vec<serde_json::Value> {
    c.json(&["jobs", "--json"]).as_array().unwrap().clone()
}

/// `n` signs lines (seed `seed`), written and put into the store as `signs.csv`.
fn put_signs(c: &Cluster, n: usize, seed: u64) -> Signs {
    let signs = Signs::generate(n, seed);
    signs.write(&c.dir.path().join("signs.csv"));
    c.ok(&["put", "signs.csv", "signs.csv"]);
    signs
}

/// Waits until job `id`'s counter `field` (`source_tuples`, `sink_tuples`) is above `above`.
fn wait_counted(c: &Cluster, id: &str, field: &str, above: u64) {
    wait_for(
        &format!("job {id}'s {field} to pass {above}"),
        Duration::from_secs(20),
        || {
            let j = c.json(&["job", id, "--json"]);
            (j[field].as_u64()? > above).then_some(())
        },
    );
}

#[test]
fn a_second_leader_on_the_same_data_dir_exits_at_once_naming_the_dir_and_the_holder() {
    let c = Cluster::start(1, 5.0);
    let data_dir = c.dir.path().join("leader");
    let t0 = Instant::now();
    let out = Command::new(bin())
        .args(["leader", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .env("RAINSTORM_TOKEN", &c.token)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let took = t0.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the second leader must fail: {err}");
    assert!(
        took < Duration::from_secs(5),
        "it must exit at once, took {took:?}"
    );
    assert!(err.contains("in use by another leader"), "{err}");
    assert!(err.contains(&data_dir.display().to_string()), "{err}");
    assert!(err.contains(&format!("pid {}", c.leader_pid())), "{err}");
    // The first one still serves.
    let ws = c.json(&["workers", "--json"]);
    assert_eq!(ws.as_array().unwrap().len(), 1);
    c.ok(&["ls", ""]);
}

/// SIGTERM stops a leader within 2 s, its workers' long polls answered, and stops only the
/// leader: the running job is not cancelled (which wrote its partial output as final, found
/// by a hostile probe) but carried on by the next leader on the same data dir, and its
/// follower, whose stream was cut without a final status, reconnects to that leader and
/// prints every line once.
#[test]
fn sigterm_stops_a_leader_within_two_seconds_and_its_running_job_carries_on_under_the_next() {
    let mut c = Cluster::start(2, 5.0);
    let signs = put_signs(&c, 2000, 3);
    let toml = job_toml(
        "slow",
        "signs.csv",
        "out/slow.txt",
        300.0,
        "exactly-once",
        &[
            (2, "filter", &["Punched Telespar"]),
            (2, "count-by", &["9"]),
        ],
    );
    c.file("slow.toml", &toml);
    let follower = Follower::start(&c, &["submit", "slow.toml", "--follow"], "follow.log");
    let id = wait_for("the job to be listed", Duration::from_secs(20), || {
        Some(jobs(&c).first()?["id"].as_str()?.to_string())
    });
    wait_counted(&c, &id, "source_tuples", 20);
    // Both workers parked in their long polls: the leader must answer them, not wait them out.
    wait_for(
        "both workers' polls to wait",
        Duration::from_secs(20),
        || (c.metric("rainstorm_command_polls_waiting")? >= 2).then_some(()),
    );
    let args = c.leader_args_same_port();
    let (status, took) = c.sigterm_leader(Duration::from_secs(20));
    println!("leader SIGTERM → exit took {} ms", took.as_millis());
    let status = status.expect("the leader did not exit after SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(
        took < Duration::from_secs(3),
        "SIGTERM took {took:?} (must be within 2 s)"
    );
    let log = c.leader_log();
    assert!(!log.contains("status=Cancelled"), "{log}");
    // The next leader carries the job on; it was not ended by the stop.
    c.start_leader_again(&args);
    let j = c.json(&["job", &id, "--json"]);
    assert!(
        j["status"] == "running" || j["status"] == "succeeded",
        "{j}"
    );
    let done = c.wait_job(&id, Duration::from_secs(90));
    assert_eq!(done["status"], "succeeded", "{done}\n{}", c.diagnose());
    assert_same(
        "the output of the job whose leader was stopped",
        &sorted_lines(&c.store_file("out/slow.txt")),
        &signs.app2(),
    );
    // The follower reconnected and printed every line once, then the job's success.
    let (st, printed, err) = follower.finish(Duration::from_secs(60));
    assert!(st.success(), "follower: {st}\n{err}");
    assert_same(
        "what the follower printed",
        &sorted_lines(&printed),
        &signs.app2(),
    );
}

#[test]
fn after_a_sigkill_and_restart_old_jobs_are_listed_a_running_one_carries_on_and_ids_are_new() {
    let mut c = Cluster::start(2, 5.0);
    let signs = put_signs(&c, 3000, 11);
    let app2 = job_toml(
        "app2",
        "signs.csv",
        "out/app2.txt",
        0.0,
        "exactly-once",
        &[
            (2, "filter", &["Punched Telespar"]),
            (2, "count-by", &["9"]),
        ],
    );
    c.file("app2.toml", &app2);
    let first = c.submit("app2.toml");
    let j = c.wait_job(&first, Duration::from_secs(60));
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_same(
        "first run",
        &sorted_lines(&c.store_file("out/app2.txt")),
        &signs.app2(),
    );
    let tasks_before = c.tasks(&first);
    // A job still running when the leader dies carries on under the new leader.
    let slow = slow_job(&c, "slow", "out/slow.txt", 1000.0);
    wait_counted(&c, &slow, "sink_tuples", 0);
    c.restart_leader();

    let listed = jobs(&c);
    let find = |id: &str| {
        listed
            .iter()
            .find(|j| j["id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed after the restart: {listed:?}"))
            .clone()
    };
    let old = find(&first);
    assert_eq!(old["status"], "succeeded", "{old}");
    assert_eq!(old["sink_tuples"], j["sink_tuples"], "{old}");
    // Its latency is part of its record: the new leader, which never heard its sink, shows
    // it on (hostile probe 13 saw it go null).
    assert!(j["latency_ms"].is_object(), "{j}");
    let shown = c.json(&["job", &first, "--json"]);
    assert_eq!(shown["latency_ms"], j["latency_ms"], "{shown}");
    // So are its tasks as they were at its end (they vanished: hostile probe 13), none of
    // them shown as still running.
    let tasks_after = c.tasks(&first);
    let places = |ts: &[serde_json::Value]| -> Vec<(u64, u64)> {
        ts.iter()
            .map(|t| (t["stage"].as_u64().unwrap(), t["task"].as_u64().unwrap()))
            .collect()
    };
    assert_eq!(
        places(&tasks_after),
        places(&tasks_before),
        "{tasks_after:?}"
    );
    for t in &tasks_after {
        assert!(
            ["finished", "cancelled", "failed"].contains(&t["state"].as_str().unwrap()),
            "{t}"
        );
    }
    let sink_in = |ts: &[serde_json::Value]| ts.last().map(|t| t["tuples_in"].clone());
    assert_eq!(sink_in(&tasks_after), sink_in(&tasks_before));
    let carried = find(&slow);
    assert_eq!(carried["status"], "running", "{carried}");
    let done = c.wait_job(&slow, Duration::from_secs(90));
    assert_eq!(done["status"], "succeeded", "{done}\n{}", c.diagnose());
    assert_same(
        "the job the leader restart interrupted",
        &sorted_lines(&c.store_file("out/slow.txt")),
        &signs.app2(),
    );
    // Its input logs are removed once it ends.
    wait_for(
        "the carried-on job's logs to be removed",
        Duration::from_secs(30),
        || {
            let ls = c.ok(&["ls", &format!("logs/{slow}/")]);
            ls.trim().is_empty().then_some(())
        },
    );

    // Workers come back by themselves; a new job gets an id never used and exact output.
    c.wait_alive(2);
    let second = c.submit("app2.toml");
    assert!(second != first && second != slow, "{second} reused an id");
    let j2 = c.wait_job(&second, Duration::from_secs(60));
    assert_eq!(j2["status"], "succeeded", "{j2}");
    assert_same(
        "run after the restart",
        &sorted_lines(&c.store_file("out/app2.txt")),
        &signs.app2(),
    );
    println!("ids: before the restart {first}, {slow}; after it {second}");
    // The ids carry a number that only grows, across the restart.
    let n = |id: &str| -> u64 { id.split('-').nth(1).unwrap().parse().unwrap() };
    assert!(
        n(&second) > n(&slow) && n(&slow) > n(&first),
        "{first} {slow} {second}"
    );
}

/// Issue 11: an exactly-once job of executable stateful operators runs on through leader
/// SIGKILLs — once, twice in a row, and once while one of its tasks is killed too — and its
/// output equals the failure-free output exactly. The workers keep their tasks running while
/// the leader is away and rejoin under their old identities; the new leader adopts the tasks,
/// resumes the sink from its last commit and restarts the source.
#[test]
fn an_executable_job_carries_on_through_leader_sigkills_with_exact_output() {
    let mut c = Cluster::start(3, 5.0);
    let signs = put_signs(&c, 12000, 29);
    let ops = install_ops(c.dir.path());
    let op = |n: &str| ops.join(n).to_str().unwrap().to_string();
    let job = job_toml(
        "carry-on",
        "signs.csv",
        "out/carry.txt",
        800.0,
        "exactly-once",
        &[
            (
                2,
                &op("filter.py"),
                &["7", "Punched Telespar", "--key-col", "9"],
            ),
            (3, &op("count.py"), &["9"]),
            (2, &op("keyby.py"), &["1"]),
        ],
    );
    c.file("carry.toml", &job);
    let id = c.submit("carry.toml");
    // A follower attached all along must print every output line exactly once.
    let follower = Follower::start(&c, &["follow", &id], "follower.log");
    let emitted = |c: &Cluster| -> u64 {
        c.json(&["job", &id, "--json"])["source_tuples"]
            .as_u64()
            .unwrap_or(0)
    };
    let progressed_past = |c: &Cluster, n: u64| {
        wait_for("the job to move on", Duration::from_secs(60), || {
            let j = c.json(&["job", &id, "--json"]);
            assert_eq!(j["status"], "running", "{j}\n{}", c.diagnose());
            (j["sink_tuples"].as_u64()? > 0 && j["source_tuples"].as_u64()? > n).then_some(())
        });
    };
    progressed_past(&c, 1000);
    // Once.
    c.restart_leader();
    let after_first = emitted(&c);
    progressed_past(&c, after_first + 500);
    // Twice in a row, the second before the workers are surely back.
    c.restart_leader();
    c.restart_leader();
    let after_second = emitted(&c);
    progressed_past(&c, after_second + 500);
    // Once while a task is being killed.
    let victim = wait_for("a running count task", Duration::from_secs(30), || {
        c.tasks(&id)
            .into_iter()
            .find(|t| t["stage"] == 2 && t["state"] == "running" && t["pid"].is_u64())
    });
    let pid = victim["pid"].as_u64().unwrap().to_string();
    let worker = victim["worker"].as_str().unwrap().to_string();
    let killed = c.run(&["kill-task", &worker, &pid]);
    assert!(killed.status.success(), "{killed:?}");
    let seen = wait_for(
        "the leader to count the kill",
        Duration::from_secs(30),
        || {
            let j = c.json(&["job", &id, "--json"]);
            (j["failures"].as_u64()? >= 1).then(|| j["last_failure"].clone())
        },
    );
    c.restart_leader();
    let j = c.wait_job(&id, Duration::from_secs(120));
    assert_eq!(j["status"], "succeeded", "{j}\n{}", c.diagnose());
    // What the earlier leader counted survives it.
    assert!(j["failures"].as_u64() >= Some(1), "{j}");
    assert!(j["recoveries"].as_u64() >= Some(1), "{j}");
    assert!(j["last_failure"].is_string(), "before: {seen}; after: {j}");
    let file = c.store_file("out/carry.txt");
    assert_same(
        "output through four leader restarts",
        &sorted_lines(&file),
        &signs.app2(),
    );
    let (status, printed, said) = follower.finish(Duration::from_secs(60));
    assert!(status.success(), "the follower exited {status}: {said}");
    assert!(
        said.contains("reconnecting"),
        "the follower never reconnected: {said}"
    );
    // Each output line is distinct (a key with its running count).
    assert_no_line_twice(&printed);
    assert_same_text("the follower's stdout", &printed, &file);
    // The same workers carried the job: nobody registered under a new identity.
    let workers = c.json(&["workers", "--json"]);
    let ids: Vec<&str> = workers
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["id"].as_str())
        .collect();
    assert!(
        ids.iter().all(|w| ["w1", "w2", "w3"].contains(w)),
        "workers rejoined under new ids: {workers}"
    );
    // The source and the sink ran on workers through all four restarts and were adopted each
    // time, never restarted: their first attempts carried the whole job.
    let tasks = c.tasks(&id);
    for (stage, what) in [(0, "source"), (4, "sink")] {
        let t = tasks.iter().find(|t| t["stage"] == stage).expect(what);
        assert_eq!(t["attempt"], 0, "the {what} was restarted: {t}");
        assert_eq!(t["operator"], what, "{t}");
    }
    let log = c.leader_log();
    let rejoins = log.matches("worker rejoined with its tasks").count();
    let resumed = log.matches("carrying it on").count();
    assert!(
        resumed >= 4 && rejoins >= 3,
        "resumed {resumed}, rejoins {rejoins}"
    );
    println!(
        "job {id}: {} failures, {} recoveries; {resumed} resumptions, {rejoins} worker rejoins",
        j["failures"], j["recoveries"]
    );
}

/// A source read through the leader's store reads on through a leader restart (a hostile
/// probe: its one long response died with the leader, the source failed with "error decoding
/// response body" and was restarted, reading its file again). It now reads in ranges, each
/// retried until the leader answers again (`store/ranged.rs`). The file is larger than any
/// socket buffer, so the old single response was still open when the leader died.
#[test]
fn a_source_read_through_the_leader_reads_on_through_a_leader_restart() {
    let mut c = Cluster::start(1, 5.0);
    put_signs(&c, 500_000, 5);
    // About 3.5 MB a second: the old response's buffered part (the socket buffers, some
    // 10 MB at most) runs out within the few seconds the check below waits.
    let id = slow_job(&c, "long", "out/long.txt", 50_000.0);
    let read = |c: &Cluster| {
        let j = c.json(&["job", &id, "--json"]);
        assert_eq!(j["status"], "running", "{j}\n{}", c.diagnose());
        (j["sink_tuples"].as_u64()? > 0).then_some(j["source_tuples"].as_u64()?)
    };
    wait_for("the job to move tuples", Duration::from_secs(30), || {
        read(&c)
    });
    c.restart_leader();
    let before = wait_for(
        "the new leader to hear from the source",
        Duration::from_secs(30),
        || read(&c),
    );
    wait_for(
        "the source to read on under the new leader",
        Duration::from_secs(60),
        || (read(&c)? > before + 250_000).then_some(()),
    );
    let j = c.json(&["job", &id, "--json"]);
    assert_eq!(j["failures"], 0, "{j}\n{}", c.diagnose());
    let source = c.tasks(&id).into_iter().find(|t| t["stage"] == 0);
    let source = source.unwrap_or_else(|| panic!("no source task listed: {j}"));
    assert_eq!(source["attempt"], 0, "the source was restarted: {source}");
    c.ok(&["cancel", &id]);
}

/// Jobs waiting for capacity when the leader stops are waiting still under the next leader,
/// and run in their turn with exact output, their followers reconnected: a never-placed job
/// was recorded as failed ("the leader restarted while the job ran"), though it never ran;
/// and a follower's stream cut by the stop ended with the job's "pending" or "running",
/// which the follower took for final and exited 1 on (3 of 20 followers of a probe; two
/// hostile probes).
#[test]
fn jobs_waiting_for_capacity_wait_on_under_the_next_leader_and_run_in_their_turn() {
    let mut c = Cluster::start(0, 5.0);
    c.worker_slots = 1;
    c.add_worker();
    c.wait_alive(1);
    let signs = put_signs(&c, 1500, 5);
    let job = |name: &str, rate: f64| {
        let toml = job_toml(
            name,
            "signs.csv",
            &format!("out/{name}.txt"),
            rate,
            "exactly-once",
            &[(1, "identity", &[])],
        );
        c.file(&format!("{name}.toml"), &toml);
        c.submit(&format!("{name}.toml"))
    };
    let first = job("first", 300.0);
    wait_counted(&c, &first, "source_tuples", 0);
    let names: Vec<String> = (0..5).map(|i| format!("waits{i}")).collect();
    let waiting: Vec<String> = names.iter().map(|n| job(n, 0.0)).collect();
    let status = |c: &Cluster, id: &str| c.json(&["job", id, "--json"])["status"].clone();
    for id in &waiting {
        assert_eq!(status(&c, id), "pending");
    }
    // Two followers of each, and of the running one, across a SIGTERM of the leader.
    let mut followers = Vec::new();
    for id in std::iter::once(&first).chain(&waiting) {
        for k in 0..2 {
            let log = format!("follow-{id}-{k}.log");
            followers.push(Follower::start(&c, &["follow", id], &log));
        }
    }
    wait_for("the followers to connect", Duration::from_secs(20), || {
        (c.metric("rainstorm_output_streams")? >= followers.len() as i64).then_some(())
    });
    let args = c.leader_args_same_port();
    let (stopped, _) = c.sigterm_leader(Duration::from_secs(20));
    assert!(stopped.is_some_and(|s| s.success()), "{stopped:?}");
    c.start_leader_again(&args);
    for id in &waiting {
        let after = status(&c, id);
        assert!(after == "pending" || after == "running", "{after}");
    }
    let mut ended = Vec::new();
    for id in std::iter::once(&first).chain(&waiting) {
        let j = c.wait_job(id, Duration::from_secs(90));
        assert_eq!(j["status"], "succeeded", "{j}\n{}", c.diagnose());
        ended.push(j["submitted_ms"].as_u64().unwrap() + j["elapsed_ms"].as_u64().unwrap());
    }
    // In their turn: each ended after the one submitted before it.
    assert!(ended.windows(2).all(|w| w[0] <= w[1]), "{ended:?}");
    let mut all = signs.all_lines();
    all.sort();
    for name in std::iter::once("first").chain(names.iter().map(String::as_str)) {
        assert_same(
            name,
            &sorted_lines(&c.store_file(&format!("out/{name}.txt"))),
            &all,
        );
    }
    for f in followers {
        let (st, printed, err) = f.finish(Duration::from_secs(60));
        assert!(st.success(), "follower: {st}\n{err}");
        assert_same("what a follower printed", &sorted_lines(&printed), &all);
    }
}

/// A leader stopped (SIGSTOP) for longer than its heartbeat timeout blames no worker for the
/// time it did not run: it declared every worker dead the moment it resumed, before it read
/// the heartbeats waiting for it, and restarted every task (hostile probe). The job runs on
/// with no failure and exact output.
#[test]
fn a_leader_stopped_longer_than_the_heartbeat_timeout_declares_no_worker_dead() {
    let c = Cluster::start(2, 1.0);
    let signs = put_signs(&c, 2000, 17);
    let id = slow_job(&c, "paused", "out/paused.txt", 400.0);
    wait_counted(&c, &id, "sink_tuples", 0);
    let pid = c.leader_pid().to_string();
    let signal = |sig: &str| {
        let st = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(st.success(), "kill {sig}");
    };
    signal("-STOP");
    // The fault itself: the leader stays stopped for 2.5 heartbeat timeouts.
    std::thread::sleep(Duration::from_millis(2500));
    signal("-CONT");
    let done = c.wait_job(&id, Duration::from_secs(60));
    assert_eq!(done["status"], "succeeded", "{done}\n{}", c.diagnose());
    let log = c.leader_log();
    assert!(!log.contains("declared dead"), "{log}");
    assert!(log.contains("the leader did not run for a while"), "{log}");
    assert_eq!(done["failures"], 0, "{done}");
    assert_same(
        "the output of the job whose leader was stopped",
        &sorted_lines(&c.store_file("out/paused.txt")),
        &signs.app2(),
    );
}

/// A cancel is answered once the job's end is recorded, so a leader stopped right after it
/// cannot lose it: a cancel answered at once and a SIGTERM next let the next leader carry
/// the job on to a success (hostile probe, once a leader's stop no longer ended its jobs).
#[test]
fn a_cancel_answered_just_before_the_leader_stops_holds_under_the_next_leader() {
    let mut c = Cluster::start(2, 5.0);
    put_signs(&c, 2000, 23);
    let id = slow_job(&c, "cancelled", "out/cancelled.txt", 300.0);
    wait_counted(&c, &id, "sink_tuples", 0);
    c.ok(&["cancel", &id]);
    let args = c.leader_args_same_port();
    let (stopped, _) = c.sigterm_leader(Duration::from_secs(20));
    assert!(stopped.is_some_and(|s| s.success()), "{stopped:?}");
    c.start_leader_again(&args);
    let j = c.json(&["job", &id, "--json"]);
    assert_eq!(j["status"], "cancelled", "{j}");
}

/// A job whose operator exited 0 early says how many tuples it discarded, and still does under
/// the next leader: the count is recorded with its end (it was only in the task records, which
/// a restarted leader does not have).
#[test]
fn a_job_s_discarded_tuples_are_recorded_with_its_end() {
    let mut c = Cluster::start(1, 5.0);
    let text: String = (0..20_000).map(|i| format!("row {i}\n")).collect();
    c.file("in.txt", &text);
    c.ok(&["put", "in.txt", "in.txt"]);
    let head = write_exec(
        &c.dir.path().join("head5.sh"),
        "#!/bin/sh\nexec head -n 5\n",
    );
    let job = job_toml(
        "head",
        "in.txt",
        "out/head.txt",
        0.0,
        "exactly-once",
        &[(1, head.to_str().unwrap(), &[])],
    );
    c.file("head.toml", &job);
    let id = c.submit("head.toml");
    let j = c.wait_job(&id, Duration::from_secs(60));
    assert_eq!(j["status"], "succeeded", "{j}");
    let discarded = j["discarded_tuples"].as_u64().unwrap_or(0);
    assert!(discarded > 0, "20,000 lines do not fit in the pipe: {j}");
    let shown = c.ok(&["job", &id]);
    assert!(shown.contains("were not processed"), "{shown}");
    c.restart_leader();
    let after = c.json(&["job", &id, "--json"]);
    assert_eq!(after["discarded_tuples"], discarded, "{after}");
}
