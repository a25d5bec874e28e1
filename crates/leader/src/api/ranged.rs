//! Ranged reads of store objects (`Range: bytes=a-b`, answered 206): how a worker reads a
//! source through the leader in pieces (`store/ranged.rs`), so that its read resumes where it
//! was after a leader restart instead of failing the source with the one long response.
//! One range per request, as the engine asks. A header that is not one well-formed range
//! (several ranges, another unit, garbage) is ignored and the whole object served, as RFC
//! 9110 allows; a well-formed range outside the object is refused (416).

use super::error;
use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use rainstorm_store::store::{Store, StoreError};

/// The answer to a GET of `path` with this `Range` header: `None` if the header is to be
/// ignored (not one well-formed range), a store error the caller's to answer.
pub(super) async fn answer(
    store: &Store,
    path: &str,
    range: &HeaderValue,
) -> Result<Option<Response>, StoreError> {
    let Some(spec) = range.to_str().ok().and_then(spec) else {
        return Ok(None);
    };
    let size = store.size(path).await?;
    let Some(r) = resolve(spec, size) else {
        return Ok(Some(unsatisfiable(size)));
    };
    let bytes = store.get_range(path, r.clone()).await?;
    Ok(Some(
        Response::builder()
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{size}", r.start, r.end - 1),
            )
            .body(Body::from(bytes))
            .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    ))
}

fn unsatisfiable(size: u64) -> Response {
    let mut resp = error(
        StatusCode::RANGE_NOT_SATISFIABLE,
        format!("the range must be one `bytes=a-b`, `bytes=a-` or `bytes=-n` within the object's {size} bytes"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
        resp.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    resp
}

/// One well-formed range: `bytes=a-b`, `bytes=a-` or `bytes=-n`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Spec {
    /// From `a` to `b` (inclusive), `b` cut to the object.
    Span(u64, u64),
    /// From `a` to the end.
    From(u64),
    /// The last `n` bytes.
    Last(u64),
}

/// The one range a `Range` header asks for, if it is one well-formed range.
fn spec(h: &str) -> Option<Spec> {
    let spec = h.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    match (a.is_empty(), b.is_empty()) {
        (true, false) => Some(Spec::Last(b.parse().ok()?)),
        (false, true) => Some(Spec::From(a.parse().ok()?)),
        (false, false) => {
            let (a, b) = (a.parse().ok()?, b.parse().ok()?);
            (b >= a).then_some(Spec::Span(a, b))
        }
        (true, true) => None,
    }
}

/// The bytes `spec` asks for of an object of `size` bytes (RFC 9110 §14.1.2: an end past the
/// object is cut to it); `None` if none of them is in it.
fn resolve(spec: Spec, size: u64) -> Option<std::ops::Range<u64>> {
    let r = match spec {
        Spec::Last(n) => size.saturating_sub(n)..size,
        Spec::From(a) => a..size,
        Spec::Span(a, b) => a..b.saturating_add(1).min(size),
    };
    (r.start < r.end).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::{resolve, spec};

    fn parse(h: &str, size: u64) -> Option<std::ops::Range<u64>> {
        resolve(spec(h)?, size)
    }

    #[test]
    fn one_range_is_understood_and_cut_to_the_object() {
        assert_eq!(parse("bytes=0-9", 100), Some(0..10));
        assert_eq!(parse("bytes=90-200", 100), Some(90..100));
        assert_eq!(parse("bytes=95-", 100), Some(95..100));
        assert_eq!(parse("bytes=-5", 100), Some(95..100));
        assert_eq!(parse("bytes=-500", 100), Some(0..100));
        for bad in [
            "bytes=100-",
            "bytes=9-3",
            "bytes=0-1,4-5",
            "bytes=-",
            "items=0-1",
            "bytes=a-b",
            "bytes=-0",
        ] {
            assert_eq!(parse(bad, 100), None, "{bad}");
        }
        assert_eq!(parse("bytes=0-0", 0), None);
    }
}
