//! The store through the leader's HTTP API, for workers that cannot reach the store themselves
//! (`/internal/store/...` for reads, listings and input-log writes; `/api/store/...` for
//! deletes). Kept apart because it is a client of the leader, not a storage backend: every
//! status the leader answers is mapped back to a [`StoreError`], and uploads and downloads are
//! streamed so neither side buffers a whole file. Every `/internal/store` request proves the
//! cluster secret and names the worker registration it comes from ([`StoreSession`]): the
//! leader serves the worker store only to a live registration.

use super::{upload_broke, ObjectMeta, ObjectReader, StoreError};
use crate::protocol::control::{CLAIM_HEADER, OBJECT_SIZE_HEADER, SESSION_HEADER, WORKER_HEADER};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use std::sync::{Arc, RwLock};

/// The worker registration a store client speaks for: set by the worker each time it
/// registers (a new session key each time), shared by every clone of its store.
#[derive(Clone, Debug, Default)]
pub struct StoreSession(Arc<RwLock<Option<(String, String)>>>);

impl StoreSession {
    /// Speaks for registration `worker` with session key `key` from now on (no key: a leader
    /// without a cluster secret, which hands out none).
    pub fn bind(&self, worker: &crate::model::ids::WorkerId, key: Option<&str>) {
        let mut slot = self.0.write().unwrap_or_else(|p| p.into_inner());
        *slot = key.map(|k| (worker.0.clone(), k.to_string()));
    }

    /// Adds the registration's headers to a request (none before the first registration).
    fn prove(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let slot = self.0.read().unwrap_or_else(|p| p.into_inner());
        let Some((worker, key)) = slot.as_ref() else {
            return req;
        };
        match reqwest::header::HeaderValue::from_str(key) {
            Ok(mut v) => {
                v.set_sensitive(true);
                req.header(WORKER_HEADER, worker.as_str())
                    .header(SESSION_HEADER, v)
            }
            Err(e) => {
                tracing::warn!(error = %e, "the session key is not a valid header value");
                req
            }
        }
    }
}

/// The leader's store API as a worker reaches it: base URL, a client proving the cluster
/// secret, and the registration the requests speak for.
#[derive(Clone, Debug)]
pub struct HttpStore {
    pub(super) base: String,
    pub(super) client: reqwest::Client,
    pub(super) session: StoreSession,
    /// The task attempt its writes speak for, if any (`Store::claiming`).
    pub(super) claim: Option<String>,
}

impl HttpStore {
    /// A request to `/internal/store{rest}`, proving the registration.
    fn internal(&self, method: reqwest::Method, rest: &str) -> reqwest::RequestBuilder {
        let req = self
            .client
            .request(method, format!("{}/internal/store{rest}", self.base));
        let req = match &self.claim {
            Some(c) => req.header(CLAIM_HEADER, c.as_str()),
            None => req,
        };
        self.session.prove(req)
    }
}

/// An HTTP client that proves the cluster secret (if any) as a bearer token on every request.
pub(super) fn client(
    leader: &str,
    token: Option<&crate::protocol::auth::Secret>,
) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        match reqwest::header::HeaderValue::from_str(&format!("Bearer {}", t.expose())) {
            Ok(mut v) => {
                v.set_sensitive(true);
                headers.insert(reqwest::header::AUTHORIZATION, v);
            }
            Err(e) => {
                tracing::warn!(error = %e, "the cluster secret is not a valid header value")
            }
        }
    }
    crate::client::http_client_for(leader)
        .default_headers(headers)
        .build()
        .unwrap_or_default()
}

/// Maps a non-success answer: 404 is [`StoreError::NotFound`], anything else says the status
/// and the leader's message.
async fn check(resp: reqwest::Response, path: &str) -> Result<reqwest::Response, StoreError> {
    match resp.status() {
        s if s.is_success() => Ok(resp),
        reqwest::StatusCode::NOT_FOUND => Err(StoreError::NotFound(path.to_string())),
        s @ (reqwest::StatusCode::BAD_GATEWAY
        | reqwest::StatusCode::SERVICE_UNAVAILABLE
        | reqwest::StatusCode::GATEWAY_TIMEOUT) => {
            let body = resp.text().await.unwrap_or_default();
            Err(StoreError::Unreachable(format!("{path}: {s}: {body}")))
        }
        s => {
            let body = resp.text().await.unwrap_or_default();
            Err(StoreError::Http(format!("{path}: {s}: {body}")))
        }
    }
}

/// GETs an object, mapping transport and status errors.
async fn get_response(h: &HttpStore, clean: &str) -> Result<reqwest::Response, StoreError> {
    let resp = h
        .internal(
            reqwest::Method::GET,
            &format!("/{}", super::url_path(clean)),
        )
        .send()
        .await
        .map_err(|e| StoreError::Unreachable(format!("GET {clean}: {e}")))?;
    check(resp, clean).await
}

pub(super) async fn put(h: &HttpStore, clean: &str, data: Bytes) -> Result<(), StoreError> {
    let resp = h
        .internal(
            reqwest::Method::PUT,
            &format!("/{}", super::url_path(clean)),
        )
        .body(data)
        .send()
        .await
        .map_err(|e| StoreError::Unreachable(format!("PUT {clean}: {e}")))?;
    check(resp, clean).await.map(|_| ())
}

/// Streams `body` as the request body through a small channel (at most a few chunks queued).
///
/// Whole or absent: when `body` fails part-way, the error itself is pushed into the request
/// body before the channel closes, so the HTTP client aborts the request (no final chunk is
/// sent) and the leader sees a body that did not end properly, which it refuses to commit.
/// Merely dropping the sender would end the body cleanly, and the leader would commit the
/// part that had arrived as if it were the whole object. The caller gets `body`'s error.
pub(super) async fn put_stream<S, E>(h: &HttpStore, clean: &str, body: S) -> Result<u64, StoreError>
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: std::fmt::Display,
{
    use futures::SinkExt;
    let mut body = std::pin::pin!(body);
    let (tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let send = h
        .internal(
            reqwest::Method::PUT,
            &format!("/{}", super::url_path(clean)),
        )
        .body(reqwest::Body::wrap_stream(rx))
        .send();
    let feed = async move {
        let mut tx = tx;
        let mut total = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let broke = upload_broke(clean, e);
                    // Fails only when the request is already over: nothing more reaches the
                    // leader then, and the caller gets the body's error all the same.
                    if tx
                        .send(Err(std::io::Error::other(broke.to_string())))
                        .await
                        .is_err()
                    {
                        tracing::debug!(path = %clean, "the upload had already ended when its body broke");
                    }
                    return Err(broke);
                }
            };
            total += chunk.len() as u64;
            if tx.send(Ok(chunk)).await.is_err() {
                // The request is over before its body was (the leader answered early, or
                // the connection went): its answer or its error says why.
                return Ok(None);
            }
        }
        Ok::<Option<u64>, StoreError>(Some(total))
    };
    let (resp, total) = tokio::join!(send, feed);
    let total = total?;
    let resp = resp.map_err(|e| StoreError::Unreachable(format!("PUT {clean}: {e}")))?;
    let resp = check(resp, clean).await?;
    total.ok_or_else(|| {
        StoreError::Http(format!(
            "PUT {clean}: the leader answered {} before the whole body was sent",
            resp.status()
        ))
    })
}

/// The size the leader answers a HEAD with ([`OBJECT_SIZE_HEADER`]): a multi-gigabyte source
/// is sized without moving it. A leader that does not say gets a GET, counted.
pub(super) async fn size(h: &HttpStore, clean: &str) -> Result<u64, StoreError> {
    let resp = h
        .internal(
            reqwest::Method::HEAD,
            &format!("/{}", super::url_path(clean)),
        )
        .send()
        .await
        .map_err(|e| StoreError::Unreachable(format!("HEAD {clean}: {e}")))?;
    let resp = check(resp, clean).await?;
    let said = resp
        .headers()
        .get(OBJECT_SIZE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    match said {
        Some(n) => Ok(n),
        None => get(h, clean).await.map(|b| b.len() as u64),
    }
}

/// An object read in ranged GETs (`ranged.rs`), not one long response: a source read through
/// the leader outlives a leader restart, each range retried until the leader answers again
/// (one long response died with the leader, and took the source's attempt with it).
pub(super) async fn open(h: &HttpStore, clean: &str) -> Result<ObjectReader, StoreError> {
    let size = size(h, clean).await?;
    let (h, name) = (h.clone(), clean.to_string());
    Ok(super::ranged::ranged_reader(
        clean.to_string(),
        size,
        super::ranged::RANGE_BYTES,
        move |r| {
            let (h, name) = (h.clone(), name.clone());
            async move { get_range(&h, &name, r).await }
        },
    ))
}

/// Bytes `r` of an object (`Range: bytes=a-b`, answered 206 by the leader).
pub(super) async fn get_range(
    h: &HttpStore,
    clean: &str,
    r: std::ops::Range<u64>,
) -> Result<Bytes, StoreError> {
    if r.is_empty() {
        return Ok(Bytes::new());
    }
    let what = format!("GET {clean} bytes {}..{}", r.start, r.end);
    let resp = h
        .internal(
            reqwest::Method::GET,
            &format!("/{}", super::url_path(clean)),
        )
        .header(
            reqwest::header::RANGE,
            format!("bytes={}-{}", r.start, r.end - 1),
        )
        .send()
        .await
        .map_err(|e| StoreError::Unreachable(format!("{what}: {e}")))?;
    let resp = check(resp, clean).await?;
    if resp.status() != reqwest::StatusCode::PARTIAL_CONTENT {
        return Err(StoreError::Http(format!(
            "{what}: answered {} instead of 206 (a leader without ranged reads?)",
            resp.status()
        )));
    }
    // A body cut short by the leader going away: as unanswered as a refused connection.
    resp.bytes()
        .await
        .map_err(|e| StoreError::Unreachable(format!("{what}: {e}")))
}

pub(super) async fn get(h: &HttpStore, clean: &str) -> Result<Bytes, StoreError> {
    let resp = get_response(h, clean).await?;
    resp.bytes()
        .await
        .map_err(|e| StoreError::Http(format!("GET {clean}: {e}")))
}

pub(super) async fn list(h: &HttpStore, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
    let resp = h
        .internal(reqwest::Method::GET, "")
        .query(&[("prefix", prefix)])
        .send()
        .await
        .map_err(|e| StoreError::Unreachable(format!("LIST {prefix}: {e}")))?;
    let resp = check(resp, prefix).await?;
    resp.json()
        .await
        .map_err(|e| StoreError::Http(format!("LIST {prefix}: {e}")))
}

/// Deletes one object of a task's input log through the workers' API (the leader allows it
/// only under the logs of the caller's own tasks).
pub(super) async fn delete(h: &HttpStore, clean: &str) -> Result<(), StoreError> {
    let resp = h
        .internal(
            reqwest::Method::DELETE,
            &format!("/{}", super::url_path(clean)),
        )
        .send()
        .await
        .map_err(|e| StoreError::Unreachable(format!("DELETE {clean}: {e}")))?;
    check(resp, clean).await.map(|_| ())
}

/// Deletes `clean` objects in one request: the leader checks every path before it deletes
/// any (`POST /internal/store`, `{"delete": [...]}`).
pub(super) async fn delete_many(h: &HttpStore, clean: &[String]) -> Result<(), StoreError> {
    if clean.is_empty() {
        return Ok(());
    }
    let what = format!("{} objects from {}", clean.len(), clean[0]);
    let resp = h
        .internal(reqwest::Method::POST, "")
        .json(&serde_json::json!({ "delete": clean }))
        .send()
        .await
        .map_err(|e| StoreError::Unreachable(format!("deleting {what}: {e}")))?;
    check(resp, &what).await.map(|_| ())
}

/// Deletes through the public API, which answers with what it removed.
pub(super) async fn delete_report(h: &HttpStore, clean: &str) -> (Vec<String>, Option<StoreError>) {
    let resp = h
        .client
        .delete(format!("{}/api/store/{}", h.base, super::url_path(clean)))
        .send()
        .await
        .map_err(|e| StoreError::Unreachable(format!("DELETE {clean}: {e}")));
    let resp = match resp {
        Ok(r) => check(r, clean).await,
        Err(e) => Err(e),
    };
    match resp {
        Ok(r) => {
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            let removed = v["removed"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            (removed, None)
        }
        Err(e) => (Vec::new(), Some(e)),
    }
}
