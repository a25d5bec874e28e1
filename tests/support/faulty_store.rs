//! A fault-injecting `object_store` for tests and the simulation: the crate's in-memory store
//! behind a wrapper that can fail the next N writes (so the input log's retries and give-up
//! path run on purpose) and makes every operation take a fixed time on tokio's clock (virtual
//! time in the simulation), so that other tasks run between a caller's store operations, as
//! against a real store — the fence and takeover races of the input log only happen then.
//! Operations can also take a seeded random extra time each (`jitter`), so that one caller's
//! read can overtake another's earlier write, as on a real store.
//! Deterministic: no I/O, the in-memory store's order, no time but that latency, and a jitter
//! drawn in the order operations are called (one thread in the simulation).
//!
//! It lives with the tests: `tests/sim.rs` includes it, and so do the library's unit tests
//! (`runtime::store`), through `#[path]`.

use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An object and its bytes, written when a set moment comes (`FaultyStore::after_miss`).
pub type Landing = (String, Vec<u8>);

/// An in-memory object store whose writes can be made to fail and whose operations take time.
#[derive(Debug, Default)]
pub struct FaultyStore {
    inner: Arc<InMemory>,
    /// Writes still to fail (each failed write decrements it).
    pub fail_puts: AtomicU32,
    /// Reads (gets, heads) still to fail, as `fail_puts`.
    pub fail_reads: AtomicU32,
    /// Microseconds every operation waits before it takes effect (0: none).
    pub latency_us: AtomicU64,
    /// At most this many microseconds more for each operation, drawn from `jitter_state`
    /// (0: none).
    pub jitter_us: AtomicU64,
    /// The jitter's random state (SplitMix64).
    jitter_state: AtomicU64,
    /// Writes that land just after a read of a given location finds nothing: the location,
    /// then each object and its bytes. It puts a reader's two looks on either side of a
    /// writer's writes, an order a real store's latency allows and equal latencies never make.
    pub after_miss: std::sync::Mutex<Option<(String, Vec<Landing>)>>,
}

impl std::fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FaultyStore")
    }
}

impl FaultyStore {
    /// Gives every operation up to `max_us` more microseconds, drawn from `seed`.
    #[allow(dead_code)] // the simulation's; the unit tests that include this file do not jitter
    pub fn jitter(&self, max_us: u64, seed: u64) {
        self.jitter_state.store(seed, Ordering::Relaxed);
        self.jitter_us.store(max_us, Ordering::Relaxed);
    }

    /// This operation's time: the latency and its draw of the jitter.
    fn delay_us(&self) -> u64 {
        let base = self.latency_us.load(Ordering::Relaxed);
        let max = self.jitter_us.load(Ordering::Relaxed);
        if max == 0 {
            return base;
        }
        let mut z = self
            .jitter_state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        base + (z ^ (z >> 31)) % (max + 1)
    }

    async fn latency(&self) {
        let us = self.delay_us();
        if us > 0 {
            tokio::time::sleep(Duration::from_micros(us)).await;
        }
    }

    /// Puts the writes set to land after a read of `location` missed, once.
    async fn land_after_miss(&self, location: &Path) -> object_store::Result<()> {
        let writes = {
            let mut set = self.after_miss.lock().unwrap_or_else(|e| e.into_inner());
            match set.take() {
                Some((at, writes)) if at == location.as_ref() => writes,
                other => {
                    *set = other;
                    return Ok(());
                }
            }
        };
        for (at, body) in writes {
            let at = Path::from(at);
            self.inner
                .put_opts(&at, body.into(), PutOptions::default())
                .await?;
        }
        Ok(())
    }

    /// Whether this write is one of those to fail (then one fewer remains).
    fn fails(&self) -> bool {
        take_one(&self.fail_puts)
    }
}

/// Whether a count of operations still to fail had one left (then one fewer remains).
fn take_one(left: &AtomicU32) -> bool {
    left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

fn injected(location: &Path) -> object_store::Error {
    object_store::Error::Generic {
        store: "faulty",
        source: format!("{location}: injected write failure").into(),
    }
}

#[async_trait::async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.latency().await;
        if self.fails() {
            return Err(injected(location));
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.latency().await;
        if self.fails() {
            return Err(injected(location));
        }
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.latency().await;
        if take_one(&self.fail_reads) {
            return Err(object_store::Error::Generic {
                store: "faulty",
                source: format!("{location}: injected read failure").into(),
            });
        }
        let got = self.inner.get_opts(location, options).await;
        if matches!(got, Err(object_store::Error::NotFound { .. })) {
            self.land_after_miss(location).await?;
        }
        got
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        // The listing is taken after the latency, as every other operation takes effect.
        let us = self.delay_us();
        let inner = self.inner.clone();
        let prefix = prefix.cloned();
        futures::stream::once(async move {
            if us > 0 {
                tokio::time::sleep(Duration::from_micros(us)).await;
            }
            inner.list(prefix.as_ref())
        })
        .flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.latency().await;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.latency().await;
        self.inner.copy_opts(from, to, options).await
    }
}
