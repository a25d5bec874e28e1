//! What running jobs' files are, as data: each job's reads and writes, and the uploads and
//! deletes in progress. The rules over them (`owned.rs`) and the state that holds them
//! (`state.rs`) both import this; neither imports the other for it.

use crate::model::ids::JobId;
use std::collections::{BTreeMap, BTreeSet};

/// The files of one job, as store paths (or local paths for `rainstorm run`).
#[derive(Clone, Debug, Default)]
pub struct JobFiles {
    /// Files the job reads: its source and its operators (as named and as pinned).
    pub reads: BTreeSet<String>,
    /// The file the job writes: its sink.
    pub writes: String,
}

/// Every job's files, and the uploads and deletes in progress.
#[derive(Debug, Default)]
pub struct Files {
    pub(super) jobs: BTreeMap<JobId, JobFiles>,
    /// Store paths being uploaded now, with how many uploads hold each.
    pub(super) writing: BTreeMap<String, u32>,
    /// Store paths being deleted now (each with everything under it), with how many deletes
    /// hold each.
    pub(super) deleting: BTreeMap<String, u32>,
    /// Files jobs being submitted read (their source and operators as named), by the
    /// submission's number: held from before they are checked until the job claims them as
    /// a running job, so no delete can remove one in between (`submitting.rs`).
    pub(super) submitting: BTreeMap<u64, BTreeSet<String>>,
    /// The number the next submission's hold takes.
    pub(super) next_submission: u64,
}

/// Drops one hold on `path` in a map of held paths.
pub(super) fn unhold(map: &mut BTreeMap<String, u32>, path: &str) {
    if let Some(n) = map.get_mut(path) {
        *n -= 1;
        if *n == 0 {
            map.remove(path);
        }
    }
}
