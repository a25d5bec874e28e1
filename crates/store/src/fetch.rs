//! Where an executable operator comes from on a worker, and the policy that says which
//! executables may run at all.
//!
//! **The exec policy.** An operator runs from the store (uploaded by `submit` or `put`, fetched
//! into the worker's private directory) or from a directory the operator of the cluster named
//! with `--allow-exec DIR`; nothing else. The leader checks it at submission (`leader::validate`)
//! and every worker checks it again, with its own directories, before it spawns anything.
//! Directories are compared after resolving symbolic links and `..`, so a link inside an allowed
//! directory that points outside it does not pass. `rainstorm run` (a user's own job on their
//! own machine, as themselves) also allows commands on PATH; see [`ExecPolicy::local_run`].

use crate::protocol::control::TaskAssignment;
use crate::store::Store;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The rule a cluster enforces, as validation reports it.
pub const RULE: &str = "executables run only from the store or an --allow-exec directory";

/// The rule `rainstorm run` enforces, as validation reports it.
pub const LOCAL_RULE: &str = "executables run only from the current directory, the job file's directory, a directory on PATH or an --allow-exec directory";

/// Which executables may run as operators.
#[derive(Clone, Debug, Default)]
pub struct ExecPolicy {
    /// Directories (canonical) whose executables, at any depth, may run.
    dirs: Vec<PathBuf>,
    /// Bare command names are looked up on PATH, and the directories on PATH are allowed
    /// (`rainstorm run` only).
    path_commands: bool,
}

/// Whether `path` is a regular file someone may execute.
pub fn check_executable(path: &Path) -> Result<(), &'static str> {
    match std::fs::metadata(path) {
        Err(_) => Err("operator not found"),
        Ok(m) if !m.is_file() => Err("operator is not a file"),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => {
            Err("operator is not executable (chmod +x it)")
        }
        Ok(_) => Ok(()),
    }
}

/// The directories on PATH.
fn path_dirs() -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default()
}

impl ExecPolicy {
    /// A cluster's policy: the store and `dirs` (each must be an existing directory).
    pub fn new(dirs: &[PathBuf]) -> anyhow::Result<ExecPolicy> {
        let mut canon = Vec::new();
        for d in dirs {
            let c = std::fs::canonicalize(d)
                .map_err(|e| anyhow::anyhow!("--allow-exec {}: {e}", d.display()))?;
            if !c.is_dir() {
                anyhow::bail!("--allow-exec {}: not a directory", d.display());
            }
            canon.push(c);
        }
        Ok(ExecPolicy {
            dirs: canon,
            path_commands: false,
        })
    }

    /// `rainstorm run`'s policy: the current directory, the job file's directory, `dirs`, and
    /// commands on PATH. `run` executes the user's own job with the user's own rights on their
    /// own machine, so anything they could start from their shell in those places is fair; the
    /// policy still keeps an operator from being an arbitrary file elsewhere.
    pub fn local_run(dirs: &[PathBuf], cwd: &Path, job_dir: &Path) -> anyhow::Result<ExecPolicy> {
        let mut p = ExecPolicy::new(dirs)?;
        for d in [cwd, job_dir] {
            if let Ok(c) = std::fs::canonicalize(d) {
                p.dirs.push(c);
            }
        }
        p.path_commands = true;
        Ok(p)
    }

    /// The rule this policy enforces, for messages.
    pub fn rule(&self) -> &'static str {
        if self.path_commands {
            LOCAL_RULE
        } else {
            RULE
        }
    }

    fn allowed_dir(&self, p: &Path) -> bool {
        if self.dirs.iter().any(|d| p.starts_with(d)) {
            return true;
        }
        self.path_commands
            && path_dirs().iter().any(|d| {
                std::fs::canonicalize(d).is_ok_and(|d| p.parent().is_some_and(|pp| pp == d))
            })
    }

    /// The local executable a job's operator `path` names, if the policy lets it run: a bare
    /// command found on PATH (only where PATH commands are allowed), or an absolute path inside
    /// an allowed directory. The error says what is wrong (the rule, or why the file cannot
    /// run); it never reveals whether a file outside the allowed places exists.
    pub fn local(&self, path: &str) -> Result<PathBuf, ExecUnavailable> {
        let p = Path::new(path);
        if self.path_commands && !path.contains('/') {
            return path_dirs()
                .into_iter()
                .map(|d| d.join(path))
                .find(|c| check_executable(c).is_ok())
                .ok_or_else(|| {
                    ExecUnavailable::NotFound(
                        "operator not found (not a file here, nor a command on PATH)".to_string(),
                    )
                });
        }
        if !p.is_absolute() {
            return Err(ExecUnavailable::NotAllowed(self.rule().to_string()));
        }
        let Ok(canon) = std::fs::canonicalize(p) else {
            // Not there: say so only if the nearest folder of it that exists is an allowed
            // place (a folder missing under the current directory is a path typed from
            // elsewhere, not a forbidden place: hostile probe 14).
            let inside = p
                .ancestors()
                .skip(1)
                .find_map(|d| std::fs::canonicalize(d).ok())
                .is_some_and(|d| self.dirs.iter().any(|a| d.starts_with(a)));
            return Err(if inside && self.path_commands {
                ExecUnavailable::NotFound(
                    "operator not found (a relative path in a job file is taken from the current directory)".to_string(),
                )
            } else if inside {
                ExecUnavailable::NotFound("operator not found".to_string())
            } else {
                ExecUnavailable::NotAllowed(self.rule().to_string())
            });
        };
        if !self.allowed_dir(&canon) {
            return Err(ExecUnavailable::NotAllowed(self.rule().to_string()));
        }
        check_executable(&canon).map_err(|e| ExecUnavailable::NotRunnable(e.to_string()))?;
        Ok(canon)
    }
}

/// Why an operator's executable cannot run here. The message says the rule or the cause, and
/// never whether a file outside the allowed places exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecUnavailable {
    /// Outside what the exec policy allows (the message is the rule).
    #[error("{0}")]
    NotAllowed(String),
    /// Allowed, but not there (nor a command on PATH).
    #[error("{0}")]
    NotFound(String),
    /// There, but it cannot run (not a regular file, not executable).
    #[error("{0}")]
    NotRunnable(String),
    /// Fetching or verifying an operator pinned in the store failed.
    #[error("{0}")]
    Fetch(String),
}

impl ExecUnavailable {
    /// The same refusal, its message prefixed with where it applies (`stages[2].exec = …: `).
    fn at(self, prefix: &str) -> ExecUnavailable {
        let with = |m: String| format!("{prefix}: {m}");
        match self {
            ExecUnavailable::NotAllowed(m) => ExecUnavailable::NotAllowed(with(m)),
            ExecUnavailable::NotFound(m) => ExecUnavailable::NotFound(with(m)),
            ExecUnavailable::NotRunnable(m) => ExecUnavailable::NotRunnable(with(m)),
            ExecUnavailable::Fetch(m) => ExecUnavailable::Fetch(with(m)),
        }
    }
}

/// Resolves the local executable for an operator path under `policy`: a local path the policy
/// allows, or (cluster mode) a copy fetched from the store into `ops_dir`. A path neither in an
/// allowed place nor in the store is refused before anything runs.
pub async fn resolve_exec(
    store: &Store,
    a: &TaskAssignment,
    path: &str,
    ops_dir: &std::path::Path,
    policy: &ExecPolicy,
) -> Result<PathBuf, ExecUnavailable> {
    let at = format!("stages[{}].exec = {path}", a.key.pos.stage);
    if a.paths == crate::model::spec::PathMode::Local {
        return policy.local(path).map_err(|e| e.at(&at));
    }
    // An absolute path names a file of this host, in an allowed directory, or nothing.
    if Path::new(path).is_absolute() {
        return policy.local(path).map_err(|e| e.at(&at));
    }
    let clean = crate::store::clean_path(path)
        .map_err(|e| ExecUnavailable::NotAllowed(e.to_string()).at(&at))?;
    // From the store only as pinned by content at submission: cached by hash, verified
    // before it runs. Anything else could be another file than the one validated.
    match crate::store::pinned_hash(&clean) {
        Some(hex) => crate::opcache::fetch_pinned(store, hex, ops_dir)
            .await
            .map_err(|e| ExecUnavailable::Fetch(e.0)),
        None => Err(ExecUnavailable::NotAllowed(
            "an operator from the store runs only as pinned by its SHA-256 at submission"
                .to_string(),
        )
        .at(&at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exe(dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\ncat\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn only_allowed_directories_run_and_links_out_of_them_do_not() {
        let allowed = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let ok = exe(allowed.path(), "op.sh");
        let outside = exe(other.path(), "op.sh");
        std::os::unix::fs::symlink(&outside, allowed.path().join("link.sh")).unwrap();
        let policy = ExecPolicy::new(&[allowed.path().to_path_buf()]).unwrap();
        assert!(policy.local(ok.to_str().unwrap()).is_ok());
        for bad in [
            "/bin/sh".to_string(),
            "sh".to_string(),
            outside.display().to_string(),
            allowed.path().join("link.sh").display().to_string(),
            format!(
                "{}/../{}/op.sh",
                allowed.path().display(),
                other.path().file_name().unwrap().to_string_lossy()
            ),
            format!("{}/../nothing/op.sh", allowed.path().display()),
            "/nonexistent/op".to_string(),
        ] {
            assert_eq!(policy.local(&bad).unwrap_err().to_string(), RULE, "{bad}");
        }
        assert_eq!(
            policy
                .local(allowed.path().join("absent").to_str().unwrap())
                .unwrap_err(),
            ExecUnavailable::NotFound("operator not found".into())
        );
    }

    #[test]
    fn an_allow_exec_directory_that_does_not_exist_is_refused() {
        assert!(ExecPolicy::new(&[PathBuf::from("/nonexistent-rainstorm-dir")]).is_err());
    }

    #[test]
    fn run_allows_its_directories_and_path_commands_and_nothing_else() {
        let cwd = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let op = exe(cwd.path(), "op.sh");
        let outside = exe(other.path(), "op.sh");
        let policy = ExecPolicy::local_run(&[], cwd.path(), cwd.path()).unwrap();
        assert!(policy.local(op.to_str().unwrap()).is_ok());
        assert!(policy.local("sh").is_ok());
        assert_eq!(
            policy.local(outside.to_str().unwrap()).unwrap_err(),
            ExecUnavailable::NotAllowed(LOCAL_RULE.into())
        );
    }
}
