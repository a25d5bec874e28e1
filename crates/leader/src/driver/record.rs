//! What a job's driver writes onto the job's record: the core's counters, and the durable
//! record itself (with a new placement, or as it is when a rescale ends).

use super::Executor;
use crate::coordinator::record::RunState;
use crate::coordinator::JobCore;
use crate::state::{lock, State};

impl Executor {
    /// Copies the core's counters onto the job's record.
    pub(super) fn counters(&self, core: &JobCore) {
        let mut st = lock(&self.leader.state);
        self.count(&mut st, core);
    }

    /// See [`Executor::counters`], under the lock `st` already held; and each task whose next
    /// attempt waits for room marked so in its record.
    pub(super) fn count(&self, st: &mut State, core: &JobCore) {
        if let Some(j) = st.jobs.get_mut(&self.id) {
            j.failures = self.before.0 + core.failures();
            j.recoveries = self.before.1 + core.recoveries();
            // A resumed job keeps the failure an earlier leader recorded until a new one.
            if let Some(f) = core.last_failure() {
                j.last_failure = Some(f.to_string());
            }
        }
        // A task whose next attempt waits for room runs nowhere: no view shows it running
        // on the worker it left (hostile probe 10), and it holds no slot there.
        for (pos, attempt) in core.waiting() {
            let key = crate::model::ids::TaskKey {
                job: self.id.clone(),
                pos,
            };
            if let Some(t) = st.tasks.get_mut(&key) {
                t.wait_for_room(attempt);
            }
        }
    }

    /// Records the placement durably; called before any change of it takes effect.
    pub(super) async fn persist(&self, run: RunState) -> Result<(), String> {
        let record = {
            let mut st = lock(&self.leader.state);
            let j = st.jobs.get_mut(&self.id).ok_or("job record vanished")?;
            j.set_run(run);
            j.stored(&self.id)
        };
        self.leader
            .persist
            .put_job(record)
            .await
            .map_err(|e| format!("recording the job's placement: {e:#}"))
    }

    /// Records the job as it is now, its placement unchanged; a failure is logged (what it
    /// records is for the job's views, not its placement).
    pub(super) async fn persist_record(&self) {
        let record = {
            let st = lock(&self.leader.state);
            match st.jobs.get(&self.id) {
                Some(j) => j.stored(&self.id),
                None => return,
            }
        };
        if let Err(e) = self.leader.persist.put_job(record).await {
            tracing::warn!(job = %self.id, error = %format!("{e:#}"), "could not record the job's rescales");
        }
    }
}
