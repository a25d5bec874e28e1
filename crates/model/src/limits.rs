//! A job's own limits, from its job file: how often a task may fail, how long the job may
//! run, how long its record (and output) stay once it ended, and how often its logged tasks
//! may write to the store. Each is optional; an absent one falls back to the cluster's
//! setting, so one cluster can host a quick batch job, a latency-bound stream and a
//! long-lived, cost-bound one side by side.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The most restarts a job may allow a task.
pub const MAX_RESTARTS: u32 = 1000;
/// The longest `timeout_s` or `retention_s` (ten years, in seconds): beyond that a value is a
/// mistake, not a plan.
pub const MAX_SECONDS: f64 = 10.0 * 365.0 * 86_400.0;
/// The longest `commit_interval_ms` (a minute): a logged task's input waits up to the
/// interval before it is acknowledged, so a longer one would stall its senders for longer
/// than the cluster takes to call a task stalled.
pub const MAX_COMMIT_INTERVAL_MS: u32 = 60_000;

/// A job's limits; `None` means the leader's default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobLimits {
    /// Failures of one task the job survives (each restarts it); one more fails the job.
    #[serde(default)]
    pub max_restarts: Option<u32>,
    /// The job fails, saying so, once it has run this long (seconds since submission).
    #[serde(default)]
    pub timeout_s: Option<f64>,
    /// How long the job's record, and its output file, stay once it ended (seconds).
    #[serde(default)]
    pub retention_s: Option<f64>,
    /// The least time between two writes of one logged task's input log (group commits),
    /// in milliseconds; absent: the worker's setting (`RAINSTORM_LOG_COMMIT_MS`, 100 ms).
    /// The trade the job makes: each tuple waits up to this long at each logged stage
    /// before it moves on, and each logged task writes at most 1000 / this objects a second
    /// (`docs/benchmarks.md`). 0 commits as soon as nothing more is queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_interval_ms: Option<u32>,
}

impl JobLimits {
    /// The job's time limit.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout_s
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
    }

    /// How long the job's record and output stay after it ended, if the job says.
    pub fn retention(&self) -> Option<Duration> {
        self.retention_s
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
    }

    /// Every problem with these limits: (job-file field, value as written, what is wrong).
    pub fn problems(&self) -> Vec<(&'static str, String, String)> {
        let mut problems = Vec::new();
        if let Some(n) = self.max_restarts {
            if n > MAX_RESTARTS {
                problems.push((
                    "max_restarts",
                    n.to_string(),
                    format!("must be an integer from 0 to {MAX_RESTARTS}"),
                ));
            }
        }
        if let Some(s) = self.timeout_s {
            if !(s.is_finite() && s > 0.0 && s <= MAX_SECONDS) {
                problems.push((
                    "timeout_s",
                    s.to_string(),
                    format!("must be a number of seconds above 0, at most {MAX_SECONDS}"),
                ));
            }
        }
        if let Some(s) = self.retention_s {
            if !(s.is_finite() && (0.0..=MAX_SECONDS).contains(&s)) {
                problems.push((
                    "retention_s",
                    s.to_string(),
                    format!("must be a number of seconds from 0 to {MAX_SECONDS}"),
                ));
            }
        }
        if let Some(ms) = self.commit_interval_ms {
            if ms > MAX_COMMIT_INTERVAL_MS {
                problems.push((
                    "commit_interval_ms",
                    ms.to_string(),
                    format!(
                        "must be an integer of milliseconds from 0 to {MAX_COMMIT_INTERVAL_MS}"
                    ),
                ));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_out_of_range_are_named_by_their_fields() {
        let bad = JobLimits {
            max_restarts: Some(MAX_RESTARTS + 1),
            timeout_s: Some(0.0),
            retention_s: Some(f64::NAN),
            commit_interval_ms: Some(MAX_COMMIT_INTERVAL_MS + 1),
        };
        let fields: Vec<String> = bad
            .problems()
            .into_iter()
            .map(|p| p.0.to_string())
            .collect();
        assert_eq!(
            fields,
            [
                "max_restarts",
                "timeout_s",
                "retention_s",
                "commit_interval_ms"
            ]
        );
        let negative = JobLimits {
            timeout_s: Some(-1.0),
            retention_s: Some(-1.0),
            ..JobLimits::default()
        };
        assert_eq!(negative.problems().len(), 2);
        let good = JobLimits {
            max_restarts: Some(0),
            timeout_s: Some(0.5),
            retention_s: Some(0.0),
            commit_interval_ms: Some(0),
        };
        assert!(good.problems().is_empty());
        assert_eq!(good.timeout(), Some(Duration::from_millis(500)));
        assert!(JobLimits::default().problems().is_empty());
    }
}
