//! What the executor reads from a job's core: its tasks, epoch and counters.

use super::job::{CoreTask, JobCore};
use crate::model::ids::TaskPos;
use std::collections::BTreeMap;

impl JobCore {
    /// Every task's current attempt.
    pub fn tasks(&self) -> &BTreeMap<TaskPos, CoreTask> {
        &self.tasks
    }

    /// The job's epoch (at-least-once restarts bump it).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Failures of current attempts seen so far.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// The latest failure of a current attempt: the task, the attempt and the cause.
    pub fn last_failure(&self) -> Option<&str> {
        self.last_failure.as_deref()
    }

    /// Restarts done so far (a task's, or a whole epoch's).
    pub fn recoveries(&self) -> u64 {
        self.recoveries
    }

    /// Tasks whose next attempt waits for a free slot or a live worker, with that attempt's
    /// number (reserved in the placement: every earlier attempt is fenced off).
    pub fn waiting(&self) -> Vec<(TaskPos, u32)> {
        self.unplaced
            .iter()
            .map(|p| {
                let attempt = self.placement.get(p).map(|d| d.attempt);
                (*p, attempt.unwrap_or_default())
            })
            .collect()
    }

    /// The job has an outcome; the core takes no more inputs.
    pub fn ended(&self) -> bool {
        self.ended
    }
}
