//! How a tuple picks its task in the next stage: by the hash of its key, or, into a keyed
//! built-in, by the hash of the CSV column the built-in counts by. One definition, shared by
//! routers, by first-stage replay (which must route exactly as the source did) and by the
//! leader (which tells each task how its outputs are partitioned).

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
    /// `hash(CSV column of the value)` (0-based column): a chain ending in a keyed built-in,
    /// whose first steps read the whole value.
    Column(usize),
    /// `hash(CSV column of the value)` into a stage that reads nothing else of a tuple (a
    /// plain `count-by`, which emits its own key): only that column is sent, at its place
    /// (`c` empty columns before it) and with an empty key, so the stage, its input log and
    /// any reader that takes column `c` again ([`Partitioner::group`] on the receiving side)
    /// see the same field, in a fraction of the bytes.
    Field(usize),
    /// `hash(key)` into a stage that reads only some columns of a value (a plain `select`,
    /// 0-based columns): the key travels, and of the value only those columns, at their
    /// places (the others empty, none after the last), so the stage finds the same fields
    /// in a fraction of the bytes, and so does its input log.
    KeySelect(Vec<usize>),
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
            Partition::Key | Partition::KeySelect(_) => group_of(&t.key),
            Partition::ValueOnly => 0,
            Partition::Column(c) | Partition::Field(c) => {
                self.csv.split(&t.value);
                group_of(self.csv.field(c).unwrap_or(""))
            }
        }
    }

    /// The key group of `t`, and `t` as it is sent: under [`Partition::Field`] its column
    /// alone, at its place, with no key (see there); otherwise `t` itself.
    pub fn route(&mut self, t: Tuple) -> (usize, Tuple) {
        let g = self.group(&t);
        match &self.partition {
            Partition::Field(c) => {
                let field = self.csv.field(*c).unwrap_or("");
                let mut value = String::with_capacity(c + field.len() + 2);
                value.extend(std::iter::repeat_n(',', *c));
                push_field(&mut value, field);
                let t = Tuple {
                    key: Default::default(),
                    value: value.into(),
                };
                (g, t)
            }
            Partition::KeySelect(cols) => {
                self.csv.split(&t.value);
                let last = cols.iter().copied().max().unwrap_or(0);
                let mut value = String::with_capacity(t.value.len().min(64));
                for i in 0..=last {
                    if i > 0 {
                        value.push(',');
                    }
                    if cols.contains(&i) {
                        push_field(&mut value, self.csv.field(i).unwrap_or(""));
                    }
                }
                let t = Tuple {
                    key: t.key,
                    value: value.into(),
                };
                (g, t)
            }
            Partition::ValueOnly => {
                let t = Tuple {
                    key: Default::default(),
                    value: t.value,
                };
                (g, t)
            }
            Partition::Key | Partition::Column(_) => (g, t),
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
    let Some(op) = spec.stages.get(stage as usize - 1).map(|s| &s.operator) else {
        return Partition::Key;
    };
    match (op.keyed_column(), op) {
        // A lone keyed built-in reads only its column; a chain's first steps read it all.
        (Some(c), OperatorSpec::Builtin { .. }) => Partition::Field(c),
        (Some(c), _) => Partition::Column(c),
        (None, OperatorSpec::Builtin { name, args }) => match BuiltinSpec::parse(name, args) {
            Ok(BuiltinSpec::Select(cols)) => Partition::KeySelect(cols),
            _ => Partition::Key,
        },
        (None, _) => Partition::Key,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ChainStep, StageSpec};

    /// Into a lone `count-by` only its column is sent, at its place and with no key, so the
    /// receiver finds the same group and the same field in it, quoted or missing alike; into
    /// a chain ending in one, whose filter reads the whole line, the tuple goes as it is.
    #[test]
    fn a_lone_count_gets_its_column_alone_and_finds_it_where_it_was() {
        let count = OperatorSpec::Builtin {
            name: "count-by".into(),
            args: vec!["3".into()],
        };
        let chain = OperatorSpec::Chain {
            steps: vec![
                ChainStep {
                    name: "filter".into(),
                    args: vec!["a".into()],
                },
                ChainStep {
                    name: "count-by".into(),
                    args: vec!["3".into()],
                },
            ],
        };
        let spec = JobSpec::sample(vec![StageSpec::new(2, count), StageSpec::new(2, chain)]);
        assert_eq!(partition_into(&spec, 1), Partition::Field(2));
        assert_eq!(partition_into(&spec, 2), Partition::Column(2));
        assert_eq!(partition_into(&spec, 3), Partition::ValueOnly);
        let lines = [
            "a,b,c,d",
            r#"1,2,"x, ""y""",4"#,
            "1,2",
            "1,2,,4",
            "",
            "a,b,é,d",
        ];
        let mut sender = Partitioner::new(Partition::Field(2), 4);
        let mut receiver = Partitioner::new(Partition::Field(2), 4);
        let mut column = Partitioner::new(Partition::Column(2), 4);
        let mut csv = CsvSplitter::default();
        for line in lines {
            let t = Tuple::new("f:1", line);
            let (g, sent) = sender.route(t.clone());
            assert_eq!(g, column.group(&t), "{line:?}");
            assert_eq!(column.route(t.clone()), (g, t.clone()), "{line:?}");
            assert_eq!(sent.key, "", "{line:?}");
            assert!(
                sent.value.len() <= line.len() + 2,
                "{line:?} → {:?}",
                sent.value
            );
            assert_eq!(receiver.group(&sent), g, "{line:?}");
            csv.split(line);
            let field = csv.field(2).unwrap_or("").to_string();
            csv.split(&sent.value);
            assert_eq!(csv.field(2).unwrap_or(""), field, "{line:?}");
        }
    }

    /// Into a lone `select` the key travels and the value keeps only the selected columns,
    /// each at its place, so the select finds what it would have found in the whole line.
    #[test]
    fn a_lone_select_gets_its_columns_alone_at_their_places() {
        let select = |cols: &str| OperatorSpec::Builtin {
            name: "select".into(),
            args: vec![cols.into()],
        };
        let spec = JobSpec::sample(vec![
            StageSpec::new(1, select("2,4")),
            StageSpec::new(1, select("1")),
        ]);
        assert_eq!(partition_into(&spec, 1), Partition::KeySelect(vec![1, 3]));
        let mut p = Partitioner::new(Partition::KeySelect(vec![1, 3, 1]), 3);
        let mut csv = CsvSplitter::default();
        for (line, want) in [
            ("a,b,c,d,e", ",b,,d"),
            (r#"a,"b, ""q""",c,"#, r#","b, ""q""",,"#),
            ("a", ",,,"),
            ("", ",,,"),
        ] {
            let t = Tuple::new("f:7", line);
            let g = group_of("f:7");
            let (got, sent) = p.route(t);
            assert_eq!(
                (got, &*sent.key, &*sent.value),
                (g, "f:7", want),
                "{line:?}"
            );
            csv.split(line);
            let fields: Vec<String> = [1, 3]
                .iter()
                .map(|&c| csv.field(c).unwrap_or("").to_string())
                .collect();
            csv.split(&sent.value);
            for (c, f) in [1, 3].iter().zip(&fields) {
                assert_eq!(csv.field(*c).unwrap_or(""), f, "{line:?}");
            }
        }
    }
}
