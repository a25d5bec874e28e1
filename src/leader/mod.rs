//! The leader: public HTTP/JSON API and worker control plane on one address, the job drivers,
//! the source and sink of every job (on its own data listener), the store, and the monitor that
//! declares silent workers dead.
//!
//! This file holds the leader's configuration, the shared [`Leader`] context with
//! [`Leader::submit`], and [`run`], which starts the parts: the HTTP surface (`api`), the
//! monitor (`monitor`) and one driver per job (`driver`), over the state in `state`.

pub mod api;
mod dashboard;
mod cleanup;
pub mod driver;
pub mod placement;
mod recovery;
mod monitor;
pub mod owned;
pub mod state;
pub mod validate;

use crate::dataplane::{listener, DataConfig};
use crate::model::check::{check_spec, Problem};
use crate::model::ids::JobId;
use crate::model::spec::JobSpec;
use crate::runtime::sink::SinkProgress;
use crate::runtime::store::Store;
use crate::runtime::task::TaskEnv;
use anyhow::Context;
use state::{lock, JobEvent, JobRec, SharedState};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

/// How to run a leader.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// Data directory (the store lives in `DIR/store`).
    pub data_dir: PathBuf,
    /// A worker silent for this long is dead.
    pub heartbeat_timeout: Duration,
    /// How often workers heartbeat.
    pub heartbeat_interval: Duration,
    /// Restarts of one task before its job fails.
    pub max_restarts: u32,
    /// Keep input logs of ended jobs.
    pub keep_logs: bool,
    /// How long ended jobs stay listed.
    pub retention: Duration,
    /// Data-plane tunables.
    pub data: DataConfig,
    /// A running task with input waiting and no progress for this long is stalled: it is
    /// stopped and restarted like a failed one.
    pub stall_timeout: Duration,
    /// Host name or IP workers use to reach the leader's data listener (default: the
    /// `--listen` IP, or this host's name when that is a wildcard).
    pub advertise_host: Option<String>,
    /// Which executables jobs may name (validated at submission; workers check again).
    pub exec_policy: crate::runtime::fetch::ExecPolicy,
    /// The cluster secret every door checks (none: loopback only).
    pub token: Option<crate::protocol::auth::Secret>,
    /// The store: an S3-compatible bucket, else the directory `DATA_DIR/store`.
    pub store: Option<crate::runtime::store::S3Location>,
    /// Receives the leader's context once it runs (`rainstorm run` submits in-process: only
    /// it may use local paths, which the HTTP API refuses).
    pub ready: Option<mpsc::UnboundedSender<Arc<Leader>>>,
}

impl Default for LeaderConfig {
    fn default() -> Self {
        LeaderConfig {
            data_dir: PathBuf::from("rainstorm-data"),
            heartbeat_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_millis(500),
            max_restarts: 20,
            keep_logs: false,
            retention: Duration::from_secs(3600),
            data: DataConfig::default(),
            advertise_host: None,
            stall_timeout: Duration::from_secs(60),
            exec_policy: Default::default(),
            token: None,
            store: None,
            ready: None,
        }
    }
}

/// A validated job handed to the leader's main loop, which owns the drivers' `JoinSet`.
type NewJob = (
    JobId,
    JobSpec,
    mpsc::Receiver<JobEvent>,
    CancellationToken,
    watch::Sender<SinkProgress>,
);

/// Shared leader context, handed to API handlers and job drivers.
pub struct Leader {
    /// Cluster state (one lock, never held across `.await`).
    pub state: SharedState,
    /// The store.
    pub store: Store,
    /// Data-plane environment of the source and sink.
    pub env: TaskEnv,
    /// Address of the leader's data listener.
    pub data_addr: String,
    /// Configuration.
    pub cfg: LeaderConfig,
    /// Output streams being served now (a follower that goes away must free its stream).
    pub output_streams: Arc<std::sync::atomic::AtomicI64>,
    spawn_tx: mpsc::Sender<NewJob>,
}

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The job is invalid.
    #[error("invalid job")]
    Invalid(Vec<Problem>),
    /// The job's files clash with a running job's (the message names both jobs).
    #[error("{0}")]
    Conflict(String),
    /// The leader is shutting down.
    #[error("the leader is shutting down")]
    ShuttingDown,
}

impl Leader {
    /// Validates and starts a job; returns its id.
    pub async fn submit(self: &Arc<Self>, mut spec: JobSpec) -> Result<JobId, SubmitError> {
        if spec.source_name.is_empty() {
            spec.source_name = spec.source_path.clone();
        }
        let mut problems = check_spec(&spec);
        if problems.is_empty() {
            let present = self.present_in_store(&spec).await;
            problems = validate::check(&spec, &self.store, &self.cfg.exec_policy, &present);
        }
        if !problems.is_empty() {
            return Err(SubmitError::Invalid(problems));
        }
        let pinned = self.pin_operators(&mut spec).await?;
        let files = owned::job_files(&spec, &pinned);
        let sink_file = driver::local_file(self, &spec, &spec.sink_path).map_err(|e| {
            SubmitError::Invalid(vec![Problem::new("sink.path", &spec.sink_path, e)])
        })?;
        let (ev_tx, ev_rx) = mpsc::channel(256);
        let cancel = CancellationToken::new();
        let (progress_tx, progress_rx) = watch::channel(SinkProgress::default());
        let rec = JobRec::new(spec.clone(), ev_tx, cancel.clone(), progress_rx, sink_file);
        let id = {
            let mut st = lock(&self.state);
            let id = st.claim_files(files).map_err(SubmitError::Conflict)?;
            let added = st.add_job(rec);
            debug_assert_eq!(id, added);
            added
        };
        info!(job = %id, name = ?spec.name, "job submitted");
        if self
            .spawn_tx
            .send((id.clone(), spec, ev_rx, cancel, progress_tx))
            .await
            .is_err()
        {
            return Err(SubmitError::ShuttingDown);
        }
        Ok(id)
    }
}

/// Runs the leader on an already-bound HTTP listener until `shutdown`; returns when every job
/// driver, connection and background task has finished.
pub async fn run(
    cfg: LeaderConfig,
    http: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let store = match &cfg.store {
        Some(loc) => Store::s3(loc).context("opening the S3 store")?,
        None => Store::local(cfg.data_dir.join("store")).context("opening the store")?,
    };
    let http_addr = http.local_addr()?;
    let data = TcpListener::bind((http_addr.ip(), 0))
        .await
        .context("binding the leader's data listener")?;
    let data_port = data.local_addr()?.port();
    let host = match &cfg.advertise_host {
        Some(h) => h.clone(),
        None => crate::dataplane::net::advertise_host(http_addr.ip()),
    };
    let data_addr = format!("{host}:{data_port}");
    let env = TaskEnv::new(
        cfg.data.clone(),
        store.clone(),
        cfg.data_dir.clone(),
        cfg.token.as_ref(),
    );
    let registry = env.registry.clone();
    let env_routes = env.routes.clone();
    let data_auth = env.auth.clone();
    let (spawn_tx, mut spawn_rx) = mpsc::channel(16);
    let leader = Arc::new(Leader {
        state: Arc::new(Mutex::new(state::State::default())),
        store,
        env,
        data_addr,
        cfg: cfg.clone(),
        output_streams: Arc::default(),
        spawn_tx,
    });
    if let Some(tx) = &cfg.ready {
        let _ = tx.send(leader.clone());
    }
    let mut bg = JoinSet::new();
    let stop_net = CancellationToken::new();
    bg.spawn(listener::serve(
        data,
        registry,
        env_routes.clone(),
        data_auth,
        stop_net.clone(),
    ));
    bg.spawn(monitor::monitor(leader.clone(), stop_net.clone()));
    let app = api::router(leader.clone());
    let http_stop = stop_net.clone();
    bg.spawn(async move {
        let serve = axum::serve(http, app)
            .with_graceful_shutdown(async move { http_stop.cancelled().await });
        if let Err(e) = serve.await {
            warn!(error = %e, "HTTP server failed");
        }
    });
    info!(api = %http_addr, data = %leader.data_addr, "leader ready");
    let mut drivers = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some((id, spec, ev, cancel, progress)) = spawn_rx.recv() => {
                let span = tracing::info_span!("job", job = %id);
                drivers.spawn(driver::drive(leader.clone(), id, spec, ev, cancel, progress).instrument(span));
            }
            Some(r) = drivers.join_next(), if !drivers.is_empty() => {
                if let Err(e) = r {
                    warn!(error = %e, "job driver panicked");
                }
            }
        }
    }
    // Graceful stop: cancel running jobs and let their drivers clean up and record it.
    {
        let st = lock(&leader.state);
        for j in st.jobs.values() {
            j.cancel.cancel();
        }
    }
    while drivers.join_next().await.is_some() {}
    stop_net.cancel();
    while bg.join_next().await.is_some() {}
    Ok(())
}
