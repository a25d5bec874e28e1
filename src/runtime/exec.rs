//! An executable operator: one OS process per task attempt, tuples on stdin, results on stdout.
//!
//! The task writes to stdin; a separate reader (owned here, always joined or aborted) parses
//! stdout and feeds the router, so a child blocked on a full stdout never deadlocks a task
//! blocked on a full stdin. The reader returns the router instead of finishing it: only after
//! the child exits 0 does the task send end of stream downstream.

use crate::dataplane::router::{Closed, Router};
use crate::model::tuple::{decode_line, encode_line, Tuple};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::process::{Child, ChildStdin, Command};
use tokio::task::JoinHandle;

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
    child: Child,
    pid: u32,
    stdin: Option<BufWriter<ChildStdin>>,
    reader: Option<JoinHandle<Result<Router, Closed>>>,
    line: Vec<u8>,
    current_emit: Arc<AtomicU64>,
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
        let emit = current_emit.clone();
        let reader = tokio::spawn(async move {
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
        });
        Ok(ExecOperator {
            child,
            pid,
            stdin: Some(BufWriter::with_capacity(PIPE_BUF, stdin)),
            reader: Some(reader),
            line: Vec::with_capacity(1024),
            current_emit,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    async fn exit_error(&mut self) -> ExecError {
        match self.child.wait().await {
            Ok(status) => ExecError::Exited {
                pid: self.pid,
                how: describe_exit(status),
            },
            Err(e) => ExecError::Io(e),
        }
    }

    /// Writes one tuple to the operator's stdin (buffered).
    pub async fn feed(&mut self, t: &Tuple, emit_ns: u64) -> Result<(), ExecError> {
        self.current_emit.store(emit_ns, Ordering::Relaxed);
        self.line.clear();
        encode_line(t, &mut self.line);
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(ExecError::Closed);
        };
        if stdin.write_all(&self.line).await.is_err() {
            return Err(self.exit_error().await);
        }
        Ok(())
    }

    /// Flushes stdin: the input ran dry.
    pub async fn idle(&mut self) -> Result<(), ExecError> {
        if let Some(stdin) = self.stdin.as_mut() {
            if stdin.flush().await.is_err() {
                return Err(self.exit_error().await);
            }
        }
        Ok(())
    }

    /// Resolves when the operator stopped producing output on its own (it died or closed
    /// stdout) while input is still open: a failure.
    pub async fn died(&mut self) -> ExecError {
        match self.reader.as_mut() {
            Some(r) => {
                let res = r.await;
                self.reader = None;
                match res {
                    Ok(Err(Closed)) => ExecError::Closed,
                    _ => {
                        let e = self.exit_error().await;
                        match e {
                            ExecError::Exited { pid, how } if how == "exited with code 0" => {
                                ExecError::Exited {
                                    pid,
                                    how: "closed its output before its input ended".into(),
                                }
                            }
                            other => other,
                        }
                    }
                }
            }
            None => std::future::pending().await,
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
        let reader = self.reader.take();
        let routed = match reader {
            Some(r) => match r.await {
                Ok(res) => res.map_err(|_| ExecError::Closed),
                Err(e) => Err(ExecError::Io(std::io::Error::other(e))),
            },
            None => Err(ExecError::Closed),
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
