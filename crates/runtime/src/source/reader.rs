//! Turning the source file into tuples `(NAME:LINE, line)`: the one definition of what the
//! source emits, shared with first-stage replay after a crash.
//!
//! The file is read in chunks of shared bytes, and each line's value is a slice of its chunk;
//! keys are written one after another into a small arena and sliced off it. So a line costs
//! no allocation of its own (a profile of a 1M-line job had the source's two allocations per
//! line among the process's largest costs). A slice keeps its chunk alive while it lives,
//! which is while its tuple waits in a router's batch or a link's queue: at most about a
//! chunk per destination more than the lines themselves.

use crate::dataplane::router::MAX_TUPLE;
use crate::model::tuple::{Text, Tuple};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::AsyncReadExt;

/// Bytes read from the file at a time (the chunks lines are sliced from).
const CHUNK: usize = 256 * 1024;

/// Bytes of the key arena, refilled when a key no longer fits.
const KEY_ARENA: usize = 16 * 1024;

/// See the module doc.
pub struct SourceReader<R> {
    rd: R,
    name: String,
    line_no: u64,
    /// Read from the file and not yet taken as lines.
    buf: BytesMut,
    /// Where keys are written before they are sliced off.
    keys: BytesMut,
    /// The file has ended (what `buf` holds is its last line, if anything).
    eof: bool,
    /// The longest line accepted (`MAX_TUPLE`; smaller in tests).
    pub(super) max_line: usize,
    /// Bytes of the file taken so far, line ends included.
    consumed: u64,
}

impl<R: tokio::io::AsyncRead + Unpin> SourceReader<R> {
    /// Reads `inner`, naming tuples after `name`.
    pub fn new(inner: R, name: &str) -> Self {
        SourceReader {
            rd: inner,
            name: name.to_string(),
            line_no: 0,
            buf: BytesMut::new(),
            keys: BytesMut::new(),
            eof: false,
            max_line: MAX_TUPLE,
            consumed: 0,
        }
    }

    /// The next tuple, or None at the end of the file.
    pub async fn next_tuple(&mut self) -> std::io::Result<Option<Tuple>> {
        let mut searched = 0;
        let line = loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[searched..]) {
                let end = searched + i;
                if end > self.max_line {
                    return Err(self.too_long());
                }
                let mut line = self.buf.split_to(end + 1);
                line.truncate(end);
                break line;
            }
            searched = self.buf.len();
            if searched > self.max_line {
                return Err(self.too_long());
            }
            if self.eof {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                break self.buf.split();
            }
            self.fill().await?;
        };
        // The line and its newline (one too many for a last line without one: a follower's
        // share is capped at the size).
        self.consumed += line.len() as u64 + 1;
        let mut line = line.freeze();
        if line.last() == Some(&b'\r') {
            line.truncate(line.len() - 1);
        }
        self.line_no += 1;
        let value = match Text::try_from(line.clone()) {
            Ok(t) => t,
            Err(_) => Text::from(String::from_utf8_lossy(&line).into_owned()),
        };
        Ok(Some(Tuple {
            key: self.key(),
            value,
        }))
    }

    /// `NAME:LINE` of the current line, written into the arena and sliced off it.
    fn key(&mut self) -> Text {
        let mut digits = itoa::Buffer::new();
        let line = digits.format(self.line_no);
        let len = self.name.len() + 1 + line.len();
        if self.keys.capacity() < len {
            self.keys = BytesMut::with_capacity(KEY_ARENA.max(len));
        }
        self.keys.put_slice(self.name.as_bytes());
        self.keys.put_u8(b':');
        self.keys.put_slice(line.as_bytes());
        let key: Bytes = self.keys.split().freeze();
        // The name is a `String` and the digits ASCII: the fallback cannot be reached (it
        // spells the same key again rather than keep a second reference to the first).
        Text::try_from(key).unwrap_or_else(|_| Text::from(format!("{}:{line}", self.name)))
    }

    /// Reads the next chunk of the file after what `buf` holds.
    async fn fill(&mut self) -> std::io::Result<()> {
        if self.buf.capacity() - self.buf.len() < CHUNK / 4 {
            // A fresh chunk, with the partial line carried over (lines in flight keep the
            // old one alive).
            let mut next = BytesMut::with_capacity(CHUNK.max(self.buf.len() * 2));
            next.put_slice(&self.buf);
            self.buf = next;
        }
        if self.rd.read_buf(&mut self.buf).await? == 0 {
            self.eof = true;
        }
        Ok(())
    }

    fn too_long(&self) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "line {} is longer than the largest tuple the data plane carries ({} bytes)",
                self.line_no + 1,
                self.max_line
            ),
        )
    }

    /// Bytes of the file taken so far (each line with its line end).
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Whether the reader holds data not yet taken as lines (as a buffered reader's buffer;
    /// the next tuple may still need a read when that is part of a line).
    pub fn buffered(&self) -> bool {
        !self.buf.is_empty()
    }
}
