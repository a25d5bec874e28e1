//! The executable-operator line format: one tuple per line as `key<TAB>value`, with tab,
//! newline, carriage return and backslash inside a key or value escaped as `\t`, `\n`, `\r`
//! and `\\`; a line without a tab is a value with an empty key.

use crate::model::tuple::Tuple;

/// Appends `s` to `out` with the operator protocol's escapes (`\t`, `\n`, `\\`; `\r` too, so a
/// CRLF line survives the round trip).
pub fn escape_into(s: &str, out: &mut Vec<u8>) {
    let mut rest = s.as_bytes();
    // Runs without a special byte are copied whole (found with SIMD: this runs twice for
    // every tuple an executable operator is fed).
    while let Some(i) = next_special(rest) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(match rest[i] {
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => b"\\\\",
        });
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
}

/// Where the first byte [`escape_into`] escapes is.
fn next_special(b: &[u8]) -> Option<usize> {
    let first = memchr::memchr3(b'\t', b'\n', b'\\', b);
    let cr = memchr::memchr(b'\r', &b[..first.unwrap_or(b.len())]);
    cr.or(first)
}

/// Reverses [`escape_into`]; an unknown escape is kept literally rather than rejected, because a
/// lenient reader loses nothing an operator meant to say.
pub fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Encodes a tuple as one protocol line (`key<TAB>value\n`).
pub fn encode_line(t: &Tuple, out: &mut Vec<u8>) {
    escape_into(&t.key, out);
    out.push(b'\t');
    escape_into(&t.value, out);
    out.push(b'\n');
}

/// Decodes one protocol line (without its newline). A line without a tab is a tuple with an
/// empty key, so `print(value)`-style operators still work.
pub fn decode_line(line: &str) -> Tuple {
    let line = line.strip_suffix('\r').unwrap_or(line);
    match line.split_once('\t') {
        Some((k, v)) => Tuple::new(unescape(k), unescape(v)),
        None => Tuple::new(String::new(), unescape(line)),
    }
}

/// The key and value of a protocol line (without its newline) as slices of it, when it holds
/// no escape (nothing to undo): what [`decode_line`] would make a tuple of, without making
/// one. `None` for a line with a backslash.
pub fn split_plain_line(line: &str) -> Option<(&str, &str)> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.contains('\\') {
        return None;
    }
    Some(line.split_once('\t').unwrap_or(("", line)))
}

/// What [`read_line_bounded`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum LineRead {
    /// A line is in the buffer (its newline, if it had one, removed).
    Line,
    /// The end of the input, nothing buffered.
    End,
    /// A line longer than the limit; its first bytes were read and dropped. The number is
    /// how many bytes of it were seen (more than the limit).
    TooLong(usize),
}

/// Reads one line into `buf` (cleared first), refusing one longer than `max` bytes before
/// it is all in memory: input without newlines (a source file, an operator's stdout) cannot
/// grow a reader without bound. A last line without a newline counts as a line.
pub async fn read_line_bounded<R>(
    rd: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<LineRead>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    use tokio::io::AsyncBufReadExt;
    buf.clear();
    loop {
        let avail = rd.fill_buf().await?;
        if avail.is_empty() {
            return Ok(if buf.is_empty() {
                LineRead::End
            } else {
                LineRead::Line
            });
        }
        let (take, done) = match memchr::memchr(b'\n', avail) {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        let len = buf.len() + take - usize::from(done);
        if len > max {
            rd.consume(take);
            return Ok(LineRead::TooLong(len));
        }
        buf.extend_from_slice(&avail[..take]);
        rd.consume(take);
        if done {
            buf.pop();
            return Ok(LineRead::Line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_round_trip() {
        let t = Tuple::new("a\tb\\c", "line\nwith\ttabs\\ and \r");
        let mut buf = Vec::new();
        encode_line(&t, &mut buf);
        assert_eq!(buf.iter().filter(|b| **b == b'\n').count(), 1);
        let s = std::str::from_utf8(&buf).unwrap();
        assert_eq!(decode_line(s.trim_end_matches('\n')), t);
    }

    #[test]
    fn escaping_matches_the_byte_by_byte_rule_wherever_the_specials_fall() {
        let naive = |s: &str| {
            let mut out = Vec::new();
            for b in s.bytes() {
                match b {
                    b'\t' => out.extend_from_slice(b"\\t"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    _ => out.push(b),
                }
            }
            out
        };
        let parts = ["", "a", "\t", "\n", "\r", "\\", "é", "xyz,1", "\r\n", "\\t"];
        for a in parts {
            for b in parts {
                for c in parts {
                    let s = format!("{a}{b}{c}{a}");
                    let mut got = Vec::new();
                    escape_into(&s, &mut got);
                    assert_eq!(got, naive(&s), "{s:?}");
                    assert_eq!(unescape(std::str::from_utf8(&got).unwrap()), s);
                }
            }
        }
    }

    #[test]
    fn line_without_tab_is_value() {
        assert_eq!(decode_line("hello"), Tuple::new("", "hello"));
    }

    #[tokio::test]
    async fn a_line_is_read_whole_up_to_the_limit_and_refused_beyond_it() {
        let mut rd = tokio::io::BufReader::with_capacity(4, &b"12345\nabc\n123456\nend"[..]);
        let mut buf = Vec::new();
        let mut got = Vec::new();
        loop {
            match read_line_bounded(&mut rd, &mut buf, 5).await.unwrap() {
                LineRead::End => break,
                LineRead::Line => got.push(String::from_utf8(buf.clone()).unwrap()),
                LineRead::TooLong(n) => {
                    got.push(format!("too long: {n}"));
                    break;
                }
            }
        }
        assert_eq!(got, ["12345", "abc", "too long: 6"]);
        // Without any newline the refusal comes after `max` bytes, not at the end.
        let endless = vec![b'x'; 1 << 20];
        let mut rd = tokio::io::BufReader::with_capacity(4096, &endless[..]);
        let r = read_line_bounded(&mut rd, &mut buf, 1000).await.unwrap();
        assert!(
            matches!(r, LineRead::TooLong(n) if n <= 4096 + 1000),
            "{r:?}"
        );
        assert!(buf.len() <= 1000);
    }

    /// A line with nothing to unescape splits into what `decode_line` makes of it.
    #[test]
    fn a_plain_line_splits_as_it_decodes() {
        for line in [
            "k\tv",
            "k\tv\r",
            "no tab",
            "",
            "\t",
            "a\tb\tc",
            "é\t,\"q\"",
            "\r",
        ] {
            let t = decode_line(line);
            assert_eq!(
                split_plain_line(line),
                Some((&*t.key, &*t.value)),
                "{line:?}"
            );
        }
        assert_eq!(split_plain_line("k\\t\tv"), None);
    }
}
