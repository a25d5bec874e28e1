//! Hosts whose clocks disagree: a worker an hour ahead of the leader (libfaketime) measures its
//! clock against the leader's and stamps emit times in the leader's time, so a job's latency
//! between it and a worker with a true clock is the job's, not the hour (hostile probe 15 saw
//! `latency: p50 3600216.5 ms`).

mod common;
use common::*;
use std::time::Duration;

/// The preload library of `faketime` (the apt package `faketime`, which `.ci/run` installs).
fn libfaketime() -> Option<&'static str> {
    let lib = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).is_file());
    if lib.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "libfaketime is missing under CI: .ci/run must install the faketime package"
        );
        eprintln!("skipped: libfaketime is not installed (apt-get install faketime)");
    }
    lib
}

#[test]
fn a_worker_an_hour_ahead_measures_its_clock_and_latency_stays_the_job_s() {
    let Some(lib) = libfaketime() else {
        return;
    };
    let mut c = Cluster::start(1, 5.0);
    c.add_worker_env(&[
        ("LD_PRELOAD", lib),
        ("FAKETIME", "+1h"),
        // Only the wall clock is an hour off; timers and timeouts run as everywhere.
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ]);
    c.wait_alive(2);
    // The skewed worker has measured its clock against the leader's: about an hour behind is
    // the correction it applies (negative: its clock is ahead).
    let offsets = wait_for(
        "the workers' clock offsets",
        Duration::from_secs(30),
        || {
            let ws = c.json(&["workers", "--json"]);
            let mut ms: Vec<f64> = (ws.as_array()?.iter())
                .map(|w| w["clock_offset_ms"].as_f64())
                .collect::<Option<_>>()?;
            ms.sort_by(f64::total_cmp);
            (ms.len() == 2 && ms[0] < -3_590_000.0).then_some(ms)
        },
    );
    assert!(offsets[0] > -3_610_000.0, "{offsets:?}");
    assert!(offsets[1].abs() < 5_000.0, "{offsets:?}");

    let signs = Signs::generate(3000, 15);
    signs.write(&c.dir.path().join("signs.csv"));
    c.ok(&["put", "signs.csv", "signs.csv"]);
    // Latency is measured between the source's worker and the sink's: jobs are run until one
    // places them on different workers (placement is not the test's to choose).
    for n in 0..10 {
        let sink = format!("out/skew-{n}.txt");
        let job = job_toml(
            &format!("skew-{n}"),
            "signs.csv",
            &sink,
            3000.0,
            "exactly-once",
            &[
                (2, "filter", &["Punched Telespar"]),
                (1, "count-by", &["9"]),
            ],
        );
        c.file(&format!("skew-{n}.toml"), &job);
        let id = c.submit(&format!("skew-{n}.toml"));
        let j = c.wait_job(&id, Duration::from_secs(120));
        assert_eq!(j["status"], "succeeded", "{j}");
        assert_same("output", &sorted_lines(&c.store_file(&sink)), &signs.app2());
        let tasks = c.tasks(&id);
        let worker = |stage: Option<u64>| {
            let t = match stage {
                Some(s) => tasks.iter().find(|t| t["stage"] == s),
                None => tasks.iter().max_by_key(|t| t["stage"].as_u64()),
            };
            t.map(|t| t["worker"].clone())
        };
        if worker(Some(0)) == worker(None) {
            continue;
        }
        // Neither the hour (a sink ahead of its source) nor nothing (a sink behind it: the
        // difference saturated to 0), but the few commit intervals the job takes.
        let p99 = j["latency_ms"]["p99"].as_f64().unwrap_or(f64::MAX);
        assert!(
            (1.0..30_000.0).contains(&p99),
            "latency across the skewed clocks: {j}"
        );
        return;
    }
    panic!("ten jobs all ran their source and sink on one worker");
}
