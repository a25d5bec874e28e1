//! The worker's operator processes: [`OsLauncher`] starts the OS child (in a group of its own,
//! under the worker's `--run-as` identity, killed if the worker dies); [`OsProcess`] waits for
//! it, kills it, and SIGKILLs whatever is left of its group once it has exited, is killed or
//! is dropped. Its stderr goes to the worker's log through `stderr::relay` (bounded lines,
//! rate limited, in the task's span), on a task the process joins once it has ended; the
//! relay keeps its last lines, which a failure quotes.

use super::launch::{Launch, Launched, OperatorProcess};
use super::stderr::Tail;
use super::{run_as, ExecError};
use futures::future::BoxFuture;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;
use tracing::Instrument;

/// The worker's operator factory: each operator an OS child process (see [`spawn_child`]).
/// The default of every `TaskEnv`.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsLauncher;

impl Launch for OsLauncher {
    fn launch(&self, path: &Path, args: &[String]) -> Result<Launched, ExecError> {
        let (child, pid, stdin, stdout, stderr) = spawn_child(path, args)?;
        let stdin_fd = std::os::fd::AsRawFd::as_raw_fd(&stdin);
        // In the span of the task that launches it: each line names the job, stage, task and
        // attempt.
        let tail = Tail::default();
        let relay = tokio::spawn(
            log_stderr(stderr, pid, tail.clone()).instrument(tracing::Span::current()),
        );
        Ok(Launched {
            process: Box::new(OsProcess {
                child,
                pid,
                group: pid,
                stderr: Some(relay),
                tail,
                stdin_fd,
            }),
            stdin: Box::new(stdin),
            stdout: Box::new(stdout),
        })
    }
}

/// An operator's OS child and its process group.
struct OsProcess {
    /// The child (`kill_on_drop`).
    child: Child,
    /// Its pid (kept: the child forgets it once reaped).
    pid: u32,
    /// Its process group, until it has been killed (0: none).
    group: u32,
    /// The task relaying its stderr to the log, until joined.
    stderr: Option<JoinHandle<()>>,
    /// Its last stderr lines, which the relay keeps.
    tail: Tail,
    /// The write end of its stdin, which the operator holds.
    stdin_fd: std::os::fd::RawFd,
}

impl OsProcess {
    /// Kills what is left of the process group (once): a helper the operator left behind
    /// neither holds its output open nor outlives it.
    fn end_group(&mut self) {
        kill_group(std::mem::take(&mut self.group));
    }

    /// Joins the stderr relay once the process and its group are gone (their end closes the
    /// pipe, so the relay ends with the last line); a relay that has not ended within
    /// [`STDERR_GRACE`] (a process that escaped the group still holds the pipe) is aborted.
    /// Cancel-safe: the relay stays to join until it has been.
    async fn join_stderr(&mut self) {
        let Some(relay) = self.stderr.as_mut() else {
            return;
        };
        let res = match tokio::time::timeout(STDERR_GRACE, &mut *relay).await {
            Ok(res) => res,
            Err(_) => {
                relay.abort();
                (&mut *relay).await
            }
        };
        self.stderr = None;
        if let Err(e) = res {
            if !e.is_cancelled() {
                tracing::warn!(pid = self.pid, error = %e, "the operator's stderr relay failed");
            }
        }
    }
}

/// How long the stderr relay may take to end once its process has.
const STDERR_GRACE: Duration = Duration::from_secs(2);

/// Relays an operator's stderr into the log (see `stderr`), each line with the pid, keeping
/// the last lines in `tail`.
async fn log_stderr(stderr: ChildStderr, pid: u32, tail: Tail) {
    let res = super::stderr::relay(stderr, super::stderr::LINES_PER_SEC, &tail, |r| match r {
        super::stderr::Relayed::Line { text, len } if len > text.len() => {
            tracing::warn!(target: "operator", pid, bytes = len, "operator stderr (line cut to {} bytes): {text}", super::stderr::MAX_LINE)
        }
        super::stderr::Relayed::Line { text, .. } => {
            tracing::warn!(target: "operator", pid, "operator stderr: {text}")
        }
        super::stderr::Relayed::Dropped { lines, bytes } => tracing::warn!(
            target: "operator",
            pid,
            lines,
            bytes,
            "operator stderr: {lines} more lines ({bytes} bytes) not logged: at most {} lines a second are",
            super::stderr::LINES_PER_SEC
        ),
    })
    .await;
    if let Err(e) = res {
        tracing::warn!(pid, error = %e, "reading the operator's stderr failed; the rest of it is not logged");
    }
}

impl OperatorProcess for OsProcess {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn stdin_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(self.stdin_fd)
    }

    fn wait(&mut self) -> BoxFuture<'_, std::io::Result<ExitStatus>> {
        Box::pin(async move {
            let status = self.child.wait().await;
            if status.is_ok() {
                super::orphans::reaped(self.pid);
            }
            // The exit ends the output: the rest of its group goes with it.
            self.end_group();
            self.join_stderr().await;
            status
        })
    }

    fn kill(&mut self) -> BoxFuture<'_, std::io::Result<()>> {
        Box::pin(async move {
            self.end_group();
            self.child.kill().await?;
            super::orphans::reaped(self.pid);
            self.join_stderr().await;
            Ok(())
        })
    }

    fn last_stderr(&self) -> Vec<String> {
        self.tail.lines()
    }
}

impl Drop for OsProcess {
    fn drop(&mut self) {
        // `kill_on_drop` kills the child; its group goes too, and the relay of its stderr.
        self.end_group();
        if let Some(relay) = self.stderr.take() {
            relay.abort();
        }
    }
}

/// SIGKILLs process group `pgid` (never 0 or 1, which would mean this process's own group or
/// every process).
fn kill_group(pgid: u32) {
    if pgid <= 1 || pgid > i32::MAX as u32 {
        return;
    }
    // SAFETY: plain syscall; a negative pid names the group the operator leads.
    unsafe {
        libc::kill(-(pgid as i32), libc::SIGKILL);
    }
    // What the operator detached from its group goes too.
    super::orphans::sweep();
}

/// Variables an operator inherits from the worker: what programs need to find their
/// interpreter and libraries and to read text (`PATH`, `HOME`, locale, time zone, temp dir,
/// Python's own settings). Nothing else — in particular no `RAINSTORM_*` secret and no
/// `AWS_*` credential.
const OPERATOR_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONUNBUFFERED",
    "PYTHONIOENCODING",
    "VIRTUAL_ENV",
];

/// The part of `vars` an operator may see (see [`OPERATOR_ENV`]; `LC_*` locale variables too).
pub(super) fn operator_env(
    vars: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    vars.filter(|(k, _)| {
        k.to_str()
            .is_some_and(|k| OPERATOR_ENV.contains(&k) || k.starts_with("LC_"))
    })
    .collect()
}

/// Starts `path args…` in a process group of its own, as the worker's `--run-as` identity if
/// it has one, with piped stdin, stdout and stderr. The child gets SIGKILL if the worker
/// dies. Returns the child, its pid (also its group) and its pipes.
#[allow(clippy::type_complexity)]
fn spawn_child(
    path: &Path,
    args: &[String],
) -> Result<(Child, u32, ChildStdin, ChildStdout, ChildStderr), ExecError> {
    let mut cmd = Command::new(path);
    // Operators get a clean environment: the worker's own holds the cluster secret and the
    // store's credentials, which code from a job must never see.
    cmd.env_clear().envs(operator_env(std::env::vars_os()));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let who = run_as::current();
    // SAFETY: only async-signal-safe syscalls run between fork and exec, on data prepared
    // before the fork (no allocation).
    unsafe {
        cmd.pre_exec(move || {
            // A group of its own: whatever it starts can be killed with it.
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(w) = &who {
                if libc::setgroups(w.groups.len() as _, w.groups.as_ptr()) != 0
                    || libc::setgid(w.gid) != 0
                    || libc::setuid(w.uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // After the identity change, which would clear it.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let spawn_err = |cause| ExecError::Spawn {
        path: path.display().to_string(),
        cause,
    };
    let mut child = super::orphans::spawn_live(|| {
        let child = cmd.spawn()?;
        let pid = child.id().unwrap_or(0);
        Ok((child, pid))
    })
    .map_err(spawn_err)?;
    let pid = child.id().unwrap_or(0);
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(spawn_err(std::io::Error::other("no pipes")));
    };
    Ok((child, pid, stdin, stdout, stderr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operator_sees_no_secret_and_no_store_credential() {
        let worker: Vec<(std::ffi::OsString, std::ffi::OsString)> = [
            ("PATH", "/usr/bin"),
            ("RAINSTORM_TOKEN", "s3cret-s3cret-s3cret"),
            ("AWS_SECRET_ACCESS_KEY", "k"),
            ("AWS_ACCESS_KEY_ID", "id"),
            ("LC_ALL", "C.UTF-8"),
            ("HOME", "/root"),
            ("RAINSTORM_LEADER", "http://127.0.0.1:1"),
        ]
        .iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        let kept: Vec<String> = operator_env(worker.into_iter())
            .into_iter()
            .map(|(k, _)| k.into_string().unwrap())
            .collect();
        assert_eq!(kept, ["PATH", "LC_ALL", "HOME"]);
    }
}
