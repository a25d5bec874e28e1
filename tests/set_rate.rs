//! `rainstorm set-rate`: a running job's source paces by a new rate at once (up and down),
//! the job's record shows it, the output stays exact, and bad requests change nothing.

mod common;
use common::*;
use std::time::{Duration, Instant};

#[test]
fn a_running_jobs_source_rate_changes_at_once_and_the_output_stays_exact() {
    let c = Cluster::start(2, 5.0);
    let input: String = (1..=3000).map(|i| format!("row {i:05}\n")).collect();
    c.file("in.txt", &input);
    c.ok(&["put", "in.txt", "in.txt"]);
    // 3,000 lines at 20 a second would take 150 s.
    let job = job_toml(
        "paced",
        "in.txt",
        "out.txt",
        20.0,
        "exactly-once",
        &[(2, "identity", &[])],
    );
    c.file("job.toml", &job);
    let id = c.submit("job.toml");
    let read = |c: &Cluster| c.json(&["job", &id, "--json"])["source_tuples"].as_u64();
    wait_for("the source to start", Duration::from_secs(30), || {
        (read(&c)? >= 10).then_some(())
    });
    // Slower first: 2 a second for two seconds reads about 4 lines, not 40.
    c.ok(&["set-rate", &id, "2"]);
    assert_eq!(c.json(&["job", &id, "--json"])["rate"], 2.0);
    let at = read(&c).unwrap();
    let t0 = Instant::now();
    wait_for(
        "two seconds at the slow rate",
        Duration::from_secs(10),
        || (t0.elapsed() >= Duration::from_secs(2)).then_some(()),
    );
    let slow = read(&c).unwrap() - at;
    assert!(slow <= 15, "{slow} lines in 2 s at 2 lines/s");
    // Then unthrottled: the rest takes seconds, not minutes.
    let t1 = Instant::now();
    c.ok(&["set-rate", &id, "0"]);
    let j = c.wait_job(&id, Duration::from_secs(60));
    assert_eq!(j["status"], "succeeded", "{j}");
    assert!(
        t1.elapsed() < Duration::from_secs(30),
        "the rest took {:?}",
        t1.elapsed()
    );
    assert_eq!(j["rate"], 0.0);
    assert_same(
        "paced",
        &sorted_lines(&c.store_file("out.txt")),
        &sorted_lines(&input),
    );

    // Bad requests are refused with the reason and change nothing.
    let out = c.run(&["set-rate", &id, "100"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has ended"));
    let out = c.run(&["set-rate", "job-9-nothere", "100"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no job"));
    // Negative, and a rate the job file refuses too: too small to tell from a stop (a
    // hostile probe set 5e-324 and froze the source without a word).
    for rate in ["-5", "5e-324", "0.0009", "2e9"] {
        let body = format!(r#"{{"rate":{rate}}}"#);
        let (code, said) = c.http_json("POST", &format!("/api/jobs/{id}/rate"), &body);
        assert_eq!(code, 400, "{rate}: {said}");
        assert!(said.contains("0.001"), "{rate}: {said}");
    }
    assert_eq!(c.json(&["job", &id, "--json"])["rate"], 0.0);
}
