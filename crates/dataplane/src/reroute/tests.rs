use super::*;
use crate::model::groups::KEY_GROUPS;

fn grow() -> PendingRoute {
    PendingRoute {
        version: 1,
        map: GroupMap::even(1).rescaled(&(0..2).collect()),
    }
}

fn one_task() -> Switchboard {
    let first = RouteStep {
        from: 0,
        map: GroupMap::even(1),
    };
    Switchboard::new(vec![first], 2, false)
}

fn group_of(map: &GroupMap, task: u32) -> usize {
    (0..KEY_GROUPS).find(|g| map.owner(*g) == task).unwrap()
}

#[test]
fn a_switch_holds_what_moves_until_confirmed() {
    let (b, new) = (one_task(), grow());
    let (moving, staying) = (group_of(&new.map, 1), group_of(&new.map, 0));
    assert_eq!(b.route(moving, false), Verdict::To(0));
    let rep = b.reroute(new.clone()).unwrap();
    assert_eq!(
        rep.point,
        SwitchPoint {
            outputs: 1,
            sent: vec![1, 0]
        }
    );
    assert_eq!(
        b.reroute(new),
        Some(rep),
        "a repeated command gets the same point"
    );
    assert_eq!(
        b.route(staying, false),
        Verdict::To(0),
        "what stays with a task that gains nothing flows on"
    );
    assert_eq!(b.route(moving, false), Verdict::Hold);
    assert_eq!(b.route_held(moving), None);
    b.decide(1, true);
    assert_eq!(b.route_held(moving), Some(1));
    assert_eq!(b.route(moving, false), Verdict::To(1));
    assert!(!b.undecided());
}

#[test]
fn once_an_output_of_a_moving_group_waits_nothing_overtakes_it_on_its_old_link() {
    // Task 0 loses the moving group. Were the staying output sent to task 0 while the moving
    // one waits, an abort would put the moving one on task 0's link after it; a replay of
    // this attempt routes both by the old map in output order, so the receiver, which
    // dedups by sequence number, would take the replayed moving output for one it has.
    for confirm in [true, false] {
        let (b, new) = (one_task(), grow());
        let (moving, staying) = (group_of(&new.map, 1), group_of(&new.map, 0));
        b.reroute(new);
        assert_eq!(b.route(moving, false), Verdict::Hold);
        assert_eq!(b.route(staying, true), Verdict::Hold, "confirm: {confirm}");
        b.decide(1, confirm);
        let to = if confirm { 1 } else { 0 };
        assert_eq!(b.route_held(moving), Some(to));
        assert_eq!(b.route_held(staying), Some(0));
        assert_eq!(b.route(staying, false), Verdict::To(0));
    }
}

#[test]
fn a_verdict_waits_for_the_held_outputs_to_go_first() {
    let (b, new) = (one_task(), grow());
    let moving = group_of(&new.map, 1);
    b.reroute(new);
    assert_eq!(b.route(moving, false), Verdict::Hold);
    b.decide(1, true);
    // The router still holds an output for task 1: the next one is held too, not sent ahead.
    assert_eq!(b.route(moving, true), Verdict::Hold);
    assert_eq!(b.route_held(moving), Some(1));
    assert_eq!(b.route_held(moving), Some(1));
    assert_eq!(b.route(moving, false), Verdict::To(1));
}

#[test]
fn an_aborted_switch_routes_held_outputs_by_the_old_map() {
    let (b, new) = (one_task(), grow());
    let moving = group_of(&new.map, 1);
    b.reroute(new);
    assert_eq!(b.route(moving, false), Verdict::Hold);
    b.decide(1, false);
    assert_eq!(b.route_held(moving), Some(0));
    assert_eq!(b.route(moving, false), Verdict::To(0));
    assert_eq!(b.last(), None);
}

#[test]
fn a_restarted_attempt_switches_only_past_what_its_predecessors_routed() {
    let first = RouteStep {
        from: 0,
        map: GroupMap::even(1),
    };
    let b = Switchboard::new(vec![first], 2, true);
    let new = grow();
    let moving = group_of(&new.map, 1);
    assert_eq!(
        b.reroute(new.clone()),
        None,
        "deferred: the receivers have not said"
    );
    // The receivers held 3 tuples of link 0 and none of link 1 from earlier attempts.
    b.floor(0, 3);
    b.floor(1, 0);
    assert_eq!(b.last(), None);
    for _ in 0..3 {
        assert_eq!(
            b.route(moving, false),
            Verdict::To(0),
            "replayed as the predecessor did"
        );
    }
    // Caught up: the switch is made at the next output.
    assert_eq!(b.route(moving, false), Verdict::Hold);
    assert_eq!(b.last().map(|r| r.point.outputs), Some(3));
}

#[test]
fn a_restarted_source_switches_only_past_its_predecessors_reach_though_its_receivers_held_less() {
    let first = RouteStep {
        from: 0,
        map: GroupMap::even(1),
    };
    let b = Switchboard::new(vec![first], 2, true).with_reach();
    let new = grow();
    let moving = group_of(&new.map, 1);
    // Its receivers were restarted too: they hold nothing of the predecessors'.
    b.floor(0, 0);
    b.floor(1, 0);
    assert_eq!(
        b.reroute(new.clone()),
        None,
        "deferred: the reach is not read yet"
    );
    assert_eq!(b.route(moving, false), Verdict::To(0));
    // The predecessors may have routed 4 outputs.
    b.reach(4);
    for _ in 0..3 {
        assert_eq!(
            b.route(moving, false),
            Verdict::To(0),
            "as a predecessor may have"
        );
    }
    assert_eq!(b.last(), None);
    assert_eq!(
        b.route(moving, false),
        Verdict::Hold,
        "past the reach: switched"
    );
    assert_eq!(b.last().map(|r| r.point.outputs), Some(4));
}

#[test]
fn a_restarted_source_that_routed_all_it_ever_will_switches_short_of_its_reach() {
    let first = RouteStep {
        from: 0,
        map: GroupMap::even(1),
    };
    let b = Switchboard::new(vec![first], 2, true).with_reach();
    b.floor(0, 0);
    b.floor(1, 0);
    b.reach(100);
    assert_eq!(b.route(0, false), Verdict::To(0));
    assert_eq!(b.reroute(grow()), None);
    // The file ended after one line: nobody routed more.
    b.reach(0);
    assert_eq!(b.last().map(|r| r.point.outputs), Some(1));
}

#[test]
fn an_abort_that_overtakes_its_switch_keeps_the_switch_from_being_made() {
    let (b, new) = (one_task(), grow());
    b.decide(1, false);
    assert_eq!(b.reroute(new), None);
    assert!(
        !b.undecided(),
        "nothing waits for a verdict that came already"
    );
}

#[test]
fn a_replay_switches_at_the_recorded_output() {
    let new = grow();
    let moving = group_of(&new.map, 1);
    let steps = vec![
        RouteStep {
            from: 0,
            map: GroupMap::even(1),
        },
        RouteStep {
            from: 3,
            map: new.map,
        },
    ];
    let b = Switchboard::new(steps, 2, false);
    let routed: Vec<Verdict> = (0..5).map(|_| b.route(moving, false)).collect();
    let (old, moved) = (Verdict::To(0), Verdict::To(1));
    assert_eq!(routed, vec![old, old, old, moved, moved]);
}
