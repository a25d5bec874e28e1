//! The open connections of the HTTP server and which one gives way when a new one arrives at
//! the cap. Pure bookkeeping (the caller passes the time and closes what it is told to), so
//! the rule is tested without sockets.
//!
//! A connection is *vouched* while it carries a request that proves a credential (the cluster
//! secret, a worker's session), and remembers having been. At the cap the oldest in the
//! lowest of these ranks is closed to make room:
//!
//! 1. waiting for a request, and never vouched (a slowloris, a scanner, a client that was
//!    refused with a 401);
//! 2. carrying a request without a credential (a slow body sent to a door that reads it
//!    before it checks anyone);
//! 3. waiting for its next request, vouched before (a client's idle keep-alive connection).
//!
//! A request with a credential is never interrupted; when every connection carries one, the
//! new connection is refused instead.

use std::collections::HashMap;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Why a connection was closed to make room: its rank in the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Rank {
    /// Waiting for a request, never vouched.
    Stranger,
    /// Carrying a request without a credential.
    Unproven,
    /// Waiting for its next request, vouched before.
    Idle,
}

impl Rank {
    /// The reason a [`crate::protocol::refusal::RefusalLog`] counts it under.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Rank::Stranger => "closed at the cap: no request, no credential",
            Rank::Unproven => "closed at the cap: a request without a credential",
            Rank::Idle => "closed at the cap: an idle keep-alive connection",
        }
    }
}

/// One open connection.
#[derive(Debug)]
struct Entry {
    /// When it was opened, or last changed between waiting and carrying a request.
    since: Instant,
    /// Requests it is carrying (one, in HTTP/1.1), and whether they proved a credential.
    busy: u32,
    vouched_now: bool,
    /// Whether any request on it ever proved a credential.
    vouched_ever: bool,
    /// Cancelled to close it.
    close: CancellationToken,
}

impl Entry {
    /// Its rank if it may be closed to make room.
    fn rank(&self) -> Option<Rank> {
        match (self.busy > 0, self.vouched_now, self.vouched_ever) {
            (false, _, false) => Some(Rank::Stranger),
            (true, false, _) => Some(Rank::Unproven),
            (false, _, true) => Some(Rank::Idle),
            (true, true, _) => None,
        }
    }
}

/// A connection closed to make room: cancel its token.
#[derive(Debug)]
pub(crate) struct Evicted {
    /// Why it was chosen.
    pub(crate) rank: Rank,
    /// Cancelling it closes the connection.
    pub(crate) close: CancellationToken,
}

/// Every connection of one server.
#[derive(Debug)]
pub(crate) struct Table {
    max: usize,
    next_id: u64,
    conns: HashMap<u64, Entry>,
}

impl Table {
    /// A table of at most `max` connections (at least one).
    pub(crate) fn new(max: usize) -> Table {
        Table {
            max: max.max(1),
            next_id: 0,
            conns: HashMap::new(),
        }
    }

    /// Connections open now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }

    /// Takes a new connection at `now`: its id and its close token, and the connection
    /// closed to make room if the table was full. `None`: full of vouched requests; refuse it.
    pub(crate) fn admit(
        &mut self,
        now: Instant,
    ) -> Option<(u64, CancellationToken, Option<Evicted>)> {
        let evicted = if self.conns.len() >= self.max {
            Some(self.evict(Rank::Idle)?)
        } else {
            None
        };
        self.next_id += 1;
        let close = CancellationToken::new();
        self.conns.insert(
            self.next_id,
            Entry {
                since: now,
                busy: 0,
                vouched_now: false,
                vouched_ever: false,
                close: close.clone(),
            },
        );
        Some((self.next_id, close, evicted))
    }

    /// Removes the oldest connection of the lowest rank, up to `worst`, and hands it back.
    pub(crate) fn evict(&mut self, worst: Rank) -> Option<Evicted> {
        let (id, rank) = self
            .conns
            .iter()
            .filter_map(|(id, e)| Some((id, e.rank()?, e.since)))
            .filter(|(_, rank, _)| *rank <= worst)
            .min_by_key(|(id, rank, since)| (*rank, *since, **id))
            .map(|(id, rank, _)| (*id, rank))?;
        let entry = self.conns.remove(&id)?;
        Some(Evicted {
            rank,
            close: entry.close,
        })
    }

    /// Connection `id` started carrying a request, with a credential or not.
    pub(crate) fn begin(&mut self, id: u64, vouched: bool, now: Instant) {
        if let Some(e) = self.conns.get_mut(&id) {
            e.busy += 1;
            e.vouched_now = vouched;
            e.vouched_ever |= vouched;
            e.since = now;
        }
    }

    /// Connection `id` finished a request (its answer was sent, or dropped).
    pub(crate) fn end(&mut self, id: u64, now: Instant) {
        if let Some(e) = self.conns.get_mut(&id) {
            e.busy = e.busy.saturating_sub(1);
            if e.busy == 0 {
                e.vouched_now = false;
                e.since = now;
            }
        }
    }

    /// Whether connection `id` carries a request now.
    pub(crate) fn busy(&self, id: u64) -> bool {
        self.conns.get(&id).is_some_and(|e| e.busy > 0)
    }

    /// Connection `id` is closed.
    pub(crate) fn remove(&mut self, id: u64) {
        self.conns.remove(&id);
    }
}
