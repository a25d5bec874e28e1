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

use crate::dataplane::router::{Closed, Router};
use crate::model::tuple::{decode_line, encode_line, Tuple};
use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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
    Scripted(Option<JoinHandle<()>>),
}

impl Proc {
    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        match self {
            Proc::Os(c) => c.wait().await,
            Proc::Scripted(h) => {
                let code = match h.take() {
                    Some(h) => match h.await {
                        Ok(()) => 0,
                        Err(_) => 9,
                    },
                    None => 0,
                };
                Ok(if code == 0 {
                    ExitStatus::from_raw(0)
                } else {
                    ExitStatus::from_raw(code)
                })
            }
        }
    }

    async fn kill(&mut self) -> std::io::Result<()> {
        match self {
            Proc::Os(c) => c.kill().await,
            Proc::Scripted(h) => {
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
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
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
            child: Proc::Scripted(Some(task)),
            pid: 0,
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

    /// Stdin failed: the process is gone. Exit 0 means it finished early (not an error);
    /// anything else is a failure.
    async fn stdin_failed(&mut self) -> Result<(), ExecError> {
        match self.child.wait().await {
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
        loop {
            if self.done {
                return std::future::pending().await;
            }
            if let Some(r) = self.reader.as_mut() {
                let res = r.await;
                self.reader = None;
                match res {
                    Ok(Ok(router)) => self.router = Some(router),
                    Ok(Err(Closed)) => return ExecError::Closed,
                    Err(e) => return ExecError::Io(std::io::Error::other(e)),
                }
            }
            // Its output is closed: it is ending.
            match self.child.wait().await {
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
        let routed = match (self.reader.take(), self.router.take()) {
            (Some(r), _) => match r.await {
                Ok(res) => res.map_err(|_| ExecError::Closed),
                Err(e) => Err(ExecError::Io(std::io::Error::other(e))),
            },
            (None, Some(router)) => Ok(router),
            (None, None) => Err(ExecError::Closed),
        };
        let status = self.child.wait().await?;
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
    }
}
