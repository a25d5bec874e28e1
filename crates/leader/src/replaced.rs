//! Ended jobs whose output was written over or removed since they ended (by a later job, an
//! upload or a delete): what is at their sink path is no longer theirs, and a follower is not
//! shown it (`api/output.rs`). The mark is kept in the job's record.

use crate::owned::norm;
use crate::state::State;
use crate::Leader;

impl State {
    /// Marks every ended job but `except` whose output `hit` writes over or removes
    /// (`hit(sink)`) as replaced `by` that: a follower of it is no longer shown what is there now. Returns the
    /// records to store again.
    pub fn replace_outputs(
        &mut self,
        hit: impl Fn(&str) -> bool,
        except: Option<&crate::model::ids::JobId>,
        by: &str,
    ) -> Vec<crate::persist::StoredJob> {
        let mut changed = Vec::new();
        for (id, j) in self.jobs.iter_mut() {
            if Some(id) != except
                && j.status().is_terminal()
                && j.output_replaced.is_none()
                && hit(&norm(&j.spec, &j.spec.sink_path))
            {
                j.output_replaced = Some(by.to_string());
                changed.push(j.stored(id));
            }
        }
        changed
    }
}

impl Leader {
    /// Stores again the records of ended jobs whose output was just replaced
    /// ([`State::replace_outputs`]); a failure is logged (the mark then lasts until a restart).
    pub async fn record_replaced(&self, records: Vec<crate::persist::StoredJob>) {
        for r in records {
            let id = r.id.clone();
            if let Err(e) = self.persist.put_job(r).await {
                tracing::warn!(job = %id, error = %format!("{e:#}"), "could not record that the job's output was replaced");
            }
        }
    }
}
