//! Reading a large remote object as a sequence of ranged GETs instead of one long response.
//!
//! A source can be gigabytes and be read for hours at a low rate; one HTTP response held open
//! that long dies with the first idle timeout or network blip and takes the job's source with
//! it. In ranges, each request is short, a failed one is retried on its own (with backoff),
//! and memory stays bounded: at most the range being read and the one fetched ahead of it.

use super::{ObjectReader, StoreError};
use crate::model::backoff::Backoff;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// Bytes per ranged request when a source is read from object storage.
pub const RANGE_BYTES: u64 = 8 << 20;

/// Tries per range before the read fails (a missing object is not retried).
const RANGE_TRIES: u32 = 5;

/// How long a range is retried while the store does not answer at all
/// ([`StoreError::Unreachable`]: through the leader, a leader restarting). A source's read
/// outlives a leader restart, as its logged tasks' writes do (`log::WRITE_PATIENCE`).
const RANGE_PATIENCE: Duration = Duration::from_secs(30);

/// A reader of the `size` bytes of `path`, fetched `chunk` bytes at a time by `fetch`, one
/// range ahead of the reader. A range that comes back with another length than asked (the
/// object changed under the read) fails the read instead of splicing two versions.
pub fn ranged_reader<F, Fut>(path: String, size: u64, chunk: u64, fetch: F) -> ObjectReader
where
    F: Fn(Range<u64>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, StoreError>> + Send + 'static,
{
    let fetch = Arc::new(fetch);
    let chunk = chunk.max(1);
    let ranges = (0..size.div_ceil(chunk)).map(move |i| i * chunk..((i + 1) * chunk).min(size));
    let stream = futures::stream::iter(ranges)
        .map(move |r| fetch_range(fetch.clone(), path.clone(), r))
        .buffered(2)
        .map_err(|e| std::io::Error::other(e.to_string()))
        .boxed();
    Box::new(tokio_util::io::StreamReader::new(stream))
}

/// One range, retried with backoff on anything but "not found".
async fn fetch_range<F, Fut>(
    fetch: Arc<F>,
    path: String,
    r: Range<u64>,
) -> Result<Bytes, StoreError>
where
    F: Fn(Range<u64>) -> Fut,
    Fut: Future<Output = Result<Bytes, StoreError>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let started = tokio::time::Instant::now();
    let mut tries = 0;
    loop {
        tries += 1;
        match fetch(r.clone()).await {
            Ok(b) if b.len() as u64 == r.end - r.start => return Ok(b),
            Ok(b) => {
                return Err(StoreError::Object {
                    path,
                    msg: format!(
                        "bytes {}..{} came back as {} bytes: the object changed while it was read",
                        r.start,
                        r.end,
                        b.len()
                    ),
                })
            }
            Err(e @ StoreError::NotFound(_)) => return Err(e),
            Err(e @ StoreError::Unreachable(_)) if started.elapsed() >= RANGE_PATIENCE => {
                return Err(e)
            }
            Err(e) if tries >= RANGE_TRIES && !matches!(e, StoreError::Unreachable(_)) => {
                return Err(e)
            }
            Err(e) => {
                let wait = backoff.next();
                warn!(%path, start = r.start, end = r.end, tries, error = %e, ?wait, "a ranged read failed; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::io::AsyncReadExt;

    fn object(n: usize) -> Bytes {
        (0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into()
    }

    #[tokio::test]
    async fn a_large_object_is_read_in_bounded_ranges_in_order() {
        let data = object(10_000);
        let asked = Arc::new(Mutex::new(Vec::new()));
        let (d, a) = (data.clone(), asked.clone());
        let mut rd = ranged_reader("in.csv".into(), 10_000, 3_000, move |r: Range<u64>| {
            a.lock().unwrap().push(r.clone());
            let b = d.slice(r.start as usize..r.end as usize);
            async move { Ok(b) }
        });
        let mut got = Vec::new();
        rd.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, data);
        let asked = asked.lock().unwrap().clone();
        assert_eq!(asked, [0..3_000, 3_000..6_000, 6_000..9_000, 9_000..10_000]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_range_is_retried_alone_and_a_changed_object_fails_the_read() {
        let data = object(5_000);
        let failures = Arc::new(Mutex::new(2));
        let (d, f) = (data.clone(), failures.clone());
        let mut rd = ranged_reader("in.csv".into(), 5_000, 2_000, move |r: Range<u64>| {
            let fail = r.start == 2_000 && {
                let mut left = f.lock().unwrap();
                *left > 0 && {
                    *left -= 1;
                    true
                }
            };
            let b = d.slice(r.start as usize..r.end as usize);
            async move {
                if fail {
                    Err(StoreError::Http("connection reset".into()))
                } else {
                    Ok(b)
                }
            }
        });
        let mut got = Vec::new();
        rd.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, data, "two failures of one range are retried");

        // A store that does not answer (the leader restarting) is waited for longer than
        // RANGE_TRIES: 12 failures in a row, some 20 s, and the read goes on where it was.
        let outage = Arc::new(Mutex::new(12));
        let (d, o) = (data.clone(), outage.clone());
        let mut rd = ranged_reader("in.csv".into(), 5_000, 2_000, move |r: Range<u64>| {
            let down = r.start == 2_000 && {
                let mut left = o.lock().unwrap();
                *left > 0 && {
                    *left -= 1;
                    true
                }
            };
            let b = d.slice(r.start as usize..r.end as usize);
            async move {
                match down {
                    true => Err(StoreError::Unreachable("connection refused".into())),
                    false => Ok(b),
                }
            }
        });
        let mut got = Vec::new();
        rd.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, data, "a leader away for 20 s is waited for");
        assert_eq!(*outage.lock().unwrap(), 0);
        // ... but not for ever.
        let mut rd = ranged_reader("in.csv".into(), 5_000, 2_000, move |_r: Range<u64>| async {
            Err(StoreError::Unreachable("connection refused".into()))
        });
        let err = rd.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert!(err.to_string().contains("connection refused"), "{err}");

        let short = data.slice(0..100);
        let mut rd = ranged_reader("in.csv".into(), 5_000, 2_000, move |_r: Range<u64>| {
            let b = short.clone();
            async move { Ok(b) }
        });
        let err = rd.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert!(
            err.to_string().contains("changed while it was read"),
            "{err}"
        );
    }
}
