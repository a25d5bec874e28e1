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
//! 3. waiting for its next request, vouched before (a client's idle keep-alive connection);
//! 4. carrying an answer its client has not taken for a while ([`UNREAD`] by default): a follower that stopped
//!    reading (hostile probe 13: 40 followers of an ended job that read nothing held a cap of
//!    40 for good, and the workers' heartbeats, refused at the cap, had them declared dead).
//!
//! Any other request with a credential is never interrupted; when every connection carries
//! one, the new connection is refused instead.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long an answer may wait for its client to take it before its connection may give way
/// at the cap, unless the server is told otherwise (`ApiLimits::unread_timeout`). A stream waiting for output to send is not waiting on its client: only an
/// answer the server has handed to the connection, which the client leaves in its buffers.
pub(crate) const UNREAD: Duration = Duration::from_secs(30);
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
    /// Carrying an answer its client has not taken for the table's `unread` time.
    Unread,
}

impl Rank {
    /// The reason a [`crate::protocol::refusal::RefusalLog`] counts it under.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Rank::Stranger => "closed at the cap: no request, no credential",
            Rank::Unproven => "closed at the cap: a request without a credential",
            Rank::Idle => "closed at the cap: an idle keep-alive connection",
            Rank::Unread => "closed at the cap: an answer its client stopped reading",
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
    /// Since when the answer it carries has waited for its client to take what the server
    /// handed it (none: the answer is being made, or the client took it all).
    unread_since: Option<Instant>,
    /// Cancelled to close it.
    close: CancellationToken,
}

impl Entry {
    /// Its rank at `now` if it may be closed to make room.
    fn rank(&self, now: Instant, unread: Duration) -> Option<Rank> {
        match (self.busy > 0, self.vouched_now, self.vouched_ever) {
            (false, _, false) => Some(Rank::Stranger),
            (true, false, _) => Some(Rank::Unproven),
            (false, _, true) => Some(Rank::Idle),
            (true, true, _) => self
                .unread_since
                .is_some_and(|t| now.saturating_duration_since(t) >= unread)
                .then_some(Rank::Unread),
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
    /// How long an answer may wait for its client before its connection may give way.
    unread: Duration,
    next_id: u64,
    conns: HashMap<u64, Entry>,
}

impl Table {
    /// A table of at most `max` connections (at least one), where an answer left unread for
    /// `unread` may give way.
    pub(crate) fn new(max: usize, unread: Duration) -> Table {
        Table {
            max: max.max(1),
            unread,
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
            Some(self.evict(Rank::Unread, now)?)
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
                unread_since: None,
                close: close.clone(),
            },
        );
        Some((self.next_id, close, evicted))
    }

    /// Removes the oldest connection of the lowest rank, up to `worst`, and hands it back.
    pub(crate) fn evict(&mut self, worst: Rank, now: Instant) -> Option<Evicted> {
        let (id, rank) = self
            .conns
            .iter()
            .filter_map(|(id, e)| {
                let rank = e.rank(now, self.unread)?;
                Some((id, rank, e.unread_since.unwrap_or(e.since)))
            })
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
            e.unread_since = None;
            if e.busy == 0 {
                e.vouched_now = false;
                e.since = now;
            }
        }
    }

    /// Connection `id` was handed a piece of its answer at `now`, to wait for its client.
    pub(crate) fn handed(&mut self, id: u64, now: Instant) {
        if let Some(e) = self.conns.get_mut(&id) {
            e.unread_since.get_or_insert(now);
        }
    }

    /// Connection `id` took everything it was handed of its answer: it asks for more.
    pub(crate) fn taken(&mut self, id: u64) {
        if let Some(e) = self.conns.get_mut(&id) {
            e.unread_since = None;
        }
    }

    /// How long connection `id`'s answer has waited at `now` for its client to take it.
    pub(crate) fn unread_for(&self, id: u64, now: Instant) -> Option<Duration> {
        let since = self.conns.get(&id)?.unread_since?;
        Some(now.saturating_duration_since(since))
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
