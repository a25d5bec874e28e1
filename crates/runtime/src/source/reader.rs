//! Turning the source file into tuples `(NAME:LINE, line)`: the one definition of what the
//! source emits, shared with first-stage replay after a crash.
//!
//! The file is read in chunks into one buffer, and each line is lent out of it
//! ([`SourceReader::next_line`]) with its key written into a small buffer of the reader's: the
//! live source routes the pair straight into its batches (`Router::push_pair`), so a line
//! costs no allocation and no reference count. (Lines used to be slices of shared chunks: a
//! profile of a 1M-line job had a tenth of its CPU in those slices' reference counts.)
//! Replay, which keeps lines past the next read, takes owned tuples
//! ([`SourceReader::next_tuple`]).

use crate::dataplane::router::MAX_TUPLE;
use crate::model::pushdown::LineFilter;
use crate::model::tuple::{stable_hash, stable_hash_more, Tuple};
use bytes::{Buf, BytesMut};
use std::borrow::Cow;
use tokio::io::AsyncReadExt;

/// Bytes read from the file at a time.
const CHUNK: usize = 256 * 1024;

/// See the module doc.
pub struct SourceReader<R> {
    rd: R,
    name: String,
    line_no: u64,
    /// Read from the file; its first `taken` bytes are lines already lent out.
    buf: BytesMut,
    taken: usize,
    /// The current line's key, `NAME:LINE`.
    key: String,
    /// The `stable_hash` of `NAME:`, which every key starts with.
    prefix_hash: u64,
    /// The file has ended (what `buf` holds past `taken` is its last line, if anything).
    eof: bool,
    /// The longest line accepted (`MAX_TUPLE`; smaller in tests).
    pub(super) max_line: usize,
    /// Bytes of the file taken so far, line ends included.
    consumed: u64,
    /// The first stage's filters pushed into the source (`model::pushdown`).
    filter: Option<LineFilter>,
}

/// A line longer than the largest tuple: the same on every read of the file, so no restart of
/// the source mends it ([`is_line_too_long`]).
#[derive(Debug)]
pub struct LineTooLong {
    line: u64,
    max: usize,
}

impl std::fmt::Display for LineTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {} is longer than the largest tuple the data plane carries ({} bytes)",
            self.line, self.max
        )
    }
}

impl std::error::Error for LineTooLong {}

/// Whether a read of the source failed on a line too long to carry ([`LineTooLong`]).
pub fn is_line_too_long(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<LineTooLong>())
}

/// One line of the source, lent by the reader until its next read.
pub struct Line<'a> {
    /// `NAME:LINE`.
    pub key: &'a str,
    /// The key's `stable_hash`.
    pub key_hash: u64,
    /// The line without its line end (invalid UTF-8 replaced, as `String::from_utf8_lossy`
    /// does).
    pub value: Cow<'a, str>,
    /// Its number in the file, from 1 (lines a filter dropped counted).
    pub number: u64,
}

/// A line without its carriage return, if it ends in one.
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A line's text: `from_utf8` first, as `from_utf8_lossy` walks the line in chunks, several
/// times slower for the valid line that nearly every line is.
fn text_of(line: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(line) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(line),
    }
}

impl<R: tokio::io::AsyncRead + Unpin> SourceReader<R> {
    /// Reads `inner`, naming tuples after `name`.
    pub fn new(inner: R, name: &str) -> Self {
        SourceReader {
            rd: inner,
            name: name.to_string(),
            line_no: 0,
            buf: BytesMut::new(),
            taken: 0,
            key: String::new(),
            prefix_hash: stable_hash_more(stable_hash(name.as_bytes()), b":"),
            eof: false,
            max_line: MAX_TUPLE,
            consumed: 0,
            filter: None,
        }
    }

    /// The reader yielding only the lines `filter` keeps (the source's pushed-down filter):
    /// what the source sends and what every first-stage replay must read alike.
    pub fn filtered(mut self, filter: Option<LineFilter>) -> Self {
        self.filter = filter;
        self
    }

    /// Lines of the file taken so far, those a filter dropped included.
    pub fn lines(&self) -> u64 {
        self.line_no
    }

    /// The next line and its key, or None at the end of the file; with a filter
    /// ([`SourceReader::filtered`]), the next line it keeps.
    pub async fn next_line(&mut self) -> std::io::Result<Option<Line<'_>>> {
        let (start, end) = loop {
            self.skip_lines_without_anchor().await?;
            let Some((start, end)) = self.take_line().await? else {
                return Ok(None);
            };
            let raw = strip_cr(&self.buf[start..end]);
            match &self.filter {
                Some(f) if !f.may_keep(raw) => continue,
                Some(f) if !f.decided_by_bytes() && !f.keeps(&text_of(raw)) => continue,
                _ => break (start, end),
            }
        };
        self.key.clear();
        self.key.push_str(&self.name);
        self.key.push(':');
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(self.line_no);
        self.key.push_str(digits);
        let key_hash = stable_hash_more(self.prefix_hash, digits.as_bytes());
        Ok(Some(Line {
            key: &self.key,
            key_hash,
            value: text_of(strip_cr(&self.buf[start..end])),
            number: self.line_no,
        }))
    }

    /// With a filter whose substring decides by bytes ([`LineFilter::anchor`]), takes in bulk
    /// the whole lines before the next one that holds the substring's bytes, as grep does:
    /// one search over the buffer and a count of its line ends, instead of a look at each
    /// line (app1 drops seven lines in ten). They are counted and consumed as
    /// [`take_line`](Self::take_line) would take them; being dropped, they are never carried,
    /// so their length is not held against the longest tuple. Returns once what is left
    /// starts with the line that holds the next occurrence, or at the end of the file.
    async fn skip_lines_without_anchor(&mut self) -> std::io::Result<()> {
        loop {
            let Some(anchor) = self.filter.as_ref().and_then(|f| f.anchor()) else {
                return Ok(());
            };
            let rest = &self.buf[self.taken..];
            let found = anchor.find(rest);
            let whole = match found {
                Some(at) => memchr::memrchr(b'\n', &rest[..at]).map_or(0, |nl| nl + 1),
                // Not in what is left of the file: all of it goes, a last line without a line
                // end too.
                None if self.eof => rest.len(),
                None => memchr::memrchr(b'\n', rest).map_or(0, |nl| nl + 1),
            };
            if whole > 0 {
                let ends = memchr::memchr_iter(b'\n', &rest[..whole]).count() as u64;
                let unended = u64::from(rest[whole - 1] != b'\n');
                self.line_no += ends + unended;
                // Each line with its line end, one too many for a last line without one (as
                // `take_line` counts).
                self.consumed += whole as u64 + unended;
                self.taken += whole;
            }
            let partial = self.buf.len() - self.taken;
            if found.is_some() || self.eof || partial > self.max_line {
                // A line too long to carry is `take_line`'s to refuse.
                return Ok(());
            }
            self.fill().await?;
        }
    }

    /// Takes the next line of the file (counted, its bytes consumed): where it lies in `buf`,
    /// line end excluded, or None at the end of the file.
    async fn take_line(&mut self) -> std::io::Result<Option<(usize, usize)>> {
        let mut searched = 0;
        let (start, end, next) = loop {
            let rest = &self.buf[self.taken..];
            if let Some(i) = memchr::memchr(b'\n', &rest[searched..]) {
                let end = searched + i;
                if end > self.max_line {
                    return Err(self.too_long());
                }
                break (self.taken, self.taken + end, self.taken + end + 1);
            }
            searched = rest.len();
            if searched > self.max_line {
                return Err(self.too_long());
            }
            if self.eof {
                if rest.is_empty() {
                    return Ok(None);
                }
                let len = self.buf.len();
                break (self.taken, len, len);
            }
            self.fill().await?;
        };
        // The line and its newline (one too many for a last line without one: a follower's
        // share is capped at the size).
        self.consumed += (end - start) as u64 + 1;
        self.taken = next;
        self.line_no += 1;
        Ok(Some((start, end)))
    }

    /// The next tuple, or None at the end of the file: [`next_line`](Self::next_line) as a
    /// tuple of its own.
    pub async fn next_tuple(&mut self) -> std::io::Result<Option<Tuple>> {
        Ok(self
            .next_line()
            .await?
            .map(|l| Tuple::new(l.key.to_string(), l.value.into_owned())))
    }

    /// Reads the next chunk of the file after what `buf` holds, dropping the lines already
    /// lent (nothing borrows them any more: the borrow ended with the call that lent them).
    async fn fill(&mut self) -> std::io::Result<()> {
        self.buf.advance(self.taken);
        self.taken = 0;
        if self.buf.capacity() - self.buf.len() < CHUNK / 4 {
            // Room for the next chunk: in place when the partial line is small (the buffer
            // is this reader's alone), else a buffer twice the line's size.
            self.buf
                .reserve(CHUNK.max(self.buf.len() * 2) - self.buf.len());
        }
        if self.rd.read_buf(&mut self.buf).await? == 0 {
            self.eof = true;
        }
        Ok(())
    }

    fn too_long(&self) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            LineTooLong {
                line: self.line_no + 1,
                max: self.max_line,
            },
        )
    }

    /// Bytes of the file taken so far (each line with its line end).
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Whether the reader holds data not yet taken as lines (as a buffered reader's buffer;
    /// the next tuple may still need a read when that is part of a line).
    pub fn buffered(&self) -> bool {
        self.buf.len() > self.taken
    }
}
