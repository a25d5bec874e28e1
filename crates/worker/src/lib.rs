//! A worker: registers with the leader, serves its one data listener, runs task attempts as
//! the leader commands, heartbeats their progress, and reports each attempt's end exactly once.
//! Every spawned task belongs to a `JoinSet` owned here and is joined on shutdown.
//!
//! This file holds the public entry point ([`run`], [`WorkerConfig`]) and the table of running
//! attempts the other parts share: `session` (registration and the session loop), `commands`
//! (polling for commands and carrying them out) and `report` (heartbeats and events).

#![warn(missing_docs)]

use rainstorm_dataplane as dataplane;
use rainstorm_model as model;
use rainstorm_protocol as protocol;
use rainstorm_runtime as runtime;

mod commands;
mod drain;
mod link;
mod report;
mod session;
mod state;

use crate::dataplane::listener;
use crate::dataplane::DataConfig;
use crate::model::ids::TaskKey;
use crate::protocol::auth::Identity;
use crate::protocol::control::TaskAssignment;
use crate::runtime::seal::SealKey;
use crate::runtime::store::Store;
use crate::runtime::task::{TaskEnv, TaskStatus};
use anyhow::Context;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

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
    /// Which executables may run (the store's, and `--allow-exec` directories).
    pub exec_policy: crate::runtime::fetch::ExecPolicy,
    /// Operators start as this user (`--run-as`).
    pub run_as: Option<crate::runtime::exec::RunAs>,
    /// The cluster secret (proved at registration; the data plane uses the worker's own key).
    pub token: Option<crate::protocol::auth::Secret>,
    /// How many operator tasks it runs at once (`--slots`; the leader places no more).
    pub slots: u32,
    /// How long a drain (SIGTERM, `rainstorm drain`) may wait for the leader to move this
    /// worker's tasks before it stops what is left (reported failed: recovered as usual).
    pub drain_timeout: Duration,
}

/// One task attempt this worker runs.
struct Running {
    assignment: TaskAssignment,
    status: Arc<TaskStatus>,
    cancel: CancellationToken,
}

/// The attempts this worker runs, by task and attempt number.
type TaskTable = Arc<Mutex<HashMap<(TaskKey, u32), Running>>>;

/// Locks the task table (a poisoned lock is still usable: entries are plain data).
fn lock_tasks(tasks: &TaskTable) -> std::sync::MutexGuard<'_, HashMap<(TaskKey, u32), Running>> {
    tasks.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits `delay` unless `token` is cancelled first; returns whether the wait ran out (so the
/// caller may retry).
async fn pause(token: &CancellationToken, delay: Duration) -> bool {
    token
        .run_until_cancelled(tokio::time::sleep(delay))
        .await
        .is_some()
}

/// Creates `dir` if need be and checks that a file can be made in it.
fn usable_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    tempfile::NamedTempFile::new_in(dir).map(drop)
}

/// Runs a worker until `shutdown`, which drains it: it tells the leader, which moves its
/// tasks to other workers, and leaves once it runs nothing (or at `drain_timeout`, stopping
/// what is left, reported failed). A worker without a leader to drain through stops at once.
pub async fn run(cfg: WorkerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Processes an operator detaches from its group become ours, and are killed when it ends.
    crate::runtime::exec::adopt_orphans().context("becoming the subreaper of operators")?;
    // Its data dir holds operators, spools and output: one it cannot write is an error now,
    // not a worker that registers and then fails every task placed on it (hostile probe 14).
    usable_dir(&cfg.data_dir).with_context(|| {
        format!(
            "the worker's data dir {} cannot be used",
            cfg.data_dir.display()
        )
    })?;
    if let Some(who) = &cfg.run_as {
        crate::runtime::exec::run_operators_as(who.clone())?;
        // The operator cache must be reachable by that user (created open to it).
        let cache = cfg.data_dir.join("ops").join("sha256");
        std::fs::create_dir_all(&cache)
            .with_context(|| format!("creating the operator cache {}", cache.display()))?;
        for d in [cfg.data_dir.join("ops"), cache.clone()] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("opening {} to --run-as", d.display()))?;
        }
        who.check_reachable(&cache)?;
    }
    let bound_listener = TcpListener::bind(&cfg.data_listen)
        .await
        .with_context(|| format!("binding the data listener on {}", cfg.data_listen))?;
    let bound = bound_listener.local_addr()?;
    let data_addr = match &cfg.advertise {
        Some(a) => crate::dataplane::net::advertised(a, bound.port()),
        None => format!(
            "{}:{}",
            crate::dataplane::net::advertise_host(bound.ip(), leader_addr(&cfg.leader).await),
            bound.port()
        ),
    };
    // This process's own key, in memory only: it signs the registration and every Hello, and
    // a rejoin under this worker's id is accepted only with it.
    let identity = Identity::generate().context("making the worker's key")?;
    // Output spools that earlier processes on this data dir left (killed with a sink running).
    crate::runtime::sink::remove_orphans(&cfg.data_dir);
    let env = TaskEnv::new(
        cfg.data.clone(),
        (cfg.store.clone())
            .unwrap_or_else(|| Store::http_with_token(&cfg.leader, cfg.token.as_ref()))
            .with_seal(SealKey::from_secret(cfg.token.as_ref())),
        cfg.data_dir.clone(),
        identity,
    );
    let http = crate::runtime::client::http_client_for(&cfg.leader)
        .timeout(Duration::from_secs(60))
        .build()
        .context("building the HTTP client")?;
    let beat_http = crate::runtime::client::http_client_for(&cfg.leader)
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(1)
        .build()
        .context("building the heartbeats' HTTP client")?;
    tracing::info!(
        max_conns = cfg.data.max_conns,
        mux = cfg.data.mux != 0,
        local = cfg.data.local != 0,
        "data plane: at most this many links in (listener) and out (links) at once; with mux, links to one process share its TCP connection"
    );

    let mut bg = JoinSet::new();
    let net_stop = CancellationToken::new();
    // Links' connections and sessions of many links alike, whatever this worker's own
    // links use (`RAINSTORM_DATA_MUX` is only how it connects).
    let acceptor = crate::dataplane::mux::MuxAcceptor::new(
        bound_listener,
        crate::dataplane::mux::MuxConfig::of(&cfg.data),
    );
    // And this process's own links to it, in memory (`dataplane::local`), whatever this
    // worker's own links use: an embedded cluster's other workers may use them.
    let hub = crate::dataplane::local::LocalHub::process();
    let acceptor = crate::dataplane::local::LocalAcceptor::new(acceptor, &hub, &data_addr);
    bg.spawn(listener::serve(
        acceptor,
        env.registry.clone(),
        env.routes.clone(),
        listener::Limits::of(&cfg.data),
        net_stop.clone(),
    ));
    let net = env.net.clone();
    let worker = state::Worker {
        cfg,
        env,
        http,
        beat_http,
        data_addr,
        tasks: Arc::default(),
    };
    let result = worker.serve(&shutdown).await;
    net_stop.cancel();
    while bg.join_next().await.is_some() {}
    // The links' sessions, once no task runs.
    net.shutdown().await;
    result
}

/// The leader's address, from its URL (resolved once, at start-up): what a worker bound to a
/// wildcard address advertises the route toward (`dataplane::net::advertise_host`).
async fn leader_addr(leader: &str) -> Option<std::net::SocketAddr> {
    let url = reqwest::Url::parse(leader).ok()?;
    let host = url
        .host_str()?
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let port = url.port_or_known_default()?;
    let first = tokio::net::lookup_host((host.as_str(), port))
        .await
        .ok()?
        .next();
    first
}
