//! An operator's stdin, written by a task of its own. The task encodes lines into a chunk
//! and hands each full chunk to the writer, which blocks on the pipe in its place: so the
//! task decodes and encodes the next input while the process reads the last, where a buffer
//! flushed by the task itself left the process idle while it was refilled (a Python filter
//! fed at 2M lines/s took half its wall time waiting). A few chunks are queued at most, so the
//! input held between the task and the pipe stays bounded, as the buffer was
//! ([`PIPE_BUF`](super::PIPE_BUF) in all).
//!
//! The writer holds the task's working time while it has input to write (`Stopwatch`): input
//! the process has not taken is the operator's work, for the busy meter as for the stall
//! detector, even while the task itself waits for more.
//!
//! The writer never closes the pipe on its own: it hands the write end back as it ends, so
//! the descriptor the task counts unread input through (`unread.rs`) stays the pipe's until
//! the task drops it.

use super::unread::lines_in;
use super::PIPE_BUF;
use crate::dataplane::meter::Stopwatch;
use std::sync::Arc;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How much the task encodes before handing it to the writer: the kernel's pipe size.
const CHUNK: usize = 64 * 1024;

/// Chunks queued for the writer, beyond the one it writes: with the task's own chunk, the
/// input held outside the pipe is at most [`PIPE_BUF`].
const QUEUED: usize = PIPE_BUF / CHUNK - 2;

/// A process's stdin as the task sees it.
type Stdin = Box<dyn AsyncWrite + Send + Unpin>;

/// The writer is gone: the process stopped reading (its exit says why).
#[derive(Debug)]
pub(super) struct Gone;

/// What a writer left when it ended.
pub(super) struct Ended {
    /// The write end, still open (dropping it is the process's end of input).
    pub(super) stdin: Option<Stdin>,
    /// Lines handed to it that never reached the pipe: it stopped reading.
    pub(super) unwritten: u64,
}

/// The task's side of an operator's stdin.
pub(super) struct Feeder {
    /// The chunk being encoded into.
    chunk: Vec<u8>,
    /// Full chunks to the writer; `None` once closed.
    tx: Option<mpsc::Sender<Vec<u8>>>,
    /// The writer, until joined (aborted if the feeder is dropped first).
    writer: Option<JoinHandle<Ended>>,
}

impl Feeder {
    /// Starts the writer of `stdin`, which runs `working` while it has input to write.
    pub(super) fn spawn(stdin: Stdin, working: Arc<Stopwatch>) -> Feeder {
        let (tx, rx) = mpsc::channel(QUEUED.max(1));
        let writer = tokio::spawn(write_chunks(stdin, rx, working));
        Feeder {
            chunk: Vec::with_capacity(CHUNK),
            tx: Some(tx),
            writer: Some(writer),
        }
    }

    /// Adds one encoded line (with its newline), handing the chunk over once it is full.
    pub(super) async fn write(&mut self, line: &[u8]) -> Result<(), Gone> {
        self.chunk.extend_from_slice(line);
        if self.chunk.len() >= CHUNK {
            self.hand_over().await?;
        }
        Ok(())
    }

    /// Hands what is encoded to the writer (the input ran dry: the process gets it now).
    pub(super) async fn hand_over(&mut self) -> Result<(), Gone> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let Some(tx) = &self.tx else {
            return Err(Gone);
        };
        // Reserved first, so a hand-over dropped midway keeps the chunk (cancel-safe).
        let Ok(permit) = tx.reserve().await else {
            return Err(Gone);
        };
        permit.send(std::mem::replace(
            &mut self.chunk,
            Vec::with_capacity(CHUNK),
        ));
        Ok(())
    }

    /// Hands over the rest and waits until the writer has written all of it (or the process
    /// stopped reading); returns the write end, still open, and what never reached the pipe.
    pub(super) async fn close(mut self) -> Ended {
        // A refused hand-over keeps the chunk, counted below.
        if self.hand_over().await.is_err() {
            tracing::debug!("the operator's stdin writer had ended; its exit tells why");
        }
        self.tx = None;
        let kept = lines_in(&self.chunk);
        let mut ended = match self.writer.take() {
            Some(w) => match w.await {
                Ok(ended) => ended,
                Err(e) => {
                    tracing::warn!(error = %e, "the operator's stdin writer panicked");
                    Ended {
                        stdin: None,
                        unwritten: 0,
                    }
                }
            },
            None => Ended {
                stdin: None,
                unwritten: 0,
            },
        };
        ended.unwritten += kept;
        ended
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            w.abort();
        }
    }
}

/// The writer: each chunk into the pipe, in order, until the task closes the queue or the
/// process stops reading; then what it could not write is counted and the write end handed
/// back.
async fn write_chunks(
    mut stdin: Stdin,
    mut rx: mpsc::Receiver<Vec<u8>>,
    working: Arc<Stopwatch>,
) -> Ended {
    while let Some(chunk) = rx.recv().await {
        let _working = working.run();
        let mut at = 0;
        while at < chunk.len() {
            match stdin.write(&chunk[at..]).await {
                Ok(n) if n > 0 => at += n,
                res => {
                    let e = res
                        .err()
                        .unwrap_or_else(|| std::io::ErrorKind::WriteZero.into());
                    tracing::debug!(error = %e, "writing to the operator's stdin failed; its exit tells why");
                    // A line cut by the pipe's end is counted with the pipe's lines (its
                    // start is there, `unread.rs`), not again here.
                    let cut = at > 0 && chunk.get(at - 1).is_some_and(|b| *b != b'\n');
                    let mut unwritten = lines_in(&chunk[at..]).saturating_sub(u64::from(cut));
                    rx.close();
                    while let Some(rest) = rx.recv().await {
                        unwritten += lines_in(&rest);
                    }
                    return Ended {
                        stdin: Some(stdin),
                        unwritten,
                    };
                }
            }
        }
    }
    if let Err(e) = stdin.flush().await {
        tracing::debug!(error = %e, "flushing the operator's stdin failed; its exit tells why");
    }
    Ended {
        stdin: Some(stdin),
        unwritten: 0,
    }
}

#[cfg(test)]
mod tests;
