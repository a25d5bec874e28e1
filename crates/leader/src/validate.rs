//! The leader's half of "validate at the door": what needs the filesystem or the store
//! (source exists, operators exist and are executable, sink is writable), and what needs the
//! cluster (room for the job's data links). Combined with the static checks of
//! `model::check`, every problem is reported before anything starts.

use crate::model::check::{links, links_explained, tasks_list, Problem, LINKS_FIELD};
use crate::model::ids::WorkerId;
use crate::model::spec::{JobSpec, OperatorSpec, PathMode};
use crate::protocol::control::WorkerState;
use crate::state::State;
use rainstorm_store::fetch::ExecPolicy;
use rainstorm_store::store::Store;
use std::path::Path;

/// Checks everything outside the job file; returns all problems found.
///
/// Operators must obey `policy` (see `runtime::fetch`): from the store, or from an allowed
/// directory; anything else is refused here with the field and the rule, before any worker
/// hears of the job.
///
/// `present`: store paths known to exist in a store that is not a local directory (S3), which
/// the caller looked up beforehand.
pub fn check(
    spec: &JobSpec,
    store: &Store,
    policy: &ExecPolicy,
    present: &std::collections::BTreeSet<String>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let remote = |p: &str| {
        spec.paths == PathMode::Store
            && rainstorm_store::store::clean_path(p).is_ok_and(|c| present.contains(&c))
    };
    let resolve = |p: &str| -> Option<std::path::PathBuf> {
        match spec.paths {
            PathMode::Local => Some(Path::new(p).to_path_buf()),
            PathMode::Store => store.local_path(p).ok().flatten(),
        }
    };
    let not_found = match spec.paths {
        PathMode::Local => "file not found",
        PathMode::Store => "not found in the store (upload it with `rainstorm put LOCAL REMOTE`)",
    };
    let source_problem = match resolve(&spec.source_path) {
        None if remote(&spec.source_path) => None,
        None => Some(not_found.to_string()),
        Some(p) => match std::fs::metadata(&p) {
            // Opened once here: a file its readers may not open failed every attempt of the
            // source, 20 restarts and minutes of back-off later (hostile probe).
            Ok(m) if m.is_file() => std::fs::File::open(&p)
                .err()
                .map(|e| format!("cannot be read: {e}")),
            Ok(m) if m.is_dir() => Some("is a directory; name a file".into()),
            // A FIFO or a device is read once: a restarted source could not read it again.
            Ok(_) => Some("is not a regular file (a pipe or a device cannot be read again after a failure); name a file".into()),
            Err(_) => Some(not_found.to_string()),
        },
    };
    if let Some(why) = source_problem {
        problems.push(Problem::new("source.path", &spec.source_path, why));
    }
    // As for an operator: an absolute path names a local file, never a store object. A
    // submitted job's output is a store object, so such a sink is refused rather than quietly
    // written to the store path without its leading slash.
    let sink_absolute = spec.paths == PathMode::Store && Path::new(&spec.sink_path).is_absolute();
    if sink_absolute {
        problems.push(Problem::new(
            "sink.path",
            &spec.sink_path,
            "an absolute path names a local file, but a submitted job writes its output to the \
             store: name a store path (like out/result.txt) and fetch it with `rainstorm get`",
        ));
    } else if let Some(p) = resolve(&spec.sink_path) {
        if p.is_dir() {
            problems.push(Problem::new(
                "sink.path",
                &spec.sink_path,
                "is a directory; name a file",
            ));
        } else if let Some(file) = p.ancestors().skip(1).find(|a| a.is_file()) {
            // Found now, not when the job ends and its output cannot be written.
            let name = match spec.paths {
                PathMode::Local => file.display().to_string(),
                PathMode::Store => "one of its folders".to_string(),
            };
            problems.push(Problem::new(
                "sink.path",
                &spec.sink_path,
                format!(
                    "{name} is a file, so no output can be written under it; name another path"
                ),
            ));
        }
    }
    // A local sink that is the source spelled another way (`./in.csv`, an absolute path, a
    // link): the output would replace the input (hostile probe 14; the static check compares
    // the spellings only).
    if spec.paths == PathMode::Local && same_file(&spec.source_path, &spec.sink_path) {
        problems.push(Problem::new(
            "sink.path",
            &spec.sink_path,
            "is the job's source file, named another way: the output would replace the input; name another file",
        ));
    }
    if spec.paths == PathMode::Store
        && !sink_absolute
        && rainstorm_store::store::clean_path(&spec.sink_path).is_err()
    {
        problems.push(Problem::new(
            "sink.path",
            &spec.sink_path,
            "not a valid store path",
        ));
    }
    for (i, st) in spec.stages.iter().enumerate() {
        if let OperatorSpec::Exec { path, .. } = &st.operator {
            let field = format!("stages[{}].exec", i + 1);
            let res: Result<(), String> = match spec.paths {
                PathMode::Local => policy.local(path).map(|_| ()).map_err(|e| e.to_string()),
                PathMode::Store => {
                    let in_store = || {
                        remote(path)
                            || store
                                .local_path(path)
                                .ok()
                                .flatten()
                                .is_some_and(|p| p.is_file())
                    };
                    // The worker's order: an allowed local file first, then the store (pinned at submit).
                    // An absolute path names a local file, never a store object.
                    match policy.local(path) {
                        Ok(_) => Ok(()),
                        Err(e) if Path::new(path).is_absolute() => Err(e.to_string()),
                        Err(_) if in_store() => Ok(()),
                        Err(_) => Err("operator not found in the store (upload it with `rainstorm put`, or name it by a relative path that `submit` uploads)".to_string()),
                    }
                }
            };
            if let Err(msg) = res {
                problems.push(Problem::new(field, path, msg));
            }
        }
    }
    problems
}

/// Whether local paths `a` (an existing file) and `b` (a file that may not exist yet) name
/// the same file, whatever their spelling: `b`'s folder resolved, links and all.
pub fn same_file(a: &str, b: &str) -> bool {
    let (Ok(a), b) = (std::fs::canonicalize(a), Path::new(b)) else {
        return false;
    };
    let b = match std::fs::canonicalize(b) {
        Ok(b) => b,
        Err(_) => match (b.parent(), b.file_name()) {
            (Some(dir), Some(name)) => {
                let dir = if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                };
                match std::fs::canonicalize(dir) {
                    Ok(d) => d.join(name),
                    Err(_) => return false,
                }
            }
            _ => return false,
        },
    };
    a == b
}

/// What the cluster holds of data links: the smallest data-connection cap among the live
/// workers (and whose it is), and the links the running jobs may hold of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkRoom {
    /// The smallest live worker's cap (connections each way).
    pub cap: u64,
    /// That worker.
    pub worker: WorkerId,
    /// Links of the jobs running now (each counted whole, as `model::check::links`).
    pub used: u64,
}

/// The cluster's room for data links now, among live workers whose registration was used
/// (a flood of registrations that never ask for work does not shrink it); `None` with no
/// such worker (the job then waits for one).
///
/// Why the smallest worker and not the sum: placement is round robin per task and a failed
/// worker's tasks move to the survivors, so one worker can end up holding every link of a
/// job (a one-task stage receives a link from every task before it). A cap that held for
/// the cluster as a whole could still leave one listener full, and a link that cannot
/// connect stalls its job.
pub fn link_room(st: &State) -> Option<LinkRoom> {
    let (worker, cap) = st
        .workers
        .iter()
        .filter(|(_, w)| w.state == WorkerState::Alive && w.heard)
        .map(|(id, w)| (id.clone(), w.data_conns))
        .min_by_key(|(_, c)| *c)?;
    let used = st
        .jobs
        .values()
        .filter(|j| j.events().is_some())
        .map(|j| links(&j.spec))
        .sum();
    Some(LinkRoom { cap, worker, used })
}

/// The link rule's cluster half: a job's links plus the running jobs' must fit in the
/// smallest live worker's data-connection cap. One problem naming the stages' task counts,
/// the numbers and the rule, or none.
pub fn links_fit(spec: &JobSpec, room: Option<&LinkRoom>) -> Vec<Problem> {
    let Some(room) = room else {
        return Vec::new();
    };
    let need = links(spec);
    let free = room.cap.saturating_sub(room.used);
    if need <= free {
        return Vec::new();
    }
    vec![Problem::new(
        LINKS_FIELD,
        tasks_list(spec),
        format!(
            "the job needs {}; the cluster has room for {free} more: it holds as many links \
             at once as its smallest live worker takes data connections ({}, worker {}: \
             RAINSTORM_MAX_DATA_CONNS fitted to its open-files limit), and running jobs hold \
             {}. Use fewer tasks in adjacent stages, or submit it when jobs have ended",
            links_explained(spec),
            room.cap,
            room.worker,
            room.used
        ),
    )]
}

#[cfg(test)]
mod tests;
