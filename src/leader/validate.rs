//! The leader's half of "validate at the door": what needs the filesystem or the store
//! (source exists, operators exist and are executable, sink is writable). Combined with the
//! static checks of `model::check`, every problem is reported before anything starts.

use crate::model::check::Problem;
use crate::model::spec::{JobSpec, OperatorSpec, PathMode};
use crate::runtime::store::Store;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn check_executable(path: &Path) -> Result<(), &'static str> {
    match std::fs::metadata(path) {
        Err(_) => Err("operator not found"),
        Ok(m) if !m.is_file() => Err("operator is not a file"),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => {
            Err("operator is not executable (chmod +x it)")
        }
        Ok(_) => Ok(()),
    }
}

/// Finds an executable command on PATH.
fn on_path(name: &str) -> Option<std::path::PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(name))
        .find(|p| check_executable(p).is_ok())
}

/// Checks everything outside the job file; returns all problems found.
pub fn check(spec: &JobSpec, store: &Store) -> Vec<Problem> {
    let mut problems = Vec::new();
    let resolve = |p: &str| -> Option<std::path::PathBuf> {
        match spec.paths {
            PathMode::Local => Some(Path::new(p).to_path_buf()),
            PathMode::Store => store.local_path(p).ok().flatten(),
        }
    };
    match resolve(&spec.source_path) {
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
    if let Some(p) = resolve(&spec.sink_path) {
        if p.is_dir() {
            problems.push(Problem::new(
                "sink.path",
                &spec.sink_path,
                "is a directory; name a file",
            ));
        }
    }
    if spec.paths == PathMode::Store && crate::runtime::store::clean_path(&spec.sink_path).is_err()
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
            let local = Path::new(path);
            let res = match spec.paths {
                PathMode::Local if !path.contains('/') => match on_path(path) {
                    Some(_) => Ok(()),
                    None => Err("operator not found (not a file here, nor a command on PATH)"),
                },
                PathMode::Local => check_executable(local),
                PathMode::Store => {
                    let in_store = store
                        .local_path(path)
                        .ok()
                        .flatten()
                        .is_some_and(|p| p.is_file());
                    if in_store {
                        Ok(())
                    } else if local.is_absolute() {
                        check_executable(local)
                    } else {
                        Err("operator not found in the store (upload it with `rainstorm put`) nor as an absolute path")
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
