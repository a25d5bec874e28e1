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

/// A restarted leader shows a job's rescales as the last one recorded them (a probe found
/// the list empty after a restart): counted again, and one still under way either stays open
/// for the resumed job to close or, in a job that ended, is aborted.
#[test]
fn a_restored_list_is_counted_again_and_its_open_rescale_kept_or_aborted() {
    let mut s = Scaling::default();
    s.step(&note(1, ScalePhase::Started), 1_000);
    s.step(&note(1, ScalePhase::Done), 1_200);
    s.step(&note(2, ScalePhase::Started), 1_300);
    let running = Scaling::restored(s.list.clone(), true);
    assert_eq!(running.list, s.list);
    assert_eq!(
        running.ended.iter().collect::<Vec<_>>(),
        [(&(1, "done"), &1)]
    );
    let mut resumed = running.clone();
    assert_eq!(
        resumed.step(&note(2, ScalePhase::Done), 1_500),
        Some("done")
    );
    let ended = Scaling::restored(s.list.clone(), false);
    assert_eq!(ended.list[1].outcome, "aborted");
    assert!(ended.list[1]
        .cause
        .as_deref()
        .unwrap()
        .contains("leader restarted"));
    assert_eq!(ended.ended.get(&(2, "aborted")), Some(&1));
}

/// The list goes into the job's durable record and comes back out of it, whether the job is
/// carried on or shown as ended.
#[test]
fn a_job_s_record_carries_its_rescales_across_a_leader_restart() {
    let spec = crate::model::spec::JobSpec::sample(vec![]);
    let mut rec = crate::job::JobRec::detached(spec);
    rec.scaling.record(&note(1, ScalePhase::Started));
    rec.scaling.record(&note(1, ScalePhase::Done));
    let stored = rec.stored(&JobId("job-1".into()));
    assert_eq!(stored.scaling, rec.scaling.list);
    let (events, _) = tokio::sync::mpsc::channel(1);
    let (_, progress) = tokio::sync::watch::channel(Default::default());
    let cancel = tokio_util::sync::CancellationToken::new();
    let resumed = crate::job::JobRec::resumed(&stored, events, cancel, progress);
    assert_eq!(resumed.scaling.list, rec.scaling.list);
    assert_eq!(
        crate::job::JobRec::restored(stored).scaling.list,
        rec.scaling.list
    );
}
