//! A real cluster: a leader and workers as separate processes, driven through the CLI.
//! Several tests are named after the war story (DESIGN.md §2) they guard against.

mod common;
use common::*;
use std::io::{Read, Write};
use std::time::Duration;

#[test]
fn store_put_get_ls() {
    let c = Cluster::start(1, 5.0);
    c.file("local/a.txt", "hello\n");
    c.ok(&["put", "local/a.txt", "data/a.txt"]);
    c.ok(&["put", "local/a.txt", "data/sub/b.txt"]);
    let ls = c.ok(&["ls", "data/"]);
    assert!(
        ls.contains("data/a.txt") && ls.contains("data/sub/b.txt"),
        "{ls}"
    );
    c.ok(&["get", "data/sub/b.txt", "back/b.txt"]);
    assert_eq!(
        std::fs::read_to_string(c.dir.path().join("back/b.txt")).unwrap(),
        "hello\n"
    );
    let missing = c.run(&["get", "nope.txt", "x"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
}

/// War stories: "a second job hung on the first job's port", "zombie goroutines of old jobs".
/// Five jobs one after another, then two at once, on the same cluster; afterwards no operator
/// process and no data connection of those jobs remains.
#[test]
fn second_job_and_concurrent_jobs_run_on_the_same_cluster_and_leave_nothing_behind() {
    let c = Cluster::start(3, 5.0);
    let signs = Signs::generate(3000, 7);
    signs.write(&c.dir.path().join("signs.csv"));
    let ops = install_ops(c.dir.path());
    c.ok(&["put", "signs.csv", "signs.csv"]);
    c.ok(&["put", "ops/filter.py", "ops/filter.py"]);
    c.ok(&["put", "ops/count.py", "ops/count.py"]);
    c.ok(&["put", "ops/select.py", "ops/select.py"]);
    let ports = c.data_ports();
    assert_eq!(
        ports.len(),
        3,
        "three workers have data listeners (the leader has none)"
    );
    let app1 = job_toml(
        "app1",
        "signs.csv",
        "out/app1.txt",
        0.0,
        "exactly-once",
        &[
            (3, "filter", &["Punched Telespar"]),
            (3, "select", &["3-5"]),
        ],
    );
    let app2 = job_toml(
        "app2",
        "signs.csv",
        "out/app2.txt",
        0.0,
        "exactly-once",
        &[
            (3, "filter", &["Punched Telespar"]),
            (3, "count-by", &["9"]),
        ],
    );
    let app1x = job_toml(
        "app1x",
        "signs.csv",
        "out/app1x.txt",
        0.0,
        "exactly-once",
        &[
            (3, "ops/filter.py", &["7", "Punched Telespar"]),
            (3, "ops/select.py", &["3-5"]),
        ],
    );
    let app2x = job_toml(
        "app2x",
        "signs.csv",
        "out/app2x.txt",
        0.0,
        "exactly-once",
        &[
            (
                3,
                "ops/filter.py",
                &["7", "Punched Telespar", "--key-col", "9"],
            ),
            (3, "ops/count.py", &["9"]),
        ],
    );
    c.file("app1.toml", &app1);
    c.file("app2.toml", &app2);
    c.file("app1x.toml", &app1x);
    c.file("app2x.toml", &app2x);
    let expect = |job: &str| {
        if job.starts_with("app1") {
            signs.app1()
        } else {
            signs.app2()
        }
    };
    for job in ["app1", "app2", "app1x", "app2x", "app1"] {
        let id = c.submit(&format!("{job}.toml"));
        let j = c.wait_job(&id, Duration::from_secs(60));
        assert_eq!(j["status"], "succeeded", "{job}: {j}");
        let out = sorted_lines(&c.store_file(&format!("out/{job}.txt")));
        assert_same(job, &out, &expect(job));
        assert!(
            processes_matching(ops.to_str().unwrap()).is_empty(),
            "operator processes outlived {job}"
        );
    }
    let a = c.submit("app2.toml");
    let b = c.submit("app1x.toml");
    for (id, job) in [(a, "app2"), (b, "app1x")] {
        let j = c.wait_job(&id, Duration::from_secs(60));
        assert_eq!(j["status"], "succeeded", "{job}: {j}");
        assert_same(
            job,
            &sorted_lines(&c.store_file(&format!("out/{job}.txt"))),
            &expect(job),
        );
    }
    assert!(processes_matching(ops.to_str().unwrap()).is_empty());
    wait_for(
        "data connections of ended jobs to close",
        Duration::from_secs(10),
        || (established_on(&ports) == 0).then_some(()),
    );
    let jobs = c.json(&["jobs", "--json"]);
    assert_eq!(jobs.as_array().unwrap().len(), 7);
    assert!(jobs
        .as_array()
        .unwrap()
        .iter()
        .all(|j| j["status"] == "succeeded"));
}

#[test]
fn submit_follow_streams_only_output_and_exit_code_follows_the_job() {
    let c = Cluster::start(2, 5.0);
    let signs = Signs::generate(2000, 8);
    signs.write(&c.dir.path().join("signs.csv"));
    c.ok(&["put", "signs.csv", "in/signs.csv"]);
    c.file(
        "app1.toml",
        &job_toml(
            "app1",
            "in/signs.csv",
            "out/app1.txt",
            0.0,
            "exactly-once",
            &[
                (2, "filter", &["Punched Telespar"]),
                (2, "select", &["3-5"]),
            ],
        ),
    );
    let out = c.run(&["submit", "app1.toml", "--follow"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same(
        "followed output",
        &sorted_lines(&String::from_utf8(out.stdout).unwrap()),
        &signs.app1(),
    );
    // A failing operator: the follower exits non-zero with the cause on stderr.
    let fail_path = write_exec(&c.dir.path().join("fail.sh"), "#!/bin/sh\nexit 3\n");
    // Two restarts, not the default twenty with their back-off (two and a half minutes).
    let fail = job_toml(
        "fail",
        "in/signs.csv",
        "out/fail.txt",
        0.0,
        "at-least-once",
        &[(1, fail_path.to_str().unwrap(), &[])],
    );
    c.file("fail.toml", &format!("max_restarts = 2\n{fail}"));
    let out = c.run(&["submit", "fail.toml", "--follow"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("code 3"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn course_syntax_submit_args_runs_the_same_job() {
    let c = Cluster::start(2, 5.0);
    let signs = Signs::generate(2000, 9);
    signs.write(&c.dir.path().join("signs.csv"));
    c.ok(&["put", "signs.csv", "signs.csv"]);
    let out = c.run(&[
        "submit-args",
        "--follow",
        "2",
        "2",
        "filter",
        "'Punched Telespar'",
        "count-by",
        "9",
        "signs.csv",
        "out/c.txt",
        "true",
        "false",
        "0",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same(
        "course syntax",
        &sorted_lines(&String::from_utf8(out.stdout).unwrap()),
        &signs.app2(),
    );
}

/// War story: "a README was accepted as a build input" — validate at the door; the leader
/// keeps serving after a bad job.
#[test]
fn invalid_jobs_are_rejected_with_field_and_value_and_the_leader_keeps_serving() {
    let c = Cluster::start(1, 5.0);
    c.file("bad.toml", "[source]\npath = \"absent.csv\"\n[sink]\npath = \"o.txt\"\n[[stages]]\nop = \"count-by\"\nargs = [\"zero\"]\n");
    let out = c.run(&["submit", "bad.toml"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stages[1].args") && err.contains("zero"),
        "{err}"
    );
    c.file("bad2.toml", "[source]\npath = \"absent.csv\"\n[sink]\npath = \"o.txt\"\n[[stages]]\nop = \"identity\"\n");
    let out = c.run(&["submit", "bad2.toml"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("source.path") && err.contains("absent.csv"),
        "{err}"
    );
    assert!(c.json(&["jobs", "--json"]).as_array().unwrap().is_empty());
    // Still serving.
    c.file("in.txt", "a\nb\n");
    c.ok(&["put", "in.txt", "in.txt"]);
    c.file(
        "ok.toml",
        "[source]\npath = \"in.txt\"\n[sink]\npath = \"o.txt\"\n[[stages]]\nop = \"identity\"\n",
    );
    let id = c.submit("ok.toml");
    assert_eq!(
        c.wait_job(&id, Duration::from_secs(30))["status"],
        "succeeded"
    );
}

/// Sends a frame; the peer may already have answered and closed, which is not an error here.
fn send_frame(s: &mut std::net::TcpStream, f: &rainstorm::protocol::frame::Frame) {
    let body = f.encode();
    let mut buf = (body.len() as u32).to_be_bytes().to_vec();
    buf.extend_from_slice(&body);
    if let Err(e) = s.write_all(&buf) {
        eprintln!("write after the peer closed: {e}");
    }
}

fn read_frame(s: &mut std::net::TcpStream) -> Option<rainstorm::protocol::frame::Frame> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    rainstorm::protocol::frame::Frame::decode(body.into()).ok()
}

/// War story: "a late tuple for a finished task crashed the worker". Unknown destinations are
/// answered with a Reject; the worker keeps running jobs.
#[test]
fn late_tuple_for_a_finished_or_unknown_task_is_answered_not_a_crash() {
    use rainstorm::model::tuple::Tuple;
    use rainstorm::protocol::frame::Frame;
    let c = Cluster::start(1, 5.0);
    c.file("in.txt", "x\ny\n");
    c.ok(&["put", "in.txt", "in.txt"]);
    c.file(
        "ok.toml",
        "[source]\npath = \"in.txt\"\n[sink]\npath = \"o.txt\"\n[[stages]]\nop = \"identity\"\n",
    );
    let id = c.submit("ok.toml");
    assert_eq!(
        c.wait_job(&id, Duration::from_secs(30))["status"],
        "succeeded"
    );
    let addr = c.json(&["workers", "--json"])[0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    for job in [id.as_str(), "job-does-not-exist"] {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let hello = c.secret_hello(&mut s, job);
        send_frame(&mut s, &Frame::Hello(hello));
        match read_frame(&mut s) {
            Some(Frame::Reject { reason, .. }) => assert!(reason.contains("no task"), "{reason}"),
            other => panic!("expected a Reject, got {other:?}"),
        }
        // The late tuple itself: the worker has closed the connection; it must not care.
        send_frame(
            &mut s,
            &Frame::Batch {
                first_seq: 99,
                emit_ns: 0,
                tuples: vec![Tuple::new("late", "tuple")],
            },
        );
    }
    // Garbage is a protocol error for that connection only.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(&[0, 0, 0, 3, 42, 1, 2]).unwrap();
    drop(s);
    let id = c.submit("ok.toml");
    assert_eq!(
        c.wait_job(&id, Duration::from_secs(30))["status"],
        "succeeded"
    );
    assert_eq!(c.json(&["workers", "--json"])[0]["state"], "alive");
}

/// War story: "cancelling a stream lost the final cancelled message". A follower of a
/// cancelled job still receives the final status; nothing of the job keeps running.
#[test]
fn cancel_stops_the_job_and_followers_still_get_the_final_status() {
    let c = Cluster::start(2, 5.0);
    let signs = Signs::generate(20000, 10);
    signs.write(&c.dir.path().join("signs.csv"));
    let ops = install_ops(c.dir.path());
    c.ok(&["put", "signs.csv", "signs.csv"]);
    let job = job_toml(
        "slow",
        "signs.csv",
        "out/slow.txt",
        500.0,
        "exactly-once",
        &[(
            2,
            ops.join("filter_contains.py").to_str().unwrap(),
            &["Punched Telespar"],
        )],
    );
    c.file("slow.toml", &job);
    // The followed job needs a sink of its own: two running jobs cannot share one.
    c.file("slow2.toml", &job.replace("out/slow.txt", "out/slow2.txt"));
    let id = c.submit("slow.toml");
    let follower = c
        .cmd(&["submit", "slow2.toml", "--follow"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("output to flow", Duration::from_secs(30), || {
        let j = c.json(&["job", &id, "--json"]);
        (j["sink_tuples"].as_u64()? > 0).then_some(())
    });
    let follow_id = wait_for("the second job", Duration::from_secs(30), || {
        let jobs = c.json(&["jobs", "--json"]);
        jobs.as_array()?
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .find(|j| *j != id)
    });
    c.ok(&["cancel", &follow_id]);
    let out = follower.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .to_lowercase()
            .contains("cancelled"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = |args: &[&str]| {
        let out = c.run(args);
        assert!(out.status.success(), "rainstorm {args:?} failed");
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    };
    // The cancel answers once the job's end is recorded, and says what it did.
    assert_eq!(
        said(&["cancel", &id]),
        format!("rainstorm: job {id} cancelled")
    );
    for j in [&id, &follow_id] {
        assert_eq!(
            c.wait_job(j, Duration::from_secs(10))["status"],
            "cancelled"
        );
    }
    // A job that had ended is not said to be cancelled again (hostile probe 14).
    assert_eq!(
        said(&["cancel", &id]),
        format!("rainstorm: job {id} had already ended (cancelled); nothing to cancel")
    );
    wait_for("operator processes to go", Duration::from_secs(10), || {
        processes_matching(ops.to_str().unwrap())
            .is_empty()
            .then_some(())
    });
    // The record outlives the job.
    assert_eq!(c.json(&["job", &id, "--json"])["status"], "cancelled");
}

/// Plain HTTP/1.1 GET on the leader, with the cluster secret; returns the response body (the
/// connection is closed).
fn open_streams(c: &Cluster) -> Option<i64> {
    c.metric("rainstorm_output_streams")
}

/// War story: writers blocked forever on a client that disconnected. Followers that stop
/// reading and then go away must free what served them, while the job runs on.
#[test]
fn a_follower_that_goes_away_frees_its_output_stream() {
    use std::io::Write;
    let c = Cluster::start(2, 5.0);
    let signs = Signs::generate(30000, 11);
    signs.write(&c.dir.path().join("signs.csv"));
    c.ok(&["put", "signs.csv", "signs.csv"]);
    let job = job_toml(
        "long",
        "signs.csv",
        "out/long.txt",
        3000.0,
        "exactly-once",
        &[(2, "identity", &[])],
    );
    c.file("long.toml", &job);
    let id = c.submit("long.toml");
    let addr = c.url.trim_start_matches("http://").to_string();
    // Five followers that never read a byte: the server's writes to them block.
    let clients: Vec<std::net::TcpStream> = (0..5)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            write!(
                s,
                "GET /api/jobs/{id}/output HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\r\n",
                c.token
            )
            .unwrap();
            s
        })
        .collect();
    wait_for("the five streams to open", Duration::from_secs(20), || {
        (open_streams(&c)? == 5).then_some(())
    });
    wait_for("output to flow", Duration::from_secs(30), || {
        let j = c.json(&["job", &id, "--json"]);
        (j["sink_tuples"].as_u64()? > 5000).then_some(())
    });
    drop(clients);
    wait_for(
        "the streams of the vanished followers to be freed",
        Duration::from_secs(20),
        || (open_streams(&c)? == 0).then_some(()),
    );
    assert_eq!(
        c.json(&["job", &id, "--json"])["status"],
        "running",
        "the job must not notice its followers leaving"
    );
    c.ok(&["cancel", &id]);
}

/// The hostile probe's find: 50 MB of operator stderr became one 52 MB line of the worker's
/// log. An operator's stderr now reaches the log in lines cut at 4 KiB, saying how long they
/// were, at most 20 lines a second with a count of the rest, each in its task's span; the
/// job is not disturbed and its output is exact.
#[test]
fn an_operators_stderr_reaches_the_worker_log_bounded_and_tagged_with_its_task() {
    let c = Cluster::start(1, 5.0);
    let input: String = (0..200).map(|i| format!("row {i:03}\n")).collect();
    c.file("in.txt", &input);
    c.ok(&["put", "in.txt", "in.txt"]);
    let noisy = write_exec(
        &c.dir.path().join("noisy.py"),
        "#!/usr/bin/env python3\n\
         import sys\n\
         first = True\n\
         for line in sys.stdin:\n\
         \x20   if first:\n\
         \x20       first = False\n\
         \x20       sys.stderr.buffer.write(b'x' * (50 << 20))\n\
         \x20       sys.stderr.buffer.write(b'\\n')\n\
         \x20       for i in range(20000):\n\
         \x20           sys.stderr.write('noise %d\\n' % i)\n\
         \x20       sys.stderr.flush()\n\
         \x20   sys.stdout.write(line)\n",
    );
    c.file(
        "noisy.toml",
        &job_toml(
            "noisy",
            "in.txt",
            "out.txt",
            0.0,
            "exactly-once",
            &[(1, noisy.to_str().unwrap(), &[])],
        ),
    );
    let id = c.submit("noisy.toml");
    let j = c.wait_job(&id, Duration::from_secs(120));
    assert_eq!(j["status"], "succeeded", "{j}\n{}", c.diagnose());
    assert_same(
        "the output",
        &sorted_lines(&c.store_file("out.txt")),
        &sorted_lines(&input),
    );
    let log = c.worker_logs();
    eprintln!(
        "worker log: {} bytes, {} lines, longest {} bytes",
        log.len(),
        log.lines().count(),
        log.lines().map(str::len).max().unwrap_or(0)
    );
    assert!(
        log.len() < 256 << 10,
        "the worker's log holds {} bytes after 50 MB of operator stderr",
        log.len()
    );
    assert!(
        log.lines().all(|l| l.len() < 8 << 10),
        "a log line over 8 KiB"
    );
    let cut = log
        .lines()
        .find(|l| l.contains("line cut to 4096 bytes"))
        .expect("the 50 MB line, cut and said so");
    assert!(cut.contains(&format!("bytes={}", 50 << 20)), "{cut}");
    assert!(
        cut.contains(&format!("job={id}")) && cut.contains("stage=1"),
        "a stderr line names its task: {cut}"
    );
    let dropped: u64 = log
        .lines()
        .filter(|l| l.contains("more lines") && l.contains("not logged"))
        .filter_map(|l| {
            l.split(" lines=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    let logged = log
        .lines()
        .filter(|l| l.contains("operator stderr: noise"))
        .count() as u64;
    assert_eq!(
        logged + dropped,
        20000,
        "every noise line is logged or counted ({logged} logged, {dropped} counted)"
    );
}

/// A worker whose data dir cannot be made exits at once saying so, and never registers (hostile
/// probe 14: it registered, and every task placed on it then failed).
#[test]
fn a_worker_whose_data_dir_cannot_be_made_exits_saying_so() {
    let c = Cluster::start(1, 5.0);
    c.wait_alive(1);
    let file = c.file("a-file", "not a directory\n");
    let mut w = std::process::Command::new(bin())
        .args(["worker", "--leader", &c.url, "--data-dir"])
        .arg(file.join("data"))
        .env("RAINSTORM_TOKEN", &c.token)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A worker that started anyway would serve for ever: it is given 10 s.
    let status = wait_for("the worker to exit", Duration::from_secs(10), || {
        w.try_wait().unwrap()
    });
    let mut err = String::new();
    std::io::Read::read_to_string(w.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "the worker's data dir {} cannot be used",
            file.join("data").display()
        )),
        "{err}"
    );
    let workers = c.json(&["workers", "--json"]);
    assert_eq!(workers.as_array().unwrap().len(), 1, "{workers}");
}
