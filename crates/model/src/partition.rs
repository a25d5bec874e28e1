//! How a tuple picks its task in the next stage: by the hash of its key, or, into a keyed
//! built-in, by the hash of the CSV column the built-in counts by. One definition, shared by
//! routers, by first-stage replay (which must route exactly as the source did) and by the
//! leader (which tells each task how its outputs are partitioned).

use crate::csv::CsvSplitter;
use crate::groups::{GroupMap, KEY_GROUPS};
use crate::spec::JobSpec;
use crate::tuple::{stable_hash, Tuple};

/// How a tuple picks its key group (and so its destination task).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Partition {
    /// `hash(key)`.
    Key,
    /// `hash(CSV column of the value)` (0-based column): keyed built-ins.
    Column(usize),
}

/// Picks a tuple's key group, and its destination by a [`GroupMap`]; shared by routers and
/// by source replay, which must route exactly as the source did.
pub struct Partitioner {
    partition: Partition,
    map: GroupMap,
    csv: CsvSplitter,
}

impl Partitioner {
    /// A partitioner over `n` tasks, groups dealt evenly ([`GroupMap::even`]).
    pub fn new(partition: Partition, n: usize) -> Self {
        Partitioner::with_map(partition, GroupMap::even(n as u32))
    }

    /// A partitioner by `map`.
    pub fn with_map(partition: Partition, map: GroupMap) -> Self {
        Partitioner {
            partition,
            map,
            csv: CsvSplitter::default(),
        }
    }

    /// How it picks key groups.
    pub fn partition(&self) -> &Partition {
        &self.partition
    }

    /// Routes by `map` from now on.
    pub fn set_map(&mut self, map: GroupMap) {
        self.map = map;
    }

    /// The key group of `t`.
    pub fn group(&mut self, t: &Tuple) -> usize {
        match self.partition {
            Partition::Key => group_of(&t.key),
            Partition::Column(c) => {
                self.csv.split(&t.value);
                group_of(self.csv.field(c).unwrap_or(""))
            }
        }
    }

    /// Destination index of `t`.
    pub fn pick(&mut self, t: &Tuple) -> usize {
        let g = self.group(t);
        self.map.owner(g) as usize
    }
}

/// The key group of a key (or of the column value a keyed built-in counts by): what a
/// built-in's state is handed over by when its groups move.
pub fn group_of(key: &str) -> usize {
    (stable_hash(key.as_bytes()) % KEY_GROUPS as u64) as usize
}

/// How tuples entering `stage` (1-based; K+1 = the sink) pick their task.
pub fn partition_into(spec: &JobSpec, stage: u32) -> Partition {
    match spec
        .stages
        .get(stage as usize - 1)
        .and_then(|s| s.operator.keyed_column())
    {
        Some(c) => Partition::Column(c),
        None => Partition::Key,
    }
}

/// Number of task positions of `stage`: the source and the sink have one each; an operator
/// stage its `tasks`, or, autoscaled, its `max_tasks` (those that own no key group stand by).
pub fn tasks_of(spec: &JobSpec, stage: u32) -> u32 {
    match spec.role_of(stage) {
        crate::spec::StageRole::Operator(s) => s.tasks.max(max_tasks_of(spec, stage)),
        _ => 1,
    }
}

/// The most tasks `stage` can run at once (0 when it is not autoscaled).
pub fn max_tasks_of(spec: &JobSpec, stage: u32) -> u32 {
    crate::spec::autoscale_of(spec, stage).map_or(0, |a| a.max_tasks)
}

/// The key-group map a stage starts with: its first `tasks` positions own every group.
pub fn initial_map(spec: &JobSpec, stage: u32) -> GroupMap {
    match spec.role_of(stage) {
        crate::spec::StageRole::Operator(s) => GroupMap::even(s.tasks),
        _ => GroupMap::even(1),
    }
}
