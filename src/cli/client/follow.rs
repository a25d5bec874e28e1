//! Following a job's output: stream its lines to the user's output until the job ends, and
//! survive a leader restart by reconnecting from the byte reached, so no line is printed twice
//! or skipped.

use super::{refusal, Client};
use crate::cli::output::OutputWriter;
use crate::model::backoff::Backoff;
use crate::protocol::control::{JobInfo, OutputEvent};
use anyhow::{anyhow, Context};
use futures::{Stream, StreamExt};
use reqwest::Method;
use std::time::{Duration, Instant};
use tracing::warn;

impl Client {
    /// Streams a job's output lines into `out` until the job ends; returns its final record
    /// once every line is written.
    ///
    /// Survives a leader restart: when the stream breaks before the final status (connection
    /// refused or reset, a 5xx, a body cut short), it reconnects with backoff and asks for the
    /// output from the byte it had reached (`?offset=`), so no line is printed twice or
    /// skipped. It gives up after [`FOLLOW_PATIENCE`]'s time without a successful connection,
    /// or when the leader breaks the stream as many times in a row as it allows before
    /// sending anything; an unknown job, a refused secret or any other 4xx is final at once.
    pub async fn follow(&self, id: &str, out: OutputWriter) -> anyhow::Result<JobInfo> {
        self.follow_until(id, out, FOLLOW_PATIENCE).await
    }

    /// [`Client::follow`] with the given limits.
    async fn follow_until(
        &self,
        id: &str,
        mut out: OutputWriter,
        patience: Patience,
    ) -> anyhow::Result<JobInfo> {
        let res = self.follow_into(id, &mut out, patience).await;
        // Whatever happened, what was received is written out before we return.
        let written = out.finish().await;
        let info = res?;
        written?;
        Ok(info)
    }

    async fn follow_into(
        &self,
        id: &str,
        out: &mut OutputWriter,
        patience: Patience,
    ) -> anyhow::Result<JobInfo> {
        let mut written = 0u64;
        let mut backoff = Backoff::new(FOLLOW_RETRY_FIRST, FOLLOW_RETRY_CAP);
        // When the leader was last seen answering: a stream is a sign of life until it
        // breaks (or when we started).
        let mut reached = Instant::now();
        // Connections in a row that broke before delivering anything.
        let mut fruitless = 0u32;
        loop {
            let lost = match self.follow_once(id, &mut written, out).await {
                Ok(info) => return Ok(info),
                Err(Break::Fatal(e)) => return Err(e),
                Err(Break::Lost {
                    connected,
                    progressed,
                    error,
                }) => {
                    if connected {
                        reached = Instant::now();
                    }
                    if progressed {
                        backoff.reset();
                        fruitless = 0;
                    } else if connected {
                        fruitless += 1;
                    }
                    error
                }
            };
            if fruitless >= patience.fruitless {
                return Err(lost.context(format!(
                    "the leader at {} broke job {id}'s output stream {fruitless} times in a row \
                     before sending anything",
                    self.base
                )));
            }
            if reached.elapsed() >= patience.give_up {
                return Err(lost.context(format!(
                    "lost the leader at {} while following job {id}: no connection for {} s",
                    self.base,
                    patience.give_up.as_secs()
                )));
            }
            let wait = backoff.next();
            warn!(
                job = id,
                leader = %self.base,
                offset = written,
                retry_in_ms = wait.as_millis() as u64,
                error = %format!("{lost:#}"),
                "the job's output stream broke; reconnecting"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// One connection of a follower: relays the output from byte `written` on, counting what
    /// it hands to `out`.
    async fn follow_once(
        &self,
        id: &str,
        written: &mut u64,
        out: &mut OutputWriter,
    ) -> Result<JobInfo, Break> {
        let req = self
            .request(Method::GET, &format!("/api/jobs/{id}/output"))
            .query(&[("offset", *written)]);
        let resp = req.send().await.map_err(|e| Break::Lost {
            connected: false,
            progressed: false,
            error: anyhow::Error::new(e)
                .context(format!("cannot reach the leader at {}", self.base)),
        })?;
        let status = resp.status();
        if !status.is_success() {
            let error = refusal(resp).await;
            return Err(if status.is_server_error() {
                // A leader starting or stopping, or a proxy in front of a dead one.
                Break::Lost {
                    connected: false,
                    progressed: false,
                    error,
                }
            } else {
                Break::Fatal(error)
            });
        }
        relay(resp.bytes_stream(), out, written).await
    }
}

/// When a follower gives up reconnecting.
#[derive(Clone, Copy, Debug)]
pub struct Patience {
    /// Time without a successful connection.
    pub give_up: Duration,
    /// Connections in a row that broke before delivering anything: a leader that always cuts
    /// the stream at once (an output file it can no longer read) must not be retried
    /// forever, while a restart costs one such break.
    pub fruitless: u32,
}

/// A follower's limits: two minutes is long enough for a leader to be restarted by hand.
pub const FOLLOW_PATIENCE: Patience = Patience {
    give_up: Duration::from_secs(120),
    fruitless: 30,
};

/// A follower's first wait before reconnecting, and the most it waits between attempts.
const FOLLOW_RETRY_FIRST: Duration = Duration::from_millis(100);
const FOLLOW_RETRY_CAP: Duration = Duration::from_secs(2);

/// Why one connection of a follower ended without the job's final status.
enum Break {
    /// The leader or the connection failed: reconnecting can help. `connected`: the leader
    /// had answered with the stream; `progressed`: the stream delivered output before it
    /// broke.
    Lost {
        connected: bool,
        progressed: bool,
        error: anyhow::Error,
    },
    /// Retrying cannot help: the leader refused (unknown job, secret), the stream is not one
    /// we understand, or our own output failed.
    Fatal(anyhow::Error),
}

impl Break {
    /// The error, whatever kind of break it was.
    #[cfg(test)]
    fn into_error(self) -> anyhow::Error {
        match self {
            Break::Lost { error, .. } | Break::Fatal(error) => error,
        }
    }
}

/// Relays an NDJSON output stream: each data chunk goes to `out` as it arrives (and its
/// length is added to `written`), until the final record. A chunk is written whole or not at
/// all, so `written` is always the start of the first line not written yet.
async fn relay<E>(
    body: impl Stream<Item = Result<bytes::Bytes, E>>,
    out: &mut OutputWriter,
    written: &mut u64,
) -> Result<JobInfo, Break>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let mut progressed = false;
    let mut body = std::pin::pin!(body);
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Break::Lost {
            connected: true,
            progressed,
            error: anyhow::Error::new(e).context("output stream broke"),
        })?;
        pending.extend_from_slice(&chunk);
        while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let ev: OutputEvent = serde_json::from_slice(&line)
                .context("bad event in the output stream")
                .map_err(Break::Fatal)?;
            match ev {
                OutputEvent::Data(text) => {
                    let len = text.len() as u64;
                    out.write(text.into_bytes()).await.map_err(Break::Fatal)?;
                    *written += len;
                    progressed = true;
                }
                OutputEvent::End(info) => return Ok(info),
            }
        }
    }
    Err(Break::Lost {
        connected: true,
        progressed,
        error: anyhow!("the output stream ended without a final status"),
    })
}

#[cfg(test)]
mod tests {
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
            submitted_ms: 0,
            elapsed_ms: 0,
            latency_ms: None,
            cleanup_error: None,
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
                let mut out = OutputWriter::spawn(sink, 1).unwrap();
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
        let out = OutputWriter::spawn(got.clone(), 1).unwrap();
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
        let out = OutputWriter::spawn(Capture::default(), 1).unwrap();
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
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}");
        let out = OutputWriter::spawn(Capture::default(), 1).unwrap();
        let t0 = std::time::Instant::now();
        let err = Client::new(&url)
            .follow_until(
                "job-1",
                out,
                Patience {
                    give_up: Duration::from_millis(500),
                    ..FOLLOW_PATIENCE
                },
            )
            .await
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains(&format!("lost the leader at {url}")), "{msg}");
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
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
        let out = OutputWriter::spawn(Capture::default(), 1).unwrap();
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
}
