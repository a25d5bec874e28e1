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
//! **Where the process comes from.** A [`Launch`] factory starts it: a worker's is
//! [`OsLauncher`] (the OS child described below); the simulation's (`tests/sim`) runs
//! in-process stand-ins on in-memory pipes, through this same operator code.
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
//!
//! The parts: `launch` (the factory and the process as the operator sees it), `operator` (the
//! running operator: feeding, failure, finish, abort), `history` (its state rebuilt in a fresh
//! process, the rebuilt history's output counted and dropped), `process` (the OS child in a process
//! group of its own), `reader` (the output half of the line protocol), `stderr` (the
//! operator's stderr into the worker's log, bounded and rate limited), `run_as` (the identity
//! operators run under), `orphans` (processes an operator detached).

mod echo;
mod feeder;
mod history;
mod launch;
mod operator;
mod orphans;
mod process;
mod reader;
mod run_as;
mod stderr;
mod unread;

pub use history::Tally;
pub use launch::{Launch, Launched, OperatorProcess};
pub use operator::{ExecOperator, Relaunch};
pub use orphans::adopt_orphans;
pub use process::OsLauncher;
pub use run_as::{run_operators_as, RunAs};

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// Capacity of the buffers on an operator's pipes (the task's stdin writer, the output
/// reader); public so that a [`Launch`] with in-memory pipes can size them alike.
pub const PIPE_BUF: usize = 256 * 1024;

/// Why an executable operator stopped working.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// It could not be started.
    #[error("cannot start operator {path}: {cause}")]
    Spawn {
        /// Executable.
        path: String,
        /// Cause: in the message, so not a `source` too (a printed chain would repeat it).
        cause: std::io::Error,
    },
    /// It exited (or was killed) before or without finishing cleanly.
    #[error("operator process {pid} {how}{stderr}")]
    Exited {
        /// Process id.
        pid: u32,
        /// Exit description.
        how: String,
        /// What it last wrote on stderr: users look there first for why.
        stderr: LastStderr,
    },
    /// Downstream went away (cancellation).
    #[error("downstream closed")]
    Closed,
    /// The operator wrote a line no data-plane frame can carry: it was refused, which closed
    /// the operator's stdout (so it then died of SIGPIPE, or of a write error — that is not
    /// the cause, this is).
    #[error(
        "operator wrote a line larger than the data plane carries: a tuple's key and value \
         may hold {limit} bytes at most (64 MiB less framing); {seen} bytes of it were read \
         before it was refused",
        limit = crate::dataplane::router::MAX_TUPLE
    )]
    LineTooLong {
        /// How many bytes of the line were read (more than the limit), or its tuple's key and
        /// value bytes when the line was read whole.
        seen: usize,
    },
    /// Pipe I/O failed for another reason.
    #[error("operator pipe: {0}")]
    Io(#[from] std::io::Error),
}

/// An operator's last stderr lines as its failure quotes them: nothing when there are none,
/// else `; last stderr: "l1" | "l2" …` (the lines as the `stderr` tail keeps them: few,
/// short, escaped).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LastStderr(pub Vec<String>);

impl std::fmt::Display for LastStderr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, line) in self.0.iter().enumerate() {
            let sep = if i == 0 { "; last stderr: " } else { " | " };
            write!(f, "{sep}\"{line}\"")?;
        }
        Ok(())
    }
}

/// Describes an exit status for humans (`exited with code 3`, `killed by signal 9`).
pub fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "ended".to_string(),
    }
}
