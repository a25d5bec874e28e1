//! Reading a gained key group's history for a rebuild: the tuples its earlier owners took,
//! from their input logs as they commit them, or in the first stage from the source file.

use super::{Takeover, LOG_POLL};
use crate::log::compact::from_slot;
use crate::log::{committed_lineage, decode_segment, LogRecord};
use crate::model::ids::{TaskKey, TaskPos};
use crate::model::partition::Partitioner;
use crate::model::spec::PathMode;
use crate::protocol::control::SourceReplay;
use crate::protocol::routing::StageRouting;
use crate::source::open_replay;
use crate::task::operator::Stop;
use crate::task::rebuild::{read_ahead, Rebuilding};
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet};

impl Takeover<'_> {
    /// Feeds, with the outputs dropped, the tuples of `groups` that task `t` took from each
    /// upstream link while maps `a..b` were in force, read from `t`'s input log as it
    /// commits them (waiting for the log to reach each bound).
    pub(super) async fn replay_log(
        &self,
        to: &mut Rebuilding<'_>,
        t: u32,
        (a, b): (usize, usize),
        groups: &BTreeSet<usize>,
    ) -> Result<u64, Stop> {
        let owner = TaskKey {
            job: self.key.job.clone(),
            pos: TaskPos {
                stage: self.key.pos.stage,
                index: t,
            },
        };
        let upto = &self.plan.versions[b].at;
        let lo = |u: u32| match a {
            0 => 0,
            _ => StageRouting::bound(self.plan.versions[a].at.get(&u), t),
        };
        // Per upstream link: the last tuple of the stretch, and how far the log was read.
        let mut want: BTreeMap<u32, (u64, u64, bool)> = upto
            .keys()
            .map(|u| (*u, (StageRouting::bound(upto.get(u), t), 0, false)))
            .collect();
        // Slots of the owner's log read so far (a slot is one group commit, whichever object
        // holds it now: the owner compacts its log as it goes, `store::log::compact`).
        let mut read = 0u64;
        let mut fed = 0u64;
        let mut part = Partitioner::new(self.partitioner_kind(), 1);
        // Bounds are relative to the epoch's first sequence number, as in `before` (an
        // at-least-once owner logs only its current epoch: `start_lineage_afresh`).
        let floor = self.hand.floor();
        let complete = |want: &BTreeMap<u32, (u64, u64, bool)>| {
            want.values()
                .all(|(hi, seen, ended)| *ended || (*hi != u64::MAX && seen >= hi))
        };
        loop {
            if complete(&want) {
                return Ok(fed);
            }
            let lineage = committed_lineage(&self.env.store, &owner).await?;
            let objects = from_slot(&lineage.unwrap_or_default(), read);
            if objects.is_empty() {
                tokio::time::sleep(LOG_POLL).await;
                continue;
            }
            let mut reads = read_ahead(&self.env.store, objects);
            while let Some((_, skip, segs)) = reads.next().await {
                // Gone: compacted since the listing; list again from the slot reached.
                let Some(segs) = segs? else { break };
                for (sealed_for, seg) in segs.into_iter().skip(skip) {
                    for rec in decode_segment(self.env.store.seal(), &sealed_for, seg)? {
                        match rec {
                            LogRecord::Batch(batch) => {
                                let (low, w) = (lo(batch.from), want.get_mut(&batch.from));
                                let Some((hi, seen, _)) = w else { continue };
                                for (i, tuple) in batch.tuples.into_iter().enumerate() {
                                    let seq = (batch.first_seq + i as u64).saturating_sub(floor);
                                    *seen = (*seen).max(seq);
                                    if seq > low
                                        && seq <= *hi
                                        && groups.contains(&part.group(&tuple))
                                    {
                                        to.take(tuple).await?;
                                        fed += 1;
                                    }
                                }
                            }
                            LogRecord::Eos { from, .. } => {
                                if let Some(w) = want.get_mut(&from) {
                                    w.2 = true;
                                }
                            }
                        }
                    }
                    read += 1;
                }
                if complete(&want) {
                    return Ok(fed);
                }
            }
        }
    }

    /// Feeds, with the outputs dropped, the lines of the source file in `groups` that the
    /// source routed while maps `a..b` were in force (the first stage: the file is its log).
    pub(super) async fn replay_source(
        &self,
        to: &mut Rebuilding<'_>,
        (a, b): (usize, usize),
        groups: &BTreeSet<usize>,
        paths: PathMode,
        r: &SourceReplay,
    ) -> Result<u64, Stop> {
        let point = |i: usize| match i {
            0 => 0,
            _ => self.plan.versions[i].at.get(&0).map_or(0, |p| p.outputs),
        };
        let (lo, hi) = (point(a), point(b));
        let failed = |e: String| Stop::Failed(format!("rebuilding state from {}: {e}", r.path));
        let mut rd = open_replay(self.env, paths, r).await.map_err(failed)?;
        let mut part = Partitioner::new(self.partitioner_kind(), 1);
        // The source's outputs so far (the lines its filter kept, `open_replay`).
        let (mut output, mut fed) = (0u64, 0u64);
        while output < hi {
            let Some(t) = rd.next_tuple().await.map_err(|e| failed(e.to_string()))? else {
                break;
            };
            output += 1;
            if output > lo && groups.contains(&part.group(&t)) {
                to.take(t).await?;
                fed += 1;
            }
        }
        Ok(fed)
    }
}
