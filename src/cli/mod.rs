//! The command line: every role (embedded run, leader, worker, client commands) is a
//! subcommand of the one `rainstorm` binary.

pub mod client;
pub mod embedded;

use crate::cli::client::{succeeded, Client, Rejected};
use crate::dataplane::DataConfig;
use crate::leader::{self, LeaderConfig};
use crate::model::check::InvalidJob;
use crate::model::spec::JobSpec;
use crate::model::{course, jobfile};
use crate::protocol::control::JobInfo;
use crate::worker::{self, WorkerConfig};
use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "rainstorm",
    version,
    about = "A distributed stream-processing engine: pipelines of operators over lines, exactly once."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct LeaderArg {
    /// Leader URL (http://HOST:PORT).
    #[arg(
        long,
        env = "RAINSTORM_LEADER",
        default_value = "http://127.0.0.1:7070"
    )]
    leader: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a job on an embedded local cluster and print its output lines.
    Run {
        /// Job file (TOML).
        job: PathBuf,
        /// Number of embedded workers.
        #[arg(long, default_value_t = 3)]
        workers: usize,
        /// Write the final job record (JSON) to this file.
        #[arg(long)]
        summary_json: Option<PathBuf>,
        /// Keep the input logs after the job (debugging).
        #[arg(long)]
        keep_logs: bool,
    },
    /// Run the leader of a cluster.
    Leader {
        /// Address of the HTTP API and control plane.
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: String,
        /// Data directory (the store lives under it).
        #[arg(long, default_value = "rainstorm-leader")]
        data_dir: PathBuf,
        /// Seconds without heartbeat before a worker is dead.
        #[arg(long, default_value_t = 5.0)]
        heartbeat_timeout: f64,
        /// Heartbeat period workers use, in milliseconds.
        #[arg(long, default_value_t = 500)]
        heartbeat_ms: u64,
        /// Restarts of one task before its job fails.
        #[arg(long, default_value_t = 20)]
        max_restarts: u32,
        /// Keep input logs of ended jobs.
        #[arg(long)]
        keep_logs: bool,
        /// Seconds a running task may have input waiting without progress before it is
        /// declared stalled and restarted.
        #[arg(long, default_value_t = 60.0)]
        stall_timeout: f64,
        /// Host or IP that workers use to reach this leader's data listener (default: the
        /// --listen IP, or the host name when listening on a wildcard address).
        #[arg(long)]
        advertise_host: Option<String>,
    },
    /// Run a worker of a cluster.
    Worker {
        #[command(flatten)]
        leader: LeaderArg,
        /// Private working directory.
        #[arg(long, default_value = "rainstorm-worker")]
        data_dir: PathBuf,
        /// Address of this worker's data listener (port 0 = any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Address other nodes use to reach the data listener, if not the bound one.
        #[arg(long)]
        advertise: Option<String>,
    },
    /// Upload a local file to the cluster's store.
    Put {
        /// Local file.
        local: PathBuf,
        /// Store path.
        remote: String,
        #[command(flatten)]
        leader: LeaderArg,
    },
    /// Download a file from the cluster's store.
    Get {
        /// Store path.
        remote: String,
        /// Local file.
        local: PathBuf,
        #[command(flatten)]
        leader: LeaderArg,
    },
    /// List files in the cluster's store.
    Ls {
        /// Path prefix.
        #[arg(default_value = "")]
        prefix: String,
        #[command(flatten)]
        leader: LeaderArg,
    },
    /// Submit a job; prints its id (with --follow: streams its output, exit 0 iff it succeeded).
    Submit {
        /// Job file (TOML).
        job: PathBuf,
        /// Stream output lines to stdout until the job ends.
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        leader: LeaderArg,
    },
    /// Submit a job in the course's positional syntax:
    /// <Nstages> <Ntasks> (<op_exe> <op_args>)… <src> <dest> <exactly_once> <autoscale> <rate> [<LW> <HW>].
    /// Each op_args is ONE argument, split like a shell would ('7 "Punched Telespar"'); "" = none.
    SubmitArgs {
        /// Stream output lines to stdout until the job ends.
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        leader: LeaderArg,
        /// The positional arguments.
        #[arg(required = true, num_args = 1.., allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// List jobs.
    Jobs {
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        leader: LeaderArg,
    },
    /// Show one job.
    Job {
        /// Job id.
        id: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        leader: LeaderArg,
    },
    /// Cancel a job.
    Cancel {
        /// Job id.
        id: String,
        #[command(flatten)]
        leader: LeaderArg,
    },
    /// List tasks (the course's list_tasks).
    Tasks {
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        leader: LeaderArg,
    },
    /// List workers.
    Workers {
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        leader: LeaderArg,
    },
    /// SIGKILL an operator process on a worker (simulates a crash; handled as a real failure).
    KillTask {
        /// Worker id (as `tasks`/`workers` print it).
        worker: String,
        /// Operator process id.
        pid: u32,
        #[command(flatten)]
        leader: LeaderArg,
    },
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RAINSTORM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn read_job(path: &PathBuf) -> anyhow::Result<JobSpec> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read job file {}", path.display()))?;
    Ok(jobfile::parse_job_toml(&text)?)
}

fn print_problems(err: &anyhow::Error) -> bool {
    if let Some(InvalidJob(problems)) = err.downcast_ref::<InvalidJob>() {
        eprintln!("rainstorm: the job is invalid; nothing was started:");
        for p in problems {
            eprintln!("  {p}");
        }
        return true;
    }
    if let Some(r) = err.downcast_ref::<Rejected>() {
        eprintln!("rainstorm: the job is invalid; nothing was started:");
        for p in &r.problems {
            eprintln!("  {p}");
        }
        if r.problems.is_empty() {
            eprintln!("  {}", r.message);
        }
        return true;
    }
    false
}

fn final_status(info: &JobInfo) -> ExitCode {
    match &info.error {
        Some(e) => eprintln!("rainstorm: job {} {:?}: {e}", info.id, info.status),
        None => eprintln!(
            "rainstorm: job {} {} ({} tuples in, {} lines out, {:.2} s)",
            info.id,
            serde_json::to_value(info.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            info.source_tuples,
            info.sink_tuples,
            info.elapsed_ms as f64 / 1000.0
        ),
    }
    if succeeded(info) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn status_word<T: serde::Serialize>(v: T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

async fn submit_and_maybe_follow(
    client: &Client,
    spec: JobSpec,
    follow: bool,
) -> anyhow::Result<ExitCode> {
    client.upload_local_inputs(&spec).await?;
    let id = client.submit(&spec).await?;
    if !follow {
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("rainstorm: submitted {id}");
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let info = client.follow(&id, &mut out).await?;
    drop(out);
    Ok(final_status(&info))
}

async fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Run {
            job,
            workers,
            summary_json,
            keep_logs,
        } => {
            let spec = read_job(&job)?;
            let info = crate::cli::embedded::run_job(spec, workers, keep_logs).await?;
            if let Some(p) = summary_json {
                std::fs::write(&p, serde_json::to_vec_pretty(&info)?)
                    .with_context(|| format!("writing {}", p.display()))?;
            }
            Ok(final_status(&info))
        }
        Cmd::Leader {
            listen,
            data_dir,
            heartbeat_timeout,
            heartbeat_ms,
            max_restarts,
            keep_logs,
            advertise_host,
            stall_timeout,
        } => {
            if heartbeat_timeout.is_nan() || heartbeat_timeout <= 0.0 {
                bail!("--heartbeat-timeout must be > 0");
            }
            if stall_timeout.is_nan() || stall_timeout <= 0.0 {
                bail!("--stall-timeout must be > 0");
            }
            let http = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            eprintln!(
                "rainstorm leader listening on http://{}",
                http.local_addr()?
            );
            let cfg = LeaderConfig {
                data_dir,
                heartbeat_timeout: Duration::from_secs_f64(heartbeat_timeout),
                heartbeat_interval: Duration::from_millis(heartbeat_ms.max(10)),
                max_restarts,
                keep_logs,
                advertise_host,
                stall_timeout: Duration::from_secs_f64(stall_timeout),
                data: DataConfig::from_env(),
                ..LeaderConfig::default()
            };
            let shutdown = shutdown_on_signal();
            leader::run(cfg, http, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Worker {
            leader,
            data_dir,
            listen,
            advertise,
        } => {
            let cfg = WorkerConfig {
                leader: Client::new(&leader.leader).base().to_string(),
                data_dir,
                data_listen: listen,
                advertise,
                store: None,
                data: DataConfig::from_env(),
            };
            worker::run(cfg, shutdown_on_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Put {
            local,
            remote,
            leader,
        } => {
            Client::new(&leader.leader).put(&local, &remote).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Get {
            remote,
            local,
            leader,
        } => {
            Client::new(&leader.leader).get(&remote, &local).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Ls { prefix, leader } => {
            for o in Client::new(&leader.leader).ls(&prefix).await? {
                println!("{}\t{}", o.size, o.path);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Submit {
            job,
            follow,
            leader,
        } => {
            let spec = read_job(&job)?;
            submit_and_maybe_follow(&Client::new(&leader.leader), spec, follow).await
        }
        Cmd::SubmitArgs {
            follow,
            leader,
            args,
        } => {
            let spec = course::from_course_args(&args)?;
            submit_and_maybe_follow(&Client::new(&leader.leader), spec, follow).await
        }
        Cmd::Jobs { json, leader } => {
            let jobs = Client::new(&leader.leader).jobs().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
            } else {
                let rows = jobs
                    .iter()
                    .map(|j| {
                        vec![
                            j.id.to_string(),
                            j.name.clone().unwrap_or_default(),
                            status_word(j.status),
                            j.delivery.as_str().to_string(),
                            j.source_tuples.to_string(),
                            j.sink_tuples.to_string(),
                            j.recoveries.to_string(),
                            format!("{:.1}", j.elapsed_ms as f64 / 1000.0),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "ID", "NAME", "STATUS", "DELIVERY", "IN", "OUT", "RESTARTS", "SECONDS",
                    ],
                    rows,
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Job { id, json, leader } => {
            let j = Client::new(&leader.leader).job(&id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&j)?);
            } else {
                println!("id:         {}", j.id);
                println!("name:       {}", j.name.clone().unwrap_or_default());
                println!("status:     {}", status_word(j.status));
                if let Some(e) = &j.error {
                    println!("error:      {e}");
                }
                println!("delivery:   {}", j.delivery.as_str());
                println!("stages:     {}", j.stages.join(" → "));
                println!("sink:       {}", j.sink);
                println!("tuples:     {} in, {} out", j.source_tuples, j.sink_tuples);
                println!(
                    "failures:   {} seen, {} recoveries",
                    j.failures, j.recoveries
                );
                println!("elapsed:    {:.2} s", j.elapsed_ms as f64 / 1000.0);
                if let Some(l) = &j.latency_ms {
                    println!(
                        "latency:    p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                        l.p50, l.p99, l.max
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Cancel { id, leader } => {
            Client::new(&leader.leader).cancel(&id).await?;
            eprintln!("rainstorm: cancel requested for {id}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Tasks { json, leader } => {
            let tasks = Client::new(&leader.leader).tasks().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tasks)?);
            } else {
                let rows = tasks
                    .iter()
                    .map(|t| {
                        vec![
                            t.job.to_string(),
                            t.stage.to_string(),
                            t.task.to_string(),
                            t.worker.to_string(),
                            t.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                            status_word(t.state),
                            t.attempt.to_string(),
                            t.tuples_in.to_string(),
                            t.tuples_out.to_string(),
                            format!("{:.1}", t.input_rate),
                            t.operator.clone(),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "JOB", "STAGE", "TASK", "WORKER", "PID", "STATE", "ATTEMPT", "IN", "OUT",
                        "RATE/S", "OPERATOR",
                    ],
                    rows,
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Workers { json, leader } => {
            let ws = Client::new(&leader.leader).workers().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&ws)?);
            } else {
                let rows = ws
                    .iter()
                    .map(|w| {
                        vec![
                            w.id.to_string(),
                            w.address.clone(),
                            status_word(w.state),
                            format!("{:.1}s", w.last_heartbeat_s),
                            w.running_tasks.to_string(),
                        ]
                    })
                    .collect();
                table(&["ID", "ADDRESS", "STATE", "LAST HEARTBEAT", "TASKS"], rows);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::KillTask {
            worker,
            pid,
            leader,
        } => {
            let task = Client::new(&leader.leader).kill_task(&worker, pid).await?;
            eprintln!("rainstorm: killed pid {pid} on {worker} (task {task})");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A token cancelled by SIGINT or SIGTERM (graceful stop); a second signal exits at once.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    // Process-wide signal watcher: it lives as long as the process (the runtime drops it).
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down gracefully (signal again to force)");
        t.cancel();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        std::process::exit(130);
    });
    token
}

/// Parses the command line, runs the chosen role and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match cli.cmd {
        Cmd::Leader { .. } | Cmd::Worker { .. } => "info",
        _ => "warn",
    };
    init_tracing(default_log);
    if matches!(
        cli.cmd,
        Cmd::Jobs { .. }
            | Cmd::Job { .. }
            | Cmd::Tasks { .. }
            | Cmd::Workers { .. }
            | Cmd::Ls { .. }
    ) {
        // Listings behave like Unix tools when piped into `head`: die quietly on a closed pipe.
        // (Never for processes that host operators: a dead operator's pipe must be an error.)
        // SAFETY: called before any thread is spawned.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rainstorm: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(real_main(cli)) {
        Ok(code) => code,
        Err(e) => {
            if !print_problems(&e) {
                eprintln!("rainstorm: error: {e:#}");
            }
            ExitCode::from(2)
        }
    }
}
