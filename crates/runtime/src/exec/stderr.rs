//! An operator's stderr, relayed into the worker's log. The operator is code from a job, so
//! what it writes there is bounded before it reaches the log: it is read in lines of at most
//! [`MAX_LINE`] bytes (a longer line is cut, saying how long it was: 50 MB without a newline
//! is one short log line, never a 50 MB one, nor 50 MB in memory), control characters are
//! escaped (a line cannot forge another or drive a terminal), and at most
//! [`LINES_PER_SEC`] lines a second are logged per operator — the rest are counted, and the
//! count is logged once that second is over (at the next line, or at the end of the stream).
//! Each logged line is an event of the task's span (job, stage, task, attempt) with the
//! operator's pid.
//!
//! Every line, logged or not, also goes into a [`Tail`]: the operator's last
//! [`TAIL_LINES`] lines, each cut to [`TAIL_LINE`] bytes, which a failure of the operator
//! quotes (its last words often come in a burst the rate limit leaves out of the log).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};
use tokio::time::Instant;

/// The most bytes of one stderr line that reach the log; the rest is cut.
pub const MAX_LINE: usize = 4096;

/// The most stderr lines of one operator logged in a second; beyond, they are counted.
pub const LINES_PER_SEC: u32 = 20;

/// How many of an operator's last stderr lines its failure quotes.
pub const TAIL_LINES: usize = 5;

/// The most bytes of one line a failure quotes (escaped, with the cut marked by `…`): five
/// of them keep a failure's text under 2 KiB.
pub const TAIL_LINE: usize = 300;

/// The marker of a line cut short in the tail.
const CUT: &str = "…";

/// An operator's last stderr lines, kept for its failure: at most [`TAIL_LINES`] of at most
/// [`TAIL_LINE`] bytes each, control characters escaped as in the log and `"` as `\"` (the
/// failure quotes them). Shared between the relay, which pushes, and the process, which
/// reads it once the relay has been joined (or aborted: what it pushed so far stays); the
/// lock is only held to push or copy a line, never across an await.
#[derive(Clone, Debug, Default)]
pub struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    /// Keeps `raw` (the line as read, at most [`MAX_LINE`] bytes of it; `len` its whole
    /// length) as the newest line, forgetting the oldest beyond [`TAIL_LINES`].
    pub fn push(&self, raw: &[u8], len: usize) {
        // Escaping only lengthens text: the first TAIL_LINE bytes of the line are enough.
        let mut end = raw.len().min(TAIL_LINE);
        while end > 0 && end < raw.len() && raw[end] & 0xC0 == 0x80 {
            end -= 1;
        }
        let text = String::from_utf8_lossy(&raw[..end]);
        let mut text = printable(&text).replace('"', "\\\"");
        if text.len() > TAIL_LINE || len > end {
            let mut cut = text.len().min(TAIL_LINE - CUT.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str(CUT);
        }
        let mut lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() == TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(text);
    }

    /// The lines kept, oldest first.
    pub fn lines(&self) -> Vec<String> {
        let lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        lines.iter().cloned().collect()
    }
}

/// What the relay hands on: a line to log, or how many it left out.
#[derive(Debug, PartialEq, Eq)]
pub enum Relayed<'a> {
    /// One line (its first [`MAX_LINE`] bytes at most, control characters escaped) and the
    /// length it had, in bytes without its newline.
    Line {
        /// The text to log.
        text: &'a str,
        /// The whole line's length.
        len: usize,
    },
    /// Lines over the rate, left out of the log since the last report.
    Dropped {
        /// How many lines.
        lines: u64,
        /// How many bytes they held.
        bytes: u64,
    },
}

/// Reads `rd` to its end in bounded lines, handing each to `emit` — at most `per_sec` a
/// second, then a count of the ones left out — and keeping every one in `tail`.
pub async fn relay<R>(
    rd: R,
    per_sec: u32,
    tail: &Tail,
    mut emit: impl FnMut(Relayed<'_>),
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
{
    let mut rd = BufReader::with_capacity(16 << 10, rd);
    let mut line = Vec::with_capacity(256);
    let mut window = Instant::now();
    let mut logged = 0u32;
    let (mut dropped, mut dropped_bytes) = (0u64, 0u64);
    while let Some(len) = read_capped(&mut rd, &mut line, MAX_LINE).await? {
        tail.push(&line, len);
        let now = Instant::now();
        if now.duration_since(window) >= Duration::from_secs(1) {
            if dropped > 0 {
                emit(Relayed::Dropped {
                    lines: dropped,
                    bytes: dropped_bytes,
                });
            }
            (window, logged, dropped, dropped_bytes) = (now, 0, 0, 0);
        }
        if logged < per_sec {
            logged += 1;
            let text = String::from_utf8_lossy(&line);
            emit(Relayed::Line {
                text: &printable(&text),
                len,
            });
        } else {
            dropped += 1;
            dropped_bytes += len as u64;
        }
    }
    if dropped > 0 {
        emit(Relayed::Dropped {
            lines: dropped,
            bytes: dropped_bytes,
        });
    }
    Ok(())
}

/// Reads one line into `buf`, keeping at most `cap` bytes of it (the rest is read and
/// dropped, never held); returns the line's whole length without its newline (and a `\r`
/// before it), or `None` at the end of the input. A last line without a newline counts.
async fn read_capped<R>(rd: &mut R, buf: &mut Vec<u8>, cap: usize) -> std::io::Result<Option<usize>>
where
    R: AsyncBufRead + Unpin,
{
    buf.clear();
    let mut len = 0usize;
    let mut any = false;
    loop {
        let avail = rd.fill_buf().await?;
        if avail.is_empty() {
            return Ok(any.then_some(len));
        }
        any = true;
        let (take, done) = match avail.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        let content = take - usize::from(done);
        let room = cap.saturating_sub(buf.len());
        buf.extend_from_slice(&avail[..content.min(room)]);
        len += content;
        rd.consume(take);
        if done {
            if buf.last() == Some(&b'\r') && len <= cap {
                buf.pop();
                len -= 1;
            }
            return Ok(Some(len));
        }
    }
}

/// `text` with its control characters (but tabs) escaped, so that a line logs as one line
/// and sends no terminal escape.
fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| match c {
                '\t' => c.to_string(),
                c if c.is_control() => c.escape_default().to_string(),
                c => c.to_string(),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests;
