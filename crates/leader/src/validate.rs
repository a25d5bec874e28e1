//! The leader's half of "validate at the door": what needs the filesystem or the store
//! (source exists, operators exist and are executable, sink is writable). Combined with the
//! static checks of `model::check`, every problem is reported before anything starts.

use crate::model::check::Problem;
use crate::model::spec::{JobSpec, OperatorSpec, PathMode};
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
    match resolve(&spec.source_path) {
        None if remote(&spec.source_path) => {}
        Some(p) if p.is_file() => {}
        Some(p) if p.is_dir() => problems.push(Problem::new(
            "source.path",
            &spec.source_path,
            "is a directory; name a file",
        )),
        _ => problems.push(Problem::new(
            "source.path",
            &spec.source_path,
            match spec.paths {
                PathMode::Local => "file not found",
                PathMode::Store => {
                    "not found in the store (upload it with `rainstorm put LOCAL REMOTE`)"
                }
            },
        )),
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
        }
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
