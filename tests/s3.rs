//! A cluster on an S3-compatible server (moto): leader and workers with `--store s3://…`, the
//! workers reading and writing the bucket directly. `.ci/run` starts moto and sets
//! RAINSTORM_TEST_S3=http://HOST:PORT/BUCKET; without it a local `moto_server` is started if one
//! is on PATH, else the tests say they are skipped (and fail under CI).

mod common;
use common::*;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

struct Moto(Option<Child>);

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `http://HOST:PORT/BUCKET`, with the store's environment set for every child process.
fn s3() -> Option<&'static str> {
    static URL: OnceLock<Option<(String, Moto)>> = OnceLock::new();
    let got = URL.get_or_init(|| {
        let (url, moto) = match std::env::var("RAINSTORM_TEST_S3") {
            Ok(u) => (u, Moto(None)),
            Err(_) if std::env::var_os("CI").is_some() => {
                panic!("RAINSTORM_TEST_S3 is not set under CI: .ci/run must start moto_server")
            }
            Err(_) => {
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                let on_path = std::env::var_os("PATH").is_some_and(|p| {
                    std::env::split_paths(&p).any(|d| d.join("moto_server").is_file())
                });
                if !on_path {
                    eprintln!("skipped: no RAINSTORM_TEST_S3 and no moto_server on PATH (pip install \"moto[server]\")");
                    return None;
                }
                // A static is never dropped, so moto is tied to this test process instead: a
                // shell holds it and kills it when its stdin (our pipe) closes, which happens
                // however this process ends.
                let child = Command::new("sh")
                    .args([
                        "-c",
                        "moto_server -H 127.0.0.1 -p \"$1\" >/dev/null 2>&1 & m=$!; read _; kill $m",
                        "sh",
                        &port.to_string(),
                    ])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                let url = format!("http://127.0.0.1:{port}/rainstorm-test");
                let moto = Moto(Some(child));
                wait_for("moto to answer", Duration::from_secs(30), || {
                    std::net::TcpStream::connect(("127.0.0.1", port)).ok()
                });
                let ok = Command::new("curl")
                    .args(["-s", "-f", "-X", "PUT", &url])
                    .status()
                    .unwrap();
                assert!(ok.success(), "creating the bucket");
                (url, moto)
            }
        };
        let rest = url.strip_prefix("http://").expect("http://HOST:PORT/BUCKET");
        let (host, bucket) = rest.split_once('/').expect("a bucket");
        // SAFETY: set once, before any child process of these tests starts.
        unsafe {
            std::env::set_var("RAINSTORM_STORE", format!("s3://{bucket}/{}", std::process::id()));
            std::env::set_var("RAINSTORM_STORE_ENDPOINT", format!("http://{host}"));
            std::env::set_var("AWS_ACCESS_KEY_ID", "test");
            std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
            std::env::set_var("AWS_REGION", "us-east-1");
        }
        Some((url, moto))
    });
    got.as_ref().map(|(u, _)| u.as_str())
}

fn get(c: &Cluster, path: &str) -> String {
    let local = c.dir.path().join("got").join(path);
    c.ok(&["get", path, local.to_str().unwrap()]);
    std::fs::read_to_string(local).unwrap()
}

fn wait_source(c: &Cluster, id: &str, n: u64) {
    wait_for("source progress", Duration::from_secs(120), || {
        let j = c.json(&["job", id, "--json"]);
        (j["source_tuples"].as_u64()? >= n || j["status"] != "running").then_some(())
    });
}

/// The demo app (filter, then a running count per category) on a cluster whose store is an S3
/// bucket, with a task SIGKILLed in the middle stage: the output object is exact.
#[test]
fn s3_store_cluster_runs_the_demo_app_exactly_through_a_task_kill() {
    if s3().is_none() {
        return;
    }
    let c = Cluster::start(3, 5.0);
    let signs = Signs::generate(8000, 77);
    signs.write(&c.dir.path().join("signs.csv"));
    install_ops(c.dir.path());
    c.ok(&["put", "signs.csv", "in/signs.csv"]);
    let job = job_toml(
        "s3-app2",
        "in/signs.csv",
        "out/app2.txt",
        2000.0,
        "exactly-once",
        &[
            (
                2,
                "ops/filter.py",
                &["7", "Punched Telespar", "--key-col", "9"],
            ),
            (2, "ops/count.py", &["9"]),
        ],
    );
    c.file("app2.toml", &job);
    let id = c.submit("app2.toml");
    wait_source(&c, &id, 2000);
    let t = wait_for("a running stage-2 task", Duration::from_secs(60), || {
        c.tasks(&id).into_iter().find(|t| {
            t["stage"] == 2
                && t["state"] == "running"
                && t["pid"].is_u64()
                && t["tuples_in"].as_u64() > Some(0)
        })
    });
    c.ok(&[
        "kill-task",
        t["worker"].as_str().unwrap(),
        &t["pid"].as_u64().unwrap().to_string(),
    ]);
    let j = c.wait_job(&id, Duration::from_secs(180));
    assert_eq!(j["status"], "succeeded", "{j}\n{}", c.leader_log());
    assert!(j["failures"].as_u64().unwrap() >= 1, "{j}");
    assert_same(
        "s3 output",
        &sorted_lines(&get(&c, "out/app2.txt")),
        &signs.app2(),
    );
    // No job data went through the leader: the workers (source and sink included) reached the
    // bucket themselves, and the leader has no data plane.
    assert_eq!(c.metric("rainstorm_worker_store_requests_total"), Some(0));
    // Nothing of the job's store data went through the leader's local directory.
    assert!(!c.dir.path().join("leader/store/in/signs.csv").exists());
}

/// Operators are pinned by content: v1 runs in the first job, v2 (uploaded under the same
/// path) in the second, never a stale cached copy.
#[test]
fn an_operator_replaced_between_two_jobs_runs_the_new_version() {
    if s3().is_none() {
        return;
    }
    let c = Cluster::start(2, 5.0);
    c.file("in.txt", "a\nb\nc\n");
    c.ok(&["put", "in.txt", "in.txt"]);
    for v in ["v1", "v2"] {
        write_exec(
            &c.dir.path().join("tag.sh"),
            &format!("#!/bin/sh\nexec awk -F'\\t' -v OFS='\\t' '{{ $NF = \"{v}:\" $NF; print; fflush() }}'\n"),
        );
        c.file(
            &format!("{v}.toml"),
            &job_toml(
                v,
                "in.txt",
                &format!("out/{v}.txt"),
                0.0,
                "exactly-once",
                &[(2, "./tag.sh", &[])],
            ),
        );
        let id = c.submit(&format!("{v}.toml"));
        let j = c.wait_job(&id, Duration::from_secs(60));
        assert_eq!(j["status"], "succeeded", "{j}");
        let out = sorted_lines(&get(&c, &format!("out/{v}.txt")));
        let want: Vec<String> = ["a", "b", "c"].iter().map(|l| format!("{v}:{l}")).collect();
        assert_same(v, &out, &want);
    }
}

/// A compaction deletes the run it merged with one bulk request (`Store::delete_many`, S3's
/// `DeleteObjects` through `object_store`): every object it names goes, one already gone is no
/// error, and the others stay.
#[test]
fn a_bulk_delete_on_s3_removes_every_object_it_names() {
    if s3().is_none() {
        return;
    }
    use rainstorm::runtime::store::{install_crypto, S3Location, Store};
    install_crypto();
    let (url, endpoint) = (
        std::env::var("RAINSTORM_STORE").unwrap(),
        std::env::var("RAINSTORM_STORE_ENDPOINT").ok(),
    );
    let store = Store::s3(&S3Location::parse(&url, endpoint).unwrap()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let names: Vec<String> = (0..12).map(|i| format!("bulk/{i:02}.seg")).collect();
        for n in &names {
            store.put(n, bytes::Bytes::from_static(b"x")).await.unwrap();
        }
        let mut doomed: Vec<String> = names[..10].to_vec();
        doomed.push("bulk/never-written.seg".into());
        store.delete_many(&doomed).await.unwrap();
        let left: Vec<String> = store
            .list("bulk/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.path)
            .collect();
        assert_eq!(left, names[10..]);
    });
}

/// A worker whose `--store` is another bucket or prefix than the leader's is refused at its
/// registration, saying why, and never takes a task: its tasks would write logs and outputs
/// where the leader and the other workers never look (a job "succeeded" with its output
/// missing from the cluster's store).
#[test]
fn a_worker_on_another_store_is_refused_saying_why() {
    let Some(url) = s3() else {
        return;
    };
    let mut c = Cluster::start(1, 5.0);
    let bucket = url.rsplit('/').next().unwrap();
    let elsewhere = format!("s3://{bucket}/{}-elsewhere", std::process::id());
    c.add_worker_env(&[("RAINSTORM_STORE", &elsewhere)]);
    let log = c.dir.path().join("worker-1.log");
    wait_for(
        "the refusal in the worker's log",
        Duration::from_secs(30),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains("this worker's store is not the cluster's")
                .then_some(())
        },
    );
    let workers = c.json(&["workers", "--json"]);
    assert_eq!(workers.as_array().unwrap().len(), 1, "{workers}");
    // A worker on the leader's store joins as ever.
    c.add_worker();
    c.wait_alive(2);
}

/// A leader pointed at a bucket that does not exist exits at once saying so: it said only
/// "cluster/id: not found in the store" (a probe's find).
#[test]
fn a_leader_on_a_bucket_that_does_not_exist_says_so() {
    if s3().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("s3://no-such-bucket-{}", std::process::id());
    let out = Command::new(bin())
        .args(["leader", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("leader"))
        .env("RAINSTORM_STORE", &missing)
        .env("RAINSTORM_TOKEN", "a-test-secret-of-some-length")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("the store does not exist"), "{err}");
    assert!(err.contains(&missing), "{err}");
}
