//! Rebuilding a running executable's state with more history, outputs dropped (a rescale gave
//! its task key groups whose earlier tuples other tasks processed; see `task::takeover`).
//!
//! Inside one process, the lines a history produces cannot be told from those of the tuples
//! around it. So the history goes into a fresh process whose output is counted:
//!
//! 1. The running process is drained: its stdin closes, every line it writes is routed as
//!    usual, and it must exit 0. Everything it owed for its input has then gone out.
//! 2. Two fresh processes of the same operator start: the new operator, whose reader drops
//!    every line for now, and a scratch one, whose lines are only counted.
//! 3. Both are fed the same history: the old process's whole input, as the task rebuilds it,
//!    then the gained groups' history.
//! 4. The scratch process's stdin closes; the lines it wrote in all are the exact count of
//!    the history's output (the operator is deterministic, as exactly-once requires). The new
//!    operator's reader drops that many lines, and the task feeds it live input again.
//!
//! The new operator emits nothing before the count is known: it is fed only history until
//! then. The cost is feeding the history twice, in parallel (two processes).

use super::launch::OperatorProcess;
use super::operator::ExecOperator;
use super::{describe_exit, ExecError, LastStderr, PIPE_BUF};
use crate::dataplane::router::MAX_LINE;
use crate::model::tuple::Tuple;
use crate::protocol::line::{encode_line, read_line_bounded, LineRead};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::task::JoinHandle;

/// The scratch process of a rebuild: fed what the new operator is fed, its lines counted.
pub struct Tally {
    process: Box<dyn OperatorProcess>,
    stdin: Option<BufWriter<Box<dyn AsyncWrite + Send + Unpin>>>,
    counting: Option<JoinHandle<std::io::Result<u64>>>,
    /// The new operator's reader drops this many lines, once known.
    skip: Arc<AtomicU64>,
    /// Tuples fed.
    fed: u64,
}

impl Drop for Tally {
    fn drop(&mut self) {
        // Dropped midway (the task was cancelled): the counter stops with its process.
        if let Some(c) = self.counting.take() {
            c.abort();
        }
    }
}

/// Counts the lines on `stdout` (as the output reader would read them) until it closes.
fn count_lines(
    stdout: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
) -> JoinHandle<std::io::Result<u64>> {
    tokio::spawn(async move {
        let mut rd = BufReader::with_capacity(PIPE_BUF, stdout);
        let mut buf = Vec::with_capacity(1024);
        let mut n = 0u64;
        loop {
            match read_line_bounded(&mut rd, &mut buf, MAX_LINE).await? {
                LineRead::End => return Ok(n),
                LineRead::Line | LineRead::TooLong(_) => n += 1,
            }
        }
    })
}

impl ExecOperator {
    /// Steps 1 and 2 of the module doc: drains the running process, starts the new one (whose
    /// reader drops every line until [`end_history`](Self::end_history)) and the scratch one.
    pub async fn begin_history(&mut self) -> Result<Tally, ExecError> {
        let Some(again) = self.relaunch.clone() else {
            return Err(ExecError::Io(std::io::Error::other(
                "this operator cannot be started again to rebuild its state",
            )));
        };
        let router = self.drain().await?;
        // The old process is reaped: its pid no longer names it (a kill-task for it is refused
        // as for any process not an operator's, not sent to a pid that may be reused).
        (again.on_pid)(0);
        let skip = Arc::new(AtomicU64::new(u64::MAX));
        let fresh = again.launcher.launch(&again.path, &again.args)?;
        self.replace(fresh, router, skip.clone());
        (again.on_pid)(self.pid);
        let scratch = again.launcher.launch(&again.path, &again.args)?;
        Ok(Tally {
            process: scratch.process,
            stdin: Some(BufWriter::with_capacity(PIPE_BUF, scratch.stdin)),
            counting: Some(count_lines(scratch.stdout)),
            skip,
            fed: 0,
        })
    }

    /// Step 3: feeds one tuple of the history to both processes.
    pub async fn feed_history(&mut self, tally: &mut Tally, t: &Tuple) -> Result<(), ExecError> {
        self.send(t).await?;
        self.line.clear();
        encode_line(t, &mut self.line);
        tally.fed += 1;
        if let Some(stdin) = tally.stdin.as_mut() {
            if stdin.write_all(&self.line).await.is_err() {
                // It stopped reading: its exit tells whether that was a clean early end.
                tally.stdin = None;
            }
        }
        Ok(())
    }

    /// Step 4: closes the scratch process, takes its count as the lines the new operator
    /// drops, and returns it.
    pub async fn end_history(&mut self, mut tally: Tally) -> Result<u64, ExecError> {
        self.idle().await?;
        if let Some(mut stdin) = tally.stdin.take() {
            if stdin.flush().await.is_ok() {
                if let Err(e) = stdin.shutdown().await {
                    tracing::debug!(error = %e, "closing the scratch operator's stdin failed; its exit tells why");
                }
            }
        }
        let status = tally.process.wait().await?;
        let counted = match tally.counting.take() {
            Some(c) => c.await.map_err(std::io::Error::other)??,
            None => 0,
        };
        if !status.success() {
            return Err(ExecError::Exited {
                pid: tally.process.pid(),
                how: format!(
                    "{} while counting the output of a rebuilt history",
                    describe_exit(status)
                ),
                stderr: LastStderr(tally.process.last_stderr()),
            });
        }
        tally.skip.store(counted, Ordering::SeqCst);
        tracing::info!(
            pid = self.pid,
            tuples = tally.fed,
            dropped = counted,
            "operator restarted with its state rebuilt; the history's output is dropped"
        );
        Ok(counted)
    }
}
