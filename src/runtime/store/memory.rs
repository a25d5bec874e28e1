//! The in-memory store of the deterministic simulation and of unit tests: a sorted map of
//! objects, plus fault injection (`fail_puts`) so the input log's retries and its give-up path
//! can be exercised on purpose, and a per-operation latency (`latency_us`, on tokio's clock:
//! virtual time in the simulation) so that other tasks run between a caller's store
//! operations, as they do against a real store — the fence and takeover races of the input
//! log only happen then. Apart from the object backends because its behaviour is part of the
//! simulation's contract: it must stay exactly as it is (no I/O, no order other than the
//! map's, no time but that latency).

use super::{upload_broke, ObjectMeta, ObjectReader, StoreError};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

/// An in-memory store whose writes can be made to fail, so the simulation can exercise the
/// input log's retries and its give-up path deterministically.
#[derive(Debug, Default)]
pub struct MemStore {
    objects: Mutex<BTreeMap<String, Bytes>>,
    /// Puts still to fail (each failed put decrements it).
    pub fail_puts: AtomicU32,
    /// Microseconds every get, put, list and size waits before it takes effect (0: none).
    pub latency_us: AtomicU64,
}

impl MemStore {
    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Bytes>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits the configured per-operation latency.
    pub(super) async fn latency(&self) {
        let us = self.latency_us.load(Ordering::Relaxed);
        if us > 0 {
            tokio::time::sleep(std::time::Duration::from_micros(us)).await;
        }
    }

    /// Stores `data`, unless a put is still to fail (then it fails and one fewer remains).
    pub(super) fn put(&self, clean: String, data: Bytes) -> Result<(), StoreError> {
        let fail = self
            .fail_puts
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            return Err(StoreError::Io {
                path: clean,
                source: std::io::Error::other("injected write failure"),
            });
        }
        self.objects().insert(clean, data);
        Ok(())
    }

    /// Collects the stream, then puts it (so an injected failure applies to it too).
    pub(super) async fn put_stream<S, E>(&self, clean: String, body: S) -> Result<u64, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let mut body = std::pin::pin!(body);
        let mut all = Vec::new();
        while let Some(chunk) = body.next().await {
            all.extend_from_slice(&chunk.map_err(|e| upload_broke(&clean, e))?);
        }
        let n = all.len() as u64;
        self.put(clean, Bytes::from(all)).map(|_| n)
    }

    pub(super) fn size(&self, clean: String) -> Result<u64, StoreError> {
        self.objects()
            .get(&clean)
            .map(|b| b.len() as u64)
            .ok_or(StoreError::NotFound(clean))
    }

    pub(super) fn get(&self, clean: String) -> Result<Bytes, StoreError> {
        self.objects()
            .get(&clean)
            .cloned()
            .ok_or(StoreError::NotFound(clean))
    }

    pub(super) fn open(&self, clean: String) -> Result<ObjectReader, StoreError> {
        Ok(Box::new(std::io::Cursor::new(self.get(clean)?)))
    }

    /// Objects whose path starts with `prefix`, in path order.
    pub(super) fn list(&self, prefix: &str) -> Vec<ObjectMeta> {
        self.objects()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| ObjectMeta {
                path: k.clone(),
                size: v.len() as u64,
            })
            .collect()
    }

    /// Removes `clean` and everything under `clean/`; returns what it removed (never fails).
    pub(super) fn delete(&self, clean: &str) -> Vec<String> {
        let dir = format!("{clean}/");
        let mut removed = Vec::new();
        self.objects().retain(|k, _| {
            let gone = k == clean || k.starts_with(&dir);
            if gone {
                removed.push(k.clone());
            }
            !gone
        });
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::super::Store;
    use super::*;

    #[tokio::test]
    async fn injected_put_failures_are_counted_down_then_puts_succeed() {
        let store = Store::memory();
        let Store::Memory(m) = &store else {
            unreachable!()
        };
        m.fail_puts.store(2, Ordering::Relaxed);
        for _ in 0..2 {
            let e = store.put("logs/a", Bytes::from_static(b"x")).await;
            assert!(matches!(e, Err(StoreError::Io { .. })), "{e:?}");
        }
        assert!(!store.exists("logs/a").await.unwrap());
        store.put("logs/a", Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(m.fail_puts.load(Ordering::Relaxed), 0);
        // A streamed put is subject to the same injection.
        m.fail_puts.store(1, Ordering::Relaxed);
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

    #[tokio::test]
    async fn a_broken_streamed_put_commits_nothing() {
        let store = Store::memory();
        store
            .put("o", Bytes::from_static(b"whole\n"))
            .await
            .unwrap();
        for path in ["o", "new"] {
            let body = futures::stream::iter([
                Ok(Bytes::from_static(b"part")),
                Err(std::io::Error::other("gone")),
            ]);
            let err = store.put_stream(path, body).await.unwrap_err();
            assert!(err.to_string().contains("upload broke"), "{err}");
        }
        assert_eq!(&store.get("o").await.unwrap()[..], b"whole\n");
        assert!(!store.exists("new").await.unwrap());
    }
}
