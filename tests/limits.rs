//! A job's own limits in its job file: `max_restarts` (instead of the leader's), `timeout_s`
//! (the job fails saying so), `retention_s` (its record and its output go once it passed).

mod common;
use common::*;
use std::time::Duration;

/// Runs a one-stage job `name` of `op` over `in.txt` into `NAME.txt`, with its own
/// `retention_s` if given, and waits for it to succeed; returns its id.
fn run_to_success(c: &Cluster, name: &str, op: &str, retention: Option<u32>) -> String {
    let toml = job_toml(
        name,
        "in.txt",
        &format!("{name}.txt"),
        0.0,
        "exactly-once",
        &[(1, op, &[])],
    );
    let toml = match retention {
        Some(s) => format!("retention_s = {s}\n{toml}"),
        None => toml,
    };
    c.file(&format!("{name}.toml"), &toml);
    let id = c.submit(&format!("{name}.toml"));
    assert_eq!(
        c.wait_job(&id, Duration::from_secs(60))["status"],
        "succeeded"
    );
    id
}

fn numbered(lines: usize) -> String {
    (1..=lines).map(|i| format!("line {i:04}\n")).collect()
}

#[test]
fn a_job_fails_at_its_own_timeout_and_its_own_restart_limit() {
    let c = Cluster::start(1, 5.0);
    c.file("in.txt", &numbered(200));
    c.ok(&["put", "in.txt", "in.txt"]);
    // 200 lines at 20 a second take 10 s: a 1 s limit ends the job first.
    let slow = job_toml(
        "slow",
        "in.txt",
        "slow.txt",
        20.0,
        "exactly-once",
        &[(1, "identity", &[])],
    );
    c.file("slow.toml", &format!("timeout_s = 1\n{slow}"));
    let id = c.submit("slow.toml");
    let j = c.wait_job(&id, Duration::from_secs(60));
    assert_eq!(j["status"], "failed", "{j}");
    assert!(
        j["error"]
            .as_str()
            .unwrap_or_default()
            .contains("timeout_s = 1"),
        "{j}"
    );
    assert!(j["elapsed_ms"].as_u64().unwrap() < 10_000, "{j}");

    // An operator that always fails: with max_restarts = 1 the job fails after 2 failures,
    // not after the leader's 21. Its last words on stderr are in its failure (the last 5
    // lines: not the 3 before them).
    let bad = write_exec(
        &c.dir.path().join("bad.sh"),
        "#!/bin/sh\nfor i in 1 2 3 4 5 6 7; do echo \"bad row $i\" >&2; done\n\
         echo 'ValueError: last \"word\"' >&2\nexit 3\n",
    );
    let job = job_toml(
        "bad",
        "in.txt",
        "bad.txt",
        0.0,
        "exactly-once",
        &[(1, bad.to_str().unwrap(), &[])],
    );
    c.file("bad.toml", &format!("max_restarts = 1\n{job}"));
    let id = c.submit("bad.toml");
    let j = c.wait_job(&id, Duration::from_secs(60));
    assert_eq!(j["status"], "failed", "{j}");
    assert_eq!(j["failures"], 2, "{j}");
    assert!(
        j["last_failure"]
            .as_str()
            .is_some_and(|f| f.contains("attempt 1")),
        "{j}"
    );
    let said = r#"exited with code 3; last stderr: "bad row 4" | "bad row 5" | "bad row 6" | "bad row 7" | "ValueError: last \"word\"""#;
    for field in ["last_failure", "error"] {
        let text = j[field].as_str().unwrap_or_default();
        assert!(text.contains(said), "{field}: {j}");
        assert!(!text.contains("bad row 3"), "{field}: {j}");
    }
}

#[test]
fn a_jobs_record_and_output_go_after_its_retention() {
    let c = Cluster::start(1, 5.0);
    c.file("in.txt", &numbered(50));
    c.ok(&["put", "in.txt", "in.txt"]);
    let job = job_toml(
        "short",
        "in.txt",
        "short.txt",
        0.0,
        "exactly-once",
        &[(1, "identity", &[])],
    );
    c.file("short.toml", &format!("retention_s = 1\n{job}"));
    let kept = job_toml(
        "kept",
        "in.txt",
        "kept.txt",
        0.0,
        "exactly-once",
        &[(1, "identity", &[])],
    );
    c.file("kept.toml", &kept);
    let short = c.submit("short.toml");
    let kept = c.submit("kept.toml");
    for id in [&short, &kept] {
        assert_eq!(
            c.wait_job(id, Duration::from_secs(60))["status"],
            "succeeded"
        );
    }
    assert_same(
        "the output",
        &sorted_lines(&c.store_file("short.txt")),
        &sorted_lines(&numbered(50)),
    );
    let out = c.dir.path().join("leader/store/short.txt");
    wait_for(
        "the record and output to go",
        Duration::from_secs(30),
        || {
            let listed = c.ok(&["jobs"]);
            (!listed.contains(&short) && !out.exists()).then_some(())
        },
    );
    // The job without a retention of its own keeps both (the leader's default is an hour).
    assert!(c.ok(&["jobs"]).contains(&kept));
    assert!(c.dir.path().join("leader/store/kept.txt").exists());
}

/// What is at an expired job's sink path is removed only if it is that job's output: a user's
/// upload over it stays (hostile probe 19: `put` over a job's output, then its retention_s
/// ran out, and the upload was deleted).
#[test]
fn an_upload_over_an_expired_jobs_output_stays() {
    let c = Cluster::start(1, 5.0);
    c.file("in.txt", &numbered(50));
    c.ok(&["put", "in.txt", "in.txt"]);
    let job = |name: &str| run_to_success(&c, name, "identity", Some(1));
    let mine = job("mine");
    c.file("user.txt", "the user's own\n");
    c.ok(&["put", "user.txt", "mine.txt"]);
    wait_for("the record to go", Duration::from_secs(30), || {
        (!c.ok(&["jobs"]).contains(&mine)).then_some(())
    });
    // A job that expires after it: once its output is gone, the expiry of the first has been
    // carried out too.
    job("later");
    let later = c.dir.path().join("leader/store/later.txt");
    wait_for("the later output to go", Duration::from_secs(30), || {
        (!later.exists()).then_some(())
    });
    assert_eq!(c.store_file("mine.txt"), "the user's own\n");
}

/// A job cancelled before it started (waiting for slots) committed nothing: the file at its
/// sink path, an earlier job's output, stays whole (hostile probe 19: it became empty).
#[test]
fn cancelling_a_job_that_never_started_leaves_the_file_at_its_sink_path() {
    let mut c = Cluster::start(0, 5.0);
    c.worker_slots = 2;
    c.add_worker();
    c.wait_alive(1);
    c.file("in.txt", &numbered(50));
    c.ok(&["put", "in.txt", "in.txt"]);
    let toml = |name: &str, tasks: u32| {
        job_toml(
            name,
            "in.txt",
            "out.txt",
            0.0,
            "exactly-once",
            &[(tasks, "identity", &[])],
        )
    };
    c.file("first.toml", &toml("first", 1));
    let first = c.submit("first.toml");
    assert_eq!(
        c.wait_job(&first, Duration::from_secs(60))["status"],
        "succeeded"
    );
    // More tasks than the cluster has slots: it waits.
    c.file("wide.toml", &toml("wide", 4));
    let wide = c.submit("wide.toml");
    wait_for("the wide job to wait", Duration::from_secs(30), || {
        (c.json(&["job", &wide, "--json"])["status"] == "pending").then_some(())
    });
    c.ok(&["cancel", &wide]);
    let j = c.wait_job(&wide, Duration::from_secs(30));
    assert_eq!(j["status"], "cancelled");
    assert!(
        j["output_replaced"]
            .as_str()
            .is_some_and(|s| s.contains("committed nothing")),
        "{j}"
    );
    assert_same(
        "the first job's output",
        &sorted_lines(&c.store_file("out.txt")),
        &sorted_lines(&numbered(50)),
    );
    // It is still the first job's output, and the first job's record says so.
    let j = c.json(&["job", &first, "--json"]);
    assert!(j.get("output_replaced").is_none(), "{j}");
    // A later job that writes its own output there does replace it.
    c.file("third.toml", &toml("third", 1));
    let third = c.submit("third.toml");
    assert_eq!(
        c.wait_job(&third, Duration::from_secs(60))["status"],
        "succeeded"
    );
    let j = c.json(&["job", &first, "--json"]);
    assert_eq!(j["output_replaced"], format!("job {third}"), "{j}");
}

/// The operators pinned for jobs (`blobs/sha256/HEX`) go once no job the leader knows runs
/// them: kept while another job within its retention names the same one (hostile probe 19:
/// every operator ever submitted stayed in the store, 115 after an hour of edits).
#[test]
fn a_pinned_operator_goes_with_the_last_job_that_runs_it() {
    let c = Cluster::start(1, 5.0);
    c.file("in.txt", &numbered(20));
    c.ok(&["put", "in.txt", "in.txt"]);
    // Relative paths (with a `/`, so `job_toml` makes them `exec`): uploaded and pinned.
    std::fs::create_dir_all(c.dir.path().join("ops")).unwrap();
    write_exec(&c.dir.path().join("ops/shared.sh"), "#!/bin/sh\ncat\n");
    write_exec(&c.dir.path().join("ops/own.sh"), "#!/bin/sh\nexec cat\n");
    let run = |name: &str, op: &str, retention| run_to_success(&c, name, op, retention);
    let blobs = || -> Vec<String> {
        let dir = c.dir.path().join("leader/store/blobs/sha256");
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let short = run("short", "ops/shared.sh", Some(1));
    run("kept", "ops/shared.sh", None);
    let own = run("own", "ops/own.sh", Some(1));
    assert_eq!(blobs().len(), 2, "{:?}", blobs());
    wait_for("both short jobs to expire", Duration::from_secs(30), || {
        let listed = c.ok(&["jobs"]);
        (!listed.contains(&short) && !listed.contains(&own) && blobs().len() == 1).then_some(())
    });
    // What is left is the shared one, which the kept job still runs: its next run works.
    run("again", "ops/shared.sh", None);
    assert_eq!(blobs().len(), 1, "{:?}", blobs());
}
