//! The receiving side's per-task state shared with connections: the task's bounded inbox and its
//! ack board. Acks are per link, not per connection, so a reconnecting sender immediately learns
//! how far the task got, and a late ack is harmless. A registration belongs to one attempt of
//! a task: the listener hands a connection only to the attempt its Hello names.

use crate::model::ids::TaskKey;
use crate::model::tuple::Tuple;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Lets a task reset the connection a message came from: on a protocol error (a sequence
/// gap) the connection is dropped unacknowledged and the sender re-sends from its last ack.
#[derive(Clone, Debug, Default)]
pub struct ConnCtl(CancellationToken, u32);

impl ConnCtl {
    /// The control of a connection from attempt `attempt` of its sender.
    pub fn new(attempt: u32) -> ConnCtl {
        ConnCtl(CancellationToken::new(), attempt)
    }

    /// The sender attempt the connection speaks for.
    pub fn attempt(&self) -> u32 {
        self.1
    }

    /// Asks the connection's handler to drop it.
    pub fn reset(&self) {
        self.0.cancel();
    }

    /// Resolves once a reset was asked for.
    pub async fn reset_requested(&self) {
        self.0.cancelled().await
    }
}

/// What a connection hands a task.
#[derive(Debug)]
pub enum Inbound {
    /// A sender attempt connected; its link is acknowledged up to `acked` already (by this
    /// attempt or an earlier one of this task), and those tuples will never be sent again.
    Connected {
        /// Upstream task index.
        from: u32,
        /// Highest sequence number the sender holds acknowledged.
        acked: u64,
        /// The sender holds the link's end of stream acknowledged.
        eos_acked: bool,
        /// The connection.
        conn: ConnCtl,
    },
    /// Tuples `first_seq ..` from upstream task `from`.
    Batch {
        /// The connection it came on.
        conn: ConnCtl,
        /// Upstream task index.
        from: u32,
        /// Sequence number of the first tuple.
        first_seq: u64,
        /// Oldest source emit time of the tuples.
        emit_ns: u64,
        /// The tuples.
        tuples: Vec<Tuple>,
    },
    /// End of stream of the link from `from`.
    Eos {
        /// The connection it came on.
        conn: ConnCtl,
        /// Upstream task index.
        from: u32,
        /// Last sequence number of the link.
        last_seq: u64,
    },
}

/// Ack state of one link: (accepted up to, end of stream accepted, held up to as of taking
/// the connection of sender attempt `by − 1`, `by`): see `Frame::Ack`.
pub type AckState = (u64, bool, u64, u32);

/// Per-link ack state of one task.
///
/// A BTreeMap, not a HashMap: when the board is dropped (its task ended), each sender's drop
/// wakes the connections following that link, and a HashMap would wake them in an order that
/// changes from process to process (its hasher is randomly seeded), so a simulated run
/// (`tests/sim.rs`) would not replay exactly.
#[derive(Default)]
pub struct AckBoard {
    links: Mutex<BTreeMap<u32, watch::Sender<AckState>>>,
}

impl AckBoard {
    /// Follows the acks of the link from upstream task `from`.
    pub fn subscribe(&self, from: u32) -> watch::Receiver<AckState> {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links
            .entry(from)
            .or_insert_with(|| watch::channel((0, false, 0, 0)).0)
            .subscribe()
    }

    /// Publishes that the link from `from` is accepted up to `upto` (and its EOS if `eos`).
    pub fn set(&self, from: u32, upto: u64, eos: bool) {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        let tx = links
            .entry(from)
            .or_insert_with(|| watch::channel((0, false, 0, 0)).0);
        tx.send_if_modified(|cur| {
            let next = (upto.max(cur.0), eos || cur.1, cur.2, cur.3);
            let changed = next != *cur;
            *cur = next;
            changed
        });
    }

    /// Publishes that the link from `from` is held up to `hwm` as of taking the connection
    /// of its sender attempt `attempt`, from which on nothing of an older attempt is taken.
    pub fn seen(&self, from: u32, attempt: u32, hwm: u64) {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        let tx = links
            .entry(from)
            .or_insert_with(|| watch::channel((0, false, 0, 0)).0);
        tx.send_modify(|cur| {
            cur.2 = hwm;
            cur.3 = attempt + 1;
        });
    }
}

/// A registered task's entry: how connections reach it.
#[derive(Clone)]
pub struct InboundHandle {
    /// The task's bounded inbox.
    pub tx: mpsc::Sender<Inbound>,
    /// The task's ack board.
    pub acks: Arc<AckBoard>,
    /// Distinguishes registrations of the same task (restarts on the same process).
    pub generation: u64,
    /// The attempt registered: connections naming another attempt are refused.
    pub attempt: u32,
    /// The job epoch of that attempt.
    pub epoch: u32,
}

/// All tasks of this process that can receive data, by job and position.
#[derive(Default)]
pub struct Registry {
    tasks: Mutex<HashMap<TaskKey, InboundHandle>>,
    next_gen: AtomicU64,
}

/// Removes its registration when dropped, so every exit path of a task unregisters it.
pub struct Registration {
    registry: Arc<Registry>,
    key: TaskKey,
    generation: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut tasks = self
            .registry
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if tasks.get(&self.key).map(|h| h.generation) == Some(self.generation) {
            tasks.remove(&self.key);
        }
    }
}

impl Registry {
    /// Registers attempt `attempt` of a task, replacing an older attempt's registration (its
    /// connections can no longer reach the new one). Returns its inbox, ack board and the
    /// guard that unregisters it, or `None` when a newer attempt is already registered here
    /// (the start of a superseded attempt arrived late).
    pub fn register(
        self: &Arc<Self>,
        key: TaskKey,
        attempt: u32,
        epoch: u32,
        capacity: usize,
    ) -> Option<(mpsc::Receiver<Inbound>, Arc<AckBoard>, Registration)> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let acks = Arc::new(AckBoard::default());
        let generation = self.next_gen.fetch_add(1, Ordering::Relaxed);
        let handle = InboundHandle {
            tx,
            acks: acks.clone(),
            generation,
            attempt,
            epoch,
        };
        {
            let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
            if tasks.get(&key).is_some_and(|h| h.attempt > attempt) {
                return None;
            }
            tasks.insert(key.clone(), handle);
        }
        Some((
            rx,
            acks,
            Registration {
                registry: self.clone(),
                key,
                generation,
            },
        ))
    }

    /// Looks a task up (a copy of its handle; the lock is released at once).
    pub fn get(&self, key: &TaskKey) -> Option<InboundHandle> {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }
}
