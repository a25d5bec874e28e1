//! What a job is: the [`JobSpec`] every component works from (source, stages, sink, delivery
//! guarantee, how its paths resolve), as the client sends it to the leader. Reading one from a
//! job file is `jobfile`, from the course's positional syntax `course`, and the one static
//! validator every spec passes is `check`.

use crate::autoscale::{resolve, Autoscale, AutoscaleSpec, StageAutoscale};
use crate::builtin::BuiltinSpec;
use serde::{Deserialize, Serialize};

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
    /// Built-ins chained inside each task (Flink's operator chain): each step's output is the
    /// next step's input, with no hop, log or partition between them, so a pipeline of cheap
    /// built-ins costs one stage. Only the last step may keep state (see `check`).
    Chain {
        /// The steps, in order.
        steps: Vec<ChainStep>,
    },
}

/// One built-in of a [`OperatorSpec::Chain`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainStep {
    /// Built-in name, e.g. `filter`.
    pub name: String,
    /// Its arguments.
    pub args: Vec<String>,
}

impl OperatorSpec {
    /// Short human form for listings.
    pub fn describe(&self) -> String {
        match self {
            OperatorSpec::Builtin { name, args } => format!("{name} {}", args.join(" ")),
            OperatorSpec::Exec { path, args } => format!("{path} {}", args.join(" ")),
            OperatorSpec::Chain { steps } => steps
                .iter()
                .map(|s| {
                    format!("{} {}", s.name, s.args.join(" "))
                        .trim_end()
                        .to_string()
                })
                .collect::<Vec<_>>()
                .join(" | "),
        }
        .trim_end()
        .to_string()
    }

    /// The CSV column (0-based) a built-in that keeps state per key (`count-by`, also as a
    /// chain's last step) reads its key from: upstream routes by it, and its key groups move
    /// with their state. `None` for stateless built-ins and for executables, which route by
    /// the tuple's key. A chain's keyed step follows only steps that pass values unchanged
    /// (`check` says so), so the column means the same in the stage's input.
    pub fn keyed_column(&self) -> Option<usize> {
        match self {
            OperatorSpec::Builtin { name, args } => BuiltinSpec::routing_column(name, args),
            OperatorSpec::Chain { steps } => steps
                .last()
                .and_then(|s| BuiltinSpec::routing_column(&s.name, &s.args)),
            OperatorSpec::Exec { .. } => None,
        }
    }

    /// Whether the operator is an executable (a process per task).
    pub fn is_exec(&self) -> bool {
        matches!(self, OperatorSpec::Exec { .. })
    }
}

/// One stage of parallel tasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageSpec {
    /// Number of parallel tasks (≥ 1); an autoscaled stage starts with this many.
    pub tasks: u32,
    /// The operator each task runs.
    pub operator: OperatorSpec,
    /// Whether the stage autoscales: the job's settings (the default, also for specs written
    /// before this field), none, or its own override.
    #[serde(default, skip_serializing_if = "StageAutoscale::is_inherit")]
    pub autoscale: StageAutoscale,
    /// The user's word that the stage's executable keeps no state between tuples: its key
    /// groups then move without rebuilding anything (a live switch in every delivery mode,
    /// no process restart). An executable is otherwise taken to keep state per key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stateless: bool,
}

impl StageSpec {
    /// A stage of `tasks` tasks running `operator`, with the job's autoscale settings.
    pub fn new(tasks: u32, operator: OperatorSpec) -> StageSpec {
        StageSpec {
            tasks,
            operator,
            autoscale: StageAutoscale::Inherit,
            stateless: false,
        }
    }
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
    /// The job's `[autoscale]` table, which its stages inherit (see `autoscale_of`); `None`:
    /// no stage autoscales unless it gives its own watermarks.
    #[serde(default)]
    pub autoscale: Option<AutoscaleSpec>,
    /// The job's own limits (restarts, time, retention); absent ones are the leader's.
    #[serde(default)]
    pub limits: crate::limits::JobLimits,
}

/// What runs at one stage of a job. Stage 0 is the source, stages 1..=K are the user's
/// stages, K+1 is the sink: the one place that rule is written, so no caller derives it.
#[derive(Clone, Copy, Debug)]
pub enum StageRole<'a> {
    /// Stage 0: reads the source file.
    Source,
    /// Stages 1..=K: the user's operator.
    Operator(&'a StageSpec),
    /// Stage K+1: commits the output.
    Sink,
}

impl JobSpec {
    /// What runs at `stage` (anything past K is the sink; positions past K+1 do not exist).
    pub fn role_of(&self, stage: u32) -> StageRole<'_> {
        match (stage as usize).checked_sub(1) {
            None => StageRole::Source,
            Some(i) => self
                .stages
                .get(i)
                .map_or(StageRole::Sink, StageRole::Operator),
        }
    }

    /// The sink's stage number, K+1.
    pub fn sink_stage(&self) -> u32 {
        self.stages.len() as u32 + 1
    }
}

/// The resolved autoscale settings of operator stage `stage` (1..=K, as in
/// [`JobSpec::role_of`]), or `None` when it does not autoscale (opted out, no settings, or not
/// an operator stage): the one place a stage's settings are worked out (see
/// `autoscale::resolve` for the defaults).
pub fn autoscale_of(spec: &JobSpec, stage: u32) -> Option<Autoscale> {
    match spec.role_of(stage) {
        StageRole::Operator(st) => resolve(spec.autoscale.as_ref(), &st.autoscale, st.tasks),
        _ => None,
    }
}

#[cfg(any(test, feature = "test-util"))]
impl JobSpec {
    /// A job for unit tests: `in.txt` → `stages` → `o.txt`, exactly-once, store paths.
    pub fn sample(stages: Vec<StageSpec>) -> JobSpec {
        JobSpec {
            name: None,
            delivery: Delivery::ExactlyOnce,
            source_path: "in.txt".into(),
            source_name: "in.txt".into(),
            rate: 0.0,
            sink_path: "o.txt".into(),
            stages,
            paths: PathMode::Store,
            keep_logs: false,
            autoscale: None,
            limits: Default::default(),
        }
    }
}
