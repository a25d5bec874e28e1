//! Newtype identifiers shared by every component, so a worker id can never be passed where a job
//! id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A job's id, assigned by the leader (`job-N`); stable for the job record's whole retention.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub String);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A worker's id, assigned by the leader at registration (`wN`); a worker that re-registers after
/// being declared dead gets a new one, so stale reports can never be confused with live ones.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkerId(pub String);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Position of a task in its job's dataflow. Stage 0 is the source, stages 1..=K are the user's
/// stages and stage K+1 is the sink; the source and the sink each have one task (index 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskPos {
    /// Stage number (0 = source, K+1 = sink).
    pub stage: u32,
    /// Index of the task within its stage.
    pub index: u32,
}

impl fmt::Display for TaskPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.stage, self.index)
    }
}

/// A task of a particular job: the key of every per-task table on leader and workers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskKey {
    /// The job the task belongs to.
    pub job: JobId,
    /// Where the task sits in the dataflow.
    pub pos: TaskPos,
}

impl fmt::Display for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.job, self.pos)
    }
}
