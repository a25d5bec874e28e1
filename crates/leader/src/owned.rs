//! Owned files: what each running job reads (its source, its operators) and writes (its sink),
//! so no submission, upload or delete can corrupt a running job. A running job's sink is no
//! other running job's sink or source, and never its own source; a `PUT` or `DELETE` on a file
//! a running job reads or writes is refused (409). An upload or a delete holds its path while
//! it runs, so a job submitted meanwhile that names it is refused too (the check and the
//! change are one step with respect to submissions). Also here: operators pinned by content
//! hash at submission, so a job runs exactly the executable it was validated against.

use super::files::{unhold, JobFiles};
use super::state::{lock, State};
use super::{Leader, SubmitError};
use crate::model::check::Problem;
use crate::model::ids::JobId;
use crate::model::spec::{JobSpec, OperatorSpec, PathMode};
use futures::StreamExt;
use rainstorm_store::store::{blob_path, clean_path};
use std::collections::BTreeSet;
use std::sync::Arc;

/// A claim refused because a running job, an upload or a delete holds the file; the message
/// names both sides and what to do (the API answers it as 409 Conflict).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FileConflict(pub String);

pub(crate) fn norm(spec: &JobSpec, p: &str) -> String {
    match spec.paths {
        PathMode::Store => clean_path(p).unwrap_or_else(|_| p.to_string()),
        PathMode::Local => p.to_string(),
    }
}

/// The files a job names.
pub fn job_files(spec: &JobSpec, pinned: &[String]) -> JobFiles {
    let mut reads: BTreeSet<String> = [norm(spec, &spec.source_path)].into();
    for st in &spec.stages {
        if let OperatorSpec::Exec { path, .. } = &st.operator {
            reads.insert(norm(spec, path));
        }
    }
    reads.extend(pinned.iter().cloned());
    JobFiles {
        reads,
        writes: norm(spec, &spec.sink_path),
    }
}

fn running(st: &State) -> impl Iterator<Item = (&JobId, &JobFiles)> {
    st.files
        .jobs
        .iter()
        .filter(|(id, _)| st.jobs.get(*id).is_some_and(|j| !j.status().is_terminal()))
}

/// Whether `path` is `prefix` or lies under it.
fn under(path: &str, prefix: &str) -> bool {
    path == prefix || path.starts_with(&format!("{prefix}/"))
}

/// Whether writing one of `a` and `b` can break the other: the same path, or one a folder of
/// the other (an object at `res/x` makes a sink at `res/x/out.txt` unwritable on a
/// filesystem, and an object under `res/x` makes a sink at `res/x` a directory).
fn overlap(a: &str, b: &str) -> bool {
    under(a, b) || under(b, a)
}

impl State {
    /// Problems of a job submission that reads the output of a running job: that output is
    /// written only when the job ends, so the submission is told so rather than "not found".
    pub fn reads_running_output(&self, spec: &JobSpec) -> Vec<Problem> {
        let files = job_files(spec, &[]);
        let mut problems = Vec::new();
        for (id, other) in running(self) {
            if let Some(r) = files.reads.iter().find(|r| **r == other.writes) {
                let field = if *r == norm(spec, &spec.source_path) {
                    "source.path"
                } else {
                    "stages.exec"
                };
                problems.push(Problem::new(
                    field,
                    r,
                    format!("the sink of running job {id}, written when it ends; it cannot be read while it is written"),
                ));
            }
        }
        problems
    }

    /// Refuses a new job whose files clash with a running job's (or with its own), naming
    /// both jobs; else records them under the id the job is about to get.
    pub fn claim_files(&mut self, me: &JobId, files: JobFiles) -> Result<(), FileConflict> {
        // Ended jobs own nothing any more.
        let ended: Vec<JobId> = self
            .files
            .jobs
            .keys()
            .filter(|id| self.jobs.get(*id).is_none_or(|j| j.status().is_terminal()))
            .cloned()
            .collect();
        for id in ended {
            self.files.jobs.remove(&id);
        }
        let sink = &files.writes;
        if files.reads.contains(sink) {
            return Err(FileConflict(format!(
                "sink.path {sink}: a job's sink cannot be its own source or operator (this job reads it)"
            )));
        }
        if reserved(sink) {
            return Err(FileConflict(format!(
                "sink.path {sink}: logs/, blobs/ and cluster/ belong to the engine"
            )));
        }
        for (id, other) in running(self) {
            if &other.writes == sink {
                return Err(FileConflict(format!(
                    "sink.path {sink}: already the sink of running job {id}; this job cannot write it too"
                )));
            }
            if overlap(&other.writes, sink) {
                return Err(FileConflict(format!(
                    "sink.path {sink}: running job {id} writes {}, and one of the two paths is a folder of the other; this job cannot write it",
                    other.writes
                )));
            }
            if let Some(r) = other.reads.iter().find(|r| overlap(r, sink)) {
                return Err(FileConflict(format!(
                    "sink.path {sink}: running job {id} reads {r}; this job cannot write it"
                )));
            }
            if let Some(r) = files.reads.iter().find(|r| overlap(r, &other.writes)) {
                return Err(FileConflict(format!(
                    "{r}: the sink of running job {id} is {}; this job cannot read it while it is written",
                    other.writes
                )));
            }
        }
        if let Some((p, w)) = files.reads.iter().chain([sink]).find_map(|p| {
            (self.files.writing.keys())
                .find(|w| overlap(p, w))
                .map(|w| (p, w))
        }) {
            return Err(FileConflict(format!(
                "{p}: {w} is being uploaded now; this job cannot use it"
            )));
        }
        if let Some((p, d)) = files.reads.iter().chain([sink]).find_map(|p| {
            self.files
                .deleting
                .keys()
                .find(|d| under(p, d))
                .map(|d| (p, d))
        }) {
            return Err(FileConflict(format!(
                "{p}: {d} is being deleted now; this job cannot use it"
            )));
        }
        self.files.jobs.insert(me.clone(), files);
        Ok(())
    }

    /// Holds `clean` and everything under it for a delete, unless a running job uses any of
    /// it: until [`State::end_delete`], a job naming any of it is refused.
    pub fn begin_delete(&mut self, clean: &str) -> Result<(), FileConflict> {
        for (id, f) in running(self) {
            if let Some(p) = f.reads.iter().chain([&f.writes]).find(|p| under(p, clean)) {
                return Err(FileConflict(format!(
                    "{clean}: running job {id} uses {p}; nothing was deleted"
                )));
            }
        }
        if let Some(p) = self.read_by_a_submission(clean) {
            return Err(FileConflict(format!(
                "{clean}: a job being submitted reads {p}; nothing was deleted"
            )));
        }
        *self.files.deleting.entry(clean.to_string()).or_default() += 1;
        Ok(())
    }

    /// Ends a delete's hold on `clean` (see [`State::begin_delete`]).
    pub fn end_delete(&mut self, clean: &str) {
        unhold(&mut self.files.deleting, clean);
    }

    /// Holds `clean` for an upload, unless a running job reads or writes it, or writes its
    /// output where the upload would be a folder of it or lie under it: until the hold ends
    /// (`Writing` dropped), a job naming it is refused.
    pub fn begin_write(&mut self, clean: &str) -> Result<(), FileConflict> {
        if let Some((id, f)) =
            running(self).find(|(_, f)| f.reads.contains(clean) || f.writes == clean)
        {
            let how = if f.writes == clean { "writes" } else { "reads" };
            return Err(FileConflict(format!(
                "{clean}: running job {id} {how} it; try again when it ends"
            )));
        }
        // A file where a running job's sink needs a folder, or under its sink's path, would
        // make the output unwritable when the job ends.
        if let Some((id, f)) = running(self).find(|(_, f)| overlap(&f.writes, clean)) {
            return Err(FileConflict(format!(
                "{clean}: running job {id} writes its output to {}, and one of the two paths is a folder of the other; try again when it ends",
                f.writes
            )));
        }
        *self.files.writing.entry(clean.to_string()).or_default() += 1;
        Ok(())
    }

    /// Forgets an ended job's files (kept only while they can matter: running jobs).
    pub fn release_files(&mut self, id: &JobId) {
        self.files.jobs.remove(id);
    }
}

/// An upload in progress; dropping it ends the claim.
pub struct Writing {
    leader: Arc<Leader>,
    path: String,
}

impl Drop for Writing {
    fn drop(&mut self) {
        unhold(&mut lock(&self.leader.state).files.writing, &self.path);
    }
}

/// A delete in progress; dropping it ends the hold.
pub struct Deleting {
    leader: Arc<Leader>,
    path: String,
}

impl Drop for Deleting {
    fn drop(&mut self) {
        lock(&self.leader.state).end_delete(&self.path);
    }
}

impl Leader {
    /// Claims `clean` for an upload, unless a running job reads or writes it (see
    /// [`State::begin_write`]).
    pub fn claim_write(self: &Arc<Self>, clean: &str) -> Result<Writing, FileConflict> {
        lock(&self.state).begin_write(clean)?;
        Ok(Writing {
            leader: self.clone(),
            path: clean.to_string(),
        })
    }

    /// Holds `clean` (and what lies under it) for a delete, unless a running job uses any of
    /// it; a job submitted while the hold lasts cannot name any of it.
    pub fn claim_delete(self: &Arc<Self>, clean: &str) -> Result<Deleting, FileConflict> {
        lock(&self.state).begin_delete(clean)?;
        Ok(Deleting {
            leader: self.clone(),
            path: clean.to_string(),
        })
    }

    /// Store paths of the job (source, operators) that exist in a store other than a local
    /// directory, for validation.
    pub async fn present_in_store(&self, spec: &JobSpec) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        if spec.paths != PathMode::Store || self.store.is_local() {
            return out;
        }
        let mut names = vec![spec.source_path.clone()];
        for st in &spec.stages {
            if let OperatorSpec::Exec { path, .. } = &st.operator {
                names.push(path.clone());
            }
        }
        for n in names {
            if let Ok(c) = clean_path(&n) {
                if self.store.exists(&c).await.unwrap_or(false) {
                    out.insert(c);
                }
            }
        }
        out
    }

    /// Copies store object `clean` to `blobs/sha256/HEX` (unless that blob exists) and returns
    /// the blob's path, streaming both passes (hash, then copy) so an operator of any size
    /// costs the leader one buffer. A copy whose content is not what was hashed (the object
    /// was replaced in between) is removed and refused.
    async fn pin_blob(&self, clean: &str) -> Result<(String, crate::pins::Hold), String> {
        let hex = hash_stream(self.store.open(clean).await.map_err(|e| e.to_string())?)
            .await
            .map_err(|e| format!("reading {clean}: {e}"))?;
        let blob = blob_path(&hex);
        // Held before it is looked up: not removed until the job names it.
        let held = self.pins.hold(&blob).await;
        if self.store.exists(&blob).await.unwrap_or(false) {
            return Ok((blob, held));
        }
        let rd = self.store.open(clean).await.map_err(|e| e.to_string())?;
        let hasher = Arc::new(std::sync::Mutex::new(<sha2::Sha256 as sha2::Digest>::new()));
        let seen = hasher.clone();
        let body = tokio_util::io::ReaderStream::with_capacity(rd, 256 << 10).inspect(move |c| {
            if let Ok(c) = c {
                sha2::Digest::update(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()), c);
            }
        });
        self.store
            .put_stream(&blob, body)
            .await
            .map_err(|e| format!("storing {blob}: {e}"))?;
        let copied = {
            let h = std::mem::take(&mut *hasher.lock().unwrap_or_else(|p| p.into_inner()));
            hex::encode(sha2::Digest::finalize(h))
        };
        if copied != hex {
            if let Err(e) = self.store.delete_prefix(&blob).await {
                tracing::warn!(%blob, error = %e, "removing a blob whose copy changed failed");
            }
            return Err(format!(
                "{clean} changed while it was being pinned; submit again"
            ));
        }
        Ok((blob, held))
    }

    /// Pins every store operator of `spec` by content: reads it, stores it under
    /// `blobs/sha256/HEX` and makes the stage name that object, which workers verify before
    /// running. Returns the store paths as named (the job reads them), and a hold on each blob
    /// the job runs, to keep until the job is recorded (`pins`).
    pub async fn pin_operators(
        &self,
        spec: &mut JobSpec,
    ) -> Result<(Vec<String>, Vec<crate::pins::Hold>), SubmitError> {
        let mut named = Vec::new();
        let mut held = Vec::new();
        if spec.paths != PathMode::Store {
            return Ok((named, held));
        }
        for (i, st) in spec.stages.iter_mut().enumerate() {
            let OperatorSpec::Exec { path, .. } = &mut st.operator else {
                continue;
            };
            if rainstorm_store::store::pinned_hash(path).is_some() {
                // Named by content already: held as if pinned here.
                held.push(self.pins.hold(path).await);
                continue;
            }
            if std::path::Path::new(path.as_str()).is_absolute() {
                continue;
            }
            let Ok(clean) = clean_path(path) else {
                continue;
            };
            let problem = |msg: String| {
                SubmitError::Invalid(vec![Problem::new(
                    format!("stages[{}].exec", i + 1),
                    path.as_str(),
                    msg,
                )])
            };
            let (blob, hold) = self
                .pin_blob(&clean)
                .await
                .map_err(|e| problem(format!("cannot pin the operator: {e}")))?;
            named.push(clean);
            held.push(hold);
            *path = blob;
        }
        Ok((named, held))
    }
}

/// Store areas the engine owns: input logs, content-addressed operators, and the cluster's id
/// (`rainstorm_store::marker`).
pub const RESERVED: [&str; 3] = ["logs", "blobs", "cluster"];

/// Whether a clean store path lies in an area the engine owns (not writable, deletable or
/// usable as a sink through the API).
pub fn reserved(clean: &str) -> bool {
    let top = clean.split('/').next().unwrap_or("");
    RESERVED.contains(&top)
}

/// The SHA-256 of everything `rd` yields, read in bounded chunks.
async fn hash_stream(mut rd: rainstorm_store::store::ObjectReader) -> std::io::Result<String> {
    use sha2::Digest;
    use tokio::io::AsyncReadExt;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = rd.read(&mut buf).await?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests;
