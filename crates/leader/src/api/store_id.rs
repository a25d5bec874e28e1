//! The registration's store check: a worker with a store of its own names the cluster id it
//! read there (`rainstorm_store::marker`), and one whose store is not the leader's is refused.

use super::error;
use crate::protocol::control::RegisterRequest;
use crate::Leader;
use axum::http::StatusCode;
use axum::response::Response;
use tracing::warn;

/// The refusal of a registration whose store holds another cluster id (or none), if it does.
pub(super) fn refuse_another(l: &Leader, req: &RegisterRequest) -> Option<Response> {
    let theirs = req.store_id.as_deref().filter(|t| *t != l.store_id)?;
    let found = match theirs {
        // An S3 bucket that does not exist reads as empty too.
        "" => "no cluster id (is it the leader's bucket and prefix? does the bucket exist?)"
            .to_string(),
        other => format!("cluster id {other}"),
    };
    warn!(data = %req.data_addr, %found, "a worker whose store is not the cluster's tried to register");
    Some(error(
        StatusCode::CONFLICT,
        format!(
            "this worker's store is not the cluster's: it holds {found} at {}, the leader's store ({}) holds {} (give the worker the leader's --store, or none to use the leader's)",
            rainstorm_store::marker::CLUSTER_MARKER,
            l.store.describe(),
            l.store_id
        ),
    ))
}
