//! The leader's commands to a worker: the long-poll that fetches them (numbered, so each is
//! handled once and acknowledged by the next poll) and what each one does here: start an
//! attempt, update routes, stop a job or a stalled task, SIGKILL an operator.

use super::link::LeaderLink;
use super::report::report;
use super::state::{Attempts, Worker};
use super::{lock_tasks, pause, Running, TaskTable};
use crate::model::backoff::Backoff;
use crate::model::ids::JobId;
use crate::protocol::control::{Command, TaskAssignment, TaskReport, TaskRole, TaskState};
use crate::runtime::fetch::resolve_exec;
use crate::runtime::task::{run_task, TaskEnd, TaskStatus};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

/// Long-polls the leader for commands and passes them on in order until the session ends; a
/// 404 (the leader forgot this worker) ends the session.
pub(super) async fn poll_commands(link: LeaderLink, tx: mpsc::Sender<Command>) {
    let session = link.session.clone();
    let id = link.id.clone();
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    // Commands are numbered; the next poll acknowledges everything up to `handled`, and a
    // command delivered twice (its acknowledgement was lost) is skipped.
    let mut handled: u64 = 0;
    loop {
        let req = link
            .request(reqwest::Method::GET, &format!("/internal/commands/{id}"))
            .query(&[
                ("wait_ms", "20000".to_string()),
                ("after", handled.to_string()),
            ])
            .send();
        let Some(res) = session.run_until_cancelled(req).await else {
            return;
        };
        match res {
            Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {
                session.cancel();
                return;
            }
            Ok(r) => match r.json::<Vec<(u64, Command)>>().await {
                Ok(cmds) => {
                    backoff.reset();
                    for (n, c) in cmds {
                        if n <= handled {
                            continue;
                        }
                        match session.run_until_cancelled(tx.send(c)).await {
                            Some(Ok(())) => handled = n,
                            _ => return,
                        }
                    }
                    continue;
                }
                Err(e) => warn!(error = %e, "bad command batch from the leader"),
            },
            Err(e) => warn!(error = %e, "polling the leader for commands failed"),
        }
        if !pause(&session, backoff.next()).await {
            return;
        }
    }
}

impl Worker {
    /// Carries out one command.
    pub(super) fn handle(
        &self,
        cmd: Command,
        attempts: &mut Attempts,
        ev_tx: &mpsc::Sender<TaskReport>,
    ) {
        match cmd {
            Command::Start(a) => self.start(a, attempts, ev_tx),
            Command::Routes {
                job,
                routes,
                version,
            } => self.env.routes.set_many(&job, version, &routes),
            Command::StopJob { job } => self.stop_job(&job),
            Command::StopTask { key, attempt } => {
                if let Some(r) = lock_tasks(&self.tasks).get(&(key.clone(), attempt)) {
                    warn!(task = %key, attempt, "stopping a task attempt the leader no longer runs (found stalled, moved or replaced)");
                    r.cancel.cancel();
                }
            }
            Command::Kill { pid } => kill(pid, &self.tasks),
            Command::SetRate { job, rate } => {
                for r in lock_tasks(&self.tasks).values() {
                    if r.assignment.key.job == job
                        && matches!(r.assignment.role, TaskRole::Source { .. })
                    {
                        info!(%job, rate, "source rate changed");
                        r.status.source.rate.send_replace(rate);
                    }
                }
            }
            Command::Reroute {
                key,
                attempt,
                route,
            } => {
                let version = route.version;
                let tasks = lock_tasks(&self.tasks);
                let Some(r) = tasks.get(&(key.clone(), attempt)) else {
                    warn!(task = %key, attempt, version, "a reroute for an attempt not running here");
                    return;
                };
                match r.status.board.reroute(route) {
                    Some(rep) => {
                        info!(task = %key, attempt, version, outputs = rep.point.outputs, "outputs switch to a new key-group map");
                        // The report goes now; heartbeats repeat it until the leader has it.
                        if ev_tx.try_send(report(&r.assignment, &r.status)).is_err() {
                            warn!(task = %key, "event queue full; the switch goes with the next heartbeat");
                        }
                    }
                    None => {
                        warn!(task = %key, attempt, version, "a reroute while another switch waits for its verdict")
                    }
                }
            }
            Command::Rerouted {
                key,
                attempt,
                version,
                confirm,
            } => {
                if let Some(r) = lock_tasks(&self.tasks).get(&(key.clone(), attempt)) {
                    info!(task = %key, attempt, version, confirm, "switch decided");
                    r.status.board.decide(version, confirm);
                }
            }
            Command::Inbound {
                job,
                stage,
                routing,
            } => {
                for ((key, _), r) in lock_tasks(&self.tasks).iter() {
                    if key.job == job && key.pos.stage == stage {
                        r.status.inbound.send_replace(Some(routing.clone()));
                    }
                }
            }
            // The session loop drains (it owns the drain's state); nothing to do here.
            Command::Drain => {}
        }
    }

    /// Starts one attempt under a supervisor that fetches its operator, announces its pid as
    /// soon as the operator runs, and returns how it ended.
    fn start(&self, a: TaskAssignment, attempts: &mut Attempts, ev_tx: &mpsc::Sender<TaskReport>) {
        let status = Arc::new(TaskStatus::of(&a));
        let cancel = CancellationToken::new();
        let key = a.key.clone();
        let attempt = a.attempt;
        lock_tasks(&self.tasks).insert(
            (key.clone(), attempt),
            Running {
                assignment: a.clone(),
                status: status.clone(),
                cancel: cancel.clone(),
            },
        );
        let env = self.env.clone();
        let ops_dir = self.cfg.data_dir.join("ops");
        let policy = self.cfg.exec_policy.clone();
        let ev_tx = ev_tx.clone();
        let span = tracing::info_span!("task", job = %key.job, stage = key.pos.stage, task = key.pos.index, attempt);
        let id_key = (key.clone(), attempt);
        let tasks = self.tasks.clone();
        let supervisor = async move {
            let exec = match a.role.exec() {
                Some(path) => match resolve_exec(&env.store, &a, path, &ops_dir, &policy).await {
                    Ok(p) => {
                        prune_ops(&tasks, ops_dir).await;
                        Some(p)
                    }
                    Err(e) => {
                        let e = e.to_string();
                        *status.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
                        status.set_state(TaskState::Failed);
                        return ((key, attempt), TaskEnd::Failed(e));
                    }
                },
                None => None,
            };
            let announce = announce_start(a.clone(), status.clone(), ev_tx);
            let run = run_task(env, a, exec, status, cancel);
            tokio::pin!(run);
            let outcome = tokio::select! {
                o = &mut run => o,
                _ = announce => run.await,
            };
            ((key, attempt), outcome)
        };
        let handle = attempts.set.spawn(supervisor.instrument(span));
        attempts.ids.insert(handle.id(), id_key);
    }

    /// Cancels every attempt of a job and forgets its routes.
    fn stop_job(&self, job: &JobId) {
        for ((key, _), r) in lock_tasks(&self.tasks).iter() {
            if &key.job == job {
                r.cancel.cancel();
            }
        }
        self.env.routes.remove(job);
    }
}

/// Bounds the worker's cache of operators (`opcache::prune`) once a task has its own: the
/// operators its live tasks run stay (a task may start its process again).
async fn prune_ops(tasks: &TaskTable, ops_dir: std::path::PathBuf) {
    let live: std::collections::BTreeSet<String> = lock_tasks(tasks)
        .values()
        .filter_map(|r| r.assignment.role.exec())
        .filter_map(crate::runtime::store::pinned_hash)
        .map(str::to_string)
        .collect();
    match tokio::task::spawn_blocking(move || crate::runtime::opcache::prune(&ops_dir, &live)).await
    {
        Ok(removed) if !removed.is_empty() => {
            info!(
                removed = removed.len(),
                "removed cached operators no task has run lately"
            )
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "pruning the operator cache panicked"),
    }
}

/// Reports an attempt once its operator runs (it has a pid, or left `Starting`), a source
/// once its whole stream is acknowledged (its final count, without waiting for a heartbeat),
/// and a sink at each group commit ([`announce_commits`]).
async fn announce_start(
    a: TaskAssignment,
    status: Arc<TaskStatus>,
    ev_tx: mpsc::Sender<TaskReport>,
) {
    let first = announce_first(&a, &status, &ev_tx);
    match a.role {
        // Both run until the attempt ends (the caller stops polling this then).
        TaskRole::Sink { .. } => {
            tokio::join!(first, announce_commits(&a, &status, &ev_tx));
        }
        TaskRole::Source { .. } => {
            tokio::join!(first, announce_reads(&a, &status, &ev_tx));
        }
        TaskRole::Operator { .. } => first.await,
    }
}

/// A sink's report at each group commit, at most one every [`COMMIT_REPORT_GAP`]: the leader
/// wakes the job's followers with it, who then read the new output at once (rather than at
/// their next look, `LeaderConfig::follow_poll`).
async fn announce_commits(
    a: &TaskAssignment,
    status: &TaskStatus,
    ev_tx: &mpsc::Sender<TaskReport>,
) {
    let mut commits = status.commits.subscribe();
    // The sender lives in `status`, which outlives this: `changed` fails only if it is dropped.
    while commits.changed().await.is_ok() {
        if ev_tx.send(report(a, status)).await.is_err() {
            return;
        }
        tokio::time::sleep(COMMIT_REPORT_GAP).await;
    }
}

/// A source's lines read, reported every [`READ_REPORT_GAP`] while they grow: the sink
/// reports at each commit, and a source heard only with heartbeats (a second apart) showed
/// fewer tuples in than out for a job that emits a line per line (a probe: 13 of 15 polls).
async fn announce_reads(a: &TaskAssignment, status: &TaskStatus, ev_tx: &mpsc::Sender<TaskReport>) {
    let mut told = 0;
    loop {
        tokio::time::sleep(READ_REPORT_GAP).await;
        if status.state().is_terminal() {
            return;
        }
        let read = status.accepted();
        if read != told {
            told = read;
            if ev_tx.send(report(a, status)).await.is_err() {
                return;
            }
        }
    }
}

/// How often a running source's lines read are reported (when they changed): as often as a
/// sink commits at the default interval.
const READ_REPORT_GAP: std::time::Duration = std::time::Duration::from_millis(100);

/// The least time between two of a sink's commit reports: at the default commit interval
/// every commit is reported; a job committing far faster (`commit_interval_ms = 0`) sends
/// at most a hundred reports a second.
const COMMIT_REPORT_GAP: std::time::Duration = std::time::Duration::from_millis(10);

/// See [`announce_start`]: the start, and a source's end.
async fn announce_first(a: &TaskAssignment, status: &TaskStatus, ev_tx: &mpsc::Sender<TaskReport>) {
    let source = matches!(a.role, TaskRole::Source { .. });
    let mut started = false;
    loop {
        let due = if !started {
            status.state() != TaskState::Starting || status.pid.load(Ordering::Relaxed) != 0
        } else {
            status.done.load(Ordering::Relaxed)
        };
        if due {
            if ev_tx.send(report(a, status)).await.is_err() {
                warn!(task = %a.key, "event reporter gone; a start or a source's end goes unreported");
                return;
            }
            if started || !source {
                return;
            }
            started = true;
            continue;
        }
        if status.state().is_terminal() && started {
            return;
        }
        status.changed.notified().await;
    }
}

/// Whether `pid` can name one process: never 0 (this process's group), 1 (init, or with a
/// minus sign every process) nor anything that turns negative (a group) as a `pid_t`.
fn single_process(pid: u32) -> bool {
    pid > 1 && pid <= i32::MAX as u32
}

/// Whether `pid` has exited but is not reaped yet (a zombie: state `Z` in `/proc/PID/stat`,
/// the field after the command's closing parenthesis). Unknown (no `/proc`) counts as alive.
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// SIGKILLs `pid` only if it is the live operator process of one of this worker's running
/// executable tasks (failure injection); never pid 0, never a group.
fn kill(pid: u32, tasks: &TaskTable) {
    let ours = single_process(pid)
        && lock_tasks(tasks).values().any(|r| {
            r.assignment.role.exec().is_some()
                && !r.status.state().is_terminal()
                && r.status.pid.load(Ordering::Relaxed) == pid
        });
    if !ours {
        warn!(
            pid,
            "kill-task for a process that is not a running operator of this worker; ignored"
        );
        return;
    }
    if exited(pid) {
        // Drained to be replaced (a task rebuilding moved keys' state) and not reaped yet:
        // the signal would land on a zombie and the kill would be reported done.
        warn!(
            pid,
            "kill-task for an operator process that has already exited (not yet reaped); nothing to kill"
        );
        return;
    }
    // SAFETY: plain syscall on one process (pid > 1) this worker spawned and has not reaped.
    let rc = unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    if rc != 0 {
        warn!(pid, error = %std::io::Error::last_os_error(), "kill-task failed");
    } else {
        info!(
            pid,
            "operator process killed on request (failure injection)"
        );
    }
}

#[cfg(test)]
mod tests;
