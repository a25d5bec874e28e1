use super::*;
use crate::model::autoscale::{AutoscaleOverride, AutoscaleSpec, StageAutoscale};
use crate::model::check::check_spec;
use crate::model::spec::{OperatorSpec, StageSpec};

const S: u64 = 1000;

/// A job of stages of these task counts, every stage autoscaled with `a`; the spec must pass
/// the validator, as every job the scaler sees does.
fn job(tasks: &[u32], a: AutoscaleSpec) -> JobSpec {
    let op = OperatorSpec::Builtin {
        name: "identity".into(),
        args: vec![],
    };
    let mut s = JobSpec::sample(
        tasks
            .iter()
            .map(|&t| StageSpec::new(t, op.clone()))
            .collect(),
    );
    s.autoscale = Some(a);
    assert_eq!(check_spec(&s), []);
    s
}

/// LW 200, HW 800 (target 500), defaults otherwise: max 8, cooldown 5 s, grace 30 s.
fn lw_hw() -> AutoscaleSpec {
    AutoscaleSpec::new(200.0, 800.0)
}

fn load(stage: u32, tasks: u32, rate: f64, busy: f64) -> StageLoad {
    StageLoad {
        stage,
        tasks,
        rate,
        busy,
        settling: false,
        rising: false,
    }
}

/// Plenty of free slots.
const FREE: u32 = 100;

fn one(d: Vec<ScaleDecision>) -> ScaleDecision {
    assert_eq!(d.len(), 1, "{d:?}");
    d.into_iter().next().unwrap()
}

#[test]
fn a_grow_waits_while_the_rate_is_still_climbing() {
    // The first window after a step mixes the old rate and the new: sized by it, the grow
    // would take two decisions (1 → 3 → 4 where the step needs 4 at once).
    let mut s = Scaler::new(&job(&[1], lw_hw()));
    let climbing = StageLoad {
        rising: true,
        ..load(1, 1, 1200.0, 0.2)
    };
    assert!(s.decide(0, &[climbing], FREE).is_empty());
    assert_eq!(one(s.decide(S, &[load(1, 1, 2400.0, 0.3)], FREE)).to, 5);
}

#[test]
fn a_step_up_is_met_in_one_decision_of_the_right_size() {
    let mut s = Scaler::new(&job(&[2], lw_hw()));
    assert!(s.decide(0, &[load(1, 2, 1000.0, 0.5)], FREE).is_empty());
    let d = one(s.decide(S, &[load(1, 2, 2400.0, 0.6)], FREE));
    assert_eq!((d.stage, d.from, d.to, d.rate), (1, 2, 5, 2400.0));
    assert_eq!(
        d.reason,
        "input 2400/s over 2 tasks = 1200/s per task > HW 800; need 5 at 480/s per task"
    );
    // A tenfold step is one decision too.
    let mut s = Scaler::new(&job(&[1], lw_hw()));
    assert_eq!(one(s.decide(0, &[load(1, 1, 3800.0, 0.2)], FREE)).to, 8);
    // Once at 5, the same input is between the watermarks: nothing more, ever.
    let mut s = Scaler::new(&job(&[2], lw_hw()));
    one(s.decide(0, &[load(1, 2, 2400.0, 0.6)], FREE));
    s.applied(2 * S, 1, 5);
    for t in 3..200 {
        assert!(s.decide(t * S, &[load(1, 5, 2400.0, 0.5)], FREE).is_empty());
    }
}

#[test]
fn a_busy_stage_aims_below_its_measured_capacity() {
    // LW 700, HW 800: the target 750 is more than 80% of what a saturated task carries.
    let a = AutoscaleSpec {
        max_tasks: Some(16),
        ..AutoscaleSpec::new(700.0, 800.0)
    };
    let mut s = Scaler::new(&job(&[10], a));
    let d = one(s.decide(0, &[load(1, 10, 9000.0, 1.0)], FREE));
    assert_eq!(
        d.to, 13,
        "ceil(9000 / (0.8 × 900)), not ceil(9000 / 750) = 12"
    );
    assert_eq!(
        d.reason,
        "input 9000/s over 10 tasks = 900/s per task > HW 800; busy 100%: a task carries \
         ~900/s, aim at 80% of it; need 13 at 692/s per task"
    );
}

#[test]
fn shrinks_only_after_the_grace_period_of_steady_looks_below_lw() {
    let mut s = Scaler::new(&job(&[4], lw_hw()));
    let low = load(1, 4, 400.0, 0.0);
    for t in 0..30 {
        assert!(
            s.decide(t * S, std::slice::from_ref(&low), FREE).is_empty(),
            "{t} s"
        );
    }
    let d = one(s.decide(30 * S, std::slice::from_ref(&low), FREE));
    assert_eq!((d.from, d.to), (4, 1));
    assert_eq!(
        d.reason,
        "input 400/s over 4 tasks = 100/s per task < LW 200 for 30 s; need 1 at 400/s per task"
    );
    // A look between the watermarks starts the grace again; so does a settling one.
    let mut s = Scaler::new(&job(&[4], lw_hw()));
    s.decide(0, std::slice::from_ref(&low), FREE);
    s.decide(20 * S, &[load(1, 4, 1000.0, 0.0)], FREE);
    s.decide(21 * S, std::slice::from_ref(&low), FREE);
    assert!(s
        .decide(50 * S, std::slice::from_ref(&low), FREE)
        .is_empty());
    let settling = StageLoad {
        settling: true,
        ..low.clone()
    };
    s.decide(51 * S, &[settling], FREE);
    assert!(s
        .decide(60 * S, std::slice::from_ref(&low), FREE)
        .is_empty());
    assert_eq!(one(s.decide(90 * S, &[low], FREE)).to, 1);
}

#[test]
fn a_busy_stage_below_lw_is_not_shrunk_below_what_it_can_carry() {
    // 150/s per task at 90% busy: a task carries ~167/s; two tasks could not take 600/s.
    let mut s = Scaler::new(&job(&[4], lw_hw()));
    for t in 0..=100 {
        assert!(s.decide(t * S, &[load(1, 4, 600.0, 0.9)], FREE).is_empty());
    }
    // The same input at 10% busy: a task carries ~1500/s, so 2 tasks at the target 500.
    let mut s = Scaler::new(&job(&[4], lw_hw()));
    s.decide(0, &[load(1, 4, 600.0, 0.1)], FREE);
    assert_eq!(one(s.decide(30 * S, &[load(1, 4, 600.0, 0.1)], FREE)).to, 2);
}

#[test]
fn no_decision_within_the_cooldown_of_a_finished_rescale() {
    let mut s = Scaler::new(&job(&[2], lw_hw()));
    one(s.decide(0, &[load(1, 2, 2400.0, 0.5)], FREE));
    s.applied(10 * S, 1, 5);
    let hot = load(1, 5, 8000.0, 0.5);
    for ms in [10_000, 12_000, 14_999] {
        assert!(
            s.decide(ms, std::slice::from_ref(&hot), FREE).is_empty(),
            "{ms} ms"
        );
    }
    assert_eq!(one(s.decide(15 * S, &[hot], FREE)).to, 8);
    // The grace for a shrink counts only from the end of the cooldown.
    let mut s = Scaler::new(&job(&[4], lw_hw()));
    s.applied(0, 1, 4);
    for t in 0..35 {
        assert!(s.decide(t * S, &[load(1, 4, 400.0, 0.0)], FREE).is_empty());
    }
    assert_eq!(one(s.decide(35 * S, &[load(1, 4, 400.0, 0.0)], FREE)).to, 1);
    // With no cooldown, a finished shrink still starts the grace anew.
    let a = AutoscaleSpec {
        cooldown_s: Some(0.0),
        ..AutoscaleSpec::new(200.0, 800.0)
    };
    let mut s = Scaler::new(&job(&[8], a));
    s.decide(0, &[load(1, 8, 1200.0, 0.0)], FREE);
    assert_eq!(
        one(s.decide(30 * S, &[load(1, 8, 1200.0, 0.0)], FREE)).to,
        3
    );
    s.applied(31 * S, 1, 3);
    // 150/s per task over 3 tasks would shrink to 1 only after another 30 s.
    s.decide(31 * S, &[load(1, 3, 450.0, 0.0)], FREE);
    assert!(s.decide(60 * S, &[load(1, 3, 450.0, 0.0)], FREE).is_empty());
    assert_eq!(one(s.decide(61 * S, &[load(1, 3, 450.0, 0.0)], FREE)).to, 1);
}

#[test]
fn a_settling_stage_gets_no_decision() {
    let mut s = Scaler::new(&job(&[2], lw_hw()));
    let hot = load(1, 2, 5000.0, 1.0);
    let settling = StageLoad {
        settling: true,
        ..hot.clone()
    };
    for t in 0..10 {
        assert!(s
            .decide(t * S, std::slice::from_ref(&settling), FREE)
            .is_empty());
    }
    assert_eq!(one(s.decide(10 * S, &[hot], FREE)).to, 8);
}

#[test]
fn decisions_stay_within_min_max_and_the_free_slots() {
    let a = AutoscaleSpec {
        min_tasks: Some(3),
        max_tasks: Some(6),
        ..lw_hw()
    };
    let mut s = Scaler::new(&job(&[3], a.clone()));
    let d = one(s.decide(0, &[load(1, 3, 8000.0, 0.5)], FREE));
    assert_eq!(d.to, 6);
    assert!(d
        .reason
        .ends_with("need 16 at 500/s per task; limited by max_tasks 6 to 6"));
    let d = one(s.decide(S, &[load(1, 3, 8000.0, 0.5)], 2));
    assert_eq!(d.to, 5);
    assert!(
        d.reason.contains("limited by free slots (2 free) to 5"),
        "{}",
        d.reason
    );
    assert!(s.decide(2 * S, &[load(1, 3, 8000.0, 0.5)], 0).is_empty());
    // No free slot: no decision, but the grow it wanted is told, with what held it.
    let held = one(s.take_held());
    assert_eq!((held.from, held.to), (3, 6));
    assert!(
        held.reason.contains("limited by free slots (0 free) to 3"),
        "{}",
        held.reason
    );
    assert!(s.take_held().is_empty());
    // Idle: down to min_tasks, not to 1; at min_tasks, nothing.
    let mut s = Scaler::new(&job(&[6], a));
    s.decide(0, &[load(1, 6, 0.0, 0.0)], FREE);
    let d = one(s.decide(30 * S, &[load(1, 6, 0.0, 0.0)], FREE));
    assert_eq!((d.to, d.rate), (3, 0.0));
    assert!(d
        .reason
        .starts_with("input 0/s over 6 tasks = 0/s per task < LW 200 for 30 s"));
    s.applied(31 * S, 1, 3);
    for t in 36..100 {
        assert!(s.decide(t * S, &[load(1, 3, 0.0, 0.0)], FREE).is_empty());
    }
}

#[test]
fn stages_growing_in_one_call_share_the_free_slots() {
    let mut s = Scaler::new(&job(&[2, 2], lw_hw()));
    let d = s.decide(0, &[load(1, 2, 2400.0, 0.5), load(2, 2, 2400.0, 0.5)], 4);
    let got: Vec<(u32, u32, u32)> = d.iter().map(|d| (d.stage, d.from, d.to)).collect();
    assert_eq!(got, [(1, 2, 5), (2, 2, 3)]);
}

#[test]
fn a_grow_stays_within_the_jobs_task_and_link_limits() {
    // Links: 64 + 64·m + m ≤ 4096 holds up to m = 62.
    let mut spec = job(
        &[64, 60],
        AutoscaleSpec {
            max_tasks: Some(100),
            ..lw_hw()
        },
    );
    spec.stages[0].autoscale = StageAutoscale::Off;
    let mut s = Scaler::new(&spec);
    let d = one(s.decide(0, &[load(2, 60, 60_000.0, 0.5)], 500));
    assert_eq!(d.to, 62);
    assert!(
        d.reason
            .ends_with("limited by the job's limits (512 tasks, 4096 data links) to 62"),
        "{}",
        d.reason
    );
    // Tasks: 1 + 256 + 1 + m + 1 ≤ 512 holds up to m = 253.
    let mut spec = job(&[1, 256, 1, 250, 1], lw_hw());
    for i in [0, 1, 2, 4] {
        spec.stages[i].autoscale = StageAutoscale::Off;
    }
    spec.stages[3].autoscale = StageAutoscale::Override(AutoscaleOverride {
        max_tasks: Some(256),
        ..Default::default()
    });
    assert_eq!(check_spec(&spec), []);
    let mut s = Scaler::new(&spec);
    assert_eq!(s.stages().collect::<Vec<_>>(), [4]);
    let d = one(s.decide(0, &[load(4, 250, 250_000.0, 0.5)], 500));
    assert_eq!(d.to, 253);
}

#[test]
fn an_ineffective_grow_is_not_repeated_until_the_rate_rises() {
    let mut s = Scaler::new(&job(&[2], lw_hw()));
    // Saturated at 2 tasks: grow to 4.
    let d = one(s.decide(0, &[load(1, 2, 2000.0, 0.95)], FREE));
    assert_eq!(d.to, 4);
    s.applied(S, 1, 4);
    // The first look after the cooldown: 2.5% more, not 10%: ineffective.
    assert!(s.decide(6 * S, &[load(1, 4, 2050.0, 0.5)], FREE).is_empty());
    assert_eq!(s.held_at(1), Some(2));
    // The stage's rate falls (what held it got worse); it shrinks back after the grace.
    for t in 7..37 {
        assert!(s.decide(t * S, &[load(1, 4, 700.0, 0.3)], FREE).is_empty());
    }
    assert_eq!(one(s.decide(37 * S, &[load(1, 4, 700.0, 0.3)], FREE)).to, 2);
    s.applied(38 * S, 1, 2);
    // Saturated at 2 again at the old rate: the grow that did not help is not repeated (the
    // fall to 700/s did not clear the mark).
    for t in 43..100 {
        assert!(s
            .decide(t * S, &[load(1, 2, 2000.0, 0.95)], FREE)
            .is_empty());
    }
    // Its rate rises more than 25% above the ceiling 2050/s: the grow is tried again.
    let d = one(s.decide(100 * S, &[load(1, 2, 2600.0, 0.95)], FREE));
    assert_eq!(d.to, 6);
    assert_eq!(s.held_at(1), None);
}

#[test]
fn a_grow_that_helped_or_of_an_unsaturated_stage_is_not_marked() {
    // Saturated, and the rate rose 10%: effective.
    let mut s = Scaler::new(&job(&[2], lw_hw()));
    one(s.decide(0, &[load(1, 2, 2000.0, 0.95)], FREE));
    s.applied(S, 1, 4);
    s.decide(6 * S, &[load(1, 4, 2200.0, 0.6)], FREE);
    assert_eq!(s.held_at(1), None);
    // Not saturated before: the rate is the upstream's, a grow cannot raise it.
    let mut s = Scaler::new(&job(&[2], lw_hw()));
    one(s.decide(0, &[load(1, 2, 2000.0, 0.5)], FREE));
    s.applied(S, 1, 4);
    s.decide(6 * S, &[load(1, 4, 2000.0, 0.25)], FREE);
    assert_eq!(s.held_at(1), None);
    // While held, a grow up to the mark is still allowed, with the reason saying why not more.
    let mut s = Scaler::new(&job(&[3], lw_hw()));
    one(s.decide(0, &[load(1, 3, 3000.0, 0.95)], FREE));
    s.applied(S, 1, 6);
    s.decide(6 * S, &[load(1, 6, 3000.0, 0.5)], FREE);
    assert_eq!(s.held_at(1), Some(3));
    for t in 7..37 {
        s.decide(t * S, &[load(1, 6, 300.0, 0.1)], FREE);
    }
    s.applied(38 * S, 1, 1);
    let d = one(s.decide(43 * S, &[load(1, 1, 3000.0, 0.95)], FREE));
    assert_eq!(d.to, 3);
    assert!(
        d.reason.ends_with(
            "limited by an earlier grow above 3 that did not raise the rate past 3000/s to 3"
        ),
        "{}",
        d.reason
    );
}

#[test]
fn between_the_watermarks_nothing_ever_changes() {
    let mut s = Scaler::new(&job(&[4], lw_hw()));
    let mut t = 0;
    // Per-task rates from exactly LW to exactly HW, at any busy share, for a long time.
    for step in 0..=60 {
        let per_task = 200.0 + 10.0 * f64::from(step);
        for busy in [0.0, 0.3, 0.9, 1.0] {
            t += S;
            let d = s.decide(t, &[load(1, 4, 4.0 * per_task, busy)], FREE);
            assert!(d.is_empty(), "{per_task}/s per task, busy {busy}: {d:?}");
        }
    }
}

#[test]
fn stages_that_do_not_autoscale_and_bad_measurements_are_ignored() {
    let mut spec = job(&[2, 2], lw_hw());
    spec.stages[1].autoscale = StageAutoscale::Off;
    let mut s = Scaler::new(&spec);
    assert_eq!(s.stages().collect::<Vec<_>>(), [1]);
    assert!(s.decide(0, &[load(2, 2, 1e6, 1.0)], FREE).is_empty());
    assert!(s.decide(0, &[load(3, 1, 1e6, 1.0)], FREE).is_empty());
    for bad in [
        load(1, 0, 5000.0, 0.5),
        load(1, 2, f64::NAN, 0.5),
        load(1, 2, -1.0, 0.5),
        load(1, 2, f64::INFINITY, 0.5),
    ] {
        assert!(
            s.decide(S, std::slice::from_ref(&bad), FREE).is_empty(),
            "{bad:?}"
        );
    }
    // A busy share that is not one is taken as unknown.
    assert_eq!(
        one(s.decide(2 * S, &[load(1, 2, 2400.0, f64::NAN)], FREE)).to,
        5
    );
    let mut none = JobSpec::sample(spec.stages.clone());
    none.stages[1].autoscale = StageAutoscale::Inherit;
    assert_eq!(Scaler::new(&none).stages().count(), 0);
}
