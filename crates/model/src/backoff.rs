//! Exponential backoff for retry loops. Every retry loop (registering with the leader, polling
//! for commands, reporting events, reconnecting a link) waits a little longer after each failure
//! and starts over after a success; this is the one place that arithmetic is written.

use std::time::Duration;

/// Delays that double after each call to [`Backoff::next`], up to a cap.
///
/// Synchronous and clock-free: it only computes delays; the caller sleeps (and races the sleep
/// against its own cancellation).
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    cap: Duration,
    current: Duration,
}

impl Backoff {
    /// Starts at `initial` and never exceeds `cap` (a cap below `initial` is raised to it).
    pub fn new(initial: Duration, cap: Duration) -> Backoff {
        Backoff {
            initial,
            cap: cap.max(initial),
            current: initial,
        }
    }

    /// The delay to wait now; the next call returns twice as much (at most the cap).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Duration {
        let now = self.current;
        self.current = self.current.saturating_mul(2).min(self.cap);
        now
    }

    /// Back to the initial delay (after a success).
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(50), ms(300));
        let seen: Vec<_> = (0..6).map(|_| b.next()).collect();
        assert_eq!(seen, [ms(50), ms(100), ms(200), ms(300), ms(300), ms(300)]);
        b.reset();
        assert_eq!(b.next(), ms(50));
        assert_eq!(b.next(), ms(100));
    }

    #[test]
    fn a_cap_below_the_start_is_the_start() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(b.next(), Duration::from_secs(2));
        assert_eq!(b.next(), Duration::from_secs(2));
    }
}
