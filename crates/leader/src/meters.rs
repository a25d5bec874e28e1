//! What the leader keeps of each task's meters: the current attempt's cumulative meters as
//! its worker last reported them (bytes, busy and back-pressured time, histograms), and
//! what two reports in a row tell — the shares of recent time the attempt spent busy,
//! back-pressured or idle, and its output rate. The shares say which stage is the bottleneck:
//! its tasks are busy while the stages before it are back-pressured.

use crate::protocol::meters::TaskMeters;

/// Reports closer together than this (worker time) change no share: too noisy.
const MIN_INTERVAL_NS: u64 = 50_000_000;

/// Rates are taken over at least this much of the attempt's own time: input arrives in
/// batches (64 tuples at once, say), so a rate over one heartbeat would swing between 0 and
/// twice the truth.
const RATE_WINDOW_NS: u64 = 2_000_000_000;

/// A window's input rate this many times the one before it counts as still climbing.
const RISING: f64 = 1.25;

/// One task's meters as the leader keeps them (its current attempt's).
#[derive(Clone, Debug, Default)]
pub struct Meters {
    /// The attempt's meters as of its last report.
    pub last: TaskMeters,
    /// The attempt they belong to.
    attempt: u32,
    /// Recent share of time spent processing (0–1, smoothed over reports).
    pub busy: f64,
    /// Recent share of time blocked downstream (0–1, smoothed over reports).
    pub backpressured: f64,
    /// Recent output, tuples per second (over [`RATE_WINDOW_NS`] windows, smoothed).
    pub output_rate: f64,
    /// Recent input, tuples per second (likewise).
    pub input_rate: f64,
    /// The last window's input was well above the one before it: the rate is still
    /// climbing (a step in progress), so it is not yet what the task will carry.
    pub input_rising: bool,
    /// The last window's input rate, unsmoothed.
    raw_in: f64,
    /// Where the current rate window began: the attempt's uptime and its tuples in and out.
    window: (u64, u64, u64),
}

/// `part / whole`, clamped to 0–1.
fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 / whole as f64).clamp(0.0, 1.0)
}

/// Half the old value, half the new one (the first value as it is).
fn smooth(old: f64, new: f64, first: bool) -> f64 {
    if first {
        new
    } else {
        0.5 * old + 0.5 * new
    }
}

impl Meters {
    /// Whether attempt `attempt`'s output was held back by a full link for at least half the
    /// time between its last report and `m`.
    pub fn held_back(&self, attempt: u32, m: &TaskMeters) -> bool {
        let since = m.uptime_ns.saturating_sub(self.last.uptime_ns);
        let held = m.backpressure_ns.saturating_sub(self.last.backpressure_ns);
        attempt == self.attempt && since > 0 && held.saturating_mul(2) >= since
    }

    /// Takes a report of `attempt` that took `tuples_in` and emitted `tuples_out` tuples so
    /// far, with meters `m`; `ended` when the attempt ended (it is then neither busy nor
    /// back-pressured, and has no rate).
    pub fn update(
        &mut self,
        attempt: u32,
        (tuples_in, tuples_out): (u64, u64),
        m: &TaskMeters,
        ended: bool,
    ) {
        let new_attempt = attempt != self.attempt || m.uptime_ns < self.last.uptime_ns;
        if new_attempt || self.last.uptime_ns == 0 {
            // The first report of an attempt: its shares so far.
            *self = Meters {
                last: m.clone(),
                attempt,
                busy: share(m.busy_ns, m.uptime_ns),
                backpressured: share(m.backpressure_ns, m.uptime_ns),
                output_rate: 0.0,
                input_rate: 0.0,
                input_rising: false,
                raw_in: 0.0,
                window: (m.uptime_ns, tuples_in, tuples_out),
            };
        } else {
            let dt = m.uptime_ns - self.last.uptime_ns;
            if dt >= MIN_INTERVAL_NS {
                let busy = share(m.busy_ns.saturating_sub(self.last.busy_ns), dt);
                let bp = share(
                    m.backpressure_ns.saturating_sub(self.last.backpressure_ns),
                    dt,
                );
                self.busy = smooth(self.busy, busy, false);
                self.backpressured = smooth(self.backpressured, bp, false);
                self.last = m.clone();
            } else {
                // Keep the interval's start; take the newest totals and histograms.
                let (busy, bp, up) = (
                    self.last.busy_ns,
                    self.last.backpressure_ns,
                    self.last.uptime_ns,
                );
                self.last = TaskMeters {
                    busy_ns: busy,
                    backpressure_ns: bp,
                    uptime_ns: up,
                    ..m.clone()
                };
            }
        }
        let (from, was_in, was_out) = self.window;
        let span = m.uptime_ns.saturating_sub(from);
        if span >= RATE_WINDOW_NS {
            let per_s = |now: u64, then: u64| now.saturating_sub(then) as f64 * 1e9 / span as f64;
            let (rate_in, rate_out) = (per_s(tuples_in, was_in), per_s(tuples_out, was_out));
            let first = from == 0 || self.input_rate == 0.0 && self.output_rate == 0.0;
            self.input_rising = rate_in > RISING * self.raw_in;
            self.raw_in = rate_in;
            self.input_rate = smooth(self.input_rate, rate_in, first);
            self.output_rate = smooth(self.output_rate, rate_out, first);
            self.window = (m.uptime_ns, tuples_in, tuples_out);
        }
        if ended {
            self.busy = 0.0;
            self.backpressured = 0.0;
            self.output_rate = 0.0;
            self.input_rate = 0.0;
            self.input_rising = false;
            self.last = m.clone();
        }
    }

    /// The attempt stopped without a last report (its job cancelled or failed, the attempt
    /// failed or its worker was lost): it is neither busy nor back-pressured and has no rate,
    /// as an attempt that reported its end.
    pub fn stop(&mut self) {
        self.busy = 0.0;
        self.backpressured = 0.0;
        self.output_rate = 0.0;
        self.input_rate = 0.0;
        self.input_rising = false;
    }

    /// Recent share of time waiting for input: what is neither busy nor back-pressured.
    pub fn idle(&self) -> f64 {
        (1.0 - self.busy - self.backpressured).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(busy_s: u64, bp_s: u64, up_s: u64) -> TaskMeters {
        TaskMeters {
            busy_ns: busy_s * 1_000_000_000,
            backpressure_ns: bp_s * 1_000_000_000,
            uptime_ns: up_s * 1_000_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn shares_come_from_the_difference_of_two_reports() {
        let mut t = Meters::default();
        t.update(0, (0, 0), &m(1, 0, 10), false);
        assert_eq!((t.busy, t.backpressured), (0.1, 0.0), "the first: so far");
        // The next 10 s: 9 s blocked downstream, 1 s busy, 100 tuples out.
        t.update(0, (100, 100), &m(2, 9, 20), false);
        assert!((t.busy - 0.1).abs() < 1e-9, "{t:?}");
        assert!((t.backpressured - 0.45).abs() < 1e-9, "smoothed: {t:?}");
        assert!((t.output_rate - 10.0).abs() < 1e-9, "{t:?}");
        assert!((t.idle() - 0.45).abs() < 1e-9, "{t:?}");
        // A new attempt starts over.
        t.update(1, (0, 0), &m(0, 1, 2), false);
        assert_eq!((t.busy, t.backpressured, t.output_rate), (0.0, 0.5, 0.0));
    }

    #[test]
    fn a_rate_is_rising_while_a_window_is_well_above_the_one_before() {
        let mut t = Meters::default();
        let at = |s: u64| TaskMeters {
            uptime_ns: s * 1_000_000_000,
            ..Default::default()
        };
        t.update(0, (0, 0), &at(1), false);
        t.update(0, (200, 200), &at(3), false); // 100/s
        t.update(0, (400, 400), &at(5), false); // 100/s
        assert!(!t.input_rising, "{t:?}");
        t.update(0, (1100, 1100), &at(7), false); // 350/s: a step half-way in the window
        assert!(t.input_rising, "{t:?}");
        t.update(0, (2300, 2300), &at(9), false); // 600/s
        assert!(t.input_rising, "{t:?}");
        t.update(0, (3500, 3500), &at(11), false); // 600/s: levelled off
        assert!(!t.input_rising, "{t:?}");
    }

    #[test]
    fn an_ended_attempt_is_neither_busy_nor_backpressured_and_keeps_its_totals() {
        let mut t = Meters::default();
        t.update(0, (0, 0), &m(5, 0, 10), false);
        t.update(0, (50, 50), &m(15, 0, 20), true);
        assert_eq!((t.busy, t.backpressured, t.output_rate), (0.0, 0.0, 0.0));
        assert_eq!(t.last.busy_ns, 15_000_000_000);
    }

    #[test]
    fn a_stage_fed_in_bursts_has_a_steady_rate_not_one_that_swings() {
        // 64 tuples arrive at once every second; the worker reports every half second.
        let mut t = Meters::default();
        let half = |i: u64| TaskMeters {
            uptime_ns: i * 500_000_000,
            ..Default::default()
        };
        let mut rates = Vec::new();
        for i in 1..=40u64 {
            let got = (i / 2) * 64;
            t.update(0, (got, got), &half(i), false);
            if i > 8 {
                rates.push(t.input_rate);
            }
        }
        for r in rates {
            assert!((r - 64.0).abs() < 20.0, "{r} is far from 64/s");
        }
        assert!((t.output_rate - 64.0).abs() < 20.0, "{t:?}");
    }
}
