//! Test harness: real `rainstorm` processes on loopback, datasets generated here, and
//! references computed from the generated rows (never by the engine's own code).
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_rainstorm")
}

/// The repository root (for the example operators).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Polls `cond` until it returns Some or the deadline passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A small deterministic PRNG (xorshift), so datasets do not depend on a crate's API.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub const POSTS: [&str; 5] = ["Punched Telespar", "Wood", "Steel", "Unknown", "U-Channel"];
pub const CATEGORIES: [&str; 6] = [
    "Warning",
    "Regulatory",
    "Guide",
    "School",
    "Construction",
    "Street Name",
];

/// A generated traffic-signs dataset: the rows as fields, and the CSV text (with a header).
pub struct Signs {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

fn csv_field(f: &str) -> String {
    if f.contains([',', '"', '\n']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f.to_string()
    }
}

pub fn csv_line(fields: &[String]) -> String {
    fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",")
}

impl Signs {
    pub fn generate(n: usize, seed: u64) -> Signs {
        let mut r = Rng::new(seed);
        let header = [
            "X",
            "Y",
            "OBJECTID",
            "Sign_Type",
            "Size_",
            "Supplement",
            "Sign_Post",
            "Year_Insta",
            "Category",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let rows = (0..n)
            .map(|i| {
                let supp = match r.below(4) {
                    0 => "Arrow, left".to_string(),
                    1 => "say \"stop\"".to_string(),
                    _ => String::new(),
                };
                vec![
                    format!("-88.{:04}", r.below(10000)),
                    format!("40.{:04}", r.below(10000)),
                    (i + 1).to_string(),
                    format!("R{}-{}", r.below(12), r.below(5)),
                    format!("{}x{}", 12 + r.below(4) * 6, 12 + r.below(4) * 6),
                    supp,
                    POSTS[r.below(POSTS.len() as u64) as usize].to_string(),
                    (1990 + r.below(30)).to_string(),
                    CATEGORIES[r.below(CATEGORIES.len() as u64) as usize].to_string(),
                ]
            })
            .collect();
        Signs { header, rows }
    }

    pub fn write(&self, path: &Path) {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        writeln!(f, "{}", csv_line(&self.header)).unwrap();
        for r in &self.rows {
            writeln!(f, "{}", csv_line(r)).unwrap();
        }
    }

    /// Every line of the file (header included), sorted: what a pass-through job outputs.
    pub fn all_lines(&self) -> Vec<String> {
        let mut v: Vec<String> = std::iter::once(csv_line(&self.header))
            .chain(self.rows.iter().map(|r| csv_line(r)))
            .collect();
        v.sort();
        v
    }

    /// App 1: lines containing "Punched Telespar" → columns 3-5.
    pub fn app1(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .rows
            .iter()
            .filter(|r| r[6] == "Punched Telespar")
            .map(|r| csv_line(&r[2..5]))
            .collect();
        v.sort();
        v
    }

    /// App 2: lines with post == "Punched Telespar" → running count per category.
    pub fn app2(&self) -> Vec<String> {
        let mut counts = std::collections::HashMap::<&str, u64>::new();
        let mut v = Vec::new();
        for r in self.rows.iter().filter(|r| r[6] == "Punched Telespar") {
            let c = counts.entry(&r[8]).or_default();
            *c += 1;
            v.push(format!("{},{}", r[8], c));
        }
        v.sort();
        v
    }
}

/// Writes an executable script and returns its path.
pub fn write_exec(path: &Path, body: &str) -> PathBuf {
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path.to_path_buf()
}

/// A deliberately slow pass-through operator (sleeps per line), for backpressure and timing.
pub fn slow_echo(seconds_per_line: f64) -> String {
    format!(
        "#!/usr/bin/env python3\nimport sys, time\nfor line in sys.stdin:\n    time.sleep({seconds_per_line})\n    sys.stdout.write(line)\n    sys.stdout.flush()\n"
    )
}

pub fn sorted_lines(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text.lines().map(str::to_string).collect();
    v.sort();
    v
}

/// Asserts two sorted multisets are equal, with a readable summary when they are not.
pub fn assert_same(what: &str, got: &[String], want: &[String]) {
    if got != want {
        let missing: Vec<_> = want.iter().filter(|w| !got.contains(w)).take(5).collect();
        let extra: Vec<_> = got.iter().filter(|g| !want.contains(g)).take(5).collect();
        panic!(
            "{what}: got {} lines, want {}; e.g. missing {missing:?}, unexpected {extra:?}",
            got.len(),
            want.len()
        );
    }
}

/// A job file.
pub fn job_toml(
    name: &str,
    source: &str,
    sink: &str,
    rate: f64,
    delivery: &str,
    stages: &[(u32, &str, &[&str])],
) -> String {
    let mut s = format!(
        "name = \"{name}\"\ndelivery = \"{delivery}\"\n[source]\npath = \"{source}\"\nrate = {rate}\n[sink]\npath = \"{sink}\"\n"
    );
    for (tasks, op, args) in stages {
        let key = if op.contains('/') { "exec" } else { "op" };
        let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
        s.push_str(&format!(
            "[[stages]]\ntasks = {tasks}\n{key} = \"{op}\"\nargs = [{}]\n",
            args.join(", ")
        ));
    }
    s
}

/// A `[[stages]]` table of `tasks` tasks chaining the built-ins `steps` (name, arguments), to
/// append to a [`job_toml`] job.
pub fn chain_stage(tasks: u32, steps: &[(&str, &[&str])]) -> String {
    let steps: Vec<String> = steps
        .iter()
        .map(|(op, args)| format!("{{ op = {op:?}, args = {args:?} }}"))
        .collect();
    format!(
        "[[stages]]\ntasks = {tasks}\nchain = [{}]\n",
        steps.join(", ")
    )
}

/// Copies the example operators into `dir` (a path unique to the test, so leftover processes
/// can be found by it).
pub fn install_ops(dir: &Path) -> PathBuf {
    let ops = dir.join("ops");
    std::fs::create_dir_all(&ops).unwrap();
    for entry in std::fs::read_dir(repo().join("examples/ops")).unwrap() {
        let entry = entry.unwrap();
        let to = ops.join(entry.file_name());
        std::fs::copy(entry.path(), &to).unwrap();
    }
    ops
}

/// Established loopback TCP connections with an end on one of `ports` (from /proc/net/tcp).
pub fn established_on(ports: &[u16]) -> usize {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            if cols.len() < 4 || cols[3] != "01" {
                return false;
            }
            let port = |a: &str| {
                a.rsplit(':')
                    .next()
                    .and_then(|h| u16::from_str_radix(h, 16).ok())
            };
            [cols[1], cols[2]]
                .iter()
                .any(|a| port(a).is_some_and(|p| ports.contains(&p)))
        })
        .count()
}

/// TCP ports process `pid` listens on (its socket inodes matched against /proc/net/tcp*).
pub fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ports: Vec<u16> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            text.lines()
                .skip(1)
                .filter_map(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    (cols.len() > 9 && cols[3] == "0A" && inodes.contains(cols[9]))
                        .then(|| u16::from_str_radix(cols[1].rsplit(':').next()?, 16).ok())
                        .flatten()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    ports.sort();
    ports.dedup();
    ports
}

/// Processes whose command line mentions `needle`.
pub fn processes_matching(needle: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                v.push(pid);
            }
        }
    }
    v
}

/// A leader and workers as separate processes.
pub struct Cluster {
    pub url: String,
    /// The cluster secret every process and CLI call of the test uses.
    pub token: String,
    pub dir: tempfile::TempDir,
    leader: Child,
    pub workers: Vec<Child>,
    /// `--slots` of the workers it adds from now on.
    pub worker_slots: u32,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = self.leader.kill();
        let _ = self.leader.wait();
    }
}

impl Cluster {
    /// Starts a leader (heartbeat timeout `timeout_s`) and `n` workers; waits until all joined.
    pub fn start(n: usize, timeout_s: f64) -> Cluster {
        Self::start_with(n, timeout_s, &[])
    }

    /// Like `start`, with extra leader arguments.
    pub fn start_with(n: usize, timeout_s: f64, extra: &[&str]) -> Cluster {
        Self::start_tuned(n, timeout_s, extra, |_| {})
    }

    /// Like `start_with`; `tune` adjusts the leader's command before it starts (its limits,
    /// say).
    pub fn start_tuned(
        n: usize,
        timeout_s: f64,
        extra: &[&str],
        tune: impl FnOnce(&mut Command),
    ) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let token = format!(
            "test-secret-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let log = std::fs::File::create(dir.path().join("leader.log")).unwrap();
        let mut leader = Command::new(bin());
        leader
            .args([
                "leader",
                "--listen",
                "127.0.0.1:0",
                "--heartbeat-ms",
                "100",
                "--heartbeat-timeout",
            ])
            .arg(timeout_s.to_string())
            .arg("--data-dir")
            .arg(dir.path().join("leader"))
            // The test's own directory holds its operators (the exec policy's allowed place).
            .arg("--allow-exec")
            .arg(dir.path())
            .args(extra)
            .env("RAINSTORM_LOG", "info")
            .env("RAINSTORM_TOKEN", &token)
            .stdout(Stdio::null())
            .stderr(log);
        tune(&mut leader);
        let leader = leader.spawn().unwrap();
        let log_path = dir.path().join("leader.log");
        let url = wait_for("the leader to listen", Duration::from_secs(20), || {
            let text = std::fs::read_to_string(&log_path).ok()?;
            // Only complete lines: the log may be caught mid-write.
            let line = text
                .split_inclusive('\n')
                .find(|l| l.contains("listening on ") && l.ends_with('\n'))?;
            Some(line.rsplit("listening on ").next()?.trim().to_string())
        });
        let mut c = Cluster {
            url,
            token,
            dir,
            leader,
            workers: Vec::new(),
            worker_slots: 64,
        };
        for _ in 0..n {
            c.add_worker();
        }
        c.wait_alive(n);
        c
    }

    pub fn add_worker(&mut self) {
        self.add_worker_env(&[]);
    }

    /// A leader and `n` workers with small link windows and queues, so back-pressure from a
    /// slow stage reaches the stages before it within a few batches.
    pub fn start_small_windows(n: usize) -> Cluster {
        let mut c = Cluster::start(0, 5.0);
        let small = [
            ("RAINSTORM_WINDOW_BYTES", "8192"),
            ("RAINSTORM_QUEUE_BATCHES", "2"),
            ("RAINSTORM_BATCH_TUPLES", "64"),
        ];
        for _ in 0..n {
            c.add_worker_env(&small);
        }
        c.wait_alive(n);
        c
    }

    /// Starts one more worker with extra environment variables (data-plane limits, say).
    pub fn add_worker_env(&mut self, env: &[(&str, &str)]) {
        self.add_worker_with(env, None);
    }

    /// Starts one more worker with extra environment variables and, with `nofile`, an
    /// open-files limit (soft and hard, so the worker cannot raise it).
    pub fn add_worker_with(&mut self, env: &[(&str, &str)], nofile: Option<u64>) {
        let i = self.workers.len();
        let log = std::fs::File::create(self.dir.path().join(format!("worker-{i}.log"))).unwrap();
        let mut w = Command::new(bin());
        w.args(["worker", "--leader", &self.url, "--data-dir"])
            .arg(self.dir.path().join(format!("worker-{i}")))
            // Tests size their jobs for the machine's cores, not for slots; the capacity
            // tests set their own.
            .args(["--slots", &self.worker_slots.to_string()])
            .arg("--allow-exec")
            .arg(self.dir.path())
            .env("RAINSTORM_LOG", "info")
            .env("RAINSTORM_TOKEN", &self.token)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(n) = nofile {
            limit_open_files(&mut w, n);
        }
        let w = w.spawn().unwrap();
        self.workers.push(w);
    }

    pub fn wait_alive(&self, n: usize) {
        wait_for("workers to join", Duration::from_secs(20), || {
            let ws = self.json(&["workers", "--json"]);
            let alive = ws
                .as_array()?
                .iter()
                .filter(|w| w["state"] == "alive")
                .count();
            (alive >= n).then_some(())
        });
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .env("RAINSTORM_LEADER", &self.url)
            .env("RAINSTORM_TOKEN", &self.token)
            .current_dir(self.dir.path());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "rainstorm {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    /// Writes a file into the cluster's working directory.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Submits a job file (already in the working dir); returns the job id.
    pub fn submit(&self, job_file: &str) -> String {
        let out = self.ok(&["submit", job_file]);
        out.lines().last().unwrap().trim().to_string()
    }

    /// Waits for a job to reach a final status; returns its record.
    pub fn wait_job(&self, id: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let j = self.json(&["job", id, "--json"]);
            if j["status"] != "running" && j["status"] != "pending" {
                return j;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for job {id} to end: {j}\n{}",
                    self.diagnose()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for job `id` to succeed (within 60 s) and checks that store file `out` holds
    /// exactly the lines of `text`, in any order.
    pub fn succeeds_with_lines(&self, id: &str, out: &str, text: &str) {
        let j = self.wait_job(id, Duration::from_secs(60));
        assert_eq!(j["status"], "succeeded", "{j}\n{}", self.diagnose());
        assert_same(
            "the job's output",
            &sorted_lines(&self.store_file(out)),
            &sorted_lines(text),
        );
    }

    /// The cluster's tasks and the tail of every process's log, for a failure message.
    pub fn diagnose(&self) -> String {
        let workers: String = (0..self.workers.len())
            .map(|i| {
                let log = std::fs::read_to_string(self.dir.path().join(format!("worker-{i}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                format!(
                    "--- worker-{i} (last 40 lines, newest first)\n{}\n",
                    tail.join("\n")
                )
            })
            .collect();
        let tasks = self.run(&["tasks", "--json"]).stdout;
        format!(
            "tasks: {}\n--- leader\n{}\n{workers}",
            String::from_utf8_lossy(&tasks),
            self.leader_log()
        )
    }

    /// Reads a store file.
    pub fn store_file(&self, path: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("leader/store").join(path)).unwrap()
    }

    /// Tasks of a job.
    pub fn tasks(&self, job: &str) -> Vec<serde_json::Value> {
        self.json(&["tasks", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["job"] == job)
            .cloned()
            .collect()
    }

    pub fn kill_worker(&mut self, i: usize) {
        self.workers[i].kill().unwrap();
        self.workers[i].wait().unwrap();
    }

    /// Data-plane ports: every worker's listener (the leader has none).
    pub fn data_ports(&self) -> Vec<u16> {
        self.json(&["workers", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|w| w["address"].as_str()?.rsplit(':').next()?.parse().ok())
            .collect()
    }

    /// Index (in `workers`) of the process that registered as `worker_id`.
    pub fn worker_index(&self, worker_id: &str) -> Option<usize> {
        (0..self.workers.len()).find(|i| {
            let log = std::fs::read_to_string(self.dir.path().join(format!("worker-{i}.log")))
                .unwrap_or_default();
            log.split_inclusive('\n')
                .filter(|l| l.ends_with('\n') && l.contains("registered with the leader"))
                .any(|l| {
                    l.split_whitespace()
                        .any(|w| w == format!("worker={worker_id}"))
                })
        })
    }

    /// One authenticated GET to the leader over a plain socket; the response body.
    pub fn http_get(&self, path: &str) -> String {
        self.http("GET", path).1
    }

    /// One authenticated request without a body to the leader over a plain socket (no CLI
    /// process to start: it can hit a chosen moment); the status code and the body (answers
    /// of a known length only).
    pub fn http(&self, method: &str, path: &str) -> (u16, String) {
        use std::io::Read;
        let addr = self.url.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.token
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        split_response(&text)
    }

    /// A request with the secret and a JSON body: (status code, body).
    pub fn http_json(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        use std::io::Read;
        let addr = self.url.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.token,
            body.len()
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        split_response(&text)
    }

    /// The value of an unlabelled metric on the leader's `/metrics`.
    pub fn metric(&self, name: &str) -> Option<i64> {
        self.http_get("/metrics")
            .lines()
            .find(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(['{', ' ']))
            })?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()
    }

    pub fn leader_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("leader.log")).unwrap_or_default()
    }

    /// Every worker's log, one after another (the source and the sink run on workers).
    pub fn worker_logs(&self) -> String {
        (0..self.workers.len())
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("worker-{i}.log")))
                    .unwrap_or_default()
            })
            .collect()
    }
}

/// A Hello without a proof from attempt 0 of task `from` (stage, index) to attempt 0 of task
/// `to` of `job`, in epoch 0, with nothing acknowledged yet.
pub fn unsigned_hello(
    job: &str,
    from: (u32, u32),
    to: (u32, u32),
) -> rainstorm::protocol::frame::Hello {
    rainstorm::protocol::frame::Hello {
        job: job.into(),
        from_stage: from.0,
        from_index: from.1,
        from_attempt: 0,
        to_stage: to.0,
        to_index: to.1,
        to_attempt: 0,
        epoch: 0,
        acked: 0,
        eos_acked: false,
        proof: Vec::new(),
    }
}

impl Cluster {
    /// Reads a data listener's challenge from `s` and returns a Hello from task 0.0 attempt 0
    /// to task 1.0 attempt 0 of `job`, proved as well as a holder of the cluster secret alone
    /// can: with an HMAC of the challenge and the Hello under a key derived from the secret
    /// (what data connections proved before they were signed by the sending worker's key).
    pub fn secret_hello(
        &self,
        s: &mut std::net::TcpStream,
        job: &str,
    ) -> rainstorm::protocol::frame::Hello {
        self.prove_with_secret(s, unsigned_hello(job, (0, 0), (1, 0)))
    }

    /// Reads a data listener's challenge from `s` and fills `h`'s proof with an HMAC under the
    /// cluster secret's data-plane key, the most a holder of the secret alone can make.
    pub fn prove_with_secret(
        &self,
        s: &mut std::net::TcpStream,
        mut h: rainstorm::protocol::frame::Hello,
    ) -> rainstorm::protocol::frame::Hello {
        use hmac::Mac;
        use rainstorm::protocol::frame::Frame;
        use std::io::Read;
        type H = hmac::Hmac<sha2::Sha256>;
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).unwrap();
        let Ok(Frame::Challenge(nonce)) = Frame::decode(body.into()) else {
            panic!("a data listener must speak first with a challenge");
        };
        let mut k = H::new_from_slice(self.token.as_bytes()).unwrap();
        k.update(b"rainstorm data plane v1");
        let data_key = k.finalize().into_bytes();
        let mut m = H::new_from_slice(&data_key).unwrap();
        m.update(&nonce);
        m.update(&h.signed_body());
        h.proof = m.finalize().into_bytes().to_vec();
        h
    }
}

/// The leader as a process: its pid, its arguments, SIGTERM and restarts on the same data dir.
impl Cluster {
    /// The leader's pid.
    pub fn leader_pid(&self) -> u32 {
        self.leader.id()
    }

    /// The running leader's command-line arguments (after the program name), from /proc.
    pub fn leader_args(&self) -> Vec<String> {
        let raw = std::fs::read(format!("/proc/{}/cmdline", self.leader.id())).unwrap();
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .skip(1)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    /// The running leader's arguments, listening on the port it has now (to start another
    /// one in its place).
    pub fn leader_args_same_port(&self) -> Vec<String> {
        let port = self.url.rsplit(':').next().unwrap().to_string();
        let mut args = self.leader_args();
        if let Some(i) = args.iter().position(|a| a == "--listen") {
            args[i + 1] = format!("127.0.0.1:{port}");
        }
        args
    }

    /// Sends the leader SIGTERM and waits (at most `limit`) for it to exit; returns its exit
    /// status (None if it was still running at `limit`, and then it is killed) and how long
    /// it took.
    pub fn sigterm_leader(
        &mut self,
        limit: Duration,
    ) -> (Option<std::process::ExitStatus>, Duration) {
        let t0 = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &self.leader.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM failed");
        loop {
            if let Some(st) = self.leader.try_wait().unwrap() {
                return (Some(st), t0.elapsed());
            }
            if t0.elapsed() > limit {
                let took = t0.elapsed();
                let _ = self.leader.kill();
                let _ = self.leader.wait();
                return (None, took);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILLs the leader and starts a new one with the same arguments on the same data dir
    /// and the same port (workers reconnect by themselves); its log goes on in `leader.log`.
    /// Waits until it answers.
    pub fn restart_leader(&mut self) {
        let args = self.leader_args_same_port();
        let _ = self.leader.kill();
        let _ = self.leader.wait();
        self.start_leader_again(&args);
    }

    /// Starts a leader with `args` (the previous one must be gone) and waits until it
    /// answers on this cluster's URL.
    pub fn start_leader_again(&mut self, args: &[String]) {
        let log_path = self.dir.path().join("leader.log");
        let before = self.leader_log().matches("listening on ").count();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&log_path)
            .unwrap();
        self.leader = Command::new(bin())
            .args(args)
            .env("RAINSTORM_LOG", "info")
            .env("RAINSTORM_TOKEN", &self.token)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_for("the new leader to listen", Duration::from_secs(20), || {
            if let Some(st) = self.leader.try_wait().unwrap() {
                panic!("the new leader exited ({st}): {}", self.leader_log());
            }
            (self.leader_log().matches("listening on ").count() > before).then_some(())
        });
        wait_for("the new leader to answer", Duration::from_secs(20), || {
            self.run(&["jobs", "--json"]).status.success().then_some(())
        });
    }
}

/// A client command that streams a job's output (`submit --follow`, `follow ID`), read on a
/// thread as it prints, its stderr kept in a file. Killed when dropped, even by a panic (a
/// follower left behind would go on reconnecting for minutes).
pub struct Follower {
    child: Child,
    printed: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    log: PathBuf,
}

impl Follower {
    /// Starts `rainstorm ARGS` against the cluster, its stderr in `DIR/<log>`.
    pub fn start(c: &Cluster, args: &[&str], log: &str) -> Follower {
        use std::io::Read;
        let log = c.dir.path().join(log);
        let mut child = c
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let printed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut stdout = child.stdout.take().unwrap();
        let sink = printed.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => sink.lock().unwrap().extend_from_slice(&buf[..n]),
                }
            }
        });
        Follower {
            child,
            printed,
            reader: Some(reader),
            log,
        }
    }

    /// Lines printed so far.
    pub fn lines(&self) -> usize {
        self.printed
            .lock()
            .unwrap()
            .iter()
            .filter(|b| **b == b'\n')
            .count()
    }

    /// Waits for the command to exit: its status, everything it printed, and its stderr.
    pub fn finish(mut self, timeout: Duration) -> (std::process::ExitStatus, String, String) {
        let status = wait_for("the follower to exit", timeout, || {
            self.child.try_wait().unwrap()
        });
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        let out = String::from_utf8(self.printed.lock().unwrap().clone()).unwrap();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        (status, out, log)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fails when a line appears twice (for outputs whose lines are all distinct).
pub fn assert_no_line_twice(text: &str) {
    let mut seen = std::collections::HashSet::new();
    for line in text.lines() {
        assert!(seen.insert(line), "printed twice: {line:?}");
    }
}

/// Fails unless two texts are byte for byte the same, showing where they part.
pub fn assert_same_text(what: &str, got: &str, want: &str) {
    if got == want {
        return;
    }
    let at = got
        .bytes()
        .zip(want.bytes())
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: {} bytes / {} lines, want {} bytes / {} lines; they part at byte {at}: {:?} vs {:?}",
        got.len(),
        got.lines().count(),
        want.len(),
        want.lines().count(),
        &got[at..(at + 80).min(got.len())],
        &want[at..(at + 80).min(want.len())],
    );
}

/// A raw HTTP/1.1 response's status code (0 if there is none) and body.
pub fn split_response(text: &str) -> (u16, String) {
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Makes `cmd`'s process start with an open-files limit of `n`, soft and hard (so it cannot
/// raise it).
pub fn limit_open_files(cmd: &mut Command, n: u64) {
    let limit = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: only setrlimit runs between fork and exec (async-signal-safe).
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}
