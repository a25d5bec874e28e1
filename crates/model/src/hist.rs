//! Fixed-bucket duration histograms: what a worker measures (input-log commit times, the
//! sink's end-to-end latency), carries to the leader on its reports, and the leader exposes on
//! `/metrics` as Prometheus histograms. The bounds are the same everywhere, so a histogram is
//! a short vector of counts (cheap to send every heartbeat), and recording is a few relaxed
//! atomic adds (cheap to do per batch on the data path).

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the buckets, in microseconds (a last, unbounded bucket follows): 100 µs to
/// one minute, in a 1–2.5–5 series.
pub const BOUNDS_US: [u64; 18] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// Number of buckets, the unbounded one included.
const SLOTS: usize = BOUNDS_US.len() + 1;

/// The bucket a duration of `us` microseconds falls in (the first whose bound is ≥ it).
fn slot(us: u64) -> usize {
    BOUNDS_US.partition_point(|&b| b < us)
}

/// A snapshot of a histogram: per-bucket counts (not cumulative) and the sum of everything
/// recorded. This is what reports carry.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hist {
    /// Samples per bucket, one per bound in [`BOUNDS_US`] and one past the last.
    pub counts: Vec<u64>,
    /// Sum of all samples, µs.
    pub sum_us: u64,
}

impl Hist {
    /// Records `n` samples of `us` microseconds each.
    pub fn record(&mut self, us: u64, n: u64) {
        if self.counts.len() < SLOTS {
            self.counts.resize(SLOTS, 0);
        }
        self.counts[slot(us)] += n;
        self.sum_us = self.sum_us.saturating_add(us.saturating_mul(n));
    }

    /// Adds what `other` recorded to this one.
    pub fn merge(&mut self, other: &Hist) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (c, n) in self.counts.iter_mut().zip(&other.counts) {
            *c += n;
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Cumulative counts per bound (`le`, in µs), ending with the unbounded bucket
    /// (`u64::MAX`), which holds [`Hist::count`]. A snapshot with the wrong number of buckets
    /// (from a peer with other bounds) puts whatever it cannot place in the last one.
    pub fn cumulative(&self) -> Vec<(u64, u64)> {
        let mut seen = 0;
        let mut out: Vec<(u64, u64)> = BOUNDS_US
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                seen += self.counts.get(i).copied().unwrap_or(0);
                (b, seen)
            })
            .collect();
        out.push((u64::MAX, self.count()));
        out
    }
}

/// A histogram recorded concurrently without a lock (relaxed atomics: the counts of one
/// snapshot may be a few samples apart from its sum, which the next one corrects).
#[derive(Debug, Default)]
pub struct AtomicHist {
    counts: [AtomicU64; SLOTS],
    sum_us: AtomicU64,
}

impl AtomicHist {
    /// Records `n` samples of `us` microseconds each.
    pub fn record(&self, us: u64, n: u64) {
        self.counts[slot(us)].fetch_add(n, Ordering::Relaxed);
        self.sum_us
            .fetch_add(us.saturating_mul(n), Ordering::Relaxed);
    }

    /// What was recorded so far; None if nothing was.
    pub fn snapshot(&self) -> Option<Hist> {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        if counts.iter().all(|&c| c == 0) {
            return None;
        }
        Some(Hist {
            counts,
            sum_us: self.sum_us.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_land_in_the_first_bucket_whose_bound_holds_them() {
        let h = AtomicHist::default();
        assert_eq!(h.snapshot(), None);
        h.record(0, 1);
        h.record(100, 2); // on the bound: ≤ 100 µs
        h.record(101, 1);
        h.record(70_000_000, 1); // past the last bound
        let s = h.snapshot().unwrap();
        assert_eq!(s.count(), 5);
        assert_eq!(s.sum_us, 200 + 101 + 70_000_000);
        let c = s.cumulative();
        assert_eq!(c[0], (100, 3));
        assert_eq!(c[1], (250, 4));
        assert_eq!(c[BOUNDS_US.len() - 1], (60_000_000, 4));
        assert_eq!(c[BOUNDS_US.len()], (u64::MAX, 5));
    }

    #[test]
    fn a_snapshot_of_other_bounds_is_still_consistent() {
        let h = Hist {
            counts: vec![1, 2],
            sum_us: 3,
        };
        let c = h.cumulative();
        assert_eq!(c.last(), Some(&(u64::MAX, 3)));
        assert!(c.windows(2).all(|w| w[0].1 <= w[1].1));
    }
}
