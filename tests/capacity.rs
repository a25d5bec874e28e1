//! What a cluster can hold: jobs whose data links or tasks exceed it are refused at the door,
//! and a worker that has more links to carry than descriptors degrades (its links wait) rather
//! than dying. A real cluster, real processes, references computed here.

mod common;
use common::*;
use std::time::Duration;

/// The worker of `workers --json` whose id is `id`: its data port.
fn data_port(c: &Cluster, id: &str) -> u16 {
    let ws = c.json(&["workers", "--json"]);
    ws.as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == id)
        .and_then(|w| w["address"].as_str()?.rsplit(':').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no worker {id} in {ws}"))
}

/// The probe: 2 stages × 256 tasks (66048 links) used to take the whole cluster
/// down. It is refused with the rule, as is a job over the room the cluster's smallest
/// worker leaves (a leader-side check); nothing starts, and a normal job still runs.
#[test]
fn jobs_over_the_link_rule_are_refused_and_a_normal_job_still_runs() {
    let mut c = Cluster::start(2, 5.0);
    // A third worker that takes only 100 data connections: the cluster's room is 100 links.
    c.add_worker_env(&[("RAINSTORM_MAX_DATA_CONNS", "100")]);
    c.wait_alive(3);
    let signs = Signs::generate(2000, 21);
    signs.write(&c.dir.path().join("signs.csv"));
    c.ok(&["put", "signs.csv", "signs.csv"]);
    let stages = |tasks: u32| -> Vec<(u32, &str, &[&str])> {
        vec![
            (tasks, "filter", &["Punched Telespar"]),
            (tasks, "count-by", &["9"]),
        ]
    };
    let job = |name: &str, tasks: u32| {
        job_toml(
            name,
            "signs.csv",
            &format!("out/{name}.txt"),
            0.0,
            "exactly-once",
            &stages(tasks),
        )
    };
    c.file("huge.toml", &job("huge", 256));
    let out = c.run(&["submit", "huge.toml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "2 × 256 tasks was accepted: {err}");
    for part in [
        "stages[*].tasks = 256, 256",
        "66048 data links",
        "at most 4096",
        "stages[1].tasks × stages[2].tasks = 65536",
    ] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
    // 10 + 100 + 10 = 120 links pass the static rule but not the cluster's room of 100.
    c.file("wide.toml", &job("wide", 10));
    let out = c.run(&["submit", "wide.toml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "120 links over a room of 100 was accepted: {err}"
    );
    for part in [
        "stages[*].tasks = 10, 10",
        "120 data links",
        "room for 100 more",
        "(100, worker",
    ] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
    assert!(
        c.json(&["jobs", "--json"]).as_array().unwrap().is_empty(),
        "a refused job was recorded"
    );
    // 3 + 9 + 3 = 15 links: runs, on the same cluster, with the right output.
    c.file("app2.toml", &job("app2", 3));
    let id = c.submit("app2.toml");
    let j = c.wait_job(&id, Duration::from_secs(60));
    assert_eq!(j["status"], "succeeded", "{j}\n{}", c.diagnose());
    assert_same(
        "app2",
        &sorted_lines(&c.store_file("out/app2.txt")),
        &signs.app2(),
    );
    assert!(
        !c.leader_log().contains("declared dead"),
        "{}",
        c.leader_log()
    );
}

/// A worker with few descriptors that ends up carrying a job bigger than it holds (the job was
/// admitted while a bigger worker ran it, and that worker died): its links wait for a slot
/// and its listener turns the excess away, so it never runs out of descriptors, keeps its
/// heartbeats, and is not declared dead. Once the job is cancelled its links stop connecting
/// (no connection left on its port) and the next job runs on it. The workers connect per
/// link (`RAINSTORM_DATA_MUX=0`): links sharing a connection per process pair hold a handful
/// of descriptors, not two a link (`tests/mux.rs`), so only the fallback can run short; and
/// through the network even to their own process (`RAINSTORM_DATA_LOCAL=0`), since links in
/// memory hold no descriptor at all.
#[test]
fn a_worker_short_of_descriptors_degrades_instead_of_dying() {
    let per_link = [("RAINSTORM_DATA_MUX", "0"), ("RAINSTORM_DATA_LOCAL", "0")];
    let mut c = Cluster::start(0, 2.0);
    c.add_worker_env(&per_link);
    c.wait_alive(1);
    let big = c.json(&["workers", "--json"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let lines: String = (1..=100_000).map(|i| format!("line {i}\n")).collect();
    c.file("in.txt", &lines);
    c.ok(&["put", "in.txt", "in.txt"]);
    // 20 + 400 + 20 = 440 links, fed slowly so the job is still running below.
    c.file(
        "wide.toml",
        &job_toml(
            "wide",
            "in.txt",
            "out/wide.txt",
            20.0,
            "exactly-once",
            &[(20, "identity", &[]), (20, "identity", &[])],
        ),
    );
    let wide = c.submit("wide.toml");
    wait_for("the job to deliver", Duration::from_secs(60), || {
        let j = c.json(&["job", &wide, "--json"]);
        (j["sink_tuples"].as_u64()? > 0).then_some(())
    });
    // A worker limited to 512 descriptors: a reserve of 256, so 128 connections each way.
    c.add_worker_with(&per_link, Some(512));
    c.wait_alive(2);
    let small = wait_for("the small worker", Duration::from_secs(20), || {
        let ws = c.json(&["workers", "--json"]);
        ws.as_array()?
            .iter()
            .find(|w| w["id"] != big.as_str())
            .map(|w| {
                (
                    w["id"].as_str().unwrap().to_string(),
                    w["data_conns"].as_u64(),
                )
            })
    });
    assert_eq!(
        small.1,
        Some(128),
        "the data plane was not fitted to 512 descriptors"
    );
    let small = small.0;
    let port = data_port(&c, &small);
    // The big worker dies: every task of the job moves to the small one (880 sockets wanted).
    c.kill_worker(0);
    wait_for(
        "the small worker to carry the job's links",
        Duration::from_secs(60),
        || {
            // Both ends of each link are on this worker: two sockets a link.
            (established_on(&[port]) >= 200).then_some(())
        },
    );
    c.ok(&["cancel", &wide]);
    assert_eq!(
        c.wait_job(&wide, Duration::from_secs(30))["status"],
        "cancelled"
    );
    wait_for(
        "the cancelled job's links to stop",
        Duration::from_secs(30),
        || (established_on(&[port]) == 0).then_some(()),
    );
    // The next job runs on the small worker alone, with the right output.
    let small_lines: String = (1..=500).map(|i| format!("row {i}\n")).collect();
    c.file("small.txt", &small_lines);
    c.ok(&["put", "small.txt", "small.txt"]);
    c.file(
        "next.toml",
        &job_toml(
            "next",
            "small.txt",
            "out/next.txt",
            0.0,
            "exactly-once",
            &[(3, "identity", &[]), (3, "identity", &[])],
        ),
    );
    let next = c.submit("next.toml");
    let j = c.wait_job(&next, Duration::from_secs(60));
    assert_eq!(j["status"], "succeeded", "{j}\n{}", c.diagnose());
    assert_same(
        "next",
        &sorted_lines(&c.store_file("out/next.txt")),
        &sorted_lines(&small_lines),
    );
    let log = std::fs::read_to_string(c.dir.path().join("worker-1.log")).unwrap();
    assert!(
        !log.contains("Too many open files"),
        "the small worker ran out of descriptors:\n{}",
        log.lines()
            .filter(|l| l.contains("Too many"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let dead = format!("declared dead worker={small}");
    assert!(
        !c.leader_log().contains(&dead),
        "the small worker was declared dead:\n{}",
        c.leader_log()
    );
}
