//! Connections by process, not by task pair (issue 19, target 8), against real processes: a
//! job with two adjacent stages of 16 tasks on two workers (16 + 256 + 16 = 288 links) holds
//! a handful of data-plane TCP connections between the worker processes, and its output is
//! exact, and a worker's links to its own tasks go in memory (`dataplane::local`); the same
//! job with `RAINSTORM_DATA_MUX=0 RAINSTORM_DATA_LOCAL=0` holds one per link, which shows the
//! count is taken where links live.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// Lines `1..=n`, the input (identity stages write them back unchanged).
fn numbered(n: usize) -> String {
    (1..=n).map(|i| format!("line {i}\n")).collect()
}

/// The sum over workers of a per-worker gauge on the leader's `/metrics`, if any worker has it.
fn summed(c: &Cluster, name: &str) -> Option<i64> {
    let text = c.http_get("/metrics");
    let values: Vec<i64> = text
        .lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with('{')))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// What the wide job showed while it ran: the most data-plane TCP sockets on this host, and
/// the most shared connections and streams the workers reported on `/metrics`.
struct Seen {
    sockets: usize,
    sessions: Option<i64>,
    streams: Option<i64>,
    local: Option<i64>,
}

/// Runs the wide job on two workers started with `env` and returns what it showed (sockets:
/// both ends of each connection count, they are all on this host), sampled for a second from
/// when `enough` holds of the socket count, then until the workers' heartbeats carried the
/// streams; checks the output.
fn wide_job(env: &[(&str, &str)], enough: impl Fn(usize) -> bool) -> Seen {
    let mut c = Cluster::start(0, 5.0);
    for _ in 0..2 {
        c.add_worker_env(env);
    }
    c.wait_alive(2);
    let lines = 6000;
    c.file("in.txt", &numbered(lines));
    c.ok(&["put", "in.txt", "in.txt"]);
    c.file(
        "wide.toml",
        &job_toml(
            "wide",
            "in.txt",
            "out/wide.txt",
            1500.0,
            "exactly-once",
            &[(16, "identity", &[]), (16, "identity", &[])],
        ),
    );
    let ports = c.data_ports();
    assert_eq!(ports.len(), 2);
    let id = c.submit("wide.toml");
    let seen = wait_for(
        "the job's links to be connected",
        Duration::from_secs(60),
        || {
            let n = established_on(&ports);
            enough(n).then_some(n)
        },
    );
    // Sample for a second of the job's steady state.
    let mut most = seen;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(1) {
        most = most.max(established_on(&ports));
        std::thread::sleep(Duration::from_millis(20));
    }
    // The metrics lag a heartbeat: read them once they count the stages' links (or, per
    // link, once a heartbeat has come and said nothing).
    let (sessions, streams, local) = wait_for(
        "the workers to report their connections",
        Duration::from_secs(30),
        || {
            let streams = summed(&c, "rainstorm_worker_data_streams");
            let sessions = summed(&c, "rainstorm_worker_data_sessions");
            let local = summed(&c, "rainstorm_worker_data_local_links");
            let per_link = env.contains(&("RAINSTORM_DATA_MUX", "0"));
            let counted = if per_link {
                t0.elapsed() > Duration::from_secs(2)
            } else {
                streams.unwrap_or(0) + local.unwrap_or(0) >= 256
            };
            counted.then_some((sessions, streams, local))
        },
    );
    let j = c.wait_job(&id, Duration::from_secs(120));
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_same(
        "the wide job's output",
        &sorted_lines(&c.store_file("out/wide.txt")),
        &sorted_lines(&numbered(lines)),
    );
    Seen {
        sockets: most,
        sessions,
        streams,
        local,
    }
}

#[test]
fn links_between_two_processes_share_a_few_tcp_connections() {
    // Per link, and every link through the network: at least the 256 links between the two
    // stages, two sockets each.
    let per_link = wide_job(
        &[("RAINSTORM_DATA_MUX", "0"), ("RAINSTORM_DATA_LOCAL", "0")],
        |n| n >= 2 * 256,
    );
    // Multiplexed: one connection from each worker to the other, two sockets each; at most
    // twice that while one is replaced. A worker's links to its own tasks take none.
    let muxed = wide_job(&[], |n| n >= 2);
    let (p, m) = (per_link.sockets, muxed.sockets);
    eprintln!("data-plane TCP sockets: {p} per link, {m} multiplexed");
    assert!(
        m <= 2 * 2 * 4,
        "{m} data-plane sockets for 288 links between two processes"
    );
    // `/metrics` says the same: a few sessions carry the links between the workers (each
    // worker's own count, at most two per peer while one is replaced), and each worker's
    // links to itself are in memory; per link, nothing is shared.
    let sessions = muxed.sessions.unwrap_or_default();
    assert!((2..=2 * 2 * 2).contains(&sessions), "{sessions} sessions");
    let streams = muxed.streams.unwrap_or_default();
    let local = muxed.local.unwrap_or_default();
    assert!(
        (256..=288).contains(&(streams + local)),
        "{streams} streams and {local} links in memory"
    );
    assert!(
        streams > 0 && local > 0,
        "both workers run tasks of both stages: {streams} streams, {local} in memory"
    );
    assert_eq!(
        (per_link.sessions, per_link.streams, per_link.local),
        (None, None, None)
    );
}
