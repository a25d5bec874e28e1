//! An output is whole or absent. An upload through the leader's store API (how a worker
//! without a store of its own writes) that breaks at any byte commits nothing; and cancelling
//! a job while its sink uploads the output never leaves a truncated file: whatever moment the
//! cancel comes, the job's output is exactly the lines it committed.

mod common;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// Lines of the source.
const LINES: usize = 200;
/// Bytes of one source line (the line, padding and newline).
const LINE_BYTES: usize = 512;

/// A worker that cuts a batch per tuple, commits its log without lingering or a commit
/// interval, and writes the output from its log's segments (not its spool, whose upload is
/// too quick to catch): with the source paced, the sink's log is about one segment per line,
/// and its output upload (reads through the leader, a few segments at a time) lasts long
/// enough to be cancelled part-way.
const SEGMENT_ENV: [(&str, &str); 4] = [
    ("RAINSTORM_BATCH_TUPLES", "1"),
    ("RAINSTORM_LOG_LINGER_US", "0"),
    ("RAINSTORM_LOG_COMMIT_MS", "0"),
    ("RAINSTORM_SINK_SPOOL", "0"),
];

/// `n` numbered lines of [`LINE_BYTES`] bytes each.
fn source_text(n: usize) -> String {
    (1..=n)
        .map(|i| format!("line {i:05} {}\n", "x".repeat(LINE_BYTES - 12)))
        .collect()
}

/// The job's record, through the API.
fn job(c: &Cluster, id: &str) -> serde_json::Value {
    let (status, body) = c.http("GET", &format!("/api/jobs/{id}"));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Size of the upload in progress into `dir` (the leader's local store writes it to a
/// hidden temporary file beside the target), if any.
fn upload_in_progress(dir: &Path) -> Option<u64> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .max()
}

/// When the test cancels the job.
#[derive(Clone, Copy, Debug)]
enum Moment {
    /// Once the record says the sink has received this many lines (before its upload).
    Received(u64),
    /// As soon as the record says the sink has received every line (about when its upload
    /// begins).
    AllReceived,
    /// Once the sink's upload has put this many thousandths of the output through.
    Uploaded(u64),
}

/// Runs the job into `out-<i>/o.txt`, cancels it at `moment`, waits for its end; returns
/// the final record, the output and whether the cancel came while the upload ran.
fn run_and_cancel(c: &Cluster, i: usize, moment: Moment) -> (serde_json::Value, String, bool) {
    let sink = format!("out-{i}/o.txt");
    let file = format!("job-{i}.toml");
    // Paced: about one line per segment write of the sink's log.
    let toml = job_toml(
        &format!("cut-{i}"),
        "in.txt",
        &sink,
        400.0,
        "exactly-once",
        &[(1, "identity", &[])],
    );
    c.file(&file, &toml);
    let id = c.submit(&file);
    let dir = c.dir.path().join("leader/store").join(format!("out-{i}"));
    let total = (LINES * LINE_BYTES) as u64;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut during_upload = false;
    loop {
        assert!(
            Instant::now() < deadline,
            "{moment:?}: no moment to cancel at\n{}",
            c.diagnose()
        );
        let now = match moment {
            Moment::Received(n) => job(c, &id)["sink_tuples"].as_u64() >= Some(n),
            Moment::AllReceived => job(c, &id)["sink_tuples"].as_u64() == Some(LINES as u64),
            Moment::Uploaded(permille) => match upload_in_progress(&dir) {
                Some(n) => {
                    during_upload = true;
                    n * 1000 >= total * permille
                }
                None => false,
            },
        };
        if now {
            break;
        }
        if job(c, &id)["status"] != "running" {
            // Too late for this moment (a fast machine): the cancel comes after the end, and
            // the output must still be whole.
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let (status, body) = c.http("POST", &format!("/api/jobs/{id}/cancel"));
    assert_eq!(status, 200, "{body}");
    let rec = c.wait_job(&id, Duration::from_secs(20));
    let out = std::fs::read_to_string(dir.join("o.txt")).unwrap_or_default();
    (rec, out, during_upload)
}

/// War story (hostile probe): a job cancelled while its sink wrote the output kept 693 of its
/// 2,000 committed lines. The sink's upload broke (cleanup had removed the log it read), the
/// broken body ended like a whole one and the leader committed it over the whole output that
/// cleanup had just written. At every moment around and during the upload, the output must
/// be what the job committed: every line when the sink had committed them all, and never a
/// truncated file.
#[test]
fn cancelling_while_the_sink_uploads_never_truncates_the_output() {
    let mut c = Cluster::start(0, 5.0);
    c.add_worker_env(&SEGMENT_ENV);
    c.wait_alive(1);
    let text = source_text(LINES);
    c.file("in.txt", &text);
    c.ok(&["put", "in.txt", "in.txt"]);
    let moments = [
        Moment::Received(LINES as u64 / 2),
        Moment::AllReceived,
        Moment::Uploaded(0),
        Moment::Uploaded(150),
        Moment::Uploaded(350),
        Moment::Uploaded(550),
        Moment::Uploaded(750),
    ];
    let mut cut_mid_upload = 0;
    for (i, moment) in moments.into_iter().enumerate() {
        cut_mid_upload += usize::from(cancel_and_check(&c, i, moment, &text));
    }
    // On a fast machine an upload can end before a cancel lands: more tries, each cancelling
    // as soon as the upload shows, until three have come while it ran (or the tries run out).
    for i in 7..15 {
        if cut_mid_upload >= 3 {
            break;
        }
        cut_mid_upload += usize::from(cancel_and_check(&c, i, Moment::Uploaded(0), &text));
    }
    assert!(
        cut_mid_upload >= 3,
        "only {cut_mid_upload} cancels came while the upload ran: the test lost its point"
    );
}

/// Runs job `i`, cancels it at `moment` and checks what it left: whole lines, a prefix of the
/// source, all of it once the upload had begun, no temporary file. Returns whether the cancel
/// came while the upload ran (and the job ended cancelled).
fn cancel_and_check(c: &Cluster, i: usize, moment: Moment, text: &str) -> bool {
    let (rec, out, during_upload) = run_and_cancel(c, i, moment);
    let status = rec["status"].as_str().unwrap_or_default().to_string();
    assert!(
        status == "cancelled" || status == "succeeded",
        "{moment:?}: {rec}"
    );
    // Whole lines, a prefix of the source (one task per stage keeps the order): never a
    // line cut short, never a line missing in the middle.
    assert!(
        out.is_empty() || out.ends_with('\n'),
        "{moment:?}: the output ends mid-line"
    );
    assert!(
        text.starts_with(&out),
        "{moment:?}: the output is not the committed lines in order ({} of {} bytes)",
        out.len(),
        text.len()
    );
    if status == "succeeded" {
        assert_same_text(
            &format!("{moment:?}: the output of a finished job"),
            &out,
            text,
        );
    }
    if during_upload {
        // The upload had begun, so the sink had committed every line: all of them are the
        // output, and so is every line the record says reached the sink (its count comes
        // with the sink's reports and may lag, never lead).
        assert_same_text(&format!("{moment:?}: the output"), &out, text);
        let reached = rec["sink_tuples"].as_u64().unwrap_or(u64::MAX);
        assert!(
            reached <= out.lines().count() as u64,
            "{moment:?}: the record says {reached} lines reached the sink, the output holds {}: {rec}",
            out.lines().count()
        );
    }
    // A cancelled job's lines out are its output's, not the sink's last report (which may
    // lag: a probe saw "0 lines out" over a file of 60,158).
    if status == "cancelled" {
        assert_eq!(
            rec["sink_tuples"].as_u64(),
            Some(out.lines().count() as u64),
            "{moment:?}: the record's lines out against the output: {rec}"
        );
    }
    // An upload the leader refused leaves nothing behind.
    let dir = c.dir.path().join("leader/store").join(format!("out-{i}"));
    assert_eq!(
        upload_in_progress(&dir),
        None,
        "{moment:?}: a temporary file was left"
    );
    during_upload && status == "cancelled"
}

/// A body of `data` in chunks of random sizes that breaks after `cut` bytes (an error where
/// the rest should be), as a sink's upload does when a segment it reads has gone.
fn cut_body(
    data: &[u8],
    cut: usize,
    rng: &mut Rng,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    let mut items = Vec::new();
    let mut at = 0;
    while at < cut {
        let n = (1 + rng.below(64 << 10) as usize).min(cut - at);
        items.push(Ok(bytes::Bytes::copy_from_slice(&data[at..at + n])));
        at += n;
    }
    items.push(Err(std::io::Error::other(
        "a segment of the output has gone",
    )));
    futures::stream::iter(items)
}

/// Hidden temporary files left anywhere under `dir`.
fn temporaries(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                todo.push(e.path());
            } else if e.file_name().to_string_lossy().starts_with(".tmp") {
                found.push(e.path());
            }
        }
    }
    found
}

/// The cause of the war story above, on its own: an upload through the leader's store API
/// (`Store::Http`, how a worker without a store of its own writes) whose body breaks at a
/// random byte — anywhere from before the first byte to after the last — fails, and the
/// leader commits nothing: a new object stays absent, an existing one keeps its whole
/// previous content, and no temporary file is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_through_the_leader_cut_at_any_byte_commits_nothing() {
    use rainstorm::runtime::store::{Store, StoreError};
    let dir = tempfile::tempdir().unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", http.local_addr().unwrap());
    // No cluster secret (loopback only): the workers' store takes any task's log objects.
    let cfg = rainstorm::leader::LeaderConfig {
        data_dir: dir.path().join("leader"),
        ..Default::default()
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let leader = tokio::spawn(rainstorm::leader::run(cfg, http, stop.clone()));
    let remote = Store::http(&url);
    let store_dir = dir.path().join("leader/store");
    let mut rng = Rng::new(7);
    let len = 300 << 10;
    let old: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let new: Vec<u8> = (0..len).map(|i| (i % 241) as u8 ^ 0x55).collect();
    let mut cuts = vec![0, 1, len - 1, len];
    cuts.extend((0..8).map(|_| rng.below(len as u64) as usize));
    for (i, cut) in cuts.into_iter().enumerate() {
        let fresh = format!("logs/job-1/1.0/{i:06}-0000000000.seg");
        let kept = format!("logs/job-1/1.0/{i:06}-0000000001.seg");
        let whole =
            futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(old.clone()))]);
        assert_eq!(remote.put_stream(&kept, whole).await.unwrap(), len as u64);
        for path in [&fresh, &kept] {
            let err = remote
                .put_stream(path, cut_body(&new, cut, &mut rng))
                .await
                .expect_err("an upload whose body broke must fail");
            assert!(
                err.to_string().contains("upload broke"),
                "cut at {cut}: {err}"
            );
        }
        assert!(
            matches!(remote.get(&fresh).await, Err(StoreError::NotFound(_))),
            "cut at {cut}: a broken upload of a new object left one"
        );
        let now = remote.get(&kept).await.unwrap();
        assert!(
            now[..] == old[..],
            "cut at {cut}: the object is no longer its whole previous content ({} bytes)",
            now.len()
        );
    }
    // The leader removes what it had received of each broken upload.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !temporaries(&store_dir).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "temporary files left: {:?}",
            temporaries(&store_dir)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    leader.await.unwrap().unwrap();
}
