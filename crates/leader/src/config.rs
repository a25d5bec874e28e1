//! How a leader is run: its settings (`LeaderConfig`), with their defaults.

use crate::{persist, server, Leader};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How to run a leader.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// Data directory (the store lives in `DIR/store`).
    pub data_dir: PathBuf,
    /// A worker silent for this long is dead.
    pub heartbeat_timeout: Duration,
    /// How often workers heartbeat.
    pub heartbeat_interval: Duration,
    /// How often a follower of a running job looks for new output without a word from the
    /// sink (each commit the sink's worker reports wakes it at once: `api/output.rs`).
    pub follow_poll: Duration,
    /// Restarts of one task before its job fails.
    pub max_restarts: u32,
    /// Keep input logs of ended jobs.
    pub keep_logs: bool,
    /// How long ended jobs stay listed.
    pub retention: Duration,
    /// How much longer an ended job's record and output stay while a follower still reads
    /// them (`monitor.rs`); one slower than that is told its stream was cut short.
    pub follow_grace: Duration,
    /// How long a dead worker stays listed before it is forgotten (never while a running
    /// job's task is still placed on it). A registration never used (no heartbeat, event or
    /// command poll) is forgotten as soon as it is declared dead.
    pub forget_dead_after: Duration,
    /// A running task with input waiting and no progress for this long is stalled: it is
    /// stopped and restarted like a failed one.
    pub stall_timeout: Duration,
    /// A task attempt its worker has not reported this long after its start was sent is
    /// counted as failed (the start never arrived) and restarted.
    pub start_timeout: Duration,
    /// How long a task's second restart waits (doubling for each later one).
    pub restart_delay: Duration,
    /// The longest a restart waits.
    pub restart_delay_max: Duration,
    /// Which executables jobs may name (validated at submission; workers check again).
    pub exec_policy: rainstorm_store::fetch::ExecPolicy,
    /// The cluster secret every door checks (none: loopback only).
    pub token: Option<crate::protocol::auth::Secret>,
    /// The store: an S3-compatible bucket, else the directory `DATA_DIR/store`.
    pub store: Option<rainstorm_store::store::S3Location>,
    /// The data dir lives and dies with this process (`rainstorm run`): its local store is
    /// scratch, written without fsync (`Store::local_scratch`).
    pub scratch: bool,
    /// The data-dir lock, if the caller took it before `run` (the CLI does, before binding
    /// its port, so a second leader is told why at once); else `run` takes it.
    pub dir_lock: Option<Arc<persist::DirLock>>,
    /// What the HTTP API grants clients before they prove anything: connections, deadlines.
    pub api: server::ApiLimits,
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
            follow_poll: Duration::from_millis(100),
            max_restarts: 20,
            keep_logs: false,
            retention: Duration::from_secs(3600),
            follow_grace: Duration::from_secs(600),
            forget_dead_after: Duration::from_secs(300),
            stall_timeout: Duration::from_secs(60),
            start_timeout: Duration::from_secs(30),
            restart_delay: Duration::from_millis(250),
            restart_delay_max: Duration::from_secs(10),
            exec_policy: Default::default(),
            token: None,
            store: None,
            scratch: false,
            dir_lock: None,
            api: server::ApiLimits::default(),
            ready: None,
        }
    }
}
