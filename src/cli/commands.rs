//! What each subcommand does: read the job or the options, start the role or call the leader,
//! and print the result (through `print`). Returns the process's exit code.

use crate::cli::args::{Cli, Cmd};
use crate::cli::client::Client;
use crate::cli::print;
use crate::cli::progress::follow_to_stdout;
use crate::cli::signals::shutdown_on_signal;
use crate::dataplane::DataConfig;
use crate::leader::{self, LeaderConfig};
use crate::model::spec::JobSpec;
use crate::model::{course, jobfile};
use crate::protocol::auth::Secret;
use crate::runtime::exec::RunAs;
use crate::runtime::fetch::ExecPolicy;
use crate::worker::{self, WorkerConfig};
use anyhow::{bail, Context};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

fn read_job(path: &Path) -> anyhow::Result<JobSpec> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read job file {}", path.display()))?;
    Ok(jobfile::parse_job_toml(&text)?)
}

/// A number of seconds given on the command line, which must be > 0.
fn positive_secs(option: &str, secs: f64) -> anyhow::Result<Duration> {
    if secs.is_nan() || secs <= 0.0 {
        bail!("--{option} must be > 0");
    }
    Duration::try_from_secs_f64(secs).map_err(|_| anyhow::anyhow!("--{option} is too large"))
}

/// The leader's restart settings from its flags.
fn restart_settings(a: &super::args::RestartArgs, cfg: &mut LeaderConfig) -> anyhow::Result<()> {
    cfg.start_timeout = positive_secs("start-timeout", a.start_timeout)?;
    cfg.restart_delay = positive_secs("restart-delay", a.restart_delay)?;
    cfg.restart_delay_max = positive_secs("restart-delay-max", a.restart_delay_max)?;
    if cfg.restart_delay_max < cfg.restart_delay {
        bail!("--restart-delay-max must be at least --restart-delay");
    }
    Ok(())
}

/// How long `submit` tries again after a conflict that passes.
const SUBMIT_RETRY_FOR: Duration = Duration::from_secs(15);

/// Whether a refusal names a conflict that passes by itself: an upload or a delete of one of
/// the job's files under way at that moment (the leader's 409s say "is being … now").
fn passing_conflict(e: &anyhow::Error) -> bool {
    let said = format!("{e:#}");
    said.contains("is being uploaded now") || said.contains("is being deleted now")
}

async fn submit_and_maybe_follow(
    client: &Client,
    spec: JobSpec,
    follow: bool,
) -> anyhow::Result<ExitCode> {
    // A conflict that passes (another client uploading or deleting one of the job's files
    // this moment, as when several submit jobs on one new source at once) is tried again,
    // uploads and all, for a while; what this client uploaded is taken back only when the
    // job is refused for good.
    let deadline = tokio::time::Instant::now() + SUBMIT_RETRY_FOR;
    let mut pause = Duration::from_millis(50 + u64::from(std::process::id() % 50));
    let mut created: Vec<String> = Vec::new();
    let id = loop {
        let tried = match client.upload_local_inputs(&spec).await {
            Ok(more) => {
                created.extend(more);
                client.submit(&spec).await
            }
            Err(e) => Err(e),
        };
        match tried {
            Ok(id) => break id,
            Err(e) if passing_conflict(&e) && tokio::time::Instant::now() < deadline => {
                eprintln!("rainstorm: {e:#}; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                client.remove_uploads(&created).await;
                return Err(e);
            }
        }
    };
    if !follow {
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("rainstorm: submitted {id}");
    let info = follow_to_stdout(client, &id).await?;
    Ok(print::final_status(&info))
}

/// Runs the chosen subcommand.
pub(super) async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Run {
            job,
            workers,
            summary_json,
            keep_logs,
            allow_exec,
        } => {
            let text = std::fs::read_to_string(&job)
                .with_context(|| format!("cannot read job file {}", job.display()))?;
            let (spec, mut problems) = jobfile::parse_job_toml_checked(&text)?;
            let cwd = std::env::current_dir().context("reading the current directory")?;
            let job_dir = match job.parent() {
                Some(d) if !d.as_os_str().is_empty() => cwd.join(d),
                _ => cwd.clone(),
            };
            let policy = ExecPolicy::local_run(&allow_exec, &cwd, &job_dir)?;
            // A sink that is the job file itself would be written over by the output.
            let job_text = job.to_string_lossy();
            if leader::validate::same_file(&job_text, &spec.sink_path) {
                problems.push(crate::model::check::Problem::new(
                    "sink.path",
                    &spec.sink_path,
                    "is this job file: the output would replace it; name another file",
                ));
            }
            if !problems.is_empty() {
                // The files it names are looked at too, as the leader would, so that one
                // answer lists every problem (hostile probe 12: a bad regex hid a missing
                // source and a missing operator until it was mended).
                let local = crate::cli::embedded::localize(spec, &cwd);
                let store = crate::runtime::store::Store::memory();
                let files = leader::validate::check(&local, &store, &policy, &Default::default());
                jobfile::add_problems(&mut problems, files);
                return Err(crate::model::check::InvalidJob(problems).into());
            }
            // Found now, not after the job has run (hostile probe 14).
            if let Some(p) = &summary_json {
                writable(p)
                    .with_context(|| format!("cannot write --summary-json {}", p.display()))?;
            }
            let info = crate::cli::embedded::run_job(spec, usize::from(workers), keep_logs, policy)
                .await?;
            if let Some(p) = summary_json {
                std::fs::write(&p, serde_json::to_vec_pretty(&info)?)
                    .with_context(|| format!("writing {}", p.display()))?;
            }
            Ok(print::final_status(&info))
        }
        Cmd::Leader {
            listen,
            data_dir,
            heartbeat_timeout,
            heartbeat_ms,
            follow_poll_ms,
            max_restarts,
            keep_logs,
            advertise_host,
            stall_timeout,
            follow_grace,
            restarts,
            forget_dead_after,
            allow_exec,
            token_file,
            insecure,
            store,
            api,
        } => {
            let store = store.location()?;
            if let Some(h) = advertise_host {
                eprintln!(
                    "rainstorm leader: --advertise-host {h} is ignored: the leader has no data \
                     listener any more (sources and sinks run on workers)"
                );
            }
            let exec_policy = ExecPolicy::new(&allow_exec)?;
            let token = Secret::from_args(token_file.as_deref())?;
            let heartbeat_timeout = positive_secs("heartbeat-timeout", heartbeat_timeout)?;
            let stall_timeout = positive_secs("stall-timeout", stall_timeout)?;
            let follow_grace = positive_secs("follow-grace", follow_grace)?;
            let forget_dead_after = positive_secs("forget-dead-after", forget_dead_after)?;
            // The data dir first: a second leader on it is refused before it takes a port.
            let dir_lock = std::sync::Arc::new(leader::persist::DirLock::acquire(&data_dir)?);
            let http = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            if token.is_none() && !http.local_addr()?.ip().is_loopback() && !insecure {
                anyhow::bail!(
                    "refusing to listen on {listen} without a cluster secret: give \
                     --token-file FILE (or RAINSTORM_TOKEN), or --insecure to accept that \
                     anyone who reaches this port owns the cluster"
                );
            }
            eprintln!(
                "rainstorm leader listening on http://{}",
                http.local_addr()?
            );
            let mut cfg = LeaderConfig {
                data_dir,
                heartbeat_timeout,
                heartbeat_interval: Duration::from_millis(heartbeat_ms.max(10)),
                follow_poll: Duration::from_millis(follow_poll_ms),
                max_restarts,
                keep_logs,
                stall_timeout,
                follow_grace,
                forget_dead_after,
                exec_policy,
                token,
                store,
                dir_lock: Some(dir_lock),
                api: api.limits(),
                ..LeaderConfig::default()
            };
            restart_settings(&restarts, &mut cfg)?;
            leader::run(cfg, http, shutdown_on_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Worker {
            leader,
            data_dir,
            listen,
            advertise,
            allow_exec,
            run_as,
            slots,
            drain_timeout,
            store,
        } => {
            // With an S3 store the worker reads and writes it directly, not via the leader.
            let store = match store.location()? {
                Some(loc) => Some(crate::runtime::store::Store::s3(&loc)?),
                None => None,
            };
            let exec_policy = ExecPolicy::new(&allow_exec)?;
            let run_as = run_as.as_deref().map(RunAs::lookup).transpose()?;
            let cfg = WorkerConfig {
                leader: Client::new(&leader.leader).base().to_string(),
                data_dir,
                data_listen: listen,
                advertise,
                store,
                data: DataConfig::from_env().fit_to_fds(super::limits::open_files()),
                exec_policy,
                run_as,
                token: Secret::from_args(leader.token_file.as_deref())?,
                slots: slots.unwrap_or_else(|| {
                    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
                }),
                drain_timeout: Duration::from_secs_f64(drain_timeout),
            };
            worker::run(cfg, shutdown_on_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Put {
            local,
            remote,
            leader,
        } => {
            client(&leader)?.put(&local, &remote).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Get {
            remote,
            local,
            leader,
        } => {
            // An interrupt drops the download, and with it its temporary file (hostile probe
            // 14: a hidden partial file was left beside `local`).
            let c = client(&leader)?;
            tokio::select! {
                r = c.get(&remote, &local) => r?,
                () = super::signals::interrupted() => {
                    eprintln!("rainstorm: interrupted; {} was not written", local.display());
                    return Ok(ExitCode::from(130));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Ls { prefix, leader } => {
            for o in client(&leader)?.ls(&prefix).await? {
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
            submit_and_maybe_follow(&client(&leader)?, spec, follow).await
        }
        Cmd::SubmitArgs {
            follow,
            leader,
            args,
        } => {
            let spec = course::from_course_args(&args)?;
            submit_and_maybe_follow(&client(&leader)?, spec, follow).await
        }
        Cmd::Jobs { json, leader } => {
            print::jobs(&client(&leader)?.jobs().await?, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Job { id, json, leader } => {
            print::job(&client(&leader)?.job(&id).await?, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Follow { id, leader } => {
            let info = follow_to_stdout(&client(&leader)?, &id).await?;
            Ok(print::final_status(&info))
        }
        Cmd::Cancel { id, leader } => {
            let done = client(&leader)?.cancel(&id).await?;
            eprintln!("rainstorm: {}", print::cancelled(&id, &done));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Tasks { json, leader } => {
            print::tasks(&client(&leader)?.tasks().await?, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Workers { json, leader } => {
            print::workers(&client(&leader)?.workers().await?, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::SetRate { id, rate, leader } => {
            client(&leader)?.set_rate(&id, rate).await?;
            if rate == 0.0 {
                eprintln!("rainstorm: job {id}: the source reads as fast as it can from now on (unthrottled)");
            } else {
                eprintln!("rainstorm: job {id}: the source paces by {rate} tuples/s from now on");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Scale {
            id,
            stage,
            tasks,
            leader,
        } => {
            let outcome = client(&leader)?.scale(&id, stage, tasks).await?;
            eprintln!("rainstorm: job {id}: {}", outcome.said);
            Ok(if outcome.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Drain { worker, leader } => {
            let done = client(&leader)?.drain(&worker).await?;
            eprintln!("rainstorm: {done}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::KillTask {
            worker,
            pid,
            leader,
        } => {
            let done = client(&leader)?.kill_task(&worker, pid).await?;
            eprintln!("rainstorm: {done}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A client of the leader named by `--leader`, sending the cluster secret of `--token-file`
/// or `RAINSTORM_TOKEN`.
/// Whether a file can be written at `path`, checked without changing it: an existing one is
/// opened for writing (not truncated), else a scratch file is made and removed in its folder.
fn writable(path: &std::path::Path) -> anyhow::Result<()> {
    if path.is_dir() {
        anyhow::bail!("it is a directory");
    }
    if path.exists() {
        std::fs::OpenOptions::new().write(true).open(path)?;
        return Ok(());
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    Ok(())
}

fn client(arg: &crate::cli::args::LeaderArg) -> anyhow::Result<Client> {
    Ok(Client::new(&arg.leader).with_token(Secret::from_args(arg.token_file.as_deref())?))
}
