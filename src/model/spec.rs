//! The job file: its TOML form, the validated [`JobSpec`] every component works from, and the
//! static half of "validate at the door" (the half that needs no filesystem). The leader adds the
//! other half (files exist, operators are executable) in `leader::validate` before anything starts.

use crate::model::builtin::BuiltinSpec;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Delivery guarantee of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// No acks-driven resends, no logs: a crash loses what was in flight.
    AtMostOnce,
    /// Resends unacknowledged batches; no input log, so a crash can duplicate output.
    AtLeastOnce,
    /// Input logs, replay and dedup at every boundary: output as if nothing failed.
    #[default]
    ExactlyOnce,
}

impl Delivery {
    /// Parses the job file's spelling.
    pub fn parse(s: &str) -> Option<Delivery> {
        match s {
            "at-most-once" => Some(Delivery::AtMostOnce),
            "at-least-once" => Some(Delivery::AtLeastOnce),
            "exactly-once" => Some(Delivery::ExactlyOnce),
            _ => None,
        }
    }

    /// The job file's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::AtMostOnce => "at-most-once",
            Delivery::AtLeastOnce => "at-least-once",
            Delivery::ExactlyOnce => "exactly-once",
        }
    }
}

/// How the paths of a job are to be read: `rainstorm run` uses the local filesystem, a cluster
/// uses its store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PathMode {
    /// Paths are store paths (cluster mode).
    #[default]
    Store,
    /// Paths are absolute local paths (embedded mode; the CLI resolved them).
    Local,
}

/// The operator a stage runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OperatorSpec {
    /// A built-in operator running inside the worker.
    Builtin {
        /// Built-in name, e.g. `count-by`.
        name: String,
        /// Its arguments.
        args: Vec<String>,
    },
    /// An executable, one process per task.
    Exec {
        /// Path (local path in local mode, store path in store mode).
        path: String,
        /// Command-line arguments.
        args: Vec<String>,
    },
}

impl OperatorSpec {
    /// Short human form for listings.
    pub fn describe(&self) -> String {
        match self {
            OperatorSpec::Builtin { name, args } => format!("{name} {}", args.join(" ")),
            OperatorSpec::Exec { path, args } => format!("{path} {}", args.join(" ")),
        }
        .trim_end()
        .to_string()
    }
}

/// One stage of parallel tasks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageSpec {
    /// Number of parallel tasks (≥ 1).
    pub tasks: u32,
    /// The operator each task runs.
    pub operator: OperatorSpec,
}

/// A validated job, as sent from client to leader.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Optional human name.
    pub name: Option<String>,
    /// Delivery guarantee.
    pub delivery: Delivery,
    /// Source file path.
    pub source_path: String,
    /// The file name used in source keys (`FILE:LINE`): the path as the job file wrote it.
    #[serde(default)]
    pub source_name: String,
    /// Source rate in tuples per second (0 = unthrottled).
    pub rate: f64,
    /// Sink file path.
    pub sink_path: String,
    /// The stages, in order.
    pub stages: Vec<StageSpec>,
    /// How paths are resolved.
    #[serde(default)]
    pub paths: PathMode,
    /// Keep input logs after the job ends (debugging).
    #[serde(default)]
    pub keep_logs: bool,
    /// Autoscaling watermarks (input tuples/s per task), recorded for the autoscaler.
    #[serde(default)]
    pub autoscale: Option<(f64, f64)>,
}

/// One problem found in a job file; `field` uses the file's own names (`stages[2].tasks`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The offending field.
    pub field: String,
    /// Its value as written.
    pub value: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {}: {}", self.field, self.value, self.message)
    }
}

/// All problems of a job file at once, so a user fixes them in one round.
#[derive(Debug, thiserror::Error)]
#[error("invalid job: {}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
pub struct InvalidJob(pub Vec<Problem>);

fn problem(
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

#[derive(Deserialize)]
struct RawJob {
    name: Option<String>,
    delivery: Option<toml::Value>,
    source: Option<RawSource>,
    sink: Option<RawSink>,
    #[serde(default)]
    stages: Vec<RawStage>,
    #[serde(default)]
    keep_logs: bool,
}

#[derive(Deserialize)]
struct RawSource {
    path: Option<String>,
    rate: Option<toml::Value>,
}

#[derive(Deserialize)]
struct RawSink {
    path: Option<String>,
}

#[derive(Deserialize)]
struct RawStage {
    tasks: Option<toml::Value>,
    exec: Option<String>,
    op: Option<String>,
    #[serde(default)]
    args: Vec<toml::Value>,
}

fn arg_string(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Parses and statically validates a job file's text; every problem is reported.
pub fn parse_job_toml(text: &str) -> Result<JobSpec, InvalidJob> {
    let raw: RawJob = toml::from_str(text).map_err(|e| {
        InvalidJob(vec![problem(
            "(file)",
            "",
            format!("not a valid job file: {e}"),
        )])
    })?;
    let mut problems = Vec::new();
    let delivery = match &raw.delivery {
        None => Delivery::ExactlyOnce,
        Some(toml::Value::String(s)) => Delivery::parse(s).unwrap_or_else(|| {
            problems.push(problem(
                "delivery",
                s,
                "unknown delivery; use at-most-once, at-least-once or exactly-once",
            ));
            Delivery::ExactlyOnce
        }),
        Some(other) => {
            problems.push(problem("delivery", other, "must be a string"));
            Delivery::ExactlyOnce
        }
    };
    let (source_path, rate) = match &raw.source {
        None => {
            problems.push(problem(
                "source",
                "(missing)",
                "add a [source] table with a path",
            ));
            (String::new(), 0.0)
        }
        Some(src) => {
            let path = src.path.clone().unwrap_or_default();
            if path.is_empty() {
                problems.push(problem("source.path", "(missing)", "name the input file"));
            }
            let rate = match &src.rate {
                None => 0.0,
                Some(v) => match v.as_float().or_else(|| v.as_integer().map(|i| i as f64)) {
                    Some(r) if r >= 0.0 && r.is_finite() => r,
                    _ => {
                        problems.push(problem(
                            "source.rate",
                            v,
                            "must be a number of tuples per second ≥ 0 (0 = as fast as possible)",
                        ));
                        0.0
                    }
                },
            };
            (path, rate)
        }
    };
    let sink_path = match raw.sink.as_ref().and_then(|s| s.path.clone()) {
        Some(p) if !p.is_empty() => p,
        _ => {
            problems.push(problem("sink.path", "(missing)", "name the output file"));
            String::new()
        }
    };
    if raw.stages.is_empty() {
        problems.push(problem(
            "stages",
            "(none)",
            "add at least one [[stages]] table",
        ));
    }
    let mut stages = Vec::new();
    for (i, st) in raw.stages.iter().enumerate() {
        let field = |f: &str| format!("stages[{}].{f}", i + 1);
        let tasks = match &st.tasks {
            None => 1,
            Some(v) => match v.as_integer() {
                Some(n) if (1..=1024).contains(&n) => n as u32,
                _ => {
                    problems.push(problem(
                        field("tasks"),
                        v,
                        "must be an integer from 1 to 1024",
                    ));
                    1
                }
            },
        };
        let args: Vec<String> = st.args.iter().map(arg_string).collect();
        let operator = match (&st.exec, &st.op) {
            (Some(_), Some(_)) => {
                problems.push(problem(
                    field("op"),
                    "(both)",
                    "give either exec or op, not both",
                ));
                continue;
            }
            (None, None) => {
                problems.push(problem(
                    field("op"),
                    "(missing)",
                    "give exec = \"path/to/operator\" or op = \"<built-in>\"",
                ));
                continue;
            }
            (Some(path), None) => {
                if path.is_empty() {
                    problems.push(problem(
                        field("exec"),
                        "\"\"",
                        "name the operator executable",
                    ));
                }
                OperatorSpec::Exec {
                    path: path.clone(),
                    args,
                }
            }
            (None, Some(name)) => {
                if let Err(msg) = BuiltinSpec::parse(name, &args) {
                    let f = if BuiltinSpec::is_known(name) {
                        field("args")
                    } else {
                        field("op")
                    };
                    let v = if BuiltinSpec::is_known(name) {
                        format!("{args:?}")
                    } else {
                        name.clone()
                    };
                    problems.push(problem(f, v, msg));
                }
                OperatorSpec::Builtin {
                    name: name.clone(),
                    args,
                }
            }
        };
        stages.push(StageSpec { tasks, operator });
    }
    if !problems.is_empty() {
        return Err(InvalidJob(problems));
    }
    Ok(JobSpec {
        name: raw.name,
        delivery,
        source_name: source_path.clone(),
        source_path,
        rate,
        sink_path,
        stages,
        paths: PathMode::Store,
        keep_logs: raw.keep_logs,
        autoscale: None,
    })
}

/// The static checks for a spec that did not come from a job file (the JSON API): the same
/// rules `parse_job_toml` enforces, so no submission path can skip them.
pub fn check_spec(spec: &JobSpec) -> Vec<Problem> {
    let mut problems = Vec::new();
    if !(spec.rate >= 0.0 && spec.rate.is_finite()) {
        problems.push(problem(
            "source.rate",
            spec.rate,
            "must be a number of tuples per second ≥ 0",
        ));
    }
    if spec.source_path.is_empty() {
        problems.push(problem("source.path", "(missing)", "name the input file"));
    }
    if spec.sink_path.is_empty() {
        problems.push(problem("sink.path", "(missing)", "name the output file"));
    }
    if spec.stages.is_empty() {
        problems.push(problem("stages", "(none)", "add at least one stage"));
    }
    for (i, st) in spec.stages.iter().enumerate() {
        if !(1..=1024).contains(&st.tasks) {
            problems.push(problem(
                format!("stages[{}].tasks", i + 1),
                st.tasks,
                "must be an integer from 1 to 1024",
            ));
        }
        match &st.operator {
            OperatorSpec::Builtin { name, args } => {
                if let Err(msg) = BuiltinSpec::parse(name, args) {
                    problems.push(problem(format!("stages[{}].op", i + 1), name, msg));
                }
            }
            OperatorSpec::Exec { path, .. } if path.is_empty() => {
                problems.push(problem(
                    format!("stages[{}].exec", i + 1),
                    "\"\"",
                    "name the operator executable",
                ));
            }
            OperatorSpec::Exec { .. } => {}
        }
    }
    problems
}

/// Builds a job from the course's positional syntax:
/// `<Nstages> <Ntasks> (<op_exe> <op_args>)×Nstages <src> <dest> <exactly_once> <autoscale> <rate> [<LW> <HW>]`.
/// Each `op_args` is one argument split like a shell would (`'7 "Punched Telespar"'`); `""`
/// means no arguments. An `op_exe` that names a built-in runs the built-in.
pub fn from_course_args(argv: &[String]) -> Result<JobSpec, InvalidJob> {
    let bad = |f: &str, v: &str, m: &str| InvalidJob(vec![problem(f, v, m)]);
    let nstages: usize = argv
        .first()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            bad(
                "Nstages",
                argv.first().map_or("", |s| s),
                "must be an integer ≥ 1",
            )
        })?;
    let ntasks: i64 = argv.get(1).and_then(|s| s.parse().ok()).ok_or_else(|| {
        bad(
            "Ntasks_per_stage",
            argv.get(1).map_or("", |s| s),
            "must be an integer ≥ 1",
        )
    })?;
    let need = 2 + 2 * nstages + 5;
    if argv.len() != need && argv.len() != need + 2 {
        return Err(bad(
            "(arguments)",
            &argv.len().to_string(),
            &format!(
                "expected {need} or {} arguments for {nstages} stages",
                need + 2
            ),
        ));
    }
    let mut toml_doc = toml::Table::new();
    let rest = &argv[2 + 2 * nstages..];
    let mut stages = Vec::new();
    for i in 0..nstages {
        let exe = &argv[2 + 2 * i];
        let args_word = &argv[3 + 2 * i];
        let args = shlex::split(args_word)
            .ok_or_else(|| bad(&format!("op{}_args", i + 1), args_word, "unbalanced quotes"))?;
        let mut st = toml::Table::new();
        st.insert("tasks".into(), toml::Value::Integer(ntasks));
        let key = if BuiltinSpec::is_known(exe) {
            "op"
        } else {
            "exec"
        };
        st.insert(key.into(), toml::Value::String(exe.clone()));
        st.insert(
            "args".into(),
            toml::Value::Array(args.into_iter().map(toml::Value::String).collect()),
        );
        stages.push(toml::Value::Table(st));
    }
    let exactly_once = match rest[2].to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => true,
        "false" | "0" | "no" => false,
        _ => return Err(bad("exactly_once", &rest[2], "must be true or false")),
    };
    let autoscale = match rest[3].to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => true,
        "false" | "0" | "no" => false,
        _ => return Err(bad("autoscale", &rest[3], "must be true or false")),
    };
    let rate: f64 = rest[4]
        .parse()
        .map_err(|_| bad("input_rate", &rest[4], "must be a number ≥ 0"))?;
    let mut source = toml::Table::new();
    source.insert("path".into(), toml::Value::String(rest[0].clone()));
    source.insert("rate".into(), toml::Value::Float(rate));
    let mut sink = toml::Table::new();
    sink.insert("path".into(), toml::Value::String(rest[1].clone()));
    toml_doc.insert("source".into(), toml::Value::Table(source));
    toml_doc.insert("sink".into(), toml::Value::Table(sink));
    toml_doc.insert("stages".into(), toml::Value::Array(stages));
    toml_doc.insert(
        "delivery".into(),
        toml::Value::String(
            if exactly_once {
                "exactly-once"
            } else {
                "at-least-once"
            }
            .into(),
        ),
    );
    let text = toml::to_string(&toml_doc)
        .map_err(|e| bad("(arguments)", "", &format!("cannot build job: {e}")))?;
    let mut spec = parse_job_toml(&text)?;
    if autoscale {
        let lw = rest.get(5).map(|s| s.parse::<f64>());
        let hw = rest.get(6).map(|s| s.parse::<f64>());
        match (lw, hw) {
            (Some(Ok(lw)), Some(Ok(hw))) if lw >= 0.0 && hw > lw => spec.autoscale = Some((lw, hw)),
            _ => {
                return Err(bad(
                    "LW/HW",
                    &rest[5..].join(" "),
                    "autoscale needs two numbers LW < HW (tuples/s per task)",
                ))
            }
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP2: &str = r#"
name = "app2"
delivery = "exactly-once"
[source]
path = "signs.csv"
rate = 0
[sink]
path = "out/app2.txt"
[[stages]]
tasks = 3
exec = "ops/filter.py"
args = ["7", "Punched Telespar"]
[[stages]]
tasks = 3
op = "count-by"
args = ["9"]
"#;

    #[test]
    fn parses_the_contract_example() {
        let spec = parse_job_toml(APP2).unwrap();
        assert_eq!(spec.stages.len(), 2);
        assert_eq!(spec.delivery, Delivery::ExactlyOnce);
        assert_eq!(
            spec.stages[0].operator,
            OperatorSpec::Exec {
                path: "ops/filter.py".into(),
                args: vec!["7".into(), "Punched Telespar".into()]
            }
        );
    }

    #[test]
    fn reports_every_problem_with_field_and_value() {
        let text = r#"
delivery = "twice"
[source]
path = "x"
rate = -3
[sink]
path = "y"
[[stages]]
tasks = 0
op = "frobnicate"
"#;
        let err = parse_job_toml(text).unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            ["delivery", "source.rate", "stages[1].tasks", "stages[1].op"]
        );
        assert!(err.to_string().contains("twice"));
        assert!(err.to_string().contains("frobnicate"));
    }

    #[test]
    fn course_syntax_builds_the_same_job() {
        let argv: Vec<String> = [
            "2",
            "3",
            "ops/filter.py",
            "7 'Punched Telespar'",
            "count-by",
            "9",
            "signs.csv",
            "out/app2.txt",
            "true",
            "false",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let spec = from_course_args(&argv).unwrap();
        let expect = parse_job_toml(APP2).unwrap();
        assert_eq!(spec.stages, expect.stages);
        assert_eq!(spec.source_path, "signs.csv");
        assert_eq!(spec.delivery, Delivery::ExactlyOnce);
    }
}
