//! The one acceptance rule of every receiver (tasks and the sink): what to do with each
//! message a link delivers. Per incoming link it keeps the highest sequence number accepted
//! and whether the end of stream arrived — O(links), never O(tuples).
//!
//! The rules, for every delivery mode unless said otherwise:
//! - **Dedup.** Tuples at or below the link's high-water mark were accepted before: dropped
//!   (and acknowledged again by the caller's ack board, which is cumulative).
//! - **No gaps.** A batch or end of stream that starts past `high-water + 1` means tuples were
//!   skipped: a protocol error. Nothing is accepted or acknowledged and the connection is
//!   reset, so the sender re-sends from its last acknowledgement. *At-most-once* is the one
//!   exception: its senders never re-send, so a gap is accepted and the mark jumps over it.
//! - **What the sender holds acknowledged.** Each connection starts with the sender's
//!   acknowledged position. Tuples at or below it are never sent again, so a receiver that is
//!   behind it must regenerate them (a first-stage task replays its share of the source file)
//!   or, if it cannot, fail: exactly-once and at-least-once never skip them silently.
//! - **Epochs.** Sequence numbers of epoch `e` start above `e << EPOCH_SHIFT`; anything at or
//!   below that floor belongs to an earlier epoch and is stale.

use super::inbound::ConnCtl;

/// What the receiver must do with one delivered message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing (a duplicate, a stale epoch's message, a repeated end of stream).
    Nothing,
    /// Tuples `first_seq..=last_seq` are new: process them (the leading duplicates were
    /// removed from the batch), then acknowledge.
    Fresh {
        /// Sequence number of the first new tuple.
        first_seq: u64,
        /// Sequence number of the last tuple.
        last_seq: u64,
    },
    /// The link's end of stream is accepted now, behind tuple `last_seq`.
    Ended {
        /// Last sequence number of the link.
        last_seq: u64,
    },
    /// The sender already holds tuples `after+1..=upto` acknowledged but this receiver never
    /// saw them: regenerate them, then call [`Acceptance::regenerated`].
    Regenerate {
        /// Highest sequence number this receiver has.
        after: u64,
        /// Highest sequence number the sender holds acknowledged.
        upto: u64,
        /// The sender holds the end of stream acknowledged too.
        ended: bool,
    },
    /// Tuples were skipped: reset the connection, acknowledge nothing.
    Gap {
        /// The sequence number that should have come next.
        expected: u64,
        /// The one that came.
        got: u64,
    },
    /// The sender holds acknowledged tuples this receiver never saw and cannot regenerate:
    /// output would be lost, so the receiver must fail.
    Lost {
        /// Highest sequence number this receiver has.
        have: u64,
        /// Highest sequence number the sender holds acknowledged.
        acked: u64,
    },
    /// A message from a link this receiver does not have (a protocol error to log).
    UnknownLink,
}

/// How a receiver treats gaps and missing acknowledged tuples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gaps {
    /// Exactly-once and at-least-once: never accepted.
    Refuse,
    /// At-most-once: accepted, the mark jumps over them.
    Accept,
}

/// Per-link acceptance state of one receiver attempt.
#[derive(Clone, Debug)]
pub struct Acceptance {
    floor: u64,
    hwm: Vec<u64>,
    eos: Vec<bool>,
    eos_count: usize,
    gaps: Gaps,
    regenerable: bool,
}

impl Acceptance {
    /// State for `links` upstream tasks in the epoch whose sequence numbers start above
    /// `floor`. `regenerable`: the receiver can rebuild acknowledged input it never saw (a
    /// first-stage task under exactly-once, from the source file).
    pub fn new(links: u32, floor: u64, gaps: Gaps, regenerable: bool) -> Self {
        Acceptance {
            floor,
            hwm: vec![floor; links as usize],
            eos: vec![false; links as usize],
            eos_count: 0,
            gaps,
            regenerable,
        }
    }

    /// A sender connected holding its link acknowledged up to `acked` (and its end of
    /// stream if `eos_acked`).
    pub fn connected(&mut self, from: u32, acked: u64, eos_acked: bool) -> Verdict {
        let Some(&have) = self.hwm.get(from as usize) else {
            return Verdict::UnknownLink;
        };
        if acked < self.floor {
            // A stale epoch's sender; the listener refuses those, so this is only defensive.
            return Verdict::Nothing;
        }
        let behind = acked > have || (eos_acked && !self.ended(from));
        if !behind {
            return Verdict::Nothing;
        }
        if self.regenerable {
            return Verdict::Regenerate {
                after: have,
                upto: acked.max(have),
                ended: eos_acked,
            };
        }
        match self.gaps {
            Gaps::Accept => {
                self.advance(from, acked);
                if eos_acked {
                    return self.end(from, acked.max(have));
                }
                Verdict::Nothing
            }
            Gaps::Refuse => Verdict::Lost { have, acked },
        }
    }

    /// Records that link `from` was regenerated up to `upto` (and ended, if `ended`).
    pub fn regenerated(&mut self, from: u32, upto: u64, ended: bool) {
        self.advance(from, upto);
        if ended {
            self.mark_ended(from as usize);
        }
    }

    /// Offers a batch starting at `first_seq`: removes its leading duplicates from `tuples`.
    pub fn batch<T>(&mut self, from: u32, first_seq: u64, tuples: &mut Vec<T>) -> Verdict {
        let Some(&have) = self.hwm.get(from as usize) else {
            return Verdict::UnknownLink;
        };
        let n = tuples.len() as u64;
        if n == 0 {
            return Verdict::Nothing;
        }
        // Numbers from a peer: a batch whose last number does not exist is refused as a gap
        // (its connection is reset), never wrapped round into old numbers.
        let Some(last_seq) = first_seq.checked_add(n - 1) else {
            return Verdict::Gap {
                expected: have.saturating_add(1),
                got: first_seq,
            };
        };
        if last_seq <= have {
            return Verdict::Nothing;
        }
        if first_seq > have + 1 && self.gaps == Gaps::Refuse {
            return Verdict::Gap {
                expected: have + 1,
                got: first_seq,
            };
        }
        let dups = have.saturating_sub(first_seq.saturating_sub(1));
        tuples.drain(..dups as usize);
        self.advance(from, last_seq);
        Verdict::Fresh {
            first_seq: first_seq + dups,
            last_seq,
        }
    }

    /// Offers an end of stream behind tuple `last_seq`.
    pub fn end(&mut self, from: u32, last_seq: u64) -> Verdict {
        let i = from as usize;
        let Some(&have) = self.hwm.get(i) else {
            return Verdict::UnknownLink;
        };
        if last_seq < self.floor || self.eos[i] {
            return Verdict::Nothing;
        }
        if last_seq > have {
            if self.gaps == Gaps::Refuse {
                return Verdict::Gap {
                    expected: have + 1,
                    got: last_seq,
                };
            }
            self.advance(from, last_seq);
        }
        if last_seq < have {
            // An end of stream below what was accepted contradicts the stream itself.
            return Verdict::Gap {
                expected: have,
                got: last_seq,
            };
        }
        self.mark_ended(i);
        Verdict::Ended { last_seq }
    }

    /// Moves a link's mark forward to `last` (log replay; never backwards).
    pub fn advance(&mut self, from: u32, last: u64) {
        if let Some(h) = self.hwm.get_mut(from as usize) {
            *h = (*h).max(last);
        }
    }

    /// Marks a link ended (log replay of an end-of-stream record).
    pub fn replay_end(&mut self, from: u32, last_seq: u64) {
        self.advance(from, last_seq);
        self.mark_ended(from as usize);
    }

    fn mark_ended(&mut self, i: usize) {
        if let Some(e) = self.eos.get_mut(i) {
            if !*e {
                *e = true;
                self.eos_count += 1;
            }
        }
    }

    /// Accepted high-water mark of a link.
    pub fn hwm(&self, from: u32) -> u64 {
        self.hwm.get(from as usize).copied().unwrap_or(0)
    }

    /// Whether the link's end of stream has been accepted.
    pub fn ended(&self, from: u32) -> bool {
        self.eos.get(from as usize).copied().unwrap_or(false)
    }

    /// Whether every link has ended.
    pub fn all_ended(&self) -> bool {
        self.eos_count == self.eos.len()
    }

    /// Number of links.
    pub fn links(&self) -> u32 {
        self.hwm.len() as u32
    }
}

/// Resets the connection a protocol error came on, with a log line saying why.
pub fn reset_on_gap(conn: &ConnCtl, task: &dyn std::fmt::Display, from: u32, v: &Verdict) {
    tracing::warn!(%task, from, verdict = ?v, "sequence gap on a link; resetting its connection");
    conn.reset();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refuse(links: u32) -> Acceptance {
        Acceptance::new(links, 0, Gaps::Refuse, false)
    }

    #[test]
    fn duplicates_are_dropped_tuple_by_tuple() {
        let mut a = refuse(1);
        let mut b = vec!['a', 'b', 'c'];
        assert_eq!(
            a.batch(0, 1, &mut b),
            Verdict::Fresh {
                first_seq: 1,
                last_seq: 3
            }
        );
        let mut b = vec!['b', 'c', 'd'];
        assert_eq!(
            a.batch(0, 2, &mut b),
            Verdict::Fresh {
                first_seq: 4,
                last_seq: 4
            }
        );
        assert_eq!(b, vec!['d']);
        assert_eq!(a.batch(0, 1, &mut vec!['a']), Verdict::Nothing);
        assert_eq!(a.batch(9, 1, &mut vec!['a']), Verdict::UnknownLink);
    }

    #[test]
    fn a_gap_is_never_accepted_outside_at_most_once() {
        let mut a = refuse(1);
        a.batch(0, 1, &mut vec![1, 2]);
        let mut skipped = vec![5, 6];
        assert_eq!(
            a.batch(0, 5, &mut skipped),
            Verdict::Gap {
                expected: 3,
                got: 5
            }
        );
        assert_eq!(a.hwm(0), 2, "a gap must not move the mark");
        assert_eq!(
            a.end(0, 6),
            Verdict::Gap {
                expected: 3,
                got: 6
            },
            "an end of stream past the mark is a gap too"
        );
        assert!(!a.ended(0));
        let mut g = Acceptance::new(1, 0, Gaps::Accept, false);
        g.batch(0, 1, &mut vec![1]);
        assert!(matches!(g.batch(0, 5, &mut vec![5]), Verdict::Fresh { .. }));
        assert_eq!(g.end(0, 9), Verdict::Ended { last_seq: 9 });
    }

    #[test]
    fn a_batch_numbered_past_the_last_number_is_refused_not_wrapped() {
        // A peer's numbers: wrapped round, its last number fell below the mark and the
        // batch was taken for duplicates (a debug build panicked).
        for gaps in [Gaps::Refuse, Gaps::Accept] {
            let mut a = Acceptance::new(1, 0, gaps, false);
            a.batch(0, 1, &mut vec![1, 2]);
            assert_eq!(
                a.batch(0, u64::MAX, &mut vec![7, 8, 9]),
                Verdict::Gap {
                    expected: 3,
                    got: u64::MAX
                }
            );
            assert_eq!(a.hwm(0), 2);
        }
    }

    #[test]
    fn the_end_comes_once_and_after_every_tuple() {
        let mut a = refuse(2);
        a.batch(0, 1, &mut vec![1, 2]);
        assert_eq!(a.end(0, 2), Verdict::Ended { last_seq: 2 });
        assert_eq!(a.end(0, 2), Verdict::Nothing);
        assert!(!a.all_ended());
        assert_eq!(a.end(1, 0), Verdict::Ended { last_seq: 0 });
        assert!(a.all_ended());
    }

    #[test]
    fn acknowledged_input_is_regenerated_or_the_receiver_fails() {
        let mut plain = refuse(1);
        assert_eq!(plain.connected(0, 0, false), Verdict::Nothing);
        assert_eq!(
            plain.connected(0, 7, false),
            Verdict::Lost { have: 0, acked: 7 }
        );
        let mut first = Acceptance::new(1, 0, Gaps::Refuse, true);
        assert_eq!(
            first.connected(0, 7, true),
            Verdict::Regenerate {
                after: 0,
                upto: 7,
                ended: true
            }
        );
        first.regenerated(0, 7, true);
        assert!(first.all_ended());
        assert_eq!(first.connected(0, 7, true), Verdict::Nothing);
        let mut amo = Acceptance::new(1, 0, Gaps::Accept, false);
        assert_eq!(amo.connected(0, 7, false), Verdict::Nothing);
        assert_eq!(amo.hwm(0), 7);
    }

    #[test]
    fn earlier_epochs_are_stale() {
        let floor = 1 << 40;
        let mut a = Acceptance::new(1, floor, Gaps::Refuse, false);
        assert_eq!(a.batch(0, 5, &mut vec![1, 2]), Verdict::Nothing);
        assert_eq!(a.end(0, 17), Verdict::Nothing);
        assert_eq!(a.end(0, floor), Verdict::Ended { last_seq: floor });
        assert!(a.all_ended());
    }
}
