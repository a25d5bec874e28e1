//! Where a followed job's output goes: a dedicated thread that does the blocking writes (to
//! stdout, in the CLI), fed over a bounded channel — and, when stdout and stderr are the same
//! terminal, the one owner of that terminal, which also draws the progress line.
//!
//! War story "a lock never held across a pipe write": the follower used to hold stdout's lock in
//! a `BufWriter` across every `.await` of the output stream and write to the pipe from inside
//! the async task, so a slow reader of our stdout blocked a runtime thread and anything else
//! that wanted stdout. Now the async side only awaits room in the channel (backpressure without
//! blocking), and the writer thread takes stdout's lock per chunk, inside one synchronous write.
//!
//! The progress line (`progress`) is drawn on stderr with `\r` and erase-to-end-of-line. When
//! stdout is a terminal too, output lines and the progress line would land on the same screen
//! line, so the writer thread draws both: it erases the progress line, writes the chunk of
//! output (whole lines), and draws the progress line again below it. No lock is shared: the
//! progress task only queues the text of the line ([`StatusLine`]).

use anyhow::{anyhow, Context};
use std::io::{IsTerminal, Write};
use tokio::sync::{mpsc, oneshot};

/// Chunks waiting for the writer thread (each holds at most one output event, ≤ 1 MiB).
const QUEUE_CHUNKS: usize = 4;

/// Moves the cursor to the start of the line and clears the line from there.
const ERASE: &str = "\r\x1b[K";

/// What the writer thread is asked to do.
#[derive(Debug)]
pub enum Msg {
    /// Write a chunk of output (whole lines).
    Out(Vec<u8>),
    /// Show this progress line instead of the current one (empty: none).
    Status(String),
}

/// The async handle of an output writer thread.
pub struct OutputWriter {
    tx: mpsc::Sender<Msg>,
    /// The thread's result, until it is taken: a failed write takes it, and `finish` after
    /// it must not wait on it again (a oneshot polled after it completed panics: `run |
    /// head` did).
    done: Option<oneshot::Receiver<std::io::Result<()>>>,
    /// Whether the thread also owns the progress line.
    draws_status: bool,
}

/// Whether this process's stderr is a terminal that can show a progress line (an
/// interactive one that understands `\r` and erase-to-end-of-line).
pub fn stderr_shows_progress() -> bool {
    std::io::stderr().is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

impl OutputWriter {
    /// Writes to this process's stdout; each chunk is written and flushed under one short
    /// lock of stdout.
    pub fn stdout() -> anyhow::Result<OutputWriter> {
        OutputWriter::spawn(std::io::stdout(), None, QUEUE_CHUNKS)
    }

    /// Writes to stdout, with a progress line on stderr when stderr is a terminal (none
    /// otherwise). When stdout is that terminal too, the writer thread draws the line
    /// between output chunks; else the line is drawn on stderr directly.
    pub fn stdout_with_status() -> anyhow::Result<(OutputWriter, Option<StatusLine>)> {
        if !stderr_shows_progress() {
            return Ok((OutputWriter::stdout()?, None));
        }
        if !std::io::stdout().is_terminal() {
            return Ok((OutputWriter::stdout()?, Some(StatusLine::direct())));
        }
        let out = OutputWriter::spawn(
            std::io::stdout(),
            Some(Box::new(std::io::stderr())),
            QUEUE_CHUNKS,
        )?;
        let status = out.status_line();
        Ok((out, status))
    }

    /// Writes to `out` on a new thread, with at most `depth` chunks queued; with `status`,
    /// the thread also draws the progress line there (see [`OutputWriter::status_line`]).
    pub fn spawn<W: Write + Send + 'static>(
        mut out: W,
        status: Option<Box<dyn Write + Send>>,
        depth: usize,
    ) -> anyhow::Result<OutputWriter> {
        let (tx, mut rx) = mpsc::channel::<Msg>(depth.max(1));
        let (done_tx, done) = oneshot::channel();
        let draws_status = status.is_some();
        std::thread::Builder::new()
            .name("rainstorm-output".into())
            .spawn(move || {
                let mut term = Terminal {
                    status,
                    line: String::new(),
                };
                let mut write_all = || -> std::io::Result<()> {
                    while let Some(msg) = rx.blocking_recv() {
                        match msg {
                            Msg::Out(chunk) => term.output(&mut out, &chunk)?,
                            Msg::Status(line) => term.show(line)?,
                        }
                    }
                    Ok(())
                };
                let mut res = write_all();
                // The follow is over (or abandoned): the progress line goes with it.
                let erased = term.show(String::new());
                if res.is_ok() {
                    res = erased;
                }
                // Nobody waiting for the result is fine: the follower gave up first.
                let _ = done_tx.send(res);
            })
            .context("starting the output writer thread")?;
        Ok(OutputWriter {
            tx,
            done: Some(done),
            draws_status,
        })
    }

    /// The handle that shows a progress line through this writer's thread, if it draws one.
    /// It does not keep the thread alive: once the writer is finished or dropped, drawing
    /// does nothing (and the thread has erased the line).
    pub fn status_line(&self) -> Option<StatusLine> {
        self.draws_status
            .then(|| StatusLine(Route::Writer(self.tx.downgrade())))
    }

    /// Queues a chunk, waiting (without blocking the thread) while the queue is full.
    pub async fn write(&mut self, chunk: Vec<u8>) -> anyhow::Result<()> {
        if self.tx.send(Msg::Out(chunk)).await.is_ok() {
            return Ok(());
        }
        // The thread stopped taking chunks: it failed, and says why.
        outcome(&mut self.done).await?;
        Err(anyhow!("the output writer thread stopped"))
    }

    /// Waits until everything queued is written.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        drop(self.tx);
        outcome(&mut self.done).await
    }
}

/// The writer thread's view of the terminal: where the progress line goes, and what it
/// shows now.
struct Terminal {
    status: Option<Box<dyn Write + Send>>,
    line: String,
}

impl Terminal {
    /// Writes a chunk of output with the progress line out of its way: erased before,
    /// drawn again after (the chunk is whole lines, so the cursor is back at a line start).
    fn output(&mut self, out: &mut impl Write, chunk: &[u8]) -> std::io::Result<()> {
        if let (Some(s), false) = (self.status.as_mut(), self.line.is_empty()) {
            s.write_all(ERASE.as_bytes())?;
            s.flush()?;
        }
        out.write_all(chunk)?;
        out.flush()?;
        if let (Some(s), false) = (self.status.as_mut(), self.line.is_empty()) {
            write!(s, "\r{}\x1b[K", self.line)?;
            s.flush()?;
        }
        Ok(())
    }

    /// Replaces the progress line (an empty one erases it).
    fn show(&mut self, line: String) -> std::io::Result<()> {
        let Some(s) = self.status.as_mut() else {
            return Ok(());
        };
        if line.is_empty() && self.line.is_empty() {
            return Ok(());
        }
        if line.is_empty() {
            s.write_all(ERASE.as_bytes())?;
        } else {
            write!(s, "\r{line}\x1b[K")?;
        }
        s.flush()?;
        self.line = line;
        Ok(())
    }
}

/// How the waiting for the writer thread ended; once told, it is not told again (the
/// failure was returned already).
async fn outcome(done: &mut Option<oneshot::Receiver<std::io::Result<()>>>) -> anyhow::Result<()> {
    let Some(rx) = done.take() else {
        return Err(anyhow!("the output writer thread stopped"));
    };
    match rx.await {
        Ok(res) => res.context("writing output"),
        Err(_) => Err(anyhow!("the output writer thread died")),
    }
}

/// Where the progress line is drawn.
enum Route {
    /// On stderr, by whoever draws (stdout is not the terminal: nothing else shares it but
    /// our own messages); `drawn` says whether a line is on screen.
    Direct { drawn: bool },
    /// Through an output writer thread (stdout is the terminal too).
    Writer(mpsc::WeakSender<Msg>),
}

/// The progress line on the terminal: drawn in place, erased when dropped.
pub struct StatusLine(Route);

impl StatusLine {
    /// A line drawn on stderr directly.
    pub fn direct() -> StatusLine {
        StatusLine(Route::Direct { drawn: false })
    }

    /// Shows `line` in place of the current one; an empty line erases it. A frame that
    /// cannot be shown now (the writer's queue is full of output) is skipped: the next one
    /// replaces it anyway.
    pub fn draw(&mut self, line: &str) {
        match &mut self.0 {
            Route::Direct { drawn } => {
                if line.is_empty() && !*drawn {
                    return;
                }
                let text = if line.is_empty() {
                    ERASE.to_string()
                } else {
                    format!("\r{line}\x1b[K")
                };
                let mut err = std::io::stderr().lock();
                match err.write_all(text.as_bytes()).and_then(|()| err.flush()) {
                    Ok(()) => *drawn = !line.is_empty(),
                    Err(e) => tracing::debug!(error = %e, "cannot draw the progress line"),
                }
            }
            Route::Writer(tx) => {
                // The strong handle lives for this call only, so the writer's end is not
                // held off by the progress line.
                if let Some(tx) = tx.upgrade() {
                    if let Err(e) = tx.try_send(Msg::Status(line.to_string())) {
                        tracing::debug!(error = %e, "progress frame skipped");
                    }
                }
            }
        }
    }

    /// Erases the line.
    pub fn erase(&mut self) {
        self.draw("");
    }
}

impl Drop for StatusLine {
    fn drop(&mut self) {
        // A follow that ends any way, even abandoned, leaves no progress line behind.
        self.erase();
    }
}

#[cfg(test)]
mod tests;
