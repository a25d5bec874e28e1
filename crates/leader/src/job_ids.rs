//! Job ids: `job-N-XXXXXX`, N from the durable counter, never one the store holds logs under.

use crate::model::ids::JobId;
use crate::{Leader, SubmitError};
use tracing::warn;

/// How many fresh ids `new_job_id` tries before giving up on a store that holds logs under
/// each (which only a store shared with other leaders could do).
const ID_TRIES: usize = 5;

impl Leader {
    /// A job id never used before in this store: `job-N-XXXXXX`, N from the durable counter
    /// (never reused by this data dir, across restarts) and six random hex digits (so a leader
    /// with a fresh data dir on an old store does not repeat an old id either), and no object
    /// under `logs/<id>/` (a job never reads another job's logs, whatever the store holds).
    pub(crate) async fn new_job_id(&self) -> Result<JobId, SubmitError> {
        let internal = |what: &str, e: &dyn std::fmt::Display| {
            SubmitError::Internal(format!("choosing a job id: {what}: {e}"))
        };
        for _ in 0..ID_TRIES {
            let n = self
                .persist
                .next_job_number()
                .await
                .map_err(|e| internal("the job counter", &format!("{e:#}")))?;
            let suffix =
                crate::protocol::auth::random_hex(3).map_err(|e| internal("random suffix", &e))?;
            let id = JobId(format!("job-{n}-{suffix}"));
            let prefix = format!("{}/", rainstorm_store::log::job_prefix(&id));
            let used = self
                .store
                .list(&prefix)
                .await
                .map_err(|e| internal("listing the store", &e))?;
            if used.is_empty() {
                return Ok(id);
            }
            warn!(job = %id, objects = used.len(), "the store already holds logs under this id; choosing another");
        }
        Err(SubmitError::Internal(format!(
            "no unused job id after {ID_TRIES} tries: the store holds logs under each"
        )))
    }
}
