//! Input fed straight to the operator and acknowledged once processed: every stage under
//! at-least-once and at-most-once, and the first stage under exactly-once, whose input log is
//! the source file itself — so it alone can regenerate acknowledged input it never saw.

use super::operator::{Operator, Stop};
use super::receive::{Accepted, Intake, Unseen};
use super::{TaskEnv, TaskStatus};
use crate::dataplane::meter::Stopwatch;
use crate::model::groups::map_for;
use crate::model::partition::Partitioner;
use crate::model::spec::PathMode;
use crate::protocol::control::SourceReplay;
use crate::source::open_replay;
use std::sync::atomic::Ordering;

/// Feeds the operator as input is accepted.
pub(super) struct DirectIntake<'a, 't> {
    pub(super) op: &'a mut Operator,
    /// How to regenerate the source link's input (first stage under exactly-once).
    pub(super) replay: Option<(&'a TaskEnv, PathMode, &'a SourceReplay, u32)>,
    /// The task's working time: feeding, flushing and regenerating run on it.
    pub(super) working: &'a Stopwatch,
    /// Key groups it gains are taken over with their state (a stage that keeps state).
    pub(super) takeover: Option<&'a mut super::takeover::Takeover<'t>>,
}

impl Intake for DirectIntake<'_, '_> {
    async fn fresh(&mut self, batch: Accepted) -> Result<(), Stop> {
        let _working = self.working.run();
        for (i, t) in batch.tuples.into_iter().enumerate() {
            let at = (batch.from, batch.first_seq + i as u64);
            let k = self.takeover.as_deref_mut();
            super::takeover::feed(self.op, k, at, t, batch.emit_ns).await?;
        }
        Ok(())
    }

    async fn ended(&mut self, from: u32, _last_seq: u64) -> Result<(), Stop> {
        match self.takeover.as_deref_mut() {
            Some(k) => k.ended(self.op, from).await,
            None => Ok(()),
        }
    }

    async fn regenerate(&mut self, unseen: Unseen, progress: &TaskStatus) -> Result<(), Stop> {
        let Some((env, paths, r, me)) = self.replay else {
            return Err(unseen.cannot_regenerate("task"));
        };
        let (from, after, upto, ended) = (unseen.from, unseen.after, unseen.upto, unseen.ended);
        let _working = self.working.run();
        let failed = |e: String| Stop::Failed(format!("replaying source {}: {e}", r.path));
        let mut rd = open_replay(env, paths, r).await.map_err(failed)?;
        let mut part = Partitioner::new(r.partition.clone(), r.tasks as usize);
        // The source routed its n-th output (the n-th line its filter kept, `open_replay`) by
        // the map in force for it.
        let mut output = 0u64;
        let mut seq = 0u64;
        while seq < upto {
            let Some(t) = rd.next_tuple().await.map_err(|e| failed(e.to_string()))? else {
                return Err(failed(format!(
                    "the file ended at tuple {seq} of this task, before the acknowledged {upto}"
                )));
            };
            output += 1;
            let g = part.group(&t);
            if map_for(&r.steps, output, r.tasks).owner(g) == me {
                seq += 1;
                // As the source sent it: projected where the stage reads only part of it.
                let t = part.project(t);
                if seq > after {
                    let bytes = (t.key.len() + t.value.len()) as u64;
                    let (k, now) = (self.takeover.as_deref_mut(), crate::dataplane::now_ns());
                    super::takeover::feed(self.op, k, (from, seq), t, now).await?;
                    progress.tuples_in.fetch_add(1, Ordering::Relaxed);
                    progress.bytes_in.fetch_add(bytes, Ordering::Relaxed);
                }
            }
        }
        tracing::info!(
            from,
            after,
            tuples = upto,
            ended,
            "recovered from the source file: regenerated the input its link holds acknowledged"
        );
        Ok(())
    }

    async fn idle(&mut self) -> Result<(), Stop> {
        let _working = self.working.run();
        if let Some(k) = self.takeover.as_deref_mut() {
            k.refresh(self.op).await?;
        }
        self.op.idle().await
    }

    async fn interrupted(&mut self) -> Result<(), Stop> {
        let DirectIntake { op, takeover, .. } = self;
        tokio::select! {
            e = op.died() => Err(e),
            () = super::takeover::routing_changed(takeover.as_deref_mut()) => Ok(()),
        }
    }

    fn acks_on_accept(&self) -> bool {
        true
    }
}
