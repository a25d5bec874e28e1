//! The state of key groups as one task hands it to another (`handover`), and where it is
//! written: the format periodic snapshots of built-in state will use.

use crate::log::task_prefix;
use crate::model::ids::TaskKey;
use serde::{Deserialize, Serialize};

/// The state of some key groups of a built-in, as one task hands it to another. Version 1:
/// JSON; `counts` holds each counted value with its count (`count-by`).
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GroupState {
    /// The format's version.
    pub(crate) format: u32,
    /// The routing version the groups moved with.
    pub(crate) version: u32,
    /// The task that handed them over.
    pub(crate) from: u32,
    /// The groups handed over.
    pub(crate) groups: Vec<u32>,
    /// Their state: each value and its count.
    pub(crate) counts: Vec<(String, u64)>,
}

/// The format [`GroupState`] is written in.
pub(crate) const FORMAT: u32 = 1;

/// Where task `key` writes the state of the groups it lost with routing version `version`:
/// in its own log's folder (the store lets a worker write there only for its own tasks).
pub(crate) fn handover_path(key: &TaskKey, version: u32) -> String {
    format!("{}state-v{version:010}.json", task_prefix(key))
}

/// Where task `key` writes, as it finishes in epoch `epoch`, the state it still holds; its
/// `version` is the newest routing version the task knew.
pub(crate) fn final_path(key: &TaskKey, epoch: u32) -> String {
    format!("{}state-final-e{epoch:06}.json", task_prefix(key))
}
