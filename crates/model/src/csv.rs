//! CSV fields of a single line, with real quoting rules, without allocating per line: the
//! splitter keeps its buffers between calls. A line with no quote and no line break is cut at
//! its commas (what `csv_core` would find, found with `memchr`, several times faster: most
//! lines of most files); any other line is parsed by `csv_core`.

/// Reusable splitter of one CSV record (building a `csv_core` reader compiles a DFA, so the
/// reader is built once and reset per line).
pub struct CsvSplitter {
    rdr: Box<csv_core::Reader>,
    out: Vec<u8>,
    ends: Vec<usize>,
    nfields: usize,
    /// The last line was cut at its commas: `text` holds it whole and `ends` the commas'
    /// positions, so field i starts one past end i-1 (`csv_core`'s output, in `out`, has no
    /// delimiters).
    plain: bool,
    /// The last line when it was cut at its commas: its fields are slices of it, already
    /// known to be UTF-8 (a comma is ASCII, so every cut falls between characters).
    text: String,
}

impl Default for CsvSplitter {
    fn default() -> Self {
        // Not `csv_core::Reader::default()`: that one has a zero delimiter.
        CsvSplitter {
            rdr: Box::new(csv_core::Reader::new()),
            out: Vec::new(),
            ends: Vec::new(),
            nfields: 0,
            plain: false,
            text: String::new(),
        }
    }
}

impl CsvSplitter {
    /// Splits `line` into fields; read them with [`CsvSplitter::field`].
    pub fn split(&mut self, line: &str) {
        self.split_upto(line, usize::MAX);
    }

    /// Splits `line` far enough to read its first `n` fields: [`CsvSplitter::field`] of
    /// `0..n` is what [`CsvSplitter::split`] gives, a later one may be `None`. A line whose
    /// quotes and line breaks all come after those fields is cut at its commas up to there
    /// and only they are copied: a field's text never depends on what follows it (a select
    /// of a record's first columns, a count by its ninth, skip its quoted notes).
    pub fn split_upto(&mut self, line: &str, n: usize) {
        let bytes = line.as_bytes();
        self.ends.clear();
        // One pass over the head, byte by byte: a record's first fields are short, and a
        // search per comma (then one for quotes) cost more in calls than it saved in bytes.
        let mut cut = bytes.len();
        let mut plain = !bytes.is_empty();
        for (p, &b) in bytes.iter().enumerate() {
            match b {
                b',' => {
                    if self.ends.len() + 1 == n {
                        cut = p;
                        break;
                    }
                    self.ends.push(p);
                }
                b'"' | b'\r' | b'\n' => {
                    plain = false;
                    break;
                }
                _ => {}
            }
        }
        self.plain = plain;
        if self.plain {
            self.text.clear();
            // `cut` is a comma's place or the end: a character boundary.
            self.text.push_str(&line[..cut]);
            self.ends.push(cut);
            self.nfields = self.ends.len();
        } else {
            self.split_with_csv_core(line, n);
        }
    }

    /// Splits `line` by the full CSV rules, as far as its first `n` fields (the rest of a
    /// long record, its quoted notes say, is not parsed).
    fn split_with_csv_core(&mut self, line: &str, n: usize) {
        use csv_core::ReadFieldResult;
        self.plain = false;
        self.rdr.reset();
        self.ends.clear();
        if self.out.len() < line.len() + 1 {
            self.out.resize(line.len() + 1, 0);
        }
        let mut input = line.as_bytes();
        let mut nout = 0usize;
        while self.ends.len() < n {
            // An empty `input` is the end of the line: the reader ends its last field.
            let (res, nin, o) = self.rdr.read_field(input, &mut self.out[nout..]);
            input = &input[nin..];
            nout += o;
            match res {
                ReadFieldResult::InputEmpty => {}
                ReadFieldResult::OutputFull => {
                    let l = self.out.len();
                    self.out.resize(l * 2, 0);
                }
                ReadFieldResult::Field { record_end } => {
                    // Ends are relative to the start of the output of the whole record.
                    self.ends.push(nout);
                    if record_end {
                        break;
                    }
                }
                ReadFieldResult::End => break,
            }
        }
        self.nfields = self.ends.len();
    }

    /// Number of fields found by the last split.
    pub fn len(&self) -> usize {
        self.nfields
    }

    /// Whether the last split found no fields.
    pub fn is_empty(&self) -> bool {
        self.nfields == 0
    }

    /// Field `i` (0-based) of the last split, if present.
    pub fn field(&self, i: usize) -> Option<&str> {
        if i >= self.nfields {
            return None;
        }
        if self.plain {
            let start = if i == 0 { 0 } else { self.ends[i - 1] + 1 };
            return self.text.get(start..self.ends[i]);
        }
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        std::str::from_utf8(&self.out[start..self.ends[i]]).ok()
    }
}

/// Appends `field` to `out`, quoted only where CSV needs it.
pub fn push_field(out: &mut String, field: &str) {
    // Tested byte by byte: the four are ASCII, and a `[char]` pattern decodes every char
    // (a profile of app1 had this test at 2-3% of the job).
    if field
        .bytes()
        .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'))
    {
        out.push('"');
        for c in field.chars() {
            if c == '"' {
                out.push('"');
            }
            out.push(c);
        }
        out.push('"');
    } else {
        out.push_str(field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_quoted_fields() {
        let mut s = CsvSplitter::default();
        s.split(r#"1,"a, b","say ""hi""",,last"#);
        assert_eq!(s.len(), 5);
        assert_eq!(s.field(0), Some("1"));
        assert_eq!(s.field(1), Some("a, b"));
        assert_eq!(s.field(2), Some(r#"say "hi""#));
        assert_eq!(s.field(3), Some(""));
        assert_eq!(s.field(4), Some("last"));
        assert_eq!(s.field(5), None);
        s.split("x");
        assert_eq!(s.len(), 1);
        assert_eq!(s.field(0), Some("x"));
    }

    /// What the README says of a bare line end in a line: inside, it ends the record; at the
    /// start, it is skipped (hostile probe 12 found the README said only the first).
    #[test]
    fn a_bare_line_end_ends_a_record_inside_a_line_and_is_skipped_at_its_start() {
        let mut s = CsvSplitter::default();
        s.split("x,\ry,z");
        assert_eq!((s.len(), s.field(0), s.field(1)), (2, Some("x"), Some("")));
        s.split("\rabc,def");
        assert_eq!(
            (s.len(), s.field(0), s.field(1)),
            (2, Some("abc"), Some("def"))
        );
        s.split("\r\r1,2,3");
        assert_eq!((s.len(), s.field(0)), (3, Some("1")));
    }

    #[test]
    fn many_fields_and_long_lines_grow_buffers() {
        let line: Vec<String> = (0..100).map(|i| format!("field{i}")).collect();
        let mut s = CsvSplitter::default();
        s.split(&line.join(","));
        assert_eq!(s.len(), 100);
        assert_eq!(s.field(99), Some("field99"));
    }

    /// The reference split: `csv_core`'s whole-record reader, the fields as owned strings
    /// (`None` for a field that is not UTF-8).
    fn reference_fields(line: &str) -> Vec<Option<String>> {
        let mut rdr = csv_core::Reader::new();
        let mut out = vec![0u8; line.len() + 1];
        let mut ends = vec![0usize; line.len() + 2];
        let (mut input, mut nout, mut nend) = (line.as_bytes(), 0, 0);
        loop {
            let (res, nin, o, e) = rdr.read_record(input, &mut out[nout..], &mut ends[nend..]);
            input = &input[nin..];
            nout += o;
            nend += e;
            match res {
                csv_core::ReadRecordResult::InputEmpty if input.is_empty() => {
                    let (_, _, _, e2) = rdr.read_record(&[], &mut out[nout..], &mut ends[nend..]);
                    nend += e2;
                    break;
                }
                csv_core::ReadRecordResult::InputEmpty => {}
                csv_core::ReadRecordResult::Record | csv_core::ReadRecordResult::End => break,
                other => panic!("reference buffers too small: {other:?}"),
            }
        }
        (0..nend)
            .map(|i| {
                let start = if i == 0 { 0 } else { ends[i - 1] };
                std::str::from_utf8(&out[start..ends[i]])
                    .ok()
                    .map(str::to_string)
            })
            .collect()
    }

    /// The comma cut and `csv_core` read field by field find the fields its whole-record
    /// reader finds in every line, quoted or not: lines of random commas, quotes, line
    /// breaks, spaces and multi-byte letters, each split after a line of the other kind so
    /// no state leaks between them.
    #[test]
    fn plain_lines_split_as_csv_core_splits_them() {
        let alphabet = ["a", ",", "\"", "\r", "\n", " ", "é", "x,y", "\"\""];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut fast = CsvSplitter::default();
        let mut plain_seen = 0;
        for _ in 0..20_000 {
            let len = (next() % 12) as usize;
            let line: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            fast.split(&line);
            plain_seen += usize::from(fast.plain);
            // Either way (cut at its commas, or field by field), what csv_core's whole-record
            // reader finds.
            let got: Vec<_> = (0..fast.len())
                .map(|i| fast.field(i).map(str::to_string))
                .collect();
            assert_eq!(got, reference_fields(&line), "line {line:?}");
            assert_eq!(fast.field(fast.len()), None);
        }
        assert!(plain_seen > 1000, "only {plain_seen} plain lines");
    }

    /// The first `n` fields of a line split only that far are the fields a whole split
    /// finds, whatever follows them: random lines as above, random `n`.
    #[test]
    fn a_split_up_to_n_fields_reads_those_fields_as_a_whole_split() {
        let alphabet = ["a", ",", "\"", "\r", "\n", " ", "é", "x,y", "\"\"", ",,"];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut part, mut whole) = (CsvSplitter::default(), CsvSplitter::default());
        let mut cut_short = 0;
        for _ in 0..20_000 {
            let len = (next() % 14) as usize;
            let line: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let n = 1 + (next() % 6) as usize;
            part.split_upto(&line, n);
            whole.split(&line);
            cut_short += usize::from(part.plain && part.len() < whole.len());
            let want = reference_fields(&line);
            for i in 0..n {
                assert_eq!(
                    part.field(i),
                    whole.field(i),
                    "field {i} of {line:?}, n {n}"
                );
                assert_eq!(part.field(i), want.get(i).and_then(|f| f.as_deref()));
            }
        }
        assert!(cut_short > 1000, "only {cut_short} lines cut short");
    }

    #[test]
    fn quoting_on_output() {
        let mut out = String::new();
        push_field(&mut out, "plain");
        out.push(',');
        push_field(&mut out, "a, \"b\"");
        assert_eq!(out, r#"plain,"a, ""b""""#);
    }
}
