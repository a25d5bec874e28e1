//! Where a rebuilt history goes, and a task's own input read again for it.
//!
//! A built-in takes a gained group's state as its earlier owner handed it over
//! (`takeover::handover`). An executable cannot hand state over, and its outputs cannot be
//! told apart inside one process: it is restarted with its state rebuilt from the group's
//! logged history (`exec::history`), so it must be fed its *whole* input again — the
//! task's own input as it was fed, with the histories of earlier gains where they were fed —
//! and then the new gain's history. [`Piece`] records that order; [`own_input`] reads the
//! task's own input back (its input log, or for the first stage its share of the source file).

use super::operator::Stop;
use super::TaskEnv;
use crate::exec::{ExecOperator, Tally};
use crate::log::compact::{from_slot, read_object};
use crate::log::{decode_segment, lineage_of, LogError, LogRecord};
use crate::model::ids::TaskKey;
use crate::model::partition::Partitioner;
use crate::model::spec::PathMode;
use crate::model::tuple::Tuple;
use crate::protocol::control::SourceReplay;
use crate::protocol::routing::StageRouting;
use crate::source::open_replay;
use futures::StreamExt;

/// Segments of a log read at once.
const READ_AHEAD: usize = 8;

/// One stretch of what an executable's process was fed, in order.
#[derive(Clone, Copy, Debug)]
pub(super) enum Piece {
    /// The task's own input tuples `lo+1..=hi` (counted in the order they were fed).
    Own(u64, u64),
    /// The history of the groups gained with map `w`.
    Gain(usize),
}

/// Where the tuples of a rebuild go: an executable's fresh process and its scratch twin
/// (`exec::history`).
pub(super) struct Rebuilding<'o>(pub(super) &'o mut ExecOperator, pub(super) Tally);

impl Rebuilding<'_> {
    /// Takes one tuple of the history.
    pub(super) async fn take(&mut self, t: Tuple) -> Result<(), Stop> {
        Ok(self.0.feed_history(&mut self.1, &t).await?)
    }

    /// Ends the rebuild (the history's output is counted, to be dropped).
    pub(super) async fn end(self) -> Result<(), Stop> {
        self.0
            .end_history(self.1)
            .await
            .map(|_| ())
            .map_err(Stop::from)
    }
}

/// One object of a log as read: its path, how many of its leading segments were read
/// already, and its segments (`None`: compacted away since the listing, list again).
pub(super) type ObjectRead = (
    String,
    usize,
    Result<Option<Vec<(String, bytes::Bytes)>>, LogError>,
);

/// Reads `objects` (from [`from_slot`]) a few at a time, in order: through the leader each
/// read is a round trip, and a log holds every commit since the job started.
pub(super) fn read_ahead(
    store: &crate::store::Store,
    objects: Vec<(String, usize)>,
) -> impl futures::Stream<Item = ObjectRead> {
    let store = store.clone();
    futures::stream::iter(objects)
        .map(move |(path, skip)| {
            let store = store.clone();
            async move {
                let segs = read_object(&store, &path).await;
                (path, skip, segs)
            }
        })
        .buffered(READ_AHEAD)
}

/// Feeds `to` the task's own input tuples `lo+1..=hi`, in the order they were first fed: from
/// its input log (stages ≥ 2), or for the first stage (`source`) its share of the source file,
/// each line routed by the map `plan` says was in force for it.
pub(super) async fn own_input(
    env: &TaskEnv,
    (key, attempt): (&TaskKey, u32),
    source: Option<(PathMode, &SourceReplay)>,
    (plan, partitioner): (&StageRouting, &Partitioner),
    (lo, hi): (u64, u64),
    to: &mut Rebuilding<'_>,
) -> Result<(), Stop> {
    if hi <= lo {
        return Ok(());
    }
    let me = key.pos.index;
    let mut n = 0u64;
    if let Some((paths, r)) = source {
        let failed = |e: String| Stop::Failed(format!("rebuilding state from {}: {e}", r.path));
        let mut rd = open_replay(env, paths, r).await.map_err(failed)?;
        let mut part = Partitioner::new(partitioner.partition().clone(), 1);
        let point = |i: usize| plan.versions[i].at.get(&0).map_or(0, |p| p.outputs);
        // The source's outputs so far (the lines its filter kept, `open_replay`).
        let mut output = 0u64;
        while n < hi {
            let Some(t) = rd.next_tuple().await.map_err(|e| failed(e.to_string()))? else {
                return Err(failed(format!(
                    "the file ended before this task's tuple {hi}"
                )));
            };
            output += 1;
            let v = (1..plan.versions.len())
                .rev()
                .find(|i| output > point(*i))
                .unwrap_or(0);
            if plan.versions[v].map.owner(part.group(&t)) == me {
                n += 1;
                if n > lo {
                    to.take(t).await?;
                }
            }
        }
        return Ok(());
    }
    // Slots of this task's log read so far: its own compactor merges objects as it goes
    // (`store::log::compact`), so an object gone since the listing means list again.
    let mut slot = 0u64;
    loop {
        let lineage = lineage_of(&env.store, key, attempt).await?;
        let objects = from_slot(&lineage, slot);
        if objects.is_empty() {
            break;
        }
        let mut reads = read_ahead(&env.store, objects);
        while let Some((_, skip, segs)) = reads.next().await {
            let Some(segs) = segs? else { break };
            for (sealed_for, seg) in segs.into_iter().skip(skip) {
                for rec in decode_segment(env.store.seal(), &sealed_for, seg)? {
                    let LogRecord::Batch(b) = rec else { continue };
                    for t in b.tuples {
                        n += 1;
                        if n > lo {
                            to.take(t).await?;
                        }
                        if n >= hi {
                            return Ok(());
                        }
                    }
                }
                slot += 1;
            }
        }
    }
    Err(Stop::Failed(format!(
        "rebuilding state: this task's input log holds {n} tuples, fewer than the {hi} it fed"
    )))
}
