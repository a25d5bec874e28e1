//! The sink: a task on a worker (stage K+1, placed like any other) whose input log is the
//! job's committed output.
//!
//! It runs as a logged task under every delivery mode (`runtime::task`): what the last stage
//! delivers is deduplicated, appended to the sink's log as fenced, group-committed segments
//! and acknowledged only once durable. A segment holds the lines and the per-link high-water
//! marks together, so output and marks are committed in one atomic write: a restarted sink
//! (on any worker) recovers the lineage of its predecessors, resumes from their marks, and
//! nothing an earlier attempt wrote but did not commit is part of its history — so nothing is
//! lost and nothing doubled.
//!
//! When every last-stage link has ended, the sink writes the lineage out as the output file
//! ([`write_output`]) and only then reports finished. Followers of a running job read the
//! committed lineage through the leader (`runtime::log::committed_lineage`); a job that ends otherwise gets
//! what was committed (`leader::cleanup`).

mod spool;
pub use spool::{remove_orphans, Spool};

pub use rainstorm_store::output::{
    assemble, segment_text, segment_text_written, target, write_body, OutputError, SinkProgress,
    SinkTarget,
};

use crate::env::TaskEnv;
use crate::log::{fenced, lineage_of};
use crate::protocol::control::TaskAssignment;
use crate::store::StoreError;

/// Writes a finished sink's committed lineage out as the job's output: its spool streamed
/// out when it holds exactly that lineage, else the segments read back from the store.
/// Refused once a newer attempt fenced this one (that attempt writes the output instead), and
/// when the store lost commits the spool holds ([`OutputError::Lost`]).
pub async fn write_output(
    env: &TaskEnv,
    a: &TaskAssignment,
    path: &str,
    spool: Option<&Spool>,
) -> Result<(), OutputError> {
    let lineage = lineage_of(&env.store, &a.key, a.attempt).await?;
    if fenced(&env.store, &a.key, a.attempt).await? {
        return Err(OutputError::Fenced);
    }
    // The store's listing is the truth for what is written out, but it cannot show a missing
    // tail: what this attempt took in can.
    if let Some(s) = spool {
        if let Some((made, found)) = s.lost(&lineage).await {
            return Err(OutputError::Lost { made, found });
        }
    }
    let target = target(a.paths, path);
    if let (SinkTarget::File(file), Some(s)) = (&target, spool) {
        if let Some(moved) = s.move_if(&lineage, file).await {
            let bytes = moved.map_err(|e| {
                OutputError::Write(StoreError::Io {
                    path: path.to_string(),
                    cause: e,
                })
            })?;
            tracing::info!(sink = %a.key, attempt = a.attempt, segments = lineage.len(), bytes, moved = true, "sink wrote its output");
            return Ok(());
        }
    }
    let spooled = match spool {
        Some(s) => s.body_if(&lineage).await,
        None => None,
    };
    let from_spool = spooled.is_some();
    // Written as this attempt: through the leader, the write is refused once another attempt
    // replaced this one, however late it comes (a fence checked above can be passed just
    // before it is put).
    let store = env.store.claiming(&a.key, a.attempt);
    let bytes = match spooled {
        Some(body) => write_body(&store, &target, body)
            .await
            .map_err(OutputError::Write)?,
        None => assemble(&store, &lineage, &target).await?.bytes,
    };
    tracing::info!(sink = %a.key, attempt = a.attempt, segments = lineage.len(), bytes, from_spool, "sink wrote its output");
    Ok(())
}

#[cfg(test)]
mod tests;
