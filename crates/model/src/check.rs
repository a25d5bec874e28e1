//! The static half of "validate at the door": the one validator every [`JobSpec`] passes,
//! whether it came from a job file, the course syntax or the JSON API, so each rule is written
//! once. It needs no filesystem; the leader adds the other half (files exist, operators are
//! executable) in `leader::validate` before anything starts. Every problem names its field (in
//! the job file's own terms, `stages[2].tasks`) and the value as written, and all of them are
//! reported at once so a user fixes them in one round.

mod paths;

pub use paths::{path_problem, MAX_COMPONENT, MAX_PATH};

use crate::builtin::BuiltinSpec;
use crate::spec::{JobSpec, OperatorSpec};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The allowed number of tasks of one stage.
pub const TASKS: std::ops::RangeInclusive<u32> = 1..=256;

/// The most stages one job may have.
pub const MAX_STAGES: usize = 64;

/// The allowed source rates in tuples per second, besides 0 (as fast as possible): one tuple
/// every 1000 s at the slowest (a slower rate would put the next tuple's due time out of
/// reach of the clock), a billion per second at the fastest (far beyond what one source can do).
pub const RATE: std::ops::RangeInclusive<f64> = 1e-3..=1e9;

/// Whether `rate` is a usable source rate: 0, or a finite number in [`RATE`].
pub fn rate_ok(rate: f64) -> bool {
    rate == 0.0 || RATE.contains(&rate)
}

/// One problem found in a job; `field` uses the job file's own names (`stages[2].tasks`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The offending field.
    pub field: String,
    /// Its value as written.
    pub value: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Problem {
    /// A problem with `field` = `value`.
    pub fn new(
        field: impl Into<String>,
        value: impl fmt::Display,
        message: impl Into<String>,
    ) -> Problem {
        Problem {
            field: field.into(),
            value: value.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {}: {}", self.field, self.value, self.message)
    }
}

/// All problems of a job at once.
#[derive(Debug, thiserror::Error)]
#[error("invalid job: {}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
pub struct InvalidJob(pub Vec<Problem>);

/// The job file's name of stage `i`'s (0-based) field `f`: `stages[i+1].f`.
pub fn stage_field(i: usize, f: &str) -> String {
    format!("stages[{}].{f}", i + 1)
}

/// Every static problem of a spec, in the order of the job file (source, sink, stages).
pub fn check_spec(spec: &JobSpec) -> Vec<Problem> {
    let mut problems = Vec::new();
    if spec.source_path.is_empty() {
        problems.push(Problem::new(
            "source.path",
            "(missing)",
            "name the input file (path in the [source] table)",
        ));
    }
    if !rate_ok(spec.rate) {
        problems.push(Problem::new(
            "source.rate",
            spec.rate,
            format!(
                "must be 0 (as fast as possible) or a number of tuples per second from {} to {}",
                RATE.start(),
                RATE.end()
            ),
        ));
    }
    if let Some((lw, hw)) = spec.autoscale {
        if !(rate_ok(lw) && rate_ok(hw) && lw < hw) {
            problems.push(Problem::new(
                "autoscale",
                format!("{lw} {hw}"),
                format!(
                    "needs two numbers LW < HW (tuples/s per task), each 0 or from {} to {}",
                    RATE.start(),
                    RATE.end()
                ),
            ));
        }
    }
    if spec.sink_path.is_empty() {
        problems.push(Problem::new(
            "sink.path",
            "(missing)",
            "name the output file (path in the [sink] table)",
        ));
    }
    if spec.stages.is_empty() {
        problems.push(Problem::new(
            "stages",
            "(none)",
            "add at least one stage (a [[stages]] table)",
        ));
    }
    if spec.stages.len() > MAX_STAGES {
        problems.push(Problem::new(
            "stages",
            format!("({} stages)", spec.stages.len()),
            format!("a job has at most {MAX_STAGES} stages"),
        ));
    }
    for (i, st) in spec.stages.iter().enumerate() {
        if !TASKS.contains(&st.tasks) {
            problems.push(Problem::new(
                stage_field(i, "tasks"),
                st.tasks,
                format!(
                    "must be an integer from {} to {}",
                    TASKS.start(),
                    TASKS.end()
                ),
            ));
        }
        match &st.operator {
            OperatorSpec::Builtin { name, args } => {
                if let Err(e) = BuiltinSpec::parse(name, args) {
                    let msg = e.to_string();
                    // A known built-in with bad arguments: the arguments are the problem.
                    problems.push(if BuiltinSpec::is_known(name) {
                        Problem::new(stage_field(i, "args"), format!("{args:?}"), msg)
                    } else {
                        Problem::new(stage_field(i, "op"), name, msg)
                    });
                }
            }
            OperatorSpec::Exec { path, .. } if path.is_empty() => {
                problems.push(Problem::new(
                    stage_field(i, "exec"),
                    "\"\"",
                    "name the operator executable",
                ));
            }
            OperatorSpec::Exec { .. } => {}
        }
    }
    // What a file system can name (NUL, lengths): a rule of its own, in its own file.
    problems.extend(paths::check_paths(spec));
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Delivery, PathMode, StageSpec};

    fn spec(stages: Vec<StageSpec>) -> JobSpec {
        JobSpec {
            name: None,
            delivery: Delivery::ExactlyOnce,
            source_path: "in.csv".into(),
            source_name: "in.csv".into(),
            rate: 0.0,
            sink_path: "out.txt".into(),
            stages,
            paths: PathMode::Store,
            keep_logs: false,
            autoscale: None,
        }
    }

    fn builtin(name: &str, args: &[&str]) -> OperatorSpec {
        OperatorSpec::Builtin {
            name: name.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn a_good_spec_has_no_problems() {
        let s = spec(vec![StageSpec {
            tasks: 3,
            operator: builtin("count-by", &["9"]),
        }]);
        assert!(check_spec(&s).is_empty());
    }

    #[test]
    fn names_each_field_and_the_value() {
        let mut s = spec(vec![
            StageSpec {
                tasks: 0,
                operator: builtin("frobnicate", &[]),
            },
            StageSpec {
                tasks: 2000,
                operator: builtin("count-by", &["zero"]),
            },
            StageSpec {
                tasks: 1,
                operator: OperatorSpec::Exec {
                    path: String::new(),
                    args: vec![],
                },
            },
        ]);
        s.rate = -3.0;
        s.sink_path.clear();
        let got: Vec<(String, String)> = check_spec(&s)
            .into_iter()
            .map(|p| (p.field, p.value))
            .collect();
        let want = [
            ("source.rate", "-3"),
            ("sink.path", "(missing)"),
            ("stages[1].tasks", "0"),
            ("stages[1].op", "frobnicate"),
            ("stages[2].tasks", "2000"),
            ("stages[2].args", "[\"zero\"]"),
            ("stages[3].exec", "\"\""),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(f, v)| (f.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    fn with_rate(rate: f64) -> Vec<Problem> {
        let mut s = spec(vec![StageSpec {
            tasks: 1,
            operator: builtin("identity", &[]),
        }]);
        s.rate = rate;
        check_spec(&s)
    }

    #[test]
    fn a_vanishing_rate_is_rejected_with_field_and_value_instead_of_panicking_the_source() {
        let p = with_rate(1e-300);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].field, "source.rate");
        assert_eq!(p[0].value, 1e-300f64.to_string());
        assert!(p[0].message.contains("0.001"), "{}", p[0]);
    }

    #[test]
    fn nan_infinite_negative_and_absurd_rates_are_rejected_and_sane_ones_accepted() {
        for bad in [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -1.0,
            1e10,
            1e300,
        ] {
            let p = with_rate(bad);
            assert_eq!(p.len(), 1, "rate {bad}: {p:?}");
            assert_eq!(
                (p[0].field.as_str(), p[0].value.as_str()),
                ("source.rate", bad.to_string().as_str())
            );
        }
        for good in [0.0, 0.001, 1.0, 2500.5, 1e9] {
            assert!(with_rate(good).is_empty(), "rate {good}");
        }
    }

    #[test]
    fn autoscale_watermarks_must_be_finite_and_ordered() {
        for (lw, hw) in [
            (f64::NAN, 10.0),
            (1.0, f64::INFINITY),
            (5.0, 5.0),
            (-1.0, 3.0),
        ] {
            let mut s = spec(vec![StageSpec {
                tasks: 1,
                operator: builtin("identity", &[]),
            }]);
            s.autoscale = Some((lw, hw));
            let p = check_spec(&s);
            assert_eq!(p.len(), 1, "{lw} {hw}: {p:?}");
            assert_eq!(p[0].field, "autoscale");
        }
    }

    #[test]
    fn more_than_256_tasks_in_a_stage_is_rejected_with_the_limit() {
        let s = spec(vec![StageSpec {
            tasks: 257,
            operator: builtin("identity", &[]),
        }]);
        let p = check_spec(&s);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(
            p[0].to_string(),
            "stages[1].tasks = 257: must be an integer from 1 to 256"
        );
        let s = spec(vec![StageSpec {
            tasks: 256,
            operator: builtin("identity", &[]),
        }]);
        assert!(check_spec(&s).is_empty());
    }

    #[test]
    fn more_than_64_stages_is_rejected_with_the_limit() {
        let stage = StageSpec {
            tasks: 1,
            operator: builtin("identity", &[]),
        };
        let p = check_spec(&spec(vec![stage.clone(); 65]));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(
            p[0].to_string(),
            "stages = (65 stages): a job has at most 64 stages"
        );
        assert!(check_spec(&spec(vec![stage; 64])).is_empty());
    }
}
