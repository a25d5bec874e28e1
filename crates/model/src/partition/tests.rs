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
        // Into a chain the whole value travels (its filter reads it), without the key.
        let whole = column.route(t.clone());
        assert_eq!(
            (whole.0, &*whole.1.key, &whole.1.value),
            (g, "", &t.value),
            "{line:?}"
        );
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
    // The first select's key is read: the second select's input is routed by it.
    assert_eq!(
        partition_into(&spec, 1),
        Partition::KeySelect {
            cols: vec![1, 3],
            key: true
        }
    );
    let mut p = Partitioner::new(
        Partition::KeySelect {
            cols: vec![1, 3, 1],
            key: true,
        },
        3,
    );
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

/// A key is sent only where something reads it: an executable, or a stage after which tuples
/// are routed by their key; the sink, a keyed built-in and a chain whose outputs go to them
/// get none.
#[test]
fn a_key_travels_only_as_far_as_something_reads_it() {
    let op = |name: &str, args: &[&str]| OperatorSpec::Builtin {
        name: name.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
    };
    let exec = OperatorSpec::Exec {
        path: "op.py".into(),
        args: vec![],
    };
    let chain = OperatorSpec::Chain {
        steps: vec![ChainStep {
            name: "select".into(),
            args: vec!["2".into()],
        }],
    };
    let job = |ops: Vec<OperatorSpec>| {
        let spec = JobSpec::sample(ops.into_iter().map(|o| StageSpec::new(2, o)).collect());
        (1..=spec.sink_stage())
            .map(|s| partition_into(&spec, s))
            .collect::<Vec<_>>()
    };
    let select = |key| Partition::KeySelect { cols: vec![1], key };
    use Partition::*;
    // app1: the select's input is routed by key, so the filter gets keys; the select's own
    // outputs go to the sink, so it gets none.
    assert_eq!(
        job(vec![op("filter", &["a"]), op("select", &["2"])]),
        [Key, select(false), ValueOnly]
    );
    assert_eq!(job(vec![chain.clone()]), [Hashed, ValueOnly]);
    // app2: a count emits its own keys.
    assert_eq!(
        job(vec![op("filter", &["a"]), op("count-by", &["3"])]),
        [Hashed, Field(2), ValueOnly]
    );
    assert_eq!(
        job(vec![
            op("identity", &[]),
            op("count-by", &["3"]),
            op("identity", &[])
        ]),
        [Hashed, Field(2), Hashed, ValueOnly]
    );
    // An executable reads keys, and so does whatever routes into it.
    assert_eq!(
        job(vec![
            op("filter", &["a"]),
            op("identity", &[]),
            exec.clone()
        ]),
        [Key, Key, Key, ValueOnly]
    );
    assert_eq!(
        job(vec![exec, chain, op("select", &["2"])]),
        [Key, Key, select(false), ValueOnly]
    );
}

/// A `select` as wide as a job may name (65,536 columns, some twice, out of order) projects
/// each line in one pass over its columns: the projection looked every column up in the
/// list, 65,536² steps a line, and froze the worker running it until the leader declared it
/// dead, then the next one (hostile probe). The same line projected by the narrow select of
/// the same columns is the reference.
#[test]
fn the_widest_select_projects_a_line_in_one_pass() {
    let cols: Vec<usize> = (0..crate::builtin::MAX_COLUMN)
        .rev()
        .chain([3, 3])
        .collect();
    let mut wide = Partitioner::new(
        Partition::KeySelect {
            cols: cols.clone(),
            key: false,
        },
        3,
    );
    let line = (0..70_000)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    for i in 0..20 {
        got.push(wide.project(Tuple::new("k", line.as_str())).value);
        // Linear: some milliseconds a line in a debug build; the quadratic walk took
        // seconds a line in a release build.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{} lines took {:?}",
            i + 1,
            started.elapsed()
        );
    }
    let want: String = (0..crate::builtin::MAX_COLUMN)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    assert!(got.iter().all(|v| **v == *want));
    let mut narrow = Partitioner::new(
        Partition::KeySelect {
            cols: vec![1, 3],
            key: false,
        },
        3,
    );
    assert_eq!(narrow.project(Tuple::new("k", "a,b,c,d,e")).value, ",b,,d");
}
