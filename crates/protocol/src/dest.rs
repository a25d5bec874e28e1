//! Where a task runs: a live worker's data endpoint, and each task's current destination
//! (address, attempt, key) that links connect to and receivers fence with.

use crate::auth::PeerKey;
use crate::model::ids::TaskPos;
use serde::{Deserialize, Serialize};

/// A live worker as placement sees it: where its data listener is and the key its data
/// connections are signed with, both from its registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Data address (`host:port`).
    pub addr: String,
    /// The worker's public key.
    pub key: PeerKey,
}

/// Where one task of a job runs now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dest {
    /// Data address (`host:port`) of the process running it.
    pub addr: String,
    /// The attempt that runs there (receivers fence off older attempts with it).
    pub attempt: u32,
    /// The task finished: it holds every input, ends of stream included, acknowledged. A
    /// restarted upstream attempt has nothing left to deliver to it (whatever it regenerates
    /// for it was delivered by an earlier attempt), so its link ends without connecting.
    pub finished: bool,
    /// The key of the worker running this attempt: a receiver admits a link from this attempt
    /// only if its Hello is signed with it. None (a placement recorded before keys existed):
    /// no connection can speak for this attempt.
    #[serde(default)]
    pub key: Option<PeerKey>,
}

impl Dest {
    /// Attempt `attempt` runs on the worker at `at` and has not finished.
    pub fn running(at: &Endpoint, attempt: u32) -> Self {
        Dest {
            addr: at.addr.clone(),
            attempt,
            finished: false,
            key: Some(at.key),
        }
    }

    /// The address and attempt: what a link's connection is bound to.
    pub fn place(&self) -> (&str, u32) {
        (&self.addr, self.attempt)
    }
}

/// One route of a job's placement: a task position and where it runs.
pub type Route = (TaskPos, Dest);
