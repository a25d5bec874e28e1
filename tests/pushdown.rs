//! The first stage's filter pushed into the source (`model::pushdown`), on a cluster of real
//! processes: dropped lines never leave the source, yet the job reads every line, and the
//! first stage's replays read the file through the same filter, so a rescale of the stage and
//! SIGKILLed workers (one running first-stage tasks, then the source's) keep the output
//! exactly the reference.

mod common;
use common::*;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(120);

/// app1 (filter → select), its filter stage rescalable by hand up to 3 tasks (watermarks
/// out of reach), behind a paced source. The select logs its input once a second: until it
/// does, what a filter task acknowledged to the source is not acknowledged downstream, so a
/// replacement of that task must regenerate it from the file.
fn job(rate: f64) -> String {
    format!(
        r#"name = "pushed"
delivery = "exactly-once"
commit_interval_ms = 1000
[source]
path = "signs.csv"
rate = {rate}
[sink]
path = "out/app1.txt"
[[stages]]
tasks = 1
op = "filter"
args = ["Punched Telespar"]
[stages.autoscale]
low = 1
high = 1000000
max_tasks = 3
[[stages]]
tasks = 2
op = "select"
args = ["3-5"]
"#
    )
}

fn source_tuples(c: &Cluster, id: &str) -> u64 {
    c.json(&["job", id, "--json"])["source_tuples"]
        .as_u64()
        .unwrap_or(0)
}

/// SIGKILLs a worker running a live task of `stage` and none of stage `spare`, and waits
/// until every task of the job runs elsewhere again.
fn kill_worker_of_stage(c: &mut Cluster, id: &str, stage: u64, spare: Option<u64>) -> String {
    let victim = wait_for("a running task to kill", LONG, || {
        let tasks = c.tasks(id);
        let spared = |w: &str| {
            tasks
                .iter()
                .any(|t| spare.is_some() && t["stage"].as_u64() == spare && t["worker"] == w)
        };
        tasks
            .iter()
            .filter(|t| t["stage"] == stage && t["state"] == "running" && t["standby"] != true)
            .filter_map(|t| t["worker"].as_str())
            .find(|w| !spared(w))
            .map(str::to_string)
    });
    let index = c.worker_index(&victim).expect("the victim's process");
    c.kill_worker(index);
    wait_for("the job's tasks to be placed again", LONG, || {
        let tasks = c.tasks(id);
        let moved = tasks.iter().all(|t| t["worker"] != victim.as_str());
        let running = tasks
            .iter()
            .filter(|t| t["standby"] != true)
            .all(|t| t["state"] == "running" || t["state"] == "finished");
        (moved && running).then_some(())
    });
    victim
}

#[test]
fn a_first_stage_filter_runs_in_the_source_through_a_rescale_and_worker_kills() {
    let mut c = Cluster::start(4, 2.0);
    let signs = Signs::generate(12_000, 41);
    signs.write(&c.dir.path().join("signs.csv"));
    c.ok(&["put", "signs.csv", "signs.csv"]);
    let want = signs.app1();
    let lines = std::fs::read_to_string(c.dir.path().join("signs.csv"))
        .expect("the input")
        .lines()
        .count() as u64;
    assert!(
        want.len() < 12_000 / 2,
        "a selective filter: {}",
        want.len()
    );
    c.file("job.toml", &job(1500.0));
    let id = c.submit("job.toml");
    wait_for("the source to read 1,000 lines", LONG, || {
        (source_tuples(&c, &id) >= 1000).then_some(())
    });

    // Grow the filter stage: the source switches maps at a point counted in its outputs.
    c.ok(&["scale", &id, "1", "3"]);
    wait_for("stage 1 to run 3 tasks, its rescale done", LONG, || {
        let j = c.json(&["job", &id, "--json"]);
        let done = j["scaling"]
            .as_array()?
            .iter()
            .any(|s| s["outcome"] == "done" && s["to"] == 3);
        (j["stage_tasks"][0].as_u64()? == 3 && done).then_some(())
    });

    // A first-stage task's worker dies (not the source's): its task regenerates its input from the file
    // through the source's filter, routed by the maps in force at each output.
    let read = source_tuples(&c, &id);
    wait_for("the source to read on", LONG, || {
        (source_tuples(&c, &id) >= read + 500).then_some(())
    });
    kill_worker_of_stage(&mut c, &id, 1, Some(0));
    // Then the source's own worker: the restarted source catches up by lines read.
    let read = source_tuples(&c, &id);
    wait_for("the source to read on again", LONG, || {
        (source_tuples(&c, &id) >= read + 500).then_some(())
    });
    kill_worker_of_stage(&mut c, &id, 0, None);

    c.ok(&["set-rate", &id, "0"]);
    let j = c.wait_job(&id, LONG);
    assert_eq!(j["status"], "succeeded", "{j}\n{}", c.diagnose());
    assert_same("app1", &sorted_lines(&c.store_file("out/app1.txt")), &want);
    let regenerated = c
        .worker_logs()
        .lines()
        .any(|l| l.contains("recovered from the source file") && l.contains(&id));
    assert!(regenerated, "no first-stage task regenerated its input");
    assert!(j["recoveries"].as_u64().unwrap_or(0) >= 2, "{j}");
    // The job read every line (the header too); its source sent only those the filter keeps.
    assert_eq!(j["source_tuples"].as_u64(), Some(lines), "{j}");
    let source = c
        .tasks(&id)
        .into_iter()
        .find(|t| t["stage"] == 0)
        .expect("the source task");
    assert_eq!(
        source["tuples_out"].as_u64(),
        Some(want.len() as u64),
        "{source}"
    );
    assert_eq!(source["tuples_in"].as_u64(), Some(lines), "{source}");
}
