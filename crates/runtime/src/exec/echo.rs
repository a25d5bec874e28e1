//! What a rebuilt operator's reader drops: the lines its history produced, as a scratch twin
//! of the operator, fed the same history, wrote them (see `exec::history`).
//!
//! While the history is fed, everything the new process writes answers history: its reader
//! drops every line, and the twin's lines are matched against it one for one (both processes
//! are fed the same lines, and the operator is deterministic). When the twin's stdin closes it
//! writes what it still held back; the new process writes those same answers only later, once
//! live input follows. An operator that writes answers in bursts and in another order than its
//! input (a burst of seven, reversed) then mixes them with live answers, and may write a live
//! one first. So the twin's lines that the reader had not reached when the twin ended are
//! dropped by *content*, wherever they come, and every other line goes on. Dropping by count
//! (the first N lines, N the twin's total) dropped live answers there and let history
//! answers through a second time (hostile probe 16: running counts lost and doubled across a
//! rescale, the job "succeeded").
//!
//! Lines are compared by a 128-bit hash of their bytes. The twin's lines the reader has not
//! reached are kept until it does: both processes are fed in step, so that is a pipe's worth
//! or a burst, at 16 bytes a line.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

/// A line's identity for matching: two independent 64-bit hashes of its bytes.
fn identity(line: &[u8]) -> u128 {
    let half = |salt: u8| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        salt.hash(&mut h);
        line.hash(&mut h);
        h.finish()
    };
    (u128::from(half(1)) << 64) | u128::from(half(2))
}

/// The identity of a line too long to read: its length stands for it.
pub fn too_long(seen: usize) -> Vec<u8> {
    format!("\u{0}too long: {seen}").into_bytes()
}

/// What the reader does with a line.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The history produced it: dropped.
    Drop,
    /// A live answer: routed.
    Keep,
    /// Routed, and so is every later line: nothing of the history is left to drop.
    KeepAll,
}

/// The history's output, shared by the twin's line counter and the new process's reader.
#[derive(Debug, Default)]
pub struct Echo {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Lines the reader has read while the twin ran.
    read: u64,
    /// Lines the twin has written.
    written: u64,
    /// The twin's lines the reader has not reached, in order.
    ahead: VecDeque<u128>,
    /// Once the twin has ended: the history's lines the reader has still to drop.
    owed: Option<HashMap<u128, u32>>,
    /// Lines of the new process that were not the twin's line at the same place.
    diverged: u64,
}

impl Echo {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The twin wrote `line`.
    pub fn twin_line(&self, line: &[u8]) {
        let mut s = self.lock();
        s.written += 1;
        // Reached already: the reader dropped the new process's line at the same place.
        if s.written > s.read {
            s.ahead.push_back(identity(line));
        }
    }

    /// The twin ended: what it wrote beyond what the reader has read is owed, by content.
    /// Returns how many lines the twin wrote, and how many of the new process's differed from
    /// the twin's so far (a nondeterministic operator).
    pub fn twin_ended(&self) -> (u64, u64) {
        let mut s = self.lock();
        let mut owed: HashMap<u128, u32> = HashMap::new();
        for id in std::mem::take(&mut s.ahead) {
            *owed.entry(id).or_default() += 1;
        }
        s.owed = Some(owed);
        (s.written, s.diverged)
    }

    /// The reader read `line` from the new process.
    pub fn verdict(&self, line: &[u8]) -> Verdict {
        let mut s = self.lock();
        let State {
            read,
            ahead,
            owed,
            diverged,
            ..
        } = &mut *s;
        let Some(owed) = owed else {
            // The twin still runs: the new process is fed only history.
            *read += 1;
            if ahead.pop_front().is_some_and(|id| id != identity(line)) {
                *diverged += 1;
            }
            return Verdict::Drop;
        };
        if owed.is_empty() {
            return Verdict::KeepAll;
        }
        let id = identity(line);
        match owed.get_mut(&id) {
            Some(n) => {
                *n -= 1;
                if *n == 0 {
                    owed.remove(&id);
                }
                Verdict::Drop
            }
            None => Verdict::Keep,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(echo: &Echo, from_new: &[&str]) -> Vec<String> {
        from_new
            .iter()
            .filter(|l| echo.verdict(l.as_bytes()) != Verdict::Drop)
            .map(|l| l.to_string())
            .collect()
    }

    /// An operator writing its answers in bursts, reversed: a history of five lines gives the
    /// twin [c b a], then at its end [e d]; the new process writes [c b a], and [e d] only in
    /// its next burst, with the live answers [g f] ahead of them. The history's answers are
    /// dropped and the live ones kept, then every later line.
    #[test]
    fn the_history_s_answers_are_dropped_wherever_they_come() {
        let echo = Echo::default();
        for l in ["c", "b", "a"] {
            echo.twin_line(l.as_bytes());
        }
        // The new process's first burst, read while the twin runs (some before the twin's).
        assert_eq!(lines(&echo, &["c"]), Vec::<String>::new());
        for l in ["e", "d"] {
            echo.twin_line(l.as_bytes());
        }
        assert_eq!(lines(&echo, &["b", "a"]), Vec::<String>::new());
        assert_eq!(echo.twin_ended(), (5, 0));
        // Live lines f, g join e and d in the next burst, written reversed: g f e d.
        assert_eq!(lines(&echo, &["g", "f", "e", "d"]), ["g", "f"]);
        assert_eq!(echo.verdict(b"h"), Verdict::KeepAll);
    }

    /// The reader ahead of the twin: the twin's lines it already passed are not kept; a line
    /// of the new process that differs from the twin's at the same place is counted.
    #[test]
    fn a_reader_ahead_of_the_twin_keeps_nothing_and_a_difference_is_counted() {
        let echo = Echo::default();
        assert_eq!(lines(&echo, &["x", "y"]), Vec::<String>::new());
        echo.twin_line(b"x");
        echo.twin_line(b"y");
        echo.twin_line(b"z");
        assert_eq!(lines(&echo, &["Z"]), Vec::<String>::new());
        assert_eq!(echo.twin_ended(), (3, 1));
        assert_eq!(echo.verdict(b"live"), Verdict::KeepAll);
    }
}
