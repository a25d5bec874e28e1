//! What a door says about the connections it refuses. An unauthenticated flood must not be able
//! to turn each refused connection into a log line (a million lines in minutes), so a door
//! counts its refusals in a [`RefusalLog`]: the first one after a quiet spell is logged in full,
//! later ones are counted and summed up in at most one line per interval. No background task:
//! the summary is written by the next refusal after the interval, and by [`RefusalLog::flush`]
//! when the door closes.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a door's refusal log writes a summary at most.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// What one event made a [`RefusalLog`] say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// The first refusal after a quiet interval: said in full, with its details.
    First,
    /// A summary of the refusals since the previous line: each reason with its count (in the
    /// order first seen), and how long they took.
    Summary {
        /// Refusals by reason.
        counts: Vec<(&'static str, u64)>,
        /// Time since the previous line.
        over: Duration,
    },
}

/// Refusals counted since the last line written.
#[derive(Debug, Default)]
struct Counts {
    /// When the last line was written (`None`: never).
    last_line: Option<Instant>,
    /// Refusals since then, by reason.
    held: Vec<(&'static str, u64)>,
    /// Lines written so far.
    lines: u64,
    /// Refusals so far.
    total: u64,
}

impl Counts {
    fn hold(&mut self, reason: &'static str) {
        match self.held.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => self.held.push((reason, 1)),
        }
    }

    /// Everything held as a summary line written at `now`.
    fn summary(&mut self, now: Instant) -> Line {
        let over = self
            .last_line
            .map(|t| now.saturating_duration_since(t))
            .unwrap_or_default();
        self.last_line = Some(now);
        self.lines += 1;
        Line::Summary {
            counts: std::mem::take(&mut self.held),
            over,
        }
    }
}

/// A door's rate-limited log of refusals (see the module doc). Shared by every connection of
/// the door; its lock is held for a few instructions, never across I/O.
#[derive(Debug)]
pub struct RefusalLog {
    /// What is refused, as a plural noun phrase ("data connections refused").
    what: &'static str,
    interval: Duration,
    counts: Mutex<Counts>,
}

impl RefusalLog {
    /// A log for `what` (a plural phrase that reads before a count: "data connections
    /// refused") writing at most one summary per `interval`.
    pub fn new(what: &'static str, interval: Duration) -> RefusalLog {
        RefusalLog {
            what,
            interval,
            counts: Mutex::new(Counts::default()),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // A panic elsewhere cannot leave the counts inconsistent: they are plain numbers.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one refusal for `reason` at `now`; says which line to write, if any. The clock
    /// is the caller's, so the rule can be tested without waiting.
    pub fn note(&self, reason: &'static str, now: Instant) -> Option<Line> {
        let mut c = self.counts();
        c.total += 1;
        let due = c
            .last_line
            .is_none_or(|t| now.saturating_duration_since(t) >= self.interval);
        if !due {
            c.hold(reason);
            return None;
        }
        if c.held.is_empty() {
            c.last_line = Some(now);
            c.lines += 1;
            return Some(Line::First);
        }
        c.hold(reason);
        Some(c.summary(now))
    }

    /// The summary of what is still held at `now`, if anything is.
    pub fn flush_at(&self, now: Instant) -> Option<Line> {
        let mut c = self.counts();
        (!c.held.is_empty()).then(|| c.summary(now))
    }

    /// Counts one refusal for `reason` now, and logs it (in full, with `detail`) or its
    /// interval's summary when one is due. `detail` is only formatted when it is logged.
    pub fn refused<D: std::fmt::Display>(&self, reason: &'static str, detail: impl FnOnce() -> D) {
        match self.note(reason, Instant::now()) {
            Some(Line::First) => tracing::warn!(
                "{}: {reason} ({}); more are counted, in one line per {} s at most",
                self.what,
                detail(),
                self.interval.as_secs()
            ),
            Some(summary) => self.write(&summary),
            None => {}
        }
    }

    /// Logs what is still held (the door is closing).
    pub fn flush(&self) {
        if let Some(summary) = self.flush_at(Instant::now()) {
            self.write(&summary);
        }
    }

    fn write(&self, line: &Line) {
        if let Line::Summary { counts, over } = line {
            let n: u64 = counts.iter().map(|(_, n)| n).sum();
            let reasons: Vec<String> = counts.iter().map(|(r, n)| format!("{r}: {n}")).collect();
            tracing::warn!(
                "{}: {n} in the last {:.1} s ({})",
                self.what,
                over.as_secs_f64(),
                reasons.join("; ")
            );
        }
    }

    /// Lines written so far (for tests and metrics).
    pub fn lines(&self) -> u64 {
        self.counts().lines
    }

    /// Refusals counted so far.
    pub fn total(&self) -> u64 {
        self.counts().total
    }
}

#[cfg(test)]
mod tests;
