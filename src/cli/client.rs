//! The CLI's client of the leader's HTTP API. Everything a user types outside `run`, `leader`
//! and `worker` goes through here.

use crate::cli::output::OutputWriter;
use crate::model::check::Problem;
use crate::model::spec::{JobSpec, OperatorSpec};
use crate::protocol::control::{
    JobInfo, JobStatus, KillRequest, OutputEvent, TaskInfo, WorkerInfo,
};
use crate::runtime::store::{clean_path, ObjectMeta};
use anyhow::{anyhow, bail, Context};
use futures::{Stream, StreamExt};
use reqwest::Method;
use std::path::Path;

/// A connection to one leader.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<crate::protocol::auth::Secret>,
}

/// Submission refused with the leader's list of problems.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Rejected {
    /// Summary.
    pub message: String,
    /// Every problem found.
    pub problems: Vec<Problem>,
}

/// The error for a refused request: a [`Rejected`] when the body lists problems (a refused
/// submission), else the status and the body's `error` message.
async fn refusal(resp: reqwest::Response) -> anyhow::Error {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let v = serde_json::from_str::<serde_json::Value>(&body).ok();
    let field = |k: &str| v.as_ref().and_then(|v| v.get(k)).cloned();
    if let Some(problems) = field("problems") {
        return Rejected {
            message: field("error")
                .and_then(|e| e.as_str().map(str::to_string))
                .unwrap_or_else(|| "invalid job".into()),
            problems: serde_json::from_value(problems).unwrap_or_default(),
        }
        .into();
    }
    let msg = field("error")
        .and_then(|e| e.as_str().map(str::to_string))
        .unwrap_or(body);
    anyhow!("leader answered {status}: {msg}")
}

impl Client {
    /// A client of the leader at `base` (`http://host:port`).
    pub fn new(base: &str) -> Client {
        let base = if base.starts_with("http://") || base.starts_with("https://") {
            base.trim_end_matches('/').to_string()
        } else {
            format!("http://{}", base.trim_end_matches('/'))
        };
        crate::runtime::store::install_crypto();
        Client {
            base,
            http: reqwest::Client::new(),
            token: None,
        }
    }

    /// Sends the cluster secret as a bearer token on every request.
    pub fn with_token(mut self, token: Option<crate::protocol::auth::Secret>) -> Client {
        self.token = token;
        self
    }

    /// The leader's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request for `path` on the leader (with the bearer token, when there is one).
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t.expose()),
            None => req,
        }
    }

    /// Sends a request; a refusal becomes an error carrying the leader's message.
    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the leader at {}", self.base))?;
        if !resp.status().is_success() {
            return Err(refusal(resp).await);
        }
        Ok(resp)
    }

    /// Sends a request and decodes the JSON answer.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let resp = self.send(req).await?;
        resp.json().await.context("bad answer from the leader")
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(self.request(Method::GET, path)).await
    }

    /// Submits a job; on refusal the error is a [`Rejected`] carrying every problem.
    pub async fn submit(&self, spec: &JobSpec) -> anyhow::Result<String> {
        let req = self.request(Method::POST, "/api/jobs").json(spec);
        let v: serde_json::Value = self.call(req).await?;
        v["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("the leader returned no job id"))
    }

    /// Streams a job's output lines into `out` until the job ends; returns its final record
    /// once every line is written.
    pub async fn follow(&self, id: &str, mut out: OutputWriter) -> anyhow::Result<JobInfo> {
        let req = self.request(Method::GET, &format!("/api/jobs/{id}/output"));
        let resp = self.send(req).await?;
        let info = relay(resp.bytes_stream(), &mut out).await?;
        out.finish().await?;
        Ok(info)
    }

    /// One job.
    pub async fn job(&self, id: &str) -> anyhow::Result<JobInfo> {
        self.get_json(&format!("/api/jobs/{id}")).await
    }

    /// All jobs.
    pub async fn jobs(&self) -> anyhow::Result<Vec<JobInfo>> {
        self.get_json("/api/jobs").await
    }

    /// All tasks.
    pub async fn tasks(&self) -> anyhow::Result<Vec<TaskInfo>> {
        self.get_json("/api/tasks").await
    }

    /// All workers.
    pub async fn workers(&self) -> anyhow::Result<Vec<WorkerInfo>> {
        self.get_json("/api/workers").await
    }

    /// Cancels a job.
    pub async fn cancel(&self, id: &str) -> anyhow::Result<()> {
        let req = self.request(Method::POST, &format!("/api/jobs/{id}/cancel"));
        self.send(req).await.map(drop)
    }

    /// SIGKILLs an operator process on a worker.
    pub async fn kill_task(&self, worker: &str, pid: u32) -> anyhow::Result<String> {
        let req = KillRequest {
            worker: crate::model::ids::WorkerId(worker.to_string()),
            pid,
        };
        let req = self.request(Method::POST, "/api/kill-task").json(&req);
        let v: serde_json::Value = self.call(req).await?;
        Ok(v["task"].as_str().unwrap_or("").to_string())
    }

    /// Uploads a local file to the store, streaming it (a file of any size).
    pub async fn put(&self, local: &Path, remote: &str) -> anyhow::Result<()> {
        let file = tokio::fs::File::open(local)
            .await
            .with_context(|| format!("reading {}", local.display()))?;
        let remote = clean_path(remote)?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
            file,
            256 << 10,
        ));
        let req = self.request(Method::PUT, &format!("/api/store/{remote}"));
        self.send(req.body(body)).await.map(drop)
    }

    /// Downloads a store file, streaming it to `local` (written whole or not at all).
    pub async fn get(&self, remote: &str, local: &Path) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt;
        let remote = clean_path(remote)?;
        let req = self.request(Method::GET, &format!("/api/store/{remote}"));
        let mut resp = self.send(req).await?;
        let dir = match local.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(d) => {
                tokio::fs::create_dir_all(d).await?;
                d.to_path_buf()
            }
            None => std::path::PathBuf::from("."),
        };
        let tmp = tempfile::NamedTempFile::new_in(&dir)
            .with_context(|| format!("writing into {}", dir.display()))?;
        let mut f = tokio::fs::File::from_std(tmp.reopen()?);
        while let Some(chunk) = resp.chunk().await.context("download broke")? {
            f.write_all(&chunk).await?;
        }
        f.flush().await?;
        drop(f);
        tmp.persist(local)
            .map(drop)
            .with_context(|| format!("writing {}", local.display()))
    }

    /// Lists store files under a prefix.
    pub async fn ls(&self, prefix: &str) -> anyhow::Result<Vec<ObjectMeta>> {
        let req = self.request(Method::GET, "/api/store");
        self.call(req.query(&[("prefix", prefix)])).await
    }

    /// Cluster mode convenience, like Hadoop's `-file`: executables (and a source) named by a
    /// local path that exists here are uploaded to the same store path before submission.
    pub async fn upload_local_inputs(&self, spec: &JobSpec) -> anyhow::Result<()> {
        let mut paths: Vec<&str> = spec
            .stages
            .iter()
            .filter_map(|s| match &s.operator {
                OperatorSpec::Exec { path, .. } if !Path::new(path).is_absolute() => {
                    Some(path.as_str())
                }
                _ => None,
            })
            .collect();
        let source_in_store = self
            .ls(&spec.source_path)
            .await?
            .iter()
            .any(|o| Some(o.path.as_str()) == clean_path(&spec.source_path).ok().as_deref());
        if !source_in_store {
            paths.push(&spec.source_path);
        }
        for p in paths {
            let local = Path::new(p);
            if local.is_file() {
                eprintln!("rainstorm: uploading {p} to the store");
                self.put(local, p).await?;
            }
        }
        Ok(())
    }
}

/// Whether a status means success, for exit codes.
pub fn succeeded(info: &JobInfo) -> bool {
    info.status == JobStatus::Succeeded
}

/// Relays an NDJSON output stream: each data chunk goes to `out` as it arrives, until the
/// final record.
async fn relay<E>(
    body: impl Stream<Item = Result<bytes::Bytes, E>>,
    out: &mut OutputWriter,
) -> anyhow::Result<JobInfo>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let mut body = std::pin::pin!(body);
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("output stream broke")?;
        pending.extend_from_slice(&chunk);
        while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let ev: OutputEvent =
                serde_json::from_slice(&line).context("bad event in the output stream")?;
            match ev {
                OutputEvent::Data(text) => out.write(text.into_bytes()).await?,
                OutputEvent::End(info) => return Ok(info),
            }
        }
    }
    bail!("the output stream ended without a final status")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ids::JobId;
    use crate::model::spec::Delivery;
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
                    let info = relay(futures::stream::iter(events), &mut out).await?;
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
}
