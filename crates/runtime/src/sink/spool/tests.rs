//! Unit tests of the spool.
use super::*;
use crate::model::ids::{JobId, TaskPos};
use crate::seal::SealKey;
use futures::StreamExt;

fn segment(path: &str, values: &[&str]) -> Bytes {
    crate::test_log::segment(&SealKey::default(), path, "k", values)
}

fn key() -> TaskKey {
    TaskKey {
        job: JobId("job-1/../x".into()),
        pos: TaskPos { stage: 3, index: 0 },
    }
}

async fn text(spool: &Spool, lineage: &[String]) -> Option<String> {
    let mut body = spool.body_if(lineage).await?;
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    Some(String::from_utf8(out).unwrap())
}

#[tokio::test]
async fn the_spool_is_the_output_only_for_exactly_its_lineage_and_goes_with_its_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::create(dir.path(), &key(), 2, true).await.unwrap();
    let path = spool.path.clone();
    assert!(path.starts_with(dir.path().join("spool")), "{path:?}");
    spool.append("s/1", &segment("s/1", &["a", "b"])).await;
    spool.append("s/2", &segment("s/2", &["c"])).await;
    let lineage = ["s/1".to_string(), "s/2".to_string()];
    assert_eq!(text(&spool, &lineage).await.as_deref(), Some("a\nb\nc\n"));
    // Anything but exactly its segments, in order: not used.
    assert!(spool.body_if(&lineage[..1]).await.is_none());
    let other = ["s/1".to_string(), "s/3".to_string()];
    assert!(spool.body_if(&other).await.is_none());
    // A segment that does not decode leaves the spool unused from then on.
    spool.append("s/3", &Bytes::from_static(b"junk")).await;
    let three = ["s/1".to_string(), "s/2".to_string(), "s/3".to_string()];
    assert!(spool.body_if(&three).await.is_none());
    assert!(spool.body_if(&lineage).await.is_none());
    drop(spool);
    assert!(!path.exists(), "the spool goes with its attempt");
}

/// A lineage with fewer slots than the spool took in has lost its newest commits; the
/// same slots merged, or a spool that took in less, are not a loss.
#[tokio::test]
async fn a_lineage_short_of_the_spool_s_commits_is_a_loss() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::create(dir.path(), &key(), 0, true).await.unwrap();
    let names: Vec<String> = (0..3).map(|n| format!("l/000000-{n:010}.seg")).collect();
    for n in &names {
        spool.append(n, &segment(n, &["x"])).await;
    }
    assert_eq!(spool.lost(&names).await, None);
    assert_eq!(spool.lost(&names[..2]).await, Some((3, 2)));
    let merged = [
        "l/000000-0000000000-0000000001.seg".to_string(),
        names[2].clone(),
    ];
    assert_eq!(spool.lost(&merged).await, None);
    assert_eq!(spool.lost(&merged[..1]).await, Some((3, 2)));
}

#[tokio::test]
async fn a_spool_of_exactly_its_lineage_becomes_the_output_by_one_rename() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::create(dir.path(), &key(), 0, true).await.unwrap();
    spool.append("s/1", &segment("s/1", &["a", "b"])).await;
    spool.append("s/2", &segment("s/2", &["c"])).await;
    let lineage = ["s/1".to_string(), "s/2".to_string()];
    let target = dir.path().join("out/o.txt");
    // Not its lineage: nothing moves, nothing is written.
    assert!(spool.move_if(&lineage[..1], &target).await.is_none());
    assert!(!target.exists());
    let moved = spool.move_if(&lineage, &target).await.unwrap().unwrap();
    assert_eq!(moved, 6);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "a\nb\nc\n");
    assert!(!spool.path.exists(), "moved, not copied");
    // It is the output now: the spool gives nothing more, and its end leaves the output.
    assert!(spool.body_if(&lineage).await.is_none());
    assert!(spool.move_if(&lineage, &target).await.is_none());
    drop(spool);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "a\nb\nc\n");
    // A later spool replaces that output as one step (never a moment without it), with the
    // mode its owner gave it, and the replaced file goes when the spool does.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
    let spool = Spool::create(dir.path(), &key(), 1, true).await.unwrap();
    spool.append("s/1", &segment("s/1", &["d"])).await;
    let path = spool.path.clone();
    let moved = spool
        .move_if(&lineage[..1], &target)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(moved, 2);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "d\n");
    let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    drop(spool);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the replaced output stayed"
        );
        tokio::task::yield_now().await;
    }
}

/// Spools left by processes that no longer run go when a worker starts on the data dir (one
/// stayed per worker killed while it ran a sink); a live process's spool and anything else
/// in the directory stay.
#[tokio::test]
async fn spools_left_by_dead_processes_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mine = Spool::create(dir.path(), &key(), 0, false).await.unwrap();
    let spools = dir.path().join("spool");
    // No process has this id (above any pid_max).
    let dead = spools.join("job-1-abc-3-0-2-999999999-0.txt");
    let other = spools.join("notes.txt");
    std::fs::write(&dead, "a committed line\n").unwrap();
    std::fs::write(&other, "not a spool\n").unwrap();
    assert_eq!(remove_orphans(dir.path()), 1);
    assert!(!dead.exists());
    assert!(other.exists());
    assert!(mine.path.exists(), "this process's spool stays");
    assert_eq!(remove_orphans(dir.path()), 0);
    assert_eq!(remove_orphans(&dir.path().join("none")), 0);
}
