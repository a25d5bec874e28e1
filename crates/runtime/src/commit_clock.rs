//! When a logged task's group commits go out: on ticks of the commit interval, on one grid
//! for every task of every process (anchored to the wall clock), each stage a little after
//! the stage before it.
//!
//! A tuple waits for the next commit at each logged stage it passes. With every task on a
//! timer of its own, the phases are unrelated, and a tuple that just missed one commit also
//! tends to miss the next stage's: a job with two logged stages (an exactly-once stage and
//! the sink) showed p99 ≈ 2 × the interval. On one grid, the stage before commits at a tick
//! and what it then feeds on reaches the next stage before that stage's own tick, a few
//! milliseconds later: p99 ≈ one interval plus the offsets. Writes stay at most one per
//! interval per task.

use std::time::Duration;
use tokio::time::Instant;

/// The offset between one logged stage's ticks and the next one's: time for a commit to be
/// written and what it released to be fed, routed and delivered. At most a quarter of the
/// interval, so a short interval keeps most of its own latency.
pub const STAGE_OFFSET: Duration = Duration::from_millis(10);

/// The grid's anchor: an instant and the time since the Unix epoch it stands for.
#[derive(Clone, Copy, Debug)]
pub struct CommitClock {
    anchor: Instant,
    anchor_ns: u64,
    /// Anchored afresh at every tick to the cluster's clock (`dataplane::clock`), which a
    /// worker corrects to the leader's once it has measured its own against it.
    wall: bool,
}

impl CommitClock {
    /// The grid of a real process: ticks at wall-clock multiples of the interval, so the
    /// tasks of processes on hosts whose clocks agree share it.
    pub fn wall() -> CommitClock {
        CommitClock {
            anchor: Instant::now(),
            anchor_ns: crate::dataplane::now_ns(),
            wall: true,
        }
    }

    /// A grid whose ticks fall at multiples of the interval after `anchor` (the simulation:
    /// its clock is virtual, and a seed must replay exactly).
    pub fn anchored(anchor: Instant) -> CommitClock {
        CommitClock {
            anchor,
            anchor_ns: 0,
            wall: false,
        }
    }

    /// The first tick at or after `t` of the grid of period `every` for `stage`: multiples
    /// of `every` shifted by the stage's offset (stage 2, the first that may log its input,
    /// is not shifted). A zero period has a tick at every instant.
    pub fn tick(&self, t: Instant, every: Duration, stage: u32) -> Instant {
        let period = every.as_nanos();
        if period == 0 {
            return t;
        }
        let offset = STAGE_OFFSET.min(every / 4).as_nanos() * u128::from(stage.saturating_sub(2));
        let (anchor, anchor_ns) = match self.wall {
            true => (Instant::now(), crate::dataplane::now_ns()),
            false => (self.anchor, self.anchor_ns),
        };
        let since = t.saturating_duration_since(anchor).as_nanos();
        let before = anchor.saturating_duration_since(t).as_nanos();
        let at = i128::from(anchor_ns) + since as i128 - before as i128 - offset as i128;
        let rem = at.rem_euclid(period as i128) as u128;
        if rem == 0 {
            t
        } else {
            t + Duration::from_nanos((period - rem) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ticks_fall_on_multiples_of_the_interval_and_each_stage_a_little_later() {
        let t0 = Instant::now();
        let clock = CommitClock::anchored(t0);
        let every = 100 * MS;
        assert_eq!(clock.tick(t0, every, 2), t0);
        assert_eq!(clock.tick(t0 + MS, every, 2), t0 + 100 * MS);
        assert_eq!(clock.tick(t0 + 100 * MS, every, 2), t0 + 100 * MS);
        assert_eq!(clock.tick(t0 + 150 * MS, every, 2), t0 + 200 * MS);
        // The next stage ticks 10 ms after, the one after it 20 ms after.
        assert_eq!(clock.tick(t0 + MS, every, 3), t0 + 10 * MS);
        assert_eq!(clock.tick(t0 + 11 * MS, every, 3), t0 + 110 * MS);
        assert_eq!(clock.tick(t0 + 11 * MS, every, 4), t0 + 20 * MS);
        // A short interval: offsets of a quarter of it.
        assert_eq!(clock.tick(t0 + MS, 20 * MS, 3), t0 + 5 * MS);
        // No interval: now.
        assert_eq!(clock.tick(t0 + 7 * MS, Duration::ZERO, 3), t0 + 7 * MS);
    }

    #[test]
    fn a_wall_grid_is_the_same_in_every_process() {
        // Two clocks made apart (two processes) agree on where the ticks are.
        let a = CommitClock {
            wall: false,
            ..CommitClock::wall()
        };
        let b = CommitClock {
            anchor: a.anchor + 37 * MS,
            anchor_ns: a.anchor_ns + 37_000_000,
            wall: false,
        };
        let t = a.anchor + 250 * MS;
        for stage in 2..5 {
            assert_eq!(a.tick(t, 40 * MS, stage), b.tick(t, 40 * MS, stage));
        }
    }
}
