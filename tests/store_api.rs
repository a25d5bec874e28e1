//! The store API and owned files, against real leader and worker processes: no job can write
//! another running job's files (or its own source), no upload or delete can touch a file a
//! running job reads or writes, `logs/` belongs to the engine, the API takes store paths only
//! and never lists outside the store, request bodies are bounded, and a large upload and
//! download stream through the leader without growing it.

mod common;
use common::*;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One HTTP/1.1 request to the leader with the cluster secret; returns the status code and
/// the body. The body is written from another thread while the answer is read, so a server
/// that answers early (413) and closes is still heard.
fn http(c: &Cluster, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    http_with(c, method, path, body, "")
}

/// [`http`] with `extra` header lines (each ending in `\r\n`).
fn http_with(c: &Cluster, method: &str, path: &str, body: &[u8], extra: &str) -> (u16, String) {
    http_typed(c, method, path, body, extra, "application/json")
}

/// [`http_with`] with a body of type `content_type`.
fn http_typed(
    c: &Cluster,
    method: &str,
    path: &str,
    body: &[u8],
    extra: &str,
    content_type: &str,
) -> (u16, String) {
    let addr = c.url.trim_start_matches("http://").to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        c.token,
        body.len()
    );
    let mut w = s.try_clone().unwrap();
    let body = body.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(head.as_bytes());
        let _ = w.write_all(&body);
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 << 10];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    let text = String::from_utf8_lossy(&raw).into_owned();
    split_response(&text)
}

/// `n` numbered lines.
fn lines(n: usize) -> String {
    (1..=n).map(|i| format!("line {i:05}\n")).collect()
}

/// Uploads `text` as store file `path` through the CLI.
fn put_text(c: &Cluster, path: &str, text: &str) {
    let local = format!("local-{}", path.replace('/', "_"));
    c.file(&local, text);
    c.ok(&["put", &local, path]);
}

/// Writes a pass-through job file reading `source` at `rate` lines/s into `sink`.
fn job(c: &Cluster, file: &str, source: &str, sink: &str, rate: f64) -> String {
    let toml = job_toml(
        file,
        source,
        sink,
        rate,
        "exactly-once",
        &[(1, "identity", &[])],
    );
    c.file(file, &toml);
    file.to_string()
}

/// A job that keeps running for about a minute (1,000 lines at 20/s).
fn slow_job(c: &Cluster, file: &str, source: &str, sink: &str) -> String {
    put_text(c, source, &lines(1000));
    let id = c.submit(&job(c, file, source, sink, 20.0));
    assert_eq!(c.json(&["job", &id, "--json"])["status"], "running");
    id
}

/// Submits a job file that must be refused; returns the CLI's error output.
fn refused_submit(c: &Cluster, file: &str) -> String {
    let out = c.run(&["submit", file]);
    assert!(
        !out.status.success(),
        "{file} must be refused: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Store paths under `prefix`, through the API.
fn listing(c: &Cluster, prefix: &str) -> Vec<String> {
    let (status, body) = http(c, "GET", &format!("/api/store?prefix={prefix}"), b"");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["path"].as_str().map(str::to_string))
        .collect()
}

/// The job ids (`job-N`, `job-N-SUFFIX`) a message names.
fn job_ids(text: &str) -> std::collections::BTreeSet<String> {
    text.split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '-'))
        .filter(|w| {
            w.strip_prefix("job-")
                .is_some_and(|n| n.starts_with(|ch: char| ch.is_ascii_digit()))
        })
        .map(str::to_string)
        .collect()
}

fn job_count(c: &Cluster) -> usize {
    c.json(&["jobs", "--json"]).as_array().unwrap().len()
}

#[test]
fn two_running_jobs_cannot_share_a_sink() {
    let c = Cluster::start(1, 5.0);
    let first = slow_job(&c, "a.toml", "in-a.txt", "out/shared.txt");
    put_text(&c, "in-b.txt", &lines(10));
    let err = refused_submit(&c, &job(&c, "b.toml", "in-b.txt", "out/shared.txt", 0.0));
    assert!(
        err.contains(&first) && err.contains("out/shared.txt") && err.contains("sink"),
        "the refusal names the running job and the sink: {err}"
    );
    // Only the running job: the refused one gets no record (its id named a job that never
    // existed; hostile probe).
    assert_eq!(
        job_ids(&err).len(),
        1,
        "only the running job is named: {err}"
    );
    assert!(err.contains("this job"), "{err}");
    assert_eq!(job_count(&c), 1, "nothing of the refused job was created");
    // Once the first job has ended, the sink is free again.
    c.ok(&["cancel", &first]);
    c.wait_job(&first, Duration::from_secs(30));
    let second = c.submit("b.toml");
    let j = c.wait_job(&second, Duration::from_secs(60));
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_eq!(c.store_file("out/shared.txt"), lines(10));
}

#[test]
fn a_jobs_sink_cannot_be_a_running_jobs_source() {
    let c = Cluster::start(1, 5.0);
    let original = lines(1000);
    let first = slow_job(&c, "a.toml", "in.txt", "out/a.txt");
    put_text(&c, "other.txt", &lines(10));
    let err = refused_submit(&c, &job(&c, "b.toml", "other.txt", "in.txt", 0.0));
    assert!(
        err.contains(&first) && err.contains("in.txt") && err.contains("reads"),
        "the refusal names the running job that reads the file: {err}"
    );
    assert_eq!(
        job_ids(&err).len(),
        1,
        "only the running job is named: {err}"
    );
    // Nor the other way round: a job cannot read what a running job is writing.
    let err = refused_submit(&c, &job(&c, "c.toml", "out/a.txt", "out/c.txt", 0.0));
    assert!(err.contains(&first) && err.contains("out/a.txt"), "{err}");
    assert_eq!(job_count(&c), 1);
    assert_eq!(c.store_file("in.txt"), original, "the source is untouched");
}

#[test]
fn a_jobs_sink_cannot_be_its_own_source() {
    let c = Cluster::start(1, 5.0);
    let original = lines(100);
    put_text(&c, "in.txt", &original);
    let err = refused_submit(&c, &job(&c, "self.toml", "in.txt", "in.txt", 0.0));
    assert!(
        err.contains("in.txt") && err.contains("its own source"),
        "{err}"
    );
    // The same file under another spelling of its path is still the same file.
    let err = refused_submit(&c, &job(&c, "self2.toml", "in.txt", "./in.txt", 0.0));
    assert!(err.contains("its own source"), "{err}");
    assert_eq!(job_count(&c), 0, "nothing ran");
    assert_eq!(
        c.store_file("in.txt"),
        original,
        "the input is not truncated"
    );
}

#[test]
fn put_over_a_running_jobs_source_is_refused() {
    let c = Cluster::start(1, 5.0);
    let original = lines(60);
    put_text(&c, "in.txt", &original);
    // 60 lines at 20/s: running for about three seconds.
    let id = c.submit(&job(&c, "a.toml", "in.txt", "out/a.txt", 20.0));
    let (status, body) = http(&c, "PUT", "/api/store/in.txt", b"replaced\n");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains(&id) && body.contains("reads"), "{body}");
    // The CLI says so too.
    c.file("new.txt", "replaced\n");
    let out = c.run(&["put", "new.txt", "in.txt"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&id),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(c.store_file("in.txt"), original, "the source is unchanged");
    let j = c.wait_job(&id, Duration::from_secs(60));
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_same(
        "the job's output",
        &sorted_lines(&c.store_file("out/a.txt")),
        &sorted_lines(&original),
    );
    // When the job has ended the file is the user's again.
    let (status, body) = http(&c, "PUT", "/api/store/in.txt", b"replaced\n");
    assert_eq!(status, 201, "{body}");
    assert_eq!(c.store_file("in.txt"), "replaced\n");
}

#[test]
fn delete_of_a_running_jobs_sink_is_refused() {
    let c = Cluster::start(1, 5.0);
    let original = lines(60);
    put_text(&c, "in.txt", &original);
    let id = c.submit(&job(&c, "a.toml", "in.txt", "out/a.txt", 20.0));
    // The sink itself, or a directory holding it.
    for path in ["/api/store/out/a.txt", "/api/store/out"] {
        let (status, body) = http(&c, "DELETE", path, b"");
        assert_eq!(status, 409, "DELETE {path}: {body}");
        assert!(
            body.contains(&id) && body.contains("nothing was deleted"),
            "{body}"
        );
    }
    // Replacing the sink is refused too.
    let (status, body) = http(&c, "PUT", "/api/store/out/a.txt", b"lost\n");
    assert_eq!(status, 409, "{body}");
    let j = c.wait_job(&id, Duration::from_secs(60));
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_same(
        "the sink after the refused delete",
        &sorted_lines(&c.store_file("out/a.txt")),
        &sorted_lines(&original),
    );
    // The job has ended: the delete goes through and says what it removed.
    let (status, body) = http(&c, "DELETE", "/api/store/out", b"");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("out/a.txt"), "{body}");
}

/// A file where a job's output needs a folder makes the output unwritable: a job whose sink
/// lies under a file is refused at submit, and a `put` that would turn a running job's sink
/// folder into a file (or put a file under its sink) is refused (409) while the job runs, so
/// the job ends with its whole output.
#[test]
fn a_file_cannot_stand_where_a_job_s_output_needs_a_folder() {
    let c = Cluster::start(1, 5.0);
    let original = lines(60);
    put_text(&c, "in.txt", &original);
    put_text(&c, "scratch/d/x.csv", "a file\n");
    let err = refused_submit(
        &c,
        &job(&c, "under.toml", "in.txt", "scratch/d/x.csv/y", 0.0),
    );
    assert!(
        err.contains("sink.path") && err.contains("is a file"),
        "{err}"
    );
    assert_eq!(job_count(&c), 0, "nothing ran");

    let id = c.submit(&job(&c, "a.toml", "in.txt", "res/x/v1.txt", 20.0));
    for path in [
        "/api/store/res/x",
        "/api/store/res",
        "/api/store/res/x/v1.txt/y",
    ] {
        let (status, body) = http(&c, "PUT", path, b"in the way\n");
        assert_eq!(status, 409, "PUT {path}: {body}");
        assert!(body.contains(&id), "{body}");
    }
    let j = c.wait_job(&id, Duration::from_secs(60));
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_same(
        "the output the refused uploads would have broken",
        &sorted_lines(&c.store_file("res/x/v1.txt")),
        &sorted_lines(&original),
    );
}

/// An operator executable uploaded into the store is read by the running job that uses it:
/// replacing or deleting it (or the directory holding it) is refused (409, naming the job)
/// and the file stays as it was; once the job has ended it is the user's again.
/// A job submitted again while the first runs, with the same local operator file, is
/// accepted: `submit` sees the store holds the same bytes and does not upload them over the
/// file the running job reads (a hostile probe's second submit was refused with 409). A
/// changed file is still refused while the first job runs.
#[test]
fn a_second_submit_with_the_same_operator_file_is_accepted_while_the_first_runs() {
    let c = Cluster::start(1, 5.0);
    put_text(&c, "in.txt", &lines(1000));
    let op = c.file("ops/same.sh", "#!/bin/sh\nexec cat\n");
    std::fs::set_permissions(&op, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // 1,000 lines at 20/s: running for about a minute, until cancelled.
    let job = |name: &str| {
        let sink = format!("out/{name}.txt");
        let toml = job_toml(
            name,
            "in.txt",
            &sink,
            20.0,
            "exactly-once",
            &[(1, "ops/same.sh", &[])],
        );
        c.file(&format!("{name}.toml"), &toml);
        format!("{name}.toml")
    };
    let first = c.submit(&job("first"));
    let out = c.run(&["submit", &job("second")]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("same file; not uploaded again"), "{said}");
    let second = String::from_utf8_lossy(&out.stdout).trim().to_string();
    c.file("ops/same.sh", "#!/bin/sh\nexec tac\n");
    let out = c.run(&["submit", &job("third")]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("409") && said.contains(&first),
        "{said}"
    );
    for id in [&first, &second] {
        assert_eq!(c.json(&["job", id, "--json"])["status"], "running");
        c.ok(&["cancel", id]);
    }
}

#[test]
fn put_or_delete_of_a_running_jobs_operator_is_refused() {
    let c = Cluster::start(1, 5.0);
    let op = "#!/bin/sh\nexec cat\n";
    put_text(&c, "ops/pass.sh", op);
    put_text(&c, "in.txt", &lines(1000));
    // 1,000 lines at 20/s: running for about a minute, until cancelled.
    let toml = job_toml(
        "op",
        "in.txt",
        "out/op.txt",
        20.0,
        "exactly-once",
        &[(1, "ops/pass.sh", &[])],
    );
    c.file("op.toml", &toml);
    let id = c.submit("op.toml");
    assert_eq!(c.json(&["job", &id, "--json"])["status"], "running");
    for (method, path) in [
        ("PUT", "/api/store/ops/pass.sh"),
        ("DELETE", "/api/store/ops/pass.sh"),
        ("DELETE", "/api/store/ops"),
    ] {
        let (status, body) = http(&c, method, path, b"#!/bin/sh\nexit 1\n");
        assert_eq!(status, 409, "{method} {path}: {body}");
        assert!(
            body.contains(&id) && body.contains("ops/pass.sh"),
            "{method} {path}: {body}"
        );
    }
    // A refused upload larger than the leader reads before it answers (64 MiB): the client
    // gets the refusal, or, when the connection closes under the rest of its body, says what
    // that means, never that the leader cannot be reached (a hostile probe saw "cannot reach
    // the leader ... Broken pipe"). Which of the two comes is a race.
    let big = c.dir.path().join("big.sh");
    std::fs::write(&big, vec![b'#'; 100 << 20]).unwrap();
    let out = c.run(&["put", big.to_str().unwrap(), "ops/pass.sh"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    let refused = said.contains("409") && said.contains(&id);
    let cut = said.contains("closed the connection during the upload");
    assert!((refused || cut) && !said.contains("cannot reach"), "{said}");
    assert_eq!(c.store_file("ops/pass.sh"), op, "the operator is unchanged");
    assert_eq!(
        c.json(&["job", &id, "--json"])["status"],
        "running",
        "the refusals came while the job ran"
    );
    c.ok(&["cancel", &id]);
    let j = c.wait_job(&id, Duration::from_secs(30));
    assert_eq!(j["status"], "cancelled", "{j}");
    let (status, body) = http(&c, "PUT", "/api/store/ops/pass.sh", b"#!/bin/sh\nexit 1\n");
    assert_eq!(status, 201, "{body}");
    let (status, body) = http(&c, "DELETE", "/api/store/ops", b"");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("ops/pass.sh"), "{body}");
}

#[test]
fn logs_are_not_writable_or_deletable_through_the_api() {
    let c = Cluster::start(1, 5.0);
    // Two stages: the second one's input is logged (exactly-once).
    put_text(&c, "in.txt", &lines(1000));
    let two = job_toml(
        "logged",
        "in.txt",
        "out/a.txt",
        20.0,
        "exactly-once",
        &[(1, "identity", &[]), (1, "identity", &[])],
    );
    c.file("a.toml", &two);
    let id = c.submit("a.toml");
    let logs = wait_for("the job's input logs", Duration::from_secs(30), || {
        let names = listing(&c, "logs/");
        (!names.is_empty()).then_some(names)
    });
    assert!(logs.iter().all(|n| n.starts_with(&format!("logs/{id}/"))));
    for (method, path) in [
        ("PUT", format!("/api/store/logs/{id}/forged")),
        ("PUT", format!("/api/store/{}", logs[0])),
        ("PUT", "/api/store/blobs/sha256/forged".to_string()),
        ("DELETE", "/api/store/logs".to_string()),
        ("DELETE", format!("/api/store/logs/{id}")),
        ("DELETE", format!("/api/store/{}", logs[0])),
        ("DELETE", "/api/store/blobs".to_string()),
        // The cluster's id, which a worker with a store of its own must find there.
        ("PUT", "/api/store/cluster/id".to_string()),
        ("DELETE", "/api/store/cluster".to_string()),
    ] {
        let (status, body) = http(&c, method, &path, b"forged\n");
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert!(body.contains("belong to the engine"), "{body}");
    }
    let after = listing(&c, "logs/");
    for n in &logs {
        assert!(after.contains(n), "{n} is still there");
    }
    assert!(!after.iter().any(|n| n.ends_with("/forged")));
    // The CLI cannot write there either, and no job may use logs/ as its sink.
    c.file("x.txt", "x\n");
    assert!(!c.run(&["put", "x.txt", "logs/x"]).status.success());
    put_text(&c, "in-b.txt", &lines(5));
    let sink = format!("logs/{id}/out.txt");
    let err = refused_submit(&c, &job(&c, "b.toml", "in-b.txt", &sink, 0.0));
    assert!(err.contains("belong to the engine"), "{err}");
    assert_eq!(
        c.json(&["job", &id, "--json"])["status"],
        "running",
        "the job whose logs were attacked runs on"
    );
}

/// An ended job's input logs are removed after its end is visible, not before it (their
/// removal is off the job's end): they are gone soon after, and its output is whole.
#[test]
fn an_ended_job_s_logs_are_removed_after_its_end() {
    let c = Cluster::start(1, 5.0);
    put_text(&c, "in.txt", &lines(300));
    let two = job_toml(
        "logged",
        "in.txt",
        "out/a.txt",
        0.0,
        "exactly-once",
        &[(2, "identity", &[]), (2, "identity", &[])],
    );
    c.file("a.toml", &two);
    let id = c.submit("a.toml");
    let info = c.wait_job(&id, Duration::from_secs(60));
    assert_eq!(info["status"], "succeeded", "{info}");
    wait_for(
        "the ended job's logs to go",
        Duration::from_secs(30),
        || listing(&c, "logs/").is_empty().then_some(()),
    );
    assert_eq!(c.store_file("out/a.txt").lines().count(), 300);
}

/// A path under a file (the file used as a folder) names nothing: 404 for a read, a ranged
/// read and a delete, as a missing path gets, and no answer names the leader's directories (a
/// hostile probe got a 500 quoting the local path). A `Range` that is not one well-formed
/// range is ignored (200, the whole file); a well-formed one outside the file is 416.
#[test]
fn a_file_used_as_a_folder_is_not_found_and_no_answer_names_a_local_path() {
    let c = Cluster::start(1, 5.0);
    put_text(&c, "data/f.csv", "a\nb\n");
    let dir = c.dir.path().display().to_string();
    for (method, extra) in [("GET", ""), ("GET", "Range: bytes=0-1\r\n")] {
        let (status, body) = http_with(&c, method, "/api/store/data/f.csv/x", b"", extra);
        assert_eq!(status, 404, "{method} {extra:?}: {body}");
        assert!(
            !body.contains(&dir),
            "{method} {extra:?} named a local path: {body}"
        );
    }
    // A delete of what is not there removes nothing, as for a missing path.
    let (status, body) = http(&c, "DELETE", "/api/store/data/f.csv/x", b"");
    assert_eq!((status, body.as_str()), (200, r#"{"removed":[]}"#));
    let ranged = |h: &str| http_with(&c, "GET", "/api/store/data/f.csv", b"", h);
    assert_eq!(ranged("Range: bytes=2-3\r\n"), (206, "b\n".to_string()));
    for ignored in ["bytes=0-1,2-3", "items=0-1", "bytes=x-y"] {
        let (status, body) = ranged(&format!("Range: {ignored}\r\n"));
        // (The whole file, streamed: chunked.)
        assert!(
            status == 200 && body.contains("a\nb\n"),
            "{ignored}: {status} {body:?}"
        );
    }
    assert_eq!(ranged("Range: bytes=10-\r\n").0, 416);
}

#[test]
fn the_api_refuses_local_paths() {
    let c = Cluster::start(1, 5.0);
    let secret = c.dir.path().join("secret.txt");
    std::fs::write(&secret, "do not read\n").unwrap();
    let victim = c.dir.path().join("victim.txt");
    std::fs::write(&victim, "do not overwrite\n").unwrap();
    let job = format!(
        r#"{{"delivery":"exactly-once","source_path":{:?},"source_name":"x","rate":0.0,"sink_path":{:?},"stages":[{{"tasks":1,"operator":{{"kind":"builtin","name":"identity","args":[]}}}}],"paths":"local","keep_logs":false}}"#,
        secret.display().to_string(),
        victim.display().to_string()
    );
    let (status, body) = http(&c, "POST", "/api/jobs", job.as_bytes());
    assert_eq!(status, 400, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["error"].as_str().unwrap().contains("paths"), "{body}");
    assert_eq!(v["problems"][0]["field"], "paths", "{body}");
    assert_eq!(job_count(&c), 0);
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "do not overwrite\n"
    );
}

#[test]
fn store_listing_cannot_escape_the_store() {
    let c = Cluster::start(1, 5.0);
    put_text(&c, "in.txt", "x\n");
    for path in [
        "/api/store?prefix=../../../../etc/",
        "/api/store?prefix=..%2F..%2F..%2F..%2Fetc%2F",
        "/api/store?prefix=a/../../",
        "/api/store?prefix=/../",
        "/internal/store?prefix=../../../../etc/",
        "/api/store/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/internal/store/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    ] {
        let (status, body) = http(&c, "GET", path, b"");
        // The workers' store refuses a caller that is no worker registration before
        // anything else; the public API refuses the path.
        let want = if path.starts_with("/internal/") {
            401
        } else {
            400
        };
        assert_eq!(status, want, "GET {path}: {body}");
        assert!(
            !body.contains("passwd") || body.contains("not a valid store path"),
            "GET {path} names nothing outside the store: {body}"
        );
        assert!(
            !body.contains("hostname") && !body.contains("root:"),
            "{body}"
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(v.is_object() && v["error"].is_string(), "{body}");
    }
    // The store itself lists as before.
    assert_eq!(listing(&c, "in"), ["in.txt"]);
}

/// The hostile probe's finds: a NUL in a store path was a 500 (the file system refused it
/// deep down), and a symbolic link planted in the store directory was followed out of it.
/// Now a NUL is a 400 that says so, and a path through a link is a 403 that says so: nothing
/// outside the store is read, written or listed.
#[test]
fn a_nul_or_a_symlink_in_a_store_path_is_refused_with_a_clear_message() {
    let c = Cluster::start(1, 5.0);
    put_text(&c, "in.txt", "x\n");
    for (method, path) in [
        ("GET", "/api/store/a%00b"),
        ("PUT", "/api/store/a%00b"),
        ("DELETE", "/api/store/a%00b"),
        ("GET", "/api/store?prefix=a%00"),
    ] {
        let (status, body) = http(&c, method, path, b"data");
        assert_eq!(status, 400, "{method} {path}: {body}");
        assert!(
            body.contains("NUL") || body.contains("not a valid store path"),
            "{method} {path}: {body}"
        );
    }
    let outside = c.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "private\n").unwrap();
    let store = c.dir.path().join("leader/store");
    std::os::unix::fs::symlink(&outside, store.join("evil")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), store.join("leak")).unwrap();
    for (method, path) in [
        ("GET", "/api/store/evil/secret"),
        ("GET", "/api/store/leak"),
        ("PUT", "/api/store/evil/planted"),
        ("PUT", "/api/store/leak"),
        ("DELETE", "/api/store/evil"),
    ] {
        let (status, body) = http(&c, method, path, b"forged\n");
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert!(body.contains("symbolic link"), "{method} {path}: {body}");
        assert!(!body.contains("private"), "{body}");
    }
    // Nothing was planted: the store holds the upload and the engine's cluster id.
    assert_eq!(listing(&c, ""), ["cluster/id", "in.txt"]);
    assert_eq!(
        std::fs::read_to_string(outside.join("secret")).unwrap(),
        "private\n"
    );
    assert!(!outside.join("planted").exists());
}

/// The hostile probe's finds: a sink path with a NUL or a 300-byte name was accepted at
/// submit and failed only at the job's end, and an absolute sink path (`/tmp/x`) silently
/// became the store path `tmp/x`. Each is now refused at submit (400), naming `sink.path`
/// and why, and nothing starts.
#[test]
fn bad_sink_paths_are_refused_at_submit_naming_the_field() {
    let c = Cluster::start(1, 5.0);
    put_text(&c, "in.txt", "x\n");
    let long = format!("out/{}.txt", "n".repeat(300));
    for (sink, why) in [
        ("out/a\\u0000b.txt", "NUL"),
        (long.as_str(), "255"),
        ("/tmp/x", "absolute path names a local file"),
    ] {
        let job = format!(
            r#"{{"delivery":"exactly-once","source_path":"in.txt","source_name":"in.txt","rate":0.0,"sink_path":"{sink}","stages":[{{"tasks":1,"operator":{{"kind":"builtin","name":"identity","args":[]}}}}],"paths":"store","keep_logs":false}}"#
        );
        let (status, body) = http(&c, "POST", "/api/jobs", job.as_bytes());
        assert_eq!(status, 400, "sink {sink}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let problems = v["problems"].as_array().unwrap();
        assert_eq!(problems.len(), 1, "{body}");
        assert_eq!(problems[0]["field"], "sink.path", "{body}");
        assert!(
            problems[0]["message"].as_str().unwrap().contains(why),
            "sink {sink}: {body}"
        );
    }
    // The same from a job file through the CLI.
    c.file(
        "abs.toml",
        "[source]\npath = \"in.txt\"\n[sink]\npath = \"/tmp/x\"\n[[stages]]\nop = \"identity\"\n",
    );
    let err = refused_submit(&c, "abs.toml");
    assert!(
        err.contains("sink.path") && err.contains("absolute"),
        "{err}"
    );
    assert_eq!(job_count(&c), 0);
    assert!(listing(&c, "tmp").is_empty());
}

#[test]
fn a_job_submission_over_the_body_limit_is_413() {
    let c = Cluster::start(1, 5.0);
    // A syntactically plausible job whose args make it 5 MiB (the limit is 4 MiB).
    let big = "a".repeat(5 << 20);
    let job = format!(
        r#"{{"delivery":"exactly-once","source_path":"in.txt","source_name":"in.txt","rate":0.0,"sink_path":"o.txt","stages":[{{"tasks":1,"operator":{{"kind":"builtin","name":"identity","args":["{big}"]}}}}],"paths":"store","keep_logs":false}}"#
    );
    let (status, body) = http(&c, "POST", "/api/jobs", job.as_bytes());
    assert_eq!(status, 413, "{body}");
    assert_eq!(job_count(&c), 0);
    // Kill requests are small too.
    let (status, _) = http(&c, "POST", "/api/kill-task", big.as_bytes());
    assert_eq!(status, 413);
    // The leader is still there and answers.
    let (status, _) = http(&c, "GET", "/api/jobs", b"");
    assert_eq!(status, 200);
}

/// Samples a process's resident set (VmRSS, kB) every ~100 ms until stopped; returns the peak.
struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(u64, usize)>,
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut peak, mut samples) = (0, 0);
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(rss_kb(pid));
                samples += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            (peak.max(rss_kb(pid)), samples + 1)
        });
        RssSampler { stop, thread }
    }

    /// The peak in kB and the number of samples.
    fn finish(self) -> (u64, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// The SHA-256 of a file, by `sha256sum` (fast even when the test is built without
/// optimisation).
fn sha256_file(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn a_large_put_and_get_keep_the_leader_small() {
    const SIZE: u64 = 1 << 30;
    const LIMIT_KB: u64 = 100 * 1024;
    let c = Cluster::start(1, 5.0);
    let pid = c.leader_pid();
    // Real bytes (no sparse file): repeated 64-byte lines, each 1 MiB block numbered.
    let src = c.dir.path().join("big.txt");
    let t = Instant::now();
    {
        let line = format!(
            "{:<63}\n",
            "rainstorm large upload test line: abcdefghijklmnopqrstuvwxyz"
        );
        let mut block = line.repeat((1 << 20) / 64).into_bytes();
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src).unwrap());
        for i in 0..SIZE >> 20 {
            block[..10].copy_from_slice(format!("{i:>9} ").as_bytes());
            f.write_all(&block).unwrap();
        }
        f.flush().unwrap();
    }
    assert_eq!(std::fs::metadata(&src).unwrap().len(), SIZE);
    let generated = t.elapsed();
    let before = rss_kb(pid);

    let sampler = RssSampler::start(pid);
    let t = Instant::now();
    c.ok(&["put", src.to_str().unwrap(), "big/file.txt"]);
    let put_time = t.elapsed();
    let (put_peak, put_samples) = sampler.finish();

    let back = c.dir.path().join("back.txt");
    let sampler = RssSampler::start(pid);
    let t = Instant::now();
    c.ok(&["get", "big/file.txt", back.to_str().unwrap()]);
    let get_time = t.elapsed();
    let (get_peak, get_samples) = sampler.finish();

    let after = rss_kb(pid);
    println!(
        "{} MiB: generated in {generated:.1?}; leader RSS {} MB before, peak {} MB during put \
         ({put_time:.1?}, {put_samples} samples), peak {} MB during get ({get_time:.1?}, \
         {get_samples} samples), {} MB after",
        SIZE >> 20,
        before / 1024,
        put_peak / 1024,
        get_peak / 1024,
        after / 1024
    );
    assert!(
        put_samples >= 3 && get_samples >= 3,
        "the sampler saw the transfers"
    );
    assert!(
        put_peak < LIMIT_KB,
        "the leader peaked at {} MB during the put",
        put_peak / 1024
    );
    assert!(
        get_peak < LIMIT_KB,
        "the leader peaked at {} MB during the get",
        get_peak / 1024
    );
    let stored = c.dir.path().join("leader/store/big/file.txt");
    assert_eq!(std::fs::metadata(&stored).unwrap().len(), SIZE);
    assert_eq!(std::fs::metadata(&back).unwrap().len(), SIZE);
    let (want, got) = (sha256_file(&src), sha256_file(&back));
    assert_eq!(got, want, "the round-tripped file is byte-identical");
}

/// A logged task on a worker without a store of its own compacts its input log through the
/// leader: each merge deletes the run it replaced in one bulk request (`POST /internal/store`),
/// so the kept log of a job of ~40 group commits is a handful of objects, and the output is
/// exact.
#[test]
fn a_worker_compacts_its_input_log_through_the_leader_and_the_merged_runs_are_deleted() {
    let mut c = Cluster::start(0, 5.0);
    c.add_worker_env(&[
        ("RAINSTORM_LOG_COMPACT_FANIN", "2"),
        ("RAINSTORM_LOG_COMMIT_MS", "50"),
        // Merging as soon as a tier fills: this two-second job is within the default lag.
        ("RAINSTORM_LOG_COMPACT_LAG_MS", "0"),
    ]);
    c.wait_alive(1);
    let text: String = (1..=400).map(|i| format!("line {i:04}\n")).collect();
    c.file("in.txt", &text);
    c.ok(&["put", "in.txt", "in.txt"]);
    // Two stages at 200 lines/s, exactly-once: the second stage and the sink log ~40 commits.
    let job = job_toml(
        "compacts",
        "in.txt",
        "out.txt",
        200.0,
        "exactly-once",
        &[(1, "identity", &[]), (1, "identity", &[])],
    );
    c.file("job.toml", &format!("keep_logs = true\n{job}"));
    let id = c.submit("job.toml");
    c.succeeds_with_lines(&id, "out.txt", &text);
    let (status, body) = http(&c, "GET", &format!("/api/store?prefix=logs/{id}/2.0/"), b"");
    assert_eq!(status, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let segments: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["path"].as_str())
        .filter(|p| p.ends_with(".seg"))
        .collect();
    // Fan-in 2: at most one object per level, about log2(40) levels, and the newest.
    assert!(
        !segments.is_empty() && segments.len() <= 10,
        "{} objects left: {segments:?}",
        segments.len()
    );
    let worker_log = std::fs::read_to_string(c.dir.path().join("worker-0.log")).unwrap();
    assert!(
        !worker_log.contains("could not delete compacted log objects"),
        "{worker_log}"
    );
}

/// When the output a cancelled job committed cannot be written (here a file, put in the
/// store's directory behind the API's back, stands where the output's folder must be), the
/// sink's log — the only copy of what the job committed — is kept and the job says where, and
/// only it: the other stages' logs go (a probe's full store kept them all, for good); and a
/// follower of the ended job gets its final status instead of a stream that never ends.
#[test]
fn an_output_that_cannot_be_written_keeps_the_log_and_followers_get_the_status() {
    let c = Cluster::start(1, 5.0);
    put_text(&c, "in.txt", &lines(400));
    // Two stages: the second logs its input too (exactly-once), the sink is stage 3.
    let toml = job_toml(
        "a.toml",
        "in.txt",
        "res/x/out.txt",
        40.0,
        "exactly-once",
        &[(1, "identity", &[]), (1, "identity", &[])],
    );
    c.file("a.toml", &toml);
    let id = c.submit("a.toml");
    wait_for(
        "some output to be committed",
        Duration::from_secs(60),
        || {
            let j = c.json(&["job", &id, "--json"]);
            (j["sink_tuples"].as_u64()? > 0).then_some(())
        },
    );
    let store = c.dir.path().join("leader/store");
    let logs = store.join("logs").join(&id);
    let folders = || -> Vec<String> {
        let mut f: Vec<String> = std::fs::read_dir(&logs)
            .map(|d| {
                d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        f.sort();
        f
    };
    // The sink holds output only once stage 2 committed it to its log.
    assert!(
        folders().iter().any(|f| f == "2.0"),
        "stage 2 logs: {:?}",
        folders()
    );
    std::fs::write(store.join("res"), "in the way\n").unwrap();
    c.ok(&["cancel", &id]);
    let j = c.wait_job(&id, Duration::from_secs(60));
    assert_eq!(j["status"], "cancelled", "{j}");
    let error = j["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("could not be written") && error.contains(&format!("logs/{id}/3.0/")),
        "the job says its output is in its sink's kept log: {j}"
    );
    wait_for(
        "only the sink's log to be left",
        Duration::from_secs(30),
        || (folders() == ["3.0"]).then_some(()),
    );
    let segments = std::fs::read_dir(logs.join("3.0"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(segments > 0, "the sink's log is kept");

    // A follower of the ended job ends, with its status.
    let mut follow = c
        .cmd(&["follow", &id])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while follow.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = follow.kill();
            panic!("`rainstorm follow` of an ended job with an unreadable output never ended");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = follow.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(said.to_lowercase().contains("cancelled"), "{said}");

    // A file that turns up at its sink path later is not its output: a follower prints none
    // of it (one printed an old file's lines from the byte it had reached).
    std::fs::remove_file(store.join("res")).unwrap();
    std::fs::create_dir_all(store.join("res/x")).unwrap();
    std::fs::write(
        store.join("res/x/out.txt"),
        "NOT THIS JOB'S 1\nNOT THIS JOB'S 2\n",
    )
    .unwrap();
    let j = c.json(&["job", &id, "--json"]);
    assert!(j["output_replaced"].is_string(), "{j}");
    let out = c.run(&["follow", &id]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        !printed.contains("NOT THIS JOB"),
        "printed another file: {printed}"
    );
}

/// A job cancelled just after the newest objects of its sink's log were deleted behind the
/// store's back (its listing then shows no gap) writes no output from what is left: the
/// output at its path stays whole, the job says why, and the log is kept. (The leader wrote
/// the shortened log over the whole output of an earlier run: a hostile probe.) What the
/// sink's worker reported, its commits, is what the log is checked against.
#[test]
fn a_cancel_after_the_sink_s_newest_commits_were_deleted_keeps_the_old_output() {
    let c = Cluster::start(1, 5.0);
    put_text(&c, "in.txt", &lines(60));
    // A first run writes the whole output.
    let first = c.submit(&job(&c, "whole.toml", "in.txt", "res/out.txt", 0.0));
    assert_eq!(
        c.wait_job(&first, Duration::from_secs(60))["status"],
        "succeeded"
    );
    let whole = c.store_file("res/out.txt");
    assert_eq!(whole, lines(60));
    // A second, at a line a second, committing each as it comes.
    let id = c.submit(&job(&c, "slow.toml", "in.txt", "res/out.txt", 1.0));
    let sink_log = c.dir.path().join("leader/store/logs").join(&id).join("2.0");
    let segments = |dir: &std::path::Path| -> Vec<std::path::PathBuf> {
        let mut s: Vec<_> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        s.retain(|p| p.extension().is_some_and(|e| e == "seg"));
        s.sort();
        s
    };
    wait_for(
        "the sink to commit some lines",
        Duration::from_secs(60),
        || (segments(&sink_log).len() >= 4).then_some(()),
    );
    // Just after a commit (the next is a second away): its newest objects go, then the cancel.
    let before = segments(&sink_log).len();
    wait_for("the sink's next commit", Duration::from_secs(30), || {
        (segments(&sink_log).len() > before).then_some(())
    });
    let mut newest = segments(&sink_log);
    for p in newest.split_off(newest.len() - 2) {
        std::fs::remove_file(p).unwrap();
    }
    c.ok(&["cancel", &id]);
    let j = c.wait_job(&id, Duration::from_secs(60));
    assert_eq!(j["status"], "cancelled", "{j}");
    let error = j["error"].as_str().unwrap_or_default();
    assert!(error.contains("deleted from the store"), "{j}");
    assert_same_text(
        "the output after the cancel",
        &c.store_file("res/out.txt"),
        &whole,
    );
}

/// Store paths are names, whatever characters they hold: a `?`, `#` or `%` in one is not the
/// start of a URL's query, fragment or escape (a probe saw `put A 'r/f?1'` and `put B 'r/f?2'`
/// both write `r/f`). Each file keeps its own name through `put`, `ls` and `get`, and a job
/// reads and writes such paths through the workers' store client.
#[test]
fn store_paths_with_url_characters_keep_their_names() {
    let c = Cluster::start(1, 5.0);
    let names = [
        "r/f?1",
        "r/f?2",
        "x/hash#frag.dat",
        "x/%41.dat",
        "x/a b+c&d=e.txt",
    ];
    for (i, name) in names.iter().enumerate() {
        put_text(&c, name, &format!("file {i}\n"));
    }
    let mut listed = listing(&c, "r/");
    listed.extend(listing(&c, "x/"));
    listed.sort();
    let mut want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    want.sort();
    assert_eq!(listed, want);
    for (i, name) in names.iter().enumerate() {
        let local = c.dir.path().join(format!("got-{i}"));
        c.ok(&["get", name, local.to_str().unwrap()]);
        assert_eq!(
            std::fs::read_to_string(&local).unwrap(),
            format!("file {i}\n"),
            "{name}"
        );
    }
    let original = lines(50);
    put_text(&c, "d/src#1?.csv", &original);
    let id = c.submit(&job(&c, "odd.toml", "d/src#1?.csv", "out/o#1?%.txt", 0.0));
    let j = c.wait_job(&id, Duration::from_secs(60));
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_same(
        "a job between odd names",
        &sorted_lines(&c.store_file("out/o#1?%.txt")),
        &sorted_lines(&original),
    );
}

/// `follow` of an ended job shows that job's output, or says it cannot: once a later job, an
/// upload or a delete has written over its output file, what is there is not its output (a
/// probe saw `follow` of a finished job print the next job's lines under its own status).
#[test]
fn follow_of_an_ended_job_never_shows_another_s_output() {
    let c = Cluster::start(1, 5.0);
    put_text(&c, "a.txt", &lines(30));
    put_text(&c, "b.txt", "other\n");
    let first = c.submit(&job(&c, "a.toml", "a.txt", "out/same.txt", 0.0));
    assert_eq!(
        c.wait_job(&first, Duration::from_secs(60))["status"],
        "succeeded"
    );
    // Its own output, while it is there.
    let out = c.run(&["follow", &first]);
    assert!(out.status.success());
    assert_same(
        "follow of the first job",
        &sorted_lines(&String::from_utf8_lossy(&out.stdout)),
        &sorted_lines(&lines(30)),
    );
    let second = c.submit(&job(&c, "b.toml", "b.txt", "out/same.txt", 0.0));
    assert_eq!(
        c.wait_job(&second, Duration::from_secs(60))["status"],
        "succeeded"
    );
    let out = c.run(&["follow", &first]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        !stdout.contains("other"),
        "the second job's output shown as the first's: {stdout}"
    );
    assert!(
        stderr.contains("written over") && stderr.contains(&second),
        "{stderr}"
    );
    let j = c.json(&["job", &first, "--json"]);
    assert!(
        j["output_replaced"]
            .as_str()
            .is_some_and(|s| s.contains(&second)),
        "{j}"
    );
    // The second job's own output is still shown, until an upload replaces it.
    let out = c.run(&["follow", &second]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "other\n");
    put_text(&c, "out/same.txt", "uploaded\n");
    let out = c.run(&["follow", &second]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("uploaded"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("upload"));
}

/// A request body that is not what the route takes gets the API's JSON error with a
/// `problems` list naming the body, not the extractor's plain text (a probe's job-file-shaped
/// body and `{"rate": null}` got `422 rate: invalid type: null, expected f64` as text).
#[test]
fn a_malformed_body_gets_the_api_s_json_error() {
    let c = Cluster::start(1, 5.0);
    for (path, body) in [
        ("/api/jobs", r#"{"name":"x","delivery":"x"}"#),
        ("/api/jobs", "name = \"not json\""),
        ("/api/jobs/job-1/rate", r#"{"rate":null}"#),
        ("/api/jobs/job-1/scale", r#"{"stage":"one"}"#),
        // A field named twice: a map would keep the last, and a reader the first.
        (
            "/api/jobs/job-1/scale",
            r#"{"stage":2,"tasks":3,"stage":1}"#,
        ),
        ("/api/kill-task", r#"{"worker":"w1","pid":1,"pid":4242}"#),
    ] {
        let (status, text) = http(&c, "POST", path, body.as_bytes());
        assert!((400..500).contains(&status), "{path}: {status} {text}");
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"));
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
        assert_eq!(v["problems"][0]["field"], "body", "{v}");
    }
    assert_eq!(job_count(&c), 0);
}

/// A job submitted through the API with a field it does not know (a typo) is refused naming
/// the field, as a job file is: nothing is dropped silently and run with its default.
#[test]
fn an_unknown_field_in_a_submitted_job_is_refused_naming_it() {
    let c = Cluster::start(1, 5.0);
    let input = c.file("in.txt", "a\n");
    c.ok(&["put", input.to_str().unwrap(), "in.txt"]);
    let job = |extra: &str| {
        format!(
            r#"{{"delivery":"exactly-once","source_path":"in.txt","source_name":"in.txt","rate":0.0,"sink_path":"o.txt","stages":[{{"tasks":1,{extra}"operator":{{"kind":"builtin","name":"identity","args":[]}}}}],"paths":"store","keep_logs":false}}"#
        )
    };
    let (status, text) = http(&c, "POST", "/api/jobs", job(r#""taskz":3,"#).as_bytes());
    assert_eq!(status, 400, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["problems"][0]["field"], "stages.0.taskz", "{v}");
    assert!(v["error"].as_str().unwrap().contains("taskz"), "{v}");
    assert_eq!(job_count(&c), 0);
    // A field given twice is refused too, naming it (not the last one taken).
    let (status, text) = http(&c, "POST", "/api/jobs", job(r#""tasks":2,"#).as_bytes());
    assert!((400..500).contains(&status), "{status} {text}");
    assert!(text.contains("duplicate field `tasks`"), "{text}");
    assert_eq!(job_count(&c), 0);
    // The same job without it is taken.
    let (status, text) = http(&c, "POST", "/api/jobs", job("").as_bytes());
    assert!((200..300).contains(&status), "{status} {text}");
    assert_eq!(job_count(&c), 1);
}

/// A submission the leader refuses changes nothing in the store: the local source and
/// operator `submit` uploaded for it are taken back (a hostile probe's refused job left its
/// source, a secret file, in the store); a file that was in the store before stays.
#[test]
fn a_refused_submit_takes_back_the_files_it_uploaded() {
    let c = Cluster::start(1, 5.0);
    put_text(&c, "kept/old.txt", &lines(1000));
    // A running job reads kept/old.txt (1,000 lines at 20/s).
    let running = job(&c, "running.toml", "kept/old.txt", "out/running.txt", 20.0);
    let running = c.submit(&running);
    c.file("mine/in.txt", &lines(50));
    let op = c.file("mine/op.sh", "#!/bin/sh\nexec cat\n");
    std::fs::set_permissions(&op, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // Refused by the leader, after the upload: its sink is what the running job reads.
    let toml = job_toml(
        "refused",
        "mine/in.txt",
        "kept/old.txt",
        0.0,
        "exactly-once",
        &[(1, "mine/op.sh", &[])],
    );
    c.file("refused.toml", &toml);
    let out = c.run(&["submit", "refused.toml"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("uploading mine/in.txt"), "{said}");
    assert!(said.contains(&running), "{said}");
    assert!(said.contains("removed mine/in.txt"), "{said}");
    assert!(said.contains("removed mine/op.sh"), "{said}");
    let listed = c.ok(&["ls", ""]);
    assert!(!listed.contains("mine/"), "{listed}");
    assert!(listed.contains("kept/old.txt"), "{listed}");
    c.ok(&["cancel", &running]);
    // Accepted, the same files are uploaded and stay.
    let good = job_toml(
        "good",
        "mine/in.txt",
        "out/good.txt",
        0.0,
        "exactly-once",
        &[(1, "mine/op.sh", &[])],
    );
    c.file("good.toml", &good);
    let id = c.submit("good.toml");
    let j = c.wait_job(&id, Duration::from_secs(60));
    assert_eq!(j["status"], "succeeded", "{j}");
    let listed = c.ok(&["ls", ""]);
    assert!(
        listed.contains("mine/in.txt") && listed.contains("mine/op.sh"),
        "{listed}"
    );
}

/// Clients that submit jobs on one new local source at the same moment each upload it, and
/// every job is taken and runs on the whole file. A hostile probe's 16 such submits went
/// wrong 3 runs in 5: clients took back one another's upload when a submit met another's
/// upload in progress, and jobs accepted meanwhile found their source deleted (12 accepted,
/// each failing 21 times "not found in the store"), or all 16 were refused.
#[test]
fn jobs_submitted_at_once_on_one_new_local_source_all_run_on_it() {
    let c = Cluster::start(2, 5.0);
    let text = lines(100_000);
    c.file("shared/src.txt", &text);
    let files: Vec<String> = (0..16)
        .map(|i| {
            let sink = format!("out/{i}.txt");
            job(&c, &format!("j{i}.toml"), "shared/src.txt", &sink, 0.0)
        })
        .collect();
    let children: Vec<_> = files
        .iter()
        .map(|f| {
            c.cmd(&["submit", f])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let ids: Vec<String> = children
        .into_iter()
        .map(|ch| {
            let out = ch.wait_with_output().unwrap();
            let said = String::from_utf8_lossy(&out.stderr).to_string();
            assert!(out.status.success(), "a submit was refused: {said}");
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            stdout.lines().last().unwrap_or_default().trim().to_string()
        })
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let j = c.wait_job(id, Duration::from_secs(120));
        assert_eq!(j["status"], "succeeded", "{j}");
        assert_eq!(c.store_file(&format!("out/{i}.txt")), text, "job {id}");
    }
}

/// The sink's log kept for an output that could not be written goes with the job's record
/// when it expires: it stayed in the store for good, until someone removed it by hand.
#[test]
fn a_kept_sink_log_goes_with_the_job_s_expired_record() {
    let c = Cluster::start(1, 5.0);
    put_text(&c, "in.txt", &lines(400));
    let mut toml = job_toml(
        "kept",
        "in.txt",
        "res/x/out.txt",
        40.0,
        "exactly-once",
        &[(1, "identity", &[])],
    );
    toml.insert_str(0, "retention_s = 5\n");
    c.file("kept.toml", &toml);
    let id = c.submit("kept.toml");
    wait_for(
        "some output to be committed",
        Duration::from_secs(60),
        || {
            let j = c.json(&["job", &id, "--json"]);
            (j["sink_tuples"].as_u64()? > 0).then_some(())
        },
    );
    let store = c.dir.path().join("leader/store");
    std::fs::write(store.join("res"), "in the way\n").unwrap();
    c.ok(&["cancel", &id]);
    let j = c.wait_job(&id, Duration::from_secs(60));
    assert!(
        j["error"].as_str().unwrap_or_default().contains("kept"),
        "{j}"
    );
    let logs = store.join("logs").join(&id);
    assert!(
        logs.join("2.0").exists(),
        "the sink's log is kept while the record lives"
    );
    wait_for(
        "the expired job's logs to be removed",
        Duration::from_secs(30),
        || {
            (!logs.exists() || std::fs::read_dir(&logs).is_ok_and(|mut d| d.next().is_none()))
                .then_some(())
        },
    );
    assert!(!c.run(&["job", &id]).status.success(), "the record expired");
}

/// A job file can be posted as it is written (`content-type: application/toml`): taken when
/// valid, and refused with every problem of its text when not (a probe found the API's JSON
/// format documented nowhere, and a job file's shape refused with 422).
#[test]
fn a_job_file_posted_as_toml_is_taken_or_refused_with_every_problem() {
    let c = Cluster::start(1, 5.0);
    let input = c.file("in.txt", "a\nb\n");
    c.ok(&["put", input.to_str().unwrap(), "in.txt"]);
    let file = "name = \"posted\"\n[source]\npath = \"in.txt\"\n[sink]\npath = \"posted.txt\"\n[[stages]]\ntasks = 1\nop = \"identity\"\n";
    let post = |body: &str| {
        http_typed(
            &c,
            "POST",
            "/api/jobs",
            body.as_bytes(),
            "",
            "application/toml",
        )
    };
    let bad = file
        .replace("[source]", "delivry = \"at-most-once\"\n[source]")
        .replace("tasks = 1", "tasks = 0\ntaskz = 3");
    let (status, text) = post(&bad);
    assert_eq!(status, 400, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let fields: Vec<&str> = (v["problems"].as_array().unwrap().iter())
        .filter_map(|p| p["field"].as_str())
        .collect();
    for want in ["delivry", "stages[1].taskz", "stages[1].tasks"] {
        assert!(fields.contains(&want), "{want}: {v}");
    }
    assert_eq!(job_count(&c), 0);
    let (status, text) = post(file);
    assert_eq!(status, 201, "{text}");
    let id = serde_json::from_str::<serde_json::Value>(&text).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let j = c.wait_job(&id, Duration::from_secs(60));
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_eq!(c.store_file("posted.txt"), "a\nb\n");
}
