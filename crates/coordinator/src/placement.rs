//! Where a job's tasks run and what each attempt is told: the versioned placement (the route
//! table every worker follows), the assignment of one attempt, and the recovery rule of each
//! delivery mode. Pure functions of the job spec and the placement, used by the job's core
//! ([`crate::JobCore`]).

use crate::model::ids::{TaskKey, TaskPos};
use crate::model::partition::{partition_into, tasks_of};
use crate::model::pushdown::SourceFilter;
use crate::model::spec::{autoscale_of, Delivery, JobSpec, OperatorSpec, StageRole};
use crate::protocol::control::{Dest, Endpoint, SourceReplay, TaskAssignment, TaskRole};
use std::collections::BTreeMap;

/// What happens when a task attempt fails, by delivery mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Exactly-once: that task alone restarts (elsewhere if possible) and recovers from its
    /// input log, or in the first stage from the source file.
    RestartTask,
    /// At-least-once: the whole pipeline restarts from the source in a new epoch.
    RestartEpoch,
    /// At-most-once: nothing is ever re-run; the job fails with the output written so far.
    Fail,
}

/// The recovery rule of a delivery mode (the driver and the simulation both follow it).
pub fn recovery(delivery: Delivery) -> Recovery {
    match delivery {
        Delivery::ExactlyOnce => Recovery::RestartTask,
        Delivery::AtLeastOnce => Recovery::RestartEpoch,
        Delivery::AtMostOnce => Recovery::Fail,
    }
}

/// Everything a worker needs to run attempt `attempt` of `key` in `epoch`.
pub fn assignment(
    spec: &JobSpec,
    key: &TaskKey,
    attempt: u32,
    epoch: u32,
    routes: &Placement,
) -> TaskAssignment {
    let stage = key.pos.stage;
    // The first stage's input log is the source file: a first-stage task under exactly-once
    // regenerates from it whatever its source link holds acknowledged (the link says how far
    // in its Hello), so every attempt is told where the file is.
    let source_replay = (stage == 1
        && (spec.delivery == Delivery::ExactlyOnce || rebuilds_from_history(spec, stage)))
    .then(|| SourceReplay {
        path: spec.source_path.clone(),
        name: spec.source_name.clone(),
        partition: partition_into(spec, 1),
        tasks: tasks_of(spec, 1),
        steps: Vec::new(),
        filter: SourceFilter::of(spec),
    });
    let role = match spec.role_of(stage) {
        StageRole::Source => TaskRole::Source {
            path: spec.source_path.clone(),
            name: spec.source_name.clone(),
            rate: spec.rate,
            filter: SourceFilter::of(spec),
        },
        StageRole::Sink => TaskRole::Sink {
            path: spec.sink_path.clone(),
        },
        StageRole::Operator(s) => TaskRole::Operator {
            operator: s.operator.clone(),
        },
    };
    TaskAssignment {
        key: key.clone(),
        attempt,
        role,
        paths: spec.paths,
        upstream: match stage.checked_sub(1) {
            None => 0,
            Some(before) => tasks_of(spec, before),
        },
        downstream: match spec.role_of(stage) {
            StageRole::Sink => 0,
            _ => tasks_of(spec, stage + 1),
        },
        partition: partition_into(spec, stage + 1),
        routing: Default::default(),
        inbound: None,
        delivery: spec.delivery,
        routes: routes.list(),
        routes_version: routes.version,
        source_replay,
        source_caught_up: 0,
        epoch,
        log_input: stage > 1 && rebuilds_from_history(spec, stage),
        commit_interval_ms: spec.limits.commit_interval_ms,
        finished_upstream: Vec::new(),
        standby: false,
    }
}

/// Whether the tasks of `stage` rebuild a key group they gain from the group's history (an
/// executable that may keep state cannot hand it over): under exactly-once always (stages
/// ≥ 2 log their input, the first stage's log is the source file); under at-least-once when
/// the stage autoscales, for which its tasks log their input ([`TaskAssignment::log_input`]).
/// An at-least-once stage that does not autoscale keeps no log, and a manual rescale of it
/// restarts the pipeline (`restart_scale`); at-most-once never rebuilds.
pub fn rebuilds_from_history(spec: &JobSpec, stage: u32) -> bool {
    let StageRole::Operator(s) = spec.role_of(stage) else {
        return false;
    };
    if s.stateless || !matches!(s.operator, OperatorSpec::Exec { .. }) {
        return false;
    }
    match spec.delivery {
        Delivery::ExactlyOnce => true,
        Delivery::AtLeastOnce => autoscale_of(spec, stage).is_some(),
        Delivery::AtMostOnce => false,
    }
}

/// Where a job's tasks run, versioned so that workers apply placements in order.
#[derive(Default)]
pub struct Placement {
    table: BTreeMap<TaskPos, Dest>,
    version: u64,
}

impl Placement {
    /// Records that attempt `attempt` of the task at `pos` runs on the worker at `at` (a new
    /// version): its address, and the key that attempt's Hellos are signed with.
    pub fn insert(&mut self, pos: TaskPos, at: &Endpoint, attempt: u32) {
        self.table.insert(pos, Dest::running(at, attempt));
        self.version += 1;
    }

    /// Reserves attempt `attempt` of the task at `pos` before it has a worker (it waits for a
    /// slot): a new version that names the attempt, so receivers fence off every earlier one
    /// at once, as a restart does, but with no key, so no connection can speak for it until
    /// it is placed.
    pub fn reserve(&mut self, pos: TaskPos, attempt: u32) {
        let addr = self
            .table
            .get(&pos)
            .map(|d| d.addr.clone())
            .unwrap_or_default();
        self.table.insert(
            pos,
            Dest {
                addr,
                attempt,
                finished: false,
                key: None,
            },
        );
        self.version += 1;
    }

    /// Records that attempt `attempt` of the task at `pos` finished (a new version), unless a
    /// later attempt has replaced it; true when the placement changed.
    pub fn finish(&mut self, pos: TaskPos, attempt: u32) -> bool {
        match self.table.get_mut(&pos) {
            Some(d) if d.attempt == attempt && !d.finished => {
                d.finished = true;
                self.version += 1;
                true
            }
            _ => false,
        }
    }

    /// A placement as an earlier leader recorded it, at its version.
    pub fn restored(version: u64, entries: impl IntoIterator<Item = (TaskPos, Dest)>) -> Self {
        Placement {
            table: entries.into_iter().collect(),
            version,
        }
    }

    /// Where the task at `pos` runs, if placed.
    pub fn get(&self, pos: &TaskPos) -> Option<&Dest> {
        self.table.get(pos)
    }

    /// The version of the placement (newer wins on workers).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The placement in the list form control messages carry.
    pub fn list(&self) -> Vec<crate::protocol::control::Route> {
        self.table.iter().map(|(p, d)| (*p, d.clone())).collect()
    }
}
