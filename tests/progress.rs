//! The progress line of `submit --follow` (issue 18 item 4): on stderr only when stderr is a
//! terminal, never mixed into the output. Real processes on loopback; the terminal is a
//! pseudo-terminal made by util-linux `script`.

mod common;
use common::*;
use std::process::{Command, Stdio};

/// A cluster with one worker, an input of `lines` lines in the store and a job file
/// `job.toml` that reads it at `rate` lines a second through one filter task that keeps
/// every line; returns the cluster and the input's lines.
fn setup(lines: usize, rate: f64) -> (Cluster, Vec<String>) {
    let c = Cluster::start(1, 5.0);
    let input: Vec<String> = (1..=lines).map(|i| format!("line-{i:04},x")).collect();
    c.file("in.txt", &(input.join("\n") + "\n"));
    c.ok(&["put", "in.txt", "in/in.txt"]);
    c.file(
        "job.toml",
        &job_toml(
            "progress",
            "in/in.txt",
            "out/out.txt",
            rate,
            "exactly-once",
            &[(1, "filter", &["line-"])],
        ),
    );
    (c, input)
}

/// With stderr a pipe there is no progress line: stderr has no `\r` and none of the line's
/// words, and stdout is exactly the job's output. The job runs for about two seconds, so a
/// line drawn twice a second would have shown.
#[test]
fn no_progress_line_when_stderr_is_not_a_terminal() {
    let (c, input) = setup(40, 20.0);
    let out = c.run(&["submit", "job.toml", "--follow"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains('\r'),
        "a progress line on a pipe: {stderr:?}"
    );
    assert!(!stderr.contains("% read"), "{stderr:?}");
    assert!(!stderr.contains("\x1b["), "{stderr:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_same("followed output", &sorted_lines(&stdout), &input);
    assert_eq!(stdout, c.store_file("out/out.txt"), "stdout is the output");
    // The job's record says how much of the source was read: all of it.
    let id = stderr
        .lines()
        .find_map(|l| l.strip_prefix("rainstorm: submitted "))
        .expect("the job id on stderr")
        .trim()
        .to_string();
    let job = c.json(&["job", &id, "--json"]);
    let size = std::fs::metadata(c.dir.path().join("in.txt"))
        .unwrap()
        .len();
    assert_eq!(job["source_bytes"], size, "{job}");
    assert_eq!(job["source_read_bytes"], size, "{job}");
}

/// Runs `shell_cmd` in the cluster's directory with a pseudo-terminal as its stdin, stdout
/// and stderr (util-linux `script`); returns what the terminal showed.
fn on_a_terminal(c: &Cluster, shell_cmd: &str) -> String {
    let out = Command::new("script")
        .args(["-qfec", shell_cmd, "/dev/null"])
        .current_dir(c.dir.path())
        .env("RAINSTORM_LEADER", &c.url)
        .env("RAINSTORM_TOKEN", &c.token)
        .env("TERM", "xterm")
        .env("SHELL", "/bin/sh")
        .stdin(Stdio::null())
        .output()
        .expect("util-linux `script` runs");
    let screen = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{shell_cmd}: {:?}\n{screen}",
        out.status
    );
    // The terminal turns each "\n" into "\r\n"; what is left of "\r" is the progress line's.
    screen.replace("\r\n", "\n")
}

/// Removes the progress line's frames (`\r`, text, erase to the end of the line) from what
/// a terminal showed; returns the frames' texts and what is left. Asserts that a drawn
/// frame is only ever followed by another frame or an erase: text written after it would
/// share its screen line.
fn split_frames(screen: &str) -> (Vec<String>, String) {
    let mut frames = Vec::new();
    let mut rest = String::new();
    let mut s = screen;
    while let Some(i) = s.find('\r') {
        rest.push_str(&s[..i]);
        let end = s[i..]
            .find("\x1b[K")
            .expect("a frame ends with erase-to-end-of-line")
            + i;
        let frame = s[i + 1..end].to_string();
        s = &s[end + 3..];
        assert!(
            frame.is_empty() || s.is_empty() || s.starts_with('\r'),
            "text after the progress line {frame:?} on its screen line: {:?}",
            &s[..s.len().min(80)]
        );
        frames.push(frame);
    }
    rest.push_str(s);
    (frames, rest)
}

/// With stderr a terminal and stdout a file, the progress line is drawn on the terminal
/// (counts, share read, time) and erased at the end; the file is exactly the output.
#[test]
fn the_progress_line_shows_on_a_terminal_and_the_output_stays_exact() {
    let (c, input) = setup(40, 20.0);
    let screen = on_a_terminal(
        &c,
        &format!("{} submit job.toml --follow > followed.txt", bin()),
    );
    let (frames, rest) = split_frames(&screen);
    let drawn: Vec<&String> = frames.iter().filter(|f| !f.is_empty()).collect();
    assert!(!drawn.is_empty(), "no progress line drawn: {screen:?}");
    assert!(
        drawn
            .iter()
            .all(|f| f.contains(" in ") && f.contains(" out ")),
        "{drawn:?}"
    );
    assert!(drawn.iter().any(|f| f.contains("% read")), "{drawn:?}");
    assert_eq!(
        frames.last().map(String::as_str),
        Some(""),
        "erased at the end: {screen:?}"
    );
    assert!(rest.contains("succeeded"), "{rest:?}");
    let stdout = std::fs::read_to_string(c.dir.path().join("followed.txt")).unwrap();
    assert_same("followed output", &sorted_lines(&stdout), &input);
    assert_eq!(stdout, c.store_file("out/out.txt"));
}

/// With stdout and stderr on one terminal, each output line is whole on its own line: the
/// progress line is erased before output and drawn again after it.
#[test]
fn output_lines_are_never_split_by_the_progress_line_on_one_terminal() {
    let (c, input) = setup(40, 20.0);
    let screen = on_a_terminal(&c, &format!("{} submit job.toml --follow", bin()));
    let (frames, rest) = split_frames(&screen);
    assert!(frames.iter().any(|f| f.contains("% read")), "{screen:?}");
    assert_eq!(
        frames.last().map(String::as_str),
        Some(""),
        "erased at the end"
    );
    let output: Vec<&str> = rest
        .lines()
        .filter(|l| !l.starts_with("rainstorm: "))
        .collect();
    let expected = c.store_file("out/out.txt");
    assert_eq!(output, expected.lines().collect::<Vec<_>>(), "{screen:?}");
    assert_same(
        "followed output",
        &sorted_lines(&(output.join("\n") + "\n")),
        &input,
    );
}
