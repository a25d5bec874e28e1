//! Messages of the control plane (leader ⇄ workers, HTTP/JSON on the leader's one address) and
//! of the public API. Both sides compile from this one file, so they cannot drift apart.

use crate::auth::PeerKey;
use crate::model::ids::{JobId, TaskKey, WorkerId};
use serde::{Deserialize, Serialize};

pub use crate::assignment::{SourceReplay, TaskAssignment, TaskRole};
pub use crate::dest::{Dest, Endpoint, Route};

/// Bumped whenever a control message changes incompatibly; checked at registration.
pub const PROTOCOL_VERSION: u32 = 8;

pub use crate::headers::{CLAIM_HEADER, OBJECT_SIZE_HEADER, SESSION_HEADER, WORKER_HEADER};

/// The leader's answer to `POST /internal/challenge`: a fresh value a registration signs,
/// good for one registration within a minute.
#[derive(Debug, Serialize, Deserialize)]
pub struct RegisterChallenge {
    /// 32 random bytes, hex.
    pub challenge: String,
}

/// A worker asking to join.
#[derive(Debug, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// Protocol version the worker speaks.
    pub version: u32,
    /// `host:port` of its data listener.
    pub data_addr: String,
    /// Its OS process id (for operators' eyes only).
    pub pid: u32,
    /// The worker's public key: recorded with its id, named in the routes of the attempts it
    /// runs, and the only key a later rejoin under this id is accepted with. (Optional only so
    /// that a worker of another protocol version is told so, not that its request is
    /// malformed.)
    #[serde(default)]
    pub key: Option<PeerKey>,
    /// The challenge this registration answers (from `POST /internal/challenge`, hex).
    #[serde(default)]
    pub challenge: Option<String>,
    /// The worker's signature over the challenge and this request's claim
    /// (`protocol::auth::RegistrationClaim`), hex.
    #[serde(default)]
    pub proof: Option<String>,
    /// A worker that lost its leader (it restarted, or forgot this worker) asks to keep its
    /// identity and its running tasks.
    #[serde(default)]
    pub rejoin: Option<Rejoin>,
    /// The data connections the worker holds at most, each way (its data listener's cap and
    /// its links' budget, fitted to its open-files limit): the leader admits no more links
    /// into the cluster than its smallest worker holds. Absent from an older worker, which
    /// is taken to hold the default (`model::check::MAX_LINKS`).
    #[serde(default)]
    pub data_conns: Option<u64>,
    /// How many operator tasks the worker runs at once (`--slots`). Absent from an older
    /// worker, which is taken to have [`DEFAULT_SLOTS_OF_OLD_WORKERS`].
    #[serde(default)]
    pub slots: Option<u32>,
    /// The cluster id the worker read in its own store (`cluster/id`; empty if none is
    /// there), when it has one: the leader refuses a worker whose store is not its own.
    /// `None`: the worker uses the leader's store (or is older).
    #[serde(default)]
    pub store_id: Option<String>,
}

/// The slots of a worker that does not say (an older version): as good as unlimited, which
/// is what it had.
pub const DEFAULT_SLOTS_OF_OLD_WORKERS: u32 = 1024;

/// A worker leaving the cluster: first it drains (it takes no new task and the leader moves
/// its tasks elsewhere), then it has left (it runs nothing and exits).
#[derive(Debug, Serialize, Deserialize)]
pub struct Leave {
    /// Sender.
    pub worker_id: WorkerId,
    /// How far it is.
    pub phase: LeavePhase,
}

/// See [`Leave`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeavePhase {
    /// Take no new task; move mine.
    Draining,
    /// I run nothing and exit now.
    Left,
}

/// What a rejoining worker brings: the id it had and every attempt it runs or ran since its
/// last report (an end the old leader never heard of is in here). The request's proof must
/// be made with the key recorded for that id, or the registration is refused (401).
#[derive(Debug, Serialize, Deserialize)]
pub struct Rejoin {
    /// The id it registered under before.
    pub worker_id: WorkerId,
    /// Its attempts and their states.
    pub tasks: Vec<TaskReport>,
}

/// The leader's answer to a registration.
#[derive(Debug, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// The id the worker uses from now on.
    pub worker_id: WorkerId,
    /// How often to heartbeat.
    pub heartbeat_ms: u64,
    /// The key to send as a bearer token on every later control-plane call (absent in a
    /// cluster without a secret).
    #[serde(default)]
    pub session: Option<String>,
    /// The leader took the worker back under its old id: it keeps its tasks (the leader
    /// adopted those it still wants and sends StopTask for the others). False: a new
    /// identity, and the worker stops every task it ran.
    #[serde(default)]
    pub adopted: bool,
}

/// A task's state and counters, from its worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskReport {
    /// Which task.
    pub key: TaskKey,
    /// Which attempt of it.
    pub attempt: u32,
    /// Operator process id, for executables.
    pub pid: Option<u32>,
    /// State.
    pub state: TaskState,
    /// Tuples accepted (after dedup).
    pub tuples_in: u64,
    /// Tuples emitted.
    pub tuples_out: u64,
    /// Why it failed.
    pub error: Option<String>,
    /// Its failure is one no restart can mend (see `coordinator::Input::TaskEnded`).
    #[serde(default)]
    pub unrecoverable: bool,
    /// Input batches waiting in the task's inbox (stall detection).
    #[serde(default)]
    pub queued: u32,
    /// The sink's end-to-end latency histogram (sink tasks only).
    #[serde(default)]
    pub latency: Option<crate::model::latency::LatencyHist>,
    /// A source whose whole stream is acknowledged: its counters are final, though it keeps
    /// serving restarted first-stage tasks until the job ends.
    #[serde(default)]
    pub done: bool,
    /// Bytes, busy and back-pressured time, log commit and latency histograms.
    #[serde(default)]
    pub meters: crate::meters::TaskMeters,
    /// The latest switch of this attempt's outputs to a new map, and where it made it.
    #[serde(default)]
    pub switched: Option<crate::reroute::SwitchReport>,
    /// The latest version of its stage's routing whose key groups this attempt lost and whose
    /// state it has handed over (a stage whose built-in keeps state; 0: none).
    #[serde(default)]
    pub handed: u32,
    /// A sink: the group commits this attempt made. Its worker reports each new one at once
    /// (not at the next heartbeat), so the job's followers read the new output then rather
    /// than at their next poll.
    #[serde(default)]
    pub commits: u64,
    /// Tuples fed to this attempt's executable after it exited 0 before its input ended:
    /// discarded, as the operator protocol allows (`head -n 5`), and counted so a job can say
    /// so rather than end as if it had processed them (hostile probe).
    #[serde(default)]
    pub discarded: u64,
    /// How long its input-log write in progress has waited for the store, in ms (0: none
    /// waits): a store that does not answer, named as such in the job's views.
    #[serde(default)]
    pub store_wait_ms: u64,
    /// Every input ended and the attempt waits for its operator to finish (an executable's
    /// process to exit): a stall then names the operator.
    #[serde(default)]
    pub finishing: bool,
    /// The attempt is inside a call to its operator now (feeding it, flushing its input, or
    /// waiting for it to end): work is pending even with an empty inbox, and an operator that
    /// takes no input is named as the stall's cause.
    #[serde(default)]
    pub in_operator: bool,
    /// The receiver its links have tried longest to reach without a connection, and for how
    /// long in ms (a worker-to-worker cut, or a receiver restarting).
    #[serde(default)]
    pub unreached: Option<(crate::model::ids::TaskPos, u64)>,
}

/// Periodic liveness message.
#[derive(Debug, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Sender.
    pub worker_id: WorkerId,
    /// Every live task's report.
    pub tasks: Vec<TaskReport>,
    /// Its links' shared connections to other workers (absent: a connection per link).
    #[serde(default)]
    pub data: Option<crate::api::DataConns>,
    /// How far its clock is behind the leader's, as it measured on earlier heartbeats, ns
    /// (negative: ahead); its emit times are corrected by it (`dataplane::clock`).
    #[serde(default)]
    pub clock_offset_ns: i64,
}

/// Reply to a heartbeat or event post.
#[derive(Debug, Serialize, Deserialize)]
pub struct Known {
    /// False when the leader no longer knows the worker (declared dead): it must stop its
    /// tasks and register again.
    pub known: bool,
    /// The leader's wall clock as it answered, ns since the Unix epoch (0: not said): a worker
    /// measures its own clock against it (`dataplane::clock`). Told only to a known worker.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub leader_ns: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Known {
    /// The leader's answer; a known worker's is stamped with the leader's wall clock.
    pub fn answer(known: bool) -> Known {
        let leader_ns = match known {
            true => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            false => 0,
        };
        Known { known, leader_ns }
    }
}

/// Terminal and start events, posted as they happen.
#[derive(Debug, Serialize, Deserialize)]
pub struct Events {
    /// Sender.
    pub worker_id: WorkerId,
    /// The reports.
    pub reports: Vec<TaskReport>,
}

/// A command from leader to worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
// Commands are few and short-lived (one per start, route change or switch); boxing the
// start would only move the allocation.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Start a task attempt.
    Start(TaskAssignment),
    /// New placement of a job's tasks.
    Routes {
        /// Job.
        job: JobId,
        /// Position, data address, attempt, worker key.
        routes: Vec<Route>,
        /// Version of the placement (newer wins).
        version: u64,
    },
    /// Stop every task of a job and forget it.
    StopJob {
        /// Job.
        job: JobId,
    },
    /// Stop one task attempt the leader no longer runs: found stalled, moved (its worker was
    /// taken for dead, then came back) or replaced.
    StopTask {
        /// Which task.
        key: TaskKey,
        /// Which attempt.
        attempt: u32,
    },
    /// A job's source paces by this rate from now on (`rainstorm set-rate`).
    SetRate {
        /// Job.
        job: JobId,
        /// Tuples per second (0: unthrottled).
        rate: f64,
    },
    /// Switch an upstream task's outputs to a new key-group map (a rescale of the next
    /// stage): record the point reached, hold the outputs whose group moves, report.
    Reroute {
        /// Which task.
        key: TaskKey,
        /// Which attempt.
        attempt: u32,
        /// The switch.
        route: crate::reroute::PendingRoute,
    },
    /// The leader made every point of a switch durable (`confirm`: held outputs go by the
    /// new map) or gave it up (they go by the old one).
    Rerouted {
        /// Which task.
        key: TaskKey,
        /// Which attempt.
        attempt: u32,
        /// The downstream stage's routing version.
        version: u32,
        /// Confirmed or aborted.
        confirm: bool,
    },
    /// A stage's routing after a switch was confirmed: its tasks learn which key groups they
    /// gained, from whom and up to where, to take the groups' state over.
    Inbound {
        /// Job.
        job: JobId,
        /// The stage.
        stage: u32,
        /// Its routing.
        routing: crate::routing::StageRouting,
    },
    /// Drain (`rainstorm drain`): take no new task, wait until the leader has moved every
    /// task elsewhere, then leave and exit.
    Drain,
    /// SIGKILL an operator process of this worker (failure injection).
    Kill {
        /// Process id.
        pid: u32,
    },
}

pub use crate::api::*;
