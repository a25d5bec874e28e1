//! Unit tests of `follow`.

use super::*;
use crate::model::ids::JobId;
use crate::model::spec::Delivery;
use crate::protocol::control::JobStatus;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A reader of our output that has stopped reading: every write waits for a release.
struct Stalled {
    release: std_mpsc::Receiver<()>,
    got: Arc<Mutex<Vec<u8>>>,
}

impl std::io::Write for Stalled {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.release.recv();
        self.got.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn ndjson(ev: &OutputEvent) -> Result<bytes::Bytes, std::io::Error> {
    let mut v = serde_json::to_vec(ev).unwrap();
    v.push(b'\n');
    Ok(v.into())
}

fn end() -> OutputEvent {
    OutputEvent::End(JobInfo {
        id: JobId("job-1".into()),
        name: None,
        status: JobStatus::Succeeded,
        error: None,
        delivery: Delivery::ExactlyOnce,
        stages: vec![],
        sink: "out".into(),
        source_tuples: 0,
        sink_tuples: 0,
        failures: 0,
        recoveries: 0,
        last_failure: None,
        pending_reason: None,
        rate: 0.0,
        submitted_ms: 0,
        elapsed_ms: 0,
        latency_ms: None,
        cleanup_error: None,
        output_replaced: None,
        source_bytes: None,
        source_read_bytes: None,
        stage_tasks: Vec::new(),
        scaling: Vec::new(),
        discarded_tuples: 0,
    })
}

/// War story "a lock never held across a pipe write": a follower whose output reader has
/// stalled waits without blocking its thread, so other tasks on the same (single) runtime
/// thread keep running and stdout stays free for anyone else; once the reader resumes,
/// every line arrives in order. The follower used to hold stdout's lock across its awaits
/// and write the pipe from the async task: then the other task below never ran.
#[test]
fn stdout_lock_is_never_held_across_await() {
    let (release, stalled) = std_mpsc::channel();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = Stalled {
        release: stalled,
        got: got.clone(),
    };
    let (other_ran, other_done) = std_mpsc::channel();
    let runtime = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut out = OutputWriter::spawn(sink, None, 1).unwrap();
            let mut events: Vec<_> = (0..5)
                .map(|i| ndjson(&OutputEvent::Data(format!("line {i}\n"))))
                .collect();
            events.push(ndjson(&end()));
            let follower = tokio::spawn(async move {
                let mut written = 0;
                let info = relay(futures::stream::iter(events), &mut out, &mut written)
                    .await
                    .map_err(Break::into_error)?;
                out.finish().await?;
                anyhow::Ok(info)
            });
            let other = tokio::spawn(async move {
                tokio::task::yield_now().await;
                let _free = std::io::stdout().lock();
                other_ran.send(()).unwrap();
            });
            other.await.unwrap();
            follower.await.unwrap()
        })
    });
    let ran = other_done.recv_timeout(Duration::from_secs(10));
    // Let the writer go in every case, so the threads end.
    for _ in 0..5 {
        let _ = release.send(());
    }
    drop(release);
    assert!(
        ran.is_ok(),
        "another task could not run while the output was stalled"
    );
    let info = runtime.join().unwrap().unwrap();
    assert_eq!(info.status, JobStatus::Succeeded);
    let text = String::from_utf8(got.lock().unwrap().clone()).unwrap();
    assert_eq!(text, "line 0\nline 1\nline 2\nline 3\nline 4\n");
}

/// Where a test follower's output goes.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How a stand-in leader answers its n-th request (given its query).
type Answer = Arc<dyn Fn(usize, &str) -> axum::response::Response + Send + Sync>;

/// A stand-in leader: every query it was sent, and how it answers.
#[derive(Clone)]
struct Fake {
    seen: Arc<Mutex<Vec<String>>>,
    answer: Answer,
}

async fn fake_output(
    axum::extract::State(f): axum::extract::State<Fake>,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> axum::response::Response {
    let q = q.unwrap_or_default();
    let n = {
        let mut seen = f.seen.lock().unwrap();
        seen.push(q.clone());
        seen.len() - 1
    };
    (f.answer)(n, &q)
}

/// Starts a stand-in leader serving `/api/jobs/{id}/output` with `answer`; returns its
/// URL and the queries it is sent.
async fn fake_leader(answer: Answer) -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route("/api/jobs/{id}/output", axum::routing::get(fake_output))
        .with_state(Fake {
            seen: seen.clone(),
            answer,
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

fn stream_of(
    parts: impl Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static,
) -> axum::response::Response {
    axum::response::Response::new(axum::body::Body::from_stream(parts))
}

fn event(ev: &OutputEvent) -> Vec<u8> {
    ndjson(ev).unwrap().to_vec()
}

/// A stream cut mid-event, then a leader answering 503 while it starts: the follower
/// reconnects twice, each time from the byte it had reached, and prints every line once.
#[tokio::test]
async fn a_broken_stream_resumes_from_the_byte_reached() {
    let got = Capture::default();
    let seen_by_leader = got.clone();
    let (url, seen) = fake_leader(Arc::new(move |n, _| match n {
        0 => {
            let got = seen_by_leader.clone();
            let first = futures::stream::iter([
                Ok(event(&OutputEvent::Data("a\nbb\n".into()))),
                // Half of an event, then the connection breaks ...
                Ok(br#"{"data":"cc"#.to_vec()),
            ]);
            // ... once the follower has printed the first lines (so the break surely
            // comes mid-stream, not before anything was sent).
            let cut = futures::stream::once(async move {
                while got.0.lock().unwrap().len() < 5 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(std::io::Error::other("leader killed"))
            });
            stream_of(first.chain(cut))
        }
        1 => axum::response::Response::builder()
            .status(503)
            .body(axum::body::Body::from(r#"{"error":"starting"}"#))
            .unwrap(),
        _ => stream_of(futures::stream::iter([
            Ok(event(&OutputEvent::Data("cc\n".into()))),
            Ok(event(&end())),
        ])),
    }))
    .await;
    let out = OutputWriter::spawn(got.clone(), None, 1).unwrap();
    let client = Client::new(&url);
    let follow = client.follow_until("job-1", out, FOLLOW_PATIENCE);
    let info = tokio::time::timeout(Duration::from_secs(60), follow)
        .await
        .expect("the follower did not end")
        .unwrap();
    assert_eq!(info.status, JobStatus::Succeeded);
    let text = String::from_utf8(got.0.lock().unwrap().clone()).unwrap();
    assert_eq!(text, "a\nbb\ncc\n");
    assert_eq!(*seen.lock().unwrap(), ["offset=0", "offset=5", "offset=5"]);
}

/// An unknown job (404) is final: no reconnect.
#[tokio::test]
async fn an_unknown_job_is_final() {
    let (url, seen) = fake_leader(Arc::new(|_, _| {
        axum::response::Response::builder()
            .status(404)
            .body(axum::body::Body::from(r#"{"error":"no job job-9"}"#))
            .unwrap()
    }))
    .await;
    let out = OutputWriter::spawn(Capture::default(), None, 1).unwrap();
    let err = Client::new(&url)
        .follow_until("job-9", out, FOLLOW_PATIENCE)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("no job job-9"), "{err:#}");
    assert_eq!(seen.lock().unwrap().len(), 1);
}

/// A leader that never comes back: the follower gives up after its limit, naming it.
#[tokio::test]
async fn a_leader_gone_for_good_is_given_up_naming_it() {
    let (url, msg) = follow_nobody(Patience {
        give_up: Duration::from_millis(500),
        ..FOLLOW_PATIENCE
    })
    .await;
    assert!(msg.contains(&format!("lost the leader at {url}")), "{msg}");
}

/// Follows a job at a port nobody listens on with `patience`: the URL, and the error it
/// gave up with (well within 10 s).
async fn follow_nobody(patience: Patience) -> (String, String) {
    let url = nobody_listens();
    let out = OutputWriter::spawn(Capture::default(), None, 1).unwrap();
    let t0 = std::time::Instant::now();
    let err = Client::new(&url)
        .follow_until("job-1", out, patience)
        .await
        .unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    (url, format!("{err:#}"))
}

/// A leader that answers but always cuts the stream before sending anything is given up
/// after the allowed number of such breaks, not retried forever.
#[tokio::test]
async fn a_stream_that_always_breaks_at_once_is_given_up() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A raw server: it reads each request whole, answers 200 with a chunked stream and
    // closes the connection before the first chunk.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(0usize));
    let counted = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            *counted.lock().unwrap() += 1;
            let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n\
                          transfer-encoding: chunked\r\n\r\n";
            let _ = s.write_all(answer.as_bytes()).await;
            let _ = s.shutdown().await;
        }
    });
    let out = OutputWriter::spawn(Capture::default(), None, 1).unwrap();
    let err = Client::new(&url)
        .follow_until(
            "job-1",
            out,
            Patience {
                fruitless: 3,
                ..FOLLOW_PATIENCE
            },
        )
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("3 times in a row"), "{msg}");
    assert_eq!(*requests.lock().unwrap(), 3);
}

/// Events cut into chunks of every size from 1 byte to several events: the relay prints
/// every line once, in order, and counts every byte, wherever the cuts fall.
#[tokio::test]
async fn events_cut_anywhere_across_chunks_are_relayed_whole() {
    let mut stream = Vec::new();
    let mut want = String::new();
    for i in 0..20 {
        let text = format!("line {i} \"quoted\" \\ {}\n", "x".repeat(i * 7));
        want.push_str(&text);
        stream.extend(event(&OutputEvent::Data(text)));
    }
    stream.extend(event(&end()));
    for size in [1, 2, 7, 64, 300, stream.len()] {
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = stream
            .chunks(size)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        let got = Capture::default();
        let mut out = OutputWriter::spawn(got.clone(), None, 1).unwrap();
        let mut written = 0;
        let info = relay(futures::stream::iter(chunks), &mut out, &mut written)
            .await
            .unwrap_or_else(|e| panic!("chunks of {size}: {}", e.into_error()));
        out.finish().await.unwrap();
        assert_eq!(info.status, JobStatus::Succeeded);
        let text = String::from_utf8(got.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text, want, "chunks of {size}");
        assert_eq!(written, want.len() as u64, "chunks of {size}");
    }
}

/// A leader that never answered this client (a mistyped address, a leader not started) is
/// given up on after the first-contact limit, not the two minutes a restart is allowed.
#[tokio::test]
async fn a_leader_that_never_answered_is_given_up_sooner() {
    let (url, msg) = follow_nobody(Patience {
        first_contact: Duration::from_millis(300),
        ..FOLLOW_PATIENCE
    })
    .await;
    assert!(
        msg.contains(&format!("the leader at {url} did not answer within")),
        "{msg}"
    );
}

/// The URL of a loopback port nobody listens on (bound, then let go).
fn nobody_listens() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}
