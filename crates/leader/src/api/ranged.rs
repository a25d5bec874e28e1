//! Ranged reads of store objects (`Range: bytes=a-b`, answered 206): how a worker reads a
//! source through the leader in pieces (`store/ranged.rs`), so that its read resumes where it
//! was after a leader restart instead of failing the source with the one long response.
//! One range per request, as the engine asks; several ranges are refused (416).

use super::error;
use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use rainstorm_store::store::{Store, StoreError};

/// The answer to a GET of `path` with this `Range` header (a store error is the caller's to
/// answer).
pub(super) async fn answer(
    store: &Store,
    path: &str,
    range: &HeaderValue,
) -> Result<Response, StoreError> {
    let size = store.size(path).await?;
    let Some(r) = range.to_str().ok().and_then(|h| parse(h, size)) else {
        return Ok(unsatisfiable(size));
    };
    let bytes = store.get_range(path, r.clone()).await?;
    Ok(Response::builder()
        .status(StatusCode::PARTIAL_CONTENT)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{size}", r.start, r.end - 1),
        )
        .body(Body::from(bytes))
        .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())))
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

/// The bytes one `Range` header asks for of an object of `size` bytes (RFC 9110 §14.1.2: an
/// end past the object is cut to it); `None` if it asks for nothing there or for several
/// ranges.
fn parse(h: &str, size: u64) -> Option<std::ops::Range<u64>> {
    let spec = h.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let r = match (a.is_empty(), b.is_empty()) {
        // The last n bytes.
        (true, false) => {
            let n: u64 = b.parse().ok()?;
            size.saturating_sub(n)..size
        }
        (false, true) => a.parse().ok()?..size,
        (false, false) => {
            let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
            (b >= a).then_some(())?;
            a..b.saturating_add(1).min(size)
        }
        (true, true) => return None,
    };
    (r.start < r.end).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::parse;

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
