//! The static half of "validate at the door": the one validator every [`JobSpec`] passes,
//! whether it came from a job file, the course syntax or the JSON API, so each rule is written
//! once. It needs no filesystem; the leader adds the other half (files exist, operators are
//! executable) in `leader::validate` before anything starts. Every problem names its field (in
//! the job file's own terms, `stages[2].tasks`) and the value as written, and all of them are
//! reported at once so a user fixes them in one round.

mod autoscale;
mod chain;
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

/// The most data links one job may open. A link is one connection from a sending task to a
/// receiving task of the next stage (acks come back on it): a stream of the TCP connection
/// between their processes, or with `RAINSTORM_DATA_MUX=0` a TCP connection of its own, which
/// holds a descriptor at both ends. Each one holds a place in its listener's and sender's cap
/// for the whole job, so a job's links, not its tasks, are what a worker runs out of. 4096 is also a worker's default data-connection cap, so a job within it fits on any
/// one worker with the default settings. See [`links`] for how they are counted.
pub const MAX_LINKS: u64 = 4096;

/// The most tasks one job may run, its stages' tasks together (the source and the sink come
/// on top). Each task's start carries the job's whole route table (one entry per task), so
/// what the leader sends its workers to start a job grows with the square of its tasks: at
/// 1024 tasks, about 180 MB of commands, enough to make a loaded leader miss heartbeats.
pub const MAX_TASKS: u64 = 512;

/// The tasks of a job's stages together.
pub fn stage_tasks(spec: &JobSpec) -> u64 {
    spec.stages.iter().map(|s| u64::from(s.tasks)).sum()
}

/// The data links a job opens: every task of a stage connects to every task of the next, the
/// source and the sink counting as a stage of one task each — `t1 + t1·t2 + … + t(K-1)·tK +
/// tK` for stages of `t1 … tK` tasks.
pub fn links(spec: &JobSpec) -> u64 {
    let tasks: Vec<u32> = spec.stages.iter().map(|s| s.tasks).collect();
    links_of(&tasks)
}

/// The data links of stages of `tasks` tasks, in order, with the source and the sink: the
/// rule [`links`] applies to a spec, for counts that are not (yet) one — the autoscaler asks
/// it before growing a stage.
pub fn links_of(tasks: &[u32]) -> u64 {
    let mut prev = 1u64; // the source
    let mut sum = 0u64;
    for &t in tasks {
        sum = sum.saturating_add(prev.saturating_mul(u64::from(t)));
        prev = u64::from(t);
    }
    sum.saturating_add(prev) // into the sink
}

/// The job file's name for every stage's task count, the field the link rule is about.
pub const LINKS_FIELD: &str = "stages[*].tasks";

/// The task counts of a job's stages as the job file lists them (`256, 256`): the value the
/// link rule's problems show.
pub fn tasks_list(spec: &JobSpec) -> String {
    let v: Vec<String> = spec.stages.iter().map(|s| s.tasks.to_string()).collect();
    v.join(", ")
}

/// How a job's links are counted, and its largest term: said in every refusal of the link
/// rule so a user sees which stages to shrink.
pub fn links_explained(spec: &JobSpec) -> String {
    let n = spec.stages.len();
    let mut terms: Vec<(u64, String)> = Vec::new();
    if let Some(first) = spec.stages.first() {
        terms.push((
            u64::from(first.tasks),
            "the source to stages[1]".to_string(),
        ));
    }
    for (i, w) in spec.stages.windows(2).enumerate() {
        let (a, b) = (u64::from(w[0].tasks), u64::from(w[1].tasks));
        terms.push((
            a * b,
            format!(
                "{} × {}",
                stage_field(i, "tasks"),
                stage_field(i + 1, "tasks")
            ),
        ));
    }
    if let Some(last) = spec.stages.last() {
        terms.push((u64::from(last.tasks), format!("stages[{n}] to the sink")));
    }
    // The first of equal terms (max_by_key keeps the last, so look from the end).
    let largest = terms
        .iter()
        .rev()
        .max_by_key(|(v, _)| *v)
        .map(|(v, what)| format!("; the largest term is {what} = {v}"))
        .unwrap_or_default();
    format!(
        "{} data links (one TCP connection from each task of a stage to each task of the next, \
         the source and the sink counting as one task each){largest}",
        links(spec)
    )
}

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
        // A problem with no value (a field that should not be there, a file that is not TOML)
        // reads `field: message`, not `field = : message`.
        match self.value.as_str() {
            "" => write!(f, "{}: {}", self.field, self.message),
            value => write!(f, "{} = {}: {}", self.field, value, self.message),
        }
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

/// The name of the built-in that keeps state in `op` (a chain's last step).
fn keyed_name(op: &OperatorSpec) -> &str {
    match op {
        OperatorSpec::Builtin { name, .. } => name,
        OperatorSpec::Chain { steps } => steps.last().map_or("", |s| &s.name),
        OperatorSpec::Exec { path, .. } => path,
    }
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
            shown_number(spec.rate),
            format!(
                "must be 0 (as fast as possible) or a number of tuples per second from {} to {}",
                RATE.start(),
                RATE.end()
            ),
        ));
    }
    problems.extend(autoscale::job_problems(spec));
    problems.extend(
        spec.limits
            .problems()
            .into_iter()
            .map(|(field, value, message)| Problem::new(field, value, message)),
    );
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
            OperatorSpec::Chain { steps } => problems.extend(chain::chain_problems(i, steps)),
        }
        if st.stateless && st.operator.keyed_column().is_some() {
            problems.push(Problem::new(
                stage_field(i, "stateless"),
                "true",
                format!(
                    "{} keeps state per key; only an executable's state can be declared absent",
                    keyed_name(&st.operator)
                ),
            ));
        }
        problems.extend(autoscale::stage_problems(spec, i));
    }
    // Counted only over valid stages: a stage of 100000 tasks is reported once, as itself.
    let counted = spec.stages.iter().all(|s| TASKS.contains(&s.tasks));
    if counted && spec.stages.len() <= MAX_STAGES && stage_tasks(spec) > MAX_TASKS {
        problems.push(Problem::new(
            LINKS_FIELD,
            tasks_list(spec),
            format!(
                "the job runs {} tasks (its stages' tasks together); a job may run at most \
                 {MAX_TASKS}: each task's start carries the job's whole route table, so \
                 starting a job costs the control plane the square of its tasks",
                stage_tasks(spec)
            ),
        ));
    }
    if counted && spec.stages.len() <= MAX_STAGES && links(spec) > MAX_LINKS {
        problems.push(Problem::new(
            LINKS_FIELD,
            tasks_list(spec),
            format!(
                "the job needs {}; a job may open at most {MAX_LINKS}: use fewer tasks in \
                 adjacent stages",
                links_explained(spec)
            ),
        ));
    }
    // What a file system can name (NUL, lengths): a rule of its own, in its own file.
    problems.extend(paths::check_paths(spec));
    problems
}

/// A number as a person would write it back: `1e300`, not its 301 digits (hostile probe 12).
fn shown_number(x: f64) -> String {
    let a = x.abs();
    if a.is_finite() && a != 0.0 && !(1e-4..1e15).contains(&a) {
        format!("{x:e}")
    } else {
        x.to_string()
    }
}

#[cfg(test)]
mod tests;
