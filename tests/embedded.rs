//! `rainstorm run`: the embedded cluster, driven exactly as a user would.

mod common;
use common::*;
use std::process::Command;

/// `rainstorm run JOB` started in `dir`, its stdout and stderr piped to the test.
fn spawn_run(dir: &std::path::Path, job: &str) -> std::process::Child {
    Command::new(bin())
        .args(["run", job])
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn run_in(dir: &std::path::Path, job: &str) -> std::process::Output {
    Command::new(bin())
        .args(["run", job, "--workers", "3"])
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn run_app1_builtins_prints_exactly_the_output_and_writes_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let signs = Signs::generate(5000, 1);
    signs.write(&dir.path().join("signs.csv"));
    let job = job_toml(
        "app1",
        "signs.csv",
        "out/deep/app1.txt",
        0.0,
        "exactly-once",
        &[
            (3, "filter", &["Punched Telespar"]),
            (3, "select", &["3-5"]),
        ],
    );
    std::fs::write(dir.path().join("app1.toml"), job).unwrap();
    let out = run_in(dir.path(), "app1.toml");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_same("stdout", &sorted_lines(&stdout), &signs.app1());
    let sink = std::fs::read_to_string(dir.path().join("out/deep/app1.txt")).unwrap();
    assert_same("sink file", &sorted_lines(&sink), &signs.app1());
    // The job's counters are final when it ends: the source's too, though it serves on
    // until the job ends (it reports when its whole stream is acknowledged).
    let out = Command::new(bin())
        .args(["run", "app1.toml", "--summary-json", "summary.json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(
        summary["source_tuples"],
        signs.all_lines().len(),
        "{summary}"
    );
    assert_eq!(summary["sink_tuples"], signs.app1().len(), "{summary}");
    // A summary that cannot be written is found before the job runs, not after (hostile
    // probe 14): nothing is printed, and the error names the flag.
    let out = Command::new(bin())
        .args(["run", "app1.toml", "--summary-json", "no-such-dir/s.json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("cannot write --summary-json no-such-dir/s.json"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "the job ran");
}

/// Built-ins chained in one stage give what the same built-ins give as stages of their own:
/// a stateless chain (app1 in one stage), and a count behind a filter, whose input is routed
/// by the count's column although the chain starts with a filter.
#[test]
fn chained_built_ins_give_the_output_of_their_stages() {
    let dir = tempfile::tempdir().unwrap();
    let signs = Signs::generate(5000, 4);
    signs.write(&dir.path().join("signs.csv"));
    let cases = [
        (
            "app1",
            chain_stage(
                3,
                &[("filter", &["Punched Telespar"]), ("select", &["3-5"])],
            ),
            signs.app1(),
        ),
        (
            "app2",
            chain_stage(
                3,
                &[("filter", &["Punched Telespar"]), ("count-by", &["9"])],
            ),
            signs.app2(),
        ),
    ];
    for (name, stage, want) in cases {
        for delivery in ["exactly-once", "at-least-once"] {
            let sink = format!("out/{name}-{delivery}.txt");
            let job = job_toml(name, "signs.csv", &sink, 0.0, delivery, &[]) + &stage;
            let file = format!("{name}-{delivery}.toml");
            std::fs::write(dir.path().join(&file), job).unwrap();
            let out = run_in(dir.path(), &file);
            assert!(
                out.status.success(),
                "{name} {delivery}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let stdout = String::from_utf8(out.stdout).unwrap();
            assert_same(
                &format!("{name} {delivery} stdout"),
                &sorted_lines(&stdout),
                &want,
            );
            let written = std::fs::read_to_string(dir.path().join(&sink)).unwrap();
            assert_same(
                &format!("{name} {delivery} sink"),
                &sorted_lines(&written),
                &want,
            );
        }
    }
}

/// What `run` prints while a rate-limited job runs is the output file byte for byte: it
/// follows the sink's committed log until the job ends, then the file — including across the
/// moment the job ends and the log is removed (a follower that kept listing the log while it
/// was deleted once printed lines twice and skipped others).
#[test]
fn run_prints_the_output_file_byte_for_byte_while_it_streams() {
    let dir = tempfile::tempdir().unwrap();
    let signs = Signs::generate(24000, 5);
    signs.write(&dir.path().join("signs.csv"));
    let job = job_toml(
        "stream",
        "signs.csv",
        "out/stream.txt",
        12000.0,
        "exactly-once",
        &[
            (3, "filter", &["Punched Telespar"]),
            (3, "select", &["3-5"]),
        ],
    );
    std::fs::write(dir.path().join("stream.toml"), job).unwrap();
    for round in 0..3 {
        let out = run_in(dir.path(), "stream.toml");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let file = std::fs::read_to_string(dir.path().join("out/stream.txt")).unwrap();
        assert!(
            file.lines().count() > 1000,
            "round {round}: too little output to stream"
        );
        assert_same_text(&format!("round {round}: stdout"), &stdout, &file);
    }
}

#[test]
fn run_app2_with_python_operators_counts_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let signs = Signs::generate(4000, 2);
    signs.write(&dir.path().join("signs.csv"));
    install_ops(dir.path());
    let job = job_toml(
        "app2-exec",
        "signs.csv",
        "out/app2.txt",
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
    std::fs::write(dir.path().join("app2.toml"), job).unwrap();
    let out = run_in(dir.path(), "app2.toml");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same(
        "stdout",
        &sorted_lines(&String::from_utf8(out.stdout).unwrap()),
        &signs.app2(),
    );
}

#[test]
fn keyed_builtin_routes_by_its_own_column_whatever_the_upstream_key() {
    // The upstream keeps the source key (FILE:LINE); count-by must still count per category.
    let dir = tempfile::tempdir().unwrap();
    let signs = Signs::generate(3000, 3);
    signs.write(&dir.path().join("signs.csv"));
    let job = job_toml(
        "app2",
        "signs.csv",
        "out/app2.txt",
        0.0,
        "at-least-once",
        &[
            (2, "filter", &["Punched Telespar"]),
            (3, "count-by", &["9"]),
        ],
    );
    std::fs::write(dir.path().join("app2.toml"), job).unwrap();
    let out = run_in(dir.path(), "app2.toml");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same(
        "stdout",
        &sorted_lines(&String::from_utf8(out.stdout).unwrap()),
        &signs.app2(),
    );
}

#[test]
fn validate_at_the_door_reports_every_problem_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("not-exec.py"), "print('x')\n").unwrap();
    let job = r#"
delivery = "sometimes"
[source]
path = "missing.csv"
rate = -5
[sink]
path = "out/x.txt"
[[stages]]
tasks = 0
op = "frobnicate"
[[stages]]
exec = "not-exec.py"
[[stages]]
exec = "nowhere/op.py"
"#;
    std::fs::write(dir.path().join("bad.toml"), job).unwrap();
    let out = run_in(dir.path(), "bad.toml");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "delivery",
        "sometimes",
        "source.rate",
        "-5",
        "stages[1].tasks",
        "frobnicate",
        // The files are looked at in the same answer, not once the rest is mended (hostile
        // probe 12).
        "source.path",
        "missing.csv",
        "stages[2].exec",
        "not executable",
        "stages[3].exec",
        "nowhere/op.py",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in: {err}");
    }
    assert!(out.stdout.is_empty());
    // Static problems fixed, the environment ones are all still reported.
    let job = r#"
[source]
path = "missing.csv"
[sink]
path = "out/x.txt"
[[stages]]
exec = "not-exec.py"
[[stages]]
exec = "nowhere/op.py"
"#;
    std::fs::write(dir.path().join("bad2.toml"), job).unwrap();
    let out = run_in(dir.path(), "bad2.toml");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "source.path",
        "missing.csv",
        "stages[1].exec",
        "not executable",
        "stages[2].exec",
        "nowhere/op.py",
        // A folder missing under the current directory is a path typed from elsewhere, not a
        // forbidden place (hostile probe 14 was told "executables run only from…").
        "operator not found (a relative path in a job file is taken from the current directory)",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in: {err}");
    }
    assert!(!dir.path().join("out/x.txt").exists());
    // A source that cannot be read again after a failure (a pipe) or at all (a directory)
    // is refused at the door, not found out by every attempt of its source.
    let made = Command::new("mkfifo")
        .arg(dir.path().join("pipe.csv"))
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::create_dir(dir.path().join("folder.csv")).unwrap();
    for (source, said) in [
        ("pipe.csv", "is not a regular file"),
        ("folder.csv", "is a directory"),
    ] {
        let job = format!(
            "[source]\npath = \"{source}\"\n[sink]\npath = \"out/x.txt\"\n[[stages]]\nop = \"identity\"\n"
        );
        std::fs::write(dir.path().join("src.toml"), job).unwrap();
        let out = run_in(dir.path(), "src.toml");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{source}: {err}");
        assert!(
            err.contains("source.path") && err.contains(said),
            "{source}: {err}"
        );
    }
    // A sink that is the source or the job file under another spelling would replace it
    // (hostile probe 14: `./in.csv` for `in.csv` overwrote the input, exit 0).
    std::fs::write(dir.path().join("in.csv"), "a\nb\n").unwrap();
    for (sink, said) in [
        ("./in.csv", "is the job's source file"),
        ("sub/../in.csv", "is the job's source file"),
        ("self.toml", "is this job file"),
    ] {
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        let job = format!(
            "[source]\npath = \"in.csv\"\n[sink]\npath = \"{sink}\"\n[[stages]]\nop = \"identity\"\n"
        );
        std::fs::write(dir.path().join("self.toml"), &job).unwrap();
        let out = run_in(dir.path(), "self.toml");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{sink}: {err}");
        assert!(
            err.contains("sink.path") && err.contains(said),
            "{sink}: {err}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("in.csv")).unwrap(),
            "a\nb\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("self.toml")).unwrap(),
            job
        );
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Ctrl-C on `rainstorm run` behind a slow operator stops the job promptly, reports it
/// cancelled, exits non-zero and leaves no operator process behind.
#[test]
fn interrupting_run_cancels_the_job_and_leaves_nothing_behind() {
    interrupt_run(2);
}

/// SIGTERM (what `timeout`, systemd and CI send) stops `run` as Ctrl-C does: its job is
/// cancelled with its committed output written, and nothing is left behind (hostile probe 14:
/// it killed `run` at once, its temporary store left in `$TMPDIR`).
#[test]
fn terminating_run_cancels_the_job_as_ctrl_c_does() {
    interrupt_run(15);
}

/// Runs a slow job, sends `run` signal `sig` once output flows, and checks the cancel.
fn interrupt_run(sig: i32) {
    let dir = tempfile::tempdir().unwrap();
    let signs = Signs::generate(20000, 4);
    signs.write(&dir.path().join("signs.csv"));
    let slow = write_exec(&dir.path().join("slow.py"), &slow_echo(0.001));
    let job = job_toml(
        "slow",
        "signs.csv",
        "out/slow.txt",
        0.0,
        "exactly-once",
        &[(2, "identity", &[]), (1, "./slow.py", &[])],
    );
    std::fs::write(dir.path().join("slow.toml"), job).unwrap();
    let mut child = spawn_run(dir.path(), "slow.toml");
    let sink = dir.path().join("out/slow.txt");
    // Output flows: `run` printed a committed line (the file itself is written at the end).
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        if let Some(Ok(l)) = lines.next() {
            let _ = line_tx.send(l);
        }
        lines.count()
    });
    line_rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("output to flow");
    // SAFETY: signalling our own child.
    unsafe { libc_kill(child.id() as i32, sig) };
    let status = wait_for(
        "run to exit after Ctrl-C",
        std::time::Duration::from_secs(10),
        || child.try_wait().unwrap(),
    );
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("cancelled"), "{err}");
    assert!(
        processes_matching(slow.to_str().unwrap()).is_empty(),
        "operator processes outlived the run"
    );
    // The output file holds what was committed when the job was cancelled: something, not all.
    let written = std::fs::read_to_string(&sink).unwrap().lines().count();
    assert!(written > 0, "the committed output was not written");
    assert!(written < signs.rows.len() + 1, "the job was not cut short");
    let printed = reader.join().unwrap() + 1;
    assert!(
        printed <= written,
        "run printed {printed} lines, the file has {written}"
    );
}

/// The operator protocol's rule for an operator that exits 0 before its input ends (like
/// `head`): its output so far is its whole output and the unread input is discarded — the
/// same at any input size, whether or not the unread input still fitted in the pipe. 1,500
/// rows (about 220 KB) are more than the pipe holds and less than the task buffers: its task
/// wedged at the end of its input, writing into a pipe nobody read.
#[test]
fn an_operator_that_exits_0_early_finishes_its_task_at_any_input_size() {
    for rows in [100usize, 1_500, 20_000] {
        let dir = tempfile::tempdir().unwrap();
        let signs = Signs::generate(rows, 9);
        signs.write(&dir.path().join("signs.csv"));
        let head = write_exec(&dir.path().join("head5.sh"), "#!/bin/sh\nexec head -n 5\n");
        let job = job_toml(
            "head",
            "signs.csv",
            "out/head.txt",
            0.0,
            "exactly-once",
            &[(1, head.to_str().unwrap(), &[]), (2, "identity", &[])],
        );
        // A wedged task fails the job rather than the test run.
        let job = format!("timeout_s = 60\n{job}");
        std::fs::write(dir.path().join("head.toml"), job).unwrap();
        let out = run_in(dir.path(), "head.toml");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{rows} rows: {stderr}");
        // Input that no longer fits in the pipe is fed after the exit: the job says it was
        // not processed (it ended "succeeded" without a word; hostile probe).
        if rows == 20_000 {
            assert!(
                stderr.contains("warning: at least") && stderr.contains("were not processed"),
                "{stderr}"
            );
        }
        // The file's first five lines: the header and four rows.
        let mut want: Vec<String> = std::iter::once(csv_line(&signs.header))
            .chain(signs.rows.iter().take(4).map(|r| csv_line(r)))
            .collect();
        want.sort();
        let sink = std::fs::read_to_string(dir.path().join("out/head.txt")).unwrap();
        assert_same(&format!("{rows} rows"), &sorted_lines(&sink), &want);
    }
}

/// Ctrl-C while `run` is still printing a job that already succeeded: it must not say the
/// job succeeded as if everything was printed (hostile probe 14: 18,604 of 1,000,000 lines
/// printed, "succeeded", exit 0). It exits non-zero, saying the output file holds it all.
#[test]
fn interrupting_run_while_it_prints_a_finished_job_does_not_claim_success() {
    let dir = tempfile::tempdir().unwrap();
    let pad = "y".repeat(60);
    let text: String = (0..200_000).map(|i| format!("{i},{pad}\n")).collect();
    std::fs::write(dir.path().join("in.csv"), &text).unwrap();
    let job = job_toml(
        "big",
        "in.csv",
        "out/big.txt",
        0.0,
        "exactly-once",
        &[(1, "identity", &[])],
    );
    std::fs::write(dir.path().join("big.toml"), job).unwrap();
    let mut child = spawn_run(dir.path(), "big.toml");
    // Nobody reads its stdout yet: the job ends (its output file appears, whole) while
    // `run` still waits to print most of it.
    let sink = dir.path().join("out/big.txt");
    wait_for(
        "the job's output file",
        std::time::Duration::from_secs(60),
        || {
            let n = std::fs::read_to_string(&sink).ok()?.len();
            (n == text.len()).then_some(())
        },
    );
    // SAFETY: signalling our own child.
    unsafe { libc_kill(child.id() as i32, 2) };
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut out);
        out.len()
    });
    let status = wait_for(
        "run to exit after Ctrl-C",
        std::time::Duration::from_secs(30),
        || child.try_wait().unwrap(),
    );
    let printed = reader.join().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    if printed < text.len() {
        assert!(
            !status.success(),
            "printed {printed} of {} bytes, exit 0: {err}",
            text.len()
        );
        assert!(err.contains("not all of it was printed"), "{err}");
    }
}

/// `run JOB | head -n 5`: once its reader has gone, `run` cancels the job and exits at once,
/// non-zero, rather than let its workers wait out their drain (hostile probe 14: 10 s).
#[test]
fn run_whose_reader_went_away_cancels_its_job_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let text: String = (0..200_000).map(|i| format!("{i},z\n")).collect();
    std::fs::write(dir.path().join("in.csv"), &text).unwrap();
    // Slow enough to be running still when its reader goes (20 s at this rate).
    let job = job_toml(
        "head",
        "in.csv",
        "out/head.txt",
        10_000.0,
        "exactly-once",
        &[(2, "identity", &[])],
    );
    std::fs::write(dir.path().join("head.toml"), job).unwrap();
    let mut child = spawn_run(dir.path(), "head.toml");
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    for _ in 0..5 {
        lines.next().expect("a line").unwrap();
    }
    drop(lines);
    let status = wait_for(
        "run to exit after its reader went",
        std::time::Duration::from_secs(8),
        || child.try_wait().unwrap(),
    );
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    // The job was cancelled: its committed output is written, not all of it.
    let written = std::fs::read_to_string(dir.path().join("out/head.txt")).unwrap();
    assert!(written.lines().count() < 200_000, "the job ran to its end");
}

/// An operator that exits 0 having read only part of what it was given says so, even when
/// everything fit in its pipe before it exited: the lines it left there are counted as
/// discarded (hostile probe 12: `head -n 3` on 5,000 lines ended "succeeded" without a word).
#[test]
fn input_an_operator_left_unread_in_its_pipe_is_counted_as_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let lines: String = (1..=200).map(|i| format!("{i}\n")).collect();
    std::fs::write(dir.path().join("in.txt"), lines).unwrap();
    // `read` takes one line, byte by byte: the other 199 stay in the pipe, or come after.
    let first = write_exec(
        &dir.path().join("first.sh"),
        "#!/bin/sh\nIFS= read -r line\nprintf '%s\\n' \"$line\"\nexit 0\n",
    );
    let job = job_toml(
        "first",
        "in.txt",
        "out/first.txt",
        0.0,
        "exactly-once",
        &[(1, first.to_str().unwrap(), &[])],
    );
    std::fs::write(dir.path().join("first.toml"), job).unwrap();
    let out = run_in(dir.path(), "first.toml");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: at least 199 tuples were not processed"),
        "{stderr}"
    );
    let sink = std::fs::read_to_string(dir.path().join("out/first.txt")).unwrap();
    assert_eq!(sink, "1\n");
}

/// Records of awkward CSV — empty, quoted and missing fields, quotes inside quotes, CRLF line
/// ends, multi-byte text — selected and counted by columns the example apps do not use, and
/// checked against `examples/reference.py`, which parses and writes with Python's `csv`
/// module: an independent reference on data the engine's own tests do not generate. (A lone
/// empty field selected was an empty line, where CSV writers put `""`.)
#[test]
fn awkward_csv_matches_the_python_reference_for_other_columns() {
    const WORDS: [&str; 12] = [
        "Punched Telespar",
        "wood",
        "a,b",
        "say \"hi\"",
        "",
        " ",
        "é",
        "日本",
        "\"\"",
        "Telespar",
        "x\ty",
        "tail ",
    ];
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &str); 6] = [
        ("app1", "select", "2"),
        ("app1", "select", "4"),
        ("app1", "select", "1,3"),
        ("app1", "select", "1-8"),
        ("app2", "count-by", "2"),
        ("app2", "count-by", "5"),
    ];
    for (i, (app, op, col)) in cases.into_iter().enumerate() {
        let mut rng = Rng::new(i as u64 + 7);
        let eol = if i % 2 == 0 { "\r\n" } else { "\n" };
        let mut text = String::new();
        for _ in 0..400 {
            let fields: Vec<String> = (0..1 + rng.below(8))
                .map(|_| {
                    let w = WORDS[rng.below(WORDS.len() as u64) as usize];
                    if w.contains([',', '"']) || rng.below(10) == 0 {
                        format!("\"{}\"", w.replace('"', "\"\""))
                    } else {
                        w.to_string()
                    }
                })
                .collect();
            text.push_str(&fields.join(","));
            text.push_str(eol);
        }
        let input = format!("in{i}.csv");
        std::fs::write(dir.path().join(&input), &text).unwrap();
        let out = format!("out{i}.txt");
        let job = job_toml(
            app,
            &input,
            &out,
            0.0,
            "exactly-once",
            &[(2, "filter", &["Punched Telespar"]), (2, op, &[col])],
        );
        let file = format!("job{i}.toml");
        std::fs::write(dir.path().join(&file), job).unwrap();
        let ran = run_in(dir.path(), &file);
        assert!(
            ran.status.success(),
            "{}",
            String::from_utf8_lossy(&ran.stderr)
        );
        let flag = if app == "app1" {
            "--select"
        } else {
            "--count-col"
        };
        let check = Command::new("python3")
            .arg(repo.join("examples/reference.py"))
            .args([app, &input, flag, col, "--compare", &out])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "case {i} ({app} {op} {col}): {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
}

/// Ctrl-C during `get` leaves neither the file nor a hidden partial one beside it (hostile
/// probe 14: the temporary file of the download stayed). The "leader" here sends the start of
/// a file and then nothing, so the download is in progress when the signal comes.
#[test]
fn an_interrupted_get_leaves_no_partial_file() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let start = "HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n";
        s.write_all(start.as_bytes()).unwrap();
        s.write_all(&[b'x'; 4096]).unwrap();
        // Holds the connection until the client goes.
        let _ = s.read(&mut buf);
    });
    let mut child = Command::new(bin())
        .args(["get", "data/big.csv", "got/big.csv", "--leader", &url])
        .env_remove("RAINSTORM_TOKEN")
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let got = dir.path().join("got");
    let partial = || {
        std::fs::read_dir(&got)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    wait_for(
        "the download to start",
        std::time::Duration::from_secs(30),
        || {
            partial()
                .iter()
                .any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
                .then_some(())
        },
    );
    // SAFETY: signalling our own child.
    unsafe { libc_kill(child.id() as i32, 2) };
    let status = wait_for("get to exit", std::time::Duration::from_secs(10), || {
        child.try_wait().unwrap()
    });
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted; got/big.csv was not written"),
        "{err}"
    );
    assert_eq!(partial(), Vec::<std::path::PathBuf>::new(), "left behind");
    server.join().unwrap();
}

/// A local sink named by a symbolic link is written where the link points, as a shell's `>`
/// writes, and the link stays (hostile probe 14: the link was replaced by a file).
#[test]
fn a_sink_named_by_a_symbolic_link_is_written_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let signs = Signs::generate(2000, 9);
    signs.write(&dir.path().join("signs.csv"));
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    std::fs::write(dir.path().join("real.txt"), "old content\n").unwrap();
    std::os::unix::fs::symlink("../real.txt", dir.path().join("out/link.txt")).unwrap();
    let job = job_toml(
        "linked",
        "signs.csv",
        "out/link.txt",
        0.0,
        "exactly-once",
        &[
            (2, "filter", &["Punched Telespar"]),
            (1, "select", &["3-5"]),
        ],
    );
    std::fs::write(dir.path().join("linked.toml"), job).unwrap();
    let out = run_in(dir.path(), "linked.toml");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = dir.path().join("out/link.txt");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link was replaced"
    );
    let written = std::fs::read_to_string(dir.path().join("real.txt")).unwrap();
    assert_same("the link's target", &sorted_lines(&written), &signs.app1());
}

/// `run`'s workers link to each other in memory, which takes no descriptor: a job is not
/// refused for descriptors it would never use (hostile probe 14: under `ulimit -Hn 1024` a
/// job of two 6-task stages on 8 workers was refused, each worker fitted to an eighth of the
/// limit).
#[test]
fn run_does_not_count_in_memory_links_against_the_open_files_limit() {
    let dir = tempfile::tempdir().unwrap();
    let signs = Signs::generate(3000, 21);
    signs.write(&dir.path().join("signs.csv"));
    let job = job_toml(
        "wide",
        "signs.csv",
        "out/wide.txt",
        0.0,
        "exactly-once",
        &[
            (6, "filter", &["Punched Telespar"]),
            (6, "count-by", &["9"]),
        ],
    );
    std::fs::write(dir.path().join("wide.toml"), job).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["run", "wide.toml", "--workers", "8"])
        .current_dir(dir.path());
    limit_open_files(&mut cmd, 1024);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_same("stdout", &sorted_lines(&stdout), &signs.app2());
}

/// A `run` killed with SIGKILL cannot remove its temporary cluster directory; the next `run`
/// removes it (hostile probe 14: each left 37–64 MB in `$TMPDIR`), and leaves a running one's
/// alone.
#[test]
fn the_next_run_removes_what_a_killed_run_left() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let signs = Signs::generate(20000, 22);
    signs.write(&dir.path().join("signs.csv"));
    let slow = job_toml(
        "slow",
        "signs.csv",
        "out/slow.txt",
        500.0,
        "exactly-once",
        &[(1, "identity", &[])],
    );
    std::fs::write(dir.path().join("slow.toml"), slow).unwrap();
    let runs = || -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(&tmp)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("rainstorm-"))
            })
            .collect();
        v.sort();
        v
    };
    let start_slow = || {
        let mut child = Command::new(bin())
            .args(["run", "slow.toml"])
            .env("TMPDIR", &tmp)
            .current_dir(dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Running: it printed a line.
        let mut first = String::new();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut first).unwrap();
        assert!(!first.is_empty(), "the slow run printed nothing");
        (child, out)
    };
    let (mut killed, _out) = start_slow();
    killed.kill().unwrap();
    killed.wait().unwrap();
    let left = runs();
    assert_eq!(left.len(), 1, "{left:?}");
    // The next run removes it as it starts, and its own is there while it runs.
    let (mut running, _out2) = start_slow();
    let during = runs();
    assert_eq!(during.len(), 1, "{during:?}");
    assert_ne!(during, left, "the killed run's directory is still there");
    // A run beside it leaves the running one's directory alone, and removes its own.
    let quick = job_toml(
        "quick",
        "signs.csv",
        "out/quick.txt",
        0.0,
        "exactly-once",
        &[(1, "identity", &[])],
    );
    std::fs::write(dir.path().join("quick.toml"), quick).unwrap();
    let out = Command::new(bin())
        .args(["run", "quick.toml"])
        .env("TMPDIR", &tmp)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = runs();
    running.kill().unwrap();
    running.wait().unwrap();
    assert_eq!(after, during, "the running run's directory went");
}
