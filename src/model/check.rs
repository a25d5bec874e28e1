//! The static half of "validate at the door": the one validator every [`JobSpec`] passes,
//! whether it came from a job file, the course syntax or the JSON API, so each rule is written
//! once. It needs no filesystem; the leader adds the other half (files exist, operators are
//! executable) in `leader::validate` before anything starts. Every problem names its field (in
//! the job file's own terms, `stages[2].tasks`) and the value as written, and all of them are
//! reported at once so a user fixes them in one round.

use crate::model::builtin::BuiltinSpec;
use crate::model::spec::{JobSpec, OperatorSpec};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The allowed number of tasks of one stage.
pub const TASKS: std::ops::RangeInclusive<u32> = 1..=1024;

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
    if !(spec.rate >= 0.0 && spec.rate.is_finite()) {
        problems.push(Problem::new(
            "source.rate",
            spec.rate,
            "must be a number of tuples per second ≥ 0 (0 = as fast as possible)",
        ));
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
                if let Err(msg) = BuiltinSpec::parse(name, args) {
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
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::spec::{Delivery, PathMode, StageSpec};

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
}
