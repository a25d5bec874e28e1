//! A follower's place in a running job's committed output: the sink task's log, read through
//! `runtime::log::committed_lineage` (each answer a prefix of every later one in slots — group
//! commits — whatever compaction merged, so the cursor only ever moves forward over slots it
//! has already passed). Reads that may have
//! overlapped the log's removal at the job's end are discarded, never printed.

use crate::model::ids::TaskKey;
use crate::segment_cache::SegmentCache;
use axum::body::Bytes;
use rainstorm_store::log::committed_lineage;
use rainstorm_store::log::compact::{from_slot, read_object};
use rainstorm_store::output::{segment_text, SinkProgress};
use rainstorm_store::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// About how much output one data event carries (whole lines; a longer line goes whole).
pub(super) const CHUNK: usize = 1 << 20;

/// How much of `buf` to hand out as whole lines of about [`CHUNK`]: through the last newline
/// in its first `CHUNK` bytes, else through the first newline after (a longer line goes
/// whole); `None` if `buf` holds no whole line.
pub(super) fn whole_lines(buf: &[u8]) -> Option<usize> {
    let head = &buf[..buf.len().min(CHUNK)];
    match head.iter().rposition(|b| *b == b'\n') {
        Some(i) => Some(i + 1),
        None => buf[head.len()..]
            .iter()
            .position(|b| *b == b'\n')
            .map(|i| head.len() + i + 1),
    }
}

/// How often a cursor that waits for a sink takeover to settle looks again, and how often.
const TAKEOVER_POLL: Duration = Duration::from_millis(100);
const TAKEOVER_POLLS: u32 = 50;

/// A store or log error as the I/O error a stream reports.
pub(super) fn io(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Where an offset falls in the committed output.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Seek {
    /// At the start of a line (or at the end of what is committed).
    LineStart,
    /// Inside a line.
    InsideLine,
    /// Past the committed output, which is this long.
    Beyond(u64),
}

/// A cursor over the committed segments of one sink's log. It counts slots (group commits),
/// not objects: the sink compacts its log as it runs (`store::log::compact`), so the objects
/// that hold a slot change, never the slot's text.
pub(super) struct LogCursor {
    key: TaskKey,
    /// Committed slots wholly before the cursor, and the output byte the next one starts at.
    slots_done: u64,
    seg_start: u64,
    /// The text of each segment of the object the cursor is inside, while it hands it out.
    current: Option<(String, Vec<Bytes>)>,
    /// Objects' text other followers read (or this one, earlier).
    shared: Arc<SegmentCache>,
}

/// Times a cursor lists the log again after an object it listed was compacted away.
const RELISTS: u32 = 50;

impl LogCursor {
    pub(super) fn new(key: TaskKey, shared: Arc<SegmentCache>) -> LogCursor {
        LogCursor {
            key,
            slots_done: 0,
            seg_start: 0,
            current: None,
            shared,
        }
    }

    /// The text of each segment of the object at `path`, kept while the cursor is inside it
    /// and shared with other followers (`segment_cache`); `None` if the object is gone
    /// (compacted since it was listed).
    async fn texts(&mut self, store: &Store, path: &str) -> std::io::Result<Option<Vec<Bytes>>> {
        if let Some((p, texts)) = &self.current {
            if p == path {
                return Ok(Some(texts.clone()));
            }
        }
        let texts = match self.shared.get(path) {
            Some(texts) => texts,
            None => {
                let Some(segs) = read_object(store, path).await.map_err(io)? else {
                    return Ok(None);
                };
                let texts = (segs.into_iter())
                    .map(|(sealed_for, seg)| {
                        segment_text(store.seal(), &sealed_for, seg).map_err(io)
                    })
                    .collect::<std::io::Result<Vec<Bytes>>>()?;
                self.shared.put(path, &texts);
                texts
            }
        };
        self.current = Some((path.to_string(), texts.clone()));
        Ok(Some(texts))
    }

    /// The committed lineage, waiting a little while a new sink attempt takes over.
    async fn lineage(&self, store: &Store) -> std::io::Result<Vec<String>> {
        let mut tries = 0;
        loop {
            match committed_lineage(store, &self.key).await.map_err(io)? {
                Some(l) => return Ok(l),
                None if tries < TAKEOVER_POLLS => {
                    tries += 1;
                    tokio::time::sleep(TAKEOVER_POLL).await
                }
                None => {
                    return Err(io(
                        "the sink is being taken over by a new attempt; try again",
                    ))
                }
            }
        }
    }

    /// Moves the cursor from the start to the segment holding byte `offset` and says where
    /// that byte falls.
    pub(super) async fn seek(&mut self, store: &Store, offset: u64) -> std::io::Result<Seek> {
        (self.slots_done, self.seg_start, self.current) = (0, 0, None);
        if offset == 0 {
            return Ok(Seek::LineStart);
        }
        let mut relists = 0;
        'list: loop {
            let lineage = self.lineage(store).await?;
            for (path, skip) in from_slot(&lineage, self.slots_done) {
                let Some(texts) = self.texts(store, &path).await? else {
                    relists += 1;
                    if relists > RELISTS {
                        return Err(io("the sink's log keeps changing; try again"));
                    }
                    continue 'list;
                };
                for text in texts.iter().skip(skip) {
                    let end = self.seg_start + text.len() as u64;
                    if end >= offset {
                        let at = (offset - self.seg_start) as usize;
                        return Ok(match at.checked_sub(1).map(|i| text[i]) {
                            None | Some(b'\n') => Seek::LineStart,
                            Some(_) => Seek::InsideLine,
                        });
                    }
                    self.slots_done += 1;
                    self.seg_start = end;
                }
            }
            return Ok(Seek::Beyond(self.seg_start));
        }
    }

    /// The committed lines from `*offset` to the end of the next segment that has any, moving
    /// `*offset` past them; `None` if nothing new is committed yet, or once the job is closing:
    /// its log is being removed, so a read that may have overlapped the removal is discarded
    /// (the flag is raised before the removal starts and checked after the read ends) and the
    /// rest comes from the output file.
    pub(super) async fn next(
        &mut self,
        store: &Store,
        progress: &watch::Receiver<SinkProgress>,
        offset: &mut u64,
    ) -> std::io::Result<Option<Vec<u8>>> {
        let (slots_done, seg_start, at) = (self.slots_done, self.seg_start, *offset);
        let read = self.read(store, offset).await;
        if progress.borrow().closing {
            (self.slots_done, self.seg_start, *offset) = (slots_done, seg_start, at);
            self.current = None;
            return Ok(None);
        }
        read
    }

    /// See [`LogCursor::next`]; an object compacted away since the listing reads as nothing
    /// new yet (the next call lists again).
    async fn read(&mut self, store: &Store, offset: &mut u64) -> std::io::Result<Option<Vec<u8>>> {
        let Some(lineage) = committed_lineage(store, &self.key).await.map_err(io)? else {
            return Ok(None);
        };
        for (path, skip) in from_slot(&lineage, self.slots_done) {
            let Some(texts) = self.texts(store, &path).await? else {
                return Ok(None);
            };
            for text in texts.iter().skip(skip) {
                let end = self.seg_start + text.len() as u64;
                if end <= *offset {
                    self.slots_done += 1;
                    self.seg_start = end;
                    continue;
                }
                // About a chunk of whole lines at a time (a segment's text ends with a newline).
                let rest = &text[(*offset - self.seg_start) as usize..];
                let take = if rest.len() <= CHUNK {
                    rest.len()
                } else {
                    whole_lines(rest).unwrap_or(rest.len())
                };
                let out = rest[..take].to_vec();
                *offset += take as u64;
                if *offset == end {
                    self.slots_done += 1;
                    self.seg_start = end;
                }
                return Ok(Some(out));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ids::{JobId, TaskPos};
    use crate::model::tuple::Tuple;
    use rainstorm_store::log::{encode_record, seal_segment, segment_path, BatchRecord, LogRecord};

    async fn put_segment(store: &Store, key: &TaskKey, n: u64, values: &[&str]) {
        let mut body = bytes::BytesMut::new();
        encode_record(
            &mut body,
            &LogRecord::Batch(BatchRecord {
                from: 0,
                first_seq: 1 + n * 10,
                emit_ns: 0,
                tuples: values.iter().map(|v| Tuple::new("k", *v)).collect(),
            }),
        );
        let path = segment_path(key, 0, n);
        let seg = seal_segment(&body, 1, store.seal(), &path);
        store.put(&path, seg).await.unwrap();
    }

    #[tokio::test]
    async fn a_cursor_hands_out_each_committed_line_once_and_nothing_once_the_log_goes() {
        let store = Store::memory();
        let key = TaskKey {
            job: JobId("job-1".into()),
            pos: TaskPos { stage: 3, index: 0 },
        };
        let (tx, rx) = watch::channel(SinkProgress::default());
        for (n, v) in [["a", "b"], ["c", "d"], ["e", "f"], ["g", "h"]]
            .iter()
            .enumerate()
        {
            put_segment(&store, &key, n as u64, v).await;
        }
        // A follower that reconnects at byte 4 ("c\n…") starts inside the second segment;
        // byte 3 is inside a line; the output so far is 16 bytes.
        let mut cur = LogCursor::new(key.clone(), Arc::default());
        assert_eq!(cur.seek(&store, 3).await.unwrap(), Seek::InsideLine);
        assert_eq!(cur.seek(&store, 17).await.unwrap(), Seek::Beyond(16));
        assert_eq!(cur.seek(&store, 4).await.unwrap(), Seek::LineStart);
        let mut offset = 4;
        let got = cur.next(&store, &rx, &mut offset).await.unwrap();
        assert_eq!(got.as_deref(), Some(&b"c\nd\n"[..]));
        assert_eq!(offset, 8);
        // The job closes and its log is removed from the front, as a prefix delete would:
        // the lineage a reader sees now is shifted ("g h" where "e f" was), and nothing of it
        // is handed out.
        tx.send_modify(|p| p.closing = true);
        store
            .delete_prefix(&segment_path(&key, 0, 0))
            .await
            .unwrap();
        assert_eq!(cur.next(&store, &rx, &mut offset).await.unwrap(), None);
        assert_eq!(
            offset, 8,
            "the cursor stays where it was, for the output file"
        );
        // Before the job closes, the next segment is handed out whole.
        tx.send_modify(|p| p.closing = false);
        put_segment(&store, &key, 0, &["a", "b"]).await;
        let got = cur.next(&store, &rx, &mut offset).await.unwrap();
        assert_eq!(got.as_deref(), Some(&b"e\nf\n"[..]));
        let got = cur.next(&store, &rx, &mut offset).await.unwrap();
        assert_eq!(got.as_deref(), Some(&b"g\nh\n"[..]));
        assert_eq!(cur.next(&store, &rx, &mut offset).await.unwrap(), None);
        assert_eq!(offset, 16);
    }

    #[tokio::test]
    async fn a_large_segment_is_handed_out_in_chunks_of_whole_lines() {
        let store = Store::memory();
        let key = TaskKey {
            job: JobId("job-2".into()),
            pos: TaskPos { stage: 2, index: 0 },
        };
        let (_tx, rx) = watch::channel(SinkProgress::default());
        let lines: Vec<String> = (0..40_000).map(|i| format!("{i:0>70}")).collect();
        let values: Vec<&str> = lines.iter().map(String::as_str).collect();
        put_segment(&store, &key, 0, &values).await;
        let mut cur = LogCursor::new(key, Arc::default());
        let (mut offset, mut got, mut chunks) = (0u64, Vec::new(), 0);
        while let Some(chunk) = cur.next(&store, &rx, &mut offset).await.unwrap() {
            assert!(chunk.len() <= CHUNK && chunk.ends_with(b"\n"));
            got.extend_from_slice(&chunk);
            chunks += 1;
        }
        assert!(chunks >= 3, "{chunks} chunks");
        assert_eq!(got, (lines.join("\n") + "\n").into_bytes());
        assert_eq!(offset, got.len() as u64);
    }

    #[test]
    fn whole_lines_cut_after_the_last_newline_of_a_chunk_or_after_a_long_line() {
        assert_eq!(whole_lines(b""), None);
        assert_eq!(whole_lines(b"half a line"), None);
        assert_eq!(whole_lines(b"a\nb\nhalf"), Some(4));
        let mut big = vec![b'x'; CHUNK - 2];
        big.extend_from_slice(b"\nyy\nzz\n");
        assert_eq!(whole_lines(&big), Some(CHUNK - 1));
        let mut long = vec![b'x'; CHUNK + 5];
        assert_eq!(whole_lines(&long), None);
        long.extend_from_slice(b"\nmore");
        assert_eq!(whole_lines(&long), Some(CHUNK + 6));
    }
}
