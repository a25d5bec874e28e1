//! Unit tests of `log`.

use super::*;
use crate::model::ids::{JobId, TaskPos};
use crate::seal::SealKey;
use bytes::BytesMut;

fn key() -> TaskKey {
    TaskKey {
        job: JobId("job-1".into()),
        pos: TaskPos { stage: 1, index: 2 },
    }
}

#[test]
fn log_paths_name_their_task_and_nothing_else_does() {
    let k = key();
    for p in [
        segment_path(&k, 3, 7),
        fence_path(&k, 0),
        format!("{}000002-manifest", task_prefix(&k)),
    ] {
        assert_eq!(log_task(&p), Some(k.clone()), "{p}");
    }
    for p in [
        "logs/job-1/1.2",
        "logs/job-1/1.2/",
        "logs/job-1/x",
        "logs/job-1/1.2/a/b",
        "logs/job-1/+1.2/a",
        "logs/job-1/01.2/a",
        "logs//1.2/a",
        "blobs/job-1/1.2/a",
        "in.txt",
    ] {
        assert_eq!(log_task(p), None, "{p}");
    }
}

#[test]
fn segment_round_trip_and_corruption() {
    let recs = vec![
        LogRecord::Batch(BatchRecord {
            from: 0,
            first_seq: 5,
            emit_ns: 1,
            tuples: vec![Tuple::new("k", "v")],
        }),
        LogRecord::Eos {
            from: 1,
            last_seq: 9,
        },
    ];
    let mut body = BytesMut::new();
    for r in &recs {
        encode_record(&mut body, r);
    }
    let seal = SealKey::default();
    let seg = seal_segment(&body, 2, &seal, "s");
    assert_eq!(decode_segment(&seal, "s", seg.clone()).unwrap(), recs);
    let mut bad = seg.to_vec();
    bad[10] ^= 1;
    assert!(decode_segment(&seal, "s", Bytes::from(bad)).is_err());
}

#[test]
fn segment_values_are_the_logged_values_line_by_line_and_corruption_is_refused() {
    let recs = vec![
        LogRecord::Batch(BatchRecord {
            from: 0,
            first_seq: 5,
            emit_ns: 1,
            tuples: vec![
                Tuple::new("k", "v,1"),
                Tuple::new("", ""),
                Tuple::new("x", "é"),
            ],
        }),
        LogRecord::Eos {
            from: 1,
            last_seq: 9,
        },
        LogRecord::Batch(BatchRecord {
            from: 1,
            first_seq: 7,
            emit_ns: 2,
            tuples: vec![Tuple::new("k2", "last")],
        }),
    ];
    let mut body = BytesMut::new();
    for r in &recs {
        encode_record(&mut body, r);
    }
    let seal = SealKey::default();
    let seg = seal_segment(&body, 3, &seal, "s");
    let mut out = BytesMut::new();
    segment_values(&seal, "s", &seg, &mut out).unwrap();
    assert_eq!(&out[..], "v,1\n\né\nlast\n".as_bytes());
    for cut in [seg.len() - 1, 11, 3] {
        assert!(segment_values(&seal, "s", &seg[..cut], &mut BytesMut::new()).is_err());
    }
    let mut bad = seg.to_vec();
    bad[14] ^= 1;
    assert!(segment_values(&seal, "s", &bad, &mut BytesMut::new()).is_err());
}

#[tokio::test]
async fn a_successor_fences_every_earlier_attempt_before_listing() {
    let store = Store::memory();
    let k = key();
    assert!(!fenced(&store, &k, 0).await.unwrap());
    recover_lineage(&store, &k, 0).await.unwrap();
    assert!(
        !fenced(&store, &k, 0).await.unwrap(),
        "attempt 0 fences nobody"
    );
    recover_lineage(&store, &k, 3).await.unwrap();
    for a in 0..3 {
        assert!(
            fenced(&store, &k, a).await.unwrap(),
            "attempt {a} not fenced"
        );
    }
    assert!(!fenced(&store, &k, 3).await.unwrap());
}

#[tokio::test]
async fn lineage_excludes_stale_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(dir.path()).unwrap();
    let k = key();
    store
        .put(
            &segment_path(&k, 0, 0),
            empty(&store, &segment_path(&k, 0, 0)),
        )
        .await
        .unwrap();
    store
        .put(
            &segment_path(&k, 0, 1),
            empty(&store, &segment_path(&k, 0, 1)),
        )
        .await
        .unwrap();
    // Attempt 1 takes over from attempt 0.
    let l1 = recover_lineage(&store, &k, 1).await.unwrap();
    assert_eq!(l1.len(), 2);
    // The stale attempt 0 writes once more; attempt 1 writes its own segment.
    store
        .put(
            &segment_path(&k, 0, 2),
            empty(&store, &segment_path(&k, 0, 2)),
        )
        .await
        .unwrap();
    store
        .put(
            &segment_path(&k, 1, 0),
            empty(&store, &segment_path(&k, 1, 0)),
        )
        .await
        .unwrap();
    let l2 = recover_lineage(&store, &k, 2).await.unwrap();
    assert_eq!(l2.len(), 3);
    assert!(l2.iter().all(|p| !p.ends_with("000000-0000000002.seg")));
    assert!(l2[2].ends_with("000001-0000000000.seg"));
}

#[tokio::test]
async fn a_lineage_started_afresh_fences_its_predecessors_and_holds_none_of_their_segments() {
    let store = Store::memory();
    let k = key();
    for (attempt, n) in [(0, 0), (0, 1), (1, 0)] {
        store
            .put(
                &segment_path(&k, attempt, n),
                empty(&store, &segment_path(&k, attempt, n)),
            )
            .await
            .unwrap();
    }
    start_lineage_afresh(&store, &k, 2).await.unwrap();
    assert!(fenced(&store, &k, 0).await.unwrap() && fenced(&store, &k, 1).await.unwrap());
    assert!(lineage_of(&store, &k, 2).await.unwrap().is_empty());
    assert_eq!(committed_lineage(&store, &k).await.unwrap(), Some(vec![]));
    // What it writes from then on is its whole lineage, and a successor that recovers
    // (rather than starting afresh) takes exactly that.
    store
        .put(
            &segment_path(&k, 2, 0),
            empty(&store, &segment_path(&k, 2, 0)),
        )
        .await
        .unwrap();
    let l3 = recover_lineage(&store, &k, 3).await.unwrap();
    assert_eq!(l3, vec![segment_path(&k, 2, 0)]);
}

#[tokio::test]
async fn a_readers_committed_lineage_only_grows_and_waits_out_a_takeover() {
    let store = Store::memory();
    let k = key();
    assert_eq!(committed_lineage(&store, &k).await.unwrap(), Some(vec![]));
    store
        .put(
            &segment_path(&k, 0, 0),
            empty(&store, &segment_path(&k, 0, 0)),
        )
        .await
        .unwrap();
    let first = committed_lineage(&store, &k).await.unwrap().unwrap();
    assert_eq!(first, vec![segment_path(&k, 0, 0)]);
    // Attempt 1 fences attempt 0 but has not recorded its manifest yet: no answer.
    store.put(&fence_path(&k, 0), Bytes::new()).await.unwrap();
    assert_eq!(committed_lineage(&store, &k).await.unwrap(), None);
    // The successor records its manifest; a late write of the fenced attempt is in
    // nobody's history, and what a reader sees next extends what it saw before.
    let l1 = recover_lineage(&store, &k, 1).await.unwrap();
    store
        .put(
            &segment_path(&k, 0, 1),
            empty(&store, &segment_path(&k, 0, 1)),
        )
        .await
        .unwrap();
    store
        .put(
            &segment_path(&k, 1, 0),
            empty(&store, &segment_path(&k, 1, 0)),
        )
        .await
        .unwrap();
    let next = committed_lineage(&store, &k).await.unwrap().unwrap();
    assert!(
        next.starts_with(&first),
        "{next:?} does not extend {first:?}"
    );
    assert_eq!(next[..l1.len()], l1[..]);
    assert_eq!(next[l1.len()..], [segment_path(&k, 1, 0)]);
    assert!(!next.contains(&segment_path(&k, 0, 1)));
    assert_eq!(lineage_of(&store, &k, 1).await.unwrap(), next);
}

/// A store that fails a few writes in a row while a successor fences its predecessors and
/// records its manifest costs nothing: the writes are retried (simulation seed 17755 of
/// 20,000 failed a job after 21 restarts of its sink, each killed by one failed fence write).
#[tokio::test(start_paused = true)]
async fn recovery_writes_are_retried_through_a_short_store_outage() {
    let faulty = std::sync::Arc::new(crate::store::faulty::FaultyStore::default());
    let store = Store::objects(faulty.clone(), "faulty");
    let k = key();
    faulty
        .fail_puts
        .store(WRITE_TRIES - 1, std::sync::atomic::Ordering::Relaxed);
    let lineage = recover_lineage(&store, &k, 2).await.unwrap();
    assert!(lineage.is_empty());
    for a in 0..2 {
        assert!(fenced(&store, &k, a).await.unwrap(), "attempt {a} fenced");
    }
    // A longer outage still fails the attempt, with the store's error.
    faulty
        .fail_puts
        .store(WRITE_TRIES, std::sync::atomic::Ordering::Relaxed);
    assert!(recover_lineage(&store, &k, 5).await.is_err());
}

/// A segment of one batch record whose single tuple's value is `v`.
/// A segment of no records, sealed for `path` in `store`.
fn empty(store: &Store, path: &str) -> Bytes {
    seal_segment(&[], 0, store.seal(), path)
}

fn one(path: &str, v: &str) -> Bytes {
    sealed(&SealKey::default(), path, v)
}

/// A segment of one record holding `v`, sealed with `seal` for `path`.
fn sealed(seal: &SealKey, path: &str, v: &str) -> Bytes {
    let mut body = BytesMut::new();
    encode_record(
        &mut body,
        &LogRecord::Batch(BatchRecord {
            from: 0,
            first_seq: 1,
            emit_ns: 0,
            tuples: vec![Tuple::new("k", v)],
        }),
    );
    seal_segment(&body, 1, seal, path)
}

/// Writes slots `from..to` of attempt `a`, slot `n` holding the value `"<a>.<n>"`.
async fn write_slots(store: &Store, k: &TaskKey, a: u32, from: u64, to: u64) {
    for n in from..to {
        store
            .put(
                &segment_path(k, a, n),
                one(&segment_path(k, a, n), &format!("{a}.{n}")),
            )
            .await
            .unwrap();
    }
}

/// The values of a lineage's records, read object by object.
async fn values(store: &Store, lineage: &[String]) -> Vec<String> {
    let mut out = BytesMut::new();
    for p in lineage {
        segment_values(store.seal(), p, &store.get(p).await.unwrap(), &mut out).unwrap();
    }
    String::from_utf8(out.to_vec())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn expected(a: u32, slots: std::ops::Range<u64>) -> Vec<String> {
    slots.map(|n| format!("{a}.{n}")).collect()
}

#[tokio::test]
async fn a_lineage_compacted_midway_reads_the_same_records_in_the_same_order() {
    let store = Store::memory();
    let k = key();
    write_slots(&store, &k, 0, 0, 10).await;
    let before = committed_lineage(&store, &k).await.unwrap().unwrap();
    assert_eq!(before.len(), 10);
    // Merge slots 2..=5, then 0..=1 with them (a merge of a merge is flattened).
    let run: Vec<_> = before[2..6].iter().map(|p| (p.clone(), None)).collect();
    let done = compact::compact_run(&store, &k, 0, &run).await.unwrap();
    let compact::Compacted::Merged { path, .. } = done else {
        panic!("{done:?}")
    };
    assert_eq!(compact::span(&path), Some((0, 2, 5)));
    let mid = committed_lineage(&store, &k).await.unwrap().unwrap();
    assert_eq!(mid.len(), 7);
    assert_eq!(values(&store, &mid).await, expected(0, 0..10));
    let run: Vec<_> = mid[..3].iter().map(|p| (p.clone(), None)).collect();
    compact::compact_run(&store, &k, 0, &run).await.unwrap();
    let after = committed_lineage(&store, &k).await.unwrap().unwrap();
    assert_eq!(after.len(), 5);
    assert_eq!(compact::span(&after[0]), Some((0, 0, 5)));
    assert_eq!(values(&store, &after).await, expected(0, 0..10));
    for p in &before[..6] {
        assert!(!store.exists(p).await.unwrap(), "{p} was replaced");
    }
    // Slots count the same in every lineage: slot 7 is the second object after the merge.
    assert_eq!(compact::from_slot(&after, 7)[0], (before[7].clone(), 0));
    assert_eq!(compact::from_slot(&after, 3)[0], (after[0].clone(), 3));
    // A successor recovers the compacted lineage, then merges its own slots the same way.
    let l1 = recover_lineage(&store, &k, 1).await.unwrap();
    assert_eq!(l1, after);
    write_slots(&store, &k, 1, 0, 3).await;
    let own: Vec<_> = (0..2).map(|n| (segment_path(&k, 1, n), None)).collect();
    compact::compact_run(&store, &k, 1, &own).await.unwrap();
    let l2 = recover_lineage(&store, &k, 2).await.unwrap();
    let mut want = expected(0, 0..10);
    want.extend(expected(1, 0..3));
    assert_eq!(values(&store, &l2).await, want);
}

/// A reader that lists, then reads after a compaction removed what it listed, lists again and
/// goes on from the slot it reached: every record once, in order.
#[tokio::test]
async fn a_reader_overtaken_by_a_compaction_reads_every_record_once() {
    let store = Store::memory();
    let k = key();
    write_slots(&store, &k, 0, 0, 8).await;
    let mut lineage = committed_lineage(&store, &k).await.unwrap().unwrap();
    let (mut slot, mut got, mut compacted) = (0u64, Vec::new(), false);
    'read: loop {
        for (path, skip) in compact::from_slot(&lineage, slot) {
            if slot == 3 && !compacted {
                // Between the listing and this read: slots 0..=5 become one object.
                let run: Vec<_> = (0..6).map(|n| (segment_path(&k, 0, n), None)).collect();
                compact::compact_run(&store, &k, 0, &run).await.unwrap();
                compacted = true;
            }
            let Some(segs) = compact::read_object(&store, &path).await.unwrap() else {
                lineage = committed_lineage(&store, &k).await.unwrap().unwrap();
                continue 'read;
            };
            for (sealed_for, seg) in segs.into_iter().skip(skip) {
                for rec in decode_segment(store.seal(), &sealed_for, seg).unwrap() {
                    let LogRecord::Batch(b) = rec else { continue };
                    got.extend(b.tuples.into_iter().map(|t| t.value));
                }
                slot += 1;
            }
        }
        break;
    }
    assert!(compacted);
    assert_eq!(lineage.len(), 3, "{lineage:?}");
    assert_eq!(got, expected(0, 0..8));
}

/// A listing that missed a merged object written while it ran, but not the deletes that
/// followed, has a gap: the cover refuses it rather than skip the missing slots.
#[test]
fn a_cover_with_a_gap_is_refused_and_nested_objects_are_taken_once() {
    let k = key();
    let p = task_prefix(&k);
    let s = |n| segment_path(&k, 0, n);
    let m = |f, l| compact::merged_name(&p, 0, f, l);
    let listed = vec![
        m(0, 3),
        s(0),
        s(1),
        m(0, 1),
        s(4),
        s(5),
        segment_path(&k, 1, 0),
    ];
    let got = compact::cover(&listed, 0).unwrap();
    assert_eq!(got, vec![m(0, 3), s(4), s(5)]);
    assert!(compact::cover(&[s(0), s(3)], 0).is_err());
    assert!(compact::cover(&[m(1, 2)], 0).is_err());
    assert_eq!(compact::cover(&[], 0).unwrap(), Vec::<String>::new());
}

/// A fenced attempt's compaction changes nothing a successor sees: it deletes nothing, and
/// its merged object, written after the fence, is in no successor's lineage.
#[tokio::test]
async fn a_fenced_attempts_compaction_is_refused_and_ignored() {
    let store = Store::memory();
    let k = key();
    write_slots(&store, &k, 0, 0, 4).await;
    let l1 = recover_lineage(&store, &k, 1).await.unwrap();
    assert_eq!(l1.len(), 4);
    let run: Vec<_> = l1.iter().map(|p| (p.clone(), None)).collect();
    let done = compact::compact_run(&store, &k, 0, &run).await.unwrap();
    assert_eq!(done, compact::Compacted::Fenced);
    for p in &l1 {
        assert!(store.exists(p).await.unwrap(), "{p} deleted by a zombie");
    }
    write_slots(&store, &k, 1, 0, 1).await;
    let next = committed_lineage(&store, &k).await.unwrap().unwrap();
    assert_eq!(next[..4], l1[..]);
    assert_eq!(values(&store, &next).await.len(), 5);
    assert_eq!(recover_lineage(&store, &k, 2).await.unwrap(), next);
}

#[test]
fn merged_objects_are_checked_and_names_parse() {
    let k = key();
    let p = task_prefix(&k);
    let parts: Vec<_> = (4..7)
        .map(|n| {
            let path = segment_path(&k, 0, n);
            (path.clone(), one(&path, &n.to_string()))
        })
        .collect();
    let merged = compact::merge(&parts).unwrap();
    let name = compact::merged_name(&p, 0, 4, 6);
    assert_eq!(
        compact::segments_of(&name, merged.clone()).unwrap().len(),
        3
    );
    // Each segment of a merged object is checked against the slot it holds.
    let seal = SealKey::default();
    assert_eq!(
        decode_segment(&seal, &name, merged.clone()).unwrap().len(),
        3
    );
    let shifted = compact::merged_name(&p, 0, 5, 7);
    assert!(matches!(
        decode_segment(&seal, &shifted, merged.clone()),
        Err(LogError::Unsealed(_))
    ));
    // The name says how many segments it holds.
    let wrong = compact::merged_name(&p, 0, 4, 7);
    assert!(compact::segments_of(&wrong, merged.clone()).is_err());
    for cut in [merged.len() - 1, 9, 5] {
        assert!(
            compact::segments_of(&name, merged.slice(..cut)).is_err(),
            "cut {cut}"
        );
    }
    let mut bad = merged.to_vec();
    let at = bad.len() - 3;
    bad[at] ^= 1;
    assert!(decode_segment(&seal, &name, Bytes::from(bad)).is_err());
    assert_eq!(compact::span(&segment_path(&k, 3, 9)), Some((3, 9, 9)));
    assert_eq!(compact::span(&name), Some((0, 4, 6)));
    assert_eq!(compact::span(&fence_path(&k, 1)), None);
    assert_eq!(compact::span(&format!("{p}000001-manifest")), None);
    assert_eq!(
        compact::span(&format!("{p}000001-0000000005-0000000002.seg")),
        None
    );
    assert!(log_task(&name).is_some());
    // The same slots, whichever objects hold them (the sink's spool against its lineage).
    let s: Vec<String> = (4..7).map(|n| segment_path(&k, 0, n)).collect();
    assert!(compact::same_slots(&s, std::slice::from_ref(&name)));
    assert!(compact::same_slots(
        &s,
        &[compact::merged_name(&p, 0, 4, 5), s[2].clone()]
    ));
    assert!(!compact::same_slots(&s, &s[..2]));
    assert!(!compact::same_slots(
        &s,
        &[compact::merged_name(&p, 1, 4, 6)]
    ));
}

/// A log whose middle object was deleted from the store says which slots are gone, not that a
/// segment (named by the log's folder) is "corrupt".
#[tokio::test(start_paused = true)]
async fn a_log_missing_objects_says_which_slots_are_gone() {
    let store = Store::memory();
    let k = key();
    for n in 0..4 {
        store
            .put(
                &segment_path(&k, 0, n),
                empty(&store, &segment_path(&k, 0, n)),
            )
            .await
            .unwrap();
    }
    store.delete(&segment_path(&k, 0, 1)).await.unwrap();
    store.delete(&segment_path(&k, 0, 2)).await.unwrap();
    let err = recover_lineage(&store, &k, 1).await.unwrap_err();
    assert!(
        matches!(err, LogError::Missing { from: 1, to: 3, .. }),
        "{err:?}"
    );
    let shown = err.to_string();
    assert!(shown.contains("slots 1 to 2"), "{shown}");
    assert!(shown.contains(&task_prefix(&k)), "{shown}");
}

/// A store that does not answer (the leader's, with the leader restarting) is waited for up
/// to `WRITE_PATIENCE`, far past the tries one that answers with an error gets: a leader
/// restart failed every logged task of its cluster when both had eight tries.
#[tokio::test(start_paused = true)]
async fn a_write_waits_out_a_store_that_does_not_answer_and_not_one_that_refuses() {
    let unanswered =
        || LogError::Store(StoreError::Unreachable("PUT x: connection refused".into()));
    let mut n = 0;
    let started = tokio::time::Instant::now();
    let res = retrying("x", "test write", || {
        n += 1;
        let fail = n <= 15;
        async move {
            if fail {
                Err(unanswered())
            } else {
                Ok(())
            }
        }
    })
    .await;
    assert!(res.is_ok(), "{res:?}");
    assert!(started.elapsed() > std::time::Duration::from_secs(10));
    // Never answering: given up after its patience.
    let started = tokio::time::Instant::now();
    let res: Result<(), _> = retrying("x", "test write", || async { Err(unanswered()) }).await;
    assert!(res.is_err());
    assert!(started.elapsed() >= WRITE_PATIENCE);
    // A store that answers with an error (a full disk): its tries, as before.
    let mut n = 0;
    let res: Result<(), _> = retrying("x", "test write", || {
        n += 1;
        async {
            Err(LogError::Store(StoreError::Http(
                "PUT x: 500: no space".into(),
            )))
        }
    })
    .await;
    assert!(res.is_err());
    assert_eq!(n, WRITE_TRIES);
}

/// Someone who can write to the bucket but does not hold the cluster secret cannot change
/// what a task replays (a hostile probe copied another task's valid segment over a sink's, and
/// it was replayed as the sink's own): a segment is sealed for the path it was written to, and
/// a manifest for its own path, listing only its own task's objects.
#[tokio::test]
async fn a_log_refuses_what_was_not_sealed_for_where_it_lies() {
    let secret = crate::protocol::auth::Secret::new("a cluster secret of some length").unwrap();
    let store = Store::memory().with_seal(SealKey::from_secret(Some(&secret)));
    let seal = store.seal().clone();
    let k = key();
    let other = TaskKey {
        pos: TaskPos { stage: 1, index: 3 },
        ..key()
    };
    let unsealed = |r: Result<Vec<LogRecord>, LogError>| matches!(r, Err(LogError::Unsealed(_)));
    // This task's slot 0, then another task's valid segment copied over this task's slot 1.
    let (mine, theirs) = (segment_path(&k, 0, 0), segment_path(&other, 0, 0));
    store
        .put(&mine, sealed(&seal, &mine, "mine"))
        .await
        .unwrap();
    let copied = sealed(&seal, &theirs, "theirs");
    store
        .put(&segment_path(&k, 0, 1), copied.clone())
        .await
        .unwrap();
    let lineage = recover_lineage(&store, &k, 1).await.unwrap();
    assert_eq!(lineage, [mine.clone(), segment_path(&k, 0, 1)]);
    let read = |p: String| {
        let store = store.clone();
        async move { store.get(&p).await.unwrap() }
    };
    assert_eq!(
        decode_segment(&seal, &mine, read(mine.clone()).await)
            .unwrap()
            .len(),
        1
    );
    assert!(unsealed(decode_segment(&seal, &lineage[1], copied.clone())));
    let mut text = BytesMut::new();
    let refused = segment_values(&seal, &lineage[1], &copied, &mut text);
    assert!(matches!(refused, Err(LogError::Unsealed(_))) && text.is_empty());
    // Its own slot 0 copied to slot 2: the slot is part of what is sealed.
    assert!(unsealed(decode_segment(
        &seal,
        &segment_path(&k, 0, 2),
        read(mine.clone()).await
    )));
    // Made with another secret, or with none (the key of a cluster without one).
    let stranger = SealKey::from_secret(Some(
        &crate::protocol::auth::Secret::new("another secret of some length").unwrap(),
    ));
    for key in [stranger.clone(), SealKey::default()] {
        assert!(unsealed(decode_segment(
            &seal,
            &mine,
            sealed(&key, &mine, "forged")
        )));
    }
    // A manifest made up without the key is refused, and so is a sealed one that lists
    // another task's objects.
    let forged = manifest::seal(
        &stranger,
        &manifest_path(&k, 1),
        std::slice::from_ref(&theirs),
    )
    .unwrap();
    store.put(&manifest_path(&k, 1), forged).await.unwrap();
    let refused = recover_lineage(&store, &k, 2).await;
    assert!(matches!(refused, Err(LogError::Unsealed(_))), "{refused:?}");
    let foreign =
        manifest::seal(&seal, &manifest_path(&k, 1), std::slice::from_ref(&theirs)).unwrap();
    store.put(&manifest_path(&k, 1), foreign).await.unwrap();
    let refused = recover_lineage(&store, &k, 2).await;
    assert!(matches!(refused, Err(LogError::Corrupt(_))), "{refused:?}");
    // A manifest of its own objects, sealed with the key, is read.
    let own = manifest::seal(&seal, &manifest_path(&k, 1), std::slice::from_ref(&mine)).unwrap();
    store.put(&manifest_path(&k, 1), own).await.unwrap();
    assert_eq!(recover_lineage(&store, &k, 2).await.unwrap(), [mine]);
}
