//! The output half of the operator line protocol: a task of its own reads the operator's
//! stdout, decodes each `key<TAB>value` line and pushes it to the router, so a child blocked
//! on a full stdout never deadlocks a task blocked on a full stdin. A line too large for a
//! frame ends the reader; it records that in `refused` before it lets go of stdout, so the
//! operator's death from the closed pipe that follows is never taken for the cause.

use super::echo::{too_long, Echo, Verdict};
use super::PIPE_BUF;
use crate::dataplane::router::{Closed, Router, MAX_LINE};
use crate::protocol::line::{decode_line, read_line_bounded, split_plain_line, LineRead};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, BufReader};
use tokio::task::JoinHandle;

/// Parses the operator's stdout into the router until it closes; returns the router. A line
/// too large for a frame is refused: its size goes into `refused` (before stdout is closed)
/// and the reader ends with [`Closed::TooLarge`].
///
/// With an `echo`, the lines its history produced are read and dropped (a process restarted to
/// rebuild its state emits again what was emitted already; see `exec::history` and
/// `exec::echo`).
pub(super) fn spawn_reader(
    stdout: impl AsyncRead + Send + Unpin + 'static,
    router: Router,
    stamp: Arc<AtomicU64>,
    refused: Arc<AtomicUsize>,
    echo: Option<Arc<Echo>>,
) -> JoinHandle<Result<Router, Closed>> {
    tokio::spawn(async move {
        let mut router = router;
        let mut rd = BufReader::with_capacity(PIPE_BUF, stdout);
        let mut buf = Vec::with_capacity(1024);
        let refuse = |n: usize| {
            refused.store(n.max(1), Ordering::SeqCst);
            Closed::TooLarge(n)
        };
        let mut echo = echo;
        loop {
            let got = read_line_bounded(&mut rd, &mut buf, MAX_LINE).await;
            if let (Some(e), Ok(read @ (LineRead::Line | LineRead::TooLong(_)))) = (&echo, &got) {
                let verdict = match read {
                    LineRead::TooLong(n) => e.verdict(&too_long(*n)),
                    _ => e.verdict(&buf),
                };
                match verdict {
                    Verdict::Drop => continue,
                    Verdict::Keep => {}
                    Verdict::KeepAll => echo = None,
                }
            }
            match got {
                Ok(LineRead::Line) => {}
                Ok(LineRead::End) => break,
                // Refused before it is all in memory; the task fails saying why.
                Ok(LineRead::TooLong(n)) => return Err(refuse(n)),
                Err(e) => {
                    // The exit status says what happened to the operator; the read error is
                    // context for it.
                    tracing::warn!(error = %e, "reading the operator's output failed");
                    break;
                }
            }
            // `from_utf8` first: the lossy walk is several times slower for a valid line.
            let line = match std::str::from_utf8(&buf) {
                Ok(text) => std::borrow::Cow::Borrowed(text),
                Err(_) => String::from_utf8_lossy(&buf),
            };
            // Output before any input is stamped with its own read time.
            let emit_ns = match stamp.load(Ordering::Relaxed) {
                0 => crate::dataplane::now_ns(),
                fed => fed,
            };
            // A line with nothing to unescape is routed as slices of it, no tuple made.
            let routed = match split_plain_line(&line) {
                Some((key, value)) => router.push_pair(key, value, emit_ns).await,
                None => router.push(decode_line(&line), emit_ns).await,
            };
            match routed {
                Err(Closed::TooLarge(n)) => return Err(refuse(n)),
                other => other?,
            }
            if rd.buffer().is_empty() {
                router.flush().await?;
            }
        }
        router.flush().await?;
        Ok(router)
    })
}
