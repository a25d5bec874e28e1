//! The sending side of one link: a task of its own that numbers batches, keeps every
//! unacknowledged batch in a bounded window, writes them pipelined, re-sends the window after a
//! reconnect, and ends with an end-of-stream marker once its input closes and everything is
//! acked. Retry belongs to the link: nothing is ever written back into the queue it drains.
//!
//! This file holds what the rest of the process sees of a link (what a router hands it, its
//! static description, how it ended). The link's loop is in `run` ([`run_link`]); the window
//! of unacknowledged batches and how an ack shrinks it in `window`; an open connection, the
//! destination it goes to and the one write that follows a moving destination in `connection`;
//! connecting, the Hello and the receiver's verdict in `admission`; writing frames that carry
//! their length already, without a codec's copy, in `writer`.

mod admission;
mod connection;
mod run;
mod window;
mod writer;

pub use run::run_link;

use super::transport::Network;
use crate::model::ids::{JobId, TaskPos};
use crate::model::tuple::Tuple;
use crate::protocol::auth::Identity;
use crate::protocol::frame::{open_batch, put_tuple, seal_batch};
use bytes::BytesMut;
use std::sync::Arc;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// What a router hands a link. The end of stream is explicit: a link whose channel merely
/// closes (its task failed or was cancelled) abandons the stream and never sends EOS, so a
/// failed task can never make downstream believe its output was complete.
#[derive(Debug)]
pub enum LinkMsg {
    /// More tuples.
    Batch(OutBatch),
    /// The stream is complete.
    End,
}

/// A batch handed from a router to a link: its tuples already encoded into a batch frame
/// whose header the link fills in when it numbers them (`protocol::frame::open_batch`).
#[derive(Debug)]
pub struct OutBatch {
    /// The frame, header left blank, then the tuples in order.
    pub frame: BytesMut,
    /// How many tuples it holds.
    pub count: u32,
    /// Oldest source emit time among them.
    pub emit_ns: u64,
}

impl OutBatch {
    /// A batch of `tuples` (what a router builds tuple by tuple).
    pub fn of(tuples: &[Tuple], emit_ns: u64) -> OutBatch {
        let mut frame = BytesMut::new();
        open_batch(&mut frame);
        for t in tuples {
            put_tuple(&mut frame, t);
        }
        OutBatch {
            frame,
            count: tuples.len() as u32,
            emit_ns,
        }
    }

    /// The frame as it goes on the wire, its tuples numbered from `first_seq`.
    pub fn seal(self, first_seq: u64) -> bytes::Bytes {
        seal_batch(self.frame, first_seq, self.emit_ns, self.count)
    }
}

/// Static description of a link.
#[derive(Clone)]
pub struct LinkSpec {
    /// Job.
    pub job: JobId,
    /// Sending task.
    pub from: TaskPos,
    /// Sending task's attempt (announced in the Hello, for fencing).
    pub attempt: u32,
    /// Job epoch (announced in the Hello; sequence numbers start above `epoch << EPOCH_SHIFT`).
    pub epoch: u32,
    /// Receiving task.
    pub to: TaskPos,
    /// Whether unacknowledged batches are re-sent after a reconnect (false = at-most-once).
    pub resend: bool,
    /// Keep serving after the end of stream is acknowledged: a later attempt of the receiver
    /// is told, in its Hello, that everything including the end was acknowledged. The source
    /// needs this (its links are the first stage's only record of what was delivered).
    pub linger: bool,
    /// Told this link's index the first time its end of stream is acknowledged.
    pub done: Option<mpsc::Sender<u32>>,
    /// How to reach the receiver.
    pub net: Arc<dyn Network>,
    /// The key of the worker running the sending attempt: the Hello is signed with it, and
    /// the receiver admits the link only if its route table names this key for the attempt.
    pub identity: Identity,
    /// The process's budget of link connections: one is held from connect to close.
    pub slots: LinkSlots,
    /// The sending attempt's switchboard, told how far the receiver got with this link
    /// before it took this attempt's connection (a restarted sender's switch waits for it).
    pub board: Option<Arc<crate::reroute::Switchboard>>,
    /// Told how many of this attempt's tuples the receiver holds, or no longer needs (an
    /// at-most-once link's dropped window; everything, once the receiver finished): the
    /// sending task's router waits on it before a key group's state moves on
    /// (`Router::settle`), so a key's outputs reach the next stage in their order.
    pub settled: Option<tokio::sync::watch::Sender<u64>>,
    /// The sending task's meter, told while this link has no connection to its receiver
    /// (`SendMeter::unreached`).
    pub meter: Option<Arc<crate::meter::SendMeter>>,
}

impl LinkSpec {
    /// Publishes that the receiver holds (or no longer needs) this attempt's tuples up to
    /// sequence number `upto`; never lowers what was published.
    pub(crate) fn settle_upto(&self, upto: u64) {
        let floor = u64::from(self.epoch) << EPOCH_SHIFT;
        let n = upto.saturating_sub(floor);
        if let Some(s) = &self.settled {
            s.send_if_modified(|v| {
                let more = n > *v;
                *v = (*v).max(n);
                more
            });
        }
    }
}

/// How many link connections one process holds open at once (connecting or connected),
/// shared by all its links. Past it a link waits for a connection of another to close rather
/// than open a socket the process may not have: running out of descriptors would also cut
/// the worker off from its leader (no heartbeat, no command, declared dead).
#[derive(Clone, Debug)]
pub struct LinkSlots {
    sem: Arc<Semaphore>,
    limit: usize,
}

impl LinkSlots {
    /// A budget of `limit` connections (at least 1).
    pub fn new(limit: usize) -> LinkSlots {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        LinkSlots {
            sem: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// Connections held now.
    pub fn in_use(&self) -> usize {
        self.limit - self.sem.available_permits()
    }

    /// The budget.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Waits for a free slot; it is given back when the returned permit is dropped.
    async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        // The semaphore is never closed, so this only waits.
        self.sem.clone().acquire_owned().await.ok()
    }
}

/// Bits of a sequence number below the epoch: epoch `e` numbers its tuples from `e << 40`.
pub const EPOCH_SHIFT: u32 = 40;

/// How a link ended.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkEnd {
    /// Everything including the end of stream was acknowledged.
    Done,
    /// Stopped by cancellation.
    Cancelled,
    /// Refused for good by the receiver: this sender attempt (or epoch) is stale.
    Fenced,
}
