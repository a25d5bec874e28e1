//! A worker: registers with the leader, serves its one data listener, runs task attempts as
//! the leader commands, heartbeats their progress, and reports each attempt's end exactly once.
//! Every spawned task belongs to a `JoinSet` owned here and is joined on shutdown.

use crate::dataplane::inbound::Registry;
use crate::dataplane::listener;
use crate::dataplane::routes::Routes;
use crate::dataplane::DataConfig;
use crate::model::ids::{JobId, TaskKey, WorkerId};
use crate::model::spec::OperatorSpec;
use crate::protocol::control::{
    Command, Events, Heartbeat, Known, RegisterRequest, RegisterResponse, TaskAssignment,
    TaskReport, TaskState, PROTOCOL_VERSION,
};
use crate::runtime::store::Store;
use crate::runtime::task::{resolve_exec, run_task, TaskEnd, TaskEnv, TaskStatus};
use anyhow::Context;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

/// How to run a worker.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Leader base URL (`http://host:port`).
    pub leader: String,
    /// Private working directory (fetched operators).
    pub data_dir: PathBuf,
    /// Address to bind the data listener to (`host:port`, port 0 = any).
    pub data_listen: String,
    /// Address other processes use to reach the data listener (defaults to the bound one).
    pub advertise: Option<String>,
    /// Store to use directly (embedded mode shares the leader's directory); default: the
    /// leader's store API.
    pub store: Option<Store>,
    /// Data-plane tunables.
    pub data: DataConfig,
}

struct Running {
    assignment: TaskAssignment,
    status: Arc<TaskStatus>,
    cancel: CancellationToken,
}

type TaskTable = Arc<Mutex<HashMap<(TaskKey, u32), Running>>>;

fn report(a: &TaskAssignment, s: &TaskStatus) -> TaskReport {
    let pid = s.pid.load(Ordering::Relaxed);
    TaskReport {
        key: a.key.clone(),
        attempt: a.attempt,
        pid: (pid != 0).then_some(pid),
        state: s.state(),
        tuples_in: s.tuples_in.load(Ordering::Relaxed),
        tuples_out: s.tuples_out.load(Ordering::Relaxed),
        error: s.error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        queued: 0,
    }
}

async fn register(
    http: &reqwest::Client,
    cfg: &WorkerConfig,
    data_addr: &str,
    shutdown: &CancellationToken,
) -> Option<RegisterResponse> {
    let mut delay = Duration::from_millis(50);
    loop {
        let req = RegisterRequest {
            version: PROTOCOL_VERSION,
            data_addr: data_addr.to_string(),
            pid: std::process::id(),
        };
        let res = http
            .post(format!("{}/internal/register", cfg.leader))
            .json(&req)
            .send()
            .await
            .and_then(|r| r.error_for_status());
        match res {
            Ok(r) => match r.json::<RegisterResponse>().await {
                Ok(resp) => return Some(resp),
                Err(e) => warn!(error = %e, "bad registration answer"),
            },
            Err(e) => {
                warn!(leader = %cfg.leader, error = %e, "cannot register with the leader; retrying")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Runs a worker until `shutdown`; on shutdown its running tasks are reported failed (so the
/// leader reschedules them) and stopped.
pub async fn run(cfg: WorkerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&cfg.data_listen)
        .await
        .with_context(|| format!("binding the data listener on {}", cfg.data_listen))?;
    let bound = listener.local_addr()?;
    let data_addr = match &cfg.advertise {
        Some(a) => a.clone(),
        None => format!(
            "{}:{}",
            crate::dataplane::net::advertise_host(bound.ip()),
            bound.port()
        ),
    };
    let store = cfg
        .store
        .clone()
        .unwrap_or_else(|| Store::http(&cfg.leader));
    let registry = Arc::new(Registry::default());
    let routes = Arc::new(Routes::default());
    let env = TaskEnv {
        registry: registry.clone(),
        routes: routes.clone(),
        cfg: cfg.data.clone(),
        store: store.clone(),
        work_dir: cfg.data_dir.clone(),
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .context("building the HTTP client")?;

    let mut bg = JoinSet::new();
    let net_stop = CancellationToken::new();
    bg.spawn(listener::serve(
        listener,
        registry.clone(),
        routes.clone(),
        net_stop.clone(),
    ));

    let tasks: TaskTable = Arc::default();
    let result = async {
        loop {
            let Some(reg) = register(&http, &cfg, &data_addr, &shutdown).await else {
                return Ok(());
            };
            let id = reg.worker_id.clone();
            info!(worker = %id, %data_addr, "registered with the leader");
            let session = CancellationToken::new();
            let lost = session_loop(&cfg, &env, &http, &id, reg.heartbeat_ms, &tasks, &shutdown, &session)
                .instrument(tracing::info_span!("worker", id = %id))
                .await?;
            if !lost {
                return Ok(());
            }
            warn!(worker = %id, "the leader no longer knows this worker; stopped its tasks, registering again");
        }
    }
    .await;
    net_stop.cancel();
    while bg.join_next().await.is_some() {}
    result
}

/// Ends the session's task set: reports what was still running as failed (graceful exit) and
/// waits for every attempt to stop.
async fn stop_all(
    running: &mut JoinSet<((TaskKey, u32), TaskEnd)>,
    tasks: &TaskTable,
    http: &reqwest::Client,
    cfg: &WorkerConfig,
    id: &WorkerId,
    report_failed: bool,
) {
    let reports: Vec<TaskReport> = {
        let t = tasks.lock().unwrap_or_else(|p| p.into_inner());
        t.values()
            .map(|r| {
                r.cancel.cancel();
                let mut rep = report(&r.assignment, &r.status);
                rep.state = TaskState::Failed;
                rep.error = Some("worker shutting down".into());
                rep
            })
            .collect()
    };
    if report_failed && !reports.is_empty() {
        let ev = Events {
            worker_id: id.clone(),
            reports,
        };
        if let Err(e) = http
            .post(format!("{}/internal/events", cfg.leader))
            .json(&ev)
            .send()
            .await
        {
            warn!(error = %e, "could not report stopped tasks to the leader");
        }
    }
    while running.join_next().await.is_some() {}
    tasks.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

#[allow(clippy::too_many_arguments)]
async fn session_loop(
    cfg: &WorkerConfig,
    env: &TaskEnv,
    http: &reqwest::Client,
    id: &WorkerId,
    heartbeat_ms: u64,
    tasks: &TaskTable,
    shutdown: &CancellationToken,
    session: &CancellationToken,
) -> anyhow::Result<bool> {
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<Command>(64);
    let (ev_tx, ev_rx) = mpsc::channel::<TaskReport>(256);
    let mut helpers = JoinSet::new();
    helpers.spawn(poll_commands(
        http.clone(),
        cfg.leader.clone(),
        id.clone(),
        cmd_tx,
        session.clone(),
    ));
    helpers.spawn(heartbeats(
        http.clone(),
        cfg.leader.clone(),
        id.clone(),
        heartbeat_ms,
        tasks.clone(),
        env.registry.clone(),
        session.clone(),
    ));
    helpers.spawn(send_events(
        http.clone(),
        cfg.leader.clone(),
        id.clone(),
        ev_rx,
        session.clone(),
    ));
    let mut running: JoinSet<((TaskKey, u32), TaskEnd)> = JoinSet::new();
    let mut ids: HashMap<tokio::task::Id, (TaskKey, u32)> = HashMap::new();
    let lost = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break false,
            _ = session.cancelled() => break true,
            Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                let ((key, attempt), outcome) = match done {
                    Ok((id, v)) => {
                        ids.remove(&id);
                        v
                    }
                    Err(e) => {
                        // A panicked supervisor still reports: the attempt it ran is failed.
                        warn!(error = %e, "task supervisor panicked");
                        let Some(k) = ids.remove(&e.id()) else { continue };
                        let removed = tasks.lock().unwrap_or_else(|p| p.into_inner()).remove(&k);
                        if let Some(r) = removed {
                            let mut rep = report(&r.assignment, &r.status);
                            rep.state = TaskState::Failed;
                            rep.error = Some(format!("task supervisor panicked: {e}"));
                            if ev_tx.send(rep).await.is_err() {
                                warn!("event reporter gone");
                            }
                        }
                        continue;
                    }
                };
                let entry = tasks.lock().unwrap_or_else(|p| p.into_inner()).remove(&(key.clone(), attempt));
                if let Some(r) = entry {
                    let mut rep = report(&r.assignment, &r.status);
                    if let TaskEnd::Failed(e) = &outcome {
                        rep.error = Some(e.clone());
                    }
                    info!(task = %key, attempt, outcome = ?outcome, "task ended");
                    if ev_tx.send(rep).await.is_err() {
                        warn!(task = %key, "event reporter gone; the end of this task goes unreported");
                    }
                }
            }
            cmd = cmd_rx.recv() => match cmd {
                None => break true,
                Some(cmd) => handle(cmd, cfg, env, tasks, &mut running, &mut ids, &ev_tx).await,
            },
        }
    };
    stop_all(&mut running, tasks, http, cfg, id, !lost).await;
    session.cancel();
    while let Some(r) = helpers.join_next().await {
        if let Err(e) = r {
            warn!(error = %e, "worker helper task panicked");
        }
    }
    Ok(lost)
}

async fn handle(
    cmd: Command,
    cfg: &WorkerConfig,
    env: &TaskEnv,
    tasks: &TaskTable,
    running: &mut JoinSet<((TaskKey, u32), TaskEnd)>,
    ids: &mut HashMap<tokio::task::Id, (TaskKey, u32)>,
    ev_tx: &mpsc::Sender<TaskReport>,
) {
    match cmd {
        Command::Start(a) => {
            let status = Arc::new(TaskStatus::default());
            let cancel = CancellationToken::new();
            let key = a.key.clone();
            let attempt = a.attempt;
            tasks.lock().unwrap_or_else(|p| p.into_inner()).insert(
                (key.clone(), attempt),
                Running {
                    assignment: a.clone(),
                    status: status.clone(),
                    cancel: cancel.clone(),
                },
            );
            let env = env.clone();
            let ops_dir = cfg.data_dir.join("ops");
            let ev_tx = ev_tx.clone();
            let span = tracing::info_span!("task", job = %key.job, stage = key.pos.stage, task = key.pos.index, attempt);
            let id_key = (key.clone(), attempt);
            let handle = running.spawn(
                async move {
                    let exec = match &a.operator {
                        OperatorSpec::Exec { path, .. } => {
                            match resolve_exec(&env.store, &a, path, &ops_dir).await {
                                Ok(p) => Some(p),
                                Err(e) => {
                                    *status.error.lock().unwrap_or_else(|p| p.into_inner()) =
                                        Some(e.clone());
                                    status.set_state(TaskState::Failed);
                                    return ((key, attempt), TaskEnd::Failed(e));
                                }
                            }
                        }
                        OperatorSpec::Builtin { .. } => None,
                    };
                    // Announce the pid as soon as the operator runs.
                    let announce = {
                        let status = status.clone();
                        let a = a.clone();
                        async move {
                            loop {
                                if status.state() != TaskState::Starting
                                    || status.pid.load(Ordering::Relaxed) != 0
                                {
                                    if ev_tx.send(report(&a, &status)).await.is_err() {
                                        warn!(task = %a.key, "event reporter gone; the start goes unreported");
                                    }
                                    break;
                                }
                                status.changed.notified().await;
                            }
                        }
                    };
                    let run = run_task(env, a.clone(), exec, status.clone(), cancel);
                    tokio::pin!(run);
                    let outcome = tokio::select! {
                        o = &mut run => o,
                        _ = announce => run.await,
                    };
                    ((key, attempt), outcome)
                }
                .instrument(span),
            );
            ids.insert(handle.id(), id_key);
        }
        Command::Routes {
            job,
            routes,
            version,
        } => env.routes.set_many(&job, version, &routes),
        Command::StopJob { job } => stop_job(&job, tasks, env),
        Command::StopTask { key, attempt } => {
            if let Some(r) = tasks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&(key.clone(), attempt))
            {
                warn!(task = %key, attempt, "stopping a task the leader found stalled");
                r.cancel.cancel();
            }
        }
        Command::Kill { pid } => kill(pid, tasks),
    }
}

fn stop_job(job: &JobId, tasks: &TaskTable, env: &TaskEnv) {
    let t = tasks.lock().unwrap_or_else(|p| p.into_inner());
    for ((key, _), r) in t.iter() {
        if &key.job == job {
            r.cancel.cancel();
        }
    }
    drop(t);
    env.routes.remove(job);
}

fn kill(pid: u32, tasks: &TaskTable) {
    let ours = tasks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .any(|r| r.status.pid.load(Ordering::Relaxed) == pid);
    if !ours {
        warn!(
            pid,
            "kill-task for a process that is not one of this worker's operators; ignored"
        );
        return;
    }
    // SAFETY: plain syscall on a pid this worker spawned and has not reaped yet.
    let rc = unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    if rc != 0 {
        warn!(pid, error = %std::io::Error::last_os_error(), "kill-task failed");
    } else {
        info!(
            pid,
            "operator process killed on request (failure injection)"
        );
    }
}

async fn poll_commands(
    http: reqwest::Client,
    leader: String,
    id: WorkerId,
    tx: mpsc::Sender<Command>,
    session: CancellationToken,
) {
    let mut delay = Duration::from_millis(50);
    // Commands are numbered; the next poll acknowledges everything up to `handled`, and a
    // command delivered twice (its acknowledgement was lost) is skipped.
    let mut handled: u64 = 0;
    loop {
        let req = http
            .get(format!("{leader}/internal/commands/{id}"))
            .query(&[
                ("wait_ms", "20000".to_string()),
                ("after", handled.to_string()),
            ])
            .send();
        let res = tokio::select! {
            _ = session.cancelled() => return,
            r = req => r,
        };
        match res {
            Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {
                session.cancel();
                return;
            }
            Ok(r) => match r.json::<Vec<(u64, Command)>>().await {
                Ok(cmds) => {
                    delay = Duration::from_millis(50);
                    for (n, c) in cmds {
                        if n <= handled {
                            continue;
                        }
                        tokio::select! {
                            _ = session.cancelled() => return,
                            r = tx.send(c) => if r.is_err() { return; },
                        }
                        handled = n;
                    }
                    continue;
                }
                Err(e) => warn!(error = %e, "bad command batch from the leader"),
            },
            Err(e) => warn!(error = %e, "polling the leader for commands failed"),
        }
        tokio::select! {
            _ = session.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

async fn heartbeats(
    http: reqwest::Client,
    leader: String,
    id: WorkerId,
    every_ms: u64,
    tasks: TaskTable,
    registry: Arc<Registry>,
    session: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(every_ms.max(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = session.cancelled() => return,
            _ = tick.tick() => {}
        }
        let reports: Vec<TaskReport> = tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|r| {
                let mut rep = report(&r.assignment, &r.status);
                rep.queued = registry
                    .get(&r.assignment.key)
                    .map(|h| (h.tx.max_capacity() - h.tx.capacity()) as u32)
                    .unwrap_or(0);
                rep
            })
            .collect();
        let hb = Heartbeat {
            worker_id: id.clone(),
            tasks: reports,
        };
        let req = http
            .post(format!("{leader}/internal/heartbeat"))
            .timeout(Duration::from_secs(5))
            .json(&hb)
            .send();
        let res = tokio::select! {
            _ = session.cancelled() => return,
            r = req => r,
        };
        match res {
            Ok(r) => match r.json::<Known>().await {
                Ok(k) if !k.known => {
                    session.cancel();
                    return;
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "bad heartbeat answer"),
            },
            Err(e) => warn!(error = %e, "heartbeat failed"),
        }
    }
}

async fn send_events(
    http: reqwest::Client,
    leader: String,
    id: WorkerId,
    mut rx: mpsc::Receiver<TaskReport>,
    session: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = session.cancelled() => return,
            r = rx.recv() => match r { Some(r) => r, None => return },
        };
        let mut reports = vec![first];
        while let Ok(r) = rx.try_recv() {
            reports.push(r);
        }
        let ev = Events {
            worker_id: id.clone(),
            reports,
        };
        let mut delay = Duration::from_millis(20);
        loop {
            let req = http
                .post(format!("{leader}/internal/events"))
                .json(&ev)
                .send();
            let res = tokio::select! {
                _ = session.cancelled() => return,
                r = req => r,
            };
            match res.and_then(|r| r.error_for_status()) {
                Ok(_) => break,
                Err(e) => warn!(error = %e, "reporting task events failed; retrying"),
            }
            tokio::select! {
                _ = session.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }
}
