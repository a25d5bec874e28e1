//! The workers' control plane (`/internal/*`): registration (a fresh challenge, then a request
//! signed with the worker's own key over it), heartbeats, task events, and the long-poll
//! through which a worker receives its numbered commands.

use super::adopt::{adopt, deliver};
use super::caller::{authorize, same_worker};
use super::data_addr::{live_holder, plausible_addr};
use super::{bearer, error, Shared};
use crate::model::ids::WorkerId;
use crate::persist::KnownWorker;
use crate::protocol::auth::{eq_ct, random_hex, RegistrationClaim};
use crate::protocol::control::{
    Command, Events, Heartbeat, Known, RegisterChallenge, RegisterRequest, RegisterResponse,
    WorkerState, PROTOCOL_VERSION, SESSION_HEADER, WORKER_HEADER,
};
use crate::state::lock;
use crate::Leader;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// The live registration a worker-store request (`/internal/store`) comes from: it must name a
/// live worker ([`WORKER_HEADER`]) and prove that registration's session key
/// ([`SESSION_HEADER`]), so the cluster secret alone (an operator process that read
/// `RAINSTORM_TOKEN`, say) cannot use the workers' store. `Ok(None)` on a leader without a
/// secret, which hands out no sessions. `Err` is the answer to send.
pub(super) fn store_caller(
    l: &Leader,
    headers: &HeaderMap,
) -> Result<Option<WorkerId>, Box<Response>> {
    l.worker_store_requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if l.cfg.token.is_none() {
        return Ok(None);
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(sent)) = (header(WORKER_HEADER), header(SESSION_HEADER)) else {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "the workers' store serves worker registrations only (no worker session sent)",
        )));
    };
    let id = WorkerId(id.to_string());
    let st = lock(&l.state);
    let ok = st.workers.get(&id).is_some_and(|w| {
        w.state == WorkerState::Alive
            && w.session
                .as_deref()
                .is_some_and(|key| eq_ct(key.as_bytes(), sent.as_bytes()))
    });
    if ok {
        Ok(Some(id))
    } else {
        Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            format!("not a live registration of worker {id}"),
        )))
    }
}

/// Whether a request carries the cluster secret (always, on a leader without one).
fn has_secret(l: &Leader, headers: &HeaderMap) -> bool {
    match &l.cfg.token {
        Some(secret) => bearer(headers).is_some_and(|t| secret.matches(t)),
        None => true,
    }
}

/// What a registration without the cluster secret is told.
const NO_SECRET: &str = "registering needs the cluster secret (--token-file or RAINSTORM_TOKEN)";

/// `POST /internal/challenge`: a fresh value for one registration to sign (good once, for
/// [`crate::state::CHALLENGE_TTL`]), so a recorded registration cannot be replayed.
/// Only callers holding the cluster secret get one.
pub(super) async fn challenge(State(l): Shared, headers: HeaderMap) -> Response {
    if !has_secret(&l, &headers) {
        return error(StatusCode::UNAUTHORIZED, NO_SECRET);
    }
    let challenge = match random_hex(32) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    lock(&l.state)
        .challenges
        .issue(challenge.clone(), Instant::now());
    Json(RegisterChallenge { challenge }).into_response()
}

/// `POST /internal/register`: a worker joins, or rejoins under the id it had. It must carry
/// the cluster secret, name its public key and sign a fresh challenge and its claim with the
/// matching private key; a rejoin is accepted only with the key recorded for that id, so
/// holding the cluster secret is not enough to become another worker (401, and the real one
/// keeps its registration). A missing key or proof is a 401 too; an unknown, spent or expired
/// challenge is a 409: ask for another.
pub(super) async fn register(
    State(l): Shared,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    // The secret first: the body of a caller without it is never decoded.
    if !has_secret(&l, &headers) {
        warn!("a caller without the cluster secret tried to register");
        return error(StatusCode::UNAUTHORIZED, NO_SECRET);
    }
    let req: RegisterRequest = match Json::from_bytes(&body) {
        Ok(Json(req)) => req,
        Err(rejection) => return rejection.into_response(),
    };
    if req.version != PROTOCOL_VERSION {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "protocol version {} unsupported; leader speaks {PROTOCOL_VERSION}",
                req.version
            ),
        );
    }
    if let Some(refusal) = super::store_id::refuse_another(&l, &req) {
        return refusal;
    }
    if !plausible_addr(&req.data_addr) {
        return error(
            StatusCode::BAD_REQUEST,
            "data_addr must be HOST:PORT (a host name or IP address, and a port)",
        );
    }
    let (Some(key), Some(challenge), Some(proof)) = (req.key, &req.challenge, &req.proof) else {
        warn!(data = %req.data_addr, "a registration without a worker key was refused");
        return error(
            StatusCode::UNAUTHORIZED,
            "a registration names the worker's key and signs a challenge from POST /internal/challenge with it",
        );
    };
    let Ok(proof) = hex::decode(proof) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "the registration's proof is not hex",
        );
    };
    if !lock(&l.state).challenges.take(challenge, Instant::now()) {
        return error(
            StatusCode::CONFLICT,
            "unknown, spent or expired registration challenge: ask POST /internal/challenge for another",
        );
    }
    let claim = RegistrationClaim {
        challenge: challenge.as_bytes(),
        data_addr: &req.data_addr,
        pid: req.pid,
        rejoin: req.rejoin.as_ref().map(|r| r.worker_id.0.as_str()),
    };
    if !key.verify_registration(&claim, &proof) {
        warn!(data = %req.data_addr, "a registration not signed by the key it names was refused");
        return error(
            StatusCode::UNAUTHORIZED,
            "the registration is not signed by the key it names",
        );
    }
    // A worker that lost its leader keeps its identity if this data dir handed it out, and
    // only if it proves the key that identity registered with.
    let recorded = req
        .rejoin
        .as_ref()
        .and_then(|r| lock(&l.state).known_workers.get(&r.worker_id).copied());
    let rejoin = match req.rejoin {
        Some(r) => match recorded {
            Some(recorded) if recorded == key => Some(r),
            Some(_) => {
                warn!(worker = %r.worker_id, data = %req.data_addr, pid = req.pid, "a registration posing as another worker was refused");
                return error(
                    StatusCode::UNAUTHORIZED,
                    format!(
                        "not worker {}: a rejoin must be signed with the key that worker registered",
                        r.worker_id
                    ),
                );
            }
            None => None,
        },
        None => None,
    };
    if let Some(holder) = live_holder(&l, &req.data_addr, rejoin.as_ref()) {
        warn!(data = %req.data_addr, holder = %holder, pid = req.pid, "a registration at a live worker's data address was refused");
        return error(
            StatusCode::CONFLICT,
            format!(
                "{} is the data address of live worker {holder}: a second worker there would never receive its tasks' input (if {holder} is gone, this registration succeeds once the leader has declared it dead)",
                req.data_addr
            ),
        );
    }
    let session = match l.cfg.token {
        Some(_) => match random_hex(32) {
            Ok(k) => Some(k),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        None => None,
    };
    let id = match &rejoin {
        Some(r) => r.worker_id.clone(),
        None => match l.persist.next_worker_number().await {
            Ok(n) => WorkerId(format!("w{n}")),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
        },
    };
    // Durable before the worker learns it: a restarted leader takes it back, with this key.
    let known = KnownWorker {
        data_addr: req.data_addr.clone(),
        key: Some(key),
    };
    if let Err(e) = l.persist.put_worker(id.clone(), known).await {
        return error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"));
    }
    let adopted = rejoin.is_some();
    let to_send = {
        let mut st = lock(&l.state);
        st.known_workers.insert(id.clone(), key);
        // An older worker does not say: it holds the default.
        let conns = req.data_conns.unwrap_or(crate::model::check::MAX_LINKS);
        st.add_worker(
            id.clone(),
            req.data_addr.clone(),
            key,
            session.clone(),
            conns,
            req.slots
                .unwrap_or(crate::protocol::control::DEFAULT_SLOTS_OF_OLD_WORKERS),
        );
        if let Some(w) = st.workers.get_mut(&id) {
            w.heard = rejoin.is_some();
        }
        match rejoin {
            Some(r) => adopt(&mut st, &id, r.tasks),
            None => Vec::new(),
        }
    };
    deliver(to_send).await;
    l.joined.send_modify(|n| *n += 1);
    if adopted {
        info!(worker = %id, data = %req.data_addr, pid = req.pid, "worker rejoined with its tasks");
    } else {
        info!(worker = %id, data = %req.data_addr, pid = req.pid, "worker joined");
    }
    Json(RegisterResponse {
        worker_id: id,
        heartbeat_ms: l.cfg.heartbeat_interval.as_millis() as u64,
        session,
        adopted,
    })
    .into_response()
}

pub(super) async fn heartbeat(
    State(l): Shared,
    headers: HeaderMap,
    Json(hb): Json<Heartbeat>,
) -> Response {
    if let Err(denied) = same_worker(&headers, &hb.worker_id) {
        return *denied;
    }
    let to_send = {
        let mut st = lock(&l.state);
        let now = Instant::now();
        match st.workers.get_mut(&hb.worker_id) {
            Some(w) if w.state == WorkerState::Alive => {
                w.last_seen = now;
                w.heard = true;
                w.shared_conns = hb.data;
                w.clock_offset_ns = hb.clock_offset_ns;
            }
            _ => return Json(Known::answer(false)).into_response(),
        }
        let mut to_send = Vec::new();
        for r in hb.tasks {
            to_send.extend(st.take_report(&hb.worker_id, r, now));
        }
        to_send
    };
    deliver(to_send).await;
    Json(Known::answer(true)).into_response()
}

pub(super) async fn events(
    State(l): Shared,
    headers: HeaderMap,
    Json(ev): Json<Events>,
) -> Response {
    if let Err(denied) = same_worker(&headers, &ev.worker_id) {
        return *denied;
    }
    let mut to_send = Vec::new();
    {
        let mut st = lock(&l.state);
        match st.workers.get_mut(&ev.worker_id) {
            Some(w) if w.state == WorkerState::Alive => w.heard = true,
            _ => return Json(Known::answer(false)).into_response(),
        }
        let now = Instant::now();
        for r in ev.reports {
            to_send.extend(st.take_report(&ev.worker_id, r, now));
        }
    }
    deliver(to_send).await;
    Json(Known::answer(true)).into_response()
}

#[derive(Deserialize)]
pub(super) struct WaitQuery {
    #[serde(default)]
    wait_ms: u64,
    /// The worker has handled every command numbered up to this.
    #[serde(default)]
    after: u64,
}

pub(super) async fn commands(
    State(l): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> Response {
    let id = WorkerId(id);
    if let Err(denied) = authorize(&l, &headers, &id) {
        return *denied;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(q.wait_ms.min(30_000));
    loop {
        let notify = {
            let mut st = lock(&l.state);
            let Some(w) = st.workers.get_mut(&id) else {
                return error(StatusCode::NOT_FOUND, format!("unknown worker {id}"));
            };
            if w.state != WorkerState::Alive {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("worker {id} was declared dead"),
                );
            }
            w.heard = true;
            // Only commands already handed out can be acknowledged: a poll claiming more
            // (a forged or confused `after`) cannot discard commands the worker never saw.
            let after = q.after.min(w.delivered);
            while w.commands.front().is_some_and(|(n, _)| *n <= after) {
                w.commands.pop_front();
            }
            if !w.commands.is_empty() {
                let cmds: Vec<(u64, Command)> = w.commands.iter().cloned().collect();
                w.delivered = cmds.last().map_or(w.delivered, |(n, _)| *n);
                return Json(cmds).into_response();
            }
            w.notify.clone()
        };
        // `notify_one` stores a permit, so a command queued between the check and this wait
        // is not missed. A stopping leader answers at once (nothing new), so its HTTP server
        // does not wait out the poll.
        let _waiting = super::InUse::new(&l.waiting_polls);
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep_until(deadline) => return Json(Vec::<(u64, Command)>::new()).into_response(),
            _ = l.shutdown.cancelled() => return Json(Vec::<(u64, Command)>::new()).into_response(),
        }
    }
}
