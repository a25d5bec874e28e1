//! An executable operator: one OS process per task attempt, tuples on stdin, results on stdout.
//!
//! The task writes to stdin; a separate reader (owned here, always joined or aborted) parses
//! stdout and feeds the router, so a child blocked on a full stdout never deadlocks a task
//! blocked on a full stdin. The reader returns the router instead of finishing it: only after
//! the child exits 0 does the task send end of stream downstream.
//!
//! **Exit 0 is the end of the operator's output**, whenever it comes. An operator may stop
//! reading early, like `head`: once it has exited 0, input it did not read is discarded, its
//! output so far is its whole output, and the task finishes normally when its inputs end.
//! Exiting non-zero or by a signal is a failure. (The same rule holds at any input size: it
//! does not matter whether the unread input still fitted in the pipe.)
//!
//! The simulation runs scripted stand-ins through this same code: an in-process task on
//! in-memory pipes in place of the child process.
//!
//! **One process group per operator.** Each child starts in a group of its own, and the whole
//! group is SIGKILLed as soon as the child has exited (its task finished or failed) or when the
//! task is cancelled or dropped: a helper the operator left behind (`sleep 7777 &`) neither
//! holds the output open, so the task cannot hang on it, nor outlives the task. The output of
//! an operator therefore ends when its main process exits.
//!
//! **Under another identity.** A worker started with `--run-as USER` starts every operator as
//! that user ([`RunAs`]: its uid, its primary group and its supplementary groups), after
//! joining its new process group and before `exec`.

use crate::dataplane::router::{Closed, Router};
use crate::model::tuple::Tuple;
use crate::protocol::line::{decode_line, encode_line};
use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// A stand-in for an executable: makes a fresh line transformer for each attempt (so state
/// never leaks from one attempt to the next, as with a real process).
pub type ScriptFn = Arc<dyn Fn() -> Box<dyn FnMut(Tuple) -> Vec<Tuple> + Send> + Send + Sync>;

/// Stand-ins for executables by operator path; empty outside the simulation.
#[derive(Clone, Default)]
pub struct Scripts(Arc<HashMap<String, ScriptFn>>);

impl Scripts {
    /// Stand-ins by path.
    pub fn new(map: HashMap<String, ScriptFn>) -> Self {
        Scripts(Arc::new(map))
    }

    /// The stand-in for `path`, if there is one.
    pub fn get(&self, path: &str) -> Option<ScriptFn> {
        self.0.get(path).cloned()
    }
}

/// The process behind an operator: an OS child, or a scripted task.
enum Proc {
    Os(Child),
    /// The task while it runs, then its exit code.
    Scripted(Option<JoinHandle<()>>, i32),
}

impl Proc {
    /// Waits for the exit; cancel-safe (a wait dropped midway loses nothing), and once it has
    /// returned it returns the same status again.
    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        match self {
            Proc::Os(c) => c.wait().await,
            Proc::Scripted(h, code) => {
                if let Some(task) = h.as_mut() {
                    *code = match task.await {
                        Ok(()) => 0,
                        Err(_) => 9,
                    };
                    *h = None;
                }
                Ok(ExitStatus::from_raw(*code))
            }
        }
    }

    async fn kill(&mut self) -> std::io::Result<()> {
        match self {
            Proc::Os(c) => c.kill().await,
            Proc::Scripted(h, _) => {
                if let Some(h) = h.take() {
                    h.abort();
                    if let Err(e) = h.await {
                        if !e.is_cancelled() {
                            tracing::warn!(error = %e, "scripted operator panicked");
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

/// The unprivileged identity operators run as (`worker --run-as USER`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    /// The user's name.
    pub name: String,
    /// Its uid.
    pub uid: libc::uid_t,
    /// Its primary group.
    pub gid: libc::gid_t,
    /// Every group it belongs to (primary included).
    pub groups: Vec<libc::gid_t>,
}

impl RunAs {
    /// Looks a user up by name (the system's user database); an error if there is no such user.
    pub fn lookup(name: &str) -> anyhow::Result<RunAs> {
        let cname = std::ffi::CString::new(name)
            .map_err(|_| anyhow::anyhow!("--run-as {name:?}: not a user name"))?;
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        // SAFETY: every pointer is valid for the call; `buf` outlives the use of `pw`'s fields.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pw,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc != 0 {
            anyhow::bail!(
                "--run-as {name}: looking the user up failed: {}",
                std::io::Error::from_raw_os_error(rc)
            );
        }
        if result.is_null() {
            anyhow::bail!("--run-as {name}: no such user");
        }
        let (uid, gid) = (pw.pw_uid, pw.pw_gid);
        let mut n: libc::c_int = 64;
        let mut groups: Vec<libc::gid_t> = vec![0; n as usize];
        loop {
            let mut got = n;
            // SAFETY: `groups` has room for `got` entries.
            let rc =
                unsafe { libc::getgrouplist(cname.as_ptr(), gid, groups.as_mut_ptr(), &mut got) };
            if rc >= 0 {
                groups.truncate(got.max(0) as usize);
                break;
            }
            if got <= n || n > 65536 {
                groups = vec![gid];
                break;
            }
            n = got;
            groups = vec![0; n as usize];
        }
        if !groups.contains(&gid) {
            groups.push(gid);
        }
        Ok(RunAs {
            name: name.to_string(),
            uid,
            gid,
            groups,
        })
    }
}

/// The identity operators of this process run as (one per process: it is the worker's).
static RUN_AS: OnceLock<RunAs> = OnceLock::new();

/// Makes every operator this process starts from now on run as `who`. Needs root (or the
/// user's own uid); set once per process.
pub fn run_operators_as(who: RunAs) -> anyhow::Result<()> {
    // SAFETY: plain syscall.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 && euid != who.uid {
        anyhow::bail!(
            "--run-as {}: this worker runs as uid {euid}, and only root can start processes as another user",
            who.name
        );
    }
    if RUN_AS.get() == Some(&who) {
        return Ok(());
    }
    let name = who.name.clone();
    RUN_AS.set(who).map_err(|_| {
        anyhow::anyhow!("--run-as {name}: operators of this process already have an identity")
    })
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
}

const PIPE_BUF: usize = 256 * 1024;

/// Why an executable operator stopped working.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// It could not be started.
    #[error("cannot start operator {path}: {source}")]
    Spawn {
        /// Executable.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// It exited (or was killed) before or without finishing cleanly.
    #[error("operator process {pid} {how}")]
    Exited {
        /// Process id.
        pid: u32,
        /// Exit description.
        how: String,
    },
    /// Downstream went away (cancellation).
    #[error("downstream closed")]
    Closed,
    /// The operator emitted a tuple no data-plane frame can carry.
    #[error("operator output: {0}")]
    Output(String),
    /// Pipe I/O failed for another reason.
    #[error("operator pipe: {0}")]
    Io(#[from] std::io::Error),
}

/// Describes an exit status for humans (`exited with code 3`, `killed by signal 9`).
pub fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "ended".to_string(),
    }
}

/// A running operator process.
pub struct ExecOperator {
    child: Proc,
    pid: u32,
    /// The operator's process group, until it has been killed (0: none).
    group: u32,
    stdin: Option<BufWriter<Box<dyn AsyncWrite + Send + Unpin>>>,
    reader: Option<JoinHandle<Result<Router, Closed>>>,
    /// The router, once the reader returned it early (the process closed its output).
    router: Option<Router>,
    /// The process exited 0: its output is complete and further input is discarded.
    done: bool,
    line: Vec<u8>,
    current_emit: Arc<AtomicU64>,
}

/// Parses the operator's stdout into the router until it closes; returns the router.
fn spawn_reader(
    stdout: impl AsyncRead + Send + Unpin + 'static,
    router: Router,
    emit: Arc<AtomicU64>,
) -> JoinHandle<Result<Router, Closed>> {
    tokio::spawn(async move {
        let mut router = router;
        let mut rd = BufReader::with_capacity(PIPE_BUF, stdout);
        let mut buf = Vec::with_capacity(1024);
        loop {
            buf.clear();
            match rd.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if buf.last() == Some(&b'\n') {
                buf.pop();
            }
            let line = String::from_utf8_lossy(&buf);
            router
                .push(decode_line(&line), emit.load(Ordering::Relaxed))
                .await?;
            if rd.buffer().is_empty() {
                router.flush().await?;
            }
        }
        router.flush().await?;
        Ok(router)
    })
}

impl ExecOperator {
    /// Starts `path args…` with piped stdin/stdout; stderr goes to the worker's stderr. The
    /// child gets SIGKILL if the worker dies (so a killed worker leaves no orphans).
    pub fn spawn(path: &Path, args: &[String], router: Router) -> Result<ExecOperator, ExecError> {
        let mut cmd = Command::new(path);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let who = RUN_AS.get().cloned();
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
        let spawn_err = |source| ExecError::Spawn {
            path: path.display().to_string(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let pid = child.id().unwrap_or(0);
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(spawn_err(std::io::Error::other("no pipes")));
        };
        let current_emit = Arc::new(AtomicU64::new(0));
        let reader = spawn_reader(stdout, router, current_emit.clone());
        Ok(ExecOperator {
            child: Proc::Os(child),
            pid,
            group: pid,
            stdin: Some(BufWriter::with_capacity(PIPE_BUF, Box::new(stdin))),
            reader: Some(reader),
            router: None,
            done: false,
            line: Vec::with_capacity(1024),
            current_emit,
        })
    }

    /// Runs a scripted stand-in on in-memory pipes (the simulation's executables).
    pub fn scripted(script: ScriptFn, router: Router) -> ExecOperator {
        let (stdin_w, stdin_r) = tokio::io::duplex(PIPE_BUF);
        let (stdout_w, stdout_r) = tokio::io::duplex(PIPE_BUF);
        let mut f = script();
        let task = tokio::spawn(async move {
            let mut rd = BufReader::new(stdin_r);
            let mut out = BufWriter::new(stdout_w);
            let mut line = String::new();
            let mut enc = Vec::new();
            loop {
                line.clear();
                match rd.read_line(&mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let t = decode_line(line.trim_end_matches('\n'));
                for o in f(t) {
                    enc.clear();
                    encode_line(&o, &mut enc);
                    if out.write_all(&enc).await.is_err() {
                        return;
                    }
                }
                if rd.buffer().is_empty() && out.flush().await.is_err() {
                    return;
                }
            }
            if let Err(e) = out.shutdown().await {
                tracing::debug!(error = %e, "scripted operator: closing stdout failed");
            }
        });
        let current_emit = Arc::new(AtomicU64::new(0));
        let reader = spawn_reader(stdout_r, router, current_emit.clone());
        ExecOperator {
            child: Proc::Scripted(Some(task), 0),
            pid: 0,
            group: 0,
            stdin: Some(BufWriter::with_capacity(PIPE_BUF, Box::new(stdin_w))),
            reader: Some(reader),
            router: None,
            done: false,
            line: Vec::with_capacity(1024),
            current_emit,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Kills what is left of the operator's process group (once).
    fn end_group(&mut self) {
        kill_group(std::mem::take(&mut self.group));
    }

    /// Stdin failed: the process is gone. Exit 0 means it finished early (not an error);
    /// anything else is a failure.
    async fn stdin_failed(&mut self) -> Result<(), ExecError> {
        let status = self.child.wait().await;
        self.end_group();
        match status {
            Ok(status) if status.success() => {
                self.finished_early();
                Ok(())
            }
            Ok(status) => Err(ExecError::Exited {
                pid: self.pid,
                how: describe_exit(status),
            }),
            Err(e) => Err(ExecError::Io(e)),
        }
    }

    fn finished_early(&mut self) {
        if !self.done {
            tracing::info!(
                pid = self.pid,
                "operator exited 0 before its input ended; the rest of its input is discarded"
            );
        }
        self.done = true;
        self.stdin = None;
    }

    /// Writes one tuple to the operator's stdin (buffered); discarded once it has exited 0.
    pub async fn feed(&mut self, t: &Tuple, emit_ns: u64) -> Result<(), ExecError> {
        if self.done {
            return Ok(());
        }
        self.current_emit.store(emit_ns, Ordering::Relaxed);
        self.line.clear();
        encode_line(t, &mut self.line);
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(ExecError::Closed);
        };
        if stdin.write_all(&self.line).await.is_err() {
            return self.stdin_failed().await;
        }
        Ok(())
    }

    /// Flushes stdin: the input ran dry.
    pub async fn idle(&mut self) -> Result<(), ExecError> {
        if let Some(stdin) = self.stdin.as_mut() {
            if stdin.flush().await.is_err() {
                return self.stdin_failed().await;
            }
        }
        Ok(())
    }

    /// Resolves only when the operator failed on its own while input is still open: it
    /// closed its output and exited non-zero or by a signal. (Exit 0 is an early finish.)
    pub async fn died(&mut self) -> ExecError {
        enum Ev {
            Output(Box<Result<Result<Router, Closed>, tokio::task::JoinError>>),
            Exit(std::io::Result<ExitStatus>),
        }
        loop {
            if self.done {
                return std::future::pending().await;
            }
            // Its output closed, or it exited (a helper it left may still hold the output).
            let ev = match self.reader.as_mut() {
                Some(r) => tokio::select! {
                    res = r => Ev::Output(Box::new(res)),
                    st = self.child.wait() => Ev::Exit(st),
                },
                None => Ev::Exit(self.child.wait().await),
            };
            let status = match ev {
                Ev::Output(res) => {
                    self.reader = None;
                    match *res {
                        Ok(Ok(router)) => self.router = Some(router),
                        Ok(Err(Closed::Gone)) => return ExecError::Closed,
                        Ok(Err(e @ Closed::TooLarge(_))) => {
                            return ExecError::Output(e.to_string())
                        }
                        Err(e) => return ExecError::Io(std::io::Error::other(e)),
                    }
                    // Its output is closed: it is ending.
                    self.child.wait().await
                }
                Ev::Exit(st) => st,
            };
            self.end_group();
            match status {
                Ok(status) if status.success() => self.finished_early(),
                Ok(status) => {
                    return ExecError::Exited {
                        pid: self.pid,
                        how: describe_exit(status),
                    }
                }
                Err(e) => return ExecError::Io(e),
            }
        }
    }

    /// Closes stdin, waits for all output and a clean exit; returns the router to finish.
    pub async fn finish(mut self) -> Result<Router, ExecError> {
        if let Some(mut stdin) = self.stdin.take() {
            // A child that already exited makes these fail; its exit status says why below.
            if stdin.flush().await.is_ok() {
                if let Err(e) = stdin.shutdown().await {
                    tracing::debug!(pid = self.pid, error = %e, "closing operator stdin failed; its exit status tells why");
                }
            }
            drop(stdin);
        }
        // The exit ends the output: the rest of its group goes with it, so a helper left
        // holding stdout open cannot keep the reader (and the task) waiting.
        let status = self.child.wait().await;
        self.end_group();
        let routed = match (self.reader.take(), self.router.take()) {
            (Some(r), _) => match r.await {
                Ok(res) => res.map_err(|e| match e {
                    Closed::Gone => ExecError::Closed,
                    too_large => ExecError::Output(too_large.to_string()),
                }),
                Err(e) => Err(ExecError::Io(std::io::Error::other(e))),
            },
            (None, Some(router)) => Ok(router),
            (None, None) => Err(ExecError::Closed),
        };
        let status = status?;
        if !status.success() {
            return Err(ExecError::Exited {
                pid: self.pid,
                how: describe_exit(status),
            });
        }
        routed
    }

    /// Kills and reaps the process (cancellation or failure elsewhere).
    pub async fn abort(mut self) {
        if let Some(r) = self.reader.take() {
            r.abort();
            if let Err(e) = r.await {
                if !e.is_cancelled() {
                    tracing::warn!(pid = self.pid, error = %e, "operator output reader panicked");
                }
            }
        }
        self.end_group();
        if let Err(e) = self.child.kill().await {
            tracing::debug!(pid = self.pid, error = %e, "kill of operator failed (already gone?)");
        }
    }
}

impl Drop for ExecOperator {
    fn drop(&mut self) {
        if let Some(r) = self.reader.take() {
            r.abort();
        }
        // `kill_on_drop` kills the child; its group goes too.
        self.end_group();
    }
}
