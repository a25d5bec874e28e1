//! The limits a job's core decides by: restarts, adoption and drain waits, the time limit.

use std::time::Duration;

/// The limits a job's core decides by.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// A task that failed this many times fails its job.
    pub max_restarts: u32,
    /// A resumed job waits this long for a task's worker to rejoin before it counts the task
    /// as lost.
    pub adopt_after: Duration,
    /// Once the sink finished, how long the other tasks have to report their own ends before
    /// the job succeeds anyway (its output is complete).
    pub drain_after: Duration,
    /// The first restart of a task (or of an epoch) starts at once; the next waits this long,
    /// and each one after twice as long as the one before, up to [`CoreConfig::restart_delay_max`],
    /// so a cause that outlives restarts (a full disk, a missing file) does not burn every
    /// restart in a second.
    pub restart_delay: Duration,
    /// The longest a restart waits.
    pub restart_delay_max: Duration,
    /// The job's time limit and how much of it is left (less than the limit for a job a
    /// restarted leader resumes): the job fails once it is used up.
    pub timeout: Option<(Duration, Duration)>,
}

impl CoreConfig {
    /// How long the start of restart number `n` (the attempt number of a task's restart, or
    /// the epoch of an at-least-once restart) waits: nothing for the first, then
    /// `restart_delay` doubling each time, capped at `restart_delay_max`.
    pub fn restart_wait(&self, n: u32) -> Duration {
        if n <= 1 {
            return Duration::ZERO;
        }
        let doublings = (n - 2).min(30);
        self.restart_delay
            .saturating_mul(1u32 << doublings)
            .min(self.restart_delay_max)
    }
}
