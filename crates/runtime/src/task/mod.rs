//! One task attempt on a worker, from start to exactly one end: register (fenced by attempt),
//! build the outgoing links and the operator, recover (replay the input log under
//! exactly-once), receive until every input ended, let the operator drain, and wait for every
//! outgoing link's end of stream to be acknowledged.
//!
//! The assignment's role picks what runs: an operator; the job's source (`runtime::source`,
//! which has no input and serves until cancelled); or the job's sink, a logged task under
//! every delivery mode whose log is the committed output and which, once every input ended,
//! writes that output out (`runtime::sink`).
//!
//! - [`operator`]: built-in and executable operators behind one interface.
//! - [`receive`]: the one receive loop, over the one acceptance rule.
//! - [`direct`]: input fed straight to the operator (and first-stage source regeneration).
//! - [`logged`]: exactly-once input through the group-committed, fenced input log.

mod compact;
mod direct;
mod logged;
pub mod operator;
mod rebuild;
pub(crate) mod receive;
mod replay;
mod status;
mod takeover;

pub use status::{Started, TaskStatus};

use crate::builtin::Builtin;
use crate::dataplane::acceptance::{Acceptance, Gaps};
use crate::dataplane::inbound::{AckBoard, Inbound};
use crate::dataplane::link::{LinkEnd, EPOCH_SHIFT};
use crate::exec::Relaunch;
use crate::links::{self, Outgoing};
use crate::model::spec::{Delivery, OperatorSpec};
use crate::protocol::control::{TaskAssignment, TaskRole, TaskState};
use crate::sink::{write_output, OutputError, Spool};
use crate::source::{run_source, SourceEnd, SourceSpec};
use operator::{Deferred, Operator, Stop};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// How a task attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEnd {
    /// Drained and acknowledged downstream.
    Finished,
    /// Failed, with the cause.
    Failed(String),
    /// Failed with a cause no restart can mend (`Stop::Unrecoverable`): its job fails.
    Unrecoverable(String),
    /// Stopped by cancellation.
    Cancelled,
}

pub use crate::env::TaskEnv;

/// Runs one task attempt to its end.
pub async fn run_task(
    env: TaskEnv,
    a: TaskAssignment,
    exec_path: Option<PathBuf>,
    status: Arc<TaskStatus>,
    cancel: CancellationToken,
) -> TaskEnd {
    if let TaskRole::Source {
        path, name, filter, ..
    } = &a.role
    {
        let filter = match filter.as_ref().map(|f| f.compile()).transpose() {
            Ok(f) => f,
            Err(e) => {
                let why = format!("the first stage's filter cannot be pushed into the source: {e}");
                return settle(&status, TaskEnd::Failed(why));
            }
        };
        let spec = SourceSpec {
            job: a.key.job.clone(),
            path: path.clone(),
            paths: a.paths,
            name: name.clone(),
            downstream: a.downstream,
            partition: a.partition.clone(),
            board: status.board.clone(),
            resend: a.delivery != Delivery::AtMostOnce,
            epoch: a.epoch,
            attempt: a.attempt,
            read: status.source.clone(),
            caught_up: a.source_caught_up,
            filter,
        };
        env.routes.set_many(&a.key.job, a.routes_version, &a.routes);
        status.set_state(TaskState::Running);
        let done = || status.set_done();
        let (emitted, sent) = (status.tuples_out.clone(), status.sent.clone());
        let end = match run_source(env, spec, emitted, sent, done, cancel).await {
            Ok(()) => TaskEnd::Cancelled,
            Err(SourceEnd::Cancelled) => TaskEnd::Cancelled,
            Err(SourceEnd::Failed(e)) => TaskEnd::Failed(e),
            Err(SourceEnd::Unrecoverable(e)) => TaskEnd::Unrecoverable(e),
        };
        return settle(&status, end);
    }
    let key = a.key.clone();
    // The routes first: the listener admits a link only from a sender attempt they name.
    env.routes.set_many(&key.job, a.routes_version, &a.routes);
    let Some((inbox, acks, registration)) =
        env.registry
            .register(key.clone(), a.attempt, a.epoch, env.cfg.queue_batches)
    else {
        let why = "a newer attempt of this task is already registered here".to_string();
        return settle(&status, TaskEnd::Failed(why));
    };
    let (router, mut links) = links::spawn(
        &env,
        Outgoing {
            job: key.job.clone(),
            from: key.pos,
            attempt: a.attempt,
            epoch: a.epoch,
            downstream: a.downstream,
            partition: a.partition.clone(),
            board: status.board.clone(),
            resend: a.delivery != Delivery::AtMostOnce,
            linger: false,
            done: None,
        },
        status.tuples_out.clone(),
        status.sent.clone(),
        &cancel,
    );
    // A sink spools the text of its log as it goes, for the output at its end.
    let spool = match &a.role {
        TaskRole::Sink { .. } if env.spool => {
            Spool::create(&env.work_dir, &key, a.attempt, env.store.durable())
                .await
                .map(Arc::new)
        }
        _ => None,
    };
    let op = match &a.role {
        TaskRole::Operator {
            operator: operator @ (OperatorSpec::Builtin { .. } | OperatorSpec::Chain { .. }),
        } => match Builtin::from_operator(operator) {
            Some(Ok(b)) => Ok(Operator::Builtin(b, router, Vec::new())),
            Some(Err(e)) => Err(e.to_string()),
            None => Err("not a built-in".to_string()),
        },
        TaskRole::Sink { .. } => Ok(Operator::Sink(spool.clone())),
        TaskRole::Source { .. } => Err("a source is not an operator".to_string()),
        TaskRole::Operator {
            operator: OperatorSpec::Exec { path, args },
        } => match exec_path {
            Some(p) => {
                let st = status.clone();
                let deferred = Deferred {
                    relaunch: Relaunch {
                        launcher: env.launcher.clone(),
                        path: p.clone(),
                        args: args.clone(),
                        on_pid: Arc::new(move |pid| st.set_pid(pid)),
                    },
                    router,
                    discarded: status.discarded.clone(),
                    working: status.working.clone(),
                };
                // A standby position's process waits for its first input (`Deferred`).
                if a.standby {
                    Ok(Operator::Deferred(Box::new(deferred)))
                } else {
                    deferred.start().map(Operator::Exec)
                }
            }
            None => Err(format!("operator {path} is not available on this worker")),
        },
    };
    let outcome = match op {
        Err(e) => TaskEnd::Failed(e),
        Ok(op) => match drive(&env, &a, op, inbox, &acks, &status, &cancel).await {
            Ok(()) => match links.drain().await {
                Ok(()) => match &a.role {
                    // Every input is durable in the sink's log: write it out as the output.
                    TaskRole::Sink { path } => {
                        // Writing the output is work of its own, not an operator that never
                        // finishes: nothing is pending in the stall detector's eyes.
                        status.draining.store(false, Ordering::Relaxed);
                        match write_output(&env, &a, path, spool.as_deref()).await {
                            Ok(()) => TaskEnd::Finished,
                            // Every attempt would find the same log: the job fails, saying why.
                            Err(e @ OutputError::Lost { .. }) => {
                                TaskEnd::Unrecoverable(e.to_string())
                            }
                            Err(e) => TaskEnd::Failed(e.to_string()),
                        }
                    }
                    _ => TaskEnd::Finished,
                },
                Err(LinkEnd::Fenced) => {
                    TaskEnd::Failed("fenced: a newer attempt of this task took over".into())
                }
                Err(_) => TaskEnd::Cancelled,
            },
            Err(Stop::Cancelled) => TaskEnd::Cancelled,
            Err(Stop::Failed(e)) => TaskEnd::Failed(e),
            Err(Stop::Unrecoverable(e)) => TaskEnd::Unrecoverable(e),
        },
    };
    links.stop().await;
    drop(registration);
    settle(&status, outcome)
}

/// Publishes the attempt's end on its status.
fn settle(status: &TaskStatus, outcome: TaskEnd) -> TaskEnd {
    match &outcome {
        TaskEnd::Finished => status.set_state(TaskState::Finished),
        TaskEnd::Failed(e) => {
            *status.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
            status.set_state(TaskState::Failed);
        }
        TaskEnd::Unrecoverable(e) => {
            *status.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
            status.unrecoverable.store(true, Ordering::Relaxed);
            status.set_state(TaskState::Failed);
        }
        TaskEnd::Cancelled => status.set_state(TaskState::Cancelled),
    }
    outcome
}

/// Recover, receive, drain: the attempt's work between start and the links' ends.
async fn drive(
    env: &TaskEnv,
    a: &TaskAssignment,
    mut op: Operator,
    mut inbox: mpsc::Receiver<Inbound>,
    acks: &Arc<AckBoard>,
    status: &TaskStatus,
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    let exactly_once = a.delivery == Delivery::ExactlyOnce;
    // A first-stage task's only input is the source, so its consumption order is sequence
    // order and the source file is its log: it needs no input log of its own.
    // The sink's input log is its committed output, under every delivery mode. An
    // at-least-once stage that rebuilds moved key groups logs its input for that alone.
    let logged = (exactly_once && a.key.pos.stage > 1)
        || a.log_input
        || matches!(a.role, TaskRole::Sink { .. });
    let gaps = if a.delivery == Delivery::AtMostOnce {
        Gaps::Accept
    } else {
        Gaps::Refuse
    };
    let regenerable = exactly_once && a.key.pos.stage == 1 && a.source_replay.is_some();
    let floor = u64::from(a.epoch) << EPOCH_SHIFT;
    let mut acc = Acceptance::new(a.upstream, floor, gaps, regenerable);
    // A stage whose key groups keep state takes the groups it gains over with their state.
    // The first stage rebuilds a gained group from the source file, in every mode it is
    // told where that is.
    let source = a
        .source_replay
        .as_ref()
        .filter(|_| a.key.pos.stage == 1)
        .map(|r| (a.paths, r));
    let hands = (
        matches!(op, Operator::Builtin(..)),
        a.delivery == Delivery::AtMostOnce,
    );
    let mut takeover = a.inbound.as_ref().map(|i| {
        let at = (i, a.attempt, a.epoch);
        takeover::Takeover::new(env, a.key.clone(), at, status, source, hands)
    });
    if logged {
        let recovered = tokio::select! {
            _ = cancel.cancelled() => Err(Stop::Cancelled),
            r = replay::replay_log(env, a, &mut op, &mut acc, status, takeover.as_mut()) => r,
        };
        if let Err(e) = recovered {
            op.abort().await;
            return Err(e);
        }
    }
    for from in 0..acc.links() {
        acks.set(from, acc.hwm(from), acc.ended(from));
    }
    status.set_state(TaskState::Running);

    let res = if logged {
        let (log_tx, log_rx) = mpsc::channel(16);
        let (feed_tx, feed_rx) = mpsc::channel(4);
        let spool = match &op {
            Operator::Sink(s) => s.clone(),
            _ => None,
        };
        let sink = matches!(op, Operator::Sink(_)).then_some(status);
        let receiving = async {
            let mut intake = logged::LogIntake {
                tx: log_tx,
                sink: sink.is_some(),
            };
            let r = receive::receive(
                &a.key,
                &mut inbox,
                &mut acc,
                &mut intake,
                acks,
                status,
                cancel,
            )
            .await;
            drop(intake);
            r
        };
        // The job's own commit interval, if it gave one, over the worker's.
        let mut log_env = env.clone();
        if let Some(ms) = a.commit_interval_ms {
            log_env.cfg.log_commit_ms = ms as usize;
        }
        let writing = logged::log_writer(
            log_env,
            a.key.clone(),
            a.attempt,
            acks.clone(),
            log_rx,
            feed_tx,
            logged::CommitMeter {
                commits: &status.log_commit,
                working: sink.map(|s| &*s.working),
                spool: spool.as_deref(),
                latency: sink,
                waiting: Some((&status.store_wait, &status.started)),
            },
        );
        let feeding = logged::feed(&mut op, feed_rx, &status.working, takeover.as_mut(), cancel);
        // Raced against cancellation as a whole: a write to an operator that stopped reading
        // blocks forever, and a stalled or cancelled task must still stop (and be killed).
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(Stop::Cancelled),
            r = async { tokio::try_join!(receiving, writing, feeding).map(|_| ()) } => r,
        }
    } else {
        let replay = a
            .source_replay
            .as_ref()
            .filter(|_| regenerable)
            .map(|r| (env, a.paths, r, a.key.pos.index));
        let mut intake = direct::DirectIntake {
            op: &mut op,
            replay,
            working: &status.working,
            takeover: takeover.as_mut(),
        };
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(Stop::Cancelled),
            r = receive::receive(&a.key, &mut inbox, &mut acc, &mut intake, acks, status, cancel) => r,
        }
    };
    // A built-in that keeps state writes what it still holds, for a move it may not have
    // heard of yet (`takeover::handover`).
    let res = match (res, takeover.as_mut()) {
        (Ok(()), Some(k)) => tokio::select! {
            _ = cancel.cancelled() => Err(Stop::Cancelled),
            r = k.finish(&mut op) => r,
        },
        (res, _) => res,
    };
    if let Err(e) = res {
        op.abort().await;
        return Err(e);
    }
    // All inputs ended and were processed: let the operator drain and end its streams.
    status.draining.store(true, Ordering::Relaxed);
    let draining = status.working.run();
    status.finishing.store(true, Ordering::Relaxed);
    let finished = tokio::select! {
        _ = cancel.cancelled() => Err(Stop::Cancelled),
        r = op.finish() => r,
    };
    status.finishing.store(false, Ordering::Relaxed);
    finished?;
    drop(draining);
    debug!(task = %a.key, "operator drained");
    Ok(())
}

#[cfg(test)]
mod tests;
