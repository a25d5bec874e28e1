//! The CLI's client of the leader's HTTP API. Everything a user types outside `run`, `leader`
//! and `worker` goes through here.

use crate::model::check::Problem;
use crate::model::spec::{JobSpec, OperatorSpec};
use crate::protocol::control::{
    JobInfo, JobStatus, KillRequest, OutputEvent, TaskInfo, WorkerInfo,
};
use crate::runtime::store::ObjectMeta;
use anyhow::{anyhow, bail, Context};
use futures::StreamExt;
use std::io::Write;
use std::path::Path;

/// A connection to one leader.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
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

async fn fail(resp: reqwest::Response) -> anyhow::Error {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let msg = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
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
        Client {
            base,
            http: reqwest::Client::new(),
        }
    }

    /// The leader's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .with_context(|| format!("cannot reach the leader at {}", self.base))?;
        if !resp.status().is_success() {
            return Err(fail(resp).await);
        }
        resp.json().await.context("bad answer from the leader")
    }

    /// Submits a job; on refusal the error is a [`Rejected`] carrying every problem.
    pub async fn submit(&self, spec: &JobSpec) -> anyhow::Result<String> {
        let resp = self
            .http
            .post(format!("{}/api/jobs", self.base))
            .json(spec)
            .send()
            .await
            .with_context(|| format!("cannot reach the leader at {}", self.base))?;
        if resp.status() == reqwest::StatusCode::BAD_REQUEST {
            let v: serde_json::Value = resp.json().await.context("bad answer from the leader")?;
            let problems: Vec<Problem> =
                serde_json::from_value(v["problems"].clone()).unwrap_or_default();
            return Err(Rejected {
                message: v["error"].as_str().unwrap_or("invalid job").to_string(),
                problems,
            }
            .into());
        }
        if !resp.status().is_success() {
            return Err(fail(resp).await);
        }
        let v: serde_json::Value = resp.json().await.context("bad answer from the leader")?;
        v["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("the leader returned no job id"))
    }

    /// Streams a job's output lines into `out` until the job ends; returns its final record.
    pub async fn follow(&self, id: &str, out: &mut dyn Write) -> anyhow::Result<JobInfo> {
        let resp = self
            .http
            .get(format!("{}/api/jobs/{id}/output", self.base))
            .send()
            .await
            .with_context(|| format!("cannot reach the leader at {}", self.base))?;
        if !resp.status().is_success() {
            return Err(fail(resp).await);
        }
        let mut body = resp.bytes_stream();
        let mut pending: Vec<u8> = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.context("output stream broke")?;
            pending.extend_from_slice(&chunk);
            while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=nl).collect();
                let ev: OutputEvent =
                    serde_json::from_slice(&line).context("bad event in the output stream")?;
                match ev {
                    OutputEvent::Data(text) => {
                        out.write_all(text.as_bytes()).context("writing output")?;
                        out.flush().context("writing output")?;
                    }
                    OutputEvent::End(info) => return Ok(info),
                }
            }
        }
        bail!("the output stream ended without a final status")
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
        let resp = self
            .http
            .post(format!("{}/api/jobs/{id}/cancel", self.base))
            .send()
            .await
            .with_context(|| format!("cannot reach the leader at {}", self.base))?;
        if !resp.status().is_success() {
            return Err(fail(resp).await);
        }
        Ok(())
    }

    /// SIGKILLs an operator process on a worker.
    pub async fn kill_task(&self, worker: &str, pid: u32) -> anyhow::Result<String> {
        let req = KillRequest {
            worker: crate::model::ids::WorkerId(worker.to_string()),
            pid,
        };
        let resp = self
            .http
            .post(format!("{}/api/kill-task", self.base))
            .json(&req)
            .send()
            .await
            .with_context(|| format!("cannot reach the leader at {}", self.base))?;
        if !resp.status().is_success() {
            return Err(fail(resp).await);
        }
        let v: serde_json::Value = resp.json().await.context("bad answer from the leader")?;
        Ok(v["task"].as_str().unwrap_or("").to_string())
    }

    /// Uploads a local file to the store.
    pub async fn put(&self, local: &Path, remote: &str) -> anyhow::Result<()> {
        let data = tokio::fs::read(local)
            .await
            .with_context(|| format!("reading {}", local.display()))?;
        let remote = crate::runtime::store::clean_path(remote)?;
        let resp = self
            .http
            .put(format!("{}/api/store/{remote}", self.base))
            .body(data)
            .send()
            .await
            .with_context(|| format!("cannot reach the leader at {}", self.base))?;
        if !resp.status().is_success() {
            return Err(fail(resp).await);
        }
        Ok(())
    }

    /// Downloads a store file.
    pub async fn get(&self, remote: &str, local: &Path) -> anyhow::Result<()> {
        let remote = crate::runtime::store::clean_path(remote)?;
        let resp = self
            .http
            .get(format!("{}/api/store/{remote}", self.base))
            .send()
            .await
            .with_context(|| format!("cannot reach the leader at {}", self.base))?;
        if !resp.status().is_success() {
            return Err(fail(resp).await);
        }
        let data = resp.bytes().await.context("download broke")?;
        if let Some(dir) = local.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::write(local, &data)
            .await
            .with_context(|| format!("writing {}", local.display()))
    }

    /// Lists store files under a prefix.
    pub async fn ls(&self, prefix: &str) -> anyhow::Result<Vec<ObjectMeta>> {
        let resp = self
            .http
            .get(format!("{}/api/store", self.base))
            .query(&[("prefix", prefix)])
            .send()
            .await
            .with_context(|| format!("cannot reach the leader at {}", self.base))?;
        if !resp.status().is_success() {
            return Err(fail(resp).await);
        }
        resp.json().await.context("bad answer from the leader")
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
        let source_in_store = self.ls(&spec.source_path).await?.iter().any(|o| {
            Some(o.path.as_str())
                == crate::runtime::store::clean_path(&spec.source_path)
                    .ok()
                    .as_deref()
        });
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
