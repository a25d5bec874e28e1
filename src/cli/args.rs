//! The command line's grammar: every subcommand of `rainstorm` and its options (clap). What each
//! one does is in `commands`; this file only says what can be typed.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "rainstorm",
    version,
    about = "A distributed stream-processing engine: pipelines of operators over lines, exactly once."
)]
pub(super) struct Cli {
    #[command(subcommand)]
    pub(super) cmd: Cmd,
}

#[derive(clap::Args, Clone)]
pub(super) struct LeaderArg {
    /// Leader URL (http://HOST:PORT).
    #[arg(
        long,
        env = "RAINSTORM_LEADER",
        default_value = "http://127.0.0.1:7070",
        value_parser = super::leader_url::leader_url
    )]
    pub(super) leader: String,
    /// File holding the cluster secret (else the RAINSTORM_TOKEN variable).
    #[arg(long, value_name = "FILE")]
    pub(super) token_file: Option<PathBuf>,
}

/// How the leader restarts tasks: how long a start may take, and the backoff between restarts.
#[derive(clap::Args, Clone, Debug)]
pub(super) struct RestartArgs {
    /// Seconds a task attempt may go unreported by its worker after its start was sent
    /// before it is counted as failed and restarted (a start that never arrived).
    #[arg(long, default_value_t = 30.0)]
    pub start_timeout: f64,
    /// Seconds the second restart of a task waits before it starts (the first starts at
    /// once); each later one waits twice as long, up to --restart-delay-max.
    #[arg(long, default_value_t = 0.25)]
    pub restart_delay: f64,
    /// The longest a restart waits, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub restart_delay_max: f64,
}

/// Where the cluster's store is (leader and workers).
#[derive(clap::Args, Clone, Debug)]
pub(super) struct StoreArg {
    /// The store: an S3-compatible bucket, `s3://BUCKET[/PREFIX]` (credentials and region from
    /// the usual AWS_* environment variables). Default: the leader's directory, which workers
    /// reach through the leader.
    #[arg(long = "store", env = "RAINSTORM_STORE", value_name = "URL")]
    pub(super) store: Option<String>,
    /// Endpoint of an S3-compatible service (default: AWS_ENDPOINT_URL, else AWS). Plain http
    /// is allowed for a loopback endpoint, or with AWS_ALLOW_HTTP=true.
    #[arg(
        long = "store-endpoint",
        env = "RAINSTORM_STORE_ENDPOINT",
        value_name = "URL"
    )]
    pub(super) store_endpoint: Option<String>,
}

impl StoreArg {
    /// The S3 location, if one was given.
    pub(super) fn location(&self) -> anyhow::Result<Option<crate::runtime::store::S3Location>> {
        self.store
            .as_deref()
            .map(|u| {
                crate::runtime::store::S3Location::parse(u, self.store_endpoint.clone())
                    .map_err(|e| anyhow::anyhow!("--store {e}"))
            })
            .transpose()
    }
}

/// What the leader's HTTP API grants clients before they prove anything (a flood of
/// connections without the secret must not lock out the clients that have it).
#[derive(clap::Args, Clone, Debug)]
pub(super) struct ApiLimitsArg {
    /// Connections the API keeps open at once (at most half the descriptor limit); at the cap
    /// a new one closes the oldest that proves nothing.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) api_max_conns: u64,
    /// Milliseconds a connection may take to send a request's headers (also how long an idle
    /// keep-alive connection stays open).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) api_header_timeout_ms: u64,
    /// A request body must bring 1 KiB (or end) in every this many milliseconds of waiting
    /// for it; slower ones are cut.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) api_body_timeout_ms: u64,
    /// At the connection cap, an answer whose client has left it unread this many
    /// milliseconds (a follower that stopped reading) gives way to a new connection.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) api_unread_timeout_ms: u64,
}

impl ApiLimitsArg {
    /// The leader's limits.
    pub(super) fn limits(&self) -> crate::leader::server::ApiLimits {
        crate::leader::server::ApiLimits {
            max_conns: usize::try_from(self.api_max_conns).unwrap_or(usize::MAX),
            header_timeout: std::time::Duration::from_millis(self.api_header_timeout_ms),
            body_timeout: std::time::Duration::from_millis(self.api_body_timeout_ms),
            unread_timeout: std::time::Duration::from_millis(self.api_unread_timeout_ms),
        }
    }
}

#[derive(Subcommand)]
pub(super) enum Cmd {
    /// Run a job on an embedded local cluster and print its output lines.
    Run {
        /// Job file (TOML).
        job: PathBuf,
        /// Number of embedded workers (at least 1).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
        workers: u16,
        /// Write the final job record (JSON) to this file.
        #[arg(long)]
        summary_json: Option<PathBuf>,
        /// Keep the input logs after the job (debugging).
        #[arg(long)]
        keep_logs: bool,
        /// Also allow operators from this directory (repeatable); `run` already allows the
        /// current directory, the job file's directory and commands on PATH.
        #[arg(long = "allow-exec", value_name = "DIR")]
        allow_exec: Vec<PathBuf>,
    },
    /// Run the leader of a cluster.
    // A setting given twice takes its last value (a wrapper script's defaults, then the
    // caller's own).
    #[command(args_override_self = true)]
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
        /// Milliseconds between a follower's looks at a running job's committed output when
        /// no word of a new commit came (the sink's worker reports each commit, which wakes
        /// followers at once; on S3 each look is a listing).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
        follow_poll_ms: u64,
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
        /// Seconds past its retention an ended job's record and output stay while a follower
        /// still reads them; a follower slower than that is told its stream was cut short.
        #[arg(long, default_value_t = 600.0)]
        follow_grace: f64,
        #[command(flatten)]
        restarts: RestartArgs,
        /// Seconds a dead worker stays listed before it is forgotten (never while a running
        /// job's task is placed on it); a registration never used is forgotten once dead.
        #[arg(long, default_value_t = 300.0)]
        forget_dead_after: f64,
        /// Ignored (kept so existing command lines still start): the leader has no data
        /// listener any more, since sources and sinks run on workers.
        #[arg(long, hide = true)]
        advertise_host: Option<String>,
        /// Jobs may run executables from this directory (repeatable); otherwise only
        /// executables uploaded to the store.
        #[arg(long = "allow-exec", value_name = "DIR")]
        allow_exec: Vec<PathBuf>,
        /// File holding the cluster secret (else the RAINSTORM_TOKEN variable). Without a
        /// secret the leader listens on loopback only.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Allow a non-loopback --listen without a cluster secret (anyone who reaches the
        /// port then owns the cluster).
        #[arg(long)]
        insecure: bool,
        #[command(flatten)]
        store: StoreArg,
        #[command(flatten)]
        api: ApiLimitsArg,
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
        /// Address other nodes use to reach the data listener, if not the bound one
        /// (`HOST:PORT`; a host alone takes the listener's port).
        #[arg(long)]
        advertise: Option<String>,
        /// Operators may run from this directory (repeatable); otherwise only executables
        /// fetched from the store.
        #[arg(long = "allow-exec", value_name = "DIR")]
        allow_exec: Vec<PathBuf>,
        /// Start operators as this (unprivileged) user; the worker must run as root.
        #[arg(long = "run-as", value_name = "USER")]
        run_as: Option<String>,
        /// Operator tasks this worker runs at once (default: its CPUs). The source and sink
        /// take no slot; the leader never places more, and a job that does not fit waits.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
        slots: Option<u32>,
        /// How long a drain (SIGTERM or `rainstorm drain`) waits for the leader to move this
        /// worker's tasks before it stops what is left, in seconds.
        #[arg(
            long = "drain-timeout",
            env = "RAINSTORM_DRAIN_TIMEOUT",
            default_value_t = 60.0,
            value_parser = positive_secs
        )]
        drain_timeout: f64,
        #[command(flatten)]
        store: StoreArg,
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
    /// Follow a job's output: print its lines as they come (from the first), then its final
    /// status on stderr; exit 0 iff it succeeded. Reconnects if the leader restarts.
    Follow {
        /// Job id.
        id: String,
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
    /// Change a running job's source rate (tuples per second; 0 = unthrottled).
    SetRate {
        /// Job id.
        id: String,
        /// Tuples per second (a finite number ≥ 0).
        #[arg(value_parser = finite_rate)]
        rate: f64,
        #[command(flatten)]
        leader: LeaderArg,
    },
    /// Rescale one stage of a running job: its key groups move to (or from) tasks kept ready,
    /// live, with nothing lost or doubled. The job's `scaling` list shows how it went.
    Scale {
        /// Job id.
        id: String,
        /// Stage (1-based).
        stage: u32,
        /// Tasks it should run (1 to its max_tasks).
        tasks: u32,
        #[command(flatten)]
        leader: LeaderArg,
    },
    /// Take a worker out of service: it takes no new task, its tasks move to other workers
    /// (nothing lost or doubled under exactly-once), then it leaves and exits 0.
    Drain {
        /// Worker id (as `workers` prints it).
        worker: String,
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

/// A positive, finite number of seconds.
fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

/// A rate as `set-rate` takes it: a finite number ≥ 0 (JSON has no NaN or infinity: they
/// would reach the leader as `null`).
fn finite_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!(
            "{text:?} is not a rate: a number of tuples per second, 0 (unthrottled) or more"
        )),
    }
}
