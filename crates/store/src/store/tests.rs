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
