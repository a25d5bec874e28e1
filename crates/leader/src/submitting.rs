//! A submission's hold on the files it reads. A job's source and operators are checked in the
//! store (they exist, they are readable, operators are pinned by hash) before the job claims
//! them as a running job; a delete that ran wholly in between left an accepted job reading
//! nothing (a probe's 16 concurrent submits of one new source: 12 jobs accepted, each then
//! failing 21 times "not found in the store"). The hold makes the check and the claim one step
//! with respect to deletes: taken before the check, refused while a delete of any of the files
//! is under way, and refusing deletes until the job's own claim replaces it (or the
//! submission is refused).

use super::owned::{job_files, FileConflict};
use super::state::{lock, State};
use super::Leader;
use crate::model::spec::JobSpec;
use std::sync::Arc;

/// A submission's hold; dropping it ends the hold.
pub struct Submitting {
    leader: Arc<Leader>,
    number: u64,
}

impl Drop for Submitting {
    fn drop(&mut self) {
        lock(&self.leader.state)
            .files
            .submitting
            .remove(&self.number);
    }
}

/// Whether `path` is `prefix` or lies under it.
fn under(path: &str, prefix: &str) -> bool {
    path == prefix || path.starts_with(&format!("{prefix}/"))
}

impl State {
    /// The file under `clean` a job being submitted reads, if any: a delete of it is
    /// refused meanwhile.
    pub fn read_by_a_submission(&self, clean: &str) -> Option<&String> {
        (self.files.submitting.values())
            .flatten()
            .find(|p| under(p, clean))
    }
}

impl Leader {
    /// Holds the files `spec` reads for its submission, unless a delete of one is under way.
    pub fn hold_for_submission(
        self: &Arc<Self>,
        spec: &JobSpec,
    ) -> Result<Submitting, FileConflict> {
        let reads = job_files(spec, &[]).reads;
        let mut st = lock(&self.state);
        let deleting = reads.iter().find_map(|p| {
            (st.files.deleting.keys())
                .find(|d| under(p, d))
                .map(|d| (p, d))
        });
        if let Some((p, d)) = deleting {
            return Err(FileConflict(format!(
                "{p}: {d} is being deleted now; the job cannot use it"
            )));
        }
        let number = st.files.next_submission;
        st.files.next_submission += 1;
        st.files.submitting.insert(number, reads);
        Ok(Submitting {
            leader: self.clone(),
            number,
        })
    }
}
