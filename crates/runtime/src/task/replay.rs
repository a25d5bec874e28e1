//! Recovery of a logged task: its input log replayed into a fresh operator.

use super::operator::{Operator, Stop};
use super::{takeover, TaskEnv, TaskStatus};
use crate::dataplane::acceptance::Acceptance;
use crate::dataplane::link::EPOCH_SHIFT;
use crate::log::{decode_segment, recover_lineage, start_lineage_afresh, LogError, LogRecord};
use crate::model::spec::Delivery;
use crate::protocol::control::{TaskAssignment, TaskRole};
use std::sync::atomic::Ordering;
use tracing::info;

/// Replays the input log (exactly-once stages ≥ 2, and the sink) into a fresh operator: the
/// same inputs in the same order, so a deterministic operator emits the same outputs with the
/// same sequence numbers; downstream drops what it already had. An at-least-once operator
/// that logs (to rebuild moved key groups) starts its log afresh instead.
pub(super) async fn replay_log(
    env: &TaskEnv,
    a: &TaskAssignment,
    op: &mut Operator,
    acc: &mut Acceptance,
    status: &TaskStatus,
    mut takeover: Option<&mut takeover::Takeover<'_>>,
) -> Result<(), Stop> {
    // An at-least-once operator (one that logs to rebuild moved key groups) runs each attempt
    // in a new epoch fed again from the source: its earlier epochs' log is not its input.
    let afresh = a.delivery != Delivery::ExactlyOnce && !matches!(a.role, TaskRole::Sink { .. });
    let lineage = match afresh {
        true => start_lineage_afresh(&env.store, &a.key, a.attempt)
            .await
            .map(|()| Vec::new())?,
        false => recover_lineage(&env.store, &a.key, a.attempt).await?,
    };
    let _working = status.working.run();
    let mut replayed = 0u64;
    // Records of an earlier epoch (the sink's, under at-least-once) are output already written,
    // not positions on this epoch's links.
    let floor = u64::from(a.epoch) << EPOCH_SHIFT;
    // The sink's log is its output: replay restores its positions, there is nothing to feed.
    let spool = match op {
        Operator::Sink(s) => Some(s.clone()),
        _ => None,
    };
    let feeds = spool.is_none();
    for seg in &lineage {
        let data = env.store.get(seg).await.map_err(LogError::from)?;
        // Checked (its tag) before any of it is used, the spool's copy included.
        let records = decode_segment(env.store.seal(), seg, data.clone())?;
        if let Some(Some(s)) = &spool {
            s.append(seg, &data).await;
        }
        for rec in records {
            match rec {
                LogRecord::Batch(b) => {
                    let n = b.tuples.len() as u64;
                    let last = b.first_seq + n - 1;
                    if feeds {
                        for (i, t) in b.tuples.into_iter().enumerate() {
                            let at = (b.from, b.first_seq + i as u64);
                            let k = takeover.as_deref_mut();
                            takeover::feed(op, k, at, t, b.emit_ns).await?;
                        }
                    }
                    replayed += n;
                    if b.first_seq > floor {
                        acc.advance(b.from, last);
                    }
                }
                LogRecord::Eos { from, last_seq } if last_seq >= floor => {
                    acc.replay_end(from, last_seq);
                    if let Some(k) = takeover.as_deref_mut() {
                        k.ended(op, from).await?;
                    }
                }
                LogRecord::Eos { .. } => {}
            }
        }
    }
    status.tuples_in.store(replayed, Ordering::Relaxed);
    if a.delivery == Delivery::ExactlyOnce {
        // A finished upstream task's end was logged before it was acknowledged: missing, the
        // log lost objects, and nothing will ever send that end again. (Under the other
        // modes a restart begins a new epoch, whose receivers do not count earlier ends.)
        if let Some(i) = a.finished_upstream.iter().find(|i| !acc.ended(**i)) {
            return Err(Stop::Unrecoverable(format!(
                "the input log holds no end of the stream from task {}.{i}, which finished: objects of the log were deleted from the store",
                a.key.pos.stage.saturating_sub(1)
            )));
        }
    }
    if !lineage.is_empty() {
        info!(task = %a.key, attempt = a.attempt, segments = lineage.len(), tuples = replayed, "recovered from input log");
    }
    Ok(())
}
