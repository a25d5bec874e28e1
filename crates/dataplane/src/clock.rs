//! The cluster's clock for emit times: this host's wall clock, corrected by its offset from
//! the leader's.
//!
//! A tuple's latency is the sink's clock less the source's stamp, and the commit grid
//! (`runtime/commit_clock.rs`) lines stages up by wall time: both are only as right as the
//! hosts' clocks agree. Two workers an hour apart reported an hour of latency (hostile probe
//! 15), and a sink behind its source would report none. So each worker measures its clock
//! against the leader's on every heartbeat, NTP's way (the leader's time at its answer,
//! against the middle of the request's round trip), keeps the sample of the shortest round
//! trip among the recent ones (the least skewed by queueing), and stamps in the leader's time.
//! The error left is at most half that round trip. A leader, and a process that has not heard
//! one, use their own clock.

use std::sync::atomic::{AtomicI64, Ordering};

/// This process's correction to the leader's clock, ns (0 until a worker has measured it).
static OFFSET_NS: AtomicI64 = AtomicI64::new(0);

/// Nanoseconds since the Unix epoch by this host's own wall clock.
pub fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Nanoseconds since the Unix epoch by the cluster's clock: the clock of batch emit times.
pub fn now_ns() -> u64 {
    wall_ns().saturating_add_signed(OFFSET_NS.load(Ordering::Relaxed))
}

/// The correction [`now_ns`] applies now, ns.
pub fn offset_ns() -> i64 {
    OFFSET_NS.load(Ordering::Relaxed)
}

/// Sets the correction [`now_ns`] applies (a worker, from its [`ClockSync`]).
pub fn set_offset_ns(ns: i64) {
    OFFSET_NS.store(ns, Ordering::Relaxed);
}

/// How many recent samples the shortest round trip is chosen among: a few heartbeats' worth,
/// so that a clock stepped by hand is followed within seconds.
const SAMPLES: usize = 8;

/// A worker's measurements of its clock against the leader's.
#[derive(Debug, Default)]
pub struct ClockSync {
    /// Recent samples: (round trip, offset), ns.
    samples: std::collections::VecDeque<(u64, i64)>,
}

impl ClockSync {
    /// Takes one exchange: this host's wall clock when the request went (`sent`) and when its
    /// answer came (`came`), and the leader's wall clock in the answer (`leader`; 0 when it
    /// did not say). Returns the correction to apply ([`set_offset_ns`]).
    pub fn sample(&mut self, sent: u64, came: u64, leader: u64) -> Option<i64> {
        if leader == 0 || came < sent {
            return None;
        }
        let mid = sent / 2 + came / 2;
        let offset = i64::try_from(i128::from(leader) - i128::from(mid)).ok()?;
        if self.samples.len() == SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((came - sent, offset));
        let (_, best) = self.samples.iter().min_by_key(|(rtt, _)| *rtt)?;
        Some(*best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The offset of the quickest recent exchange is taken: a slow answer (its leader time
    /// late against the middle of a long round trip) does not move the clock.
    #[test]
    fn the_quickest_recent_exchange_sets_the_offset() {
        let mut c = ClockSync::default();
        let hour = 3_600_000_000_000i64;
        // This host an hour behind the leader; a 2 ms round trip.
        let sent = 1_000_000_000_000u64;
        let leader = (sent as i64 + 1_000_000 + hour) as u64;
        assert_eq!(c.sample(sent, sent + 2_000_000, leader), Some(hour));
        // A 900 ms round trip whose answer was delayed after the leader stamped it.
        let s2 = sent + 10_000_000_000;
        let l2 = (s2 as i64 + 100_000_000 + hour) as u64;
        assert_eq!(c.sample(s2, s2 + 900_000_000, l2), Some(hour));
        // A leader that does not say, or a clock stepped back mid-exchange: no sample.
        assert_eq!(c.sample(s2, s2 + 1, 0), None);
        assert_eq!(c.sample(s2, s2 - 1, l2), None);
        // Later quick samples move it (the host's clock was stepped).
        let mut last = None;
        for i in 0..SAMPLES as u64 {
            let s = s2 + (i + 1) * 1_000_000_000;
            last = c.sample(s, s + 1_000_000, s + 500_000);
        }
        assert_eq!(last, Some(0));
    }
}
