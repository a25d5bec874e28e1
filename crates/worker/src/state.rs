//! What a worker keeps: its configuration and task environment, the table of attempts it runs,
//! and the supervisors of those attempts. Sessions, commands and reports share it.

use crate::model::ids::TaskKey;
use crate::runtime::task::{TaskEnd, TaskEnv};
use crate::{TaskTable, WorkerConfig};
use std::collections::HashMap;
use tokio::task::JoinSet;

/// What a worker keeps across sessions.
pub(crate) struct Worker {
    pub(crate) cfg: WorkerConfig,
    pub(crate) env: TaskEnv,
    pub(crate) http: reqwest::Client,
    /// The heartbeats' own client (one connection, kept open between beats).
    pub(crate) beat_http: reqwest::Client,
    /// The data listener's address as registered.
    pub(crate) data_addr: String,
    pub(crate) tasks: TaskTable,
}

/// Which attempt a supervisor ran, and how it ended.
pub(crate) type Ended = ((TaskKey, u32), TaskEnd);

/// The supervisors of a session's task attempts, each returning its attempt's end.
#[derive(Default)]
pub(crate) struct Attempts {
    pub(crate) set: JoinSet<Ended>,
    /// Which attempt each supervisor runs (to report one that panicked).
    pub(crate) ids: HashMap<tokio::task::Id, (TaskKey, u32)>,
}
