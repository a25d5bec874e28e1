//! The CLI's client of the leader's HTTP API. Everything a user types outside `run`, `leader`
//! and `worker` goes through here.
//!
//! This file holds the [`Client`], its one request helper (bearer token, refusals turned into
//! errors carrying the leader's message) and the calls that are a single request (submit,
//! listings, cancel, kill-task). Following a job's output across leader restarts is in
//! `follow`; moving files to and from the store is in `store`.

mod follow;
mod store;

pub use follow::{Patience, FOLLOW_PATIENCE};

use crate::model::check::Problem;
use crate::model::spec::JobSpec;
use crate::protocol::control::{JobInfo, JobStatus, KillRequest, TaskInfo, WorkerInfo};
use anyhow::{anyhow, Context};
use reqwest::Method;

/// A connection to one leader.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<crate::protocol::auth::Secret>,
    /// Whether the leader has answered this client (any HTTP answer) at least once.
    answered: std::sync::Arc<std::sync::atomic::AtomicBool>,
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
        let http = crate::store::client::http_client_for(&base)
            .build()
            .unwrap_or_default();
        Client {
            base,
            http,
            token: None,
            answered: Default::default(),
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

    /// Notes that the leader answered.
    fn heard(&self) {
        self.answered
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the leader has answered this client at least once.
    fn answered(&self) -> bool {
        self.answered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sends a request; a refusal becomes an error carrying the leader's message.
    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = req.send().await.with_context(|| {
            format!(
                "cannot reach the leader at {} (another one: --leader URL or RAINSTORM_LEADER)",
                self.base
            )
        })?;
        self.heard();
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

    /// Sends a GET for `path` and decodes the JSON answer.
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

    /// One job.
    pub async fn job(&self, id: &str) -> anyhow::Result<JobInfo> {
        self.get_json(&format!("/api/jobs/{}", job_segment(id)))
            .await
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
    pub async fn cancel(&self, id: &str) -> anyhow::Result<Cancelled> {
        let req = self.request(
            Method::POST,
            &format!("/api/jobs/{}/cancel", job_segment(id)),
        );
        let v: serde_json::Value = self.call(req).await?;
        let status = serde_json::from_value(v["status"].clone()).ok();
        Ok(Cancelled {
            status,
            already_ended: v["already_ended"].as_bool().unwrap_or(false),
        })
    }

    /// Asks a worker to SIGKILL an operator process; returns the leader's account of what it
    /// asked (the task attempt, and the pid as the worker reported it).
    pub async fn kill_task(&self, worker: &str, pid: u32) -> anyhow::Result<String> {
        let req = KillRequest {
            worker: crate::model::ids::WorkerId(worker.to_string()),
            pid,
        };
        let req = self.request(Method::POST, "/api/kill-task").json(&req);
        let v: serde_json::Value = self.call(req).await?;
        Ok(match v["message"].as_str() {
            Some(m) => m.to_string(),
            // A leader from before the message: it named the task only.
            None => format!(
                "asked worker {worker} to kill pid {pid} (task {})",
                v["task"].as_str().unwrap_or("?")
            ),
        })
    }
}

/// How a `rainstorm scale` went, as the job's `scaling` list says.
pub struct ScaleOutcome {
    /// Done, or still in progress when the command stopped looking.
    pub ok: bool,
    /// One line for the user.
    pub said: String,
}

impl Client {
    /// Changes a running job's source rate (`rainstorm set-rate`).
    pub async fn set_rate(&self, id: &str, rate: f64) -> anyhow::Result<()> {
        let req = self
            .request(Method::POST, &format!("/api/jobs/{}/rate", job_segment(id)))
            .json(&serde_json::json!({ "rate": rate }));
        let _: serde_json::Value = self.call(req).await?;
        Ok(())
    }

    /// Asks the leader to rescale a stage of a running job (`rainstorm scale`) and follows
    /// the job's `scaling` list until the request is refused, done or aborted (or still in
    /// progress after a while: the move goes on).
    pub async fn scale(&self, id: &str, stage: u32, tasks: u32) -> anyhow::Result<ScaleOutcome> {
        let before = self.job(id).await?.scaling.len();
        let req = self
            .request(
                Method::POST,
                &format!("/api/jobs/{}/scale", job_segment(id)),
            )
            .json(&serde_json::json!({ "stage": stage, "tasks": tasks }));
        let _: serde_json::Value = self.call(req).await?;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            // The rescale was accepted: a leader that cannot be asked how it went (stopping,
            // restarting) does not make it an error (a probe's CLI failed on a rescale that
            // was done).
            let job = match self.job(id).await {
                Ok(job) => job,
                Err(e) => {
                    let said = format!("stage {stage}: rescale to {tasks} tasks requested; how it went could not be read ({e:#}); see `rainstorm job {id}`");
                    return Ok(ScaleOutcome { ok: true, said });
                }
            };
            let mine = job.scaling.iter().skip(before).find(|s| s.stage == stage);
            let at = |s: &crate::protocol::control::ScaleInfo| {
                let took = s.took_ms.map(|t| format!(" in {t} ms")).unwrap_or_default();
                // Fewer than asked (a grow the free slots cut short): the note says why.
                let short = match s.to != tasks && s.outcome == "done" {
                    true => format!(" ({})", s.reason),
                    false => String::new(),
                };
                format!(
                    "stage {stage}: {} → {} tasks {}{took}{short}",
                    s.from, s.to, s.outcome
                )
            };
            match mine {
                Some(s) if s.outcome == "done" => {
                    return Ok(ScaleOutcome {
                        ok: true,
                        said: at(s),
                    });
                }
                Some(s) if s.outcome != "in-progress" => {
                    let cause = s.cause.clone().unwrap_or_default();
                    let said = format!("{}: {cause}", at(s));
                    return Ok(ScaleOutcome { ok: false, said });
                }
                _ if tokio::time::Instant::now() >= deadline || job.status.is_terminal() => {
                    let said = format!("stage {stage}: rescale to {tasks} tasks requested; see `rainstorm job {id}`");
                    return Ok(ScaleOutcome { ok: true, said });
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
    }

    /// Asks the leader to drain a worker (`rainstorm drain`).
    pub async fn drain(&self, worker: &str) -> anyhow::Result<String> {
        if worker.is_empty()
            || !worker
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            anyhow::bail!("{worker:?} is not a worker id (as `rainstorm workers` prints them)");
        }
        let req = self.request(Method::POST, &format!("/api/workers/{worker}/drain"));
        let v: serde_json::Value = self.call(req).await?;
        Ok(if v["already"].as_bool() == Some(true) {
            format!("worker {worker} was already draining")
        } else {
            format!("worker {worker} is draining: its tasks move to other workers, then it leaves")
        })
    }
}

/// Whether a status means success, for exit codes.
pub fn succeeded(info: &JobInfo) -> bool {
    info.status == JobStatus::Succeeded
}

/// A job id as one segment of an API path: every byte but letters, digits, `-` and `_`
/// percent-encoded, so an id the user typed (`../x`) names no other route; the leader then
/// answers "no job" for it (an empty 404 before: the URL had been resolved to another path).
pub(crate) fn job_segment(id: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_');
    percent_encoding::utf8_percent_encode(id, KEEP).to_string()
}

/// What a cancel did, as the leader answered it.
#[derive(Debug)]
pub struct Cancelled {
    /// The job's status after the cancel (None from a leader that did not say).
    pub status: Option<crate::protocol::api::JobStatus>,
    /// The job had ended before the cancel: its status is its own, not the cancel's.
    pub already_ended: bool,
}
