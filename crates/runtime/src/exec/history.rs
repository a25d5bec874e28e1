//! Rebuilding a running executable's state with more history, outputs dropped (a rescale gave
//! its task key groups whose earlier tuples other tasks processed; see `task::takeover`).
//!
//! Inside one process, the lines a history produces cannot be told from those of the tuples
//! around it by where they come. So the history also goes into a scratch process, whose lines
//! say what the history produces:
//!
//! 1. The running process is drained: its stdin closes, every line it writes is routed as
//!    usual, and it must exit 0. Everything it owed for its input has then gone out.
//! 2. Two fresh processes of the same operator start: the new operator, whose reader drops
//!    every line for now, and a scratch one, whose lines go to the [`Echo`].
//! 3. Both are fed the same history: the old process's whole input, as the task rebuilds it,
//!    then the gained groups' history.
//! 4. The scratch process's stdin closes, and it writes what it held back. Its lines are the
//!    history's output (the operator is deterministic, as exactly-once requires); those the
//!    new operator's reader had not reached are dropped wherever they come in its output
//!    (`exec::echo`), and the task feeds it live input again.
//!
//! The new operator emits nothing but history's answers before the scratch one has ended: it
//! is fed only history until then. The cost is feeding the history twice, in parallel (two
//! processes).

use super::echo::{too_long, Echo};
use super::launch::OperatorProcess;
use super::operator::ExecOperator;
use super::{describe_exit, ExecError, LastStderr, PIPE_BUF};
use crate::dataplane::router::MAX_LINE;
use crate::model::tuple::Tuple;
use crate::protocol::line::{encode_line, read_line_bounded, LineRead};
use std::sync::Arc;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::task::JoinHandle;

/// The scratch process of a rebuild: fed what the new operator is fed, its lines the
/// history's output that the new operator's reader drops.
pub struct Tally {
    process: Box<dyn OperatorProcess>,
    stdin: Option<BufWriter<Box<dyn AsyncWrite + Send + Unpin>>>,
    counting: Option<JoinHandle<std::io::Result<()>>>,
    /// Its lines, matched against the new operator's.
    echo: Arc<Echo>,
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

/// Hands the lines on `stdout` (as the output reader would read them) to `echo` until it
/// closes.
fn echo_lines(
    stdout: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    echo: Arc<Echo>,
) -> JoinHandle<std::io::Result<()>> {
    tokio::spawn(async move {
        let mut rd = BufReader::with_capacity(PIPE_BUF, stdout);
        let mut buf = Vec::with_capacity(1024);
        loop {
            match read_line_bounded(&mut rd, &mut buf, MAX_LINE).await? {
                LineRead::End => return Ok(()),
                LineRead::Line => echo.twin_line(&buf),
                LineRead::TooLong(n) => echo.twin_line(&too_long(n)),
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
        let echo = Arc::new(Echo::default());
        let fresh = again.launcher.launch(&again.path, &again.args)?;
        self.replace(fresh, router, echo.clone());
        (again.on_pid)(self.pid);
        let scratch = again.launcher.launch(&again.path, &again.args)?;
        Ok(Tally {
            process: scratch.process,
            stdin: Some(BufWriter::with_capacity(PIPE_BUF, scratch.stdin)),
            counting: Some(echo_lines(scratch.stdout, echo.clone())),
            echo,
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

    /// Step 4: closes the scratch process and waits for all of its lines: what the new
    /// operator drops is then known (`exec::echo`). Returns how many lines the history
    /// produced.
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
        if let Some(c) = tally.counting.take() {
            c.await.map_err(std::io::Error::other)??;
        }
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
        let (counted, diverged) = tally.echo.twin_ended();
        if diverged > 0 {
            // Nothing in the engine can mend it: the rebuilt state is not the one the
            // operator had, and its output after the rescale may be too.
            tracing::warn!(
                pid = self.pid,
                diverged,
                "a rebuilt operator wrote other lines than its scratch twin fed the same input: it is not deterministic, which exactly-once and rescaling require"
            );
        }
        tracing::info!(
            pid = self.pid,
            tuples = tally.fed,
            dropped = counted,
            "operator restarted with its state rebuilt; the history's output is dropped"
        );
        Ok(counted)
    }
}
