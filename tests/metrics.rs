//! `/metrics` and the task views' meters against real processes: per-task counters equal the
//! tuple and byte counts computed here from the input, histograms are well formed, label values
//! are escaped, a slow stage shows as busy while the stage before it shows as back-pressured,
//! scrapes answer quickly while a job is under load, and a rescale shows in the stage gauges,
//! the rescale counter and the CLI.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One sample of the exposition: name, labels (unescaped), value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Sample {
    fn label(&self, k: &str) -> &str {
        self.labels.get(k).map(String::as_str).unwrap_or("")
    }
}

/// Parses `text` with the reference OpenMetrics parser (Python's `prometheus_client`, which
/// checks what the format requires: names, escapes, histogram buckets in order ending in
/// `+Inf` with `_count` and `_sum`, `# EOF`) and returns what it found: each family's type,
/// sample count and `name` labels, by family name. `None` without the parser, except under
/// `CI=true` (`.ci/run` installs it), where that fails.
fn reference_families(text: &str) -> Option<serde_json::Value> {
    use std::io::Write;
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = [f.type, len(f.samples), sorted({s.labels.get("name", "") for s in f.samples} - {""})]
print(json.dumps(out))
"#;
    let probe = std::process::Command::new("python3")
        .args(["-c", "import prometheus_client.openmetrics.parser"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI must have the reference parser (pip install prometheus-client)"
        );
        eprintln!("skipped: the reference OpenMetrics parser (python3 prometheus_client) is not installed");
        return None;
    }
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the reference parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// A family's type as the reference parser read it.
fn kind(families: &serde_json::Value, name: &str) -> String {
    families[name][0].as_str().unwrap_or("missing").to_string()
}

/// Checks what the reference parser found: the histograms as histograms, the counters as
/// counters, the job's name label as the job was named.
fn openmetrics_reference_parse(text: &str) {
    let Some(families) = reference_families(text) else {
        return;
    };
    let kind = |name: &str| kind(&families, name);
    assert_eq!(
        kind("rainstorm_job_end_to_end_latency_seconds"),
        "histogram"
    );
    assert_eq!(kind("rainstorm_task_log_commit_seconds"), "histogram");
    assert_eq!(kind("rainstorm_task_tuples_in"), "counter");
    assert_eq!(kind("rainstorm_task_busy_seconds"), "counter");
    assert_eq!(kind("rainstorm_task_queue_depth"), "gauge");
    assert_eq!(kind("rainstorm_worker_slots"), "gauge");
    assert_eq!(kind("rainstorm_workers"), "gauge");
    assert_eq!(kind("rainstorm_stage_tasks"), "gauge");
    assert_eq!(kind("rainstorm_stage_input_rate"), "gauge");
    assert_eq!(
        families["rainstorm_job"][2],
        serde_json::json!([WEIRD]),
        "the job's name, escaped by the encoder, unescaped by the reference parser: {families}"
    );
}

/// Parses the OpenMetrics text format (the subset the leader writes): `# ` lines are skipped;
/// label values are unescaped (`\\`, `\"`, `\n`).
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).expect("a sample line has a value");
        let name = line[..name_end].to_string();
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices();
            let mut key = String::new();
            loop {
                let (_, c) = chars.next().expect("unterminated label set");
                match c {
                    '}' => break,
                    ',' => {}
                    '=' => {
                        assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                        let mut value = String::new();
                        loop {
                            match chars.next().expect("unterminated label value").1 {
                                '"' => break,
                                '\\' => match chars.next().expect("dangling escape").1 {
                                    'n' => value.push('\n'),
                                    '\\' => value.push('\\'),
                                    '"' => value.push('"'),
                                    other => panic!("bad escape \\{other} in {line}"),
                                },
                                c => value.push(c),
                            }
                        }
                        labels.insert(std::mem::take(&mut key), value);
                    }
                    c => key.push(c),
                }
            }
            let at = chars.next().map(|(i, _)| i).unwrap_or(r.len());
            rest = &r[at..];
        }
        let value = rest.trim();
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}")),
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

/// Samples named `name` of job `job`.
fn of<'a>(samples: &'a [Sample], name: &str, job: &str) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.name == name && s.label("job") == job)
        .collect()
}

/// Sum of `name` over the tasks of `stage` of `job`.
fn stage_sum(samples: &[Sample], name: &str, job: &str, stage: u32) -> f64 {
    of(samples, name, job)
        .iter()
        .filter(|s| s.label("stage") == stage.to_string())
        .map(|s| s.value)
        .sum()
}

/// Checks every series of histogram `base`: buckets ascend in `le`, counts never fall, the
/// `+Inf` bucket equals `_count`, and `_sum` is there. Returns each series' count, by its
/// labels (less `le`).
fn check_histograms(samples: &[Sample], base: &str) -> BTreeMap<String, f64> {
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let key = |s: &Sample| {
        let mut l = s.labels.clone();
        l.remove("le");
        format!("{l:?}")
    };
    for s in samples
        .iter()
        .filter(|s| s.name == format!("{base}_bucket"))
    {
        let le = match s.label("le") {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap(),
        };
        series.entry(key(s)).or_default().push((le, s.value));
    }
    let mut counts = BTreeMap::new();
    for (k, buckets) in &series {
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{base}{k}: buckets must ascend: {buckets:?}"
        );
        let (last_le, last_n) = *buckets.last().unwrap();
        assert_eq!(last_le, f64::INFINITY, "{base}{k}");
        let find = |suffix: &str| {
            samples
                .iter()
                .find(|s| s.name == format!("{base}{suffix}") && key(s) == *k)
                .unwrap_or_else(|| panic!("{base}{suffix}{k} missing"))
                .value
        };
        assert_eq!(
            find("_count"),
            last_n,
            "{base}{k}: _count is the +Inf bucket"
        );
        assert!(find("_sum") >= 0.0, "{base}{k}");
        counts.insert(k.clone(), last_n);
    }
    counts
}

/// Key and value bytes of the source's tuples for these lines of file `name` (key `name:N`).
fn tuple_bytes<'a>(name: &str, lines: impl Iterator<Item = (usize, &'a String)>) -> u64 {
    lines
        .map(|(i, l)| (format!("{name}:{}", i + 1).len() + l.len()) as u64)
        .sum()
}

/// A job name no label may carry raw: a quote, a backslash and a newline.
const WEIRD: &str = "we\"ird\\job\nname";

#[test]
fn metrics_count_every_tasks_tuples_and_bytes_with_escaped_labels() {
    let c = Cluster::start(2, 5.0);
    let lines: Vec<String> = (0..3000)
        .map(|i| format!("row {i} {}", if i % 3 == 0 { "x" } else { "y" }))
        .collect();
    c.file("in.txt", &(lines.join("\n") + "\n"));
    c.ok(&["put", "in.txt", "in.txt"]);
    let kept: Vec<(usize, &String)> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains('x'))
        .collect();
    let (n, m) = (lines.len() as f64, kept.len() as f64);
    let all_bytes = tuple_bytes("in.txt", lines.iter().enumerate()) as f64;
    let kept_bytes = tuple_bytes("in.txt", kept.iter().copied()) as f64;
    // TOML basic-string escapes: the name is WEIRD.
    let job = "name = \"we\\\"ird\\\\job\\nname\"\ndelivery = \"exactly-once\"\n\
               [source]\npath = \"in.txt\"\nrate = 0\n[sink]\npath = \"out/m.txt\"\n\
               [[stages]]\ntasks = 2\nop = \"identity\"\nargs = []\n\
               [[stages]]\ntasks = 2\nop = \"filter\"\nargs = [\"x\"]\n";
    c.file("m.toml", job);
    let id = c.submit("m.toml");
    let j = c.wait_job(&id, Duration::from_secs(60));
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_eq!(j["name"], WEIRD);

    // Every attempt's last report (its end) reaches the leader soon after the job's end.
    let (text, samples) = wait_for("every task's final counts", Duration::from_secs(20), || {
        let text = c.http_get("/metrics");
        let s = parse(&text);
        let want = [
            ("rainstorm_task_tuples_out_total", 0, n),
            ("rainstorm_task_tuples_in_total", 1, n),
            ("rainstorm_task_tuples_out_total", 1, n),
            ("rainstorm_task_tuples_in_total", 2, n),
            ("rainstorm_task_tuples_out_total", 2, m),
            ("rainstorm_task_tuples_in_total", 3, m),
        ];
        let done = want
            .iter()
            .all(|(name, stage, v)| stage_sum(&s, name, &id, *stage) == *v);
        // An ended task's last report leaves it no input rate.
        let still = stage_sum(&s, "rainstorm_stage_input_rate", &id, 1)
            + stage_sum(&s, "rainstorm_stage_input_rate", &id, 2);
        (done && still == 0.0).then_some((text, s))
    });
    assert_eq!(text.lines().last(), Some("# EOF"));
    openmetrics_reference_parse(&text);

    // Bytes, against the input: a tuple's bytes as sent. A key goes only as far as something
    // reads it: the identity's outputs are routed by key, so it gets the source's keys, but
    // nothing after the filter reads one, so the filter and the sink get values only.
    let all_values = lines.iter().map(|l| l.len()).sum::<usize>() as f64;
    let kept_values = kept.iter().map(|(_, l)| l.len()).sum::<usize>() as f64;
    let bytes = |name: &str, stage| stage_sum(&samples, name, &id, stage);
    assert_eq!(bytes("rainstorm_task_bytes_out_total", 0), all_bytes);
    assert_eq!(bytes("rainstorm_task_bytes_in_total", 1), all_bytes);
    assert_eq!(bytes("rainstorm_task_bytes_out_total", 1), all_values);
    assert_eq!(bytes("rainstorm_task_bytes_in_total", 2), all_values);
    assert_eq!(bytes("rainstorm_task_bytes_out_total", 2), kept_values);
    assert_eq!(bytes("rainstorm_task_bytes_in_total", 3), kept_values);
    assert!(kept_bytes > kept_values && all_bytes > all_values);
    // Each identity task emits the values of what it accepts, without their keys.
    for s in of(&samples, "rainstorm_task_bytes_in_total", &id) {
        if s.label("stage") == "1" {
            let out = of(&samples, "rainstorm_task_bytes_out_total", &id)
                .into_iter()
                .find(|o| o.labels == s.labels)
                .unwrap();
            assert!(out.value > 0.0 && out.value < s.value, "{s:?} {out:?}");
        }
    }
    // Per-job counters keep their names.
    let job_value = |name| of(&samples, name, &id)[0].value;
    assert_eq!(job_value("rainstorm_job_source_tuples_total"), n);
    assert_eq!(job_value("rainstorm_job_sink_tuples_total"), m);
    assert_eq!(job_value("rainstorm_job_recoveries_total"), 0.0);
    assert_eq!(job_value("rainstorm_task_restarts_total"), 0.0);
    assert!(samples
        .iter()
        .any(|s| s.name == "rainstorm_workers" && s.label("state") == "alive" && s.value == 2.0));
    assert!(c.metric("rainstorm_worker_store_requests_total").is_some());
    // Both stages kept their two tasks, and (waited for above) take no input now.
    for stage in ["1", "2"] {
        let at = |name| {
            of(&samples, name, &id)
                .into_iter()
                .find(|s| s.label("stage") == stage)
                .unwrap_or_else(|| panic!("no {name} of stage {stage}"))
                .value
        };
        assert_eq!(at("rainstorm_stage_tasks"), 2.0, "stage {stage}");
        assert_eq!(at("rainstorm_stage_input_rate"), 0.0, "stage {stage}");
    }
    assert!(
        of(&samples, "rainstorm_stage_tasks", &id).len() == 2,
        "operator stages only"
    );
    assert!(of(&samples, "rainstorm_rescales_total", &id).is_empty());

    // Histograms: well formed; the sink saw every kept tuple; logged tasks timed commits.
    let e2e = check_histograms(&samples, "rainstorm_job_end_to_end_latency_seconds");
    assert_eq!(
        e2e.values().copied().collect::<Vec<_>>(),
        vec![m],
        "{e2e:?}"
    );
    let commits = check_histograms(&samples, "rainstorm_task_log_commit_seconds");
    for (stage, tasks) in [("2", 2), ("3", 1)] {
        let timed = commits
            .iter()
            .filter(|(k, n)| k.contains(&format!("\"stage\": \"{stage}\"")) && **n >= 1.0)
            .count();
        assert_eq!(timed, tasks, "stage {stage} is logged: {commits:?}");
    }

    // The job's name, escaped by the encoder and unescaped by the parser.
    let info = of(&samples, "rainstorm_job_info", &id);
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!(info[0].label("name"), WEIRD);
    assert_eq!(info[0].label("status"), "succeeded");
    assert!(
        text.contains(r#"name="we\"ird\\job\nname""#),
        "escaped on the wire: {}",
        text.lines()
            .find(|l| l.contains("rainstorm_job_info"))
            .unwrap_or("")
    );

    // The task views carry the same meters.
    for t in c.tasks(&id) {
        let labels = |s: &&Sample| {
            s.label("stage").parse().ok() == t["stage"].as_u64()
                && s.label("task").parse().ok() == t["task"].as_u64()
        };
        let metric = of(&samples, "rainstorm_task_bytes_in_total", &id)
            .into_iter()
            .find(labels)
            .unwrap();
        assert_eq!(t["bytes_in"].as_f64(), Some(metric.value), "{t}");
        for share in ["busy", "backpressured", "idle"] {
            let v = t[share].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v), "{share} of {t}");
        }
    }
}

#[test]
fn a_slow_stage_is_busy_while_the_stage_before_it_is_backpressured_and_scrapes_stay_quick() {
    let c = Cluster::start_small_windows(2);
    let slow = write_exec(&c.dir.path().join("slow.py"), &slow_echo(0.002));
    let lines: Vec<String> = (0..60_000).map(|i| format!("row {i}")).collect();
    c.file("in.txt", &(lines.join("\n") + "\n"));
    c.ok(&["put", "in.txt", "in.txt"]);
    let job = job_toml(
        "slow",
        "in.txt",
        "out/slow.txt",
        0.0,
        "at-least-once",
        &[(1, "identity", &[]), (1, slow.to_str().unwrap(), &[])],
    );
    c.file("slow.toml", &job);
    let id = c.submit("slow.toml");

    let stage = |tasks: &[serde_json::Value], s: u64| -> serde_json::Value {
        tasks
            .iter()
            .find(|t| t["stage"] == s)
            .cloned()
            .unwrap_or_default()
    };
    let (first, second) = wait_for(
        "the slow stage to be busy and the first back-pressured",
        Duration::from_secs(60),
        || {
            let tasks = c.tasks(&id);
            let (first, second) = (stage(&tasks, 1), stage(&tasks, 2));
            let share = |t: &serde_json::Value, k: &str| t[k].as_f64().unwrap_or(0.0);
            // Past the start: the shares are then those of recent intervals.
            (share(&first, "uptime_s") > 3.0
                && share(&second, "busy") > 0.5
                && share(&first, "backpressured") > 0.5
                && share(&first, "busy") < 0.5
                && share(&second, "backpressured") < 0.5)
                .then_some((first, second))
        },
    );
    assert!(first["queued"].as_u64().is_some(), "{first}");
    assert!(second["busy_s"].as_f64() > Some(0.0), "{second}");

    // Scrapes answer quickly while the job is under load, and agree with the views.
    let mut slowest = Duration::ZERO;
    let mut samples = Vec::new();
    for _ in 0..30 {
        let t0 = Instant::now();
        let (code, body) = c.http("GET", "/metrics");
        slowest = slowest.max(t0.elapsed());
        assert_eq!(code, 200);
        assert_eq!(body.lines().last(), Some("# EOF"));
        samples = parse(&body);
    }
    assert!(
        slowest < Duration::from_secs(2),
        "slowest scrape: {slowest:?}"
    );
    let secs = |name, stage| stage_sum(&samples, name, &id, stage);
    assert!(
        secs("rainstorm_task_backpressure_seconds_total", 1)
            > secs("rainstorm_task_busy_seconds_total", 1),
        "{samples:?}"
    );
    assert!(
        secs("rainstorm_task_busy_seconds_total", 2)
            > secs("rainstorm_task_backpressure_seconds_total", 2),
        "{samples:?}"
    );
    eprintln!(
        "slowest of 30 scrapes under load: {slowest:?}; first stage {first}; second stage {second}"
    );
    c.ok(&["cancel", &id]);
    assert_eq!(
        c.wait_job(&id, Duration::from_secs(20))["status"],
        "cancelled"
    );
    assert_at_rest(&c, &id);
}

/// A cancelled job moves nothing: its gauges read 0, not the last rate they showed (a probe
/// saw a cancelled job's stages still "taking" 2,500 tuples/s a minute later).
fn assert_at_rest(c: &Cluster, id: &str) {
    let s = parse(&c.http_get("/metrics"));
    assert_eq!(
        stage_value(&s, "rainstorm_stage_input_rate", id, 1, ""),
        Some(0.0)
    );
    let queued: f64 = s
        .iter()
        .filter(|m| m.name == "rainstorm_task_queue_depth" && m.label("job") == id)
        .map(|m| m.value)
        .sum();
    assert_eq!(queued, 0.0);
}

/// The value of `name` for stage `stage` of job `id` (with `outcome`, if given), if any.
fn stage_value(samples: &[Sample], name: &str, id: &str, stage: u32, outcome: &str) -> Option<f64> {
    of(samples, name, id)
        .into_iter()
        .find(|s| s.label("stage") == stage.to_string() && s.label("outcome") == outcome)
        .map(|s| s.value)
}

#[test]
fn a_rescale_shows_in_the_stage_gauges_the_rescale_counter_and_the_cli() {
    let c = Cluster::start(2, 5.0);
    let lines: Vec<String> = (0..20_000).map(|i| format!("row {i}")).collect();
    c.file("in.txt", &(lines.join("\n") + "\n"));
    c.ok(&["put", "in.txt", "in.txt"]);
    // One stage with room for three tasks, which only a request rescales (no rate is below 0
    // or above 1e9 per task); the source feeds it 200 tuples a second.
    let job = "name = \"rescaled\"\ndelivery = \"exactly-once\"\n\
               [source]\npath = \"in.txt\"\nrate = 200\n[sink]\npath = \"out/r.txt\"\n\
               [[stages]]\ntasks = 1\nop = \"identity\"\n\
               [stages.autoscale]\nlow = 0\nhigh = 1e9\nmax_tasks = 3\n";
    c.file("r.toml", job);
    let id = c.submit("r.toml");
    let state_cells = || -> Vec<String> {
        c.ok(&["tasks"])
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|cols| cols.first() == Some(&id.as_str()) && cols.get(1) == Some(&"1"))
            .map(|cols| cols[5].to_string())
            .collect()
    };
    // Two of the stage's three positions stand by, and `rainstorm tasks` says so.
    wait_for(
        "one task running, two standing by",
        Duration::from_secs(30),
        || {
            let mut cells = state_cells();
            cells.sort();
            (cells == ["running", "standby", "standby"]).then_some(())
        },
    );
    let scrape = || parse(&c.http_get("/metrics"));
    wait_for("stage 1 to take input", Duration::from_secs(30), || {
        let s = scrape();
        (stage_value(&s, "rainstorm_stage_tasks", &id, 1, "") == Some(1.0)
            && stage_value(&s, "rainstorm_stage_input_rate", &id, 1, "")? > 0.0)
            .then_some(())
    });

    c.ok(&["scale", &id, "1", "3"]);
    let rescale = wait_for("the rescale to end", Duration::from_secs(30), || {
        let j = c.json(&["job", &id, "--json"]);
        let s = j["scaling"].as_array()?.last()?.clone();
        (s["outcome"] != "in-progress").then_some(s)
    });
    assert_eq!(rescale["outcome"], "done", "{rescale}\n{}", c.diagnose());
    // The stage gauges follow: three tasks own key groups, and between them they take what
    // the source sends (its rate, 200/s, measured over 2 s windows on three new windows).
    let (samples, text) = wait_for(
        "the stage's gauges to show three tasks taking the source's rate",
        Duration::from_secs(30),
        || {
            let text = c.http_get("/metrics");
            let s = parse(&text);
            let rate = stage_value(&s, "rainstorm_stage_input_rate", &id, 1, "")?;
            (stage_value(&s, "rainstorm_stage_tasks", &id, 1, "") == Some(3.0)
                && (150.0..=250.0).contains(&rate))
            .then_some((s, text))
        },
    );
    let rescales = |outcome| stage_value(&samples, "rainstorm_rescales_total", &id, 1, outcome);
    assert_eq!(rescales("done"), Some(1.0), "{text}");
    assert_eq!(rescales("aborted"), None);
    let api: Vec<u64> = c.json(&["job", &id, "--json"])["stage_tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_u64())
        .collect();
    assert_eq!(api, [3], "the API agrees");
    if let Some(families) = reference_families(&text) {
        assert_eq!(kind(&families, "rainstorm_rescales"), "counter");
        assert_eq!(kind(&families, "rainstorm_stage_input_rate"), "gauge");
    }

    // The CLI: no task stands by now; the job lists its task count and the rescale.
    assert_eq!(state_cells(), ["running", "running", "running"]);
    let shown = c.ok(&["job", &id]);
    assert!(
        shown.contains("tasks:      3 (owning key groups)"),
        "{shown}"
    );
    let line = shown
        .lines()
        .find(|l| l.contains("stage 1  1→3  done in "))
        .unwrap_or_else(|| panic!("no rescale line in:\n{shown}"));
    assert!(line.trim_end().ends_with("requested"), "{line}");

    c.ok(&["cancel", &id]);
    assert_eq!(
        c.wait_job(&id, Duration::from_secs(20))["status"],
        "cancelled"
    );
    assert_at_rest(&c, &id);
}
