use super::*;

/// The example job files pass validation, the link rule included.
#[test]
fn the_example_jobs_pass() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/jobs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let parsed = parse_job_toml(&text);
            assert!(parsed.is_ok(), "{}: {:?}", path.display(), parsed.err());
            seen += 1;
        }
    }
    assert!(seen >= 5, "only {seen} example jobs in {}", dir.display());
}

/// The job file of the contract's example app2.
pub(crate) const APP2: &str = r#"
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
fn values_of_the_wrong_type_are_shown_as_written_in_file_order() {
    let text = r#"
delivery = 3
[source]
rate = "fast"
[[stages]]
tasks = -2
exec = "a"
op = "identity"
[[stages]]
tasks = "many"
"#;
    let err = parse_job_toml(text).unwrap_err();
    let got: Vec<String> = err.0.iter().map(|p| p.to_string()).collect();
    let want = [
        "delivery = 3: must be a string",
        "source.path = (missing): name the input file (path in the [source] table)",
        "source.rate = \"fast\": must be 0 (as fast as possible) or a number of tuples per second from 0.001 to 1000000000",
        "sink.path = (missing): name the output file (path in the [sink] table)",
        "stages[1].tasks = -2: must be an integer from 1 to 256",
        "stages[1].op = (both): give either exec or op, not both",
        "stages[2].tasks = \"many\": must be an integer from 1 to 256",
        "stages[2].op = (missing): give exec = \"path/to/operator\", op = \"<built-in>\" or chain = [...]",
    ];
    assert_eq!(got, want);
}

#[test]
fn bad_builtin_arguments_name_the_args_field() {
    let text = "[source]\npath = \"a\"\n[sink]\npath = \"o\"\n[[stages]]\nop = \"count-by\"\nargs = [\"zero\"]\n";
    let err = parse_job_toml(text).unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert_eq!(err.0[0].field, "stages[1].args");
    assert!(err.0[0].value.contains("zero"));
}

#[test]
fn a_stage_may_declare_its_executable_stateless_but_not_a_keyed_built_in() {
    let job = |stage: &str| {
        format!(
            "[source]\npath = \"a\"\n[sink]\npath = \"o\"\n[[stages]]\n{stage}stateless = true\n"
        )
    };
    let spec = parse_job_toml(&job("exec = \"op.py\"\n")).unwrap();
    assert!(spec.stages[0].stateless);
    let plain = parse_job_toml(
        "[source]\npath = \"a\"\n[sink]\npath = \"o\"\n[[stages]]\nexec = \"op.py\"\n",
    )
    .unwrap();
    assert!(
        !plain.stages[0].stateless,
        "an executable may keep state unless told"
    );
    let err = parse_job_toml(&job("op = \"count-by\"\nargs = [\"1\"]\n")).unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert_eq!(err.0[0].field, "stages[1].stateless");
    assert!(
        err.0[0].message.contains("count-by keeps state"),
        "{}",
        err.0[0].message
    );
}

/// A job chooses its own commit interval (latency against store writes); a value that is
/// not a whole number of milliseconds up to a minute is refused, shown as written.
#[test]
fn a_job_s_commit_interval_is_read_and_checked() {
    let job = |line: &str| format!("{line}\n{APP2}");
    let spec = parse_job_toml(&job("commit_interval_ms = 20")).unwrap();
    assert_eq!(spec.limits.commit_interval_ms, Some(20));
    let spec = parse_job_toml(APP2).unwrap();
    assert_eq!(spec.limits.commit_interval_ms, None);
    for (line, shown) in [
        ("commit_interval_ms = -1", "-1"),
        ("commit_interval_ms = \"fast\"", "\"fast\""),
        ("commit_interval_ms = 2.5", "2.5"),
        ("commit_interval_ms = 60001", "60001"),
    ] {
        let err = parse_job_toml(&job(line)).unwrap_err();
        let got: Vec<String> = err.0.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            got,
            [format!(
                "commit_interval_ms = {shown}: must be an integer of milliseconds from 0 to 60000"
            )],
            "{line}"
        );
    }
}

/// A stage may chain built-ins; a keyed built-in only last and after steps that keep values,
/// and a chain comes alone (no exec, op or args beside it). Every problem names its step.
#[test]
fn a_stage_chains_built_ins_and_a_bad_chain_is_refused_naming_its_step() {
    let job = |stage: &str| {
        format!("[source]\npath = \"a\"\n[sink]\npath = \"o\"\n[[stages]]\ntasks = 2\n{stage}\n")
    };
    let spec = parse_job_toml(&job(
        "chain = [{ op = \"filter\", args = [\"T\"] }, { op = \"select\", args = [3] }]",
    ))
    .unwrap();
    assert_eq!(spec.stages[0].operator.describe(), "filter T | select 3");
    assert_eq!(spec.stages[0].operator.keyed_column(), None);
    let keyed = parse_job_toml(&job(
        "chain = [{ op = \"filter-regex\", args = [\"^T\"] }, { op = \"count-by\", args = [\"9\"] }]",
    ))
    .unwrap();
    assert_eq!(keyed.stages[0].operator.keyed_column(), Some(8));
    let refused = |stage: &str| {
        let err = parse_job_toml(&job(stage)).unwrap_err();
        err.0
            .iter()
            .map(|p| format!("{} = {}: {}", p.field, p.value, p.message))
            .collect::<Vec<_>>()
    };
    let cases = [
        ("chain = []", "stages[1].chain = []"),
        (
            "chain = [{ op = \"count-by\", args = [\"2\"] }, { op = \"identity\" }]",
            "stages[1].chain[1].op = count-by: count-by keeps state per key, so it must be a chain's last step",
        ),
        (
            "chain = [{ op = \"select\", args = [\"2\"] }, { op = \"count-by\", args = [\"1\"] }]",
            "stages[1].chain[2].op = count-by: count-by reads its key from the stage's input",
        ),
        (
            "chain = [{ op = \"filter\" }, { op = \"sort\" }]",
            "stages[1].chain[1].args = []: filter takes exactly one argument",
        ),
        (
            "op = \"filter\"\nchain = [{ op = \"identity\" }]",
            "stages[1].chain = (with exec, op or args): a chain names its built-ins",
        ),
        (
            "stateless = true\nchain = [{ op = \"count-by\", args = [\"2\"] }]",
            "stages[1].stateless = true: count-by keeps state per key",
        ),
    ];
    for (stage, want) in cases {
        let got = refused(stage);
        assert!(got[0].starts_with(want), "{stage}: {got:?}");
    }
    let unknown = refused("chain = [{ op = \"filter\", args = [\"T\"] }, { op = \"sort\" }]");
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert!(
        unknown[0].starts_with("stages[1].chain[2].op = sort: unknown built-in"),
        "{unknown:?}"
    );
    let long = format!("chain = [{}]", vec!["{ op = \"identity\" }"; 17].join(", "));
    assert_eq!(refused(&long).len(), 1);
    assert!(refused(&long)[0].contains("at most 16 steps"));
    // A step is a built-in: an executable in a chain is not read as one.
    let exec =
        parse_job_toml(&job("chain = [{ op = \"identity\" }, { exec = \"x.py\" }]")).unwrap_err();
    assert!(
        exec.0[0].message.contains("unknown field `exec`"),
        "{:?}",
        exec.0
    );
}

/// A field the job file does not know is refused, wherever it is, naming it: a probe's
/// `taskz = 3` and `bogus = 1` ran silently, and `delivry = "at-most-once"` would run a job
/// under another guarantee than the one written.
#[test]
fn an_unknown_field_is_refused_naming_it() {
    for (from, to, name) in [
        (
            "name = \"app2\"",
            "name = \"app2\"\ndelivry = \"at-most-once\"",
            "delivry",
        ),
        ("rate = 0", "rate = 0\nrat = 5", "rat"),
        (
            "path = \"out/app2.txt\"",
            "path = \"out/app2.txt\"\npth = \"x\"",
            "pth",
        ),
        ("op = \"count-by\"", "op = \"count-by\"\ntaskz = 3", "taskz"),
    ] {
        assert!(APP2.contains(from), "{from}");
        let text = APP2.replacen(from, to, 1);
        let err = parse_job_toml(&text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains(&format!("unknown field `{name}`")),
            "{name}: {err}"
        );
    }
}

/// Every unknown field is named in one answer, with the others' problems, where it is in the
/// file (a probe's two typos were reported one at a time, as `(file) = : …`).
#[test]
fn every_unknown_field_is_named_in_one_answer_with_where_it_is() {
    let text = APP2
        .replacen(
            "name = \"app2\"",
            "name = \"app2\"\ndelivry = \"at-most-once\"",
            1,
        )
        .replacen("rate = 0", "rate = -1\nrat = 5", 1)
        .replacen("op = \"count-by\"", "op = \"count-by\"\ntaskz = 3", 1);
    let err = parse_job_toml(&text).unwrap_err();
    let shown: Vec<String> = err.0.iter().map(|p| p.to_string()).collect();
    for want in [
        "delivry: unknown field `delivry`",
        "source.rat: unknown field `rat`",
        "source.rate = -1",
        "taskz: unknown field `taskz`",
    ] {
        assert!(shown.iter().any(|s| s.contains(want)), "{want}: {shown:?}");
    }
    assert!(shown.iter().any(|s| s.starts_with("stages[")), "{shown:?}");
}
