//! A job's own limits, from its job file: how often a task may fail, how long the job may
//! run, and how long its record (and output) stay once it ended. Each is optional; an absent
//! one falls back to the leader's setting, so one leader can host a quick batch job and a
//! long-lived stream side by side.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The most restarts a job may allow a task.
pub const MAX_RESTARTS: u32 = 1000;
/// The longest `timeout_s` or `retention_s` (ten years, in seconds): beyond that a value is a
/// mistake, not a plan.
pub const MAX_SECONDS: f64 = 10.0 * 365.0 * 86_400.0;

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
        };
        let fields: Vec<String> = bad
            .problems()
            .into_iter()
            .map(|p| p.0.to_string())
            .collect();
        assert_eq!(fields, ["max_restarts", "timeout_s", "retention_s"]);
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
        };
        assert!(good.problems().is_empty());
        assert_eq!(good.timeout(), Some(Duration::from_millis(500)));
        assert!(JobLimits::default().problems().is_empty());
    }
}
