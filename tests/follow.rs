//! Following a job's output (`submit --follow`, `follow ID`) across a leader restart (issue 11
//! item 4): the follower reconnects and carries on from the byte it had reached, printing every
//! line of the sink file exactly once; and the output stream's `?offset=`.

mod common;
use common::*;
use std::io::{Read, Write};
use std::time::Duration;

/// One GET to the leader with the cluster secret; returns the status code and the body
/// (de-chunked).
fn get(c: &Cluster, path: &str) -> (u16, Vec<u8>) {
    let addr = c.url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        c.token
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = raw[split + 4..].to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(&body)
    } else {
        body
    };
    (status, body)
}

/// The payload of a chunked HTTP/1.1 body.
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").expect("chunk size");
        let size = std::str::from_utf8(&b[..eol]).unwrap();
        let n = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
}

/// The events of an NDJSON output stream: the data, concatenated, and the final record.
fn events(body: &[u8]) -> (String, Option<serde_json::Value>) {
    let mut data = String::new();
    let mut end = None;
    for line in String::from_utf8(body.to_vec()).unwrap().lines() {
        let ev: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(end.is_none(), "an event after the end: {line}");
        if let Some(d) = ev.get("data") {
            data.push_str(d.as_str().unwrap());
        } else {
            end = Some(ev["end"].clone());
        }
    }
    (data, end)
}

/// The id of the only job of the cluster, once it is listed.
fn only_job(c: &Cluster) -> String {
    wait_for("the job to be listed", Duration::from_secs(20), || {
        let jobs = c.json(&["jobs", "--json"]);
        Some(jobs.as_array()?.first()?["id"].as_str()?.to_string())
    })
}

#[test]
fn submit_follow_survives_a_leader_sigkill_and_restart() {
    let mut c = Cluster::start(2, 5.0);
    let signs = Signs::generate(800, 21);
    signs.write(&c.dir.path().join("signs.csv"));
    c.ok(&["put", "signs.csv", "signs.csv"]);
    // Every data row reaches the sink, about 100 a second: the job runs for 8 s, so the
    // leader dies while it runs (whether the new leader carries it on or records it failed).
    let toml = job_toml(
        "follow",
        "signs.csv",
        "out/follow.txt",
        100.0,
        "exactly-once",
        &[(2, "filter", &["-88."]), (2, "identity", &[])],
    );
    c.file("follow.toml", &toml);
    let follower = Follower::start(&c, &["submit", "follow.toml", "--follow"], "follower.log");
    let id = only_job(&c);
    wait_for(
        "the follower to print some lines",
        Duration::from_secs(60),
        || (follower.lines() >= 20).then_some(()),
    );
    let before = follower.lines();

    c.restart_leader();

    let (status, out, followed) = follower.finish(Duration::from_secs(180));
    let job = c.wait_job(&id, Duration::from_secs(120));
    println!(
        "job {id} ended {}; the follower printed {before} lines before the restart, {} in all \
         and exited {status}",
        job["status"],
        out.lines().count()
    );
    assert!(
        followed.contains("reconnecting"),
        "the follower did not reconnect: {followed}"
    );
    // Every row is a distinct line (its OBJECTID), so a line seen twice was printed twice.
    assert_no_line_twice(&out);
    let file = c.store_file("out/follow.txt");
    assert_same_text("the follower's stdout", &out, &file);
    if job["status"] == "succeeded" {
        let mut rows: Vec<String> = signs.rows.iter().map(|r| csv_line(r)).collect();
        rows.sort();
        assert_same("the job carried on", &sorted_lines(&file), &rows);
    }
    let want = if job["status"] == "succeeded" { 0 } else { 1 };
    assert_eq!(
        status.code(),
        Some(want),
        "the job ended {job}; the follower said: {followed}"
    );
}

#[test]
fn follow_prints_a_finished_jobs_output_once_and_the_stream_checks_its_offset() {
    let c = Cluster::start(1, 5.0);
    let signs = Signs::generate(400, 5);
    signs.write(&c.dir.path().join("signs.csv"));
    c.ok(&["put", "signs.csv", "signs.csv"]);
    let toml = job_toml(
        "done",
        "signs.csv",
        "out/done.txt",
        0.0,
        "exactly-once",
        &[(1, "identity", &[])],
    );
    c.file("done.toml", &toml);
    let id = c.submit("done.toml");
    let job = c.wait_job(&id, Duration::from_secs(60));
    assert_eq!(job["status"], "succeeded", "{job}");
    let file = c.store_file("out/done.txt");
    assert_eq!(file.lines().count(), 401);

    // `follow ID` prints the whole output once, then the final status on stderr.
    let out = c.run(&["follow", &id]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "follow failed: {err}");
    assert!(err.contains("succeeded"), "{err}");
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_no_line_twice(&printed);
    assert_same_text("follow's stdout", &printed, &file);

    // An unknown job is an error at once, not a reconnect loop.
    let out = c.run(&["follow", "job-999999-ffffff"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no job job-999999-ffffff"), "{err}");

    // The stream from a line: the rest of the file, then the end.
    let output = format!("/api/jobs/{id}/output");
    let first = file.find('\n').unwrap() + 1;
    let (status, body) = get(&c, &format!("{output}?offset={first}"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (data, end) = events(&body);
    assert_same_text("the stream from the second line", &data, &file[first..]);
    assert_eq!(end.expect("a final event")["status"], "succeeded");
    // From the end: only the final status.
    let (status, body) = get(&c, &format!("{output}?offset={}", file.len()));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (data, end) = events(&body);
    assert_eq!(data, "");
    assert!(end.is_some());

    // Offsets the stream refuses, each with a JSON error saying why.
    let refused = |query: String, why: &str| {
        let (status, body) = get(&c, &format!("{output}?{query}"));
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 400, "?{query}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(msg.contains(why), "?{query}: {msg}");
    };
    refused(format!("offset={}", file.len() + 1), "beyond the output");
    refused("offset=abc".into(), "not \"abc\"");
    refused("offset=-1".into(), "byte count");
    refused("offset=1".into(), "not at the start of a line");
}

/// A follower of a running job reads each group commit of the sink when the sink's worker
/// reports it, not at its next look: with the leader's fallback look once a minute
/// (`--follow-poll-ms 60000`) and heartbeats (which carry the count too) every 20 s, a
/// follower of a 10-second job prints its first lines within seconds, while the job still
/// runs, and then every line once. (Without the commit reports it printed nothing until the
/// job ended, or until a heartbeat.)
#[test]
fn a_follower_reads_each_commit_as_the_sink_reports_it() {
    let c = Cluster::start_with(
        1,
        60.0,
        &["--follow-poll-ms", "60000", "--heartbeat-ms", "20000"],
    );
    let text: String = (1..=200).map(|i| format!("line {i:03}\n")).collect();
    c.file("in.txt", &text);
    c.ok(&["put", "in.txt", "in.txt"]);
    let toml = job_toml(
        "prompt",
        "in.txt",
        "out/prompt.txt",
        20.0,
        "exactly-once",
        &[(1, "identity", &[])],
    );
    c.file("prompt.toml", &toml);
    let id = c.submit("prompt.toml");
    let follower = Follower::start(&c, &["follow", &id], "follow.err");
    wait_for("the follower's first lines", Duration::from_secs(8), || {
        (follower.lines() >= 5).then_some(())
    });
    let job = c.json(&["job", &id, "--json"]);
    assert_eq!(
        job["status"], "running",
        "lines came only at the end: {job}"
    );
    let (status, out, err) = follower.finish(Duration::from_secs(60));
    assert!(status.success(), "{err}");
    assert_same_text("the follower's output", &out, &text);
}

/// A job with `retention_s = 1` and 100,000 lines of output, followed by a raw client that
/// reads 64 KiB and stops; once `expired` says the retention has passed (given the cluster
/// and the followed job's id), the client reads the rest. The text, and what the stream
/// carried: its data and its final record.
fn follow_past_retention(
    c: &Cluster,
    expired: impl Fn(&Cluster, &str),
) -> (String, String, Option<serde_json::Value>) {
    // More output than the sockets' buffers between the leader and the follower hold, so a
    // follower that stops reading holds its stream part-way.
    let pad = "x".repeat(100);
    let text: String = (0..100_000).map(|i| format!("{i},{pad}\n")).collect();
    c.file("in.txt", &text);
    c.ok(&["put", "in.txt", "in.txt"]);
    // Read at a rate, so that the follower reads the sink's log while the job runs, and
    // the output file, which the expiry removes, only after it ended.
    let followed = submit_short(c, "followed", 40_000.0);
    let addr = c.url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /api/jobs/{followed}/output HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        c.token
    )
    .unwrap();
    let mut raw = vec![0u8; 64 * 1024];
    s.read_exact(&mut raw).unwrap();
    expired(c, &followed);
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let (data, end) = events(&dechunk(&raw[split + 4..]));
    (text, data, end)
}

/// Submits an identity job over `in.txt` at `rate` lines a second with `retention_s = 1`.
fn submit_short(c: &Cluster, name: &str, rate: f64) -> String {
    let toml = job_toml(
        name,
        "in.txt",
        &format!("out/{name}.txt"),
        rate,
        "exactly-once",
        &[(1, "identity", &[])],
    );
    c.file(&format!("{name}.toml"), &format!("retention_s = 1\n{toml}"));
    c.submit(&format!("{name}.toml"))
}

/// Waits for job `id` to succeed.
fn succeeded(c: &Cluster, id: &str) {
    let j = c.wait_job(id, Duration::from_secs(60));
    assert_eq!(j["status"], "succeeded", "{j}");
}

/// A follower still reading an ended job's output keeps the job's record and output past its
/// retention (for a while), so it reads every line and then the final status. Hostile probe
/// 13: a slow follower of a job with `retention_s = 2` got 60,000 of 300,000 lines, and its
/// stream ended as if complete, without the status, once the record and output expired.
#[test]
fn a_follower_still_reading_keeps_an_expiring_job_until_it_has_read_it_all() {
    let c = Cluster::start(1, 5.0);
    let (text, data, end) = follow_past_retention(&c, |c, followed| {
        // A later job with the same retention, not followed: once its record is gone, the
        // followed job's retention has passed too.
        succeeded(c, followed);
        let later = submit_short(c, "later", 0.0);
        succeeded(c, &later);
        wait_for(
            "the later job's record to expire",
            Duration::from_secs(60),
            || (!c.ok(&["jobs"]).contains(&later)).then_some(()),
        );
        assert!(
            c.ok(&["jobs"]).contains(followed),
            "the followed job's record expired under its follower"
        );
    });
    assert_same(
        "followed output",
        &sorted_lines(&data),
        &sorted_lines(&text),
    );
    let end = end.expect("the stream ends with the job's final status");
    assert_eq!(end["status"], "succeeded", "{end}");
    assert!(end.get("output_replaced").is_none(), "{end}");
}

/// A follower slower than the retention and the grace after it is cut short, and told so:
/// its stream still ends with the job's final status, saying its output went before it was
/// read, never as if it were complete.
#[test]
fn a_follower_slower_than_the_grace_is_told_its_stream_was_cut_short() {
    let c = Cluster::start_with(1, 5.0, &["--follow-grace", "0.2"]);
    let (text, data, end) = follow_past_retention(&c, |c, followed| {
        succeeded(c, followed);
        wait_for(
            "the followed job's record to expire",
            Duration::from_secs(60),
            || (!c.ok(&["jobs"]).contains(followed)).then_some(()),
        );
    });
    let want: std::collections::HashSet<&str> = text.lines().collect();
    assert!(
        data.lines().all(|l| want.contains(l)),
        "lines not of the output"
    );
    assert!(
        data.lines().count() < want.len(),
        "every line came: nothing was cut"
    );
    let end = end.expect("the stream ends with the job's final status");
    assert_eq!(end["status"], "succeeded", "{end}");
    let why = end["output_replaced"].as_str().unwrap_or_default();
    assert!(why.contains("before this follower read all of"), "{end}");
}
