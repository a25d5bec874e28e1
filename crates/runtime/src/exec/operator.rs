//! The running executable operator: what a task feeds, watches for failure, finishes or
//! aborts. It owns the process (from whichever [`Launch`](super::Launch) started it) and its
//! output reader, and makes sure each is always waited for or killed, whichever way the
//! attempt ends.

use super::echo::Echo;
use super::feeder::Feeder;
use super::launch::{Launched, OperatorProcess};
use super::reader::spawn_reader;
use super::unread::Probe;
use super::{describe_exit, ExecError, LastStderr};
use crate::dataplane::meter::Stopwatch;
use crate::dataplane::router::{Closed, Router};
use crate::model::tuple::Tuple;
use crate::protocol::line::encode_line;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

/// A running operator process.
pub struct ExecOperator {
    /// The process (it ends whatever it left behind once it has exited or is killed).
    pub(super) child: Box<dyn OperatorProcess>,
    /// Its process id (0: not an OS process).
    pub(super) pid: u32,
    /// Its stdin (written by a task of its own), until closed or the process finished early.
    pub(super) stdin: Option<Feeder>,
    /// The output reader, until joined or aborted.
    pub(super) reader: Option<JoinHandle<Result<Router, Closed>>>,
    /// The router, once the reader returned it early (the process closed its output).
    pub(super) router: Option<Router>,
    /// The process exited 0: its output is complete and further input is discarded.
    pub(super) done: bool,
    /// A reusable buffer for the encoded input line.
    pub(super) line: Vec<u8>,
    /// The emit time the reader stamps on the output it reads (0: nothing fed yet): the one
    /// the latest input was fed with. A logged task feeds each commit's tuples with the
    /// commit's oldest emit time (`task::logged::feed`), so an output is charged the wait of
    /// the oldest input it may derive from, as a built-in's router batch is.
    pub(super) stamp: Arc<AtomicU64>,
    /// Set by the reader (to the bytes it read of it) when it refused a line too large for a
    /// frame, before it closed stdout: then that is why the operator ended, whatever its exit
    /// status says (SIGPIPE, a write error, or even 0 with its output cut short).
    pub(super) refused: Arc<AtomicUsize>,
    /// How to start the operator again, to rebuild its state (`history`).
    pub(super) relaunch: Option<Relaunch>,
    /// Tuples fed after the process exited 0 before its input ended (the task's count).
    pub(super) discarded: Arc<AtomicU64>,
    /// The task's working time, which its stdin's writer runs while it has input to write.
    pub(super) working: Arc<Stopwatch>,
}

/// What starting an operator's process again takes: a key group's state is rebuilt in a fresh
/// process (`history`), which the task's status must then name.
#[derive(Clone)]
pub struct Relaunch {
    /// The factory that started the first process.
    pub launcher: Arc<dyn super::Launch>,
    /// The executable, as this worker resolved it.
    pub path: std::path::PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Told each new process id (the task's status, which `kill-task` reads).
    pub on_pid: Arc<dyn Fn(u32) + Send + Sync>,
}

impl ExecOperator {
    /// The operator around a freshly launched process: its output reader runs from here on.
    pub fn start(launched: Launched, router: Router) -> ExecOperator {
        let counts = (Arc::default(), Arc::default());
        ExecOperator::counting(launched, router, counts)
    }

    /// The same, counting on the task's status the tuples it discards (after an early exit
    /// 0) and, as its working time, the time its stdin's writer has input to write.
    pub fn counting(
        launched: Launched,
        router: Router,
        (discarded, working): (Arc<AtomicU64>, Arc<Stopwatch>),
    ) -> ExecOperator {
        let stamp = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let Launched {
            process,
            stdin,
            stdout,
        } = launched;
        let reader = spawn_reader(stdout, router, stamp.clone(), refused.clone(), None);
        ExecOperator {
            pid: process.pid(),
            child: process,
            stdin: Some(Feeder::spawn(stdin, working.clone())),
            reader: Some(reader),
            router: None,
            done: false,
            line: Vec::with_capacity(1024),
            stamp,
            refused,
            relaunch: None,
            discarded,
            working,
        }
    }

    /// The same, able to start its process again to rebuild key groups' state.
    pub fn restartable(mut self, relaunch: Relaunch) -> ExecOperator {
        self.relaunch = Some(relaunch);
        self
    }

    /// Replaces the process with a freshly launched one whose output that `echo` says its
    /// history produced is dropped (the old one must have been drained: `router` is what its
    /// reader returned).
    pub(super) fn replace(&mut self, launched: Launched, router: Router, echo: Arc<Echo>) {
        let Launched {
            process,
            stdin,
            stdout,
        } = launched;
        self.refused = Arc::new(AtomicUsize::new(0));
        let reader = spawn_reader(
            stdout,
            router,
            self.stamp.clone(),
            self.refused.clone(),
            Some(echo),
        );
        self.pid = process.pid();
        self.child = process;
        self.stdin = Some(Feeder::spawn(stdin, self.working.clone()));
        self.reader = Some(reader);
        self.router = None;
        self.done = false;
    }

    /// The operator's refused line, if the reader refused one: the cause of its end.
    fn line_refused(&self) -> Option<ExecError> {
        match self.refused.load(Ordering::SeqCst) {
            0 => None,
            seen => Some(ExecError::LineTooLong { seen }),
        }
    }

    /// Why the operator failed, given that it exited with `status` (not 0, or 0 after its
    /// output was cut short): a refused line if there was one, else the exit with the last
    /// lines it wrote on stderr (the wait that returned `status` took them all in).
    fn failure(&self, status: ExitStatus) -> ExecError {
        self.line_refused().unwrap_or_else(|| ExecError::Exited {
            pid: self.pid,
            how: describe_exit(status),
            stderr: LastStderr(self.child.last_stderr()),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Stdin failed: the process is gone. Exit 0 means it finished early (not an error);
    /// anything else is a failure.
    async fn stdin_failed(&mut self) -> Result<(), ExecError> {
        let status = self.child.wait().await;
        match status {
            Ok(status) if status.success() && self.line_refused().is_none() => {
                self.finished_early().await;
                Ok(())
            }
            Ok(status) => Err(self.failure(status)),
            Err(e) => Err(ExecError::Io(e)),
        }
    }

    /// The process exited 0 before its input ended: its output is complete, the rest of its
    /// input is discarded.
    async fn finished_early(&mut self) {
        if !self.done {
            // What it was given and never took is discarded too, not only what comes next:
            // what never reached the pipe, and what is left in it.
            let unread = match self.stdin.take() {
                Some(f) => {
                    let ended = f.close().await;
                    let probe = ended
                        .stdin
                        .as_ref()
                        .and(self.child.stdin_fd())
                        .and_then(Probe::open);
                    ended.unwritten + probe.map_or(0, Probe::unread_lines)
                }
                None => 0,
            };
            self.discarded.fetch_add(unread, Ordering::Relaxed);
            tracing::warn!(
                pid = self.pid,
                unread,
                "operator exited 0 before its input ended; the rest of its input is discarded (counted as the task's `discarded`)"
            );
        }
        self.done = true;
        self.stdin = None;
    }

    /// Writes one tuple to the operator's stdin (buffered); discarded once it has exited 0.
    pub async fn feed(&mut self, t: &Tuple, emit_ns: u64) -> Result<(), ExecError> {
        if self.done {
            self.discarded.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.stamp.store(emit_ns, Ordering::Relaxed);
        self.send(t).await
    }

    /// Writes one tuple to the operator's stdin without touching the stamp (a rebuilt
    /// history's tuples: their output is dropped).
    pub(super) async fn send(&mut self, t: &Tuple) -> Result<(), ExecError> {
        if self.done {
            return Ok(());
        }
        self.line.clear();
        encode_line(t, &mut self.line);
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(ExecError::Closed);
        };
        if stdin.write(&self.line).await.is_err() {
            return self.stdin_failed().await;
        }
        Ok(())
    }

    /// Hands what is encoded to stdin's writer: the input ran dry, and the process gets what
    /// it was fed now.
    pub async fn idle(&mut self) -> Result<(), ExecError> {
        if let Some(stdin) = self.stdin.as_mut() {
            if stdin.hand_over().await.is_err() {
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
                        Ok(Err(Closed::TooLarge(seen))) => return ExecError::LineTooLong { seen },
                        Err(e) => return ExecError::Io(std::io::Error::other(e)),
                    }
                    // Its output is closed: it is ending.
                    self.child.wait().await
                }
                Ev::Exit(st) => st,
            };
            match status {
                Ok(status) if status.success() && self.line_refused().is_none() => {
                    self.finished_early().await
                }
                Ok(status) => return self.failure(status),
                Err(e) => return ExecError::Io(e),
            }
        }
    }

    /// Closes stdin, waits for all output and a clean exit; returns the router to finish.
    pub async fn finish(mut self) -> Result<Router, ExecError> {
        self.drain().await
    }

    /// [`finish`](Self::finish), leaving the operator without a process (to be replaced).
    pub(super) async fn drain(&mut self) -> Result<Router, ExecError> {
        let mut unread = 0;
        let mut probe = None;
        if let Some(feeder) = self.stdin.take() {
            // Every write done first (one to a process that already exited fails; its exit
            // status says why below), then a second read end opened while the write end is
            // still held, to count what the process leaves unread. Opened before, it would
            // keep the pipe open for writes nobody reads: a process that exited 0 with input
            // still to come wedged the task (`head -n 5` on 1,500 lines).
            let ended = feeder.close().await;
            unread += ended.unwritten;
            if let Some(mut stdin) = ended.stdin {
                probe = self.child.stdin_fd().and_then(Probe::open);
                if let Err(e) = stdin.shutdown().await {
                    tracing::debug!(pid = self.pid, error = %e, "closing operator stdin failed; its exit status tells why");
                }
            }
        }
        // The exit ends the output: whatever the process left behind goes with it (its
        // group), so a helper left holding stdout open cannot keep the reader (and the task)
        // waiting.
        let status = self.child.wait().await;
        unread += probe.map_or(0, Probe::unread_lines);
        let routed = match (self.reader.take(), self.router.take()) {
            (Some(r), _) => match r.await {
                Ok(res) => res.map_err(|e| match e {
                    Closed::Gone => ExecError::Closed,
                    Closed::TooLarge(seen) => ExecError::LineTooLong { seen },
                }),
                Err(e) => Err(ExecError::Io(std::io::Error::other(e))),
            },
            (None, Some(router)) => Ok(router),
            (None, None) => Err(ExecError::Closed),
        };
        // A refused line is the cause, whatever the exit status says.
        if let Some(e) = self.line_refused() {
            return Err(e);
        }
        let status = status?;
        if !status.success() {
            return Err(self.failure(status));
        }
        if unread > 0 {
            // It exited 0 without taking all of its input: as an early finish, discarded.
            tracing::warn!(pid = self.pid, unread, "operator exited 0 without reading all of its input; what it left is discarded (counted as the task's `discarded`)");
            self.discarded.fetch_add(unread, Ordering::Relaxed);
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
        // The process ends as it is dropped (an OS child with its group).
    }
}

#[cfg(test)]
mod tests;
