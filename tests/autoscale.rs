//! Autoscaling on a cluster of real processes: a stage follows its input rate up and back
//! down while the job runs (`set-rate` moves the rate), its key groups move live, and the
//! output equals an independent reference exactly.

mod common;
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// The job file: a rate-limited source, an autoscaled stateless stage, a keyed count that
/// does not autoscale.
fn job(rate: f64) -> String {
    format!(
        r#"name = "follows"
delivery = "exactly-once"
[source]
path = "in.txt"
rate = {rate}
[sink]
path = "out.txt"
[autoscale]
low = 50
high = 150
max_tasks = 4
cooldown_s = 1
scale_down_grace_s = 2
[[stages]]
tasks = 1
op = "identity"
[[stages]]
tasks = 2
op = "count-by"
args = ["1"]
autoscale = false
"#
    )
}

/// Lines `k<i % 7>,<i>` and the running counts count-by emits for them.
fn data(n: usize) -> (String, Vec<String>) {
    let mut counts = [0u64; 7];
    let mut want = Vec::new();
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!("k{},{i}\n", i % 7));
        counts[i % 7] += 1;
        want.push(format!("k{},{}", i % 7, counts[i % 7]));
    }
    want.sort();
    (text, want)
}

fn stage_tasks(c: &Cluster, id: &str) -> Option<u64> {
    c.json(&["job", id, "--json"])["stage_tasks"][0].as_u64()
}

fn scaling(c: &Cluster, id: &str) -> Vec<Value> {
    c.json(&["job", id, "--json"])["scaling"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Puts `input`, submits `job` and returns its id once `tuples` reached the sink.
fn running(c: &Cluster, input: &str, job: &str, tuples: u64) -> String {
    c.file("in.txt", input);
    c.ok(&["put", "in.txt", "in.txt"]);
    c.file("job.toml", job);
    let id = c.submit("job.toml");
    wait_for("the job's output to start", Duration::from_secs(30), || {
        (c.json(&["job", &id, "--json"])["sink_tuples"].as_u64()? >= tuples).then_some(())
    });
    id
}

/// Rescales stage `stage` (its `stage_tasks` entry `index`) to `tasks`, asking again until
/// it is done: right after a kill the leader may refuse (a task of the stage restarting).
fn rescaled(c: &Cluster, id: &str, stage: u32, index: usize, tasks: u64) {
    let (s, n) = (stage.to_string(), tasks.to_string());
    wait_for("the rescale", Duration::from_secs(60), || {
        let out = c.run(&["scale", id, &s, &n]);
        let now = c.json(&["job", id, "--json"])["stage_tasks"][index].as_u64();
        (out.status.success() && now == Some(tasks)).then_some(())
    });
}

/// Lets the job finish unthrottled, checks its output is exactly `want`, and returns how
/// many rescales were done.
fn finished_exactly(c: &Cluster, id: &str, want: &[String]) -> usize {
    let (out, done) = finished(c, id, want);
    assert_keys_in_order(&out);
    done
}

/// Lets the job finish unthrottled, checks its output holds exactly `want` (in any order),
/// and returns the output and how many rescales were done.
fn finished(c: &Cluster, id: &str, want: &[String]) -> (String, usize) {
    c.ok(&["set-rate", id, "0"]);
    let j = c.wait_job(id, Duration::from_secs(120));
    assert_eq!(j["status"], "succeeded", "{j}");
    let out = c.store_file("out.txt");
    assert_same("counts", &sorted_lines(&out), want);
    let done = scaling(c, id)
        .iter()
        .filter(|s| s["outcome"] == "done")
        .count();
    (out, done)
}

#[test]
fn a_stateless_stage_follows_its_rate_up_and_down_exactly_once() {
    let c = Cluster::start(3, 5.0);
    let (input, want) = data(8000);
    c.file("in.txt", &input);
    c.ok(&["put", "in.txt", "in.txt"]);
    c.file("job.toml", &job(100.0));
    let id = c.submit("job.toml");
    wait_for("the source to start", Duration::from_secs(30), || {
        (c.json(&["job", &id, "--json"])["source_tuples"].as_u64()? >= 50).then_some(())
    });
    assert_eq!(stage_tasks(&c, &id), Some(1), "{}", c.diagnose());
    let standby = c
        .tasks(&id)
        .iter()
        .filter(|t| t["stage"] == 1 && t["standby"] == true)
        .count();
    assert_eq!(standby, 3, "three of stage 1's four tasks stand by");

    // Six times the rate one task should carry: one decision, straight to the most it may run.
    c.ok(&["set-rate", &id, "600"]);
    // The stage shows its 4 tasks once they are placed; its rescale is done once every
    // upstream task switched to the new map, a moment later: wait for both.
    wait_for(
        "stage 1 to grow to 4 tasks, its rescale done",
        Duration::from_secs(30),
        || {
            let done = scaling(&c, &id)
                .iter()
                .any(|s| s["outcome"] == "done" && s["to"] == 4);
            (stage_tasks(&c, &id)? == 4 && done).then_some(())
        },
    );
    let grows: Vec<Value> = scaling(&c, &id)
        .into_iter()
        .filter(|s| s["outcome"] == "done" && s["to"] == 4)
        .collect();
    assert_eq!(grows.len(), 1, "one decision: {:?}", scaling(&c, &id));
    assert_eq!(grows[0]["from"], 1);
    assert!(
        grows[0]["reason"].as_str().unwrap_or("").contains("HW"),
        "{}",
        grows[0]
    );
    assert!(grows[0]["took_ms"].as_u64().is_some());

    // Well under the low watermark: back to one task after the grace period.
    c.ok(&["set-rate", &id, "40"]);
    wait_for(
        "stage 1 to shrink to 1 task",
        Duration::from_secs(40),
        || (stage_tasks(&c, &id)? == 1).then_some(()),
    );
    // A rescale the job's core refuses says why and exits non-zero; one past the stage's
    // max_tasks never reaches it.
    let out = c.run(&["scale", &id, "2", "2"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("refused") && said.contains("already runs 2 tasks"),
        "{said}"
    );
    let out = c.run(&["scale", &id, "1", "5"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 to 4 tasks"));
    c.ok(&["set-rate", &id, "0"]);
    let j = c.wait_job(&id, Duration::from_secs(120));
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_same("counts", &sorted_lines(&c.store_file("out.txt")), &want);
    let done: Vec<(u64, u64)> = scaling(&c, &id)
        .iter()
        .filter(|s| s["outcome"] == "done")
        .map(|s| {
            (
                s["from"].as_u64().unwrap_or(0),
                s["to"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert!(done.len() <= 4, "few decisions: {done:?}");
    assert_eq!(done.last().map(|d| d.1), Some(1), "{done:?}");
    // An ended job says so, whatever count is asked (not that the count is out of range).
    let out = c.run(&["scale", &id, "1", "99"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("has ended"), "{said}");
}

/// Each key's running counts appear in the output in their order, through every move of
/// its group (a reader of a running count takes a key's last line as its count).
fn assert_keys_in_order(out: &str) {
    let mut last: std::collections::BTreeMap<&str, (u64, usize)> = Default::default();
    for (i, l) in out.lines().enumerate() {
        let (key, n) = l
            .rsplit_once(',')
            .unwrap_or_else(|| panic!("not key,count: {l:?}"));
        let n: u64 = n.parse().unwrap_or_else(|_| panic!("not key,count: {l:?}"));
        if let Some((before, at)) = last.insert(key, (n, i + 1)) {
            assert!(
                n > before,
                "{key}'s count went from {before} (line {at}) to {n} (line {})",
                i + 1
            );
        }
    }
}

/// A job whose keyed count moves its keys, exactly-once, rescaled by hand (its autoscale
/// watermarks are out of reach: they only set `max_tasks` to 3): identity (one task) →
/// count-by (`tasks`), or with `behind_source` the count right behind the source.
fn counting_job(rate: f64, behind_source: bool, tasks: u32) -> String {
    let identity = if behind_source {
        ""
    } else {
        "[[stages]]\ntasks = 1\nop = \"identity\"\n"
    };
    format!(
        r#"name = "moves-state"
delivery = "exactly-once"
[source]
path = "in.txt"
rate = {rate}
[sink]
path = "out.txt"
{identity}[[stages]]
tasks = {tasks}
op = "count-by"
args = ["1"]
[stages.autoscale]
low = 1
high = 1000000
max_tasks = 3
"#
    )
}

#[test]
fn a_keyed_count_moves_its_keys_with_their_state_through_a_worker_kill() {
    let mut c = Cluster::start(4, 5.0);
    let (input, want) = data(6000);
    let id = running(&c, &input, &counting_job(300.0, false, 1), 200);
    let counted = |c: &Cluster| c.json(&["job", &id, "--json"])["stage_tasks"][1].as_u64();
    // Grow the count: two new tasks take key groups over, with their running counts.
    c.ok(&["scale", &id, "2", "3"]);
    wait_for(
        "the count to run on 3 tasks",
        Duration::from_secs(30),
        || (counted(&c)? == 3).then_some(()),
    );
    // SIGKILL a worker running one of the count's tasks (not the one feeding it): its tasks
    // restart from their logs, taken-over state included.
    let tasks = c.tasks(&id);
    let feeder = tasks
        .iter()
        .find(|t| t["stage"] == 1 && t["standby"] == false)
        .and_then(|t| t["worker"].as_str())
        .unwrap_or_default()
        .to_string();
    let victim = tasks
        .iter()
        .filter(|t| t["stage"] == 2 && t["task"] != 0)
        .filter_map(|t| t["worker"].as_str())
        .find(|w| *w != feeder)
        .and_then(|w| c.worker_index(w));
    let victim = victim
        .unwrap_or_else(|| panic!("no worker runs a count task but not its feeder: {tasks:?}"));
    c.kill_worker(victim);
    // And shrink it back: the groups go home, their state with them.
    rescaled(&c, &id, 2, 1, 1);
    let done = finished_exactly(&c, &id, &want);
    assert!(done >= 2, "{:?}", scaling(&c, &id));
}

/// An executable keyed count: keyby.py (one task) → count.py (from one task; its stage
/// autoscales with `autoscale`, a `[stages.autoscale]` body).
fn exec_counting_job(delivery: &str, rate: f64, ops: &std::path::Path, autoscale: &str) -> String {
    exec_counting_job_with(delivery, rate, ops, "count.py", autoscale)
}

/// [`exec_counting_job`] with the counting operator `count`, a file of `ops`.
fn exec_counting_job_with(
    delivery: &str,
    rate: f64,
    ops: &std::path::Path,
    count: &str,
    autoscale: &str,
) -> String {
    let op = |n: &str| ops.join(n).display().to_string();
    format!(
        r#"name = "moves-exec-state"
delivery = "{delivery}"
[source]
path = "in.txt"
rate = {rate}
[sink]
path = "out.txt"
[[stages]]
tasks = 1
exec = "{keyby}"
args = ["1"]
[[stages]]
tasks = 1
exec = "{count}"
args = ["1"]
[stages.autoscale]
{autoscale}
"#,
        keyby = op("keyby.py"),
        count = op(count),
    )
}

/// Kills the operator process of a running task of job `id` that `which` picks (with
/// `kill-task`), and waits until the leader counted the failure. A task that rebuilds moved
/// keys' state drains its process and starts a new one, so the pid listed may be on its way
/// out by the time the kill arrives: the leader then refuses it, or its worker ignores it,
/// finds no such process, or signals a process that had already exited 0 (drained, not yet
/// reaped), and the task lists its new process at the same attempt; either way its new
/// process is killed (a full suite on a loaded machine once waited 30 s for a kill that had
/// found its process reaped). A kill that lands and is never counted fails with what the
/// leader and the workers said.
fn kill_process(c: &Cluster, id: &str, which: impl Fn(&Value) -> bool) {
    wait_for("a kill the leader counts", Duration::from_secs(90), || {
        let victim = c
            .tasks(id)
            .into_iter()
            .find(|t| which(t) && t["state"] == "running" && t["pid"].is_u64())?;
        let pid = victim["pid"].as_u64().unwrap_or_default();
        let worker = victim["worker"].as_str().unwrap_or_default().to_string();
        let out = c.run(&["kill-task", &worker, &pid.to_string()]);
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            assert!(
                err.contains("runs no operator process with pid"),
                "kill-task {worker} {pid} failed: {err}"
            );
            return None;
        }
        let ignored = format!("not a running operator of this worker; ignored pid={pid}");
        // The process was reaped between the listing and the kill: the signal found none.
        let missed = format!("kill-task failed pid={pid}");
        let zombie = format!("already exited (not yet reaped); nothing to kill pid={pid}");
        let same_task = |t: &Value| t["stage"] == victim["stage"] && t["task"] == victim["task"];
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if c.json(&["job", id, "--json"])["failures"].as_u64() >= Some(1) {
                return Some(());
            }
            let logs = c.worker_logs();
            if [&ignored, &missed, &zombie]
                .iter()
                .any(|m| logs.contains(m.as_str()))
            {
                return None;
            }
            // Same attempt, another process: the task replaced the one signalled itself.
            let replaced = c.tasks(id).iter().any(|t| {
                same_task(t)
                    && t["attempt"] == victim["attempt"]
                    && t["pid"].as_u64().is_some_and(|p| p != 0 && p != pid)
            });
            if replaced {
                return None;
            }
            if Instant::now() > deadline {
                let said: Vec<&str> = logs
                    .lines()
                    .filter(|l| l.contains(&format!("pid={pid}")) || l.contains("task failed"))
                    .collect();
                panic!(
                    "the kill of {worker}'s pid {pid} ({victim}) was never counted after 30 s;\n\
                     job: {}\ntasks: {:?}\nworkers said: {said:#?}",
                    c.json(&["job", id, "--json"]),
                    c.tasks(id)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

/// Issue 17: a stage running an executable that keeps a running count per key grows and
/// shrinks while the job runs; its processes are restarted with the moved keys' history, and
/// an operator process killed right after the move (the new owner of moved keys) restarts
/// with it too. Every running count is exact.
#[test]
fn an_executable_keyed_count_moves_its_keys_with_their_state_through_a_process_kill() {
    let c = Cluster::start(3, 5.0);
    let ops = install_ops(c.dir.path());
    let (input, want) = data(4000);
    let manual = "low = 1\nhigh = 1000000\nmax_tasks = 3";
    let job = exec_counting_job("exactly-once", 300.0, &ops, manual);
    let id = running(&c, &input, &job, 200);
    let counted = |c: &Cluster| c.json(&["job", &id, "--json"])["stage_tasks"][1].as_u64();
    c.ok(&["scale", &id, "2", "3"]);
    wait_for(
        "the count to run on 3 tasks",
        Duration::from_secs(30),
        || (counted(&c)? == 3).then_some(()),
    );
    // Kill the process of a task that just gained key groups: it restarts from its log and
    // takes the groups' history again.
    kill_process(&c, &id, |t| t["stage"] == 2 && t["task"] != 0);
    wait_for(
        "the count to shrink back to 1 task",
        Duration::from_secs(60),
        || {
            let out = c.run(&["scale", &id, "2", "1"]);
            (out.status.success() && counted(&c) == Some(1)).then_some(())
        },
    );
    let (_, done) = finished(&c, &id, &want);
    assert!(done >= 2, "{:?}", scaling(&c, &id));
}

/// A running count per key (the line's key) that answers in bursts of seven, each burst
/// written in reverse; what it holds at the end of its input it writes then. Deterministic,
/// its state per key: what rescaling asks of an executable.
const REVERSED_BURSTS: &str = r#"#!/usr/bin/env python3
import sys
counts, held = {}, []
def flush():
    sys.stdout.write("".join(reversed(held)))
    sys.stdout.flush()
    held.clear()
for line in sys.stdin:
    key = line.rstrip("\n").partition("\t")[0]
    counts[key] = counts.get(key, 0) + 1
    held.append(f"{key}\t{key},{counts[key]}\n")
    if len(held) == 7:
        flush()
flush()
"#;

/// Hostile probe 16: an executable that keeps state and writes its answers in another order
/// than its input, across the end of a rebuilt history. The history's answers it still held
/// came out after live ones, and dropping the history's output by count dropped live answers
/// and let history answers through twice (counts lost and doubled, the job "succeeded").
/// Rescaled up and back down, every running count is exact.
#[test]
fn a_stateful_executable_answering_out_of_order_keeps_exact_counts_through_rescales() {
    let c = Cluster::start(3, 5.0);
    let ops = install_ops(c.dir.path());
    write_exec(&ops.join("reversed_bursts.py"), REVERSED_BURSTS);
    let (input, want) = data(4000);
    let manual = "low = 1\nhigh = 1000000\nmax_tasks = 3";
    let job = exec_counting_job_with("exactly-once", 300.0, &ops, "reversed_bursts.py", manual);
    let id = running(&c, &input, &job, 200);
    let out = |c: &Cluster| c.json(&["job", &id, "--json"])["sink_tuples"].as_u64();
    for tasks in [3, 1] {
        rescaled(&c, &id, 2, 1, tasks);
        let now = out(&c).unwrap_or(0);
        wait_for("output after the rescale", Duration::from_secs(60), || {
            (out(&c)? >= now + 150).then_some(())
        });
    }
    // Its answers come out of order by design: the counts, not their order, are checked.
    let (_, done) = finished(&c, &id, &want);
    assert_eq!(done, 2, "{:?}", scaling(&c, &id));
}

/// An at-least-once keyed count that autoscales: identity (one task) → count-by.
fn at_least_once_counting_job(rate: f64) -> String {
    format!(
        r#"name = "moves-its-state"
delivery = "at-least-once"
[source]
path = "in.txt"
rate = {rate}
[sink]
path = "out.txt"
[autoscale]
low = 60
high = 200
max_tasks = 3
cooldown_s = 1
scale_down_grace_s = 2
[[stages]]
tasks = 1
op = "identity"
autoscale = false
[[stages]]
tasks = 1
op = "count-by"
args = ["1"]
"#
    )
}

/// Issue 17: under at-least-once no log holds a moved key's history, but a built-in hands
/// the moved keys' state to their new task: a keyed count that autoscales follows the rate up
/// and back down live, with no restart, and the output is every running count of the
/// reference, each once.
#[test]
fn an_at_least_once_keyed_count_moves_its_state_live_as_it_follows_its_rate() {
    let c = Cluster::start(3, 5.0);
    let (input, want) = data(6000);
    c.file("in.txt", &input);
    c.ok(&["put", "in.txt", "in.txt"]);
    c.file("job.toml", &at_least_once_counting_job(100.0));
    let id = c.submit("job.toml");
    let counted = |c: &Cluster| c.json(&["job", &id, "--json"])["stage_tasks"][1].as_u64();
    wait_for("the source to start", Duration::from_secs(30), || {
        (c.json(&["job", &id, "--json"])["source_tuples"].as_u64()? >= 50).then_some(())
    });
    c.ok(&["set-rate", &id, "500"]);
    wait_for("the count to grow", Duration::from_secs(40), || {
        (counted(&c)? == 3).then_some(())
    });
    c.ok(&["set-rate", &id, "30"]);
    wait_for("the count to shrink back", Duration::from_secs(60), || {
        (counted(&c)? == 1).then_some(())
    });
    c.ok(&["set-rate", &id, "0"]);
    let j = c.wait_job(&id, Duration::from_secs(120));
    assert_eq!(j["status"], "succeeded", "{j}");
    let out = sorted_lines(&c.store_file("out.txt"));
    let got: std::collections::BTreeSet<String> = out.iter().cloned().collect();
    let lost: Vec<&String> = want.iter().filter(|l| !got.contains(*l)).collect();
    assert!(
        lost.is_empty(),
        "{} lines lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    // The counts' state moved with their keys: nothing restarted, so nothing repeated.
    assert_eq!(j["recoveries"], 0, "{j}");
    assert_eq!(out.len(), want.len(), "no line repeats without a failure");
    let done: Vec<(u64, u64)> = scaling(&c, &id)
        .iter()
        .filter(|s| s["outcome"] == "done")
        .map(|s| {
            (
                s["from"].as_u64().unwrap_or(0),
                s["to"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    // Up in one decision, back down in one (unthrottled at the end, it may grow again).
    assert_eq!(done.get(..2), Some(&[(1, 3), (3, 1)][..]), "{done:?}");
    assert!(done.len() <= 4, "few decisions: {done:?}");
}

/// Issue 17: under at-least-once an autoscaled stage whose executable keeps state logs its
/// input, so its moved keys are rebuilt by their new task live, as under exactly-once: the
/// count follows its rate up and back down with no task restarted (before, the pipeline
/// restarted from the source at each move). A process killed afterwards restarts the
/// pipeline (at-least-once's recovery); the count grows again in the new epoch and the worker
/// of a task that just gained groups is SIGKILLed; no count is lost or made up.
#[test]
fn an_at_least_once_executable_count_follows_its_rate_live_and_loses_nothing_to_a_kill() {
    let mut c = Cluster::start(3, 5.0);
    let ops = install_ops(c.dir.path());
    let (input, want) = data(12000);
    let follows = "low = 60\nhigh = 200\nmax_tasks = 3\ncooldown_s = 1\nscale_down_grace_s = 2";
    let job = exec_counting_job("at-least-once", 100.0, &ops, follows);
    let id = running(&c, &input, &job, 50);
    let counted = |c: &Cluster| c.json(&["job", &id, "--json"])["stage_tasks"][1].as_u64();
    let restarted = |c: &Cluster| {
        c.tasks(&id)
            .iter()
            .filter(|t| t["attempt"].as_u64() != Some(0))
            .count()
    };
    c.ok(&["set-rate", &id, "500"]);
    wait_for("the count to grow", Duration::from_secs(40), || {
        (counted(&c)? == 3).then_some(())
    });
    assert_eq!(restarted(&c), 0, "no task restarted to grow");
    c.ok(&["set-rate", &id, "30"]);
    wait_for("the count to shrink back", Duration::from_secs(60), || {
        (counted(&c)? == 1).then_some(())
    });
    let j = c.json(&["job", &id, "--json"]);
    assert_eq!(restarted(&c), 0, "no task restarted to shrink: {j}");
    assert_eq!(j["recoveries"], 0, "{j}");
    // Kill the count's process: the pipeline restarts in a new epoch, whose count task must
    // not take its earlier epochs' log for its input.
    kill_process(&c, &id, |t| t["stage"] == 2);
    // Grow again in the new epoch, and SIGKILL the worker of a task that just gained groups.
    c.ok(&["set-rate", &id, "500"]);
    let gained = wait_for("the count to grow again", Duration::from_secs(60), || {
        c.tasks(&id).into_iter().find(|t| {
            t["stage"] == 2 && t["task"] != 0 && t["state"] == "running" && t["attempt"] != 0
        })
    });
    let worker = gained["worker"].as_str().unwrap_or_default().to_string();
    let victim = c
        .worker_index(&worker)
        .unwrap_or_else(|| panic!("no process registered as {worker}"));
    c.kill_worker(victim);
    c.ok(&["set-rate", &id, "0"]);
    let j = c.wait_job(&id, Duration::from_secs(120));
    assert_eq!(j["status"], "succeeded", "{j}");
    let out = sorted_lines(&c.store_file("out.txt"));
    let got: std::collections::BTreeSet<&String> = out.iter().collect();
    let known: std::collections::BTreeSet<&String> = want.iter().collect();
    let lost: Vec<&String> = want.iter().filter(|l| !got.contains(l)).collect();
    let made_up: Vec<&String> = out.iter().filter(|l| !known.contains(l)).collect();
    assert!(
        lost.is_empty(),
        "{} lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(
        made_up.is_empty(),
        "{} counts the reference does not have, e.g. {:?}",
        made_up.len(),
        &made_up[..made_up.len().min(5)]
    );
    let done = scaling(&c, &id)
        .iter()
        .filter(|s| s["outcome"] == "done")
        .count();
    assert!(done >= 2, "{:?}", scaling(&c, &id));
}

/// A restarted source does not know how far its predecessor routed, and a first-stage task
/// restarted with it keeps no log of what it took: the source's durable reach
/// (`store::reach`) says, so the first stage rescales after the source's worker dies too. The
/// leader refused it before.
#[test]
fn the_first_stage_rescales_after_the_source_was_restarted() {
    let mut c = Cluster::start(3, 5.0);
    let (input, want) = data(6000);
    let id = running(&c, &input, &counting_job(300.0, true, 2), 300);
    let source = |c: &Cluster| {
        c.tasks(&id)
            .into_iter()
            .find(|t| t["stage"] == 0 && t["state"] == "running")
    };
    let before = source(&c).expect("the source runs");
    let worker = before["worker"].as_str().unwrap_or_default().to_string();
    let victim = c
        .worker_index(&worker)
        .unwrap_or_else(|| panic!("no process registered as {worker}"));
    c.kill_worker(victim);
    wait_for(
        "the source to run a restarted attempt",
        Duration::from_secs(60),
        || {
            let t = source(&c)?;
            (t["worker"] != worker.as_str() && t["attempt"].as_u64()? > 0).then_some(())
        },
    );
    rescaled(&c, &id, 1, 0, 3);
    rescaled(&c, &id, 1, 0, 1);
    let done = finished_exactly(&c, &id, &want);
    assert!(done >= 2, "{:?}", scaling(&c, &id));
}
