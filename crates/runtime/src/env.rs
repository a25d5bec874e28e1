//! What a task needs from its process: the registry it receives through, the route tables,
//! the data-plane tunables, the store, a scratch directory, the network and the data-plane
//! credentials. Its own module so the parts of a task (links, source, sink) depend on it and
//! not on the task lifecycle that uses them.

use crate::dataplane::inbound::Registry;
use crate::dataplane::link::LinkSlots;
use crate::dataplane::routes::Routes;
use crate::dataplane::transport::Network;
use crate::dataplane::DataConfig;
use crate::exec::{Launch, OsLauncher};
use crate::store::Store;
use std::path::PathBuf;
use std::sync::Arc;

/// What a task needs from its process.
#[derive(Clone)]
pub struct TaskEnv {
    /// Where tasks register to receive data.
    pub registry: Arc<Registry>,
    /// Where tasks find each other.
    pub routes: Arc<Routes>,
    /// Data-plane tunables.
    pub cfg: DataConfig,
    /// The store (logs, and source files in cluster mode).
    pub store: Store,
    /// Private scratch directory of this process (fetched files).
    pub work_dir: PathBuf,
    /// How links reach other processes.
    pub net: Arc<dyn Network>,
    /// What starts executable operators: OS processes ([`OsLauncher`]) in a real process; the
    /// simulation's in-process stand-ins in its own.
    pub launcher: Arc<dyn Launch>,
    /// This worker's key: every Hello its links send is signed with it.
    pub identity: crate::protocol::auth::Identity,
    /// Whether a sink spools its lineage's text to a local file for its output
    /// (`sink::Spool`). The simulation turns it off: file I/O runs on threads outside its
    /// virtual clock, and a seed must replay bit for bit.
    pub spool: bool,
    /// The process's budget of link connections (`cfg.max_conns`), shared by every link of
    /// every task, so links never take the descriptors the control plane needs.
    pub slots: LinkSlots,
    /// Log compaction merges running at once, shared by every logged task that has this
    /// budget (`task::compact`): compaction's memory is bounded whatever the task count.
    pub merges: Arc<tokio::sync::Semaphore>,
    /// The grid its logged tasks' group commits go out on (`commit_clock`).
    pub commit_clock: crate::commit_clock::CommitClock,
}

impl TaskEnv {
    /// The environment of a real process: links over TCP — sharing one connection per peer
    /// process unless `cfg.mux` is 0 (`dataplane::mux`), in memory to a listener of this same
    /// process unless `cfg.local` is 0 (`dataplane::local`) —, operators as OS processes,
    /// data-plane connections signed with the worker's key `identity`.
    pub fn new(
        cfg: DataConfig,
        store: Store,
        work_dir: PathBuf,
        identity: crate::protocol::auth::Identity,
    ) -> TaskEnv {
        TaskEnv {
            registry: Arc::default(),
            routes: Arc::default(),
            net: network(&cfg),
            slots: LinkSlots::new(cfg.max_conns),
            spool: cfg.sink_spool != 0,
            cfg,
            store,
            work_dir,
            launcher: Arc::new(OsLauncher),
            identity,
            merges: process_merge_budget(),
            commit_clock: crate::commit_clock::CommitClock::wall(),
        }
    }
}

/// Log compaction merges running at once under one budget (`TaskEnv::merges`), whatever the
/// number of logged tasks: each holds up to twice `log_compact_bytes` (its inputs and its
/// output), so compaction's memory is bounded by a constant, not by the task count.
const MERGES: usize = 2;

/// A new budget of [`MERGES`] merges at once.
pub fn merge_budget() -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(MERGES))
}

/// The budget every real task environment of this process shares (`TaskEnv::new`): an
/// embedded cluster's workers, all in one process, share it too. The simulation gives each
/// simulated host its own, so that no seed's merges wait on another seed's.
fn process_merge_budget() -> Arc<tokio::sync::Semaphore> {
    static BUDGET: std::sync::OnceLock<Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    BUDGET.get_or_init(merge_budget).clone()
}

/// How a real process's links reach other processes: sessions of many links per TCP
/// connection, or (`RAINSTORM_DATA_MUX=0`) a TCP connection per link; and the listeners of
/// this same process in memory (`dataplane::local`) unless `RAINSTORM_DATA_LOCAL=0`.
fn network(cfg: &DataConfig) -> Arc<dyn Network> {
    let remote: Arc<dyn Network> = if cfg.mux == 0 {
        Arc::new(crate::dataplane::transport::Tcp)
    } else {
        let shape = crate::dataplane::mux::MuxConfig::of(cfg);
        Arc::new(crate::dataplane::mux::MuxNet::new(shape))
    };
    if cfg.local == 0 {
        return remote;
    }
    let hub = crate::dataplane::local::LocalHub::process();
    Arc::new(crate::dataplane::local::LocalNet::new(hub, remote))
}
