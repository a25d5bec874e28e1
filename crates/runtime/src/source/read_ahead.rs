//! A local source file read ahead of its reader, on a thread of the blocking pool.
//!
//! `tokio::fs::File` reads only when asked: each read is handed to a blocking thread and
//! awaited, so the source task waited for every chunk of the file in turn (the read of a
//! 146 MB file is some 50 ms of system time), on the job's critical path. Here one blocking
//! thread reads chunks ahead into a small bounded queue while the source routes what it has:
//! at most `DEPTH` chunks wait, so memory stays bounded, and the thread stops at the end of the
//! file, at an error (handed to the reader), or at its next chunk once the reader is gone.

use bytes::Bytes;
use std::io::Read;

/// Bytes read at a time.
const CHUNK: usize = 1 << 20;

/// Chunks read ahead of the reader at most.
const DEPTH: usize = 2;

/// Reads `file` ahead of the returned reader (see the module doc).
pub fn read_ahead(mut file: std::fs::File) -> crate::store::ObjectReader {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(DEPTH);
    // Not joined: it ends by itself, at most one chunk after its reader is dropped (its send
    // fails), and holds nothing but the file and that chunk.
    tokio::task::spawn_blocking(move || loop {
        // Read into the vector's spare capacity: `read_to_end` on a file reads into memory it
        // has not zeroed first (a zeroed chunk cost a memset of the whole file). `Interrupted`
        // is retried inside it.
        let mut chunk = Vec::with_capacity(CHUNK);
        match (&mut file).take(CHUNK as u64).read_to_end(&mut chunk) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
        if tx.blocking_send(Ok(Bytes::from(chunk))).is_err() {
            return;
        }
    });
    let chunks = futures::stream::unfold(rx, |mut rx| async move {
        let next = rx.recv().await?;
        Some((next, rx))
    });
    Box::new(tokio_util::io::StreamReader::new(Box::pin(chunks)))
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
