//! Capacity and drain: slots are never over-filled, a job that does not fit waits (first come,
//! first served), a restart without a free slot waits for one, and a draining worker's tasks
//! move without counting as failures.

use super::*;
use std::collections::{BTreeMap, BTreeSet};

/// Workers `ids` with `slots[i]` slots each free for the job.
fn sized(ids: &[u32], slots: &[u32]) -> Cluster {
    let mut c = cluster(ids);
    c.slots = Some(ids.iter().zip(slots).map(|(i, n)| (w(*i), *n)).collect());
    c
}

/// Slot-taking (operator) tasks not ended, per worker.
fn held(c: &JobCore) -> BTreeMap<WorkerId, u32> {
    let mut m = BTreeMap::new();
    for (p, t) in c.tasks() {
        let operator = p.stage >= 1 && p.stage <= 2;
        if operator && !t.state.is_terminal() {
            *m.entry(t.worker.clone()).or_default() += 1;
        }
    }
    m
}

fn starts(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Start { .. }))
        .count()
}

#[test]
fn a_job_fills_no_worker_past_its_slots_and_spreads_by_free_slots() {
    let mut c = core(Delivery::ExactlyOnce);
    let actions = c.handle(Input::Start, &sized(&[1, 2, 3], &[2, 1, 0]));
    assert_eq!(starts(&actions), 5);
    let held = held(&c);
    assert_eq!(held.get(&w(1)), Some(&2));
    assert_eq!(held.get(&w(2)), Some(&1));
    assert_eq!(held.get(&w(3)), None, "w3 has no slot");
}

#[test]
fn a_job_that_does_not_fit_is_pending_with_its_reason_and_starts_when_slots_free() {
    let mut c = core(Delivery::ExactlyOnce);
    let actions = c.handle(Input::Start, &sized(&[1, 2], &[1, 1]));
    assert_eq!(starts(&actions), 0);
    assert!(actions.iter().any(|a| matches!(a,
        Action::Waiting(Some(why)) if why == "waiting for 3 free slots: 2 free on 2 workers")));
    // Still no room: no second Waiting (the reason did not change), a new look scheduled.
    let actions = c.handle(Input::Timer(Timer::Place), &sized(&[1, 2], &[1, 1]));
    assert!(!actions.iter().any(|a| matches!(a, Action::Waiting(_))));
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::SetTimer(Timer::Place, _))));
    let actions = c.handle(Input::Timer(Timer::Place), &sized(&[1, 2], &[2, 1]));
    assert!(actions.iter().any(|a| matches!(a, Action::Waiting(None))));
    assert_eq!(starts(&actions), 5);
    // A cancel while pending ends it like any job.
    let mut p = core(Delivery::ExactlyOnce);
    p.handle(Input::Start, &Cluster::default());
    assert_eq!(
        ended(&p.handle(Input::Cancel, &Cluster::default())),
        Some(&Outcome::Cancelled)
    );
}

#[test]
fn a_job_waits_behind_an_earlier_pending_one_even_if_it_fits() {
    let mut c = core(Delivery::ExactlyOnce);
    let mut room = sized(&[1, 2], &[8, 8]);
    room.behind = Some("job-0".into());
    let actions = c.handle(Input::Start, &room);
    assert_eq!(starts(&actions), 0);
    assert!(actions.iter().any(|a| matches!(a,
        Action::Waiting(Some(why)) if why.contains("behind job-0"))));
    room.behind = None;
    assert_eq!(starts(&c.handle(Input::Timer(Timer::Place), &room)), 5);
}

#[test]
fn a_restart_without_a_free_slot_waits_for_one_instead_of_over_filling() {
    let mut c = core(Delivery::ExactlyOnce);
    c.handle(Input::Start, &sized(&[1, 2], &[2, 1]));
    let on_w2: Vec<TaskPos> = c
        .tasks()
        .iter()
        .filter(|(p, t)| t.worker == w(2) && p.stage >= 1 && p.stage <= 2)
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(on_w2.len(), 1);
    let lost = on_w2[0];
    // w2 dies; w1's two slots are both held by this job: the task waits.
    let actions = c.handle(Input::WorkerLost { worker: w(2) }, &sized(&[1], &[2]));
    assert!(ended(&actions).is_none());
    assert_eq!(
        starts(&actions),
        1,
        "only the source or sink moves: {actions:?}"
    );
    assert!(actions.iter().any(|a| matches!(a,
        Action::Waiting(Some(why)) if why.contains("waits for a free slot"))));
    assert!(held(&c).get(&w(1)) == Some(&2));
    // Its next attempt is reserved and published with no key: the old attempt (a zombie on
    // a worker declared dead) is fenced off now, not when a slot frees up.
    let fenced = actions.iter().any(|a| match a {
        Action::Routes { routes, .. } => routes
            .iter()
            .any(|(p, d)| *p == lost && d.attempt == 1 && d.key.is_none()),
        _ => false,
    });
    assert!(fenced, "{actions:?}");
    // Still no room at the next look.
    let actions = c.handle(Input::Timer(Timer::Place), &sized(&[1], &[2]));
    assert_eq!(starts(&actions), 0);
    // A worker with a slot joins: the task restarts there.
    let actions = c.handle(Input::Timer(Timer::Place), &sized(&[1, 3], &[2, 1]));
    assert_eq!(starts(&actions), 1);
    assert_eq!(c.tasks()[&lost].worker, w(3));
    assert_eq!(c.tasks()[&lost].attempt, 1);
    assert!(actions.iter().any(|a| matches!(a, Action::Waiting(None))));
}

#[test]
fn a_draining_worker_s_tasks_move_without_counting_as_failures() {
    let mut c = core(Delivery::ExactlyOnce);
    c.handle(Input::Start, &sized(&[1, 2, 3], &[4, 4, 4]));
    let here: BTreeSet<TaskPos> = c
        .tasks()
        .iter()
        .filter(|(_, t)| t.worker == w(1))
        .map(|(p, _)| *p)
        .collect();
    assert!(!here.is_empty());
    let mut draining = sized(&[1, 2, 3], &[4, 4, 4]);
    draining.draining.insert(w(1));
    let actions = c.handle(Input::WorkerDraining { worker: w(1) }, &draining);
    for p in &here {
        assert!(actions.iter().any(
            |a| matches!(a, Action::Stop { worker, pos, attempt: 0 } if worker == &w(1) && pos == p)
        ));
        assert_ne!(c.tasks()[p].worker, w(1), "{p} moved");
        assert_eq!(c.tasks()[p].attempt, 1);
    }
    assert_eq!(starts(&actions), here.len());
    assert_eq!(c.failures(), 0);
    assert_eq!(c.last_failure(), None);
    // The moves do not use up max_restarts (3): three real failures are still restarted.
    let p = *here.iter().next().unwrap();
    for attempt in 1..4 {
        let actions = c.handle(failed(p, attempt), &draining);
        assert!(ended(&actions).is_none(), "attempt {attempt}: {actions:?}");
    }
    assert!(ended(&c.handle(failed(p, 4), &draining)).is_some());
}

#[test]
fn a_draining_worker_keeps_at_most_once_tasks_and_at_least_once_restarts_elsewhere() {
    let mut c = started(Delivery::AtMostOnce);
    let mut draining = cluster(&[1, 2, 3]);
    draining.draining.insert(w(1));
    let actions = c.handle(Input::WorkerDraining { worker: w(1) }, &draining);
    assert!(actions.is_empty(), "{actions:?}");

    let mut c = started(Delivery::AtLeastOnce);
    let actions = c.handle(Input::WorkerDraining { worker: w(1) }, &draining);
    assert!(actions.iter().any(|a| matches!(a, Action::StopJob { .. })));
    assert_eq!(c.epoch(), 1);
    assert!(c.tasks().values().all(|t| t.worker != w(1)));
    assert_eq!(c.failures(), 0);
}

/// A drain moves a task only where there is room for it now: one stopped with nowhere to go
/// stalled its job until a worker joined (a hostile probe). The others keep running on the
/// draining worker and move at a later look, once a worker with free slots is there.
#[test]
fn a_drain_with_no_room_elsewhere_keeps_the_tasks_running_until_there_is() {
    let mut c = core(Delivery::ExactlyOnce);
    c.handle(Input::Start, &sized(&[1, 2], &[2, 1]));
    let operators_on = |c: &JobCore, i| -> BTreeSet<TaskPos> {
        c.tasks()
            .iter()
            .filter(|(p, t)| t.worker == w(i) && !t.state.is_terminal() && c.holds_slot(**p))
            .map(|(p, _)| *p)
            .collect()
    };
    let kept = operators_on(&c, 1);
    assert_eq!(kept.len(), 2);
    // w2's one slot is this job's: w1's operator tasks have nowhere to go and stay; only
    // what takes no slot (the source, the sink) moves.
    let mut full = sized(&[1, 2], &[2, 1]);
    full.draining.insert(w(1));
    let actions = c.handle(Input::WorkerDraining { worker: w(1) }, &full);
    for p in &kept {
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::Stop { pos, .. } if pos == p)),
            "{p} was stopped with nowhere to go: {actions:?}"
        );
    }
    assert_eq!(operators_on(&c, 1), kept);
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::SetTimer(Timer::Place, _))));
    assert!(c
        .tasks()
        .iter()
        .all(|(p, t)| c.holds_slot(*p) || t.worker != w(1)));
    // Still no room at the next look: nothing moves.
    let actions = c.handle(Input::Timer(Timer::Place), &full);
    assert_eq!(starts(&actions), 0, "{actions:?}");
    // A worker with two free slots joins: both move there, as moves, not failures.
    let mut roomy = sized(&[1, 2, 3], &[2, 1, 2]);
    roomy.draining.insert(w(1));
    let actions = c.handle(Input::Timer(Timer::Place), &roomy);
    assert_eq!(starts(&actions), 2, "{actions:?}");
    assert!(operators_on(&c, 1).is_empty());
    assert_eq!(operators_on(&c, 3), kept);
    assert_eq!(c.failures(), 0);
    // Nothing left to move: the looks stop.
    let actions = c.handle(Input::Timer(Timer::Place), &roomy);
    assert!(actions.is_empty(), "{actions:?}");
}

/// A drain that times out with tasks still on the worker (no room came): the worker leaves,
/// and they move then, as a drain's moves, not failures, waiting for a slot (a probe saw the
/// worker listed dead and a failure counted, as if it had died).
#[test]
fn a_drain_that_ends_with_tasks_left_moves_them_without_failures() {
    let mut c = core(Delivery::ExactlyOnce);
    c.handle(Input::Start, &sized(&[1, 2], &[2, 1]));
    let mut full = sized(&[1, 2], &[2, 1]);
    full.draining.insert(w(1));
    c.handle(Input::WorkerDraining { worker: w(1) }, &full);
    let left: BTreeSet<TaskPos> = c
        .tasks()
        .iter()
        .filter(|(_, t)| t.worker == w(1) && !t.state.is_terminal())
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(left.len(), 2, "kept for want of room");
    // w1 left; w2 has no free slot: both are stopped and wait for one.
    let gone = sized(&[2], &[1]);
    let actions = c.handle(Input::DrainEnded { worker: w(1) }, &gone);
    assert!(ended(&actions).is_none(), "{actions:?}");
    for p in &left {
        assert!(actions
            .iter()
            .any(|a| matches!(a, Action::Stop { pos, .. } if pos == p)));
    }
    assert_eq!(c.failures(), 0);
    assert_eq!(c.unplaced().len(), 2);
    // A worker with room joins: they start there.
    let actions = c.handle(Input::Timer(Timer::Place), &sized(&[2, 3], &[1, 2]));
    assert_eq!(starts(&actions), 2, "{actions:?}");
    assert_eq!(c.failures(), 0);
    // At-most-once tasks cannot move: a drain's end loses them, as a worker's death does.
    let mut amo = started(Delivery::AtMostOnce);
    let actions = amo.handle(Input::DrainEnded { worker: w(1) }, &cluster(&[2, 3]));
    assert!(ended(&actions).is_some(), "{actions:?}");
}

/// A stage that autoscales grows onto a worker that joined after the job was placed. Its
/// standing-by tasks all sat on full workers, so every grow was refused for the rest of the
/// job ("no free slot on a worker that runs a standing-by task"; hostile probe 10) while the
/// new worker stayed idle. Now a standby task moves there, as a move (no failure counted),
/// and the rescale starts at once.
#[test]
fn a_stage_grows_onto_a_worker_that_joined_after_its_standby_tasks_were_placed() {
    use crate::model::autoscale::AutoscaleSpec;
    let mut c = core(Delivery::ExactlyOnce);
    let mut auto = AutoscaleSpec::new(1.0, 1e9);
    auto.max_tasks = Some(3);
    c.spec.autoscale = Some(auto);
    // Three operator tasks own key groups, on the three slots there are; the standby
    // positions sit on the same two full workers.
    c.handle(Input::Start, &sized(&[1, 2], &[2, 1]));
    let standby = pos(1, 2);
    let before = c.tasks()[&standby].clone();
    assert_ne!(before.worker, w(3));
    let grow = || {
        Input::Scale(crate::rescale::ScaleRequest {
            stage: 1,
            tasks: 3,
            reason: "test".into(),
            rate: None,
        })
    };
    // No room anywhere: refused, and nothing moves.
    let actions = c.handle(grow(), &sized(&[1, 2], &[2, 1]));
    assert_eq!(starts(&actions), 0, "{actions:?}");
    assert!(actions.iter().any(|a| matches!(a,
        Action::Scaling(n) if matches!(&n.phase, crate::ScalePhase::Refused(_)))));
    // w3 joins with two free slots: the standby task moves there (the grow waits for the
    // next decision: no task restarts in the step that switches maps)…
    let roomy = sized(&[1, 2, 3], &[2, 1, 2]);
    let actions = c.handle(grow(), &roomy);
    assert!(
        actions.iter().any(|a| matches!(a,
            Action::Stop { pos, attempt, .. } if *pos == standby && *attempt == before.attempt)),
        "{actions:?}"
    );
    let moved = &c.tasks()[&standby];
    assert_eq!(
        (moved.worker.clone(), moved.attempt),
        (w(3), before.attempt + 1)
    );
    let started = |actions: &[Action]| {
        actions
            .iter()
            .any(|a| matches!(a, Action::Scaling(n) if n.phase == crate::ScalePhase::Started))
    };
    assert!(!started(&actions), "{actions:?}");
    // …and the next one grows onto it.
    let actions = c.handle(grow(), &roomy);
    assert!(started(&actions), "{actions:?}");
    assert_eq!(c.failures(), 0);
}

/// An autoscaled stage that wants to grow with no free slot says so in the job's scaling
/// list, once while the cause holds (a stage at full load on a full cluster said nothing of
/// why it did not grow; hostile probe 18).
#[test]
fn a_grow_held_by_the_free_slots_is_listed_once() {
    use crate::autoscale::StageLoad;
    use crate::model::autoscale::AutoscaleSpec;
    let mut auto = AutoscaleSpec::new(1.0, 100.0);
    auto.max_tasks = Some(4);
    // The scaler is made from the spec the job starts with.
    let mut spec = core(Delivery::ExactlyOnce).spec.clone();
    spec.autoscale = Some(auto);
    let mut c = JobCore::new(core(Delivery::ExactlyOnce).id.clone(), spec, config());
    let full = sized(&[1, 2], &[2, 1]);
    c.handle(Input::Start, &full);
    let busy = |now_ms| Input::Loads {
        now_ms,
        loads: vec![StageLoad {
            stage: 1,
            tasks: 2,
            rate: 10_000.0,
            busy: 1.0,
            settling: false,
            rising: false,
        }],
    };
    let notes = |actions: &[Action]| -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Scaling(n) => match &n.phase {
                    crate::ScalePhase::Refused(why) => Some(format!("{}→{}: {why}", n.from, n.to)),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    };
    let first = notes(&c.handle(busy(1_000), &full));
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(
        first[0].starts_with("2→4: held by free slots (0 free)"),
        "{first:?}"
    );
    assert!(
        notes(&c.handle(busy(2_000), &full)).is_empty(),
        "listed again"
    );
}
