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
}

impl TaskEnv {
    /// The environment of a real process: TCP links, operators as OS processes, data-plane
    /// connections signed with the worker's key `identity`.
    pub fn new(
        cfg: DataConfig,
        store: Store,
        work_dir: PathBuf,
        identity: crate::protocol::auth::Identity,
    ) -> TaskEnv {
        TaskEnv {
            registry: Arc::default(),
            routes: Arc::default(),
            slots: LinkSlots::new(cfg.max_conns),
            spool: cfg.sink_spool != 0,
            cfg,
            store,
            work_dir,
            net: Arc::new(crate::dataplane::transport::Tcp),
            launcher: Arc::new(OsLauncher),
            identity,
        }
    }
}
