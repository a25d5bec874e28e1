//! Dedup state of a task's inputs: per incoming link, the highest sequence number accepted and
//! whether its end of stream arrived. O(links), never O(tuples).

/// What offering a batch to an [`InputState`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Accepted {
    /// The link is not one of this task's inputs (a protocol error the caller logs).
    UnknownLink,
    /// Every tuple was seen before (a re-send or a stale epoch).
    Duplicate,
    /// Tuples `first_seq..=last_seq` are new; the duplicates before them were removed.
    Fresh {
        /// Sequence number of the first new tuple.
        first_seq: u64,
        /// Sequence number of the last tuple.
        last_seq: u64,
        /// A pending end of stream of this link completed with this batch.
        ended_now: bool,
    },
}

/// Per-link high-water marks of one task.
#[derive(Clone, Debug)]
pub struct InputState {
    floor: u64,
    hwm: Vec<u64>,
    eos: Vec<bool>,
    /// An end of stream that arrived before all of its link's tuples: it takes effect when
    /// the high-water mark reaches it (an end never advances the mark over missing tuples).
    pending: Vec<Option<u64>>,
    eos_count: usize,
}

impl InputState {
    /// State for `links` upstream tasks, nothing accepted yet.
    pub fn new(links: u32) -> Self {
        Self::with_floor(links, 0)
    }

    /// State for a job epoch whose sequence numbers start above `floor`: everything at or
    /// below it (a previous epoch's tuples and ends of stream) is stale.
    pub fn with_floor(links: u32, floor: u64) -> Self {
        InputState {
            floor,
            hwm: vec![floor; links as usize],
            eos: vec![false; links as usize],
            pending: vec![None; links as usize],
            eos_count: 0,
        }
    }

    /// How many leading tuples of a batch starting at `first_seq` are duplicates; `None` if the
    /// link is unknown (a protocol error the caller logs).
    pub fn duplicates(&self, from: u32, first_seq: u64) -> Option<u64> {
        let hwm = *self.hwm.get(from as usize)?;
        Some(hwm.saturating_sub(first_seq.saturating_sub(1)))
    }

    /// Offers a batch starting at `first_seq`: drops its leading duplicates from `tuples` and
    /// advances the link's mark over the rest.
    pub fn accept<T>(&mut self, from: u32, first_seq: u64, tuples: &mut Vec<T>) -> Accepted {
        let Some(dups) = self.duplicates(from, first_seq) else {
            return Accepted::UnknownLink;
        };
        let n = tuples.len() as u64;
        if dups >= n {
            return Accepted::Duplicate;
        }
        tuples.drain(..dups as usize);
        let last_seq = first_seq + n - 1;
        let ended_now = self.advance(from, last_seq);
        Accepted::Fresh {
            first_seq: first_seq + dups,
            last_seq,
            ended_now,
        }
    }

    /// Records that the link is accepted up to `last`; returns true if that completes a
    /// pending end of stream (the caller then acknowledges or logs the end).
    pub fn advance(&mut self, from: u32, last: u64) -> bool {
        let i = from as usize;
        let Some(h) = self.hwm.get_mut(i) else {
            return false;
        };
        *h = (*h).max(last);
        let h = *h;
        match self.pending.get(i).copied().flatten() {
            Some(p) if h >= p => {
                self.pending[i] = None;
                self.mark_ended(i)
            }
            _ => false,
        }
    }

    fn mark_ended(&mut self, i: usize) -> bool {
        match self.eos.get_mut(i) {
            Some(e) if !*e => {
                *e = true;
                self.eos_count += 1;
                true
            }
            _ => false,
        }
    }

    /// Records an end of stream after tuple `last_seq`; returns true if the link ended now.
    /// An end from an earlier epoch is ignored; one that overtook some of its tuples waits
    /// for them (`accept_gaps` = at-most-once, where missing tuples never come).
    pub fn end_with(&mut self, from: u32, last_seq: u64, accept_gaps: bool) -> bool {
        let i = from as usize;
        if last_seq < self.floor || i >= self.hwm.len() {
            return false;
        }
        if self.hwm[i] >= last_seq || accept_gaps {
            self.hwm[i] = self.hwm[i].max(last_seq);
            return self.mark_ended(i);
        }
        self.pending[i] = Some(last_seq);
        false
    }

    /// [`InputState::end_with`] without gaps.
    pub fn end(&mut self, from: u32, last_seq: u64) -> bool {
        self.end_with(from, last_seq, false)
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

    /// Whether an end of stream belongs to an earlier epoch.
    pub fn stale(&self, last_seq: u64) -> bool {
        last_seq < self.floor
    }

    /// Number of links.
    pub fn links(&self) -> u32 {
        self.hwm.len() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_by_sequence() {
        let mut s = InputState::new(2);
        assert_eq!(s.duplicates(0, 1), Some(0));
        s.advance(0, 10);
        assert_eq!(s.duplicates(0, 1), Some(10));
        assert_eq!(s.duplicates(0, 6), Some(5));
        assert_eq!(s.duplicates(0, 11), Some(0));
        assert_eq!(s.duplicates(5, 1), None);
        assert!(s.end(0, 10));
        assert!(!s.end(0, 10));
        assert!(!s.all_ended());
        assert!(s.end(1, 0));
        assert!(s.all_ended());
    }

    #[test]
    fn accept_drops_leading_duplicates() {
        let mut s = InputState::new(1);
        let mut b = vec!['a', 'b', 'c'];
        assert_eq!(
            s.accept(0, 1, &mut b),
            Accepted::Fresh {
                first_seq: 1,
                last_seq: 3,
                ended_now: false
            }
        );
        let mut b = vec!['b', 'c', 'd'];
        assert_eq!(
            s.accept(0, 2, &mut b),
            Accepted::Fresh {
                first_seq: 4,
                last_seq: 4,
                ended_now: false
            }
        );
        assert_eq!(b, vec!['d']);
        assert_eq!(s.accept(0, 1, &mut vec!['a']), Accepted::Duplicate);
        assert_eq!(s.accept(9, 1, &mut vec!['a']), Accepted::UnknownLink);
    }

    #[test]
    fn an_end_that_overtakes_its_tuples_waits_for_them() {
        let mut s = InputState::new(1);
        s.advance(0, 5);
        assert!(!s.end(0, 10));
        assert!(!s.ended(0));
        assert_eq!(s.hwm(0), 5, "an early end must not skip tuples 6..10");
        assert!(!s.advance(0, 8));
        assert!(s.advance(0, 10));
        assert!(s.all_ended());
        let mut g = InputState::new(1);
        g.advance(0, 5);
        assert!(g.end_with(0, 10, true));
    }

    #[test]
    fn earlier_epochs_are_stale() {
        let floor = 1 << 40;
        let mut s = InputState::with_floor(1, floor);
        assert!(
            s.duplicates(0, 5).unwrap() >= 1000,
            "an old epoch's batch is all duplicates"
        );
        assert!(!s.end(0, 17));
        assert!(s.stale(17));
        assert_eq!(s.duplicates(0, floor + 1), Some(0));
        assert!(s.end(0, floor));
        assert!(s.all_ended());
    }
}
