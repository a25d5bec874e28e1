//! How a tuple picks its task in the next stage: by the hash of its key, or, into a keyed
//! built-in, by the hash of the CSV column the built-in counts by. One definition, shared by
//! routers, by first-stage replay (which must route exactly as the source did) and by the
//! leader (which tells each task how its outputs are partitioned).

use crate::builtin::BuiltinSpec;
use crate::csv::CsvSplitter;
use crate::spec::{JobSpec, OperatorSpec};
use crate::tuple::{stable_hash, Tuple};

/// How a tuple picks its destination task.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Partition {
    /// `hash(key) % tasks`.
    Key,
    /// `hash(CSV column of the value) % tasks` (0-based column): keyed built-ins.
    Column(usize),
}

/// Picks a tuple's destination among `n` tasks; shared by routers and by source replay, which
/// must route exactly as the source did.
pub struct Partitioner {
    partition: Partition,
    n: usize,
    csv: CsvSplitter,
}

impl Partitioner {
    /// A partitioner over `n` tasks.
    pub fn new(partition: Partition, n: usize) -> Self {
        Partitioner {
            partition,
            n,
            csv: CsvSplitter::default(),
        }
    }

    /// Destination index of `t`.
    pub fn pick(&mut self, t: &Tuple) -> usize {
        if self.n <= 1 {
            return 0;
        }
        let h = match self.partition {
            Partition::Key => stable_hash(t.key.as_bytes()),
            Partition::Column(c) => {
                self.csv.split(&t.value);
                stable_hash(self.csv.field(c).unwrap_or("").as_bytes())
            }
        };
        (h % self.n as u64) as usize
    }
}

/// How tuples entering `stage` (1-based; K+1 = the sink) pick their task.
pub fn partition_into(spec: &JobSpec, stage: u32) -> Partition {
    match spec.stages.get(stage as usize - 1).map(|s| &s.operator) {
        Some(OperatorSpec::Builtin { name, args }) => match BuiltinSpec::routing_column(name, args)
        {
            Some(c) => Partition::Column(c),
            None => Partition::Key,
        },
        _ => Partition::Key,
    }
}

/// Number of tasks of `stage`: the source and the sink have one each.
pub fn tasks_of(spec: &JobSpec, stage: u32) -> u32 {
    match spec.role_of(stage) {
        crate::spec::StageRole::Operator(s) => s.tasks,
        _ => 1,
    }
}
