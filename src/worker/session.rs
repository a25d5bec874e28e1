//! A worker's life with the leader: register (retrying with backoff), then run one *session*
//! (command poller, heartbeater, event sender and the task attempts) until shutdown or until
//! the leader forgets this worker, in which case every task is stopped and the worker registers
//! again under a new id.

use super::report::report;
use super::{lock_tasks, pause, TaskTable, WorkerConfig};
use crate::model::backoff::Backoff;
use crate::model::ids::{TaskKey, WorkerId};
use crate::protocol::control::{
    Command, RegisterRequest, RegisterResponse, TaskReport, TaskState, PROTOCOL_VERSION,
};
use crate::runtime::task::{TaskEnd, TaskEnv};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

/// What a worker keeps across sessions.
pub(super) struct Worker {
    pub(super) cfg: WorkerConfig,
    pub(super) env: TaskEnv,
    pub(super) http: reqwest::Client,
    /// The data listener's address as registered.
    pub(super) data_addr: String,
    pub(super) tasks: TaskTable,
}

/// What a session's helpers need to talk to the leader: who we are, and when to stop.
#[derive(Clone)]
pub(super) struct LeaderLink {
    pub(super) http: reqwest::Client,
    /// Leader base URL.
    pub(super) leader: String,
    /// This worker's id in the session.
    pub(super) id: WorkerId,
    /// Cancelled when the session ends.
    pub(super) session: CancellationToken,
    /// The key this registration proves on every call (none without a cluster secret).
    pub(super) key: Option<String>,
}

impl LeaderLink {
    /// A request to the leader's control plane, proving this registration.
    pub(super) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.leader));
        match &self.key {
            Some(k) => req.bearer_auth(k),
            None => req,
        }
    }
}

/// Which attempt a supervisor ran, and how it ended.
pub(super) type Ended = ((TaskKey, u32), TaskEnd);

/// The supervisors of a session's task attempts, each returning its attempt's end.
#[derive(Default)]
pub(super) struct Attempts {
    pub(super) set: JoinSet<Ended>,
    /// Which attempt each supervisor runs (to report one that panicked).
    pub(super) ids: HashMap<tokio::task::Id, (TaskKey, u32)>,
}

impl Worker {
    /// Registers and runs sessions until `shutdown`.
    pub(super) async fn serve(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        loop {
            let Some(reg) = self.register(shutdown).await else {
                return Ok(());
            };
            let id = reg.worker_id.clone();
            info!(worker = %id, data_addr = %self.data_addr, "registered with the leader");
            let lost = self
                .session_loop(&id, reg.heartbeat_ms, reg.session, shutdown)
                .instrument(tracing::info_span!("worker", id = %id))
                .await;
            if !lost {
                return Ok(());
            }
            warn!(worker = %id, "the leader no longer knows this worker; stopped its tasks, registering again");
        }
    }

    /// Registers with the leader, retrying until it answers or `shutdown`.
    async fn register(&self, shutdown: &CancellationToken) -> Option<RegisterResponse> {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        loop {
            let req = RegisterRequest {
                version: PROTOCOL_VERSION,
                data_addr: self.data_addr.clone(),
                pid: std::process::id(),
            };
            let mut post = self
                .http
                .post(format!("{}/internal/register", self.cfg.leader))
                .json(&req);
            if let Some(t) = &self.cfg.token {
                post = post.bearer_auth(t.expose());
            }
            let res = post.send().await.and_then(|r| r.error_for_status());
            match res {
                Ok(r) => match r.json::<RegisterResponse>().await {
                    Ok(resp) => return Some(resp),
                    Err(e) => warn!(error = %e, "bad registration answer"),
                },
                Err(e) => {
                    warn!(leader = %self.cfg.leader, error = %e, "cannot register with the leader; retrying")
                }
            }
            if !pause(shutdown, backoff.next()).await {
                return None;
            }
        }
    }

    /// Runs one session; returns whether it ended because the leader forgot this worker (as
    /// opposed to `shutdown`).
    async fn session_loop(
        &self,
        id: &WorkerId,
        heartbeat_ms: u64,
        key: Option<String>,
        shutdown: &CancellationToken,
    ) -> bool {
        let link = LeaderLink {
            http: self.http.clone(),
            leader: self.cfg.leader.clone(),
            id: id.clone(),
            session: CancellationToken::new(),
            key,
        };
        let session = link.session.clone();
        let (cmd_tx, mut cmd_rx) = mpsc::channel::<Command>(64);
        let (ev_tx, ev_rx) = mpsc::channel::<TaskReport>(256);
        let mut helpers = JoinSet::new();
        helpers.spawn(super::commands::poll_commands(link.clone(), cmd_tx));
        let registry = self.env.registry.clone();
        helpers.spawn(super::report::heartbeats(
            link.clone(),
            heartbeat_ms,
            self.tasks.clone(),
            registry,
        ));
        helpers.spawn(super::report::send_events(link.clone(), ev_rx));
        let mut attempts = Attempts::default();
        let lost = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break false,
                _ = session.cancelled() => break true,
                Some(done) = attempts.set.join_next_with_id(), if !attempts.set.is_empty() => {
                    if let Some(rep) = self.ended(done, &mut attempts) {
                        if ev_tx.send(rep).await.is_err() {
                            warn!("event reporter gone; the end of a task goes unreported");
                        }
                    }
                }
                cmd = cmd_rx.recv() => match cmd {
                    None => break true,
                    Some(cmd) => self.handle(cmd, &mut attempts, &ev_tx),
                },
            }
        };
        self.stop_all(&mut attempts.set, &link, !lost).await;
        session.cancel();
        while let Some(r) = helpers.join_next().await {
            if let Err(e) = r {
                warn!(error = %e, "worker helper task panicked");
            }
        }
        lost
    }

    /// The report of an attempt whose supervisor returned (or panicked), removing it from the
    /// table; `None` if it was no longer there.
    fn ended(
        &self,
        done: Result<(tokio::task::Id, Ended), tokio::task::JoinError>,
        attempts: &mut Attempts,
    ) -> Option<TaskReport> {
        let (k, failure) = match done {
            Ok((tid, (k, outcome))) => {
                attempts.ids.remove(&tid);
                info!(task = %k.0, attempt = k.1, outcome = ?outcome, "task ended");
                match outcome {
                    TaskEnd::Failed(e) => (k, Some(e)),
                    _ => (k, None),
                }
            }
            Err(e) => {
                // A panicked supervisor still reports: the attempt it ran is failed.
                warn!(error = %e, "task supervisor panicked");
                let k = attempts.ids.remove(&e.id())?;
                let r = lock_tasks(&self.tasks).remove(&k)?;
                let mut rep = report(&r.assignment, &r.status);
                rep.state = TaskState::Failed;
                rep.error = Some(format!("task supervisor panicked: {e}"));
                return Some(rep);
            }
        };
        let r = lock_tasks(&self.tasks).remove(&k)?;
        let mut rep = report(&r.assignment, &r.status);
        if failure.is_some() {
            rep.error = failure;
        }
        Some(rep)
    }

    /// Ends the session's task set: reports what was still running as failed (graceful exit)
    /// and waits for every attempt to stop.
    async fn stop_all(&self, running: &mut JoinSet<Ended>, link: &LeaderLink, report_failed: bool) {
        let reports: Vec<TaskReport> = lock_tasks(&self.tasks)
            .values()
            .map(|r| {
                r.cancel.cancel();
                let mut rep = report(&r.assignment, &r.status);
                rep.state = TaskState::Failed;
                rep.error = Some("worker shutting down".into());
                rep
            })
            .collect();
        if report_failed && !reports.is_empty() {
            if let Err(e) = link.post_events(reports).await {
                warn!(error = %e, "could not report stopped tasks to the leader");
            }
        }
        while running.join_next().await.is_some() {}
        lock_tasks(&self.tasks).clear();
    }
}
