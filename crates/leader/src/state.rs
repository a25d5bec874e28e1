//! The leader's cluster state: workers, jobs and tasks. One `std::sync::Mutex` guards it; it is
//! never held across `.await` or I/O — every user copies what it needs out and releases it.
//! Resource accounting (which worker runs what) is derived from task records, never kept twice.

use super::job::JobRec;
use crate::coordinator::Input;
use crate::model::ids::{JobId, TaskKey, WorkerId};
use crate::model::spec::StageRole;
use crate::protocol::auth::{eq_ct, PeerKey};
use crate::protocol::control::{Command, TaskState, WorkerState};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};

/// A worker as the leader tracks it.
pub struct WorkerRec {
    /// Data address.
    pub data_addr: String,
    /// Last heartbeat (or registration).
    pub last_seen: Instant,
    /// Liveness.
    pub state: WorkerState,
    /// Commands not yet acknowledged by the worker, numbered: a command stays queued until a
    /// later poll says it arrived (`after`), so a lost poll response loses nothing.
    pub commands: VecDeque<(u64, Command)>,
    /// Number of the next command.
    pub next_command: u64,
    /// Highest command number handed to the worker so far.
    pub delivered: u64,
    /// Wakes the worker's pending poll.
    pub notify: Arc<Notify>,
    /// The key this registration proves on every later control-plane call (none in a
    /// cluster without a secret).
    pub session: Option<String>,
    /// The worker's public key: placements name it for every attempt this worker runs, so
    /// receivers admit links only from this worker for those attempts.
    pub key: PeerKey,
    /// The data connections it holds at most, each way, as it registered them: the link
    /// rule's capacity (`validate::link_room`).
    pub data_conns: u64,
    /// How many operator tasks it runs at once.
    pub slots: u32,
    /// Its links' shared connections, from its last heartbeat (`None` until one says).
    pub shared_conns: Option<crate::protocol::api::DataConns>,
    /// How far its clock is behind the leader's, ns, per its last heartbeat.
    pub clock_offset_ns: i64,
    /// It takes no new task (it drains, then leaves).
    pub draining: bool,
    /// It drained and left (its state is then `Dead`).
    pub left: bool,
    /// The registration has been used since it was made (a heartbeat, an event, a command
    /// poll), or took back a worker's tasks: one that never is, is forgotten as soon as it is
    /// declared dead.
    pub heard: bool,
    /// When it was declared dead: a dead worker stays listed for a while, then is forgotten.
    pub dead_since: Option<Instant>,
}

pub use rec::{reported_pid, TaskRec};

/// Wakes the followers of `r`'s job when `r` is its sink's report of a group commit they have
/// not seen (its worker reports each one as it is made).
fn sink_committed(jobs: &BTreeMap<JobId, JobRec>, r: &crate::protocol::control::TaskReport) {
    let Some(j) = jobs.get(&r.key.job) else {
        return;
    };
    if r.commits > 0 && r.key.pos.stage == j.spec.sink_stage() {
        j.commits.send_if_modified(|seen| {
            let new = (r.attempt, r.commits);
            std::mem::replace(seen, new) != new
        });
    }
}

/// Carries the counters of a job's source and sink task (current attempt) onto the job: the
/// tuples the source emitted, the lines the sink holds, the sink's latency histogram.
pub fn job_counters(jobs: &BTreeMap<JobId, JobRec>, r: &crate::protocol::control::TaskReport) {
    let Some(j) = jobs.get(&r.key.job) else {
        return;
    };
    // An ended job's lines out are final (its output's): a report that comes late changes
    // nothing. Its tuples in may still grow: a source stopped by a cancel reports what it
    // read last, after the job's end (a probe's cancelled jobs kept 1,060 in for 1,155 out).
    let ended = j.status().is_terminal();
    if ended && !matches!(j.spec.role_of(r.key.pos.stage), StageRole::Source) {
        return;
    }
    match j.spec.role_of(r.key.pos.stage) {
        StageRole::Source => {
            // The most any attempt read: a restarted source counts from its first line again,
            // and the job may end (its first stage holding the whole stream) before it is
            // back where its predecessor was. A count that fell would say the job read less
            // than it did, and a Prometheus counter must never fall.
            // Lines read, not routed: the first stage's pushed-down filters drop some before
            // routing (`model::pushdown`), and `source_read` paces a restart by lines.
            j.source_tuples.fetch_max(r.tuples_in, Ordering::Relaxed);
            j.source_read.fetch_max(r.tuples_in, Ordering::Relaxed);
        }
        StageRole::Sink => {
            // Likewise the most any sink attempt held: its committed log only grows, and a
            // new attempt counts from 0 until its replay (a probe saw 0 out while a sink
            // kept failing to restart with 5,000 lines committed). The output's count
            // replaces it when the job ends (`cleanup.rs`).
            j.sink_tuples.fetch_max(r.tuples_in, Ordering::Relaxed);
            j.latency.lock().unwrap_or_else(|p| p.into_inner()).report(
                r.attempt,
                r.latency.as_ref(),
                r.meters.latency.as_ref(),
            );
        }
        StageRole::Operator(_) => {}
    }
}

/// Everything the leader knows.
#[derive(Default)]
pub struct State {
    /// Workers by id.
    pub workers: BTreeMap<WorkerId, WorkerRec>,
    /// Jobs by id.
    pub jobs: BTreeMap<JobId, JobRec>,
    /// Tasks by key.
    pub tasks: BTreeMap<TaskKey, TaskRec>,
    /// What running jobs read and write, and uploads in progress.
    pub files: super::files::Files,
    /// Every worker identity handed out on this data dir (durable), by id, with the key that
    /// worker registered: a worker that lost its leader rejoins under one of these, proving
    /// that key.
    pub known_workers: BTreeMap<WorkerId, PeerKey>,
    /// Registration challenges handed out and not yet answered.
    pub challenges: Challenges,
}

/// How long a registration challenge stays good.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(60);

/// Challenges kept at most; beyond, the oldest are forgotten (only callers holding the
/// cluster secret can ask for them, but none may grow the leader's memory without bound).
const CHALLENGES_KEPT: usize = 1024;

/// Registration challenges handed out and not yet used: a registration signs one, which is
/// then spent, so a recorded registration cannot be replayed. Each is good once, for
/// [`CHALLENGE_TTL`].
#[derive(Default)]
pub struct Challenges(VecDeque<(String, Instant)>);

impl Challenges {
    /// Records a challenge handed out at `now`.
    pub fn issue(&mut self, challenge: String, now: Instant) {
        self.0
            .retain(|(_, at)| now.duration_since(*at) < CHALLENGE_TTL);
        while self.0.len() >= CHALLENGES_KEPT {
            self.0.pop_front();
        }
        self.0.push_back((challenge, now));
    }

    /// Spends `challenge` if it was handed out and is still good; false otherwise.
    pub fn take(&mut self, challenge: &str, now: Instant) -> bool {
        let found = self.0.iter().position(|(c, at)| {
            now.duration_since(*at) < CHALLENGE_TTL && eq_ct(c.as_bytes(), challenge.as_bytes())
        });
        match found {
            Some(i) => {
                self.0.remove(i);
                true
            }
            None => false,
        }
    }
}

impl State {
    /// Records a job under the id the leader reserved for it (`Leader::new_job_id`).
    pub fn add_job(&mut self, id: JobId, rec: JobRec) {
        self.jobs.insert(id, rec);
    }

    /// Records a newly registered worker, alive and with no commands, under the id the
    /// leader took for it (`wN`, from the durable counter), with the key it proved and the
    /// data connections it holds.
    pub fn add_worker(
        &mut self,
        id: WorkerId,
        data_addr: String,
        key: PeerKey,
        session: Option<String>,
        data_conns: u64,
        slots: u32,
    ) {
        let rec = WorkerRec {
            data_addr,
            last_seen: Instant::now(),
            state: WorkerState::Alive,
            commands: VecDeque::new(),
            next_command: 0,
            delivered: 0,
            notify: Arc::new(Notify::new()),
            session,
            key,
            data_conns,
            slots,
            shared_conns: None,
            clock_offset_ns: 0,
            draining: false,
            left: false,
            heard: false,
            dead_since: None,
        };
        self.workers.insert(id, rec);
    }

    /// Applies a worker's report about one of its attempts — from a heartbeat, an event post
    /// or a rejoin: the one place reports are applied — if it is the current attempt of a
    /// task placed on that worker and not already ended: counters, input rate, progress
    /// (stall detection), queue depth, pid (only an executable operator's), state and error.
    /// Returns the input for the job's core when the report is the first to say the attempt
    /// ended, or that the source's whole stream is acknowledged.
    pub fn take_report(
        &mut self,
        worker: &WorkerId,
        r: crate::protocol::control::TaskReport,
        now: Instant,
    ) -> Option<(mpsc::Sender<Input>, Input)> {
        let pid = reported_pid(&self.jobs, &r.key, r.pid);
        let t = self.tasks.get_mut(&r.key)?;
        if t.attempt != r.attempt || t.worker != *worker {
            return None;
        }
        if t.state.is_terminal() {
            // Stopped already (a cancel marks its tasks at once): only a source's last count
            // still counts, for its job's tuples in (`job_counters`).
            job_counters(&self.jobs, &r);
            return None;
        }
        // Its output was held back (a full link) for most of the time since its last report:
        // a task that cannot send — to a task it cannot reach, or that takes nothing — has
        // work pending though its inbox is empty.
        t.blocked = t.meters.held_back(r.attempt, &r.meters);
        // Progress is new input or new output; no pending work (an empty inbox, not
        // draining, nothing held back) is never a stall.
        if r.tuples_in != t.tuples_in
            || r.tuples_out != t.tuples_out
            || (r.queued == 0 && !t.blocked)
            || r.state != TaskState::Running
        {
            t.progressed = now;
        }
        t.meters.update(
            r.attempt,
            (r.tuples_in, r.tuples_out),
            &r.meters,
            r.state.is_terminal(),
        );
        t.reported = true;
        t.queued = r.queued;
        t.tuples_in = r.tuples_in;
        t.tuples_out = r.tuples_out;
        t.discarded = r.discarded;
        t.store_wait_ms = r.store_wait_ms;
        t.finishing = r.finishing;
        t.in_operator = r.in_operator;
        t.unreached = r.unreached;
        t.pid = pid.or(t.pid);
        t.state = r.state;
        let newly_done = r.done && !t.done;
        let handed_new = r.handed > t.handed;
        // A new switch goes to the core first; a source's "done" then waits for the next
        // report (it is repeated in every one).
        let switch = r.switched.clone().filter(|s| t.switched < Some(s.version));
        if switch.is_none() {
            t.done |= r.done;
        }
        if let Some(s) = &switch {
            t.switched = Some(s.version);
        }
        job_counters(&self.jobs, &r);
        sink_committed(&self.jobs, &r);
        if r.error.is_some() {
            t.error = r.error.clone();
        }
        t.unrecoverable |= r.unrecoverable;
        let tx = self.driver_of(&r.key.job)?;
        if r.state.is_terminal() {
            let input = Input::TaskEnded {
                pos: r.key.pos,
                attempt: r.attempt,
                state: r.state,
                error: r.error,
                unrecoverable: r.unrecoverable,
            };
            return Some((tx, input));
        }
        if let Some(report) = switch {
            let pos = r.key.pos;
            let attempt = r.attempt;
            return Some((
                tx,
                Input::Switched {
                    pos,
                    attempt,
                    report,
                },
            ));
        }
        if newly_done {
            return Some((tx, Input::SourceDone { attempt: r.attempt }));
        }
        // Repeated in every report: a handover the core missed (a leader restart) comes again.
        if !handed_new {
            return None;
        }
        if let Some(t) = self.tasks.get_mut(&r.key) {
            t.handed = r.handed;
        }
        let (pos, version) = (r.key.pos, r.handed);
        Some((tx, Input::HandedOver { pos, version }))
    }

    /// Records in the task's record that its attempt failed (the job's core decides what
    /// follows; this only keeps the views true meanwhile).
    pub fn mark_failed(&mut self, key: &TaskKey, attempt: u32, cause: String) {
        if let Some(t) = self.tasks.get_mut(key) {
            if t.attempt == attempt && t.state.on_worker() {
                t.state = TaskState::Failed;
                t.error = Some(cause);
                t.store_wait_ms = 0;
                t.finishing = false;
                t.in_operator = false;
                t.unreached = None;
                // Its inbox and its rates went with it.
                t.queued = 0;
                t.meters.stop();
            }
        }
    }

    /// The event inbox of a job whose driver still runs.
    pub fn driver_of(&self, job: &JobId) -> Option<mpsc::Sender<Input>> {
        self.jobs.get(job).and_then(|j| j.events().cloned())
    }

    /// Queues a command for a worker and wakes its poll.
    pub fn command(&mut self, worker: &WorkerId, cmd: Command) {
        if let Some(w) = self.workers.get_mut(worker) {
            if w.state == WorkerState::Alive {
                w.next_command += 1;
                w.commands.push_back((w.next_command, cmd));
                w.notify.notify_one();
            }
        }
    }

    /// Live workers, least loaded first (load derived from task records).
    pub fn workers_by_load(&self) -> Vec<WorkerId> {
        let mut load: BTreeMap<&WorkerId, usize> = self
            .workers
            .iter()
            .filter(|(_, w)| w.state == WorkerState::Alive)
            .map(|(id, _)| (id, 0))
            .collect();
        for t in self.tasks.values() {
            if t.state.on_worker() {
                if let Some(n) = load.get_mut(&t.worker) {
                    *n += 1;
                }
            }
        }
        let mut v: Vec<(usize, &WorkerId)> = load.into_iter().map(|(w, n)| (n, w)).collect();
        v.sort();
        v.into_iter().map(|(_, w)| w.clone()).collect()
    }

    /// Running tasks of a worker.
    pub fn running_on(&self, worker: &WorkerId) -> u32 {
        self.tasks
            .values()
            .filter(|t| &t.worker == worker && t.state.on_worker())
            .count() as u32
    }
}

/// Shared handle to the state.
pub type SharedState = Arc<Mutex<State>>;

/// Locks the state, recovering from a poisoned lock (a panicking holder cannot leave the
/// maps half-updated: every mutation is a single insert/remove/assignment).
pub fn lock(s: &SharedState) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

mod rec;

#[cfg(test)]
mod tests;
