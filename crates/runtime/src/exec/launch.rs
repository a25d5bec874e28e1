//! Where the process behind an executable operator comes from: a factory ([`Launch`]) that
//! starts it and hands back the process ([`OperatorProcess`]: wait, kill, pid) with its stdin
//! and stdout. A worker's factory is [`OsLauncher`](super::OsLauncher), an OS child in a
//! process group of its own; the deterministic simulation (`tests/sim`) supplies in-process
//! stand-ins on in-memory pipes. Either way [`ExecOperator`](super::ExecOperator) runs the
//! same code around it: the line protocol, the output reader, feeding, early exit, kill.

use super::ExecError;
use futures::future::BoxFuture;
use std::path::Path;
use std::process::ExitStatus;
use tokio::io::{AsyncRead, AsyncWrite};

/// Starts the process behind an executable operator, once per task attempt. A seam so that
/// the simulation can run its stand-ins through the real executable-operator code; a task
/// finds the factory in its `TaskEnv`.
pub trait Launch: Send + Sync {
    /// Starts `path args…` (`path`: the executable as this worker resolved it); returns the
    /// running process with its pipes, or why it could not start.
    fn launch(&self, path: &Path, args: &[String]) -> Result<Launched, ExecError>;
}

/// A started operator process and its pipes, which the operator takes over.
pub struct Launched {
    /// The process: waited for and killed by the operator.
    pub process: Box<dyn OperatorProcess>,
    /// The write end of its stdin: input lines go here.
    pub stdin: Box<dyn AsyncWrite + Send + Unpin>,
    /// The read end of its stdout: output lines come from here.
    pub stdout: Box<dyn AsyncRead + Send + Unpin>,
}

/// The process behind a running operator, as the operator needs it: its id, its exit, its
/// kill. Whatever else belongs to it (an OS process group) ends with it: once `wait` has
/// returned, on `kill`, and on drop.
pub trait OperatorProcess: Send {
    /// Its process id, for reports and the worker's kill command (0: not an OS process).
    fn pid(&self) -> u32;

    /// Waits for the exit, then ends whatever the process left behind. Cancel-safe (a wait
    /// dropped midway loses nothing), and once it has returned it returns the same status
    /// again.
    fn wait(&mut self) -> BoxFuture<'_, std::io::Result<ExitStatus>>;

    /// Kills the process and whatever it left behind, and reaps it.
    fn kill(&mut self) -> BoxFuture<'_, std::io::Result<()>>;

    /// The write end of its stdin as a descriptor, valid while the operator holds that end:
    /// what the operator counts the input the process left unread through (`unread.rs`);
    /// none for a process without an OS pipe.
    fn stdin_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    /// Its last stderr lines, oldest first, for its failure to quote (all of them in once
    /// `wait` has returned); none for a process without a stderr.
    fn last_stderr(&self) -> Vec<String> {
        Vec::new()
    }
}
