//! A local source file read ahead of its reader, on a thread of the blocking pool.
//!
//! `tokio::fs::File` reads only when asked: each read is handed to a blocking thread and
//! awaited, so the source task waited for every chunk of the file in turn (the read of a
//! 146 MB file is some 50 ms of system time), on the job's critical path. Here one blocking
//! thread reads chunks ahead into a small bounded queue while the source routes what it has:
//! at most `DEPTH` chunks wait, so memory stays bounded, and the thread stops at the end of the
//! file, at an error (handed to the reader), or at its next chunk once the reader is gone.

use std::io::Read;
use std::pin::Pin;
use std::sync::mpsc as recycle;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

/// Bytes read at a time.
const CHUNK: usize = 1 << 20;

/// Chunks read ahead of the reader at most.
const DEPTH: usize = 2;

/// Reads `file` ahead of the returned reader (see the module doc).
///
/// The chunks' buffers go back to the reading thread once read, so a file is read through
/// the same few megabytes: a fresh megabyte per chunk was a fresh mapping for the kernel to
/// fault in page by page, 5% of a 1M-line job's CPU.
pub fn read_ahead(mut file: std::fs::File) -> crate::store::ObjectReader {
    let (tx, rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(DEPTH);
    // One more than can be in flight (queued, being read, being filled): never full.
    let (back, spare) = recycle::sync_channel::<Vec<u8>>(DEPTH + 2);
    // Not joined: it ends by itself, at most one chunk after its reader is dropped (its send
    // fails), and holds nothing but the file and that chunk.
    tokio::task::spawn_blocking(move || loop {
        let mut chunk = spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        chunk.clear();
        // Read into the vector's spare capacity: `read_to_end` on a file reads into memory it
        // has not zeroed first (a zeroed chunk cost a memset of the whole file). `Interrupted`
        // is retried inside it.
        match (&mut file).take(CHUNK as u64).read_to_end(&mut chunk) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
        if tx.blocking_send(Ok(chunk)).is_err() {
            return;
        }
    });
    Box::new(AheadReader {
        rx,
        back,
        cur: Vec::new(),
        pos: 0,
    })
}

/// The reading end: copies out of the chunk at hand, and hands each chunk's buffer back
/// once it is read.
struct AheadReader {
    rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    back: recycle::SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl AsyncRead for AheadReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        while me.pos == me.cur.len() {
            match me.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                // The end of the file.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(Some(Ok(next))) => {
                    let done = std::mem::replace(&mut me.cur, next);
                    me.pos = 0;
                    // Full only if the thread is gone (the file is read): then it is dropped.
                    if done.capacity() > 0 {
                        let _ = me.back.try_send(done);
                    }
                }
            }
        }
        let n = buf.remaining().min(me.cur.len() - me.pos);
        buf.put_slice(&me.cur[me.pos..me.pos + n]);
        me.pos += n;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_file_read_ahead_reads_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        let data: Vec<u8> = (0..(3 * CHUNK + 12345)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let mut rd = read_ahead(std::fs::File::open(&path).unwrap());
        let mut got = Vec::new();
        rd.read_to_end(&mut got).await.unwrap();
        assert!(got == data, "{} bytes read of {}", got.len(), data.len());
        // An empty file is an empty read; a reader dropped part-way stops the thread.
        std::fs::write(&path, b"").unwrap();
        let mut rd = read_ahead(std::fs::File::open(&path).unwrap());
        assert_eq!(rd.read_to_end(&mut got).await.unwrap(), 0);
        std::fs::write(&path, &data).unwrap();
        let mut rd = read_ahead(std::fs::File::open(&path).unwrap());
        let mut some = [0u8; 10];
        rd.read_exact(&mut some).await.unwrap();
        assert_eq!(&some[..], &data[..10]);
        drop(rd);
    }
}
