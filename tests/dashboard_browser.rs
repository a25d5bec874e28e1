//! The dashboard in a real browser: headless Chromium opens the leader's page while a job's
//! middle stage is a slow operator, lets the page poll the API (a virtual-time budget runs its
//! timers and waits for its fetches), and dumps the DOM it built: that stage's box, and only
//! it, is marked as the bottleneck. Its first stage has a task standing by and its last was
//! rescaled from one task to two: each stage's box counts the tasks owning key groups as the
//! API does, and the rescale is listed under the graph. A screenshot of the same moment is saved in the test's output directory
//! (docs/dashboard.png is one). Without Chromium the test skips, except under `CI=true`.

mod common;

use common::*;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The browser to drive: `RAINSTORM_CHROMIUM`, else the first of the usual names on `PATH`.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RAINSTORM_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
        .find(|p| p.is_file())
}

/// A browser run in its own process group: dropping it kills the whole group (the browser,
/// its zygote, renderer and GPU processes), whether the test passed or panicked.
struct Browser {
    child: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: kill(2) with the negated id of a process group this test created.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Opens `url` headless for `budget_ms` of virtual time, takes a screenshot to `png`, and
/// returns the DOM as the page's script left it. `profile` is a directory of this test only
/// (its path also finds the browser's processes).
fn render(bin: &Path, url: &str, profile: &Path, png: &Path, budget_ms: u32) -> String {
    let log = std::fs::File::create(profile.with_extension("log")).unwrap();
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        // The test may run as root (CI containers), where Chromium's sandbox cannot start.
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        "--window-size=1280,900",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(format!("--virtual-time-budget={budget_ms}"))
    .arg(format!("--screenshot={}", png.display()))
    .arg("--dump-dom")
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(log)
    .process_group(0);
    let mut browser = Browser {
        child: cmd.spawn().unwrap(),
    };
    let mut out = browser.child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut dom = String::new();
        out.read_to_string(&mut dom).map(|_| dom)
    });
    let status = wait_for("the browser to exit", Duration::from_secs(60), || {
        browser.child.try_wait().unwrap()
    });
    let dom = reader.join().unwrap().unwrap();
    assert!(
        status.success(),
        "chromium: {status}; log {}",
        profile.with_extension("log").display()
    );
    dom
}

/// The value of attribute `name` in the inside of tag `tag`, if it has one.
fn attr(tag: &str, name: &str) -> Option<String> {
    tag.split(&format!(" {name}=\""))
        .nth(1)
        .and_then(|v| v.split('"').next())
        .map(str::to_string)
}

/// Every element of `dom` carrying `data-stage`: that value and attribute `other`'s (empty
/// when absent), in document order.
fn stage_elements(dom: &str, other: &str) -> Vec<(String, String)> {
    dom.split('<')
        .filter_map(|t| t.split_once('>').map(|(tag, _)| tag))
        .filter_map(|tag| {
            let stage = attr(tag, "data-stage")?;
            Some((stage, attr(tag, other).unwrap_or_default()))
        })
        .collect()
}

/// The part of the DOM inside job `id`'s graph (up to the next job's graph).
fn graph_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("data-job=\"{id}\""))
        .unwrap_or_else(|| panic!("no graph for job {id} in the page:\n{dom}"));
    let rest = &dom[at..];
    let end = rest[1..].find("data-job=\"").map_or(rest.len(), |e| e + 1);
    &rest[..end]
}

#[test]
fn the_dashboard_marks_the_slow_middle_stage_as_the_bottleneck() {
    let Some(bin) = chromium() else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "chromium not found, and CI installs it (.ci/run)"
        );
        eprintln!("skipped: chromium not found (apt-get install chromium)");
        return;
    };
    let c = Cluster::start_small_windows(2);

    // One job that ended, for the compact list.
    c.file("few.txt", "a\nb\nc\n");
    c.ok(&["put", "few.txt", "few.txt"]);
    let done = job_toml(
        "done",
        "few.txt",
        "out/done.txt",
        0.0,
        "at-least-once",
        &[(1, "identity", &[])],
    );
    c.file("done.toml", &done);
    let done = c.submit("done.toml");
    assert_eq!(
        c.wait_job(&done, Duration::from_secs(60))["status"],
        "succeeded"
    );

    // fast → slow (20 ms a line: 50 lines/s at most) → fast, fed at 200 lines/s: the middle
    // stage is saturated, the first waits on it, the last waits for it.
    let slow = write_exec(&c.dir.path().join("slow.py"), &slow_echo(0.02));
    let lines: Vec<String> = (0..20_000).map(|i| format!("row {i}")).collect();
    c.file("in.txt", &(lines.join("\n") + "\n"));
    c.ok(&["put", "in.txt", "in.txt"]);
    // The first and last stages may run two tasks each (one stands by), and only a request
    // rescales them; the last is rescaled to two (it waits for the slow stage either way).
    let two = "[stages.autoscale]\nlow = 0\nhigh = 1e9\nmax_tasks = 2\n";
    let job = format!(
        "name = \"slow middle\"\ndelivery = \"at-least-once\"\n\
         [source]\npath = \"in.txt\"\nrate = 200\n[sink]\npath = \"out/slow.txt\"\n\
         [[stages]]\ntasks = 1\nop = \"identity\"\n{two}\
         [[stages]]\ntasks = 1\nexec = {:?}\n\
         [[stages]]\ntasks = 1\nop = \"identity\"\n{two}",
        slow.to_str().unwrap()
    );
    c.file("slow.toml", &job);
    let id = c.submit("slow.toml");
    wait_for("every task to run", Duration::from_secs(30), || {
        let tasks = c.tasks(&id);
        (tasks.len() == 7 && tasks.iter().all(|t| t["state"] == "running")).then_some(())
    });
    c.ok(&["scale", &id, "3", "2"]);
    let rescale = wait_for("the rescale to end", Duration::from_secs(30), || {
        let j = c.json(&["job", &id, "--json"]);
        let s = j["scaling"].as_array()?.last()?.clone();
        (s["outcome"] != "in-progress").then_some(s)
    });
    assert_eq!(rescale["outcome"], "done", "{rescale}");

    // The meters, as the API reports them, agree before the page is looked at.
    let share = |t: &serde_json::Value, k: &str| t[k].as_f64().unwrap_or(0.0);
    wait_for(
        "the middle stage to be busy and the others not",
        Duration::from_secs(60),
        || {
            let tasks = c.tasks(&id);
            let of = |s: u64| tasks.iter().find(|t| t["stage"] == s).cloned();
            let (a, b, z) = (of(1)?, of(2)?, of(3)?);
            let running = [&a, &b, &z].iter().all(|t| t["state"] == "running");
            (running
                && share(&a, "uptime_s") > 3.0
                && share(&b, "busy") > 0.8
                && share(&a, "busy") < 0.2
                && share(&z, "busy") < 0.2)
                .then_some(())
        },
    );

    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-test");
    std::fs::create_dir_all(&out).unwrap();
    let png = out.join("dashboard.png");
    let _ = std::fs::remove_file(&png);
    let profile = c.dir.path().join("chromium-profile");
    let url = format!("{}/#token={}", c.url, c.token);
    let want: Vec<(String, String)> = (0..=4)
        .map(|n| (n.to_string(), (n == 2).to_string()))
        .collect();
    // The page reads the meters as they are when it loads; an executable's busy share dips
    // while its stdin pipe has room (see README, "Which stage is the bottleneck"), so the
    // page is looked at again, within a deadline, until it shows what the API shows.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut looks = 0;
    let (dom, stages) = loop {
        looks += 1;
        let t0 = Instant::now();
        let dom = render(&bin, &url, &profile, &png, 4000);
        eprintln!(
            "look {looks}: chromium rendered the page in {:?}; screenshot: {}",
            t0.elapsed(),
            png.display()
        );
        let stages = stage_elements(graph_of(&dom, &id), "data-bottleneck");
        if stages == want || Instant::now() > deadline {
            break (dom, stages);
        }
    };
    assert_eq!(
        stages,
        want,
        "source, 3 stages, sink; only stage 2 marked. Tasks: {:?}\nDOM:\n{dom}",
        c.tasks(&id)
    );
    assert!(dom.contains("bottleneck"), "{dom}");
    // Each stage's box counts the tasks owning key groups as the API does (the first has one
    // and one standing by; the last, rescaled, two).
    let api = c.json(&["job", &id, "--json"])["stage_tasks"].clone();
    let counts: Vec<(String, String)> = stage_elements(graph_of(&dom, &id), "data-stage-tasks")
        .into_iter()
        .filter(|(_, n)| !n.is_empty())
        .collect();
    let want: Vec<(String, String)> = (1..=3)
        .map(|n| (n.to_string(), api[n - 1].to_string()))
        .collect();
    assert_eq!(counts, want, "API stage_tasks {api}");
    assert_eq!(api, serde_json::json!([1, 1, 2]));
    assert!(dom.contains("1 task, +1 standby"), "{dom}");
    // The rescale is listed under the graph.
    assert!(
        dom.contains("stage 3 · 1 → 2 tasks · done in "),
        "no rescale line in the page:\n{dom}"
    );
    // The ended job is listed, compactly, and has no graph.
    assert!(dom.contains(&done) && !dom.contains(&format!("data-job=\"{done}\"")));
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot {} has {size} bytes",
        png.display()
    );

    // Every browser process is gone (the guard killed its group).
    let needle = profile.display().to_string();
    wait_for(
        "the browser's processes to end",
        Duration::from_secs(10),
        || processes_matching(&needle).is_empty().then_some(()),
    );

    c.ok(&["cancel", &id]);
    assert_eq!(
        c.wait_job(&id, Duration::from_secs(20))["status"],
        "cancelled"
    );
}
