use super::*;

fn note(stage: u32, phase: ScalePhase) -> ScaleNote {
    ScaleNote {
        stage,
        version: 1,
        from: 1,
        to: 3,
        reason: "requested".into(),
        rate: Some(123.456),
        phase,
    }
}

#[test]
fn each_rescale_is_one_entry_that_ends_once_with_its_duration() {
    let mut s = Scaling::default();
    assert_eq!(s.step(&note(1, ScalePhase::Started), 1_000), None);
    assert_eq!(s.step(&note(2, ScalePhase::Started), 1_100), None);
    assert_eq!(s.step(&note(1, ScalePhase::Done), 1_250), Some("done"));
    let gone = ScalePhase::Aborted("a worker died".into());
    assert_eq!(s.step(&note(2, gone), 1_400), Some("aborted"));
    let full = ScalePhase::Refused("no free slot".into());
    assert_eq!(s.step(&note(2, full), 1_500), Some("refused"));
    // An end whose start this leader never saw is not a rescale of its list.
    assert_eq!(s.step(&note(1, ScalePhase::Done), 1_600), None);
    let seen: Vec<_> = s
        .list
        .iter()
        .map(|e| (e.stage, e.outcome.as_str(), e.took_ms, e.cause.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            (1, "done", Some(250), None),
            (2, "aborted", Some(300), Some("a worker died")),
            (2, "refused", None, Some("no free slot")),
        ]
    );
    assert_eq!(s.list[0].rate, Some(123.5));
}

#[test]
fn the_ended_counts_never_fall_as_the_list_drops_its_oldest() {
    let mut s = Scaling::default();
    s.record(&note(1, ScalePhase::Started));
    s.record(&note(1, ScalePhase::Done));
    for _ in 0..KEPT + 5 {
        s.record(&note(1, ScalePhase::Refused("cooling down".into())));
    }
    assert_eq!(s.list.len(), KEPT);
    assert!(s.list.iter().all(|e| e.outcome == "refused"));
    let counts: Vec<_> = s.ended.iter().map(|(k, n)| (*k, *n)).collect();
    assert_eq!(
        counts,
        [((1, "done"), 1), ((1, "refused"), KEPT as u64 + 5)]
    );
    // An open rescale is not counted until it ends.
    s.record(&note(2, ScalePhase::Started));
    assert_eq!(s.ended.len(), 2);
}
