//! Every door checks who is speaking: the public API and a worker's registration want the
//! cluster secret; a registration also proves the worker's own key, and a rejoin under an old
//! id only that worker's key; a data-plane connection proves the key of the worker running
//! the sender attempt it names. Each test is a request a hostile client made, and proves it
//! now changes nothing.

mod common;
use common::*;
use std::io::{Read, Write};
use std::time::Duration;

/// One HTTP/1.1 request to the leader; returns the status code and the body.
fn http(c: &Cluster, method: &str, path: &str, bearer: Option<&str>, body: &str) -> (u16, String) {
    http_at(
        c.url.trim_start_matches("http://"),
        method,
        path,
        bearer,
        &[],
        body,
    )
}

/// One HTTP/1.1 request to `addr` (`host:port`) with a bearer token and extra headers, if
/// any; returns the status code and the body.
fn http_at(
    addr: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut extra: String = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    for (name, value) in headers {
        extra.push_str(&format!("{name}: {value}\r\n"));
    }
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    split_response(&text)
}

const JOB: &str = r#"{"delivery":"exactly-once","source_path":"in.txt","source_name":"in.txt","rate":0.0,"sink_path":"o.txt","stages":[{"tasks":1,"operator":{"kind":"builtin","name":"identity","args":[]}}],"paths":"store","keep_logs":false}"#;

#[test]
fn the_public_api_refuses_requests_without_the_secret() {
    let c = Cluster::start(1, 5.0);
    c.file("in.txt", "a\nb\n");
    c.ok(&["put", "in.txt", "in.txt"]);
    for (bearer, want) in [(None, 401), (Some("wrong-secret-0123456789"), 401)] {
        for (method, path, body) in [
            ("GET", "/api/jobs", ""),
            ("GET", "/api/workers", ""),
            ("GET", "/api/store?prefix=", ""),
            ("GET", "/api/store/in.txt", ""),
            ("GET", "/metrics", ""),
            ("GET", "/internal/store?prefix=", ""),
            ("GET", "/internal/store/in.txt", ""),
            ("PUT", "/internal/store/logs/job-1/x", "forged"),
            ("POST", "/internal/store", r#"{"delete":["logs/job-1/x"]}"#),
            ("POST", "/api/jobs", JOB),
            ("POST", "/api/kill-task", r#"{"worker":"w1","pid":1}"#),
        ] {
            let (status, _) = http(&c, method, path, bearer, body);
            assert_eq!(status, want, "{method} {path} with {bearer:?}");
        }
    }
    assert_eq!(
        c.json(&["jobs", "--json"]).as_array().unwrap().len(),
        0,
        "a refused submission started nothing"
    );
    let (status, body) = http(&c, "GET", "/api/jobs", Some(&c.token), "");
    assert_eq!(status, 200, "{body}");
    // The CLI without the secret is refused too, with a message that says what to do.
    let out = c
        .cmd(&["jobs"])
        .env_remove("RAINSTORM_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("requires the cluster secret"), "{said}");
    // With another secret, it says that one is wrong: which of the two to fix.
    let out = c
        .cmd(&["jobs"])
        .env("RAINSTORM_TOKEN", "wrong-secret-0123456789")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("not this cluster's"), "{said}");
}

#[test]
fn forged_control_plane_calls_are_refused() {
    let c = Cluster::start(1, 5.0);
    let w = c.json(&["workers", "--json"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let failed = format!(
        r#"{{"worker_id":"{w}","reports":[{{"key":{{"job":"job-1","pos":{{"stage":1,"index":0}}}},"attempt":0,"pid":null,"state":"failed","tuples_in":0,"tuples_out":0,"error":"forged"}}]}}"#
    );
    let beat = format!(r#"{{"worker_id":"{w}","tasks":[]}}"#);
    let register = r#"{"version":5,"data_addr":"127.0.0.1:1","pid":1}"#;
    // The cluster secret alone does not let anyone speak for a registered worker.
    for bearer in [
        None,
        Some("wrong-secret-0123456789"),
        Some(c.token.as_str()),
    ] {
        assert_eq!(http(&c, "POST", "/internal/events", bearer, &failed).0, 401);
        assert_eq!(
            http(&c, "POST", "/internal/heartbeat", bearer, &beat).0,
            401
        );
        let poll = format!("/internal/commands/{w}?after=18446744073709551615&wait_ms=0");
        assert_eq!(http(&c, "GET", &poll, bearer, "").0, 401);
    }
    // Nobody without the secret or a session has a body decoded: no 422 that names the
    // fields the leader expects (hostile probe 9).
    for path in [
        "/internal/register",
        "/internal/heartbeat",
        "/internal/events",
        "/internal/leave",
    ] {
        let (status, body) = http(&c, "POST", path, None, "{\"not\": \"it\"}");
        assert_eq!(status, 401, "{path}: {body}");
        assert!(!body.contains("worker_id"), "{path}: {body}");
    }
    // A call naming a worker this leader does not know is told so, and its body not read.
    let (status, body) = http_at(
        c.url.trim_start_matches("http://"),
        "POST",
        "/internal/heartbeat",
        None,
        &[("x-rainstorm-worker", "w-nobody")],
        "{",
    );
    assert_eq!((status, body.as_str()), (200, r#"{"known":false}"#));
    // Registering needs the secret.
    assert_eq!(
        http(&c, "POST", "/internal/register", None, register).0,
        401
    );
    assert_eq!(
        http(
            &c,
            "POST",
            "/internal/register",
            Some("wrong-secret-0123456789"),
            register
        )
        .0,
        401
    );
    assert_eq!(c.json(&["workers", "--json"]).as_array().unwrap().len(), 1);
    // The real worker still works: a job runs through it.
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
}

/// Reads one length-prefixed data-plane frame.
fn read_frame(s: &mut std::net::TcpStream) -> Option<rainstorm::protocol::frame::Frame> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    rainstorm::protocol::frame::Frame::decode(body.into()).ok()
}

fn send_frame(
    s: &mut std::net::TcpStream,
    f: &rainstorm::protocol::frame::Frame,
) -> std::io::Result<()> {
    let b = f.encode();
    s.write_all(&(b.len() as u32).to_be_bytes())?;
    s.write_all(&b)
}

/// A raw connection to every data port trying to deliver tuples without a worker's key: a
/// Hello with a made-up proof (or none) is refused before anything reaches a task (here no
/// task runs: "come back later"; against a running task, see
/// `the_cluster_secret_alone_cannot_write_into_a_task_it_does_not_run`).
#[test]
fn data_connections_without_the_secret_cannot_deliver_tuples() {
    use rainstorm::protocol::frame::{Frame, Hello};
    let c = Cluster::start(2, 5.0);
    let ports = c.data_ports();
    assert!(ports.len() >= 2, "two workers: {ports:?}");
    for port in ports {
        for proof in [Vec::new(), vec![0u8; 32]] {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            assert!(matches!(read_frame(&mut s), Some(Frame::Challenge(_))));
            let hello = Hello {
                proof,
                ..unsigned_hello("job-1", (2, 0), (3, 0))
            };
            send_frame(&mut s, &Frame::Hello(hello)).unwrap();
            match read_frame(&mut s) {
                Some(Frame::Reject { reason, .. }) => {
                    assert!(reason.contains("no task"), "{reason}");
                }
                other => panic!("port {port}: expected a refusal, got {other:?}"),
            }
        }
        // A peer that never says Hello cannot make the listener buffer a 64 MiB frame.
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert!(matches!(read_frame(&mut s), Some(Frame::Challenge(_))));
        let _ = s.write_all(&(60u32 << 20).to_be_bytes());
        let _ = s.write_all(&[1u8; 4096]);
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(
            rest.is_empty(),
            "the oversized frame must be dropped, not answered"
        );
    }
}

#[test]
fn a_leader_without_a_secret_listens_on_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin())
        .args(["leader", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("l"))
        .env_remove("RAINSTORM_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--token-file") && err.contains("--insecure"),
        "{err}"
    );
}

/// A worker holding the secret cannot register on a live worker's data address (`--advertise`):
/// the tasks placed on it would wait for input that goes to the other's listener, and a
/// hostile probe's job wedged that way through every restart. It is refused, saying why, and
/// the cluster keeps its one worker there.
#[test]
fn a_worker_cannot_register_on_a_live_worker_s_data_address() {
    let c = Cluster::start(1, 5.0);
    let ws = c.json(&["workers", "--json"]);
    let taken = ws[0]["address"].as_str().unwrap().to_string();
    let log_path = c.dir.path().join("impostor.log");
    let mut impostor = std::process::Command::new(bin())
        .args(["worker", "--leader", &c.url, "--data-dir"])
        .arg(c.dir.path().join("impostor"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--advertise",
            &taken,
            "--slots",
            "2",
        ])
        .env("RAINSTORM_TOKEN", &c.token)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    wait_for("the impostor's refusal", Duration::from_secs(30), || {
        let log = std::fs::read_to_string(&log_path).ok()?;
        log.contains(&format!("{taken} is the data address of live worker"))
            .then_some(())
    });
    let ws = c.json(&["workers", "--json"]);
    let listed: Vec<&str> = ws
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["address"].as_str())
        .collect();
    assert_eq!(listed, [taken.as_str()], "{ws}");
    let _ = impostor.kill();
    let _ = impostor.wait();
}

/// A job id the user typed that looks like a path names that id, not another route: the
/// leader answers "no job" for it (an empty 404 before: the URL was resolved to another path).
#[test]
fn a_job_id_like_a_path_is_answered_as_no_such_job() {
    let c = Cluster::start(0, 5.0);
    for id in ["../x", "a/../../b", "x/output"] {
        for cmd in [&["job", id][..], &["cancel", id], &["follow", id]] {
            let out = c.run(cmd);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{cmd:?}");
            assert!(err.contains(&format!("no job {id}")), "{cmd:?}: {err}");
        }
    }
}

/// A tuple no data-plane frame can carry fails its task with a message saying so, instead of
/// a link reconnecting in a loop forever.
#[test]
fn a_tuple_larger_than_a_frame_fails_its_task_with_a_message() {
    let c = Cluster::start(1, 5.0);
    c.file("in.txt", "small\n");
    c.ok(&["put", "in.txt", "in.txt"]);
    let big = write_exec(
        &c.dir.path().join("big.py"),
        "#!/usr/bin/env python3\nimport sys\nfor line in sys.stdin:\n    sys.stdout.write('k\\t' + 'x' * (65 << 20) + '\\n')\n",
    );
    let job = job_toml(
        "big",
        "in.txt",
        "out/big.txt",
        0.0,
        "at-most-once",
        &[(1, big.to_str().unwrap(), &[]), (1, "identity", &[])],
    );
    c.file("big.toml", &job);
    let id = c.submit("big.toml");
    let j = c.wait_job(&id, Duration::from_secs(60));
    assert_eq!(j["status"], "failed", "{j}\n{}", c.diagnose());
    let tasks = c.json(&["tasks", "--json"]);
    let errors: Vec<String> = tasks
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["error"].as_str().map(str::to_string))
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("larger than the data plane carries")),
        "the task's error must name the limit: {errors:?} / {j}"
    );
}

/// The hostile probe's find: an operator line over 64 MiB was reported as "killed by signal
/// 13" — the engine refuses the line and closes the operator's stdout, and the operator dies
/// of the SIGPIPE that follows. The task's failure now names the real cause, and fails the
/// job at once rather than after every restart. (This operator
/// reads all its input first, so the line comes once its input has ended, and it keeps the
/// default SIGPIPE action, so it dies of the signal rather than of a Python exception.)
#[test]
fn an_operator_line_over_64_mib_is_the_failure_reason_not_the_sigpipe_after_it() {
    let c = Cluster::start(1, 5.0);
    c.file("in.txt", "a\nb\nc\n");
    c.ok(&["put", "in.txt", "in.txt"]);
    let big = write_exec(
        &c.dir.path().join("huge_line.py"),
        "#!/usr/bin/env python3\n\
         import signal, sys\n\
         signal.signal(signal.SIGPIPE, signal.SIG_DFL)\n\
         sys.stdin.read()\n\
         chunk = b'x' * (1 << 20)\n\
         sys.stdout.buffer.write(b'k\\t')\n\
         for _ in range(80):\n\
         \x20   sys.stdout.buffer.write(chunk)\n\
         sys.stdout.buffer.write(b'\\n')\n",
    );
    let job = job_toml(
        "huge",
        "in.txt",
        "out/huge.txt",
        0.0,
        "exactly-once",
        &[(1, big.to_str().unwrap(), &[])],
    );
    c.file("huge.toml", &job);
    let id = c.submit("huge.toml");
    let j = c.wait_job(&id, Duration::from_secs(60));
    assert_eq!(j["status"], "failed", "{j}\n{}", c.diagnose());
    // At once: every attempt would be fed the same input and write the same line.
    assert_eq!(j["failures"], 0, "{j}");
    assert!(
        j["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot recover")),
        "{j}"
    );
    let errors: Vec<String> = c
        .tasks(&id)
        .iter()
        .filter_map(|t| t["error"].as_str().map(str::to_string))
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("operator wrote a line larger than") && e.contains("64 MiB")),
        "the task's error must name the long line: {errors:?} / {j}"
    );
    assert!(
        !errors.iter().any(|e| e.contains("signal 13")) && !j.to_string().contains("signal 13"),
        "the SIGPIPE is not the reason: {errors:?} / {j}"
    );
}

/// The workers' store through the leader (`/internal/store`) serves live worker registrations
/// only: a caller holding just the cluster secret (an operator process that read
/// `RAINSTORM_TOKEN`, say), or naming a worker without its registration's session key, can
/// neither write nor delete an input log (new or existing) nor read or list the store there,
/// and nothing changes; the real worker's own log writes go through, so the job is exact.
#[test]
fn store_writes_through_the_worker_path_need_a_worker_registration() {
    use rainstorm::protocol::control::{SESSION_HEADER, WORKER_HEADER};
    let c = Cluster::start(1, 5.0);
    let text: String = (1..=200).map(|i| format!("line {i:04}\n")).collect();
    c.file("in.txt", &text);
    c.ok(&["put", "in.txt", "in.txt"]);
    // Two stages, exactly-once: the worker writes the second stage's input log through the
    // leader. 200 lines at 20/s: about ten seconds of running.
    c.file(
        "logged.toml",
        &job_toml(
            "logged",
            "in.txt",
            "out.txt",
            20.0,
            "exactly-once",
            &[(1, "identity", &[]), (1, "identity", &[])],
        ),
    );
    let id = c.submit("logged.toml");
    let store = c.dir.path().join("leader/store");
    let seg = wait_for(
        "the worker to write an input log through the leader",
        Duration::from_secs(30),
        || {
            let (_, body) = http(&c, "GET", "/api/store?prefix=logs/", Some(&c.token), "");
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            v.as_array()?
                .iter()
                .filter_map(|o| o["path"].as_str())
                .find(|p| p.ends_with(".seg"))
                .map(str::to_string)
        },
    );
    let before = std::fs::read(store.join(&seg)).unwrap();
    let forged = format!("{}/000000-9999999999.seg", seg.rsplit_once('/').unwrap().0);
    let worker = c.json(&["workers", "--json"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let wrong_key = "0".repeat(64);
    let callers: [&[(&str, &str)]; 4] = [
        &[],
        &[(WORKER_HEADER, &worker)],
        &[(WORKER_HEADER, &worker), (SESSION_HEADER, &wrong_key)],
        &[(WORKER_HEADER, &worker), (SESSION_HEADER, &c.token)],
    ];
    let addr = c.url.trim_start_matches("http://");
    // A bulk delete of the segment and the source (`Store::delete_many`).
    let bulk = format!(r#"{{"delete":["{seg}","in.txt"]}}"#);
    for headers in callers {
        for (method, path, body) in [
            ("PUT", format!("/internal/store/{seg}"), "forged"),
            ("PUT", format!("/internal/store/{forged}"), "forged"),
            ("PUT", "/internal/store/in.txt".to_string(), "forged"),
            ("POST", "/internal/store".to_string(), &bulk),
            ("GET", "/internal/store/in.txt".to_string(), ""),
            ("GET", "/internal/store?prefix=".to_string(), ""),
        ] {
            let (status, answer) = http_at(addr, method, &path, Some(&c.token), headers, body);
            assert_eq!(status, 401, "{method} {path} as {headers:?}: {answer}");
        }
    }
    assert_eq!(
        std::fs::read(store.join(&seg)).unwrap(),
        before,
        "the segment is untouched"
    );
    assert!(!store.join(&forged).exists(), "no forged segment appeared");
    assert_eq!(c.store_file("in.txt"), text, "the source is untouched");
    c.succeeds_with_lines(&id, "out.txt", &text);
}

/// `rainstorm run` guards its embedded cluster with a secret of its own, made fresh for the
/// run: its leader (on loopback) refuses a caller without a secret and one that tries the
/// secret the environment holds (`RAINSTORM_TOKEN`), which the run does not use.
#[test]
fn rainstorm_run_guards_its_embedded_cluster_with_a_fresh_secret() {
    let dir = tempfile::tempdir().unwrap();
    let text: String = (0..1000).map(|i| format!("{i}\n")).collect();
    std::fs::write(dir.path().join("in.txt"), text).unwrap();
    // Two lines a second: running for minutes, until interrupted.
    let job = job_toml(
        "slow",
        "in.txt",
        "out.txt",
        2.0,
        "exactly-once",
        &[(1, "identity", &[])],
    );
    std::fs::write(dir.path().join("slow.toml"), job).unwrap();
    let env_secret = "the-environment-secret-0123456789";
    let log = dir.path().join("run.log");
    let mut run = std::process::Command::new(bin())
        .args(["run", "slow.toml"])
        .current_dir(dir.path())
        .env("RAINSTORM_LOG", "info")
        .env("RAINSTORM_TOKEN", env_secret)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let api = wait_for("the embedded leader", Duration::from_secs(30), || {
        if let Some(st) = run.try_wait().unwrap() {
            panic!(
                "run exited ({st}): {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        let text = std::fs::read_to_string(&log).ok()?;
        let line = text
            .split_inclusive('\n')
            .find(|l| l.contains("leader ready") && l.ends_with('\n'))?;
        let addr = line.split("api=").nth(1)?.split_whitespace().next()?;
        Some(
            addr.trim_matches(|c: char| !c.is_ascii_digit() && c != ':' && c != '.')
                .to_string(),
        )
    });
    let register = r#"{"version":6,"data_addr":"127.0.0.1:1","pid":1}"#;
    for bearer in [None, Some(env_secret)] {
        let (status, body) = http_at(&api, "GET", "/api/jobs", bearer, &[], "");
        assert_eq!(status, 401, "GET /api/jobs with {bearer:?}: {body}");
        assert!(body.contains("secret"), "{body}");
        let (status, body) = http_at(&api, "POST", "/internal/register", bearer, &[], register);
        assert_eq!(status, 401, "registering with {bearer:?}: {body}");
    }
    // SAFETY: signalling our own child, which is still running (checked above).
    assert_eq!(unsafe { libc::kill(run.id() as i32, libc::SIGINT) }, 0);
    wait_for("run to exit after Ctrl-C", Duration::from_secs(30), || {
        run.try_wait().unwrap()
    });
}

/// `--insecure` is the one way to run a leader without a secret beyond loopback: with it, the
/// leader starts on a wildcard address and lets callers in without a secret.
#[test]
fn insecure_lets_a_leader_without_a_secret_listen_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("leader.log");
    let mut leader = std::process::Command::new(bin())
        .args([
            "leader",
            "--listen",
            "0.0.0.0:0",
            "--insecure",
            "--data-dir",
        ])
        .arg(dir.path().join("l"))
        .env_remove("RAINSTORM_TOKEN")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let port = wait_for("the leader to listen", Duration::from_secs(30), || {
        if let Some(st) = leader.try_wait().unwrap() {
            panic!(
                "the leader exited ({st}): {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        let text = std::fs::read_to_string(&log).ok()?;
        let line = text
            .split_inclusive('\n')
            .find(|l| l.contains("listening on http://0.0.0.0:") && l.ends_with('\n'))?;
        line.trim().rsplit(':').next()?.parse::<u16>().ok()
    });
    let (status, body) = http_at(
        &format!("127.0.0.1:{port}"),
        "GET",
        "/api/jobs",
        None,
        &[],
        "",
    );
    assert_eq!(status, 200, "{body}");
    let _ = leader.kill();
    let _ = leader.wait();
}

/// The data port of the cluster's only worker.
fn worker_port(c: &Cluster) -> u16 {
    c.json(&["workers", "--json"])[0]["address"]
        .as_str()
        .and_then(|a| a.rsplit(':').next()?.parse().ok())
        .expect("the worker's data address")
}

/// Reads until the peer closes; whether it closed without sending anything (a reset counts
/// as closed; a read timeout does not).
fn closed_silently(s: &mut std::net::TcpStream) -> bool {
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => rest.is_empty(),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset && rest.is_empty(),
    }
}

/// A connection to a data port that never says Hello is closed at the listener's Hello
/// deadline (`RAINSTORM_HELLO_DEADLINE_MS`, here 300 ms instead of the default 10 s).
#[test]
fn a_data_connection_that_never_says_hello_is_closed_at_the_deadline() {
    let mut c = Cluster::start(0, 5.0);
    c.add_worker_env(&[("RAINSTORM_HELLO_DEADLINE_MS", "300")]);
    c.wait_alive(1);
    let port = worker_port(&c);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let t0 = std::time::Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    assert!(matches!(
        read_frame(&mut s),
        Some(rainstorm::protocol::frame::Frame::Challenge(_))
    ));
    assert!(
        closed_silently(&mut s),
        "a silent peer is closed, without an answer"
    );
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "closed after {took:?}: the 300 ms deadline was not applied"
    );
}

/// A data port serves at most `RAINSTORM_MAX_DATA_CONNS` connections at once: one more is
/// closed at once, without even a challenge, while those it serves go on being served; a
/// connection that ends frees its place.
#[test]
fn data_connections_beyond_the_cap_are_closed_at_once() {
    use rainstorm::protocol::frame::Frame;
    let mut c = Cluster::start(0, 5.0);
    c.add_worker_env(&[("RAINSTORM_MAX_DATA_CONNS", "2")]);
    c.wait_alive(1);
    let port = worker_port(&c);
    let connect = || {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    };
    let mut held: Vec<std::net::TcpStream> = (0..2)
        .map(|_| {
            let mut s = connect();
            assert!(matches!(read_frame(&mut s), Some(Frame::Challenge(_))));
            s
        })
        .collect();
    for i in 0..3 {
        let mut s = connect();
        assert!(
            closed_silently(&mut s),
            "connection {} beyond the cap of 2 was served",
            i + 1
        );
    }
    // The two within the cap are still served: a Hello gets its (refusing) answer.
    for s in &mut held {
        let hello = unsigned_hello("job-1", (0, 0), (1, 0));
        send_frame(s, &Frame::Hello(hello)).unwrap();
        assert!(matches!(read_frame(s), Some(Frame::Reject { .. })));
    }
    drop(held);
    // Those ended: their places serve new connections again.
    wait_for(
        "a freed place to serve a new connection",
        Duration::from_secs(20),
        || {
            let mut s = connect();
            matches!(read_frame(&mut s), Some(Frame::Challenge(_))).then_some(())
        },
    );
}

/// `lines` numbered lines, the input of the jobs below (identity writes them back as they are).
fn numbered(lines: usize) -> String {
    (1..=lines).map(|i| format!("line {i:04}\n")).collect()
}

/// Submits an exactly-once identity job over `in.txt` at `rate` lines a second, writing
/// `o.txt`, and waits until its sink holds some lines (its links are live); returns its id.
fn running_job(c: &Cluster, lines: usize, rate: f64) -> String {
    c.file("in.txt", &numbered(lines));
    c.ok(&["put", "in.txt", "in.txt"]);
    c.file(
        "slow.toml",
        &job_toml(
            "slow",
            "in.txt",
            "o.txt",
            rate,
            "exactly-once",
            &[(1, "identity", &[])],
        ),
    );
    let id = c.submit("slow.toml");
    wait_for("the sink to hold lines", Duration::from_secs(30), || {
        let j = c.json(&["job", &id, "--json"]);
        (j["sink_tuples"].as_u64()? > 0).then_some(())
    });
    id
}

/// The job ran to its end and its output is its input, line for line: nothing forged is in
/// it and nothing real is missing.
fn assert_exact(c: &Cluster, id: &str, lines: usize) {
    let j = c.wait_job(id, Duration::from_secs(120));
    assert_eq!(j["status"], "succeeded", "{j}\n{}", c.diagnose());
    assert_same(
        "the output",
        &sorted_lines(&c.store_file("o.txt")),
        &sorted_lines(&numbered(lines)),
    );
}

/// The hole a hostile probe found: holding the cluster secret, a raw connection posed as
/// upstream task 1.0 attempt 0 to the sink while the real link was live; its batch at the
/// sink's mark + 1 was acknowledged, 5 forged lines reached the output, 5 real ones went
/// missing, and the job said `succeeded`. A Hello must now be signed by the worker running
/// the sender attempt it names: the cluster secret proves nothing on the data plane, the
/// connection is refused for good, and the output is exact.
#[test]
fn the_cluster_secret_alone_cannot_write_into_a_task_it_does_not_run() {
    use rainstorm::model::tuple::Tuple;
    use rainstorm::protocol::frame::Frame;
    let c = Cluster::start(1, 5.0);
    let lines = 600;
    let id = running_job(&c, lines, 100.0);
    let port = c.data_ports()[0];
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Task 1.0 to the sink, task 2.0, of this one-stage job.
    let hello = c.prove_with_secret(&mut s, unsigned_hello(&id, (1, 0), (2, 0)));
    send_frame(&mut s, &Frame::Hello(hello)).unwrap();
    match read_frame(&mut s) {
        Some(Frame::Reject { retry, reason }) => {
            assert!(!retry, "refused for good: {reason}");
            assert!(reason.contains("authentication failed"), "{reason}");
        }
        Some(Frame::Ack { upto, .. }) => {
            // What the probe then did: a batch at the mark + 1, acknowledged.
            let forged = Frame::Batch {
                first_seq: upto + 1,
                emit_ns: 0,
                tuples: (0..5)
                    .map(|i| Tuple::new("k", format!("forged {i}")))
                    .collect(),
            };
            let _ = send_frame(&mut s, &forged);
            panic!(
                "a Hello proving only the cluster secret was admitted to the sink at mark {upto}; \
                 then: {:?}",
                read_frame(&mut s)
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Whatever it sends now goes nowhere: the listener has closed the connection.
    let forged = Frame::Batch {
        first_seq: 1,
        emit_ns: 0,
        tuples: vec![Tuple::new("k", "forged")],
    };
    let _ = send_frame(&mut s, &forged);
    assert!(read_frame(&mut s).is_none(), "the connection is closed");
    let j = c.json(&["job", &id, "--json"]);
    assert_eq!(
        j["status"], "running",
        "the attack ran while the job did: {j}"
    );
    assert_exact(&c, &id, lines);
    assert!(
        c.worker_logs()
            .contains("data connections refused: not signed by the worker running"),
        "the refusal is logged"
    );
}

/// The hole a hostile probe found: holding the cluster secret, a registration with
/// `rejoin.worker_id = "w1"` while w1 was alive was answered `adopted: true` with a session,
/// and the real w1 got 401 on every call until the leader restarted. A rejoin must now be
/// signed with the key w1 registered with: the impostor gets 401, and the real worker keeps
/// its registration and runs its job to an exact output.
#[test]
fn a_registration_posing_as_a_live_worker_is_refused_and_the_worker_keeps_its_job() {
    use rainstorm::protocol::control::PROTOCOL_VERSION;
    let c = Cluster::start(1, 5.0);
    let before = c.json(&["workers", "--json"]);
    let w = before[0]["id"].as_str().unwrap().to_string();
    let addr = before[0]["address"].as_str().unwrap().to_string();
    let lines = 400;
    let id = running_job(&c, lines, 100.0);
    let rejoin = format!(r#""rejoin":{{"worker_id":"{w}","tasks":[]}}"#);
    // Without any key; then naming a made-up key, with a real challenge and a made-up proof.
    let bare =
        format!(r#"{{"version":{PROTOCOL_VERSION},"data_addr":"127.0.0.1:1","pid":1,{rejoin}}}"#);
    let (status, body) = http(&c, "POST", "/internal/register", Some(&c.token), &bare);
    assert_eq!(status, 401, "posing as {w} without its key: {body}");
    let (status, body) = http(&c, "POST", "/internal/challenge", Some(&c.token), "");
    assert_eq!(status, 200, "{body}");
    let challenge: serde_json::Value = serde_json::from_str(&body).unwrap();
    let made_up = format!(
        r#"{{"version":{PROTOCOL_VERSION},"data_addr":"127.0.0.1:1","pid":1,"key":"{}","challenge":{},"proof":"{}",{rejoin}}}"#,
        "ab".repeat(32),
        challenge["challenge"],
        "cd".repeat(64)
    );
    let (status, body) = http(&c, "POST", "/internal/register", Some(&c.token), &made_up);
    assert_eq!(status, 401, "posing as {w} with a made-up key: {body}");
    // The real worker kept its registration: still alive, at its own address, and its job
    // runs to the end.
    assert_exact(&c, &id, lines);
    let after = c.json(&["workers", "--json"]);
    assert_eq!(after.as_array().unwrap().len(), 1, "{after}");
    assert_eq!(after[0]["id"], w.as_str());
    assert_eq!(after[0]["address"], addr.as_str());
    assert_eq!(after[0]["state"], "alive");
    assert!(
        !c.worker_logs().contains("no longer knows this worker"),
        "the real worker never lost its registration"
    );
}

/// Registers a worker of the test's own, signed with `me`; its id and session key.
fn register_own(c: &Cluster, me: &rainstorm::protocol::auth::Identity) -> (String, String) {
    let (status, body) = http(
        c,
        "POST",
        "/internal/register",
        Some(&c.token),
        &registration(c, me, None),
    );
    assert_eq!(status, 200, "{body}");
    let reg: serde_json::Value = serde_json::from_str(&body).unwrap();
    let field = |k: &str| reg[k].as_str().unwrap().to_string();
    (field("worker_id"), field("session"))
}

/// A registration request of its own: a fresh challenge, then the claim signed with `me`.
fn registration(
    c: &Cluster,
    me: &rainstorm::protocol::auth::Identity,
    rejoin: Option<&str>,
) -> String {
    use rainstorm::protocol::auth::RegistrationClaim;
    use rainstorm::protocol::control::PROTOCOL_VERSION;
    let (status, body) = http(c, "POST", "/internal/challenge", Some(&c.token), "");
    assert_eq!(status, 200, "{body}");
    let challenge: serde_json::Value = serde_json::from_str(&body).unwrap();
    let challenge = challenge["challenge"].as_str().unwrap().to_string();
    // A data address of its own: a second live worker on one address is refused.
    static PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(20_000);
    let data_addr = format!(
        "127.0.0.1:{}",
        PORT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let claim = RegistrationClaim {
        challenge: challenge.as_bytes(),
        data_addr: &data_addr,
        pid: 4242,
        rejoin,
    };
    let req = serde_json::json!({
        "version": PROTOCOL_VERSION,
        "data_addr": data_addr,
        "pid": 4242,
        "key": me.public(),
        "challenge": challenge,
        "proof": hex::encode(me.sign_registration(&claim)),
        "rejoin": rejoin.map(|w| serde_json::json!({"worker_id": w, "tasks": []})),
    });
    req.to_string()
}

/// The strongest attacker short of running the task: it holds the cluster secret and has
/// registered a worker of its own, whose key the leader knows. It still cannot rejoin as
/// another worker (401), nor open a link for a task attempt it does not run (its signature is
/// not the key the routes name for that attempt); a proof made for one challenge is spent.
#[test]
fn a_registered_worker_cannot_take_another_workers_identity_or_task() {
    use rainstorm::protocol::auth::Identity;
    use rainstorm::protocol::frame::Frame;
    let c = Cluster::start(1, 5.0);
    let w = c.json(&["workers", "--json"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let lines = 400;
    let id = running_job(&c, lines, 100.0);
    let rogue = Identity::generate().unwrap();
    let register = |body: &str| http(&c, "POST", "/internal/register", Some(&c.token), body);
    let own = registration(&c, &rogue, None);
    let (status, body) = register(&own);
    assert_eq!(status, 200, "the secret still admits a new worker: {body}");
    // A recorded registration cannot be replayed: its challenge is spent.
    let (status, body) = register(&own);
    assert_eq!(status, 409, "a replayed registration: {body}");
    let (status, body) = register(&registration(&c, &rogue, Some(&w)));
    assert_eq!(status, 401, "rejoining as {w} with another key: {body}");
    assert!(body.contains(&format!("not worker {w}")), "{body}");

    let port = c.data_ports().into_iter().find(|p| *p != 9).unwrap();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let Some(Frame::Challenge(nonce)) = read_frame(&mut s) else {
        panic!("a data listener speaks first");
    };
    let mut hello = unsigned_hello(&id, (1, 0), (2, 0));
    hello.proof = rogue.sign_hello(&nonce, &hello.signed_body());
    send_frame(&mut s, &Frame::Hello(hello)).unwrap();
    match read_frame(&mut s) {
        Some(Frame::Reject { retry, reason }) => {
            assert!(
                !retry && reason.contains("authentication failed"),
                "{reason}"
            )
        }
        other => panic!("a registered worker's key opened another worker's link: {other:?}"),
    }
    assert_exact(&c, &id, lines);
}

/// One unauthenticated GET to the leader; the status, the headers (names lowercased) and the
/// body.
fn get_raw(c: &Cluster, path: &str) -> (u16, Vec<(String, String)>, String) {
    let addr = c.url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (status, body) = split_response(&text);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    (status, headers, body)
}

/// The hostile probe's find: the dashboard escaped `& < >` but not `"`, and put values into
/// attributes, so a job named `" onmouseover="…` ran script in the page that holds the
/// cluster secret. Now the page runs only its own same-origin script (a Content-Security-Policy
/// without inline script or event handlers), which builds every cell as text; markup in a
/// job's name or an operator's path is data in the API and never markup in the page. A worker
/// whose data address is not `HOST:PORT` is refused at registration.
#[test]
fn markup_in_a_job_name_or_an_operator_path_is_inert_on_the_dashboard() {
    let c = Cluster::start(1, 5.0);
    c.file("in.txt", "a\nb\n");
    c.ok(&["put", "in.txt", "in.txt"]);
    let hostile = r#""><img src=x onerror=alert(1)> " onmouseover="x"#;
    // An operator whose store path carries markup too (no '/' inside a name).
    let op = "ops/\"><img src=x onerror=alert(2)>.sh";
    c.file(op, "#!/bin/sh\ncat\n");
    c.ok(&["put", op, op]);
    let job = serde_json::json!({
        "name": hostile,
        "delivery": "exactly-once",
        "source_path": "in.txt",
        "source_name": "in.txt",
        "rate": 0.0,
        "sink_path": "o.txt",
        "stages": [{"tasks": 1, "operator": {"kind": "exec", "path": op, "args": []}}],
        "paths": "store",
        "keep_logs": false,
    });
    let (status, body) = http(&c, "POST", "/api/jobs", Some(&c.token), &job.to_string());
    assert_eq!(status, 201, "{body}");
    // The API hands the name back as data, exactly as given.
    let (_, jobs) = http(&c, "GET", "/api/jobs", Some(&c.token), "");
    let jobs: serde_json::Value = serde_json::from_str(&jobs).unwrap();
    assert_eq!(jobs[0]["name"], hostile);

    let (status, headers, page) = get_raw(&c, "/");
    assert_eq!(status, 200);
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let csp = header("content-security-policy");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "no policy forbids inline script and handlers on /: {csp:?}"
    );
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert!(!page.contains(hostile) && !page.contains("onerror"));
    // The page's one script is a same-origin file; nothing runs inline.
    for part in page.split("<script").skip(1) {
        let (tag, inner) = part.split_once('>').unwrap();
        assert!(tag.contains("src="), "<script{tag}>");
        assert!(inner.trim_start().starts_with("</script>"), "inline script");
    }
    let src = page
        .split("<script src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a script file");
    let (status, headers, script) = get_raw(&c, src);
    assert_eq!(status, 200, "{src}");
    assert!(headers
        .iter()
        .any(|(k, v)| k == "content-type" && v.starts_with("text/javascript")));
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
    ] {
        assert!(
            !script.contains(sink),
            "the dashboard script builds markup with {sink}"
        );
    }
    assert!(script.contains("textContent"));

    // A worker address is shown too: one that is not HOST:PORT is refused.
    let register = format!(
        r#"{{"version":{},"data_addr":"\"><img src=x onerror=alert(3)>:1","pid":1}}"#,
        rainstorm::protocol::control::PROTOCOL_VERSION
    );
    let (status, body) = http(&c, "POST", "/internal/register", Some(&c.token), &register);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("HOST:PORT"), "{body}");
    let j = c.wait_job(jobs[0]["id"].as_str().unwrap(), Duration::from_secs(60));
    assert_eq!(j["status"], "succeeded", "{j}");
}

/// The ids of the workers the leader lists, with their states.
fn listed_workers(c: &Cluster) -> Vec<(String, String)> {
    c.json(&["workers", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["id"].as_str().unwrap().to_string(),
                w["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The hostile probe's find: 2,000 registrations that never heartbeat left 2,006 workers
/// listed, for good. A registration never used is now forgotten once declared dead (here the
/// heartbeat timeout is 1 s), and a worker that did run is listed dead for
/// `--forget-dead-after` (here 2 s), then forgotten too; the live workers stay.
#[test]
fn registrations_that_never_heartbeat_and_dead_workers_are_forgotten() {
    use rainstorm::protocol::auth::Identity;
    let mut c = Cluster::start_with(2, 1.0, &["--forget-dead-after", "2"]);
    let real: Vec<String> = listed_workers(&c).into_iter().map(|(id, _)| id).collect();
    assert_eq!(real.len(), 2);
    let flood = 300;
    for _ in 0..flood {
        let me = Identity::generate().unwrap();
        let (status, body) = http(
            &c,
            "POST",
            "/internal/register",
            Some(&c.token),
            &registration(&c, &me, None),
        );
        assert_eq!(status, 200, "{body}");
    }
    let t0 = std::time::Instant::now();
    wait_for(
        "the unused registrations to be forgotten",
        Duration::from_secs(30),
        || {
            let ids: Vec<String> = listed_workers(&c).into_iter().map(|(id, _)| id).collect();
            (ids == real).then_some(())
        },
    );
    eprintln!(
        "{flood} unused registrations forgotten {:?} after the last one",
        t0.elapsed()
    );
    assert!(listed_workers(&c).iter().all(|(_, s)| s == "alive"));
    // Each was forgotten once, counted in one line per sweep.
    let forgotten: usize = c
        .leader_log()
        .lines()
        .filter(|l| l.contains("registrations never used"))
        .filter_map(|l| {
            l.split("count=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();
    assert_eq!(forgotten, flood);
    // A worker that ran, then died: listed dead for a while, then forgotten.
    let gone = c
        .worker_index(&real[1])
        .expect("which process registered as the second worker");
    c.kill_worker(gone);
    wait_for(
        "the killed worker to be dead",
        Duration::from_secs(20),
        || {
            listed_workers(&c)
                .iter()
                .any(|(id, s)| id == &real[1] && s == "dead")
                .then_some(())
        },
    );
    let dead_at = std::time::Instant::now();
    wait_for(
        "the dead worker to be forgotten",
        Duration::from_secs(30),
        || {
            let ids: Vec<String> = listed_workers(&c).into_iter().map(|(id, _)| id).collect();
            (ids == real[..1]).then_some(())
        },
    );
    assert!(
        dead_at.elapsed() >= Duration::from_millis(1500),
        "a dead worker is listed for --forget-dead-after before it is forgotten ({:?})",
        dead_at.elapsed()
    );
    // The live worker still runs jobs.
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
}

/// The hostile probe's find: a worker reported a pid of its choosing for its task, the
/// leader stored it, and `kill-task`'s answer named that pid as killed. The answer now names
/// the task attempt and the worker, and the pid only as that worker's report ("reported by");
/// the CLI says so too. (The worker checks the pid against its own operators before it
/// signals anything: `kill_task_of_a_process_that_is_not_an_operator_of_the_worker_leaves_it_alive`.)
#[test]
fn a_pid_a_worker_reports_is_named_as_its_report_not_as_a_fact() {
    use rainstorm::protocol::auth::Identity;
    let c = Cluster::start(0, 5.0);
    // The cluster's only worker is the test's own: it registers, then reports what it likes.
    let rogue = Identity::generate().unwrap();
    let (w, session) = register_own(&c, &rogue);
    c.file("in.txt", "a\nb\n");
    c.ok(&["put", "in.txt", "in.txt"]);
    c.file("ops/cat.sh", "#!/bin/sh\ncat\n");
    c.ok(&["put", "ops/cat.sh", "ops/cat.sh"]);
    c.file(
        "job.toml",
        "[source]\npath = \"in.txt\"\n[sink]\npath = \"o.txt\"\n[[stages]]\nexec = \"ops/cat.sh\"\n",
    );
    let id = c.submit("job.toml");
    // A process of this host that is no operator of anyone's: the lie.
    let mut bystander = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let lie = bystander.id();
    let beat = serde_json::json!({
        "worker_id": w,
        "tasks": [{
            "key": {"job": id, "pos": {"stage": 1, "index": 0}},
            "attempt": 0, "pid": lie, "state": "running",
            "tuples_in": 0, "tuples_out": 0, "error": null,
        }],
    })
    .to_string();
    wait_for(
        "the leader to record the report",
        Duration::from_secs(20),
        || {
            let (status, body) = http_at(
                c.url.trim_start_matches("http://"),
                "POST",
                "/internal/heartbeat",
                Some(&session),
                &[("x-rainstorm-worker", w.as_str())],
                &beat,
            );
            assert_eq!(status, 200, "{body}");
            c.tasks(&id)
                .iter()
                .any(|t| t["stage"] == 1 && t["pid"] == lie)
                .then_some(())
        },
    );
    let (status, body) = http(
        &c,
        "POST",
        "/api/kill-task",
        Some(&c.token),
        &format!(r#"{{"worker":"{w}","pid":{lie}}}"#),
    );
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["reported_pid"], lie, "{body}");
    assert_eq!(answer["reported_by"], w.as_str(), "{body}");
    assert_eq!(answer["task"], format!("{id}/1.0"), "{body}");
    assert_eq!(answer["attempt"], 0, "{body}");
    assert!(
        answer.get("pid").is_none(),
        "no pid is presented as the leader's fact: {body}"
    );
    let out = c.run(&["kill-task", &w, &lie.to_string()]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!("pid {lie} as reported by {w}")) && !said.contains("killed pid"),
        "{said}"
    );
    // The leader signals nothing itself: the bystander lives.
    assert!(bystander.try_wait().unwrap().is_none());
    let _ = bystander.kill();
    let _ = bystander.wait();
}

/// A worker that registers and heartbeats but never takes the tasks it is given (a start
/// command lost, or a hostile worker) must not wedge a job: its attempts stayed `starting`
/// for good and the job never ended. An attempt its worker has not reported within
/// `--start-timeout` of its start is now failed and restarted elsewhere, and the output is
/// exact.
#[test]
fn a_worker_that_never_starts_its_tasks_cannot_wedge_a_job() {
    use rainstorm::protocol::auth::Identity;
    let c = Cluster::start_with(1, 5.0, &["--start-timeout", "1"]);
    let rogue = Identity::generate().unwrap();
    let (me, session) = register_own(&c, &rogue);
    // It stays alive: it heartbeats, reporting nothing, and never asks for its commands.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let beat = {
        let (stop, me) = (stop.clone(), me.clone());
        let api = c.url.trim_start_matches("http://").to_string();
        std::thread::spawn(move || {
            let hb = serde_json::json!({ "worker_id": me, "tasks": [] }).to_string();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, body) = http_at(
                    &api,
                    "POST",
                    "/internal/heartbeat",
                    Some(&session),
                    &[("x-rainstorm-worker", me.as_str())],
                    &hb,
                );
                assert_eq!(status, 200, "the rogue's heartbeat: {body}");
                std::thread::park_timeout(Duration::from_millis(200));
            }
        })
    };
    let lines = 300;
    c.file("in.txt", &numbered(lines));
    c.ok(&["put", "in.txt", "in.txt"]);
    let job = job_toml(
        "wedge",
        "in.txt",
        "o.txt",
        0.0,
        "exactly-once",
        &[(2, "identity", &[])],
    );
    c.file("wedge.toml", &job);
    let id = c.submit("wedge.toml");
    assert_exact(&c, &id, lines);
    let restarted: Vec<serde_json::Value> = c
        .tasks(&id)
        .into_iter()
        .filter(|t| t["attempt"].as_u64() > Some(0))
        .collect();
    assert!(
        !restarted.is_empty() && restarted.iter().all(|t| t["worker"] != me.as_str()),
        "the rogue's tasks were restarted on the real worker: {restarted:?}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    beat.join().unwrap();
}

/// A secret read from a file that is missing (`export RAINSTORM_TOKEN=$(cat missing)`) is an
/// empty variable: the leader refuses to start rather than run without a secret in silence
/// (hostile probe 14), and says why.
#[test]
fn an_empty_secret_variable_stops_the_leader_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(bin())
        .args(["leader", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("leader"))
        .env("RAINSTORM_TOKEN", "")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A leader that started anyway would serve for ever: it is given 10 s, then killed.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = status.unwrap_or_else(|| panic!("the leader started without a secret: {err}"));
    assert!(!status.success(), "{err}");
    assert!(err.contains("RAINSTORM_TOKEN is set but empty"), "{err}");
}
