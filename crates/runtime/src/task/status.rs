//! The live state of a task attempt, shared between the attempt and its worker's reports:
//! state, counters and meters, all read without touching the task (atomics, short locks).

use crate::dataplane::meter::{SendMeter, Stopwatch};
use crate::dataplane::reroute::Switchboard;
use crate::model::hist::AtomicHist;
use crate::protocol::control::TaskState;
use crate::protocol::meters::TaskMeters;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// When an attempt began: the whole its busy and back-pressured shares are taken of.
#[derive(Debug)]
pub struct Started(pub tokio::time::Instant);

impl Default for Started {
    fn default() -> Self {
        Started(tokio::time::Instant::now())
    }
}

/// An input-log write in progress, timed on the attempt's clock: how long the store has kept
/// the task waiting, which its reports carry, so a job frozen by a store that does not
/// answer says so instead of waiting for the stall detector to blame a peer (hostile probe 9).
#[derive(Debug, Default)]
pub struct StoreWait {
    /// When the write began, in µs after the attempt began, plus one; 0: no write waits.
    since_us: AtomicU64,
}

impl StoreWait {
    /// A write to the store begins.
    pub fn begin(&self, started: &Started) {
        let us = started.0.elapsed().as_micros() as u64;
        self.since_us.store(us.saturating_add(1), Ordering::Relaxed);
    }

    /// The write ended (written or given up).
    pub fn end(&self) {
        self.since_us.store(0, Ordering::Relaxed);
    }

    /// How long the write in progress has waited (zero when none does).
    pub fn waited(&self, started: &Started) -> std::time::Duration {
        match self.since_us.load(Ordering::Relaxed) {
            0 => std::time::Duration::ZERO,
            since => started
                .0
                .elapsed()
                .saturating_sub(std::time::Duration::from_micros(since - 1)),
        }
    }
}

/// Live state of a task, read by heartbeats without touching the task.
#[derive(Default)]
pub struct TaskStatus {
    state: AtomicU8,
    /// Operator process id (0 = none).
    pub pid: AtomicU32,
    /// Tuples accepted.
    pub tuples_in: AtomicU64,
    /// Tuples emitted.
    pub tuples_out: Arc<AtomicU64>,
    /// Failure cause.
    pub error: Mutex<Option<String>>,
    /// The failure is one no restart can mend (`TaskEnd::Unrecoverable`).
    pub unrecoverable: AtomicBool,
    /// Signalled when the state or pid changes (the worker announces a start on it).
    pub changed: tokio::sync::Notify,
    /// Every input ended and the operator is draining: work is pending even with an empty
    /// inbox, so an operator that never finishes is seen as stalled.
    pub draining: AtomicBool,
    /// Every input ended and the task waits for its operator to finish: an executable's
    /// process to close its output and exit. A stall then names the operator, not a peer
    /// (hostile probe 12: a process that closed its output and never exited was blamed on
    /// the network, 20 times over).
    pub finishing: AtomicBool,
    /// A sink's end-to-end latency histogram (reported to the leader with its counters).
    pub latency: Mutex<Option<crate::model::latency::LatencyHist>>,
    /// A source: its whole stream is acknowledged, its counters are final (it serves on).
    pub done: AtomicBool,
    /// Key and value bytes accepted.
    pub bytes_in: AtomicU64,
    /// What the task's router measures: bytes emitted, time blocked on a full link queue.
    pub sent: Arc<SendMeter>,
    /// Time spent processing: feeding and flushing the operator and letting it drain, and
    /// the time an executable has input it has not taken (its stdin's writer runs it too; a
    /// sink: writing its log). Time blocked downstream meanwhile is in it too; the busy time
    /// reported is this less that.
    pub working: Arc<Stopwatch>,
    /// The busy time last reported: reports never show less (see [`TaskStatus::meters`]).
    busy_seen: AtomicU64,
    /// Durations of the input log's segment writes.
    pub log_commit: AtomicHist,
    /// A sink's end-to-end latency, in the fixed buckets `/metrics` shows.
    pub e2e: AtomicHist,
    /// When the attempt began.
    pub started: Started,
    /// A source: how far it has read its file.
    pub source: Arc<crate::source::SourceRead>,
    /// Where its outputs go by key group, and a switch to a new map in progress (rescales).
    pub board: Arc<Switchboard>,
    /// Its stage's routing as the leader last told it (a stage whose key groups keep state):
    /// which groups it gained, to take their state over.
    pub inbound: tokio::sync::watch::Sender<Option<crate::protocol::routing::StageRouting>>,
    /// The latest routing version whose lost key groups' state this attempt handed over.
    pub handed: std::sync::atomic::AtomicU32,
    /// A sink: its group commits so far, watched by its worker, which reports each one.
    pub commits: tokio::sync::watch::Sender<u64>,
    /// Tuples fed after its executable exited 0 before its input ended: discarded.
    pub discarded: Arc<AtomicU64>,
    /// The input-log write in progress, if one is.
    pub store_wait: StoreWait,
}

impl TaskStatus {
    /// The status of a new attempt of `a`: a source's starts at its assigned rate (set here,
    /// when the worker takes the start, so a later `SetRate` command is never overwritten).
    pub fn of(a: &crate::protocol::control::TaskAssignment) -> TaskStatus {
        // A later attempt of a task (in its epoch) regenerates what earlier ones routed.
        let restarted = a.attempt > a.epoch;
        let mut board = Switchboard::new(a.routing.steps.clone(), a.downstream, restarted);
        if restarted && matches!(a.role, crate::protocol::control::TaskRole::Source { .. }) {
            board = board.with_reach();
        }
        let inbound = a.inbound.as_ref().map(|i| i.routing.clone());
        let status = TaskStatus {
            board: Arc::new(board),
            inbound: tokio::sync::watch::Sender::new(inbound),
            ..TaskStatus::default()
        };
        if let crate::protocol::control::TaskRole::Source { rate, .. } = &a.role {
            status.source.rate.send_replace(*rate);
        }
        status
    }

    /// Current state.
    pub fn state(&self) -> TaskState {
        match self.state.load(Ordering::Relaxed) {
            0 => TaskState::Starting,
            1 => TaskState::Running,
            2 => TaskState::Finished,
            3 => TaskState::Failed,
            5 => TaskState::Waiting,
            _ => TaskState::Cancelled,
        }
    }

    /// Sets the state.
    pub fn set_state(&self, s: TaskState) {
        let v = match s {
            TaskState::Starting => 0,
            TaskState::Running => 1,
            TaskState::Finished => 2,
            TaskState::Failed => 3,
            TaskState::Cancelled => 4,
            TaskState::Waiting => 5,
        };
        self.state.store(v, Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// Marks a source's stream as wholly acknowledged (the worker reports it at once).
    pub fn set_done(&self) {
        self.done.store(true, Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// Tuples in as reported: those accepted, or a source's lines read (it accepts no tuples;
    /// lines its pushed-down filter dropped are read, not routed, so its tuples out can be
    /// fewer).
    pub fn accepted(&self) -> u64 {
        let lines = self.source.lines.load(Ordering::Relaxed);
        self.tuples_in.load(Ordering::Relaxed).max(lines)
    }

    /// Records the operator's process id.
    pub fn set_pid(&self, pid: u32) {
        self.pid.store(pid, Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// The attempt's meters as of now. Busy time is working time less back-pressured time.
    /// An executable's output is blocked by its own reader, concurrently with feeding it, so
    /// that difference can shrink for a moment; a report never shows less busy time than the
    /// one before (a counter that went back would read as a restart).
    pub fn meters(&self) -> TaskMeters {
        let blocked = self.sent.blocked.read_ns();
        let busy = self.working.read_ns().saturating_sub(blocked);
        let busy = self.busy_seen.fetch_max(busy, Ordering::Relaxed).max(busy);
        TaskMeters {
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.sent.bytes(),
            busy_ns: busy,
            backpressure_ns: blocked,
            uptime_ns: self.started.0.elapsed().as_nanos() as u64,
            log_commit: self.log_commit.snapshot(),
            latency: self.e2e.snapshot(),
            source_read: self.source.bytes.load(Ordering::Relaxed),
            source_size: self.source.size.get().copied(),
        }
    }
}
