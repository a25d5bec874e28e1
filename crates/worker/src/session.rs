//! A worker's life with the leader: register (retrying with backoff), then run one *session*
//! (command poller, heartbeater, event sender) until shutdown or until the leader forgets this
//! worker (it restarted, or declared this worker dead). The task attempts outlive sessions: a
//! leader that is merely unreachable changes nothing (the data plane does not need it), and a
//! worker the leader forgot *rejoins* under its old id, reporting every attempt it runs and
//! every end not yet reported; the leader adopts them. Only a leader that refuses the old
//! identity makes the worker stop its tasks and start afresh under a new id.

use super::link::LeaderLink;
use super::report::report;
use super::state::{Attempts, Worker};
use super::{lock_tasks, pause};
use crate::model::backoff::Backoff;
use crate::model::ids::WorkerId;
use crate::protocol::auth::RegistrationClaim;
use crate::protocol::control::{
    Command, RegisterChallenge, RegisterRequest, RegisterResponse, Rejoin, TaskReport,
    PROTOCOL_VERSION,
};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

mod ends;
mod outbox;

/// Why one registration did not go through.
enum Refused {
    /// The leader refused the identity this worker claimed (401 once the secret was
    /// accepted): a rejoin under an id recorded with another key.
    Identity(String),
    /// Anything else (unreachable, a spent challenge, a bad answer): try again.
    Other(String),
}

/// What outlives a session: the attempts, the channel of their reports, and reports a
/// session could not deliver.
pub(super) struct Carry {
    pub(super) attempts: Attempts,
    pub(super) ev_tx: mpsc::Sender<TaskReport>,
    pub(super) ev_rx: mpsc::Receiver<TaskReport>,
    /// Reports not yet delivered (ends included), handed to the next registration.
    pub(super) backlog: Vec<TaskReport>,
    /// Ends of attempts a session could not queue: they follow every report still queued.
    pub(super) ends: Vec<TaskReport>,
    /// The deadline of a drain begun in an earlier session: a leader that restarts while this
    /// worker drains does not know it, so the next session tells it again and keeps the
    /// deadline (the drain is not forgotten, nor its timeout restarted).
    pub(super) draining: Option<tokio::time::Instant>,
}

impl Worker {
    /// Registers and runs sessions until `shutdown`.
    pub(super) async fn serve(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let (ev_tx, ev_rx) = mpsc::channel::<TaskReport>(256);
        let mut carry = Carry {
            attempts: Attempts::default(),
            ev_tx,
            ev_rx,
            backlog: Vec::new(),
            ends: Vec::new(),
            draining: None,
        };
        let mut previous: Option<WorkerId> = None;
        loop {
            let rejoin = previous.take().map(|worker_id| {
                let mut tasks = std::mem::take(&mut carry.backlog);
                while let Ok(r) = carry.ev_rx.try_recv() {
                    tasks.push(r);
                }
                tasks.append(&mut carry.ends);
                tasks.extend(
                    lock_tasks(&self.tasks)
                        .values()
                        .map(|r| report(&r.assignment, &r.status)),
                );
                Rejoin { worker_id, tasks }
            });
            let Some(reg) = self.register(shutdown, rejoin).await else {
                self.stop_all(&mut carry.attempts.set, None).await;
                return Ok(());
            };
            let id = reg.worker_id.clone();
            // The store through the leader serves only this registration from now on.
            self.env.store.bind_session(&id, reg.session.as_deref());
            if reg.adopted {
                info!(worker = %id, data_addr = %self.data_addr, tasks = lock_tasks(&self.tasks).len(), "rejoined the leader under the old identity; tasks carry on");
            } else {
                if !lock_tasks(&self.tasks).is_empty() {
                    warn!(worker = %id, "the leader gave this worker a new identity; stopping the tasks it ran");
                }
                self.stop_all(&mut carry.attempts.set, None).await;
                carry.backlog.clear();
                carry.ends.clear();
                while carry.ev_rx.try_recv().is_ok() {}
                info!(worker = %id, data_addr = %self.data_addr, "registered with the leader");
            }
            let lost = self
                .session_loop(&id, reg.heartbeat_ms, reg.session, &mut carry, shutdown)
                .instrument(tracing::info_span!("worker", id = %id))
                .await;
            if !lost {
                return Ok(());
            }
            warn!(worker = %id, "the leader no longer knows this worker; rejoining with its tasks");
            previous = Some(id);
        }
    }

    /// Registers with the leader (asking to keep an old identity if `rejoin`), retrying until
    /// it answers or `shutdown`. A leader that refuses the old identity (it recorded another
    /// key for that id: it was handed to another worker) gets a fresh registration instead.
    async fn register(
        &self,
        shutdown: &CancellationToken,
        mut rejoin: Option<Rejoin>,
    ) -> Option<RegisterResponse> {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        loop {
            match self.try_register(rejoin.as_ref()).await {
                Ok(resp) => return Some(resp),
                Err(Refused::Identity(why)) => {
                    if let Some(r) = rejoin.take() {
                        warn!(worker = %r.worker_id, reason = %why, "the leader refused this worker's old identity; registering afresh");
                        continue;
                    }
                    warn!(leader = %self.cfg.leader, reason = %why, "registration refused; retrying");
                }
                Err(Refused::Other(e)) => {
                    warn!(leader = %self.cfg.leader, error = %e, "cannot register with the leader; retrying")
                }
            }
            if !pause(shutdown, backoff.next()).await {
                return None;
            }
        }
    }

    /// One registration: a fresh challenge from the leader, then the request signed over it
    /// with this worker's key.
    async fn try_register(&self, rejoin: Option<&Rejoin>) -> Result<RegisterResponse, Refused> {
        let with_secret = |req: reqwest::RequestBuilder| match &self.cfg.token {
            Some(t) => req.bearer_auth(t.expose()),
            None => req,
        };
        let asked = with_secret(
            self.http
                .post(format!("{}/internal/challenge", self.cfg.leader)),
        )
        .send()
        .await
        .map_err(|e| Refused::Other(e.to_string()))?;
        if asked.status() == reqwest::StatusCode::UNAUTHORIZED {
            // The leader says why (no secret, or another one): its words, not a bare 401.
            let why = asked.text().await.unwrap_or_else(|e| e.to_string());
            return Err(Refused::Other(format!(
                "the leader refused this worker's cluster secret (RAINSTORM_TOKEN / --token-file): {why}"
            )));
        }
        let challenge = asked
            .error_for_status()
            .map_err(|e| Refused::Other(e.to_string()))?
            .json::<RegisterChallenge>()
            .await
            .map_err(|e| Refused::Other(format!("bad challenge: {e}")))?
            .challenge;
        // A store of its own must be the cluster's, and readable: the leader checks the id it
        // holds (`rainstorm_store::marker`). A worker on the leader's store has nothing to show.
        // Read once the leader answered, so after it wrote the id (it does before it serves).
        let store_id = match &self.cfg.store {
            Some(store) => Some(
                crate::runtime::marker::read(store)
                    .await
                    .map_err(|e| {
                        Refused::Other(format!(
                            "cannot read the cluster id in this worker's store ({}): {e}",
                            store.describe()
                        ))
                    })?
                    .unwrap_or_default(),
            ),
            None => None,
        };
        let identity = &self.env.identity;
        let pid = std::process::id();
        let claim = RegistrationClaim {
            challenge: challenge.as_bytes(),
            data_addr: &self.data_addr,
            pid,
            rejoin: rejoin.map(|r| r.worker_id.0.as_str()),
        };
        let proof = hex::encode(identity.sign_registration(&claim));
        let req = RegisterRequest {
            version: PROTOCOL_VERSION,
            data_addr: self.data_addr.clone(),
            pid,
            key: Some(identity.public()),
            challenge: Some(challenge),
            proof: Some(proof),
            rejoin: rejoin.map(|r| Rejoin {
                worker_id: r.worker_id.clone(),
                tasks: r.tasks.clone(),
            }),
            data_conns: Some(self.cfg.data.max_conns as u64),
            slots: Some(self.cfg.slots),
            store_id,
        };
        let res = with_secret(
            self.http
                .post(format!("{}/internal/register", self.cfg.leader))
                .json(&req),
        )
        .send()
        .await
        .map_err(|e| Refused::Other(e.to_string()))?;
        if res.status() == reqwest::StatusCode::CONFLICT {
            // Its store is not the cluster's: say so, as the leader put it.
            let why = res.text().await.unwrap_or_else(|e| e.to_string());
            return Err(Refused::Other(why));
        }
        if res.status() == reqwest::StatusCode::UNAUTHORIZED {
            // The secret was good (the challenge came): the identity claimed was refused.
            let why = res.text().await.unwrap_or_else(|e| e.to_string());
            return Err(Refused::Identity(why));
        }
        if !res.status().is_success() {
            // The leader says why (a bad data address, another protocol version): its words.
            let status = res.status();
            let why = res.text().await.unwrap_or_else(|e| e.to_string());
            return Err(Refused::Other(format!(
                "the leader answered {status}: {why}"
            )));
        }
        res.json::<RegisterResponse>()
            .await
            .map_err(|e| Refused::Other(format!("bad registration answer: {e}")))
    }

    /// Runs one session; returns whether it ended because the leader forgot this worker (as
    /// opposed to `shutdown`, which stops every task and reports them).
    async fn session_loop(
        &self,
        id: &WorkerId,
        heartbeat_ms: u64,
        key: Option<String>,
        carry: &mut Carry,
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
        let ev_rx = std::mem::replace(&mut carry.ev_rx, mpsc::channel(1).1);
        let events = tokio::spawn(super::report::send_events(link.clone(), ev_rx));
        let mut helpers = JoinSet::new();
        helpers.spawn(super::commands::poll_commands(link.clone(), cmd_tx));
        let registry = self.env.registry.clone();
        // Heartbeats have a client of their own: its one connection stays open between beats,
        // so a worker short of descriptors (or with every pooled connection busy) still beats.
        let beat = LeaderLink {
            http: self.beat_http.clone(),
            ..link.clone()
        };
        helpers.spawn(super::report::heartbeats(
            beat,
            heartbeat_ms,
            self.tasks.clone(),
            registry,
            self.env.net.clone(),
        ));
        let attempts = &mut carry.attempts;
        let ev_tx = carry.ev_tx.clone();
        // Ends of attempts, waiting for room in the report queue: never awaited in a branch's
        // body, which would keep the loop from commands, shutdown and the session's end while
        // the leader is away (a full queue and a session that ended wedged the worker).
        let mut ends = outbox::Outbox::default();
        // Once draining: when the drain gives up on the leader moving the tasks.
        let mut draining: Option<tokio::time::Instant> = None;
        let mut drained = false;
        let mut timed_out = false;
        let mut resumed = carry.draining.take();
        let lost = loop {
            if let Some(at) = resumed.take() {
                info!("a drain begun before the leader restarted goes on");
                match self.start_drain(&link).await {
                    Some(_) => draining = Some(at),
                    None => break false,
                }
            }
            if draining.is_some() && attempts.set.is_empty() && lock_tasks(&self.tasks).is_empty() {
                drained = true;
                break false;
            }
            let give_up = async {
                match draining {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled(), if draining.is_none() => {
                    match self.start_drain(&link).await {
                        Some(at) => draining = Some(at),
                        None => break false,
                    }
                }
                _ = give_up => {
                    warn!(tasks = lock_tasks(&self.tasks).len(), "the drain timed out; leaving: the leader moves the tasks still here");
                    timed_out = true;
                    break false;
                }
                _ = session.cancelled() => break true,
                Some(done) = attempts.set.join_next_with_id(), if !attempts.set.is_empty() => {
                    if let Some(rep) = self.ended(done, attempts) {
                        ends.push(rep);
                    }
                }
                sent = ends.send_next(&ev_tx) => {
                    if sent.is_err() {
                        warn!("event reporter gone; the end of a task waits for the next session");
                    }
                }
                cmd = cmd_rx.recv() => match cmd {
                    None => break true,
                    Some(Command::Drain) => {
                        if draining.is_none() {
                            match self.start_drain(&link).await {
                                Some(at) => draining = Some(at),
                                None => break false,
                            }
                        }
                    }
                    Some(cmd) => self.handle(cmd, attempts, &ev_tx),
                },
            }
        };
        // Ends not queued yet go before the reports of the next session (or the leave).
        let ends = ends.into_unsent();
        if lost {
            carry.draining = draining;
        } else {
            if timed_out {
                // Left before the tasks stop: the leader moves them as a drain's moves, not
                // as failures of a worker gone silent.
                self.leave(&link, Vec::new()).await;
            }
            self.stop_all(&mut attempts.set, Some(&link)).await;
        }
        session.cancel();
        while let Some(r) = helpers.join_next().await {
            if let Err(e) = r {
                warn!(error = %e, "worker helper task panicked");
            }
        }
        match events.await {
            Ok((mut rx, mut unsent)) => {
                if drained {
                    // Every end goes before the leave: a finished task must never look lost.
                    while let Ok(r) = rx.try_recv() {
                        unsent.push(r);
                    }
                    unsent.extend(ends);
                    self.leave(&link, std::mem::take(&mut unsent)).await;
                } else {
                    carry.ends.extend(ends);
                }
                carry.ev_rx = rx;
                carry.backlog.extend(unsent);
            }
            Err(e) => {
                warn!(error = %e, "event reporter panicked; its unsent reports are lost");
                carry.ends.extend(ends);
            }
        }
        lost
    }
}
