//! Where a followed job's output goes: a dedicated thread that does the blocking writes (to
//! stdout, in the CLI), fed over a bounded channel.
//!
//! War story "a lock never held across a pipe write": the follower used to hold stdout's lock in
//! a `BufWriter` across every `.await` of the output stream and write to the pipe from inside
//! the async task, so a slow reader of our stdout blocked a runtime thread and anything else
//! that wanted stdout. Now the async side only awaits room in the channel (backpressure without
//! blocking), and the writer thread takes stdout's lock per chunk, inside one synchronous write.

use anyhow::{anyhow, Context};
use std::io::Write;
use tokio::sync::{mpsc, oneshot};

/// Chunks waiting for the writer thread (each holds at most one output event, ≤ 1 MiB).
const QUEUE_CHUNKS: usize = 4;

/// The async handle of an output writer thread.
pub struct OutputWriter {
    tx: mpsc::Sender<Vec<u8>>,
    done: oneshot::Receiver<std::io::Result<()>>,
}

impl OutputWriter {
    /// Writes to this process's stdout; each chunk is written and flushed under one short
    /// lock of stdout.
    pub fn stdout() -> anyhow::Result<OutputWriter> {
        OutputWriter::spawn(std::io::stdout(), QUEUE_CHUNKS)
    }

    /// Writes to `out` on a new thread, with at most `depth` chunks queued.
    pub fn spawn<W: Write + Send + 'static>(
        mut out: W,
        depth: usize,
    ) -> anyhow::Result<OutputWriter> {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(depth.max(1));
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("rainstorm-output".into())
            .spawn(move || {
                let mut write_all = || -> std::io::Result<()> {
                    while let Some(chunk) = rx.blocking_recv() {
                        out.write_all(&chunk)?;
                        out.flush()?;
                    }
                    Ok(())
                };
                let res = write_all();
                // Nobody waiting for the result is fine: the follower gave up first.
                let _ = done_tx.send(res);
            })
            .context("starting the output writer thread")?;
        Ok(OutputWriter { tx, done })
    }

    /// Queues a chunk, waiting (without blocking the thread) while the queue is full.
    pub async fn write(&mut self, chunk: Vec<u8>) -> anyhow::Result<()> {
        if self.tx.send(chunk).await.is_ok() {
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

/// How the writer thread ended.
async fn outcome(done: &mut oneshot::Receiver<std::io::Result<()>>) -> anyhow::Result<()> {
    match done.await {
        Ok(res) => res.context("writing output"),
        Err(_) => Err(anyhow!("the output writer thread died")),
    }
}
