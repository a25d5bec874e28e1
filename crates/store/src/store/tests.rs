//! The store's rules over a store in memory: string-prefix listings, subtree deletes, and
//! injected write failures (the fault-injecting store the simulation uses).

use super::faulty::FaultyStore;
use super::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[tokio::test]
async fn injected_put_failures_are_counted_down_then_puts_succeed() {
    let faulty = Arc::new(FaultyStore::default());
    let store = Store::objects(faulty.clone(), "faulty");
    faulty.fail_puts.store(2, Ordering::Relaxed);
    for _ in 0..2 {
        let e = store.put("logs/a", Bytes::from_static(b"x")).await;
        assert!(matches!(e, Err(StoreError::Object { .. })), "{e:?}");
    }
    assert!(!store.exists("logs/a").await.unwrap());
    store.put("logs/a", Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(faulty.fail_puts.load(Ordering::Relaxed), 0);
    // A streamed put is subject to the same injection.
    faulty.fail_puts.store(1, Ordering::Relaxed);
    let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"yy"))]);
    assert!(store.put_stream("logs/b", body).await.is_err());
    assert!(!store.exists("logs/b").await.unwrap());
}

#[tokio::test]
async fn a_bulk_delete_removes_what_it_names_skips_what_is_gone_and_checks_every_path_first() {
    let (dir, scratch) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for store in [
        Store::memory(),
        Store::local(dir.path()).unwrap(),
        // The embedded run's store, written without fsync, behaves the same.
        Store::local_scratch(scratch.path()).unwrap(),
    ] {
        for p in ["logs/j/1.0/a.seg", "logs/j/1.0/b.seg", "logs/j/1.0/c.seg"] {
            store.put(p, Bytes::from_static(b"z")).await.unwrap();
        }
        // A path outside the store deletes nothing, not even the valid ones before it.
        let bad = ["logs/j/1.0/a.seg".to_string(), "../escape".to_string()];
        assert!(store.delete_many(&bad).await.is_err());
        assert!(store.exists("logs/j/1.0/a.seg").await.unwrap());
        let some = [
            "logs/j/1.0/a.seg",
            "logs/j/1.0/gone.seg",
            "logs/j/1.0/c.seg",
        ];
        let some: Vec<String> = some.iter().map(|p| p.to_string()).collect();
        store.delete_many(&some).await.unwrap();
        let left: Vec<String> = store
            .list("logs/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.path)
            .collect();
        assert_eq!(left, ["logs/j/1.0/b.seg"]);
        store.delete_many(&[]).await.unwrap();
    }
}

#[tokio::test]
async fn memory_lists_by_string_prefix_and_deletes_a_subtree() {
    let store = Store::memory();
    for p in ["a/1", "a/2", "ab", "a"] {
        store.put(p, Bytes::from_static(b"z")).await.unwrap();
    }
    let names: Vec<_> = store.list("a").await.unwrap();
    let names: Vec<_> = names.into_iter().map(|o| o.path).collect();
    assert_eq!(names, ["a", "a/1", "a/2", "ab"]);
    let (removed, err) = store.delete_report("a").await;
    assert!(err.is_none());
    assert_eq!(removed, ["a", "a/1", "a/2"]);
    assert_eq!(store.list("").await.unwrap().len(), 1);
    assert_eq!(store.size("ab").await.unwrap(), 1);
    assert!(matches!(
        store.get("a/1").await,
        Err(StoreError::NotFound(_))
    ));
}

/// A name with a control character was stored, and then every listing of its folder failed
/// (so did every submit reading a file beside it) until someone removed the file by hand: the
/// object store cannot list such a name back.
#[tokio::test]
async fn a_name_with_a_control_character_is_refused() {
    for bad in ["bad\tname", "a/b\nc", "cr\r", "del\u{7f}", "nul\0"] {
        let e = clean_path(bad);
        assert!(
            matches!(e, Err(StoreError::BadByte { .. })),
            "{bad:?}: {e:?}"
        );
        assert!(clean_prefix(bad).is_err(), "{bad:?}");
    }
    // Too long for a file system or S3: refused as such, not a store failure.
    for long in [
        "a".repeat(256),
        format!("{}/b", "a".repeat(256)),
        "ab/".repeat(342),
    ] {
        assert!(
            matches!(clean_path(&long), Err(StoreError::BadByte { .. })),
            "{}",
            long.len()
        );
    }
    assert!(clean_path(&"a".repeat(255)).is_ok());
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(dir.path()).unwrap();
    store
        .put("d/in.txt", Bytes::from_static(b"1\n"))
        .await
        .unwrap();
    assert!(store
        .put("d/bad\tname", Bytes::from_static(b"x"))
        .await
        .is_err());
    let names: Vec<String> = store
        .list("d/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.path)
        .collect();
    assert_eq!(names, ["d/in.txt"]);
}

#[test]
fn store_paths_and_prefixes_stay_inside_the_store() {
    assert!(clean_path("../etc/passwd").is_err());
    assert!(clean_path("a/../../b").is_err());
    assert!(clean_path("").is_err());
    assert_eq!(clean_path("/x/./y").unwrap(), "x/y");
    for p in [
        "../",
        "../../etc/",
        "a/../../",
        "./..",
        "a/./b",
        "a//b",
        "a\\b",
    ] {
        assert!(clean_prefix(p).is_err(), "{p}");
    }
    assert_eq!(clean_prefix("").unwrap(), "");
    assert_eq!(clean_prefix("/logs/job-1/").unwrap(), "logs/job-1/");
}

#[test]
fn blob_paths_pin_content_hashes() {
    assert_eq!(
        pinned_hash(&blob_path(&sha256_hex(b"x"))).map(str::len),
        Some(64)
    );
    assert_eq!(pinned_hash("blobs/sha256/xyz"), None);
    assert_eq!(pinned_hash(&blob_path(&"A".repeat(64))), None);
}

/// A store reached through the leader sized a source with a GET of the whole object (the
/// source's worker held a 1.3 GB source in memory at once). Now it asks with a HEAD.
#[tokio::test]
async fn a_store_through_the_leader_sizes_an_object_without_fetching_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // A leader that answers a HEAD with the size, and a GET with a body of another size.
    let fake = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "the request ended early");
            head.extend_from_slice(&buf[..n]);
        }
        let method = String::from_utf8_lossy(&head)
            .split(' ')
            .next()
            .unwrap_or("")
            .to_string();
        let reply: &[u8] = if method == "HEAD" {
            b"HTTP/1.1 200 OK\r\nx-object-size: 5000000000\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc"
        };
        conn.write_all(reply).await.unwrap();
        method
    });
    let store = Store::http(&format!("http://{addr}"));
    assert_eq!(store.size("big.csv").await.unwrap(), 5_000_000_000);
    assert_eq!(fake.await.unwrap(), "HEAD");
}
