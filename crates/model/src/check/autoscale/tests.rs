use crate::autoscale::{AutoscaleOverride, AutoscaleSpec, StageAutoscale};
use crate::check::{check_spec, Problem};
use crate::spec::{JobSpec, OperatorSpec, StageSpec};

fn identity() -> OperatorSpec {
    OperatorSpec::Builtin {
        name: "identity".into(),
        args: vec![],
    }
}

/// A job of stages of these task counts, autoscaled with `job` (when given).
fn job(tasks: &[u32], job: Option<AutoscaleSpec>) -> JobSpec {
    let mut s = JobSpec::sample(
        tasks
            .iter()
            .map(|&t| StageSpec::new(t, identity()))
            .collect(),
    );
    s.autoscale = job;
    s
}

fn fields(p: &[Problem]) -> Vec<&str> {
    p.iter().map(|p| p.field.as_str()).collect()
}

fn only(p: Vec<Problem>) -> Problem {
    assert_eq!(p.len(), 1, "{p:?}");
    p.into_iter().next().unwrap()
}

#[test]
fn a_full_table_with_every_field_passes() {
    let a = AutoscaleSpec {
        low: 200.0,
        high: 800.0,
        min_tasks: Some(1),
        max_tasks: Some(8),
        cooldown_s: Some(5.0),
        scale_down_grace_s: Some(0.0),
    };
    assert_eq!(check_spec(&job(&[2, 3], Some(a))), []);
    // low = 0: a stage never shrinks, which is a choice, not a mistake.
    assert_eq!(
        check_spec(&job(&[2], Some(AutoscaleSpec::new(0.0, 10.0)))),
        []
    );
}

#[test]
fn low_at_or_above_high_is_refused_naming_autoscale_low() {
    for (low, high) in [(800.0, 800.0), (900.0, 800.0)] {
        let p = only(check_spec(&job(&[1], Some(AutoscaleSpec::new(low, high)))));
        assert_eq!(p.field, "autoscale.low");
        assert_eq!(p.value, low.to_string());
        assert!(p.message.contains("below high (800)"), "{p}");
    }
}

#[test]
fn negative_or_non_finite_watermarks_are_refused_each_by_its_field() {
    for (low, high, field) in [
        (-1.0, 800.0, "autoscale.low"),
        (f64::NAN, 800.0, "autoscale.low"),
        (200.0, f64::INFINITY, "autoscale.high"),
        (200.0, -5.0, "autoscale.high"),
        (200.0, 2e9, "autoscale.high"),
    ] {
        let p = only(check_spec(&job(&[1], Some(AutoscaleSpec::new(low, high)))));
        assert_eq!(p.field, field, "{low} {high}");
        assert!(p.message.contains("tuples/s per task"), "{p}");
    }
}

#[test]
fn task_bounds_out_of_range_or_crossed_are_refused() {
    let with = |min: Option<u32>, max: Option<u32>| {
        let mut a = AutoscaleSpec::new(200.0, 800.0);
        a.min_tasks = min;
        a.max_tasks = max;
        check_spec(&job(&[1], Some(a)))
    };
    let p = only(with(Some(0), None));
    assert_eq!(
        (p.field.as_str(), p.value.as_str()),
        ("autoscale.min_tasks", "0")
    );
    let p = only(with(None, Some(0)));
    assert_eq!(p.field, "autoscale.max_tasks");
    // A stage has at most 256 tasks (and a job at most 512: the coordinator's cap and the
    // job's limits bound growth further).
    let p = only(with(Some(1), Some(300)));
    assert_eq!(
        (p.field.as_str(), p.value.as_str()),
        ("autoscale.max_tasks", "300")
    );
    assert!(p.message.contains("from 1 to 256"), "{p}");
    let p = only(with(Some(1), Some(600)));
    assert_eq!(p.field, "autoscale.max_tasks");
    // min above max: named at min_tasks, saying the max.
    let mut a = AutoscaleSpec::new(200.0, 800.0);
    a.min_tasks = Some(5);
    a.max_tasks = Some(4);
    let p = only(check_spec(&job(&[4], Some(a))));
    assert_eq!(
        p.to_string(),
        "autoscale.min_tasks = 5: must be at most max_tasks (4)"
    );
}

#[test]
fn delays_must_be_finite_seconds_from_zero() {
    let mut a = AutoscaleSpec::new(200.0, 800.0);
    a.cooldown_s = Some(-1.0);
    a.scale_down_grace_s = Some(f64::NAN);
    let p = check_spec(&job(&[1], Some(a)));
    assert_eq!(
        fields(&p),
        ["autoscale.cooldown_s", "autoscale.scale_down_grace_s"]
    );
}

#[test]
fn a_stage_starting_outside_its_bounds_is_refused_saying_so() {
    let mut a = AutoscaleSpec::new(200.0, 800.0);
    a.min_tasks = Some(2);
    a.max_tasks = Some(4);
    let p = check_spec(&job(&[1, 3, 5], Some(a.clone())));
    assert_eq!(fields(&p), ["stages[1].tasks", "stages[3].tasks"]);
    assert_eq!(
        p[1].to_string(),
        "stages[3].tasks = 5: the stage autoscales between min_tasks 2 and max_tasks 4, so \
         the tasks it starts with must lie within them"
    );
    // Without a max_tasks the bound is 8 or the starting count: a wide stage is fine.
    assert_eq!(
        check_spec(&job(&[12], Some(AutoscaleSpec::new(200.0, 800.0)))),
        []
    );
    // A stage that opts out is not bound.
    let mut s = job(&[1, 3, 5], Some(a));
    s.stages[0].autoscale = StageAutoscale::Off;
    s.stages[2].autoscale = StageAutoscale::Off;
    assert_eq!(check_spec(&s), []);
}

#[test]
fn a_mistake_in_the_job_table_is_reported_once_not_per_stage() {
    let mut s = job(&[2, 2, 2], Some(AutoscaleSpec::new(900.0, 800.0)));
    assert_eq!(fields(&check_spec(&s)), ["autoscale.low"]);
    // A stage overriding other fields does not repeat it either.
    s.stages[1].autoscale = StageAutoscale::Override(AutoscaleOverride {
        max_tasks: Some(4),
        ..Default::default()
    });
    assert_eq!(fields(&check_spec(&s)), ["autoscale.low"]);
    let mut a = AutoscaleSpec::new(200.0, 800.0);
    a.min_tasks = Some(0);
    assert_eq!(
        fields(&check_spec(&job(&[2, 2], Some(a)))),
        ["autoscale.min_tasks"]
    );
}

#[test]
fn a_stage_override_is_checked_under_the_stage_field() {
    let over = |o: AutoscaleOverride| {
        let mut s = job(&[2, 2], Some(AutoscaleSpec::new(200.0, 800.0)));
        s.stages[0].autoscale = StageAutoscale::Override(o);
        check_spec(&s)
    };
    let p = only(over(AutoscaleOverride {
        max_tasks: Some(0),
        ..Default::default()
    }));
    assert_eq!(
        (p.field.as_str(), p.value.as_str()),
        ("stages[1].autoscale.max_tasks", "0")
    );
    // high below the job's low: the stage's high is the problem.
    let p = only(over(AutoscaleOverride {
        high: Some(100.0),
        ..Default::default()
    }));
    assert_eq!(p.field, "stages[1].autoscale.high");
    assert!(p.message.contains("above low (200)"), "{p}");
    // The stage's max below the job's min.
    let mut s = job(
        &[3, 3],
        Some(AutoscaleSpec {
            min_tasks: Some(3),
            ..AutoscaleSpec::new(200.0, 800.0)
        }),
    );
    s.stages[1].autoscale = StageAutoscale::Override(AutoscaleOverride {
        max_tasks: Some(2),
        ..Default::default()
    });
    let p = only(check_spec(&s));
    assert_eq!(
        p.to_string(),
        "stages[2].autoscale.max_tasks = 2: must be at least min_tasks (3)"
    );
    let p = only(over(AutoscaleOverride {
        cooldown_s: Some(f64::INFINITY),
        ..Default::default()
    }));
    assert_eq!(p.field, "stages[1].autoscale.cooldown_s");
    // A stage overriding the bounds is held to its own.
    let p = only(over(AutoscaleOverride {
        min_tasks: Some(3),
        ..Default::default()
    }));
    assert_eq!(p.field, "stages[1].tasks");
    assert!(p.message.contains("min_tasks 3"), "{p}");
}

#[test]
fn a_stage_autoscaling_alone_needs_both_watermarks() {
    let mut s = job(&[2, 2], None);
    s.stages[1].autoscale = StageAutoscale::Override(AutoscaleOverride {
        low: Some(100.0),
        max_tasks: Some(6),
        ..Default::default()
    });
    let p = only(check_spec(&s));
    assert_eq!(
        (p.field.as_str(), p.value.as_str()),
        ("stages[2].autoscale.high", "(missing)")
    );
    assert!(p.message.contains("no [autoscale] table"), "{p}");
    s.stages[1].autoscale = StageAutoscale::Override(AutoscaleOverride {
        low: Some(100.0),
        high: Some(400.0),
        ..Default::default()
    });
    assert_eq!(check_spec(&s), []);
}

#[test]
fn stateful_capable_stages_are_not_refused_only_their_numbers_checked() {
    let mut s = job(&[2, 2], Some(AutoscaleSpec::new(200.0, 800.0)));
    s.stages[0].operator = OperatorSpec::Builtin {
        name: "count-by".into(),
        args: vec!["9".into()],
    };
    s.stages[1].operator = OperatorSpec::Exec {
        path: "ops/op.py".into(),
        args: vec![],
    };
    assert_eq!(check_spec(&s), []);
}
