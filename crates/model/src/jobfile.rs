//! The job file (TOML): decodes it into a [`JobSpec`] and hands that to the one static
//! validator, [`check_spec`]. A field it does not know is refused, not ignored: a typo such
//! as `delivry = "at-most-once"` would otherwise run the job under another guarantee. Decoding itself only reports what a `JobSpec` cannot hold (bad
//! TOML, an unknown delivery, a stage with more or fewer than one of `exec`, `op` and `chain`); a value of the
//! wrong type becomes an invalid value that `check_spec` then rejects, shown as written.

use crate::check::{check_spec, stage_field, InvalidJob, Problem};
use crate::spec::{ChainStep, Delivery, JobSpec, OperatorSpec, PathMode, StageSpec};
use serde::Deserialize;
use std::collections::HashMap;

mod autoscale;

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
    max_restarts: Option<toml::Value>,
    timeout_s: Option<toml::Value>,
    retention_s: Option<toml::Value>,
    commit_interval_ms: Option<toml::Value>,
    autoscale: Option<toml::Value>,
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
    chain: Option<Vec<RawStep>>,
    autoscale: Option<toml::Value>,
    #[serde(default)]
    stateless: bool,
}

/// One step of a stage's `chain`: a built-in and its arguments.
#[derive(Deserialize)]
struct RawStep {
    op: String,
    #[serde(default)]
    args: Vec<toml::Value>,
}

fn arg_string(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What decoding found besides the spec.
#[derive(Default)]
struct Decoding {
    /// Problems a `JobSpec` cannot express.
    problems: Vec<Problem>,
    /// Fields whose value had to be replaced by an invalid one, with the value as written.
    written: HashMap<String, String>,
}

/// Where a field stands in the file, to report problems in reading order.
fn file_order(field: &str) -> usize {
    if field.starts_with("source") {
        1
    } else if field.starts_with("sink") {
        2
    } else if let Some(rest) = field.strip_prefix("stages[") {
        3 + rest
            .split(']')
            .next()
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0)
    } else if field == "stages" {
        3
    } else {
        0
    }
}

impl Decoding {
    fn delivery(&mut self, v: Option<&toml::Value>) -> Delivery {
        let (value, message) = match v {
            None => return Delivery::ExactlyOnce,
            Some(toml::Value::String(s)) => match Delivery::parse(s) {
                Some(d) => return d,
                None => (
                    s.clone(),
                    "unknown delivery; use at-most-once, at-least-once or exactly-once",
                ),
            },
            Some(other) => (other.to_string(), "must be a string"),
        };
        self.problems.push(Problem::new("delivery", value, message));
        Delivery::ExactlyOnce
    }

    /// A number, or NaN (which the validator rejects) for a value of another type.
    fn rate(&mut self, v: Option<&toml::Value>) -> f64 {
        match v {
            None => 0.0,
            Some(v) => v
                .as_float()
                .or_else(|| v.as_integer().map(|i| i as f64))
                .unwrap_or_else(|| {
                    self.written.insert("source.rate".into(), v.to_string());
                    f64::NAN
                }),
        }
    }

    /// An optional count; anything that is not one becomes an out-of-range count the
    /// validator rejects, shown as written.
    fn count(&mut self, field: &str, v: Option<&toml::Value>) -> Option<u32> {
        let v = v?;
        Some(
            v.as_integer()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or_else(|| {
                    self.written.insert(field.into(), v.to_string());
                    u32::MAX
                }),
        )
    }

    /// Optional seconds; anything that is not a number becomes NaN, which the validator
    /// rejects, shown as written.
    fn seconds(&mut self, field: &str, v: Option<&toml::Value>) -> Option<f64> {
        let v = v?;
        Some(
            v.as_float()
                .or_else(|| v.as_integer().map(|i| i as f64))
                .unwrap_or_else(|| {
                    self.written.insert(field.into(), v.to_string());
                    f64::NAN
                }),
        )
    }

    /// A task count, or 0 (which the validator rejects) for anything that is not one.
    fn tasks(&mut self, i: usize, v: Option<&toml::Value>) -> u32 {
        match v {
            None => 1,
            Some(v) => v
                .as_integer()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or_else(|| {
                    self.written.insert(stage_field(i, "tasks"), v.to_string());
                    0
                }),
        }
    }

    fn operator(&mut self, i: usize, st: &RawStage) -> OperatorSpec {
        let args: Vec<String> = st.args.iter().map(arg_string).collect();
        if let Some(chain) = &st.chain {
            if st.exec.is_none() && st.op.is_none() && st.args.is_empty() {
                return OperatorSpec::Chain {
                    steps: chain
                        .iter()
                        .map(|s| ChainStep {
                            name: s.op.clone(),
                            args: s.args.iter().map(arg_string).collect(),
                        })
                        .collect(),
                };
            }
            self.problems.push(Problem::new(
                stage_field(i, "chain"),
                "(with exec, op or args)",
                "a chain names its built-ins in its steps: give either chain or exec/op and \
                 args, not both",
            ));
            return identity();
        }
        let (value, message) = match (&st.exec, &st.op) {
            (Some(path), None) => {
                return OperatorSpec::Exec {
                    path: path.clone(),
                    args,
                }
            }
            (None, Some(name)) => {
                return OperatorSpec::Builtin {
                    name: name.clone(),
                    args,
                }
            }
            (Some(_), Some(_)) => ("(both)", "give either exec or op, not both"),
            (None, None) => (
                "(missing)",
                "give exec = \"path/to/operator\", op = \"<built-in>\" or chain = [...]",
            ),
        };
        self.problems
            .push(Problem::new(stage_field(i, "op"), value, message));
        identity()
    }
}

/// A stand-in operator that passes validation, so only a stage's other problems are added.
fn identity() -> OperatorSpec {
    OperatorSpec::Builtin {
        name: "identity".into(),
        args: Vec::new(),
    }
}

/// Parses and statically validates a job file's text; every problem is reported.
pub fn parse_job_toml(text: &str) -> Result<JobSpec, InvalidJob> {
    match parse_job_toml_checked(text)? {
        (spec, problems) if problems.is_empty() => Ok(spec),
        (_, problems) => Err(InvalidJob(problems)),
    }
}

/// The job a file's text describes, with every problem of its static validation (in file
/// order), so that a caller can add what it finds of the files it names to one answer. An
/// error only for text that is not a job file at all.
pub fn parse_job_toml_checked(text: &str) -> Result<(JobSpec, Vec<Problem>), InvalidJob> {
    // Every field it does not know is named, not only the first (serde's
    // `deny_unknown_fields` stops there): two typos are reported in one answer.
    let mut unknown = Vec::new();
    let decoded = toml::Deserializer::parse(text).and_then(|de| {
        serde_ignored::deserialize(de, |path| unknown.push(unknown_field(&path.to_string())))
    });
    let raw: RawJob = match decoded {
        Ok(raw) => raw,
        Err(e) => {
            unknown.push(Problem::new(
                "(file)",
                "",
                format!("not a valid job file: {e}"),
            ));
            return Err(InvalidJob(unknown));
        }
    };
    let mut d = Decoding::default();
    d.problems.append(&mut unknown);
    let delivery = d.delivery(raw.delivery.as_ref());
    let source_path = raw
        .source
        .as_ref()
        .and_then(|s| s.path.clone())
        .unwrap_or_default();
    let rate = d.rate(raw.source.as_ref().and_then(|s| s.rate.as_ref()));
    let autoscale = raw.autoscale.as_ref().and_then(|v| d.job_autoscale(v));
    let stages = raw
        .stages
        .iter()
        .enumerate()
        .map(|(i, st)| StageSpec {
            tasks: d.tasks(i, st.tasks.as_ref()),
            operator: d.operator(i, st),
            autoscale: d.stage_autoscale(i, st.autoscale.as_ref(), autoscale.is_some()),
            stateless: st.stateless,
        })
        .collect();
    let spec = JobSpec {
        name: raw.name,
        delivery,
        source_name: source_path.clone(),
        source_path,
        rate,
        sink_path: raw.sink.and_then(|s| s.path).unwrap_or_default(),
        stages,
        paths: PathMode::Store,
        keep_logs: raw.keep_logs,
        autoscale,
        limits: crate::limits::JobLimits {
            max_restarts: d.count("max_restarts", raw.max_restarts.as_ref()),
            timeout_s: d.seconds("timeout_s", raw.timeout_s.as_ref()),
            retention_s: d.seconds("retention_s", raw.retention_s.as_ref()),
            commit_interval_ms: d.count("commit_interval_ms", raw.commit_interval_ms.as_ref()),
        },
    };
    let mut problems = check_spec(&spec);
    for p in &mut problems {
        if let Some(v) = d.written.remove(&p.field) {
            p.value = v;
        }
    }
    // The validator's problems come first within a field group, then the decoder's; the
    // stable sort keeps that and puts the groups in file order.
    problems.append(&mut d.problems);
    problems.sort_by_key(|p| file_order(&p.field));
    Ok((spec, problems))
}

/// `problems` with `more` of fields not among them, in file order.
pub fn add_problems(problems: &mut Vec<Problem>, more: Vec<Problem>) {
    let refused: std::collections::BTreeSet<String> =
        problems.iter().map(|p| p.field.clone()).collect();
    problems.extend(more.into_iter().filter(|p| !refused.contains(&p.field)));
    problems.sort_by_key(|p| file_order(&p.field));
}

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_autoscale;

/// A field the job file does not know, as a problem: where it is (`stages[2].taskz`, numbered
/// from 1 as every other problem is) and its name.
fn unknown_field(path: &str) -> Problem {
    let mut field = String::new();
    // serde_ignored writes `?` for an optional table's value: not part of the file's path.
    for part in path.split('.').filter(|p| *p != "?") {
        match part.parse::<usize>() {
            Ok(i) => field.push_str(&format!("[{}]", i + 1)),
            Err(_) => {
                if !field.is_empty() {
                    field.push('.');
                }
                field.push_str(part);
            }
        }
    }
    let name = path.rsplit('.').next().unwrap_or(path);
    Problem::new(
        &field,
        "",
        format!("unknown field `{name}`: not a job file field (a misspelling would otherwise be ignored and its default used)"),
    )
}
