//! A task's operator behind one interface, whether built in (a synchronous state machine on
//! the task's own tokio task) or an executable (a process fed on stdin, read on stdout).

use crate::builtin::Builtin;
use crate::dataplane::router::Router;
use crate::exec::{ExecError, ExecOperator, Relaunch};
use crate::log::LogError;
use crate::model::tuple::Tuple;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Why a task attempt stopped before finishing.
#[derive(Debug, thiserror::Error)]
pub enum Stop {
    /// Cancelled (the job ended, or the leader stopped this attempt).
    #[error("cancelled")]
    Cancelled,
    /// Failed, with the cause.
    #[error("{0}")]
    Failed(String),
    /// Failed with a cause no restart can mend: its input log is damaged, gone or not sealed
    /// by this cluster, and every attempt would read the same log.
    #[error("{0}")]
    Unrecoverable(String),
}

impl From<ExecError> for Stop {
    fn from(e: ExecError) -> Self {
        match e {
            ExecError::Closed => Stop::Cancelled,
            // Every attempt is fed the same input, so an operator that wrote a line too long
            // to carry writes it again: restarting only delays the failure (a hostile probe
            // waited through 20 restarts and their back-off).
            too_long @ ExecError::LineTooLong { .. } => Stop::Unrecoverable(too_long.to_string()),
            other => Stop::Failed(other.to_string()),
        }
    }
}

impl From<LogError> for Stop {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Store(_) => Stop::Failed(format!("input log: {e}")),
            LogError::Corrupt(_) | LogError::Unsealed(_) | LogError::Missing { .. } => {
                Stop::Unrecoverable(format!("input log: {e}"))
            }
        }
    }
}

/// A router refusal as a task stop: gone links mean cancellation, an oversized tuple a
/// failure no restart mends (the same input makes the same tuple).
fn routed(e: crate::dataplane::router::Closed) -> Stop {
    match e {
        crate::dataplane::router::Closed::Gone => Stop::Cancelled,
        too_large => Stop::Unrecoverable(too_large.to_string()),
    }
}

/// An executable whose process is not started yet. A task that starts standing by (its
/// stage autoscales and it owns no key group) may never be fed: its process starts with its
/// first input, a rebuild of gained key groups, or, if none comes, as its input ends (so an
/// operator that writes at the end of its input still does). Hostile probe 10 counted 80
/// idle Python processes of standby positions on a cluster of 6 slots.
pub struct Deferred {
    /// How to start it, and whom to tell its process id.
    pub relaunch: Relaunch,
    /// Where its output goes.
    pub router: Router,
    /// The task's count of input discarded after an early exit 0.
    pub discarded: Arc<AtomicU64>,
    /// The task's working time, which the process's stdin writer runs while it has input.
    pub working: Arc<crate::dataplane::meter::Stopwatch>,
}

impl Deferred {
    /// Starts the process: the operator as a task that did not defer it would have it.
    pub fn start(self) -> Result<ExecOperator, String> {
        let Deferred {
            relaunch,
            router,
            discarded,
            working,
        } = self;
        let launched = relaunch
            .launcher
            .launch(&relaunch.path, &relaunch.args)
            .map_err(|e| e.to_string())?;
        let on_pid = relaunch.on_pid.clone();
        let op =
            ExecOperator::counting(launched, router, (discarded, working)).restartable(relaunch);
        on_pid(op.pid());
        Ok(op)
    }
}

/// What a deferred executable that [`Operator::started`] did not start answers (it always
/// starts it or fails first, so this is never seen).
fn not_started() -> Stop {
    Stop::Failed("the operator's process was not started".into())
}

/// The operator of one task attempt.
pub enum Operator {
    /// A built-in, its router and a reusable output buffer.
    Builtin(Builtin, Router, Vec<Tuple>),
    /// An executable (whatever process the task's launcher started for it).
    Exec(ExecOperator),
    /// An executable not started yet ([`Deferred`]).
    Deferred(Box<Deferred>),
    /// The sink: its input log is its output, so nothing is fed to it (its intake records
    /// the latency of what it accepts); its spool keeps the text of that log for the output.
    Sink(Option<Arc<crate::sink::Spool>>),
}

impl Operator {
    /// A deferred executable started (a no-op for any other operator).
    pub fn started(&mut self) -> Result<&mut Operator, Stop> {
        if matches!(self, Operator::Deferred(_)) {
            // A start that fails leaves a stand-in that feeds nothing: the task fails with it.
            if let Operator::Deferred(d) = std::mem::replace(self, Operator::Sink(None)) {
                *self = Operator::Exec(d.start().map_err(Stop::Failed)?);
            }
        }
        Ok(self)
    }

    /// Processes one tuple.
    pub async fn feed(&mut self, t: Tuple, emit_ns: u64) -> Result<(), Stop> {
        match self.started()? {
            Operator::Builtin(op, router, out) => {
                op.process(t, out);
                for t in out.drain(..) {
                    router.push(t, emit_ns).await.map_err(routed)?;
                }
                Ok(())
            }
            Operator::Exec(op) => Ok(op.feed(&t, emit_ns).await?),
            Operator::Deferred(_) => Err(not_started()),
            // The sink's tuples stay in its log (their latency is taken as they arrive).
            Operator::Sink(_) => Ok(()),
        }
    }

    /// The input ran dry for now: push out what is buffered.
    pub async fn idle(&mut self) -> Result<(), Stop> {
        match self {
            Operator::Builtin(_, router, _) => router.flush().await.map_err(routed),
            Operator::Exec(op) => Ok(op.idle().await?),
            Operator::Deferred(_) | Operator::Sink(_) => Ok(()),
        }
    }

    /// A built-in's outputs so far, all held by the next stage (`Router::settle`): what a
    /// task waits for before it hands a key group's state on.
    pub async fn settle(&mut self) -> Result<(), Stop> {
        match self {
            Operator::Builtin(_, router, _) => router.settle().await.map_err(routed),
            Operator::Exec(_) | Operator::Deferred(_) | Operator::Sink(_) => Ok(()),
        }
    }

    /// Resolves only if the operator failed on its own (an executable died).
    pub async fn died(&mut self) -> Stop {
        match self {
            Operator::Builtin(..) | Operator::Deferred(_) | Operator::Sink(_) => {
                std::future::pending().await
            }
            Operator::Exec(op) => op.died().await.into(),
        }
    }

    /// Every input ended: lets the operator drain, then ends every outgoing stream.
    pub async fn finish(mut self) -> Result<(), Stop> {
        self.started()?;
        let router = match self {
            Operator::Builtin(_, router, _) => router,
            Operator::Exec(op) => op.finish().await?,
            Operator::Deferred(_) => return Err(not_started()),
            Operator::Sink(_) => return Ok(()),
        };
        router.finish().await.map_err(routed)
    }

    /// Stops at once (an executable is killed and reaped).
    pub async fn abort(self) {
        if let Operator::Exec(op) = self {
            op.abort().await;
        }
    }
}
