//! `rainstorm run`: a leader and N workers on loopback inside this process — the same code
//! paths as a real cluster (HTTP control plane, TCP data plane), with paths resolved locally.

use crate::cli::client::{succeeded, Client};
use crate::dataplane::DataConfig;
use crate::leader::{self, state::lock, LeaderConfig};
use crate::model::spec::{JobSpec, OperatorSpec, PathMode};
use crate::protocol::auth::Secret;
use crate::protocol::control::{JobInfo, WorkerState};
use crate::runtime::fetch::ExecPolicy;
use crate::runtime::store::Store;
use crate::worker::{self, WorkerConfig};
use anyhow::Context;
use std::path::Path;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Resolves a job's relative paths against `cwd` and marks them local.
pub fn localize(mut spec: JobSpec, cwd: &Path) -> JobSpec {
    let abs = |p: &str| -> String {
        let path = Path::new(p);
        if path.is_absolute() {
            p.to_string()
        } else {
            cwd.join(path).to_string_lossy().into_owned()
        }
    };
    if spec.source_name.is_empty() {
        spec.source_name = spec.source_path.clone();
    }
    spec.source_path = abs(&spec.source_path);
    spec.sink_path = through_links(&abs(&spec.sink_path));
    for st in &mut spec.stages {
        if let OperatorSpec::Exec { path, .. } = &mut st.operator {
            // A bare name is a file in the current directory if there is one, else a command
            // looked up on PATH (like `cat`).
            if path.contains('/') || cwd.join(path.as_str()).is_file() {
                *path = abs(path);
            }
        }
    }
    spec.paths = PathMode::Local;
    spec
}

/// A local sink named by a symbolic link is written where the link points, as a shell's `>`
/// writes: the output replaces the target's content, and the link stays (hostile probe 14: the
/// link was replaced by a file). Links to links are followed, a few deep; a dangling link's
/// target is made.
fn through_links(path: &str) -> String {
    let mut p = std::path::PathBuf::from(path);
    for _ in 0..16 {
        match std::fs::read_link(&p) {
            Ok(to) => {
                p = match p.parent() {
                    Some(dir) => dir.join(to),
                    None => to,
                }
            }
            Err(_) => break,
        }
    }
    p.to_string_lossy().into_owned()
}

/// A running embedded cluster.
pub struct Cluster {
    /// Client of its leader.
    pub client: Client,
    shutdown: CancellationToken,
    workers_shutdown: CancellationToken,
    parts: JoinSet<anyhow::Result<()>>,
    worker_parts: JoinSet<anyhow::Result<()>>,
    _dir: Option<tempfile::TempDir>,
    /// This run's hold on its directory (`scratch`), until the directory is removed.
    _held: Option<std::fs::File>,
    /// The leader in this process: jobs with local paths are submitted to it directly (the
    /// HTTP API takes store paths only).
    pub leader: std::sync::Arc<leader::Leader>,
}

impl Cluster {
    /// Starts a leader and `workers` workers on loopback; returns once all workers joined.
    /// Operators obey `policy`, on the leader and on every worker.
    pub async fn start(
        workers: usize,
        keep_logs: bool,
        policy: ExecPolicy,
    ) -> anyhow::Result<Cluster> {
        // What runs killed before they could clean up left (`scratch`): tens of megabytes
        // each, removed off the runtime's threads.
        let tmp = std::env::temp_dir();
        let removed = tokio::task::spawn_blocking(move || super::scratch::remove_abandoned(&tmp))
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "removing abandoned run directories stopped");
                Vec::new()
            });
        for gone in removed {
            tracing::info!(dir = %gone.display(), "removed the directory of a run that had ended without removing it");
        }
        let dir = tempfile::Builder::new()
            .prefix(super::scratch::PREFIX)
            .tempdir()
            .context("creating a temporary data directory")?;
        let held = super::scratch::hold(dir.path())
            .context("marking the temporary data directory as this run's")?;
        let http = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the leader")?;
        let url = format!("http://{}", http.local_addr()?);
        let shutdown = CancellationToken::new();
        let workers_shutdown = CancellationToken::new();
        let mut parts = JoinSet::new();
        let mut worker_parts = JoinSet::new();
        // A fresh secret: even on loopback, another local user cannot join or feed the job.
        let token = Secret::random()?;
        let cfg = LeaderConfig {
            token: Some(token.clone()),
            data_dir: dir.path().join("leader"),
            // The temporary directory goes with this process, nothing in it outlives the run
            // (unless kept for inspection): its store is written without fsync.
            scratch: !keep_logs,
            keep_logs,
            exec_policy: policy.clone(),
            ..LeaderConfig::default()
        };
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
        let cfg = LeaderConfig {
            ready: Some(ready_tx),
            ..cfg
        };
        let store = match cfg.scratch {
            true => Store::local_scratch(cfg.data_dir.join("store"))?,
            false => Store::local(cfg.data_dir.join("store"))?,
        };
        parts.spawn(leader::run(cfg, http, shutdown.clone()));
        // The workers' links to each other are in memory (`dataplane::local`), which takes no
        // descriptor: none is fitted to a share of this process's open-files limit (that
        // refused `--workers 70` for want of descriptors it would never use; hostile probe 14).
        for i in 0..workers {
            let wc = WorkerConfig {
                leader: url.clone(),
                data_dir: dir.path().join(format!("worker-{i}")),
                data_listen: "127.0.0.1:0".into(),
                advertise: None,
                store: Some(store.clone()),
                data: DataConfig::from_env(),
                exec_policy: policy.clone(),
                run_as: None,
                token: Some(token.clone()),
                // One process runs the whole cluster: its workers take whatever one job needs.
                slots: crate::model::check::MAX_TASKS as u32,
                drain_timeout: Duration::from_secs(10),
            };
            worker_parts.spawn(worker::run(wc, workers_shutdown.clone()));
        }
        let leader = ready_rx
            .recv()
            .await
            .context("the embedded leader did not start")?;
        let client = Client::new(&url).with_token(Some(token));
        // Woken by each registration, not by a timer: the job is submitted the moment the
        // last worker is in.
        let mut joined = leader.joined.subscribe();
        let all_in = async {
            loop {
                let alive = lock(&leader.state)
                    .workers
                    .values()
                    .filter(|w| w.state == WorkerState::Alive)
                    .count();
                if alive >= workers {
                    return Ok(());
                }
                joined.changed().await?;
            }
        };
        match tokio::time::timeout(Duration::from_secs(30), all_in).await {
            Ok(Ok(())) => {}
            Ok(Err(tokio::sync::watch::error::RecvError { .. })) => {
                anyhow::bail!("the embedded leader stopped before its workers joined")
            }
            Err(_) => anyhow::bail!("the embedded workers did not join within 30 s"),
        }
        // With --keep-logs the data directory outlives the cluster (it is not deleted).
        let (dir, held) = if keep_logs {
            super::scratch::release(dir.path(), held);
            let kept = dir.keep();
            eprintln!(
                "rainstorm: keeping the cluster's data (input logs) in {}",
                kept.display()
            );
            (None, None)
        } else {
            (Some(dir), Some(held))
        };
        Ok(Cluster {
            client,
            shutdown,
            workers_shutdown,
            parts,
            worker_parts,
            _dir: dir,
            _held: held,
            leader,
        })
    }

    /// Stops everything and waits for it: workers first (they report to a leader that is
    /// still there), then the leader.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.workers_shutdown.cancel();
        let workers = join_all(&mut self.worker_parts, "worker").await;
        self.shutdown.cancel();
        let leader = join_all(&mut self.parts, "cluster").await;
        workers.and(leader)
    }
}

/// Waits for every part; returns the first error (or panic) among them.
async fn join_all(parts: &mut JoinSet<anyhow::Result<()>>, what: &str) -> anyhow::Result<()> {
    let mut first_err = None;
    while let Some(r) = parts.join_next().await {
        let err = match r {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(e) => anyhow::anyhow!("{what} task panicked: {e}"),
        };
        first_err = first_err.or(Some(err));
    }
    first_err.map_or(Ok(()), Err)
}

/// Runs one job on a fresh embedded cluster, printing its output lines to stdout. Its operators
/// obey `policy` (`ExecPolicy::local_run`: the current directory, the job file's directory,
/// commands on PATH and `--allow-exec` directories).
pub async fn run_job(
    spec: JobSpec,
    workers: usize,
    keep_logs: bool,
    policy: ExecPolicy,
) -> anyhow::Result<JobInfo> {
    // Registered first thing: a Ctrl-C during start-up is not lost (and a process started in
    // the background, which inherits SIGINT as ignored, still gets it from here on).
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("watching SIGINT")?;
    // SIGTERM (what `timeout`, systemd and CI send) stops a run as Ctrl-C does: the job is
    // cancelled and its committed output written, and the temporary store removed (hostile
    // probe 14: it killed `run` at once, leaving its store in $TMPDIR).
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("watching SIGTERM")?;
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let spec = localize(spec, &cwd);
    let cluster = Cluster::start(workers.max(1), keep_logs, policy).await?;
    // After a first interrupt: the watch for a second one, joined once the run is over.
    let mut again: Option<tokio::task::JoinHandle<()>> = None;
    let result = async {
        let id = cluster
            .leader
            .submit(spec.clone())
            .await
            .map_err(|e| match e {
                leader::SubmitError::Invalid(problems) => {
                    anyhow::Error::from(crate::cli::client::Rejected {
                        message: "invalid job".into(),
                        problems,
                    })
                }
                other => anyhow::anyhow!("{other}"),
            })?
            .0;
        eprintln!("rainstorm: job {id} running on {workers} embedded workers");
        let follow =
            crate::cli::progress::follow_local_to_stdout(&cluster.leader, &cluster.client, &id);
        tokio::select! {
            info = follow => {
                if info.is_err() {
                    // Its output could not be printed (a reader like `head` that had what it
                    // wanted closed the pipe): the job is cancelled, not waited out by the
                    // workers' drain (hostile probe 14: 10 s, and misleading warnings).
                    if let Err(e) = cluster.client.cancel(&id).await {
                        tracing::debug!(job = %id, error = %format!("{e:#}"), "cancelling the job whose output could not be printed");
                    }
                }
                info
            }
            _ = async { tokio::select! { _ = sigint.recv() => {}, _ = sigterm.recv() => {} } } => {
                eprintln!("rainstorm: interrupted; cancelling job {id}");
                // A second Ctrl-C does not wait for the rest (a slow reader of stdout held
                // the first one's way out; hostile probe 14).
                again = Some(tokio::spawn(async move {
                    let second = tokio::select! { s = sigint.recv() => s, s = sigterm.recv() => s };
                    if second.is_some() {
                        eprintln!("rainstorm: interrupted again; exiting at once");
                        std::process::exit(130);
                    }
                }));
                cluster.client.cancel(&id).await?;
                // The terminal status is always deliverable: wait for it (bounded).
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                let info = loop {
                    let info = cluster.client.job(&id).await?;
                    if info.status.is_terminal() || tokio::time::Instant::now() > deadline {
                        break info;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                // The job may have ended before the interrupt, with its output still being
                // printed: what was printed is not all of it, and `run` must not say it
                // succeeded (hostile probe 14: 18,604 of 1,000,000 lines, exit 0).
                if succeeded(&info) {
                    anyhow::bail!(
                        "interrupted while printing the output: job {id} succeeded and {} holds all of its output, but not all of it was printed",
                        info.sink
                    );
                }
                Ok(info)
            }
        }
    }
    .await;
    let stopped = cluster.stop().await;
    if let Some(watch) = again {
        watch.abort();
        if let Err(e) = watch.await {
            if !e.is_cancelled() {
                tracing::warn!(error = %e, "the watch for a second interrupt failed");
            }
        }
    }
    let info = result?;
    stopped?;
    if !succeeded(&info) {
        tracing::debug!(job = %info.id, "job did not succeed");
    }
    Ok(info)
}
