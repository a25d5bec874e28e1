//! A job's own limits in its job file: `max_restarts` (instead of the leader's), `timeout_s`
//! (the job fails saying so), `retention_s` (its record and its output go once it passed).

mod common;
use common::*;
use std::time::Duration;

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
