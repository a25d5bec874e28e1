//! The leader: public HTTP/JSON API and worker control plane on one address, the job drivers,
//! the store, and the monitor that declares silent workers dead. It has no data plane: every
//! task of a job, its source and its sink included, runs on a worker.
//!
//! This file holds the leader's configuration, the shared [`Leader`] context with
//! [`Leader::submit`], and [`run`], which starts the parts: the HTTP surface (`api`), the
//! monitor (`monitor`) and one driver per job (`driver`), over the state in `state`.
#![warn(missing_docs)]

use rainstorm_coordinator as coordinator;
use rainstorm_model as model;
use rainstorm_protocol as protocol;

pub mod api;
mod cleanup;
mod config;
mod dashboard;
pub mod driver;
mod files;
mod gate;
pub mod job;
mod job_ids;
pub mod meters;
mod monitor;
pub mod owned;
pub mod persist;
pub mod pins;
mod replaced;
mod roster;
mod scaling;
mod segment_cache;
pub mod server;
pub mod state;
mod store_wait;
pub mod submitting;
pub mod validate;
mod views;

use crate::coordinator::Input;
use crate::model::check::{check_spec, Problem};
use crate::model::ids::JobId;
use crate::model::spec::JobSpec;
use anyhow::Context;
pub use config::LeaderConfig;
use job::JobRec;
use rainstorm_store::output::SinkProgress;
use rainstorm_store::seal::SealKey;
use rainstorm_store::store::Store;
use state::{lock, SharedState};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

/// A validated job handed to the leader's main loop, which owns the drivers' `JoinSet`.
type NewJob = (
    JobId,
    JobSpec,
    mpsc::Receiver<Input>,
    CancellationToken,
    watch::Sender<SinkProgress>,
    Option<crate::coordinator::record::RunState>,
);

/// Shared leader context, handed to API handlers and job drivers.
pub struct Leader {
    /// Cluster state (one lock, never held across `.await`).
    pub state: SharedState,
    /// The store.
    pub store: Store,
    /// Configuration.
    pub cfg: LeaderConfig,
    /// Output streams being served now (a follower that goes away must free its stream).
    pub output_streams: Arc<std::sync::atomic::AtomicI64>,
    /// Sink-log objects' text, shared by the followers of running jobs.
    pub(crate) segments: Arc<segment_cache::SegmentCache>,
    /// Worker command polls parked waiting for a command now (answered at once on shutdown).
    pub waiting_polls: Arc<std::sync::atomic::AtomicI64>,
    /// Store requests workers made through the leader (`/internal/store`): zero when every
    /// worker reaches the store itself, since no other job data passes through the leader.
    pub worker_store_requests: std::sync::atomic::AtomicU64,
    /// Durable state under the data dir (job counter and job records).
    pub persist: persist::Persist,
    /// Cancelled when the leader starts stopping: long polls answer at once, output streams
    /// end, background retries give up (what they had not done is durable and redone by the
    /// next leader).
    pub shutdown: CancellationToken,
    /// Background removals of ended jobs' leftovers, retried with backoff.
    pub cleanups: Mutex<JoinSet<()>>,
    /// Pinned operators submissions hold and those being removed (`pins`).
    pub pins: Arc<pins::Pins>,
    /// Bumped whenever a worker registers, so whoever waits for workers to join (the embedded
    /// cluster before it submits) wakes on the join instead of polling.
    pub joined: tokio::sync::watch::Sender<u64>,
    /// The cluster id its store holds (`rainstorm_store::marker`): a worker with a store of its
    /// own must read the same one there to register.
    pub store_id: String,
    spawn_tx: mpsc::Sender<NewJob>,
}

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The job is invalid.
    #[error("invalid job")]
    Invalid(Vec<Problem>),
    /// The job's files clash with a running job's (the message names both jobs).
    #[error(transparent)]
    Conflict(#[from] owned::FileConflict),
    /// The leader is shutting down.
    #[error("the leader is shutting down")]
    ShuttingDown,
    /// The leader's durable state or the store failed.
    #[error("{0}")]
    Internal(String),
}

impl Leader {
    /// Validates and starts a job; returns its id.
    pub async fn submit(self: &Arc<Self>, mut spec: JobSpec) -> Result<JobId, SubmitError> {
        if spec.source_name.is_empty() {
            spec.source_name = spec.source_path.clone();
        }
        let mut problems = check_spec(&spec);
        if problems.is_empty() {
            let st = lock(&self.state);
            problems = st.reads_running_output(&spec);
            problems.extend(validate::links_fit(
                &spec,
                validate::link_room(&st).as_ref(),
            ));
        }
        // From before its files are checked until the job claims them, none can be deleted.
        let _held = match problems.is_empty() {
            true => Some(
                self.hold_for_submission(&spec)
                    .map_err(SubmitError::Conflict)?,
            ),
            false => None,
        };
        // The files are looked at even when the job has other problems, so that one answer
        // lists them all (hostile probe 12: a bad regex hid a missing source and a missing
        // operator until it was fixed); a field refused already is not looked up.
        let present = self.present_in_store(&spec).await;
        let files = validate::check(&spec, &self.store, &self.cfg.exec_policy, &present);
        model::jobfile::add_problems(&mut problems, files);
        if !problems.is_empty() {
            return Err(SubmitError::Invalid(problems));
        }
        let submitted = spec.clone();
        // Its blobs are held until its job names them (or it is refused): none is removed
        // in between (`pins`).
        let (pinned, _held) = self.pin_operators(&mut spec).await?;
        let files = owned::job_files(&spec, &pinned);
        let (ev_tx, ev_rx) = mpsc::channel(256);
        let cancel = CancellationToken::new();
        let (progress_tx, progress_rx) = watch::channel(SinkProgress::default());
        let mut rec = JobRec::new(spec.clone(), ev_tx, cancel.clone(), progress_rx);
        rec.logs_left = !(spec.keep_logs || self.cfg.keep_logs);
        rec.operator_names = views::pinned_names(&submitted, &spec);
        let id = self.new_job_id().await?;
        // Durable before anyone can see it: a restarted leader knows every job it showed.
        self.persist
            .put_job(rec.stored(&id))
            .await
            .map_err(|e| SubmitError::Internal(format!("recording the job: {e:#}")))?;
        let admitted = {
            let mut st = lock(&self.state);
            // Again under the lock that records the job: two jobs submitted at once must not
            // both count on the same room.
            let over = validate::links_fit(&spec, validate::link_room(&st).as_ref());
            if !over.is_empty() {
                Err(SubmitError::Invalid(over))
            } else {
                // Ended jobs that wrote where it writes keep their output there until it
                // writes its own (`cleanup.rs`): one that never does leaves theirs.
                let claimed = st.claim_files(&id, files);
                claimed
                    .map(|()| st.add_job(id.clone(), rec))
                    .map_err(SubmitError::Conflict)
            }
        };
        match admitted {
            Ok(()) => {}
            Err(refused) => {
                // The id stays used up: ids are never handed out twice.
                if let Err(e) = self.persist.remove_job(id.clone()).await {
                    warn!(job = %id, error = %e, "could not forget a refused job's record");
                }
                return Err(refused);
            }
        };
        info!(job = %id, name = ?spec.name, "job submitted");
        if self
            .spawn_tx
            .send((id.clone(), spec, ev_rx, cancel, progress_tx, None))
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
    // One leader per data dir, for this whole function.
    let _dir_lock = match &cfg.dir_lock {
        Some(l) => l.clone(),
        None => Arc::new(persist::DirLock::acquire(&cfg.data_dir)?),
    };
    let persist = persist::Persist::open_dir(&cfg.data_dir, cfg.scratch)?;
    let store = match &cfg.store {
        Some(loc) => Store::s3(loc).context("opening the S3 store")?,
        None if cfg.scratch => {
            Store::local_scratch(cfg.data_dir.join("store")).context("opening the store")?
        }
        None => Store::local(cfg.data_dir.join("store")).context("opening the store")?,
    };
    // What the engine writes into the store is sealed with the cluster secret (`log::seal`).
    let store = store.with_seal(SealKey::from_secret(cfg.token.as_ref()));
    let fresh = crate::protocol::auth::random_hex(16).context("making the cluster id")?;
    let store_id = store_wait::cluster_id(&store, &fresh).await?;
    let http_addr = http.local_addr()?;
    let (spawn_tx, mut spawn_rx) = mpsc::channel(16);
    let leader = Arc::new(Leader {
        state: Arc::new(Mutex::new(state::State::default())),
        store,
        cfg: cfg.clone(),
        output_streams: Arc::default(),
        segments: Arc::default(),
        waiting_polls: Arc::default(),
        worker_store_requests: Default::default(),
        persist,
        shutdown: CancellationToken::new(),
        cleanups: Mutex::new(JoinSet::new()),
        pins: Arc::default(),
        joined: tokio::sync::watch::Sender::new(0),
        store_id,
        spawn_tx,
    });
    let resumed = cleanup::restore_jobs(&leader).await?;
    if let Some(tx) = &cfg.ready {
        let _ = tx.send(leader.clone());
    }
    let mut bg = JoinSet::new();
    let stop_net = CancellationToken::new();
    bg.spawn(monitor::monitor(leader.clone(), stop_net.clone()));
    let app = api::router(leader.clone());
    let vouch: server::Vouch = {
        let l = leader.clone();
        Arc::new(move |headers| api::vouched(&l, headers))
    };
    let limits = cfg.api;
    bg.spawn(server::serve(
        http,
        app,
        vouch,
        limits,
        stop_net.clone(),
        STOP_SERVERS * 2 / 3,
    ));
    info!(api = %http_addr, max_conns = limits.effective_max_conns(), "leader ready");
    let mut drivers = JoinSet::new();
    for (id, spec, ev, cancel, progress, run) in resumed {
        let span = tracing::info_span!("job", job = %id);
        drivers.spawn(
            driver::drive(leader.clone(), id, spec, ev, cancel, progress, run).instrument(span),
        );
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some((id, spec, ev, cancel, progress, run)) = spawn_rx.recv() => {
                let span = tracing::info_span!("job", job = %id);
                drivers.spawn(driver::drive(leader.clone(), id, spec, ev, cancel, progress, run).instrument(span));
            }
            Some(r) = drivers.join_next(), if !drivers.is_empty() => {
                if let Err(e) = r {
                    warn!(error = %e, "job driver panicked");
                }
            }
        }
    }
    // Graceful stop, bounded (SIGTERM must end a leader within 2 s): pending long polls are
    // answered, output streams are cut (their followers reconnect to the next leader) and
    // retries give up at once; then the servers stop. Jobs are not ended: a leader's stop is
    // not a job's (`rainstorm cancel` is), so, as after a crash, the next leader on this data
    // dir carries each one on from its record, and the workers keep its tasks running
    // meanwhile. Cancelling them here wrote a running job's partial output as its final one
    // (hostile probe). The drivers are stopped where they wait: the records are durable
    // before they change, so the next leader sees the truth.
    let started = std::time::Instant::now();
    leader.shutdown.cancel();
    drivers.shutdown().await;
    let mut cleanups =
        std::mem::take(&mut *leader.cleanups.lock().unwrap_or_else(|p| p.into_inner()));
    join_within(&mut cleanups, STOP_SERVERS, "leftover removals").await;
    stop_net.cancel();
    join_within(&mut bg, STOP_SERVERS, "servers").await;
    info!(ms = started.elapsed().as_millis() as u64, "leader stopped");
    Ok(())
}

/// How long a stopping leader waits for its servers (HTTP connections, data listener).
const STOP_SERVERS: Duration = Duration::from_millis(600);

/// Joins every task of `set`, aborting those still running after `limit`.
pub(crate) async fn join_within<T: 'static>(set: &mut JoinSet<T>, limit: Duration, what: &str) {
    let joined = tokio::time::timeout(limit, async {
        while let Some(r) = set.join_next().await {
            if let Err(e) = r {
                if e.is_panic() {
                    warn!(error = %e, "{what}: a task panicked");
                }
            }
        }
    })
    .await;
    if joined.is_err() {
        warn!(
            left = set.len(),
            "{what} still running after {} ms; aborted",
            limit.as_millis()
        );
        set.shutdown().await;
    }
}
