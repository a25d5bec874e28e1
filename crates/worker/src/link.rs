//! The worker's client of the leader's control plane for one session: who this worker is, the
//! key it proves, and when the session ends. Heartbeats, events and command polls all go
//! through it.

use crate::model::ids::WorkerId;
use crate::protocol::control::WORKER_HEADER;
use tokio_util::sync::CancellationToken;

/// What a session's helpers need to talk to the leader: who we are, and when to stop.
#[derive(Clone)]
pub(crate) struct LeaderLink {
    pub(crate) http: reqwest::Client,
    /// Leader base URL.
    pub(crate) leader: String,
    /// This worker's id in the session.
    pub(crate) id: WorkerId,
    /// Cancelled when the session ends.
    pub(crate) session: CancellationToken,
    /// The key this registration proves on every call (none without a cluster secret).
    pub(crate) key: Option<String>,
}

impl LeaderLink {
    /// A request to the leader's control plane, proving this registration.
    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self
            .http
            .request(method, format!("{}{path}", self.leader))
            .header(WORKER_HEADER, self.id.0.as_str());
        match &self.key {
            Some(k) => req.bearer_auth(k),
            None => req,
        }
    }
}
