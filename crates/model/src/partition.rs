//! How a tuple picks its task in the next stage: by the hash of its key, or, into a keyed
//! built-in, by the hash of the CSV column the built-in counts by; and what of it is sent
//! there: only what the next stage, or anything after it, reads. One definition, shared by
//! routers, by first-stage replay (which must route and project exactly as the source did)
//! and by the leader (which tells each task how its outputs are partitioned).

use crate::builtin::BuiltinSpec;
use crate::csv::{push_field, CsvSplitter};
use crate::groups::{GroupMap, KEY_GROUPS};
use crate::spec::{JobSpec, OperatorSpec};
use crate::tuple::{stable_hash, Tuple};

/// How a tuple picks its key group (and so its destination task).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Partition {
    /// `hash(key)`.
    Key,
    /// `hash(key)`, and the key is not sent: nothing after the stage reads it (see
    /// [`key_read_from`]), so it would only be carried, logged and dropped.
    Hashed,
    /// `hash(CSV column of the value)` (0-based column): a chain ending in a keyed built-in,
    /// whose first steps read the whole value; its key is not sent (the keyed step emits
    /// its own).
    Column(usize),
    /// `hash(CSV column of the value)` into a stage that reads nothing else of a tuple (a
    /// plain `count-by`, which emits its own key): only that column is sent, at its place
    /// (`c` empty columns before it) and with an empty key, so the stage, its input log and
    /// any reader that takes column `c` again ([`Partitioner::group`] on the receiving side)
    /// see the same field, in a fraction of the bytes.
    Field(usize),
    /// `hash(key)` into a stage that reads only some columns of a value (a plain `select`):
    /// of the value only those columns travel, at their places (the others empty, none after
    /// the last), so the stage finds the same fields in a fraction of the bytes, and so does
    /// its input log; the key travels only if something after the stage reads it.
    KeySelect {
        /// The columns the stage reads, 0-based.
        cols: Vec<usize>,
        /// Whether the key is sent ([`key_read_from`]).
        key: bool,
    },
    /// Into the sink: its one task keeps only values (its log is the output), so the key is
    /// not sent, and every tuple is in group 0, which that task owns.
    ValueOnly,
}

/// Picks a tuple's key group, and its destination by a [`GroupMap`]; shared by routers and
/// by source replay, which must route exactly as the source did.
pub struct Partitioner {
    partition: Partition,
    map: GroupMap,
    csv: CsvSplitter,
    /// Under [`Partition::KeySelect`], whether each column up to the last selected is sent:
    /// looked up per column, not searched for in the list (a `select` of 65,536 columns
    /// took 65,536² steps a line and froze its worker).
    selected: Vec<bool>,
}

impl Partitioner {
    /// A partitioner over `n` tasks, groups dealt evenly ([`GroupMap::even`]).
    pub fn new(partition: Partition, n: usize) -> Self {
        Partitioner::with_map(partition, GroupMap::even(n as u32))
    }

    /// A partitioner by `map`.
    pub fn with_map(partition: Partition, map: GroupMap) -> Self {
        let mut selected = Vec::new();
        if let Partition::KeySelect { cols, .. } = &partition {
            selected = vec![false; cols.iter().max().map_or(0, |m| m + 1)];
            for &c in cols {
                selected[c] = true;
            }
        }
        Partitioner {
            partition,
            map,
            csv: CsvSplitter::default(),
            selected,
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
            Partition::Key | Partition::Hashed | Partition::KeySelect { .. } => group_of(&t.key),
            Partition::ValueOnly => 0,
            Partition::Column(c) | Partition::Field(c) => {
                self.csv.split_upto(&t.value, c + 1);
                group_of(self.csv.field(c).unwrap_or(""))
            }
        }
    }

    /// For a tuple routed by its key alone (the source's lines into most first stages): its
    /// key group and whether its key is sent, its value sent whole. `None` where the value
    /// must be read or cut ([`Partition::Column`], [`Partition::Field`],
    /// [`Partition::KeySelect`]): route a [`Tuple`] instead.
    pub fn route_key(&self, key: &str) -> Option<(usize, bool)> {
        self.route_hash(stable_hash(key.as_bytes()))
    }

    /// [`Partitioner::route_key`] of a key whose [`stable_hash`] is `hash` (the source hashes
    /// its keys' common prefix once).
    pub fn route_hash(&self, hash: u64) -> Option<(usize, bool)> {
        let group = (hash % KEY_GROUPS as u64) as usize;
        match self.partition {
            Partition::Key => Some((group, true)),
            Partition::Hashed => Some((group, false)),
            Partition::ValueOnly => Some((0, false)),
            Partition::Column(_) | Partition::Field(_) | Partition::KeySelect { .. } => None,
        }
    }

    /// The key group of `t`, and `t` as it is sent ([`Partitioner::project`]).
    pub fn route(&mut self, t: Tuple) -> (usize, Tuple) {
        let g = self.group(&t);
        (g, self.project(t))
    }

    /// `t` as it is sent: only what the receiving stage or anything after it reads (see each
    /// [`Partition`]); under [`Partition::Key`], `t` itself. Call it right after
    /// [`Partitioner::group`] of the same tuple (a [`Partition::Field`] takes its column from
    /// that split), and only for tuples that are sent: a reader that skips most tuples (a
    /// first-stage replay keeps its own share) projects only what it keeps.
    pub fn project(&mut self, t: Tuple) -> Tuple {
        match &self.partition {
            Partition::Field(c) => {
                let field = self.csv.field(*c).unwrap_or("");
                let mut value = String::with_capacity(c + field.len() + 2);
                value.extend(std::iter::repeat_n(',', *c));
                push_field(&mut value, field);
                Tuple {
                    key: Default::default(),
                    value: value.into(),
                }
            }
            Partition::KeySelect { key, .. } => {
                self.csv.split_upto(&t.value, self.selected.len().max(1));
                let mut value = String::with_capacity(t.value.len().min(64));
                for (i, &sent) in self.selected.iter().enumerate() {
                    if i > 0 {
                        value.push(',');
                    }
                    if sent {
                        push_field(&mut value, self.csv.field(i).unwrap_or(""));
                    }
                }
                let key = if *key { t.key } else { Default::default() };
                Tuple {
                    key,
                    value: value.into(),
                }
            }
            Partition::ValueOnly | Partition::Hashed | Partition::Column(_) => Tuple {
                key: Default::default(),
                value: t.value,
            },
            Partition::Key => t,
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
    if stage == spec.sink_stage() {
        return Partition::ValueOnly;
    }
    let Some(op) = (stage as usize)
        .checked_sub(1)
        .and_then(|i| spec.stages.get(i))
        .map(|s| &s.operator)
    else {
        return Partition::Key;
    };
    match (op.keyed_column(), op) {
        // A lone keyed built-in reads only its column; a chain's first steps read it all.
        (Some(c), OperatorSpec::Builtin { .. }) => Partition::Field(c),
        (Some(c), _) => Partition::Column(c),
        (None, OperatorSpec::Builtin { name, args }) => match BuiltinSpec::parse(name, args) {
            Ok(BuiltinSpec::Select(cols)) => Partition::KeySelect {
                cols,
                key: key_read_from(spec, stage),
            },
            _ if key_read_from(spec, stage) => Partition::Key,
            _ => Partition::Hashed,
        },
        (None, OperatorSpec::Chain { .. }) if !key_read_from(spec, stage) => Partition::Hashed,
        (None, _) => Partition::Key,
    }
}

/// Whether anything reads the key of a tuple entering `stage` (1-based; K+1 = the sink): an
/// executable does (it sees keys); the sink and a keyed built-in do not (it emits its own
/// keys); a stateless built-in passes its input's key on, so it is read if the stage's own
/// outputs are routed by key or read after. Where it is not read, it is not sent.
pub fn key_read_from(spec: &JobSpec, stage: u32) -> bool {
    // From the sink back to `stage`: whether the key entering each stage is read, and
    // whether the stage's input is routed by the key's hash (every operator stage but a
    // keyed built-in's; not the sink).
    let (mut read, mut hashed) = (false, false);
    for st in spec
        .stages
        .iter()
        .skip((stage as usize).saturating_sub(1))
        .rev()
    {
        let keyed = st.operator.keyed_column().is_some();
        read = st.operator.is_exec() || (!keyed && (hashed || read));
        hashed = !keyed;
    }
    read
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

#[cfg(test)]
mod tests;
