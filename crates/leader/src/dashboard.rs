//! A one-page dashboard: jobs, tasks and workers, refreshed from the JSON API every second.
//!
//! Whatever it shows comes from jobs and workers (a job's name, an operator's path, an error,
//! a worker's address), so the page must never run any of it: its script
//! (`dashboard/dashboard.js`) builds every cell with `textContent`, never HTML, and the page
//! is served with a Content-Security-Policy that runs only scripts and styles of this origin's
//! own files — no inline script, no inline event handler (`onerror=`, `onmouseover=`), no
//! image or frame from anywhere — so even markup that reached the page by mistake stays inert.
//! The page holds no data and no secret: it asks for the cluster secret, kept in the tab's
//! `sessionStorage`.

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::response::{IntoResponse, Response};

/// Where the dashboard's script and style are served (same origin: the policy allows them).
pub const SCRIPT_ROUTE: &str = "/dashboard.js";
/// See [`SCRIPT_ROUTE`].
pub const STYLE_ROUTE: &str = "/dashboard.css";

/// The policy of every dashboard response: scripts and styles only from this origin's files,
/// fetches only to this origin, nothing else loaded, never framed. Without `'unsafe-inline'`
/// a browser runs no inline script and no event-handler attribute.
pub const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

const PAGE: &str = include_str!("dashboard/page.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");

/// One dashboard file with its type and the protective headers.
fn serve(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            (CONTENT_SECURITY_POLICY, POLICY),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (X_FRAME_OPTIONS, "DENY"),
            (REFERRER_POLICY, "no-referrer"),
            (CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Serves the page (`/`).
pub async fn page() -> Response {
    serve("text/html; charset=utf-8", PAGE)
}

/// Serves the page's script ([`SCRIPT_ROUTE`]).
pub async fn script() -> Response {
    serve("text/javascript; charset=utf-8", SCRIPT)
}

/// Serves the page's style ([`STYLE_ROUTE`]).
pub async fn style() -> Response {
    serve("text/css; charset=utf-8", STYLE)
}

#[cfg(test)]
mod tests;
