//! An output is whole or absent. An upload through the leader's store API (how a worker
//! without a store of its own writes) that breaks at any byte commits nothing; and cancelling
//! a job while its sink uploads the output never leaves a truncated file: whatever moment the
//! cancel comes, the job's output is exactly the lines it committed.

mod common;
use common::*;
use std::path::Path;
use std::time::Duration;

/// A body of `data` in chunks of random sizes that breaks after `cut` bytes (an error where
/// the rest should be), as a sink's upload does when a segment it reads has gone.
fn cut_body(
    data: &[u8],
    cut: usize,
    rng: &mut Rng,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    let mut items = Vec::new();
    let mut at = 0;
    while at < cut {
        let n = (1 + rng.below(64 << 10) as usize).min(cut - at);
        items.push(Ok(bytes::Bytes::copy_from_slice(&data[at..at + n])));
        at += n;
    }
    items.push(Err(std::io::Error::other(
        "a segment of the output has gone",
    )));
    futures::stream::iter(items)
}

/// Hidden temporary files left anywhere under `dir`.
fn temporaries(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                todo.push(e.path());
            } else if e.file_name().to_string_lossy().starts_with(".tmp") {
                found.push(e.path());
            }
        }
    }
    found
}

/// The cause of the war story above, on its own: an upload through the leader's store API
/// (`Store::Http`, how a worker without a store of its own writes) whose body breaks at a
/// random byte — anywhere from before the first byte to after the last — fails, and the
/// leader commits nothing: a new object stays absent, an existing one keeps its whole
/// previous content, and no temporary file is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_through_the_leader_cut_at_any_byte_commits_nothing() {
    use rainstorm::runtime::store::{Store, StoreError};
    let dir = tempfile::tempdir().unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", http.local_addr().unwrap());
    // No cluster secret (loopback only): the workers' store takes any task's log objects.
    let cfg = rainstorm::leader::LeaderConfig {
        data_dir: dir.path().join("leader"),
        ..Default::default()
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let leader = tokio::spawn(rainstorm::leader::run(cfg, http, stop.clone()));
    let remote = Store::http(&url);
    let store_dir = dir.path().join("leader/store");
    let mut rng = Rng::new(7);
    let len = 300 << 10;
    let old: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let new: Vec<u8> = (0..len).map(|i| (i % 241) as u8 ^ 0x55).collect();
    let mut cuts = vec![0, 1, len - 1, len];
    cuts.extend((0..8).map(|_| rng.below(len as u64) as usize));
    for (i, cut) in cuts.into_iter().enumerate() {
        let fresh = format!("logs/job-1/1.0/{i:06}-0000000000.seg");
        let kept = format!("logs/job-1/1.0/{i:06}-0000000001.seg");
        let whole =
            futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(old.clone()))]);
        assert_eq!(remote.put_stream(&kept, whole).await.unwrap(), len as u64);
        for path in [&fresh, &kept] {
            let err = remote
                .put_stream(path, cut_body(&new, cut, &mut rng))
                .await
                .expect_err("an upload whose body broke must fail");
            assert!(
                err.to_string().contains("upload broke"),
                "cut at {cut}: {err}"
            );
        }
        assert!(
            matches!(remote.get(&fresh).await, Err(StoreError::NotFound(_))),
            "cut at {cut}: a broken upload of a new object left one"
        );
        let now = remote.get(&kept).await.unwrap();
        assert!(
            now[..] == old[..],
            "cut at {cut}: the object is no longer its whole previous content ({} bytes)",
            now.len()
        );
    }
    // The leader removes what it had received of each broken upload.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !temporaries(&store_dir).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "temporary files left: {:?}",
            temporaries(&store_dir)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    leader.await.unwrap().unwrap();
}
