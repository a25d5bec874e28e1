//! The core's rules, one input at a time: what it decides and in which order the actions
//! come (a placement is durable before any worker hears of it).

use super::record::RunState;
use super::{Action, Cluster, CoreConfig, Input, JobCore, Outcome, Reported, Timer};
use crate::model::ids::{JobId, TaskPos, WorkerId};
use crate::model::spec::{Delivery, JobSpec, OperatorSpec, StageSpec};
use crate::protocol::auth::Identity;
use crate::protocol::control::{Endpoint, TaskState};
use std::time::Duration;

fn spec(delivery: Delivery) -> JobSpec {
    let stage = |tasks| StageSpec {
        tasks,
        operator: OperatorSpec::Builtin {
            name: "identity".into(),
            args: vec![],
        },
        autoscale: Default::default(),
        stateless: false,
    };
    let mut s = JobSpec::sample(vec![stage(2), stage(1)]);
    s.delivery = delivery;
    s
}

fn cluster(ids: &[u32]) -> Cluster {
    Cluster {
        workers: ids.iter().map(|i| (w(*i), endpoint(*i))).collect(),
        ..Cluster::default()
    }
}

/// Worker `i`'s data address and key.
fn endpoint(i: u32) -> Endpoint {
    Endpoint {
        addr: format!("10.0.0.{i}:7100"),
        key: Identity::from_seed([i as u8; 32]).unwrap().public(),
    }
}

fn w(i: u32) -> WorkerId {
    WorkerId(format!("w{i}"))
}

fn pos(stage: u32, index: u32) -> TaskPos {
    TaskPos { stage, index }
}

fn config() -> CoreConfig {
    CoreConfig {
        max_restarts: 3,
        adopt_after: Duration::from_secs(5),
        drain_after: Duration::from_secs(10),
        restart_delay: Duration::from_millis(100),
        restart_delay_max: Duration::from_secs(2),
        timeout: None,
    }
}

fn core(delivery: Delivery) -> JobCore {
    JobCore::new(JobId("job-1".into()), spec(delivery), config())
}

fn started(delivery: Delivery) -> JobCore {
    let mut c = core(delivery);
    c.handle(Input::Start, &cluster(&[1, 2, 3]));
    c
}

fn failed(pos: TaskPos, attempt: u32) -> Input {
    Input::TaskEnded {
        pos,
        attempt,
        state: TaskState::Failed,
        error: Some("boom".into()),
        unrecoverable: false,
    }
}

fn finished(pos: TaskPos, attempt: u32) -> Input {
    Input::TaskEnded {
        pos,
        attempt,
        state: TaskState::Finished,
        error: None,
        unrecoverable: false,
    }
}

/// Index of the first action matching `f`.
fn first(actions: &[Action], f: impl Fn(&Action) -> bool) -> Option<usize> {
    actions.iter().position(f)
}

fn ended(actions: &[Action]) -> Option<&Outcome> {
    actions.iter().find_map(|a| match a {
        Action::End(o) => Some(o),
        _ => None,
    })
}

#[test]
fn start_places_every_task_and_persists_before_any_start() {
    let mut c = core(Delivery::ExactlyOnce);
    let actions = c.handle(Input::Start, &cluster(&[1, 2, 3]));
    // Source, 2 + 1 operator tasks, sink.
    assert_eq!(c.tasks().len(), 5);
    let persist = first(&actions, |a| matches!(a, Action::Persist(_))).expect("persisted");
    let start = first(&actions, |a| matches!(a, Action::Start { .. })).expect("started");
    assert!(persist < start, "{actions:?}");
    let starts = actions
        .iter()
        .filter(|a| matches!(a, Action::Start { .. }))
        .count();
    assert_eq!(starts, 5);
    // Operator tasks spread first (round robin when slots are not counted), then the source
    // and sink where the job has the fewest tasks, ties by the cluster's preference.
    let workers: Vec<&WorkerId> = c.tasks().values().map(|t| &t.worker).collect();
    assert_eq!(workers, [&w(1), &w(1), &w(2), &w(3), &w(2)]);
}

#[test]
fn a_job_with_no_live_worker_waits_and_starts_when_one_joins() {
    let mut c = core(Delivery::ExactlyOnce);
    let actions = c.handle(Input::Start, &Cluster::default());
    assert!(ended(&actions).is_none());
    assert!(actions.iter().any(
        |a| matches!(a, Action::Waiting(Some(why)) if why.contains("waiting for a live worker"))
    ));
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::SetTimer(Timer::Place, _))));
    assert!(c.tasks().is_empty());
    let actions = c.handle(Input::Timer(Timer::Place), &cluster(&[1]));
    assert!(actions.iter().any(|a| matches!(a, Action::Waiting(None))));
    assert_eq!(c.tasks().len(), 5);
}

#[test]
fn exactly_once_restarts_the_failed_task_alone_at_a_new_attempt_elsewhere() {
    let mut c = started(Delivery::ExactlyOnce);
    let p = pos(1, 0);
    let before = c.tasks()[&p].worker.clone();
    let actions = c.handle(failed(p, 0), &cluster(&[1, 2, 3]));
    let t = &c.tasks()[&p];
    assert_eq!(t.attempt, 1);
    assert_ne!(t.worker, before);
    let persist = first(&actions, |a| matches!(a, Action::Persist(_))).expect("persisted");
    let routes = first(&actions, |a| matches!(a, Action::Routes { .. })).expect("routes");
    let start = first(&actions, |a| matches!(a, Action::Start { .. })).expect("started");
    assert!(persist < routes && routes < start, "{actions:?}");
    match &actions[start] {
        Action::Start { worker, assignment } => {
            assert_eq!(worker, &t.worker);
            assert_eq!(assignment.attempt, 1);
        }
        other => panic!("{other:?}"),
    }
    // The restarted task's worker gets the placement with its Start, not twice.
    match &actions[routes] {
        Action::Routes {
            workers, routes, ..
        } => {
            assert!(!workers.contains(&t.worker));
            // Receivers learn the key the new attempt's Hellos are signed with: its worker's.
            let worker_no: u32 = t.worker.0[1..].parse().unwrap();
            let dest = &routes.iter().find(|(q, _)| *q == p).unwrap().1;
            assert_eq!((dest.attempt, dest.key), (1, Some(endpoint(worker_no).key)));
        }
        other => panic!("{other:?}"),
    }
    // Other tasks keep their attempts.
    assert_eq!(c.tasks()[&pos(1, 1)].attempt, 0);
    assert_eq!(c.recoveries(), 1);
    assert_eq!(c.failures(), 1);
}

#[test]
fn a_stale_attempt_ending_changes_nothing() {
    let mut c = started(Delivery::ExactlyOnce);
    let p = pos(2, 0);
    c.handle(failed(p, 0), &cluster(&[1, 2, 3]));
    for input in [failed(p, 0), finished(p, 0)] {
        let actions = c.handle(input, &cluster(&[1, 2, 3]));
        assert!(actions.is_empty(), "{actions:?}");
    }
    assert_eq!(c.tasks()[&p].attempt, 1);
}

/// A failure no restart can mend (the input log is damaged, gone, or not sealed by this
/// cluster) fails the job at once, saying why; a hostile probe's tampered log was retried
/// through every restart, some 2.5 minutes, before the job failed. An earlier attempt's such
/// report changes nothing (its successor reads the log too, and will say so itself).
#[test]
fn an_unrecoverable_failure_fails_the_job_at_once() {
    let mut c = started(Delivery::ExactlyOnce);
    let broken = |attempt| Input::TaskEnded {
        pos: pos(1, 0),
        attempt,
        state: TaskState::Failed,
        error: Some("input log: log object logs/j/1.0/000000-0000000003.seg is not sealed".into()),
        unrecoverable: true,
    };
    c.handle(failed(pos(1, 0), 0), &cluster(&[1, 2, 3]));
    let actions = c.handle(broken(0), &cluster(&[1, 2, 3]));
    assert!(
        ended(&actions).is_none(),
        "a stale attempt's report: {actions:?}"
    );
    let actions = c.handle(broken(1), &cluster(&[1, 2, 3]));
    match ended(&actions) {
        Some(Outcome::Failed(why)) => {
            assert!(why.contains("task 1.0 attempt 1 cannot recover"), "{why}");
            assert!(why.contains("is not sealed"), "{why}");
        }
        other => panic!("{other:?}: {actions:?}"),
    }
}

#[test]
fn at_least_once_restarts_every_task_in_a_new_epoch() {
    let mut c = started(Delivery::AtLeastOnce);
    let actions = c.handle(failed(pos(1, 1), 0), &cluster(&[1, 2, 3]));
    assert_eq!(c.epoch(), 1);
    assert!(c.tasks().values().all(|t| t.attempt == 1));
    let stop = first(&actions, |a| matches!(a, Action::StopJob { .. })).expect("stopped");
    let start = first(&actions, |a| matches!(a, Action::Start { .. })).expect("started");
    assert!(stop < start);
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::ClearTimer(Timer::Drain))));
}

#[test]
fn at_most_once_fails_the_job_on_a_failure() {
    let mut c = started(Delivery::AtMostOnce);
    let actions = c.handle(failed(pos(1, 0), 0), &cluster(&[1, 2, 3]));
    assert!(matches!(ended(&actions), Some(Outcome::Failed(_))));
}

#[test]
fn a_task_that_fails_too_often_fails_its_job() {
    let mut c = started(Delivery::ExactlyOnce);
    let p = pos(1, 0);
    for attempt in 0..3 {
        let actions = c.handle(failed(p, attempt), &cluster(&[1, 2]));
        assert!(ended(&actions).is_none());
    }
    let actions = c.handle(failed(p, 3), &cluster(&[1, 2]));
    match ended(&actions) {
        Some(Outcome::Failed(e)) => assert!(e.contains("failed 4 times"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_job_succeeds_once_the_sink_finished_every_task_ended_and_the_source_is_done() {
    let mut c = started(Delivery::ExactlyOnce);
    let all = cluster(&[1, 2, 3]);
    let sink = pos(3, 0);
    let actions = c.handle(finished(sink, 0), &all);
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::SetTimer(Timer::Drain, _))));
    for p in [pos(1, 0), pos(1, 1), pos(2, 0)] {
        assert!(ended(&c.handle(finished(p, 0), &all)).is_none());
    }
    // The source's whole stream must be acknowledged too.
    let actions = c.handle(Input::SourceDone { attempt: 0 }, &all);
    assert_eq!(ended(&actions), Some(&Outcome::Succeeded));
}

#[test]
fn a_finished_task_is_marked_in_the_placement_for_restarted_upstreams() {
    let mut c = started(Delivery::ExactlyOnce);
    let actions = c.handle(finished(pos(2, 0), 0), &cluster(&[1, 2, 3]));
    let persist = first(&actions, |a| matches!(a, Action::Persist(_))).expect("persisted");
    let routes = first(&actions, |a| matches!(a, Action::Routes { .. })).expect("routes");
    assert!(persist < routes);
    let run = c.run_state();
    let placed = run
        .tasks
        .iter()
        .find(|t| t.pos == pos(2, 0))
        .expect("placed");
    assert!(placed.dest.finished);
}

#[test]
fn the_drain_deadline_ends_a_job_whose_sink_finished() {
    let mut c = started(Delivery::ExactlyOnce);
    let all = cluster(&[1, 2, 3]);
    assert!(c.handle(Input::Timer(Timer::Drain), &all).is_empty());
    c.handle(finished(pos(3, 0), 0), &all);
    let actions = c.handle(Input::Timer(Timer::Drain), &all);
    assert_eq!(ended(&actions), Some(&Outcome::Succeeded));
}

fn resumed(run: RunState) -> (JobCore, Vec<Action>) {
    let mut c = core(Delivery::ExactlyOnce);
    let actions = c.handle(Input::Resume(run), &Cluster::default());
    (c, actions)
}

#[test]
fn a_resumed_job_adopts_rejoining_workers_and_recovers_what_they_lost() {
    let run = started(Delivery::ExactlyOnce).run_state();
    let (mut c, actions) = resumed(run);
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::SetTimer(Timer::Adopt, _))));
    // No task restarts on a resume.
    assert!(!actions.iter().any(|a| matches!(a, Action::Start { .. })));
    // w1 ran the source (0.0) and 2.0; it reports the source, and a stale attempt of 1.0.
    let reports = vec![
        Reported {
            pos: pos(0, 0),
            attempt: 0,
            state: TaskState::Running,
            error: None,
        },
        Reported {
            pos: pos(1, 0),
            attempt: 7,
            state: TaskState::Running,
            error: None,
        },
    ];
    let live = cluster(&[1]);
    let rejoined = Input::Rejoined {
        worker: w(1),
        reports,
    };
    let actions = c.handle(rejoined, &live);
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Stop { pos: p, attempt: 7, .. } if *p == pos(1, 0))));
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Routes { workers, .. } if workers == &[w(1)])));
    // 1.0 was on w1 but its current attempt was not reported: lost, restarted at attempt 1.
    assert_eq!(c.tasks()[&pos(1, 0)].attempt, 1);
    assert_eq!(c.tasks()[&pos(0, 0)].attempt, 0);
    // Tasks on workers that never came back are lost at the adoption deadline.
    let actions = c.handle(Input::Timer(Timer::Adopt), &live);
    assert!(ended(&actions).is_none());
    for p in [pos(1, 1), pos(2, 0), pos(3, 0)] {
        assert_eq!(c.tasks()[&p].attempt, 1, "{p}");
        assert_eq!(c.tasks()[&p].worker, w(1), "{p}");
    }
}

#[test]
fn a_resumed_job_whose_sink_had_finished_still_completes() {
    // The sink's end was reported to the previous leader; nothing will report it again.
    let mut before = started(Delivery::ExactlyOnce);
    before.handle(finished(pos(3, 0), 0), &cluster(&[1, 2, 3]));
    let (mut c, actions) = resumed(before.run_state());
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::SetTimer(Timer::Drain, _))));
    let all = cluster(&[1, 2, 3]);
    for p in [pos(1, 0), pos(1, 1), pos(2, 0)] {
        c.handle(finished(p, 0), &all);
    }
    let actions = c.handle(Input::SourceDone { attempt: 0 }, &all);
    assert_eq!(ended(&actions), Some(&Outcome::Succeeded));
}

#[test]
fn a_lost_worker_s_tasks_restart_and_a_stalled_attempt_is_stopped_first() {
    let mut c = started(Delivery::ExactlyOnce);
    let actions = c.handle(Input::WorkerLost { worker: w(2) }, &cluster(&[1, 3]));
    assert!(ended(&actions).is_none());
    assert!(c.tasks().values().all(|t| t.worker != w(2)));
    let p = pos(2, 0);
    let attempt = c.tasks()[&p].attempt;
    let stalled = Input::Stalled {
        pos: p,
        attempt,
        cause: "stalled".into(),
    };
    let actions = c.handle(stalled, &cluster(&[1, 3]));
    let stop = first(&actions, |a| matches!(a, Action::Stop { .. })).expect("stopped");
    let start = first(&actions, |a| matches!(a, Action::Start { .. })).expect("restarted");
    assert!(stop < start);
    assert_eq!(c.tasks()[&p].attempt, attempt + 1);
}

#[test]
fn cancel_and_abort_end_the_job() {
    let mut c = started(Delivery::ExactlyOnce);
    let actions = c.handle(Input::Cancel, &cluster(&[1]));
    assert_eq!(ended(&actions), Some(&Outcome::Cancelled));
    let mut c = started(Delivery::ExactlyOnce);
    let actions = c.handle(Input::Abort("disk".into()), &cluster(&[1]));
    assert_eq!(ended(&actions), Some(&Outcome::Failed("disk".into())));
}

#[test]
fn restarts_back_off_the_first_at_once_then_doubling_to_the_cap() {
    let c = core(Delivery::ExactlyOnce);
    let waits: Vec<u64> = (1..=8)
        .map(|n| c.cfg.restart_wait(n).as_millis() as u64)
        .collect();
    assert_eq!(waits, [0, 100, 200, 400, 800, 1600, 2000, 2000]);
    assert_eq!(c.cfg.restart_wait(u32::MAX), Duration::from_secs(2));
}

#[test]
fn a_task_failing_again_waits_for_its_restart_and_a_stale_wait_starts_nothing() {
    let mut c = core(Delivery::ExactlyOnce);
    c.cfg.max_restarts = 10;
    let cl = cluster(&[1, 2, 3]);
    c.handle(Input::Start, &cl);
    let p = pos(1, 0);
    let starts = |a: &[Action]| {
        a.iter()
            .filter(|a| matches!(a, Action::Start { .. }))
            .count()
    };
    // The first restart starts at once.
    let a = c.handle(failed(p, 0), &cl);
    assert_eq!(starts(&a), 1, "{a:?}");
    // The second is placed (durably, peers told) but held back.
    let a = c.handle(failed(p, 1), &cl);
    assert_eq!(starts(&a), 0, "{a:?}");
    assert!(first(&a, |a| matches!(a, Action::Persist(_))).is_some());
    assert!(first(&a, |a| matches!(a, Action::Routes { .. })).is_some());
    let wait = a.iter().find_map(|a| match a {
        Action::SetTimer(Timer::Start(q, 2), d) if *q == p => Some(*d),
        _ => None,
    });
    assert_eq!(wait, Some(Duration::from_millis(100)), "{a:?}");
    // Its wait expires: attempt 2 starts.
    let a = c.handle(Input::Timer(Timer::Start(p, 2)), &cl);
    assert_eq!(starts(&a), 1, "{a:?}");
    // Attempt 3 waits; attempt 3 fails (its worker lost) before its wait expires: the
    // expired wait of attempt 3 starts nothing, attempt 4's does.
    let a = c.handle(failed(p, 2), &cl);
    assert_eq!(starts(&a), 0, "{a:?}");
    let lost = c.tasks()[&p].worker.clone();
    let a = c.handle(Input::WorkerLost { worker: lost }, &cl);
    assert!(a
        .iter()
        .any(|a| matches!(a, Action::SetTimer(Timer::Start(q, 4), _) if *q == p)));
    assert_eq!(starts(&c.handle(Input::Timer(Timer::Start(p, 3)), &cl)), 0);
    assert_eq!(starts(&c.handle(Input::Timer(Timer::Start(p, 4)), &cl)), 1);
}

#[test]
fn an_at_least_once_epoch_restart_backs_off_too() {
    let mut c = core(Delivery::AtLeastOnce);
    c.cfg.max_restarts = 10;
    let cl = cluster(&[1, 2, 3]);
    c.handle(Input::Start, &cl);
    let a = c.handle(failed(pos(1, 0), 0), &cl);
    assert_eq!(c.epoch(), 1);
    assert_eq!(
        a.iter()
            .filter(|a| matches!(a, Action::Start { .. }))
            .count(),
        5
    );
    let a = c.handle(failed(pos(1, 0), 1), &cl);
    assert_eq!(c.epoch(), 2);
    assert!(
        !a.iter().any(|a| matches!(a, Action::Start { .. })),
        "{a:?}"
    );
    let timers: Vec<TaskPos> = a
        .iter()
        .filter_map(|a| match a {
            Action::SetTimer(Timer::Start(p, 2), d) if *d == Duration::from_millis(100) => Some(*p),
            _ => None,
        })
        .collect();
    assert_eq!(timers.len(), 5, "{a:?}");
}

#[path = "tests_capacity.rs"]
mod capacity;
