//! The window of a link: every batch sent and not yet acknowledged, kept for a re-send after a
//! reconnect, and how a cumulative ack shrinks it and completes the link.

use super::LinkSpec;
use bytes::Bytes;
use std::collections::VecDeque;
use tracing::debug;

/// The batches a link sent and the receiver has not acknowledged yet, oldest first.
pub(super) struct Window {
    /// Each batch's first and last sequence numbers and its encoded frame.
    pub(super) batches: VecDeque<(u64, u64, Bytes)>,
    /// Bytes of the encoded frames held.
    pub(super) bytes: usize,
    /// Highest sequence number acknowledged.
    pub(super) acked: u64,
    /// The receiver said it holds this link's end of stream (behind `acked`). Kept, because it
    /// may say so before this attempt has sent its own end: a receiver that already has the
    /// whole stream (from an earlier attempt of this sender) acks nothing new afterwards.
    pub(super) peer_ended: bool,
}

impl Window {
    /// Takes a cumulative ack: drops every batch it covers.
    fn ack(&mut self, upto: u64) {
        self.acked = self.acked.max(upto);
        while let Some((_, last, b)) = self.batches.front() {
            if *last > self.acked {
                break;
            }
            self.bytes -= b.len();
            self.batches.pop_front();
        }
    }
}

/// Tells whoever waits for this link's end (the source) that it was delivered.
pub(super) fn notify_done(spec: &LinkSpec) {
    if let Some(done) = &spec.done {
        if done.try_send(spec.to.index).is_err() {
            debug!(job = %spec.job, to = %spec.to, "nobody waits for this link's end");
        }
    }
}

/// Applies a cumulative ack; true when it completes a link that does not linger.
pub(super) fn take_ack(
    spec: &LinkSpec,
    window: &mut Window,
    (upto, eos): (u64, bool),
    (eos_sent, next_seq): (bool, u64),
    eos_acked: &mut bool,
) -> bool {
    tracing::trace!(job = %spec.job, from = %spec.from, to = %spec.to, upto, eos, "ack");
    window.ack(upto);
    spec.settle_upto(window.acked);
    window.peer_ended |= eos;
    if window.peer_ended && eos_sent && window.acked >= next_seq - 1 && !*eos_acked {
        *eos_acked = true;
        notify_done(spec);
        return !spec.linger;
    }
    false
}
