use super::*;
use crate::spec::{Delivery, PathMode, StageSpec};

fn spec(stages: Vec<StageSpec>) -> JobSpec {
    JobSpec {
        name: None,
        delivery: Delivery::ExactlyOnce,
        source_path: "in.csv".into(),
        source_name: "in.csv".into(),
        rate: 0.0,
        sink_path: "out.txt".into(),
        stages,
        paths: PathMode::Store,
        keep_logs: false,
        autoscale: None,
        limits: Default::default(),
    }
}

fn builtin(name: &str, args: &[&str]) -> OperatorSpec {
    OperatorSpec::Builtin {
        name: name.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
    }
}

#[test]
fn a_good_spec_has_no_problems() {
    let s = spec(vec![StageSpec {
        tasks: 3,
        operator: builtin("count-by", &["9"]),
        autoscale: Default::default(),
        stateless: false,
    }]);
    assert!(check_spec(&s).is_empty());
}

#[test]
fn names_each_field_and_the_value() {
    let mut s = spec(vec![
        StageSpec {
            tasks: 0,
            operator: builtin("frobnicate", &[]),
            autoscale: Default::default(),
            stateless: false,
        },
        StageSpec {
            tasks: 2000,
            operator: builtin("count-by", &["zero"]),
            autoscale: Default::default(),
            stateless: false,
        },
        StageSpec {
            tasks: 1,
            operator: OperatorSpec::Exec {
                path: String::new(),
                args: vec![],
            },
            autoscale: Default::default(),
            stateless: false,
        },
    ]);
    s.rate = -3.0;
    s.sink_path.clear();
    let got: Vec<(String, String)> = check_spec(&s)
        .into_iter()
        .map(|p| (p.field, p.value))
        .collect();
    let want = [
        ("source.rate", "-3"),
        ("sink.path", "(missing)"),
        ("stages[1].tasks", "0"),
        ("stages[1].op", "frobnicate"),
        ("stages[2].tasks", "2000"),
        ("stages[2].args", "[\"zero\"]"),
        ("stages[3].exec", "\"\""),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(f, v)| (f.to_string(), v.to_string()))
        .collect();
    assert_eq!(got, want);
}

fn with_rate(rate: f64) -> Vec<Problem> {
    let mut s = spec(vec![StageSpec {
        tasks: 1,
        operator: builtin("identity", &[]),
        autoscale: Default::default(),
        stateless: false,
    }]);
    s.rate = rate;
    check_spec(&s)
}

#[test]
fn a_vanishing_rate_is_rejected_with_field_and_value_instead_of_panicking_the_source() {
    let p = with_rate(1e-300);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].field, "source.rate");
    // Shown as written back, not as its 300 digits.
    assert_eq!(p[0].value, "1e-300");
    assert!(p[0].message.contains("0.001"), "{}", p[0]);
}

#[test]
fn nan_infinite_negative_and_absurd_rates_are_rejected_and_sane_ones_accepted() {
    for (bad, shown) in [
        (f64::NAN, "NaN"),
        (f64::INFINITY, "inf"),
        (f64::NEG_INFINITY, "-inf"),
        (-1.0, "-1"),
        (1e10, "10000000000"),
        (1e300, "1e300"),
    ] {
        let p = with_rate(bad);
        assert_eq!(p.len(), 1, "rate {bad}: {p:?}");
        assert_eq!(
            (p[0].field.as_str(), p[0].value.as_str()),
            ("source.rate", shown)
        );
    }
    for good in [0.0, 0.001, 1.0, 2500.5, 1e9] {
        assert!(with_rate(good).is_empty(), "rate {good}");
    }
}

#[test]
fn autoscale_watermarks_must_be_finite_and_ordered() {
    for (lw, hw) in [
        (f64::NAN, 10.0),
        (1.0, f64::INFINITY),
        (5.0, 5.0),
        (-1.0, 3.0),
    ] {
        let mut s = spec(vec![StageSpec {
            tasks: 1,
            operator: builtin("identity", &[]),
            autoscale: Default::default(),
            stateless: false,
        }]);
        s.autoscale = Some(crate::autoscale::AutoscaleSpec::new(lw, hw));
        let p = check_spec(&s);
        assert_eq!(p.len(), 1, "{lw} {hw}: {p:?}");
        assert!(p[0].field.starts_with("autoscale."), "{}", p[0]);
    }
}

#[test]
fn more_than_256_tasks_in_a_stage_is_rejected_with_the_limit() {
    let s = spec(vec![StageSpec {
        tasks: 257,
        operator: builtin("identity", &[]),
        autoscale: Default::default(),
        stateless: false,
    }]);
    let p = check_spec(&s);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        p[0].to_string(),
        "stages[1].tasks = 257: must be an integer from 1 to 256"
    );
    let s = spec(vec![StageSpec {
        tasks: 256,
        operator: builtin("identity", &[]),
        autoscale: Default::default(),
        stateless: false,
    }]);
    assert!(check_spec(&s).is_empty());
}

#[test]
fn more_than_64_stages_is_rejected_with_the_limit() {
    let stage = StageSpec {
        tasks: 1,
        operator: builtin("identity", &[]),
        autoscale: Default::default(),
        stateless: false,
    };
    let p = check_spec(&spec(vec![stage.clone(); 65]));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        p[0].to_string(),
        "stages = (65 stages): a job has at most 64 stages"
    );
    assert!(check_spec(&spec(vec![stage; 64])).is_empty());
}

fn stages_of(tasks: &[u32]) -> Vec<StageSpec> {
    tasks
        .iter()
        .map(|&t| StageSpec {
            tasks: t,
            operator: builtin("identity", &[]),
            autoscale: Default::default(),
            stateless: false,
        })
        .collect()
}

#[test]
fn links_count_every_pair_of_adjacent_tasks_with_the_source_and_the_sink() {
    assert_eq!(links(&spec(stages_of(&[1]))), 2);
    assert_eq!(links(&spec(stages_of(&[3, 3]))), 3 + 9 + 3);
    assert_eq!(links(&spec(stages_of(&[2, 5, 4]))), 2 + 10 + 20 + 4);
    assert_eq!(links(&spec(stages_of(&[256, 256]))), 256 + 65536 + 256);
}

#[test]
fn two_stages_of_256_tasks_are_refused_by_the_link_rule_naming_fields_and_limit() {
    let p = check_spec(&spec(stages_of(&[256, 256])));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].field, "stages[*].tasks");
    assert_eq!(p[0].value, "256, 256");
    let text = p[0].to_string();
    // 512 tasks is within the task rule: the links are what is refused.
    assert!(!text.contains("tasks together"), "{text}");
    for part in [
        "66048 data links",
        "at most 4096",
        "stages[1].tasks × stages[2].tasks = 65536",
        "each task of a stage to each task of the next",
    ] {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }
}

#[test]
fn the_link_limit_is_inclusive() {
    // 63 + 63·63 + 63 = 4095 passes; 64 + 64·63 + 63 = 4159 does not.
    assert!(check_spec(&spec(stages_of(&[63, 63]))).is_empty());
    let p = check_spec(&spec(stages_of(&[64, 63])));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].message.contains("4159 data links"), "{}", p[0]);
    // Many small stages add up too, and the largest term is named.
    let p = check_spec(&spec(stages_of(&[10; 50])));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].message.contains("4920 data links")
            && p[0]
                .message
                .contains("the largest term is stages[1].tasks × stages[2].tasks"),
        "{}",
        p[0]
    );
}

#[test]
fn a_stage_out_of_range_is_reported_as_itself_not_as_links() {
    let p = check_spec(&spec(stages_of(&[100_000, 3])));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].field, "stages[1].tasks");
}

/// The shapes the tests and the simulation use (the example job files are checked in
/// `jobfile`'s tests, which parse them).
#[test]
fn the_shapes_tests_use_pass() {
    for shape in [&[3, 3][..], &[16, 16, 16], &[1; 64], &[256], &[8; 40]] {
        let p = check_spec(&spec(stages_of(shape)));
        assert!(p.is_empty(), "{shape:?}: {p:?}");
    }
}

#[test]
fn more_than_512_tasks_in_a_job_are_refused_even_with_few_links() {
    // 256 + 1 + 255 = 512 tasks and 1022 links: admitted.
    assert!(check_spec(&spec(stages_of(&[256, 1, 255]))).is_empty());
    // One more task: 513, with only 1024 links.
    let p = check_spec(&spec(stages_of(&[256, 1, 256])));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        (p[0].field.as_str(), p[0].value.as_str()),
        ("stages[*].tasks", "256, 1, 256")
    );
    assert!(
        p[0].message.contains("runs 513 tasks") && p[0].message.contains("at most 512"),
        "{}",
        p[0]
    );
}
