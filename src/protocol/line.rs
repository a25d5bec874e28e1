//! The executable-operator line format: one tuple per line as `key<TAB>value`, with tab,
//! newline, carriage return and backslash inside a key or value escaped as `\t`, `\n`, `\r`
//! and `\\`; a line without a tab is a value with an empty key.

use crate::model::tuple::Tuple;

/// Appends `s` to `out` with the operator protocol's escapes (`\t`, `\n`, `\\`; `\r` too, so a
/// CRLF line survives the round trip).
pub fn escape_into(s: &str, out: &mut Vec<u8>) {
    if !s
        .bytes()
        .any(|b| matches!(b, b'\t' | b'\n' | b'\\' | b'\r'))
    {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    for b in s.bytes() {
        match b {
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\\' => out.extend_from_slice(b"\\\\"),
            _ => out.push(b),
        }
    }
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
    fn line_without_tab_is_value() {
        assert_eq!(decode_line("hello"), Tuple::new("", "hello"));
    }
}
